"""Durability of hv's virtio-blk: what a completed FLUSH promises survives.

guests/blk-durable writes numbered, checksummed blocks and FLUSHes every k
writes; after each completed flush it prints `flushed <n>`: block n and all
before it are durable.  Two claims are tested:

1. Crash consistency.  `hv run` is SIGKILLed at a random moment (seeded);
   every block up to the last `flushed n` line it printed must be intact in
   the image (magic, run id, sequence number, sector index, checksum), and
   every other sector must be either untouched (zero) or whole (never a
   torn or foreign sector).  The image is opened without O_DIRECT, so after
   a kill of the *process* the page cache keeps written data anyway: this
   part shows that nothing hv acknowledged is lost or mixed up, not that it
   reached the platter.

2. The stronger claim behind it: hv never acknowledges a flush before
   fsync() returned.  In-process, the blk request path's os.fsync/os.pwritev
   are wrapped (and fsync slowed down) and a BlkDevice subclass records when
   each request's completion is pushed to the used ring; the guest's
   `flushed` lines are recorded by the console.  Every flush completion,
   and every `flushed` line, must come after its own fsync finished, no
   completion may be published while an fsync runs, and every block a flush
   covers must have been written to the file before that fsync started.
"""
import os
import random
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import types

import pytest

from conftest import ROOT, engine_missing, guest
from hv.testing.results import RESULT_CODES, parse_result

SECTOR = 512
MAGIC = 0x42525544
HEAD = struct.Struct("<IIQII")          # magic, run, block, index, bsize
STALL_S = 5                             # no `flushed` line for this long: stuck

ENGINES = [
    pytest.param(name, marks=pytest.mark.skipif(engine_missing(name) is not None,
                                                reason=f"{name}: {engine_missing(name)}"))
    for name in ("kvm", "tcg")
]


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def expected_sector(run, block, index, bsize):
    """The exact bytes blk-durable writes (guests/blk-durable/main.c)."""
    s = bytearray(SECTOR)
    HEAD.pack_into(s, 0, MAGIC, run, block, index, bsize)
    for j in range(24, 504):
        s[j] = (block * 7 + index * 13 + run + j) & 0xff
    struct.pack_into("<Q", s, 504, fnv1a(s[:504]))
    return bytes(s)


def sector_problem(sector, run, block, index, bsize):
    """None if `sector` is what blk-durable wrote there, else why not."""
    magic, r, n, i, bs = HEAD.unpack_from(sector)
    (checksum,) = struct.unpack_from("<Q", sector, 504)
    if magic != MAGIC:
        return f"magic {magic:#x}"
    if checksum != fnv1a(sector[:504]):
        return "checksum mismatch (torn or corrupt)"
    if (r, n, i, bs) != (run, block, index, bsize):
        return f"holds run {r} block {n} index {i} bsize {bs}"
    if sector != expected_sector(run, block, index, bsize):
        return "contents differ from the pattern"
    return None


def check_image(data, run, bsize, flushed):
    """Blocks 0..flushed intact; every later sector zero or whole.  Returns
    the number of intact blocks found after `flushed` (written, not flushed)."""
    nblocks = len(data) // (bsize * SECTOR)
    extra = 0
    for n in range(nblocks):
        intact = True
        for i in range(bsize):
            at = (n * bsize + i) * SECTOR
            sector = data[at:at + SECTOR]
            why = sector_problem(sector, run, n, i, bsize)
            if n <= flushed:
                assert why is None, (f"block {n} sector {i} (flushed up to {flushed}): {why}")
            elif why is not None:
                intact = False
                assert sector == bytes(SECTOR), (
                    f"block {n} sector {i}, after the last flush {flushed}: neither untouched "
                    f"nor whole: {why}")
        if n > flushed and intact:
            extra += 1
    return extra


# ---- 1. SIGKILL at a random moment ----------------------------------------------------

