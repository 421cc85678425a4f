"""Scheduled protection: periodic snapshots of a running partition, the
last K kept, so a host crash loses at most one interval.

T:912 Protection(part, directory, every, keep) saves part every `every`
seconds into directory/snap-<n> (each one a snapshot directory, written
crash-safely by hv/snapshot.py: a new one is complete before the oldest
beyond `keep` is removed).  latest(directory) names the newest complete
one, which `hv restore` or Partition.restore() resumes after a crash.
"""
import os
import shutil
import threading

from hv.snapshot import STATE_FILE, SnapshotError

PREFIX = "snap-"


def snapshots(directory):
    """Complete snapshot directories under directory, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith(PREFIX) and name[len(PREFIX):].isdigit() and \
                os.path.exists(os.path.join(directory, name, STATE_FILE)):
            found.append((int(name[len(PREFIX):]), os.path.join(directory, name)))
    return [path for _, path in sorted(found)]


def latest(directory):
    """The newest complete snapshot under directory, or None."""
    found = snapshots(directory)
    return found[-1] if found else None


class Protection:
    """Save part periodically until it stops or stop() is called."""

    def __init__(self, part, directory, every, keep=3):
        if every <= 0 or keep < 1:
            raise ValueError("protection needs an interval > 0 and keep >= 1")
        self.part, self.directory, self.every, self.keep = part, directory, every, keep
        self.saved = 0
        self.error = None               # the last failure, as one line
        self._stop = threading.Event()
        done = snapshots(directory)
        self._next = int(os.path.basename(done[-1])[len(PREFIX):]) + 1 if done else 0
        os.makedirs(directory, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name=f"protect-{part.name}",
                                        daemon=True)
        self._thread.start()

    def _loop(self):
        from hv.partition import PAUSED, RUNNING
        while not self._stop.wait(self.every):
            if self.part.state not in (RUNNING, PAUSED):
                return
            target = os.path.join(self.directory, f"{PREFIX}{self._next}")
            try:
                self.part.snapshot(target)
            except SnapshotError as e:
                self.error = str(e)
                shutil.rmtree(target, ignore_errors=True)
                if self.part.state not in (RUNNING, PAUSED):
                    return
                continue
            self._next += 1
            self.saved += 1
            for old in snapshots(self.directory)[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def stop(self):
        self._stop.set()
        self._thread.join()
