"""The virtio-blk request path (virtio 1.2, 5.2.6): one chain in, one status out.

T:672 A request is a 16-byte header (type, sector) in the readable part of
the chain, data, and a status byte at the very end of the writable part.
The header is copied once (pop(copy=16)) and decoded; the data is never
copied: a read goes from the image file straight into the guest's
buffers with preadv(2), a write from the guest's buffers into the file
with pwritev(2), both with the GIL released (os.preadv/os.pwritev drop it
around the system call).  Sector arithmetic is checked before any I/O; a
request outside the disk or malformed gets IOERR, an unknown type UNSUPP,
and the device goes on.  FLUSH is fsync.

T:673 Inline or in the pool.  With a pool (hv/devices/blk_pool.py, as
BlkDevice sets up), a request the page cache can answer is answered here,
on the device thread, as before: a page-cache preadv costs less than
handing it to a thread.  Whether it can is asked of the kernel: the read
is tried with RWF_NOWAIT, which fails with EAGAIN (or comes back short)
instead of waiting for the disk; such a read is handed to the pool
(defer()), whose worker repeats it without the flag, and serve() goes on
with the next chain -- unless nothing else is waiting (the pool holds no
request and the ring offers none): then it blocks here, with nobody
behind it, and saves the hand-off to a worker and back.  Writes: buffered pwritev2 with RWF_NOWAIT fails
with EOPNOTSUPP on ext4 (Linux 6.18, measured; only io_uring has async
buffered writes), so where the kernel refuses it a write is done inline
when it cannot need a read (whole pages, or partial pages the page cache
holds: a 1-byte RWF_NOWAIT read probes them) and goes to the pool
otherwise.  An inline buffered write can still wait when the kernel
throttles writers with too many dirty pages; that is the one stall left.
FLUSH and DISCARD always go to the pool: an fsync must not hold up reads.
A request answered by a worker completes out of order (virtio lets the
device use buffers in any order, 2.7.14), through complete().

FLUSH covers what virtio 1.2 5.2.6 asks: a write becomes stable once it
is completed and a FLUSH "is sent after the write is completed and is
completed itself".  A write is used only after its pwritev returned, so
every write the driver saw completed before it made the FLUSH available
is in the page cache before the worker's fsync starts, and fsync makes it
durable.  Writes still in flight when the FLUSH is submitted are not
promised, and need not be.

Nothing a worker needs is read from the ring after the pop: the chain was
copied and checked once, and a Pending carries its checked views of guest
RAM.  Without a pool (pool None: unit tests, tools) every request is
answered inline and blocks, as it did before the pool existed.

Compiled by Cython as hv.devices._blk_io_compiled (hv/devices/datapath.py);
the same file is the pure-Python path.
"""
try:
    import cython
except ImportError:                 # the pure path where Cython is not installed
    from hv.devices import cython_shim as cython

import errno
import os
import struct

from hv.devices.errors import QueueError
from hv.devices.virtqueue import first_bytes

SECTOR = 512
# Request types and status values (5.2.6).
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
STATUS_BYTE = (b"\0", b"\1", b"\2")
HEADER = struct.Struct("<IIQ")              # type, reserved, sector
HEADER_SIZE = 16
DISCARD_RANGE = struct.Struct("<QII")       # sector, num_sectors, flags (5.2.6)
MAX_REQUEST = 1 << 20                       # bytes of data per segment (size_max)
MAX_TRANSFER = 16 << 20                     # bytes one request may move: bounds host buffers
MAX_DISCARD_SECTORS = 1 << 15               # 16 MiB per discard request
ID_BYTES = 20                               # VIRTIO_BLK_ID_BYTES
PAGE = 4096                                 # the page cache's unit
RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
S_PENDING = -1                              # request(): handed to the pool, answered later


@cython.cclass
class Pending:
    """A request handed to the pool: what its worker needs, taken from the
    chain when it was popped (the worker reads nothing from the ring), and
    its outcome.  status stays IOERR unless the I/O succeeds."""

    kind = cython.declare(cython.int, visibility="public")
    queue = cython.declare(object, visibility="public")
    chain = cython.declare(object, visibility="public")
    offset = cython.declare(cython.longlong, visibility="public")
    nbytes = cython.declare(cython.longlong, visibility="public")
    views = cython.declare(object, visibility="public")    # checked windows into guest RAM
    ranges = cython.declare(object, visibility="public")   # their (gpa, len), to mark written
    status = cython.declare(cython.int, visibility="public")

    def __init__(self, kind, queue, chain, offset, nbytes, views, ranges):
        self.kind, self.queue, self.chain = kind, queue, chain
        self.offset, self.nbytes, self.views, self.ranges = offset, nbytes, views, ranges
        self.status = S_IOERR


