"""Scheduled protection: periodic snapshots of a running partition, the
last K kept, so a host crash loses at most one interval.

T:912 Protection(part, directory, every, keep) saves part every `every`
seconds into directory/snap-<n> (each one a snapshot directory, written
crash-safely by hv/snapshot.py: a new one is complete before the oldest
beyond `keep` is removed).  latest(directory) names the newest complete
one, which `hv restore DIRECTORY` (or Partition.restore(latest(...)))
resumes after a crash.  `hv up` and the API turn it on with a partition's
`protect` table (hv/config.py, hv/manager.py).

hv removes only what it wrote: a snap-<n> directory a Protection made
(it holds a .hv-protection marker), and in it only the files a snapshot
consists of; a directory that holds anything else is left where it is,
and a number already taken (by anyone) is never reused.
"""
import os
import re
import threading
import time
from contextlib import nullcontext

from hv.snapshot import MEMORY_FILE, STATE_FILE, SnapshotError

PREFIX = "snap-"
NUMBERED = re.compile(re.escape(PREFIX) + r"([0-9]{1,18})")
TEMP_FILE = STATE_FILE + ".tmp"
MARKER = ".hv-protection"       # in every snap-<n> a Protection made: only those are pruned
DISK_COPY = re.compile(r"disk-[0-9]{1,2}\.img(\.tmp)?")     # copy_disks (blk_persist.py)


def _numbered(directory):
    """[(n, path)] of every snap-<n> entry under directory, by n."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name))
             for name in names if (m := NUMBERED.fullmatch(name))]
    return sorted(found)


def snapshots(directory, ours=False):
    """Complete snapshot directories under directory, oldest first (ours:
    only those a Protection made)."""
    return [path for _, path in _numbered(directory)
            if os.path.isfile(os.path.join(path, STATE_FILE))
            and (not ours or os.path.isfile(os.path.join(path, MARKER)))]


def latest(directory):
    """The newest complete snapshot under directory, or None."""
    found = snapshots(directory)
    return found[-1] if found else None


def remove_snapshot(path):
    """Remove a snapshot directory hv wrote: its state, its memory files,
    its disk copies and a half-written state, then the directory if
    nothing else is in it.
    Returns whether it is gone."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return True
    for name in names:
        if name in (STATE_FILE, TEMP_FILE, MARKER) or MEMORY_FILE.fullmatch(name) \
                or DISK_COPY.fullmatch(name):
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        return False            # someone else's files are in it: theirs to remove
    return True


class Protection:
    """Save part periodically until it stops or stop() is called.  lock, if
    given, is held around each save (the manager's per-partition lock, so
    a save never interleaves with a pause, stop or migration)."""

    def __init__(self, part, directory, every, keep=3, lock=None, copy_disks=False):
        if every <= 0 or keep < 1:
            raise ValueError("protection needs an interval > 0 and keep >= 1")
        self.part, self.directory, self.every, self.keep = part, directory, every, keep
        self.copy_disks = copy_disks    # each snapshot holds the writable disks too
        self.saved = 0
        self.error = None               # the last failure, as one line
        self.last_saved_at = None       # time.time() of the last good save
        self.last_seconds = None        # how long that save paused the guest
        self._lock = lock if lock is not None else nullcontext()
        self._stop = threading.Event()
        os.makedirs(directory, exist_ok=True)
        taken = _numbered(directory)
        self._next = taken[-1][0] + 1 if taken else 0
        self._thread = threading.Thread(target=self._loop, name=f"protect-{part.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def active(self):
        return self._thread.is_alive() and not self._stop.is_set()

    def _new_target(self):
        """A snap-<n> directory made now, so it is ours (n never reused)."""
        while True:
            target = os.path.join(self.directory, f"{PREFIX}{self._next}")
            self._next += 1
            try:
                os.mkdir(target, 0o700)
            except FileExistsError:
                continue
            with open(os.path.join(target, MARKER), "x"):
                pass
            return target

    def _loop(self):
        from hv.partition import PAUSED, RUNNING
        while not self._stop.wait(self.every):
            with self._lock:
                if self._stop.is_set() or self.part.state not in (RUNNING, PAUSED):
                    return
                try:
                    target = self._new_target()
                    report = self.part.snapshot(target, copy_disks=self.copy_disks)
                except (SnapshotError, OSError) as e:
                    self.error = str(e) if isinstance(e, SnapshotError) else \
                        f"cannot write in {self.directory}: {e.strerror}"
                    if "target" in locals():
                        remove_snapshot(target)
                    if self.part.state not in (RUNNING, PAUSED):
                        return
                    continue
            self.saved += 1
            self.error = None
            self.last_saved_at = time.time()
            self.last_seconds = report["seconds"]
            for old in snapshots(self.directory, ours=True)[:-self.keep]:
                remove_snapshot(old)

    def status(self):
        """What the API reports about it."""
        return {"active": self.active, "every_seconds": self.every, "keep": self.keep,
                "directory": self.directory, "saved": self.saved, "last_error": self.error,
                "last_saved_at": self.last_saved_at, "last_pause_seconds": self.last_seconds}

    def stop(self, wait=True):
        """No save starts after this; wait: also for one in progress (not
        with the lock held: the save may be waiting for it)."""
        self._stop.set()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()
