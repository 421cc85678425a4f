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

Compiled by Cython as hv.devices._blk_io_compiled (hv/devices/datapath.py);
the same file is the pure-Python path.
"""
try:
    import cython
except ImportError:                 # the pure path where Cython is not installed
    from hv.devices import cython_shim as cython

import os
import struct

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


@cython.cclass
class BlkRequests:
    """Answers the requests on a virtio-blk queue from an open image file."""

    fd = cython.declare(cython.int, visibility="public")
    sectors = cython.declare(cython.longlong, visibility="public")
    readonly = cython.declare(cython.bint, visibility="public")
    serial = cython.declare(bytes, visibility="public")
    bytes_to_guest = cython.declare(cython.longlong, visibility="public")     # payload read
    bytes_from_guest = cython.declare(cython.longlong, visibility="public")   # payload written

    def __init__(self, fd, sectors, readonly, serial):
        self.fd, self.sectors, self.readonly, self.serial = fd, sectors, readonly, serial
        self.bytes_to_guest = self.bytes_from_guest = 0

    def serve(self, queue):
        """Answer every chain available on `queue`; (requests answered, bad requests)."""
        served: cython.longlong = 0
        bad: cython.longlong = 0
        while (chain := queue.pop(HEADER_SIZE)) is not None:
            status, written = self.request(queue, chain)
            if status == S_IOERR:
                bad += 1
            if chain.writable_len == 0:     # no room even for the status byte
                queue.push(chain, 0)
                continue
            queue.write(chain, STATUS_BYTE[status], chain.writable_len - 1)
            queue.push(chain, written + 1)
            served += 1
        return served, bad

    @cython.ccall
    def request(self, queue, chain):
        """(status, data bytes written into the chain) for one chain.  A
        chain with a buffer in frames the guest does not own is refused whole."""
        if chain.refused or len(chain.readable) < HEADER_SIZE or chain.writable_len < 1:
            return S_IOERR, 0
        kind, _, sector = HEADER.unpack_from(chain.readable)
        room = chain.writable_len - 1               # the last byte is the status
        try:
            if kind == T_IN:
                return S_OK, self._read(queue, sector, first_bytes(chain.writable, room), room)
            if kind == T_OUT:
                self._write(queue, sector, chain.uncopied)
                return S_OK, 0
            if kind == T_FLUSH:
                os.fsync(self.fd)
                return S_OK, 0
            if kind == T_GET_ID:
                return S_OK, queue.write(chain, self.serial.ljust(min(room, ID_BYTES), b"\0")[:room])
            if kind == T_DISCARD:
                self._discard(b"".join([bytes(v) for v in queue.views(chain.uncopied)]))
                return S_OK, 0
        except (ValueError, OSError):
            return S_IOERR, 0
        return S_UNSUPP, 0

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
    def _read(self, queue, sector, ranges, nbytes: cython.longlong) -> cython.longlong:
        offset = self._offset(sector, nbytes)
        if nbytes and os.preadv(self.fd, queue.views(ranges), offset) != nbytes:
            raise OSError("short read")
        for gpa, length in ranges:          # the kernel wrote guest RAM: mark it
            queue.mem.wrote(gpa, length)
        self.bytes_to_guest += nbytes
        return nbytes

    @cython.cfunc
    def _write(self, queue, sector, ranges):
        if self.readonly:
            raise ValueError("read-only disk")
        nbytes: cython.longlong = 0
        for _, length in ranges:
            nbytes += length
        offset = self._offset(sector, nbytes)
        if nbytes and os.pwritev(self.fd, queue.views(ranges), offset) != nbytes:
            raise OSError("short write")
        self.bytes_from_guest += nbytes

    @cython.cfunc
    def _discard(self, payload):
        if self.readonly:
            raise ValueError("read-only disk")
        if len(payload) != DISCARD_RANGE.size:
            raise ValueError("one discard range per request")
        sector, count, _ = DISCARD_RANGE.unpack(payload)
        if count > MAX_DISCARD_SECTORS:
            raise ValueError("discard too large")
        offset = self._offset(sector, count * SECTOR)
        end = offset + count * SECTOR
        # Discarded sectors may read as anything (5.2.6.2); hv makes them zero.
        zeros = bytes(min(count * SECTOR, MAX_REQUEST))
        for at in range(offset, end, len(zeros) or 1):
            os.pwrite(self.fd, zeros[:end - at], at)