@cython.cclass
class BlkRequests:
    """Answers the requests on a virtio-blk queue from an open image file."""

    fd = cython.declare(cython.int, visibility="public")
    sectors = cython.declare(cython.longlong, visibility="public")
    readonly = cython.declare(cython.bint, visibility="public")
    serial = cython.declare(bytes, visibility="public")
    bytes_to_guest = cython.declare(cython.longlong, visibility="public")     # payload read
    bytes_from_guest = cython.declare(cython.longlong, visibility="public")   # payload written
    # The pool (hv/devices/blk_pool.py: submit(Pending)) or None: all inline.
    pool = cython.declare(object, visibility="public")
    waiting = cython.declare(cython.longlong, visibility="public")    # chains in the pool
    deferred = cython.declare(cython.longlong, visibility="public")   # requests ever handed to it
    # Does the kernel take RWF_NOWAIT for reads and for buffered writes here?
    # Found out on first use (EOPNOTSUPP).
    read_nowait = cython.declare(cython.bint, visibility="public")
    write_nowait = cython.declare(cython.bint, visibility="public")
    # The driver did not accept VIRTIO_BLK_F_FLUSH (it was offered): then a
    # write must be stable when it completes (virtio 1.2 5.2.6.2, case 1),
    # so each write and discard is followed by fdatasync, in the pool.
    writethrough = cython.declare(cython.bint, visibility="public")
    # Tests: True sends every read and write to the pool when popped, as a
    # cold page cache would (deterministic, unlike evicting the image's
    # pages); a worker may still find queued ones cached (finish_if_ready).
    force_pool = cython.declare(cython.bint, visibility="public")
    _probe = cython.declare(bytearray)

    def __init__(self, fd, sectors, readonly, serial):
        self.fd, self.sectors, self.readonly, self.serial = fd, sectors, readonly, serial
        self.bytes_to_guest = self.bytes_from_guest = 0
        self.pool = None
        self.waiting = self.deferred = 0
        self.read_nowait = self.write_nowait = RWF_NOWAIT != 0
        self.force_pool = self.writethrough = False
        self._probe = bytearray(1)

    def serve(self, queue):
        """Answer every chain available on `queue`, or hand it to the pool;
        (requests answered here, bad requests among them)."""
        served: cython.longlong = 0
        bad: cython.longlong = 0
        while True:
            if self.waiting >= queue.size and queue.pending():
                # Every descriptor is in a request the pool holds: a chain
                # offered now reuses one.  A broken driver; halting here is
                # what bounds the pool by the ring.
                raise QueueError(f"more than {queue.size} requests in flight on a ring of "
                                 f"{queue.size} descriptors")
            chain = queue.pop(HEADER_SIZE)
            if chain is None:
                break
            status, written = self.request(queue, chain)
            if status == S_PENDING:
                continue
            if status == S_IOERR:
                bad += 1
            if self._answer(queue, chain, status, written):
                served += 1
        return served, bad

    @cython.cfunc
    def _answer(self, queue, chain, status: cython.int, written) -> cython.bint:
        """The status byte, then the used entry; False for a chain with no
        room even for the status byte (given back with nothing written)."""
        if chain.writable_len == 0:
            queue.push(chain, 0)
            return False
        queue.write(chain, STATUS_BYTE[status], chain.writable_len - 1)
        queue.push(chain, written + 1)
        return True

    @cython.ccall
    def request(self, queue, chain):
        """(status, data bytes written into the chain) for one chain, or
        (S_PENDING, 0) if it went to the pool.  A chain with a buffer in
        frames the guest does not own is refused whole."""
        if chain.refused or len(chain.readable) < HEADER_SIZE or chain.writable_len < 1:
            return S_IOERR, 0
        kind, _, sector = HEADER.unpack_from(chain.readable)
        room = chain.writable_len - 1               # the last byte is the status
        try:
            if kind == T_IN:
                return self._read(queue, chain, sector, first_bytes(chain.writable, room), room)
            if kind == T_OUT:
                return self._write(queue, chain, sector, chain.uncopied)
            if kind == T_FLUSH:
                if self.pool is not None:
                    return self._defer(T_FLUSH, queue, chain, 0, 0, None, None)
                os.fsync(self.fd)
                return S_OK, 0
            if kind == T_GET_ID:
                return S_OK, queue.write(chain, self.serial.ljust(min(room, ID_BYTES), b"\0")[:room])
            if kind == T_DISCARD:
                return self._discard(queue, chain,
                                     b"".join([bytes(v) for v in queue.views(chain.uncopied)]))
        except (ValueError, OSError):
            return S_IOERR, 0
        return S_UNSUPP, 0

    @cython.cfunc
    def _defer(self, kind: cython.int, queue, chain, offset, nbytes, views, ranges):
        self.pool.submit(Pending(kind, queue, chain, offset, nbytes, views, ranges))
        self.waiting += 1
        self.deferred += 1
        return S_PENDING, 0

    @cython.cfunc
    def _offset(self, sector, nbytes) -> cython.longlong:
        """Check [sector, sector + nbytes) against the disk, overflow-safe
        (sector is the guest's 64-bit value); its byte offset."""
        if nbytes % SECTOR:
            raise ValueError("length is not a whole number of sectors")
        if nbytes > MAX_TRANSFER:
            raise ValueError("request larger than the transfer limit")
        if sector > self.sectors or nbytes // SECTOR > self.sectors - sector:
            raise ValueError("beyond the end of the disk")
        return sector * SECTOR

    @cython.cfunc
    def _read(self, queue, chain, sector, ranges, nbytes: cython.longlong):
        offset: cython.longlong = self._offset(sector, nbytes)
        views = queue.views(ranges)
        if nbytes and self.pool is not None:
            if not self._read_now(views, offset, nbytes):
                # Not all cached.  With other requests in the pool or on the
                # ring, it must not hold them up: the pool.  Alone, a read
                # here waits for the disk with nobody behind it, and saves
                # the hand-off to a worker and back (measured: cold 4 KiB
                # reads at depth 1, 0.91x QEMU through the pool).
                if self.force_pool or self.waiting or queue.pending():
                    return self._defer(T_IN, queue, chain, offset, nbytes, views, ranges)
                if os.preadv(self.fd, views, offset) != nbytes:
                    raise OSError("short read")
        elif nbytes and os.preadv(self.fd, views, offset) != nbytes:
            raise OSError("short read")
        self._read_done(ranges, nbytes, queue)
        return S_OK, nbytes

    @cython.cfunc
    def _read_now(self, views, offset: cython.longlong, nbytes: cython.longlong) -> cython.bint:
        """Read from the page cache only: True if it held everything."""
        if self.force_pool or not self.read_nowait:
            return False
        try:
            return os.preadv(self.fd, views, offset, RWF_NOWAIT) == nbytes
        except BlockingIOError:
            return False                # EAGAIN: some page is not cached
        except OSError as e:
            if e.errno != errno.EOPNOTSUPP:
                raise
            self.read_nowait = False    # never inline: a read here may always block
            return False

    @cython.cfunc
    def _read_done(self, ranges, nbytes: cython.longlong, queue):
        for gpa, length in ranges:          # the kernel wrote guest RAM: mark it
            queue.mem.wrote(gpa, length)
        self.bytes_to_guest += nbytes

    @cython.cfunc
    def _write(self, queue, chain, sector, ranges):
        if self.readonly:
            raise ValueError("read-only disk")
        nbytes: cython.longlong = 0
        for _, length in ranges:
            nbytes += length
        offset: cython.longlong = self._offset(sector, nbytes)
        views = queue.views(ranges)
        if self.pool is not None and (self.writethrough and nbytes or
                                      nbytes and not self._write_now(views, offset, nbytes)):
            return self._defer(T_OUT, queue, chain, offset, nbytes, views, None)
        if nbytes and self.pool is None and os.pwritev(self.fd, views, offset) != nbytes:
            raise OSError("short write")
        if nbytes and self.pool is None and self.writethrough:
            os.fdatasync(self.fd)
        self.bytes_from_guest += nbytes
        return S_OK, 0

    @cython.cfunc
    def _write_now(self, views, offset: cython.longlong, nbytes: cython.longlong) -> cython.bint:
        """Write without waiting for the disk, if that can be known: True if written."""
        if self.force_pool:
            return False
        if self.write_nowait:
            try:
                return os.pwritev(self.fd, views, offset, RWF_NOWAIT) == nbytes
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                self.write_nowait = False   # buffered writes: see T:673
        end: cython.longlong = offset + nbytes
        if not (offset % PAGE == 0 or self._cached(offset)) or \
                not (end % PAGE == 0 or self._cached(end - 1)):
            return False                # a partial page to read first: the pool
        if os.pwritev(self.fd, views, offset) != nbytes:
            raise OSError("short write")
        return True

    @cython.cfunc
    def _cached(self, offset: cython.longlong) -> cython.bint:
        """Is the page holding byte `offset` in the page cache?"""
        if not self.read_nowait:
            return False
        try:
            return os.preadv(self.fd, [self._probe], offset - offset % PAGE, RWF_NOWAIT) == 1
        except OSError:
            return False

    @cython.cfunc
    def _discard(self, queue, chain, payload):
        if self.readonly:
            raise ValueError("read-only disk")
        if len(payload) != DISCARD_RANGE.size:
            raise ValueError("one discard range per request")
        sector, count, _ = DISCARD_RANGE.unpack(payload)
        if count > MAX_DISCARD_SECTORS:
            raise ValueError("discard too large")
        offset: cython.longlong = self._offset(sector, count * SECTOR)
        if self.pool is not None:
            return self._defer(T_DISCARD, queue, chain, offset, count * SECTOR, None, None)
        self._zero(offset, count * SECTOR)
        if self.writethrough:
            os.fdatasync(self.fd)
        return S_OK, 0

    @cython.cfunc
    def _zero(self, offset: cython.longlong, nbytes: cython.longlong):
        # Discarded sectors may read as anything (5.2.6.2); hv makes them zero.
        zeros = bytes(min(nbytes, MAX_REQUEST))
        end = offset + nbytes
        for at in range(offset, end, len(zeros) or 1):
            os.pwrite(self.fd, zeros[:end - at], at)

    # -- in the pool, and back ---------------------------------------------
    def finish(self, job: Pending):
        """A pool worker: do the request's blocking I/O (the GIL released in
        the system call).  Touches no ring: complete() answers it."""
        try:
            if job.kind == T_IN:
                if os.preadv(self.fd, job.views, job.offset) != job.nbytes:
                    raise OSError("short read")
            elif job.kind == T_OUT:
                if os.pwritev(self.fd, job.views, job.offset) != job.nbytes:
                    raise OSError("short write")
                if self.writethrough:
                    os.fdatasync(self.fd)
            elif job.kind == T_FLUSH:
                os.fsync(self.fd)
            elif job.kind == T_DISCARD:
                self._zero(job.offset, job.nbytes)
                if self.writethrough:
                    os.fdatasync(self.fd)
            job.status = S_OK
        except OSError:
            job.status = S_IOERR
        job.views = None                    # no window into guest RAM outlives the I/O

    def finish_if_ready(self, job: Pending) -> cython.bint:
        """A pool worker, for a read still queued: do it if the page cache
        holds it by now (its RWF_NOWAIT try started the disk read); True if
        done.  Never blocks; anything but a cached read says False."""
        if job.kind != T_IN or not self.read_nowait:
            return False
        try:
            if os.preadv(self.fd, job.views, job.offset, RWF_NOWAIT) != job.nbytes:
                return False
        except OSError:
            return False
        job.status = S_OK
        job.views = None
        return True

    def complete(self, job: Pending):
        """A finished request (under the device lock): mark what the kernel
        wrote, the status byte, the used entry.  True if answered (a chain
        without room for the status byte is given back, not answered)."""
        self.waiting -= 1
        written: cython.longlong = 0
        if job.status == S_OK and job.kind == T_IN:
            self._read_done(job.ranges, job.nbytes, job.queue)
            written = job.nbytes
        elif job.status == S_OK and job.kind == T_OUT:
            self.bytes_from_guest += job.nbytes
        return self._answer(job.queue, job.chain, job.status, written)

    def forget(self):
        """The requests in the pool will never be answered (the rings were
        reset or dropped; the pool is idle): count none as waiting."""
        self.waiting = 0
