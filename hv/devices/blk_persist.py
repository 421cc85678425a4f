"""virtio-blk in snapshots: which disk, and that it is still the same disk.

T:911 A snapshot holds the guest's RAM, not its disk: the disk stays where
it is, and the restored guest must find it exactly as the saved one left
it (its page cache, its file system's journal, the requests it had
answered all assume so).  So the record names the image (absolute path,
read-only flag, size) and its identity when it was saved: device and
inode, modification time, and a SHA-256 of its first 64 KiB.  Restore
reopens the path, takes the image lock again (hv/devices/blk.py) and
refuses, in one line, a disk that is missing, of another size, another
file, or written since.  (The modification time is as fine as the file
system's clock; a block device's node keeps its time, so for one only
size and head are checked.)

T:921 With copy_disks (`hv snapshot --copy-disks`, a protect table's
`copy_disks = true`) the snapshot also holds each writable disk as it was
at the pause: disk-<slot>.img beside the memory file, copied sparsely (data
extents only) and fsynced, its size, mtime and head hash in the record.
Restoring it puts the disk back as it was: the copy is checked, copied to
a temporary file beside the image (with the image's permissions) and
renamed over it while the image's lock is held, so a crash mid-way leaves
the old image whole, and a disk in use is refused.  That is what makes a
protected partition that writes its disk restorable after a host crash:
its RAM and its disk go back to the same moment.

Live migration on one machine hands the disk over: the source, paused
for the last copy, releases its image lock before the stream ends, so
the destination can take it; if the destination does not take the
partition, the source locks the image again and runs on.
"""
import errno
import fcntl
import hashlib
import os
import re
import stat

from hv.devices import blk
from hv.devices.blk import BlkDevice, DiskError, image_lock, image_size
from hv.devices.persist import U64, PersistError

DEVICE = BlkDevice
NAME = "blk"
HEAD = 64 << 10                 # bytes of the image the identity hashes
PATH_MAX = 4096
IDENTITY = ("dev", "ino", "mtime_ns")
COPY_NAME = re.compile(r"disk-[0-9]{1,2}\.img")


def identity(fd):
    st = os.fstat(fd)
    return {"dev": st.st_dev, "ino": st.st_ino,
            "mtime_ns": 0 if stat.S_ISBLK(st.st_mode) else st.st_mtime_ns,
            "head_sha256": hashlib.sha256(os.pread(fd, HEAD, 0)).hexdigest()}


def save(device):
    return {"path": device.path, "readonly": bool(device.readonly),
            "size": image_size(device.fd, device.path), **identity(device.fd)}


def copy_extents(src, dst, size):
    """The data of [0, size) of src into dst at the same offsets, holes
    skipped where the file system reports them (SEEK_DATA/SEEK_HOLE);
    copy_file_range keeps the bytes in the kernel."""
    at = 0
    while at < size:
        try:
            start = os.lseek(src, at, os.SEEK_DATA)
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return                  # nothing but a hole from here on
            if e.errno != errno.EINVAL:
                raise
            start, end = at, size       # no extent map (a block device): all of it
        while start < end:
            n = os.copy_file_range(src, dst, end - start, start, start)
            if n <= 0:
                raise OSError(errno.EIO, "the copy stopped short")
            start += n
        at = end


def _copy_identity(fd):
    st = os.fstat(fd)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": hashlib.sha256(os.pread(fd, HEAD, 0)).hexdigest()}


