"""virtio-blk (virtio 1.2, section 5.2) on a raw image file.

T:670 A request is a 16-byte header (type, sector) in the readable part of
the chain, data, and a status byte at the very end of the writable part.
Sector arithmetic is checked before any I/O; a request outside the disk or
malformed gets VIRTIO_BLK_S_IOERR, an unknown type VIRTIO_BLK_S_UNSUPP, and
the device goes on.  FLUSH is fsync: a write whose flush completed is on
disk (the guest may rely on it after a crash).  The image is locked: one
read-write user at a time, and no writer while it is shared read-only.
"""
import fcntl
import os
import struct

from hv.devices.virtio import VirtioDevice

SECTOR = 512
# Request types and status values (5.2.6).
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
# Feature bits (5.2.3).
F_SIZE_MAX, F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_DISCARD = 1, 2, 5, 6, 9, 13
HEADER = struct.Struct("<IIQ")              # type, reserved, sector
DISCARD_RANGE = struct.Struct("<QII")       # sector, num_sectors, flags (5.2.6)
MAX_REQUEST = 1 << 20                       # bytes of data per segment (size_max)
MAX_TRANSFER = 16 << 20                     # bytes one request may move: bounds host buffers
MAX_DISCARD_SECTORS = 1 << 15                # 16 MiB per discard request
ID_BYTES = 20                               # VIRTIO_BLK_ID_BYTES


class DiskError(Exception):
    """The image cannot be used (missing, a directory, locked)."""


class BlkDevice(VirtioDevice):
    DEVICE_ID = 2
    FEATURES = (1 << F_SIZE_MAX) | (1 << F_SEG_MAX) | (1 << F_BLK_SIZE) | (1 << F_FLUSH) | (1 << F_DISCARD)
    QUEUES = 1
    QUEUE_MAX = 256
    REFUSES_FOREIGN_BUFFERS = True          # a buffer in hv's frames: IOERR (5.2.6)

    def __init__(self, path, readonly=False, name=None):
        super().__init__(name or f"blk({os.path.basename(path)})")
        if os.path.isdir(path):
            raise DiskError(f"disk {path} is a directory")
        try:
            self.fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except OSError as e:
            raise DiskError(f"cannot open disk {path}: {e.strerror}") from None
        try:
            # One writer, or any number of readers (like QEMU's image locking).
            fcntl.flock(self.fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise DiskError(f"disk {path} is in use by another partition or process") from None
        self.readonly = readonly
        self.bytes_to_guest = self.bytes_from_guest = 0     # payload read, written
        # The end by seeking: st_size is 0 for a block device (a loop device,
        # a partition), which would make the disk look empty.
        self.sectors = os.lseek(self.fd, 0, os.SEEK_END) // SECTOR
        self.serial = os.path.basename(path).encode()[:ID_BYTES]
        if readonly:
            self.FEATURES |= 1 << F_RO

    def config(self):
        # capacity, size_max, seg_max, geometry (unused), blk_size, topology
        # (unused), writeback, unused, num_queues, max_discard_sectors,
        # max_discard_seg, discard_sector_alignment (5.2.4).
        return struct.pack("<QII4sI8sBBHIII", self.sectors, MAX_REQUEST, 128, b"", SECTOR,
                           b"", 0, 0, 1, MAX_DISCARD_SECTORS, 1, 1)

    def serve(self, index, queue):
        while (chain := queue.pop()) is not None:
            status, data = self._request(chain)
            written = queue.write(chain, data) if data else 0
            if chain.writable_len == 0:     # no room even for the status byte
                queue.push(chain, 0)        # (counted by _request)
                continue
            queue.write(chain, bytes([status]), offset=chain.writable_len - 1)
            queue.push(chain, written + 1)
            self.requests += 1

    def _request(self, chain):
        """(status, bytes to return) for one chain, or an error status (a
        chain with a buffer in frames the guest does not own is refused whole)."""
        if chain.refused or len(chain.readable) < HEADER.size or chain.writable_len < 1:
            self.errors += 1
            return S_IOERR, b""
        kind, _, sector = HEADER.unpack_from(chain.readable)
        payload = chain.readable[HEADER.size:]
        room = chain.writable_len - 1               # the last byte is the status
        try:
            if kind == T_IN:
                return S_OK, self._read(sector, room)
            if kind == T_OUT:
                self._write(sector, payload)
                return S_OK, b""
            if kind == T_FLUSH:
                os.fsync(self.fd)
                return S_OK, b""
            if kind == T_GET_ID:
                return S_OK, self.serial.ljust(min(room, ID_BYTES), b"\0")[:room]
            if kind == T_DISCARD:
                self._discard(payload)
                return S_OK, b""
        except (ValueError, OSError):
            self.errors += 1
            return S_IOERR, b""
        return S_UNSUPP, b""

    def _range(self, sector, nbytes):
        """Check [sector, sector + nbytes) against the disk, overflow-safe."""
        if nbytes % SECTOR:
            raise ValueError("length is not a whole number of sectors")
        if nbytes > MAX_TRANSFER:
            raise ValueError("request larger than the transfer limit")
        if sector > self.sectors or nbytes // SECTOR > self.sectors - sector:
            raise ValueError("beyond the end of the disk")
        return sector * SECTOR

    def _read(self, sector, nbytes):
        offset = self._range(sector, nbytes)
        data = os.pread(self.fd, nbytes, offset)
        if len(data) != nbytes:
            raise OSError("short read")
        self.bytes_to_guest += nbytes
        return data

    def _write(self, sector, data):
        if self.readonly:
            raise ValueError("read-only disk")
        offset = self._range(sector, len(data))
        if os.pwrite(self.fd, data, offset) != len(data):
            raise OSError("short write")
        self.bytes_from_guest += len(data)

    def _discard(self, payload):
        if self.readonly:
            raise ValueError("read-only disk")
        if len(payload) != DISCARD_RANGE.size:
            raise ValueError("one discard range per request")
        sector, count, _ = DISCARD_RANGE.unpack(payload)
        if count > MAX_DISCARD_SECTORS:
            raise ValueError("discard too large")
        offset = self._range(sector, count * SECTOR)
        # Discarded sectors may read as anything (5.2.6.2); hv makes them zero.
        zeros = bytes(min(count * SECTOR, MAX_REQUEST))
        for at in range(offset, offset + count * SECTOR, len(zeros)):
            os.pwrite(self.fd, zeros[:offset + count * SECTOR - at], at)

    def close(self):
        super().close()
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)       # releases the lock
            self.fd = -1
