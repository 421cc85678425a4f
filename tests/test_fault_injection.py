"""Fault injection: what happens to a guest when the host side fails.

The plan and the results are in docs/reliability.md.  For every fault: the
guest sees a documented error (a virtio status, DEVICE_NEEDS_RESET, a
driver time-out, -HV_EIO) or loses only that device; no block whose flush
completed is lost; other partitions and the parent go on.

Disk faults use real storage, not a mock: ENOSPC from a file on a tmpfs
mounted with a tiny size, EIO from a loop device whose backing file sits on
such a tmpfs (the loop driver fails the write-back, fsync reports EIO; this
kernel has no device-mapper `error` target).  They need root (mount,
losetup); elsewhere they skip and say why.
"""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, engine_missing, guest
from hv.testing import fork_call, parse_result
from test_crash_consistency import sector_problem
from test_devices import ENGINES, SECTOR, Run, make_image, pattern

BLOCK_SECTORS = 8                       # blk-durable's default block: 4 KiB


# ---- helpers -------------------------------------------------------------------------

def flushed_blocks(text):
    """The last `flushed n` blk-durable printed, or -1."""
    found = re.findall(r"^flushed (\d+)$", text, re.M)
    return int(found[-1]) if found else -1


def assert_blocks_intact(data, last, run=1):
    """Blocks 0..last (every one whose flush completed) are whole and right."""
    for block in range(last + 1):
        for index in range(BLOCK_SECTORS):
            at = (block * BLOCK_SECTORS + index) * SECTOR
            problem = sector_problem(data[at:at + SECTOR], run, block, index, BLOCK_SECTORS)
            assert problem is None, f"flushed block {block} sector {index}: {problem}"


