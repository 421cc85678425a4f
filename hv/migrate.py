"""Live migration: a running partition moves to another hv process.

T:910 The stream is the snapshot format (hv/snapshot_format.py) on a
socket, with RAM inline in PAGES records:

    header | MEMORY(size) | PAGES... (round 0: every non-zero page)
           | PAGES... (round 1..n: pages written since the round before)
           -- the source pauses --
           | PAGES (the last dirty pages) | PARTITION | VCPU... | VERIFY | END

Pre-copy: while the guest runs, each round sends the pages written since
the last one; rounds go on until the pages left would take no longer
than the downtime budget to send (at the rate measured so far) or the
round limit is reached.  Then the source pauses, sends the rest and the
CPU state, and waits for the destination's one-byte answer: "R" (it
runs; the source is destroyed) or nothing (a broken stream or a refusal:
the source resumes as if nothing happened).  The receiver writes pages
into a memfd and maps it copy-on-write as the partition's RAM; it starts
nothing until END and a good VERIFY: a sender that dies mid-stream leaves
nothing behind.

Which pages were written comes from DirtyLog (csrc/dirty.c): on KVM the
memslot dirty log with manual clear, on TCG the kernel's write protection
of RAM (userfaultfd, asynchronous), and on both hv's own written map for
what the C core and the Python devices write; RAM compared with a copy
only where neither log exists.
"""
import mmap
import os
import socket
import sys
import time

from hv import snapshot_format as fmt
from hv.abi import ffi, lib
from hv.snapshot import SnapshotError, _pause_quiescent, partition_records
from hv.snapshot_devices import hand_over, take_back

PAGE = fmt.PAGE
PAGES_PER_RECORD = 256              # 1 MiB of pages per PAGES record
DOWNTIME_BUDGET = 0.3               # seconds (the default of hv migrate)
MAX_ROUNDS = 30
ACK_RUNNING = b"R"


class MigrationError(Exception):
    """The migration did not happen; the source runs on (one line)."""


def parse_address(text):
    """unix:PATH or tcp:HOST:PORT (loopback only) -> (family, address)."""
    if text.startswith("unix:") and len(text) > 5:
        return socket.AF_UNIX, text[5:]
    if text.startswith("tcp:"):
        host, _, port = text[4:].rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
            raise ValueError(f"{text}: tcp migration is loopback only (tcp:127.0.0.1:PORT)")
        return (socket.AF_INET6 if host == "::1" else socket.AF_INET), (host, int(port))
    raise ValueError(f"{text}: an address is unix:PATH or tcp:127.0.0.1:PORT")