def kill_run(engine, image, rng, bsize, k, run_id, max_flushes, deadline_s=120):
    """Start hv on blk-durable, SIGKILL it after a random number of `flushed`
    lines and a random delay.  Returns (highest n seen in a complete
    `flushed n` line, the whole stdout, killed?)."""
    target = rng.randint(1, max_flushes)
    delay = rng.uniform(0, 0.004)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hv", "run", "--engine", engine, "--disk", str(image),
         guest("blk-durable"), "--cmdline", f"bsize={bsize} k={k} run={run_id}"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, seen, killed = b"", 0, False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    # The overall deadline only catches a run away guest; a stuck one is
    # caught by STALL_S.  A loaded host can make a healthy run take a minute.
    deadline = time.monotonic() + deadline_s
    progress = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                pytest.fail(f"blk-durable ran past {deadline_s}s: {out[-300:]!r}")
            if now - progress > STALL_S:
                # The guest waits for a request hv never serves (its own
                # timeout, 10 s, would end it with `write at block N: timed out`).
                pytest.fail(f"blk-durable made no progress for {STALL_S}s, stuck after "
                            f"{out[-60:]!r}: a request was never served (see "
                            "test_devices.py::test_kick_round_serves_buffers_posted_while_"
                            "kicks_were_off)")
            if not sel.select(timeout=0.2):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break                           # the guest finished first
            out += chunk
            progress = time.monotonic()
            seen = out.count(b"\nflushed ") + out.startswith(b"flushed ")
            if seen >= target:
                if delay:
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        # What hv printed before it died is as good as what we read in time.
        rest, err = proc.communicate(timeout=20)
        out += rest
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = out.decode().split("\n")[:-1]       # complete lines only
    flushed = [int(l.split()[1]) for l in lines if l.startswith("flushed ")]
    if killed:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert parse_result(out.decode())[0] == "SUCCESS", out[-500:]
        assert proc.returncode == RESULT_CODES["SUCCESS"], err
    return (max(flushed) if flushed else -1), flushed, killed


# (engine, seed): TCG several times; KVM (software kvm_pvm here: ring-0 code
# is slow) once with small blocks.
KILL_CASES = [pytest.param("tcg", seed, id=f"tcg-seed{seed}") for seed in range(6)] + [
    pytest.param("kvm", 100, id="kvm-seed100",
                 marks=pytest.mark.skipif(engine_missing("kvm") is not None,
                                          reason=f"kvm: {engine_missing('kvm')}"))]


