"""virtio-blk (virtio 1.2, section 5.2) on a raw image file.

T:670 A request is a 16-byte header (type, sector) in the readable part of
the chain, data, and a status byte at the very end of the writable part.
Sector arithmetic is checked before any I/O; a request outside the disk or
malformed gets VIRTIO_BLK_S_IOERR, an unknown type VIRTIO_BLK_S_UNSUPP, and
the device goes on.  FLUSH is fsync: a write whose flush completed is on
disk (the guest may rely on it after a crash).  The image is locked the way
QEMU locks it: one read-write user at a time, and no writer while it is
shared read-only, among hv processes and QEMU alike.
"""
import errno
import fcntl
import os
import stat
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


# T:675 Image locking that QEMU sees, and that sees QEMU.  QEMU's raw-posix
# driver ("locking" option, on by default) describes each user of an image
# with open-file-description (OFD) read locks on single bytes: byte
# LOCK_PERM_BASE + i for each permission i the user holds, byte
# LOCK_SHARED_BASE + i for each permission it does NOT let others hold.  A
# user may take permission i only if nobody holds byte SHARED_BASE + i, and
# may refuse to share it only if nobody holds byte PERM_BASE + i.  hv speaks
# the same protocol (flock(2), which hv used before, is invisible to it):
# a writer holds read+write and shares neither write nor resize; a reader
# holds read and shares no write either, so readers share, writers exclude.
# OFD locks belong to the open file, so closing the fd releases them, and
# two opens in one process conflict like two processes.
LOCK_PERM_BASE, LOCK_SHARED_BASE = 100, 200
PERM_CONSISTENT_READ, PERM_WRITE, PERM_WRITE_UNCHANGED, PERM_RESIZE = 0, 1, 2, 3
PERM_NAMES = {PERM_CONSISTENT_READ: "consistent read", PERM_WRITE: "write",
              PERM_WRITE_UNCHANGED: "write unchanged", PERM_RESIZE: "resize"}
FLOCK = struct.Struct("hhqqi4x")        # struct flock: type, whence, start, len, pid


def _lock_byte(fd, cmd, kind, offset):
    """One fcntl on one byte; returns the lock type the kernel reports."""
    arg = fcntl.fcntl(fd, cmd, FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
    return FLOCK.unpack(arg)[0]


def image_lock(fd, readonly):
    """Take QEMU-compatible locks on the image open as fd; None, or why not
    (another user holds a conflicting lock).  The locks are taken first and
    checked after, as QEMU does, so two racing openers cannot both win."""
    held = {PERM_CONSISTENT_READ} | (set() if readonly else {PERM_WRITE})
    unshared = {PERM_WRITE, PERM_RESIZE}
    try:
        for perm in held:
            _lock_byte(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, LOCK_PERM_BASE + perm)
        for perm in unshared:
            _lock_byte(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, LOCK_SHARED_BASE + perm)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):     # someone holds a write lock there
            return "its lock bytes are write-locked"
        raise DiskError(f"cannot lock the image: {e.strerror}") from None
    # A test for a write lock fails where anyone else holds a read lock.
    for perm in held:
        if _lock_byte(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, LOCK_SHARED_BASE + perm) != fcntl.F_UNLCK:
            return f"it does not share the {PERM_NAMES[perm]} permission"
    for perm in unshared:
        if _lock_byte(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, LOCK_PERM_BASE + perm) != fcntl.F_UNLCK:
            return f"it holds the {PERM_NAMES[perm]} permission"
    return None


BLKGETSIZE64 = 0x80081272               # _IOR(0x12, 114, size_t), linux/fs.h


def image_size(fd, path):
    """Bytes of the image: a file's length, or a block device's size (whose
    st_size is 0) from the BLKGETSIZE64 ioctl."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)))[0]
    if not stat.S_ISREG(st.st_mode):
        raise DiskError(f"disk {path} is not a regular file or a block device")
    return st.st_size


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
            hint = ""
            if not readonly and e.errno in (errno.EACCES, errno.EROFS, errno.EPERM) \
                    and os.access(path, os.R_OK):
                hint = " (to attach it read-only, add ,ro)"
            raise DiskError(f"cannot open disk {path} read-{'only' if readonly else 'write'}: "
                            f"{e.strerror}{hint}") from None
        try:
            conflict = image_lock(self.fd, readonly)
            if conflict:
                raise DiskError(f"disk {path} is in use by another partition or process "
                                f"({conflict})")
            self.sectors = image_size(self.fd, path) // SECTOR
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        self.readonly = readonly
        self.bytes_to_guest = self.bytes_from_guest = 0     # payload read, written
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