# -- sending ----------------------------------------------------------------
class DirtyLog:
    """T:913 The pages to send each round (csrc/dirty.c): the first
    collect() every non-zero page, each later one the pages written since
    the one before, by the guest, the C core or a device.  A page's bytes
    are read from RAM after collect() returns: a write after that is in the
    next collect.  tracking: "auto" (the best that works here), or one of
    METHODS to insist on it."""

    METHODS = {"engine-log": lib.HV_DIRTY_ENGINE_LOG,
               "write-protect": lib.HV_DIRTY_WRITE_PROTECT,
               "compare": lib.HV_DIRTY_COMPARE}

    def __init__(self, part, tracking="auto"):
        code = lib.HV_DIRTY_AUTO if tracking == "auto" else self.METHODS.get(tracking)
        if code is None:
            raise ValueError(f"dirty tracking {tracking!r}: auto or one of {', '.join(self.METHODS)}")
        self._p = part.core()
        self.ram = part.memory()
        self.out = ffi.new("uint64_t[]", part.mem_size // PAGE)
        why = ffi.new("char[]", 256)
        got = lib.hv_dirty_start(self._p, code, why, len(why))
        self.why = ffi.string(why).decode(errors="replace")
        if got < 0:
            raise MigrationError(f"dirty tracking ({tracking}) cannot start: "
                                 f"{self.why or os.strerror(-got)}")
        self.method = next(name for name, c in self.METHODS.items() if c == got)

    def collect(self):
        n = lib.hv_dirty_collect(self._p, self.out)
        if n < 0:
            raise OSError(-n, f"dirty log: {os.strerror(-n)}")
        return ffi.unpack(self.out, n)

    def page(self, pfn):
        return self.ram[pfn * PAGE:(pfn + 1) * PAGE]

    def stop(self):
        if self._p is not None:
            lib.hv_dirty_stop(self._p)
            self._p = None


def _send_pages(w, dirty, pfns):
    for i in range(0, len(pfns), PAGES_PER_RECORD):
        batch = pfns[i:i + PAGES_PER_RECORD]
        # One copy of the pages, hashed and written as it is: a page of live
        # RAM the guest writes between the digest and the write would make
        # the stream disagree with its own VERIFY record.
        pages = b"".join(dirty.page(p) for p in batch)
        w.record(fmt.PAGES, fmt.PAGES_FIXED.pack(len(batch), 0),
                 b"".join(p.to_bytes(8, "little") for p in batch), pages)


class Progress:
    """One line per round on stderr: rounds, dirty pages, MB/s, expected downtime."""

    def __init__(self, out=sys.stderr):
        self.out = out

    def round(self, n, pages, rate, downtime):
        if self.out is not None:
            expect = "?" if downtime == float("inf") else f"{downtime * 1000:.0f} ms"
            print(f"hv: migrate: round {n}: {pages} dirty pages ({pages * PAGE >> 10} KiB), "
                  f"{rate / 1e6:.0f} MB/s, expected downtime {expect}",
                  file=self.out, flush=True)


def send(part, address, downtime=DOWNTIME_BUDGET, max_rounds=MAX_ROUNDS, progress=None,
         tracking="auto"):
    """Migrate part to the receiver at address.  On success part stays
    paused (the destination runs it now: destroy it) and a report is
    returned; on any failure part runs on as before and MigrationError
    says why."""
    from hv.partition import PAUSED, RUNNING
    from hv.snapshot_devices import check_savable
    try:
        check_savable(part)
    except SnapshotError as e:
        raise MigrationError(str(e)) from None
    if part.state not in (RUNNING, PAUSED):
        raise MigrationError(f"partition {part.name} is {part.state}: only a running or "
                             "paused partition can be migrated")
    progress = progress or Progress(None)
    family, where = parse_address(address)
    t0 = time.monotonic()
    sock = socket.socket(family, socket.SOCK_STREAM)
    paused_by_us = False
    dirty = None
    handed = []                         # devices whose backend the destination takes
    try:
        sock.connect(where)
        out = sock.makefile("wb", buffering=1 << 20)
        w = fmt.Writer(out)
        w.record(fmt.MEMORY, fmt.MEMORY_FIXED.pack(part.mem_size))
        dirty = DirtyLog(part, tracking)
        sent_bytes, sent_time, n = 0, 0.0, 0
        while True:
            pfns = dirty.collect()
            rate = sent_bytes / sent_time if sent_time > 0 else 0.0
            expected = len(pfns) * PAGE / rate if rate else float("inf")
            progress.round(n, len(pfns), rate, expected)
            if n >= max_rounds or (n and expected <= downtime):
                break                   # what is left fits the budget: stop and copy
            t = time.monotonic()
            _send_pages(w, dirty, pfns)
            out.flush()
            sent_time += time.monotonic() - t
            sent_bytes += len(pfns) * PAGE
            n += 1
        # Stop and copy.
        pause_at = time.monotonic()
        was_running, states = _pause_quiescent(part)
        paused_by_us = was_running
        pfns = sorted(set(pfns) | set(dirty.collect()))     # the last look's, and since
        _send_pages(w, dirty, pfns)
        for rtype, body in partition_records(part, states):
            w.record(rtype, body)
        handed = hand_over(part)        # the disks' locks, for the destination to take
        w.finish()
        out.flush()
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(1)
        if answer != ACK_RUNNING:
            raise MigrationError("the destination did not take the partition")
        downtime_s = time.monotonic() - pause_at
        paused_by_us, handed = False, []
        return {"rounds": n, "downtime": downtime_s, "total": time.monotonic() - t0,
                "last_pages": len(pfns), "bytes": sent_bytes + len(pfns) * PAGE,
                "tracking": dirty.method, "tracking_note": dirty.why}
    except (OSError, SnapshotError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        goes_on = "runs on" if part.state in (RUNNING, PAUSED) else f"is {part.state}"
        raise MigrationError(f"migration to {address} failed: {why}; "
                             f"partition {part.name} {goes_on}") from None
    finally:
        sock.close()
        if dirty is not None:
            dirty.stop()
        take_back(handed)
        if paused_by_us and part.state == PAUSED:
            part.resume()


# -- receiving --------------------------------------------------------------
def listen(address):
    family, where = parse_address(address)
    srv = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        from hv.unix_socket import claim_socket_path
        claim_socket_path(where, "migration socket", "another hv receive listens there",
                          MigrationError)
    else:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(where)
    srv.listen(1)
    return srv


def receive(srv, engine=None, **kwargs):
    """Accept one migration on the listening socket srv; returns (a created
    Partition, the connection to answer on).  Call accepted(conn) once it
    runs.  Raises MigrationError for a stream that does not end well; then
    nothing was created."""
    from hv.partition import HostError
    from hv.snapshot import from_records, restore_state
    conn, _ = srv.accept()
    inp = conn.makefile("rb", buffering=1 << 20)
    memfd, ram, records = -1, None, []
    try:
        reader = fmt.Reader(inp)
        for rtype, body in reader:
            if rtype == fmt.MEMORY and ram is None:
                (size,) = fmt.MEMORY_FIXED.unpack_from(body)
                if size % PAGE or not 0 < size <= 1 << 40:
                    raise fmt.FormatError(f"memory of {size} bytes")
                memfd = os.memfd_create("hv-migrate", os.MFD_CLOEXEC)
                os.ftruncate(memfd, size)
                ram = mmap.mmap(memfd, size)
            elif rtype == fmt.PAGES:
                if ram is None:
                    raise fmt.FormatError("pages before the memory record")
                _store_pages(ram, body)
            else:
                records.append((rtype, body))
        if ram is None:
            raise fmt.FormatError("no memory record")
        state = from_records("", records, inline_memory=True)
        if state.mem_size != len(ram):
            raise fmt.FormatError("the partition's RAM size is not the stream's")
        ram.close()
        ram = None
        state.memory_fd = memfd
        memfd = -1
        try:
            part = restore_state(state, engine, **kwargs)
        finally:
            state.close()
        return part, conn
    except (fmt.FormatError, OSError, SnapshotError, ValueError, HostError) as e:
        # The file object holds the socket open too: close both, or the
        # source waits for an answer that never comes instead of an end.
        inp.close()
        conn.close()
        raise MigrationError(f"migration stream discarded: {e}") from None
    finally:
        if ram is not None:
            ram.close()
        if memfd >= 0:
            os.close(memfd)


def _store_pages(ram, body):
    count, _ = fmt.PAGES_FIXED.unpack_from(body)
    at = fmt.PAGES_FIXED.size
    if len(body) != at + count * (8 + PAGE):
        raise fmt.FormatError("pages record's length does not match its count")
    data = at + 8 * count
    for i in range(count):
        pfn = int.from_bytes(body[at + 8 * i:at + 8 * i + 8], "little")
        if (pfn + 1) * PAGE > len(ram):
            raise fmt.FormatError(f"page {pfn:#x} is outside RAM")
        ram[pfn * PAGE:(pfn + 1) * PAGE] = body[data + i * PAGE:data + (i + 1) * PAGE]


def accepted(conn):
    """Tell the source the partition runs here (it then lets go of its copy)."""
    try:
        conn.sendall(ACK_RUNNING)
    finally:
        conn.close()
