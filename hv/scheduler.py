"""The parent's side of the core's scheduler (csrc/sched.c, sched_worker.c).

T:625 With a Scheduler, vCPUs run on the core's N worker threads, not on a
thread per vCPU: host threads grow with workers, not with partitions.  A
vCPU that needs the parent leaves its exit record on one queue; a few
Python threads here take records off it (the C call blocks with the GIL
released), hand each to its partition's exit handler, and put the vCPU
back on a runqueue.  A handler must not block: pause and resume are
scheduler states, not a waiting thread.
"""
import os
import queue
import threading

from hv.abi import ffi, lib

SERVERS = 2             # Python threads serving exits: a few, not one per vCPU


class Scheduler:
    """N workers (default: one per host CPU) running every attached vCPU.
    deterministic=True: one worker for deterministic partitions, its slices
    counted in guest instructions (csrc/sched_worker.c)."""

    def __init__(self, workers=None, servers=SERVERS, deterministic=False):
        out = ffi.new("struct hv_sched **")
        if deterministic:
            if workers not in (None, 0, 1):
                raise ValueError("a deterministic scheduler has one worker")
            err = lib.hv_sched_create_deterministic(out)
        else:
            err = lib.hv_sched_create(int(workers or 0), out)
        if err:
            raise ValueError(f"cannot start {workers} scheduler workers: {os.strerror(-err)}")
        self._s = out[0]
        self.deterministic = bool(deterministic)
        self.workers = lib.hv_sched_workers(self._s)
        # Keyed by the vCPU pointers themselves (cffi pointers hash and
        # compare by address); a plain Lock, whose `with` costs a quarter of
        # a Condition's: every exit served in Python takes it twice.
        self._owners = {}                   # vCPU -> Partition
        self._lock = threading.Lock()
        self._serving = set()               # vCPUs whose exit a server handles
        self._served = threading.Condition(self._lock)     # detach() waits on it
        self._detaching = 0                 # detach() calls waiting: notify only then
        self._closed = False
        self._servers = [threading.Thread(target=self._serve, name=f"hv-exits-{i}", daemon=True)
                         for i in range(servers)]
        # Partitions whose guest stopped are closed here, not on a server
        # (closing waits until no server holds the vCPU's last exit).
        self._reap = queue.Queue()
        self._servers.append(threading.Thread(target=self._reaper, name="hv-reaper", daemon=True))
        for t in self._servers:
            t.start()

    def attach(self, partition, vcpu, weight=0, cap=0):
        err = lib.hv_sched_attach(self._s, vcpu, weight, cap)
        if err:
            raise ValueError(f"cannot schedule the vCPU: {os.strerror(-err)}")
        with self._lock:
            self._owners[vcpu] = partition

    def detach(self, vcpu):
        """Take the vCPU off every worker and out of the exit queue."""
        with self._lock:
            self._owners.pop(vcpu, None)    # servers drop its exits from now on
            # A server may be handling its last exit record, which the
            # C detach frees: wait for it first.
            self._detaching += 1
            try:
                self._served.wait_for(lambda: vcpu not in self._serving)
            finally:
                self._detaching -= 1
        lib.hv_sched_detach(vcpu)

    def reap(self, partition):
        self._reap.put(partition)

    def _reaper(self):
        while True:
            partition = self._reap.get()
            if partition is None:
                return
            partition._end()

    def _serve(self):
        while not self._closed:
            vcpu = lib.hv_sched_next_exit(self._s, 100)       # GIL released inside
            if vcpu == ffi.NULL:
                continue
            # A look without the lock (serve() looks again under it).
            part = self._owners.get(vcpu)
            if part is not None and part.debugger is not None:
                # A debugger holds the vCPU's exits as long as GDB likes:
                # on the partition's own exit thread, not on a shared one.
                part._debug_exits.put(vcpu)
            else:
                self.serve(vcpu)

    def serve(self, vcpu):
        """Hand one exit record to its partition's handler (a server thread,
        or a debugged partition's own), unless the vCPU was detached."""
        with self._lock:
            part = self._owners.get(vcpu)
            if part is None:
                return
            self._serving.add(vcpu)
        try:
            part._serve_exit(vcpu)
        finally:
            with self._lock:
                self._serving.discard(vcpu)
                if self._detaching:
                    self._served.notify_all()

    def close(self):
        """Stop the servers and the workers (every vCPU must be detached)."""
        if self._closed:
            return
        self._closed = True
        self._reap.put(None)
        for t in self._servers:
            t.join()
        lib.hv_sched_destroy(self._s)


_default = None
_deterministic = None
_default_lock = threading.Lock()


def default_scheduler(workers=None):
    """The process's shared scheduler, started on first use with `workers`
    workers (default: one per host CPU).  Asking for another number once it
    runs is an error: its partitions are already placed."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Scheduler(workers)
        elif workers and workers != _default.workers:
            raise ValueError(f"the scheduler already runs {_default.workers} workers, "
                             f"not {workers}")
        return _default


def deterministic_scheduler():
    """The process's one-worker scheduler for deterministic partitions."""
    global _deterministic
    with _default_lock:
        if _deterministic is None:
            _deterministic = Scheduler(deterministic=True)
        return _deterministic


def _forget_after_fork():
    # A forked child has none of the parent's threads: the workers and
    # servers are gone, so the child starts schedulers of its own.
    global _default, _deterministic, _default_lock
    _default = _deterministic = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