@pytest.mark.parametrize("engine,seed", KILL_CASES)
def test_sigkill_keeps_every_flushed_block(engine, seed, tmp_path):
    rng = random.Random(seed)
    if engine == "tcg":
        bsize, k, size = rng.choice([1, 4, 8]), rng.choice([1, 3, 4, 7]), 2 << 20
    else:
        bsize, k, size = 1, 2, 64 * SECTOR
    nblocks = size // (bsize * SECTOR)
    max_flushes = max(1, nblocks // k * 9 // 10)
    run_id = rng.randrange(1, 1 << 31)
    image = tmp_path / "durable.img"
    with open(image, "wb") as f:
        f.truncate(size)
    last, flushed, killed = kill_run(engine, image, rng, bsize, k, run_id, max_flushes)
    # The lines themselves: one per k blocks, in order.
    assert flushed == [min(k * (i + 1), nblocks) - 1 for i in range(len(flushed))], flushed
    assert last >= 0, "the kill came before the first flush: nothing to check"
    if not killed:
        assert last == nblocks - 1
    check_image(image.read_bytes(), run_id, bsize, last)


def test_checker_catches_a_torn_or_stale_block(tmp_path):
    """The image checker is not vacuous: a lost, a torn and a stale block fail it."""
    bsize, run = 2, 9
    good = b"".join(expected_sector(run, n, i, bsize) for n in range(4) for i in range(bsize))
    assert check_image(good, run, bsize, 3) == 0
    assert check_image(good[:4 * SECTOR] + bytes(4 * SECTOR), run, bsize, 1) == 0
    with pytest.raises(AssertionError, match="block 2"):
        check_image(good[:4 * SECTOR] + bytes(4 * SECTOR), run, bsize, 2)       # lost
    torn = bytearray(good)
    torn[5 * SECTOR + 100] ^= 1
    with pytest.raises(AssertionError, match="checksum"):
        check_image(bytes(torn), run, bsize, 1)                                 # torn, unflushed
    stale = good[:2 * SECTOR] + expected_sector(run + 1, 1, 0, bsize) + good[3 * SECTOR:]
    with pytest.raises(AssertionError, match="run"):
        check_image(stale, run, bsize, 3)


# ---- 2. a flush is acknowledged only after fsync returned ----------------------------

class Log:
    """Ordered events from every thread (vCPU, device thread)."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()

    def add(self, *event):
        with self._lock:
            self.events.append(event)

    def index(self, kind, nth):
        """Position of the nth (0-based) event of `kind`."""
        hits = [i for i, e in enumerate(self.events) if e[0] == kind]
        return hits[nth] if nth < len(hits) else None

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


def recording_blk_class():
    from hv.devices.blk import HEADER, BlkDevice, T_FLUSH

    class RecordingBlk(BlkDevice):
        """A BlkDevice that logs, for each completion it pushes to the used
        ring, the request type -- before the push writes the used ring."""

        def __init__(self, path, log):
            super().__init__(path)
            self.log = log
            self.queue = None

        def _make_queue(self, s, q, index=None):
            queue = super()._make_queue(s, q, index)
            if queue is not None:
                self.queue = queue
                queue = LoggedPushes(queue, self.log)
            return queue

        def used_idx(self):
            q = self.queue
            return None if q is None else q.mem.read_u16(q.used + 2)

    class LoggedPushes:
        """A queue (compiled objects take no new attributes: wrap it) that
        logs each push before it writes the used ring."""

        def __init__(self, queue, log):
            self._queue, self._log = queue, log

        def __getattr__(self, name):
            return getattr(self._queue, name)

        def push(self, chain, written):
            kind = (HEADER.unpack_from(chain.readable)[0]
                    if len(chain.readable) >= HEADER.size else None)
            self._log.add("push-flush" if kind == T_FLUSH else "push", kind)
            return self._queue.push(chain, written)

    return RecordingBlk, T_FLUSH


class FlushedConsole:
    """Console sink logging each `flushed n` line as the guest printed it."""

    def __init__(self, log):
        self.log, self.partial, self.text = log, b"", b""

    def write(self, data):
        self.text += data
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            if line.startswith(b"flushed "):
                self.log.add("flushed", int(line.split()[1]))

    def flush(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("engine", ENGINES)
def test_flush_is_acknowledged_only_after_fsync_returns(engine, tmp_path, monkeypatch):
    from hv.partition import Partition

    RecordingBlk, _ = recording_blk_class()
    log = Log()
    bsize, k = (8, 4) if engine == "tcg" else (1, 2)
    blocks = 64 if engine == "tcg" else 24
    image = tmp_path / "order.img"
    with open(image, "wb") as f:
        f.truncate(blocks * bsize * SECTOR)
    blk = RecordingBlk(str(image), log)

    real_fsync, real_pwritev = os.fsync, os.pwritev

    def fsync(fd):
        log.add("fsync-start", fd, blk.used_idx())
        time.sleep(0.003)                   # a slow disk: widen any window
        real_fsync(fd)
        log.add("fsync-end", fd, blk.used_idx())

    def pwritev(fd, buffers, offset, *flags):
        n = real_pwritev(fd, buffers, offset, *flags)
        log.add("pwrite", fd, offset, n)
        return n

    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os)
                                       if not name.startswith("__")})
    fake_os.fsync, fake_os.pwritev = fsync, pwritev
    monkeypatch.setattr(blk.datapath.blk_io, "os", fake_os)

    console = FlushedConsole(log)
    part = Partition(guest("blk-durable"), engine=engine, console=console, devices=[blk],
                     cmdline=f"bsize={bsize} k={k} run=5 blocks={blocks}")
    disk_fd = blk.fd
    try:
        part.start()
        state = part.wait(60)
        exit_code = part.exit_code
    finally:
        part.destroy()
    text = console.text.decode(errors="replace")
    assert state == "shutdown" and exit_code == 0, text
    assert parse_result(text)[0] == "SUCCESS", text

    nflush = blocks // k
    flushed = [e[1] for e in log.of("flushed")]
    assert flushed == [k * (i + 1) - 1 for i in range(nflush)], flushed
    assert len(log.of("fsync-start")) == len(log.of("fsync-end")) == nflush
    assert len(log.of("push-flush")) == nflush
    assert all(e[1] == disk_fd for e in log.of("fsync-start")), "fsync of another fd"

    for i in range(nflush):
        start, end = log.index("fsync-start", i), log.index("fsync-end", i)
        push = log.index("push-flush", i)
        line = log.index("flushed", i)
        # The flush's completion is pushed only after its fsync returned, and
        # the guest reports it only after that.
        assert start < end < push < line, (i, start, end, push, line)
        # Each flush has its own fsync: not one left over from the last flush.
        if i:
            assert log.index("push-flush", i - 1) < start
        # Nothing was completed to the guest while fsync ran.
        assert log.events[start][2] == log.events[end][2], (log.events[start], log.events[end])
        # Every block the flush covers reached the file before fsync began.
        covered = (flushed[i] + 1) * bsize * SECTOR
        writes = [j for j, e in enumerate(log.events)
                  if e[0] == "pwrite" and e[1] == disk_fd and e[2] < covered]
        assert writes and max(writes) < start
    assert check_image(image.read_bytes(), 5, bsize, blocks - 1) == 0