def run_until(run, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(run.text()) or run.part.state not in ("created", "running"):
            return
        time.sleep(0.01)
    pytest.fail(f"not reached in {timeout}s:\n{run.text()}")


@contextlib.contextmanager
def tiny_tmpfs(tmp_path, size):
    """A tmpfs of `size` bytes at tmp_path/fs (skip if it cannot be mounted)."""
    where = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tiny tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def loop_device(backing):
    if not shutil.which("losetup"):
        pytest.skip("needs losetup")
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def bystander(engine, tmp_path):
    """A partition beside the faulty one: blk-test on a disk of its own."""
    from hv.devices.blk import BlkDevice
    image = make_image(tmp_path / f"bystander-{uuid.uuid4().hex[:6]}.img")
    return Run("blk-test", engine, [BlkDevice(str(image))], "sectors=64 seed=9"), image


def assert_bystander_fine(run, image):
    run.assert_success()
    data = image.read_bytes()
    assert all(data[s * SECTOR:(s + 1) * SECTOR] == pattern(s, 9) for s in range(64))


# ---- a backend that raises mid-request -----------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_backend_raising_mid_request_costs_only_that_device(engine, tmp_path, capsys):
    """The blk backend raises (not an I/O error: a bug) on its 5th request,
    after popping it: the device sets DEVICE_NEEDS_RESET, the guest's driver
    reports it, and a partition beside it finishes its own I/O."""
    from hv.devices.blk import BlkDevice

    class Buggy(BlkDevice):
        def __init__(self, path):
            super().__init__(path)

            class BuggyRequests(type(self.io)):     # the compiled or the pure request path
                calls = 0

                def request(self, queue, chain):
                    BuggyRequests.calls += 1
                    if BuggyRequests.calls == 5:
                        raise RuntimeError("injected backend bug")
                    return super().request(queue, chain)
            self.io = BuggyRequests(self.fd, self.sectors, self.readonly, self.serial)

    buggy = Buggy(str(make_image(tmp_path / "buggy.img")))
    bad = Run("blk-test", engine, [buggy], "sectors=64 seed=3")
    other, other_image = bystander(engine, tmp_path)
    try:
        bad.start()
        other.start()
        bad.wait(60)
        other.wait(60)
    finally:
        bad.destroy()
        other.destroy()
    assert bad.state == "shutdown"
    verdict, line = parse_result(bad.text())
    assert verdict == "FAILURE" and "device needs a reset" in line, bad.text()
    assert buggy.errors == 1
    assert "injected backend bug; device needs reset" in capsys.readouterr().err
    assert_bystander_fine(other, other_image)


# ---- the disk fails: ENOSPC and EIO --------------------------------------------------

def durable_until_failure(engine, disk, blocks):
    """Run blk-durable on `disk` until it stops; its console text."""
    from hv.devices.blk import BlkDevice
    dev = BlkDevice(disk)
    r = Run("blk-durable", engine, [dev], f"blocks={blocks} k=4")
    try:
        r.start()
        r.wait(120)
    finally:
        r.destroy()
    return r, dev


@pytest.mark.parametrize("engine", ENGINES)
def test_disk_full_fails_the_write_and_keeps_flushed_blocks(engine, tmp_path):
    """A sparse 4 MiB image on a 256 KiB tmpfs: once the tmpfs is full the
    host's pwrite says ENOSPC, the request gets VIRTIO_BLK_S_IOERR, the
    guest reports an I/O error; every block flushed before is intact."""
    with tiny_tmpfs(tmp_path, 256 << 10) as fs:
        disk = fs / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(4 << 20)
        r, dev = durable_until_failure(engine, str(disk), blocks=(4 << 20) // (BLOCK_SECTORS * SECTOR))
        verdict, line = parse_result(r.text())
        assert verdict == "FAILURE" and re.search(r"(write|flush) at block \d+: I/O error", line), r.text()
        last = flushed_blocks(r.text())
        assert last >= 8, r.text()                     # it wrote and flushed a while first
        assert dev.errors >= 1
        assert_blocks_intact(disk.read_bytes(), last)


@pytest.mark.parametrize("engine", ENGINES)
def test_disk_eio_fails_the_flush_and_keeps_flushed_blocks(engine, tmp_path):
    """A loop device over a 2 MiB file on a 256 KiB tmpfs: writes land in
    the page cache, the write-back fails, and fsync (the guest's FLUSH)
    reports EIO.  The flush is never acknowledged: the guest sees IOERR for
    it; every block whose flush did complete is on the device."""
    with tiny_tmpfs(tmp_path, 256 << 10) as fs:
        backing = fs / "backing.img"
        with open(backing, "wb") as f:
            f.truncate(2 << 20)
        with loop_device(backing) as dev_path:
            r, dev = durable_until_failure(engine, dev_path,
                                           blocks=(2 << 20) // (BLOCK_SECTORS * SECTOR))
            verdict, line = parse_result(r.text())
            assert verdict == "FAILURE" and re.search(r"flush at block \d+: I/O error", line), \
                r.text()
            last = flushed_blocks(r.text())
            assert last >= 4, r.text()
            with open(dev_path, "rb") as f:
                assert_blocks_intact(f.read(2 << 20), last)


# ---- the partition is destroyed mid-I/O ----------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_destroy_mid_io_keeps_every_flushed_block(engine, tmp_path):
    """destroy() while blk-durable writes and flushes: the partition goes,
    every block it was told was flushed is intact, the disk is free again."""
    from hv.devices.blk import BlkDevice
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 << 20))
    r = Run("blk-durable", engine, [BlkDevice(str(image))], "k=2")
    try:
        r.start()
        run_until(r, lambda text: flushed_blocks(text) >= 20)
    finally:
        r.destroy()
    assert r.part.state == "destroyed"
    last = flushed_blocks(r.text())
    assert last >= 20
    assert_blocks_intact(image.read_bytes(), last)
    BlkDevice(str(image)).close()          # the image lock went with the partition


# ---- the device thread dies ----------------------------------------------------------

def test_dead_device_thread_costs_only_that_partitions_devices(tmp_path):
    """The device thread ends (a backend raises BaseException, which the
    thread's guard does not catch): the guest's driver times out waiting
    (virtio: "timed out"), the partition still shuts down by itself, can be
    destroyed, and a partition beside it is unaffected.  (TCG only: the
    guest's time-out is real time, ~10 s, the same on both engines.)"""
    from hv.devices.blk import BlkDevice

    class Fatal(BlkDevice):
        def serve(self, index, queue):
            raise SystemExit("the device thread dies here")

    bad = Run("blk-test", "tcg", [Fatal(str(make_image(tmp_path / "dead.img")))], "sectors=8")
    other, other_image = bystander("tcg", tmp_path)
    old_hook = threading.excepthook
    threading.excepthook = lambda args: None        # the thread's end is the point
    try:
        bad.start()
        other.start()
        other.wait(60)
        bad.wait(60)
    finally:
        threading.excepthook = old_hook
        bad.destroy()
        other.destroy()
    verdict, line = parse_result(bad.text())
    assert verdict == "FAILURE" and "timed out" in line, bad.text()
    assert_bystander_fine(other, other_image)


# ---- signal storms -------------------------------------------------------------------

def catches(pid, sig):
    """Has process pid installed a handler for sig?  (/proc/PID/status SigCgt)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask >> (sig - 1) & 1)


STORM_SIGNALS = [signal.SIGWINCH, signal.SIGCHLD, signal.SIGURG, signal.SIGCONT,
                 signal.SIGRTMIN + 4]       # the last: hv's own kick signal (csrc/kick.c)


@pytest.mark.parametrize("engine", ENGINES)
def test_signal_storm_at_the_process(engine, tmp_path):
    """`hv run` under a storm of signals (ignored ones, and hv's own kick
    signal sent from outside: spurious kicks) finishes blk-test correctly."""
    if engine_missing(engine):
        pytest.skip(engine_missing(engine))
    image = make_image(tmp_path / "disk.img")
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", "--engine", engine,
                             "--disk", str(image), guest("blk-test"),
                             "--cmdline", "sectors=128 seed=4"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = 0
    try:
        # hv's kick signal is real-time: its default action ends a process,
        # so the storm starts once the core has installed its handler.
        while proc.poll() is None and not catches(proc.pid, signal.SIGRTMIN + 4):
            time.sleep(0.001)
        while proc.poll() is None and sent < 200_000:
            try:
                os.kill(proc.pid, STORM_SIGNALS[sent % len(STORM_SIGNALS)])
            except ProcessLookupError:
                break
            sent += 1
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert sent > 100, "the storm never started"
    assert proc.returncode == 0, f"{sent} signals\n{out}\n{err}"
    assert parse_result(out)[0] == "SUCCESS", out
    data = image.read_bytes()
    assert all(data[s * SECTOR:(s + 1) * SECTOR] == pattern(s, 4) for s in range(128))


# ---- corrupt and truncated images ----------------------------------------------------

def _boot_mutated(elf):
    """Load and run a mutated kernel on deterministic TCG; how it ended."""
    from hv.console import CaptureConsole
    from hv.loader import LoadError
    from hv.partition import Partition
    try:
        p = Partition(elf, mem="16M", engine="tcg", deterministic=True, console=CaptureConsole())
    except LoadError as e:
        return "refused", str(e)
    try:
        p.start()
        state = p.wait(5)
    finally:
        p.destroy()
    return "ran", state


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cut=st.one_of(st.just(100), st.integers(0, 99)), flips=st.lists(st.tuples(st.integers(0, 1 << 20),
                                                         st.integers(1, 255)), max_size=8))
def test_corrupt_or_truncated_kernel_never_hurts_the_parent(cut, flips):
    """hello.elf truncated (to cut% of its size) and with bytes flipped: the
    loader refuses it with a LoadError, or it runs and ends (shutdown, crash,
    or destroyed at the deadline).  In a forked child: a parent crash is a
    failure here, not the end of the suite."""
    with open(guest("hello"), "rb") as f:
        elf = bytearray(f.read())
    elf = elf[:max(1, len(elf) * cut // 100)] if cut < 100 else elf
    for at, xor in flips:
        elf[at % len(elf)] ^= xor
    kind, value = fork_call(_boot_mutated, bytes(elf), timeout=60)
    assert kind == "ok", value
    how, detail = value
    assert how == "refused" or detail in ("shutdown", "crashed", "running", "destroyed"), value


@pytest.mark.parametrize("engine", ENGINES)
def test_disk_image_truncated_under_the_device(engine, tmp_path):
    """The image shrinks to 8 sectors after the device sized it (128): the
    guest's reads past the new end come back short on the host, the device
    answers VIRTIO_BLK_S_IOERR, and the guest's driver reports an I/O error
    for exactly the first sector that is gone (virtio-reset-race reads
    sector r in round r and checks its bytes)."""
    from hv.devices.blk import BlkDevice
    from test_reliability import reset_race_image
    image = reset_race_image(tmp_path / "disk.img")
    dev = BlkDevice(str(image))
    os.truncate(image, 8 * SECTOR)
    r = Run("virtio-reset-race", engine, [dev], "rounds=20")
    try:
        r.start()
        r.wait(60)
    finally:
        r.destroy()
    verdict, line = parse_result(r.text())
    assert r.state == "shutdown", r.text()
    assert verdict == "FAILURE" and "round 8: read after reset: I/O error" in line, r.text()
    assert dev.errors >= 1


# ---- the console's output closed -----------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_console_output_closed(engine, capsys):
    """The console's output fails (EPIPE): console_write answers -HV_EIO
    (abi.h), one line says so, and the guest runs on to its own shutdown."""
    from hv.abi import lib
    from hv.console import Console
    from hv.partition import Partition
    from hv.trace import Tracer

    class Closed(Console):
        def __init__(self):
            super().__init__(stream=open(os.devnull, "wb"))

        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

    if engine_missing(engine):
        pytest.skip(engine_missing(engine))
    tracer = Tracer()
    p = Partition(guest("hello"), mem="16M", engine=engine, console=Closed(), trace=tracer)
    try:
        state = p.run()
    finally:
        p.destroy()
    assert state == "shutdown" and p.exit_code == 0, p.crash_report
    completed = [rec for rec in tracer.records if rec[0] == lib.HV_TRACE_COMPLETE]
    assert completed and all(rec[4] == -lib.HV_EIO for rec in completed), tracer.records
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"hv: partition {p.id}: console output failed: Broken pipe"], err


def test_hv_run_with_its_output_closed(tmp_path):
    """`hv run` whose stdout reader went away: the guest ends normally, hv
    says once why the console was lost and exits EX_IOERR (74: the guest's
    output did not all arrive, hv/cli/common.py); no traceback."""
    from hv.cli.common import EXIT_CONSOLE_FAILED
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", "--engine", "tcg", guest("hello")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                     # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert proc.returncode == EXIT_CONSOLE_FAILED, err
    assert "Traceback" not in err, err
    assert "console output failed: Broken pipe" in err, err


def test_device_and_console_warnings_reach_the_log_file(tmp_path):
    """Warnings raised inside the library (here: the console's output failed)
    go through hv's logger, so --log-file records them beside stderr (they
    were printed straight to stderr and the log file never saw them)."""
    logfile = tmp_path / "hv.log"
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", "--engine", "tcg",
                             "--log-file", str(logfile), guest("hello")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "hv: partition" in err and "console output failed: Broken pipe" in err, err
    logged = logfile.read_text()
    assert "WARNING partition" in logged and "console output failed: Broken pipe" in logged, logged