def copy_into(device, directory, slot):
    """The image as it is now (the partition paused: every answered write is
    in it) copied into directory; the record's fields naming the copy.  A
    read-only disk cannot have changed: nothing is copied."""
    if device.readonly:
        return {}
    name = f"disk-{slot}.img"
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    size = image_size(device.fd, device.path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        copy_extents(device.fd, fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return {"copy": name, "copy_identity": _copy_identity(fd)}
    finally:
        os.close(fd)


def check(backend, where):
    path = backend.get("path") if isinstance(backend, dict) else None
    if not isinstance(path, str) or not path.startswith("/") or len(path) > PATH_MAX \
            or "\0" in path:
        raise PersistError(f"{where}: the disk path {path!r} is not an absolute path")
    if not isinstance(backend.get("readonly"), bool):
        raise PersistError(f"{where}: readonly is not true or false")
    for name in ("size",) + IDENTITY:
        value = backend.get(name)
        if type(value) is not int or not 0 <= value <= U64:
            raise PersistError(f"{where}: {name} is {value!r}, not an integer")
    _check_sha256(backend.get("head_sha256"), where)
    if "copy" in backend:
        name, ident = backend["copy"], backend.get("copy_identity")
        if not isinstance(name, str) or not COPY_NAME.fullmatch(name):
            raise PersistError(f"{where}: the disk copy's name {name!r} is not disk-N.img")
        if not isinstance(ident, dict) or set(ident) != {"size", "mtime_ns", "head_sha256"}:
            raise PersistError(f"{where}: copy_identity is not size, mtime_ns and head_sha256")
        for key in ("size", "mtime_ns"):
            if type(ident[key]) is not int or not 0 <= ident[key] <= U64:
                raise PersistError(f"{where}: copy_identity {key} is {ident[key]!r}")
        _check_sha256(ident["head_sha256"], where)
        if ident["size"] != backend["size"] or backend["readonly"]:
            raise PersistError(f"{where}: the disk copy does not match the disk it copies")


def _check_sha256(head, where):
    if not isinstance(head, str) or len(head) != 64 or head.strip("0123456789abcdef"):
        raise PersistError(f"{where}: head_sha256 is not a SHA-256 in hex")


def reopen(backend, reconnect):
    path = backend["path"]
    if "copy" in backend:
        _put_back(backend, reconnect.directory)
        try:
            return BlkDevice(path, readonly=False)
        except DiskError as e:
            raise PersistError(str(e)) from None
    if not os.path.exists(path):
        raise PersistError(f"disk {path} is missing: a restored partition needs the disk it "
                           "was saved with, at the same path")
    try:
        device = BlkDevice(path, readonly=backend["readonly"])
    except DiskError as e:
        raise PersistError(str(e)) from None
    try:
        why = _changed(device, backend)
    except OSError as e:
        device.close()
        raise PersistError(f"disk {path}: {e.strerror}") from None
    if why:
        device.close()
        raise PersistError(f"disk {path} {why}: restoring would show the guest a disk "
                           "that is not the one it had")
    return device


def _put_back(backend, directory):
    """The snapshot's copy of the disk over the image, atomically (T:921)."""
    path = backend["path"]
    if not directory:
        raise PersistError(f"disk {path}: its copy lives in a snapshot directory, "
                           "and this state has none")
    copy = os.path.join(directory, backend["copy"])
    try:
        src = os.open(copy, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise PersistError(f"the snapshot's copy of disk {path} ({copy}): {e.strerror}") from None
    try:
        if _copy_identity(src) != backend["copy_identity"]:
            raise PersistError(f"the snapshot's copy of disk {path} ({copy}) was changed "
                               "since it was written")
        # The image stays locked while it is replaced: nobody may be using it.
        try:
            image = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            image = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            conflict = image_lock(image, False)
            if conflict:
                raise PersistError(f"disk {path} is in use by another partition or process "
                                   f"({conflict}): its copy cannot be put back")
            tmp = f"{path}.hv-restore-{os.getpid()}"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(out, stat.S_IMODE(os.fstat(image).st_mode))
                os.ftruncate(out, backend["size"])
                copy_extents(src, out, backend["size"])
                os.fsync(out)
            except BaseException:
                os.close(out)
                os.unlink(tmp)
                raise
            os.close(out)
            os.replace(tmp, path)
            from hv.snapshot import fsync_dir
            fsync_dir(os.path.dirname(path))
        finally:
            os.close(image)             # the old image's lock goes with it
    except OSError as e:
        raise PersistError(f"disk {path}: cannot put the snapshot's copy back: "
                           f"{e.strerror}") from None
    finally:
        os.close(src)


def _changed(device, backend):
    """Why the open disk is not the saved one, or None."""
    size = image_size(device.fd, device.path)
    if size != backend["size"]:
        return f"is {size} bytes; it was {backend['size']} when saved"
    now = identity(device.fd)
    if (now["dev"], now["ino"]) != (backend["dev"], backend["ino"]):
        return "is another file than the one saved (its device and inode differ)"
    if now["mtime_ns"] != backend["mtime_ns"] or now["head_sha256"] != backend["head_sha256"]:
        return "was written since the snapshot"
    return None


def restored(device, backend):
    pass


# -- live migration on one machine ------------------------------------------
def hand_over(device):
    """Let the destination take the image: drop our lock bytes (the fd stays open)."""
    for base in (blk.LOCK_PERM_BASE, blk.LOCK_SHARED_BASE):
        for perm in blk.PERM_NAMES:
            blk._lock_byte(device.fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, base + perm)


def take_back(device):
    """The migration was abandoned: lock the image again (PersistError if
    someone took it meanwhile)."""
    conflict = image_lock(device.fd, device.readonly)
    if conflict:
        raise PersistError(f"disk {device.path} was taken while handed over ({conflict})")
