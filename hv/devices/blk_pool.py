"""The worker threads that serve the virtio-blk requests which would block.

T:674 The device thread answers a request itself when the page cache can
(hv/devices/blk_io.py tries each read with RWF_NOWAIT); a request that
would wait for the disk -- a page-cache miss, an fsync, a discard -- is
handed to this pool, and the device thread goes on with the next chain.
A worker does the request's one blocking system call (preadv, pwritev,
fsync: each releases the GIL for its whole length, so Python threads
serve as well as C ones would here), puts the request on the finished
list, and calls on_done(), which answers every finished request at once
under the device lock (BlkDevice._answer_finished): one interrupt per
batch of completions, in whatever order the disk finished them.

Bounded: a request is in the pool from the chain's pop to its push, and
a correct driver cannot have more chains in flight than its ring has
descriptors, so BlkRequests refuses (halts the queue) past queue size --
a guest posting slow requests cannot grow host memory without bound.
The threads start on first use, up to WORKERS.  A worker that finished
one request also finishes the queued reads the page cache holds by then
(ready()): their answers share one lock and one interrupt.
"""
import collections
import threading

# Workers.  Two, so that one can sit in an fsync while the other serves
# reads.  The disk's own parallelism does not need more: a read reaches the
# pool after its RWF_NOWAIT try failed, and that try has already started
# the disk read (the kernel's readahead runs before it answers EAGAIN:
# measured, a cold page read with RWF_NOWAIT is in the page cache 50 ms
# later), so every read of a batch is at the disk at once and a worker
# mostly collects finished ones (_finish_ready).  Measured on cold 4 KiB
# random and 64 KiB sequential reads at depth 16 on 2 vCPUs: 4 and 8
# workers were slower than 1 or 2 on both engines (more wake-ups and GIL
# hand-offs for the same disk work).  QEMU's aio=threads allows 64.
WORKERS = 2


class BlkPool:
    """Runs run(job) for each submitted job on a worker thread, then on_done()."""

    def __init__(self, run, on_done, name="blk", workers=WORKERS, ready=None):
        """run(job) does a job's blocking work; ready(job), if given, does
        it only if that cannot block (True if done), so a worker can answer
        several in one on_done()."""
        self._run, self._on_done, self._ready = run, on_done, ready
        self._name, self._max = name, workers
        self._cond = threading.Condition()
        self._jobs = collections.deque()    # submitted, not yet taken by a worker
        self._done = []                     # finished, not yet answered
        self._in_flight = 0                 # submitted and not finished
        self._idle = 0                      # workers waiting for a job
        self._threads = []
        self._stopped = False

    @property
    def in_flight(self):
        return self._in_flight

    @property
    def native_ids(self):
        """The workers' thread ids (what tools/bench counts CPU time of)."""
        return [t.native_id for t in self._threads if t.native_id]

    def submit(self, job):
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"{self._name}: the pool is stopped")
            self._jobs.append(job)
            self._in_flight += 1
            if self._idle == 0 and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._name}-io{len(self._threads)}")
                self._threads.append(t)
                t.start()
            else:
                self._cond.notify()

    def take_done(self):
        """The jobs finished since the last call, in the order they finished."""
        with self._cond:
            done, self._done = self._done, []
            return done

    def wait_idle(self, cancel=False):
        """Wait until no job is running or waiting (nothing touches guest
        memory for the pool any more); the finished jobs not yet taken.
        Jobs no worker has started yet are run here, or dropped unrun if
        `cancel` (their requests will never be answered: a reset, close).

        Called with the device lock held: a worker needs that lock after
        its job (on_done), so every worker may be waiting for it while jobs
        are queued -- the caller runs those itself rather than wait for a
        worker that cannot come.  A running job needs no lock to finish."""
        while True:
            with self._cond:
                # A job a worker was looking at (_finish_ready) may come
                # back to the queue while we wait: take it then.
                self._cond.wait_for(lambda: self._in_flight == 0 or self._jobs)
                if self._in_flight == 0:
                    done, self._done = self._done, []
                    return done
                job = self._jobs.popleft()
                if cancel:
                    self._in_flight -= 1
                    continue
            self._finish(job)

    def stop(self):
        """Let the workers end (after wait_idle(): no job left) and join them."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def _work(self):
        while True:
            with self._cond:
                self._idle += 1
                self._cond.wait_for(lambda: self._jobs or self._stopped)
                self._idle -= 1
                if not self._jobs:
                    return                  # stopped, nothing left
                job = self._jobs.popleft()
            self._finish(job)
            while self._finish_ready():
                pass
            self._on_done()

    def _finish_ready(self):
        """Finish the next queued job if its I/O is already done (the device
        thread's RWF_NOWAIT try started it): its answer goes out with the
        one just finished, under one lock and one interrupt.  False if none."""
        if self._ready is None:
            return False
        with self._cond:
            if not self._jobs:
                return False
            job = self._jobs.popleft()
        try:
            ready = self._ready(job)
        except BaseException:
            ready = False
        if not ready:
            with self._cond:
                self._jobs.appendleft(job)      # still first in line
                self._cond.notify_all()         # for a wait_idle() too
            return False
        with self._cond:
            self._done.append(job)
            self._in_flight -= 1
            self._cond.notify_all()
        return True

    def _finish(self, job):
        try:
            self._run(job)                  # a job that raises keeps its error status
        finally:
            with self._cond:
                self._done.append(job)
                self._in_flight -= 1
                self._cond.notify_all()     # a wait_idle() may be waiting
