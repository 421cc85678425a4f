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

Live migration on one machine hands the disk over: the source, paused
for the last copy, releases its image lock before the stream ends, so
the destination can take it; if the destination does not take the
partition, the source locks the image again and runs on.
"""
import fcntl
import hashlib
import os
import stat

from hv.devices import blk
from hv.devices.blk import BlkDevice, DiskError, image_lock, image_size
from hv.devices.persist import U64, PersistError

DEVICE = BlkDevice
NAME = "blk"
HEAD = 64 << 10                 # bytes of the image the identity hashes
PATH_MAX = 4096
IDENTITY = ("dev", "ino", "mtime_ns")


def identity(fd):
    st = os.fstat(fd)
    return {"dev": st.st_dev, "ino": st.st_ino,
            "mtime_ns": 0 if stat.S_ISBLK(st.st_mode) else st.st_mtime_ns,
            "head_sha256": hashlib.sha256(os.pread(fd, HEAD, 0)).hexdigest()}


def save(device):
    return {"path": device.path, "readonly": bool(device.readonly),
            "size": image_size(device.fd, device.path), **identity(device.fd)}


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
    head = backend.get("head_sha256")
    if not isinstance(head, str) or len(head) != 64 or head.strip("0123456789abcdef"):
        raise PersistError(f"{where}: head_sha256 is not a SHA-256 in hex")


def reopen(backend, reconnect):
    path = backend["path"]
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
