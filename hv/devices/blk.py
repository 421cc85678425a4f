"""virtio-blk (virtio 1.2, section 5.2) on a raw image file.

T:670 The device: the image file (opened, locked, sized here), its config
space and features.  Requests are answered by hv/devices/blk_io.py, the
compiled request path: a 16-byte header, data, a status byte; bad requests
get VIRTIO_BLK_S_IOERR and the device goes on.  FLUSH is fsync: a write
whose flush completed is on disk (the guest may rely on it after a crash).
A request that would wait for the disk goes to a small pool of worker
threads (hv/devices/blk_pool.py) and is answered when it is done, out of
order; the device lock serializes those answers with the device thread's.
The image is locked the way QEMU locks it: one read-write user at a time,
and no writer while it is shared read-only, among hv processes and QEMU
alike.
"""
import errno
import fcntl
import os
import stat
import struct

# The request path's constants, here too for whoever speaks virtio-blk.
from hv.devices.blk_io import (  # noqa: F401
    DISCARD_RANGE,
    HEADER,
    ID_BYTES,
    MAX_DISCARD_SECTORS,
    MAX_REQUEST,
    MAX_TRANSFER,
    S_IOERR,
    S_OK,
    S_UNSUPP,
    SECTOR,
    T_DISCARD,
    T_FLUSH,
    T_GET_ID,
    T_IN,
    T_OUT,
)
from hv.devices.blk_pool import BlkPool
from hv.devices.errors import QueueError
from hv.devices.virtio import VirtioDevice

# Feature bits (5.2.3).
F_SIZE_MAX, F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_DISCARD = 1, 2, 5, 6, 9, 13


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

    def __init__(self, path, readonly=False, name=None, datapath=None):
        super().__init__(name or f"blk({os.path.basename(path)})", datapath=datapath)
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
        self.path = os.path.abspath(path)   # what a snapshot names (hv/devices/blk_persist.py)
        self.serial = os.path.basename(path).encode()[:ID_BYTES]
        self.io = self.datapath.blk_io.BlkRequests(self.fd, self.sectors, readonly, self.serial)
        self.pool = self.io.pool = BlkPool(self.io.finish, self._pool_done, name=self.name,
                                           ready=self.io.finish_if_ready)
        if readonly:
            self.FEATURES |= 1 << F_RO

    # Payload bytes read from the image into the guest and written from it.
    bytes_to_guest = property(lambda self: self.io.bytes_to_guest)
    bytes_from_guest = property(lambda self: self.io.bytes_from_guest)

    def config(self):
        # capacity, size_max, seg_max, geometry (unused), blk_size, topology
        # (unused), writeback, unused, num_queues, max_discard_sectors,
        # max_discard_seg, discard_sector_alignment (5.2.4).
        return struct.pack("<QII4sI8sBBHIII", self.sectors, MAX_REQUEST, 128, b"", SECTOR,
                           b"", 0, 0, 1, MAX_DISCARD_SECTORS, 1, 1)

    def serve(self, index, queue):
        served, bad = self.io.serve(queue)
        self.requests += served
        self.errors += bad

    def _make_queue(self, s, q, index=None):
        # Offered FLUSH, not accepted: the driver takes every completed
        # write as stable (virtio 1.2 5.2.6.2), so writes are written through.
        self.io.writethrough = not s.driver_features & (1 << F_FLUSH)
        return super()._make_queue(s, q, index)

    # T:676 Answers from the pool.  A worker that finished a request takes
    # the device lock and answers every request finished so far, then
    # interrupts once if the driver asked (event-idx): completions that
    # finish together share an interrupt.  The worker does this itself
    # rather than waking the device thread through an eventfd: it already
    # runs and holds the GIL, the lock is what a peer's thread takes to
    # hand a device data anyway, and the answer reaches the guest without
    # one more thread wake-up on the path of a request that waited for a disk.
    def _pool_done(self):
        with self.lock:
            try:
                self._answer_finished(self.pool.take_done())
            except QueueError as e:
                self._queue_error(e)

    def _answer_finished(self, jobs):
        queue = self._queues.get(0)
        answered = False
        for job in jobs:
            # abandon() waited for and dropped every request of rings that
            # are gone, so a finished request is of the live queue; checked
            # anyway: an answer must never land in rings the guest reset.
            if self.closed or job.queue is not queue:
                continue
            if self.io.complete(job):
                self.requests += 1
                answered = True
            if job.status == S_IOERR:
                self.errors += 1
        if answered and not self.closed and queue.should_notify():
            self.interrupt()

    def drain(self):
        """freeze(): wait for the pool's requests and answer them."""
        try:
            self._answer_finished(self.pool.wait_idle())
        except QueueError:
            pass                    # halted: the driver must reset it anyway

    def abandon(self):
        """Reset, broken ring, close: wait for the pool's requests in
        progress (a read writes guest RAM until its preadv returns), drop
        those not started, answer none."""
        with self.lock:
            if getattr(self, "pool", None) is not None:     # None: __init__ failed
                self.pool.wait_idle(cancel=True)
                self.io.forget()

    def close(self):
        super().close()
        if getattr(self, "pool", None) is not None:
            self.pool.stop()        # idle (abandon()): the workers just end
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)       # releases the lock
            self.fd = -1
