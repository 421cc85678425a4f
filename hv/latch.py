"""A one-way latch the main thread can wait on while Ctrl-C and SIGTERM arrive.

Why not threading.Event or Condition: their wait() gives up the condition's
lock, sleeps, and takes the lock back, in Python code.  A signal handler
that raises (KeyboardInterrupt, hv.cli.common.Terminated) between two of
those steps leaves the lock released while the `with` block around it still
thinks it holds it, and the exit of that block then fails with
"RuntimeError: cannot release un-acquired lock" instead of the interrupt
(seen once in `hv run` under Ctrl-C; tests/test_latch.py raises at every
step to show it).

A Latch is a raw lock held while closed.  wait() is one acquire with a
timeout, which an interrupt either completes or cancels, nothing between;
the flag, not the lock, says whether the latch is open, so even an
interrupt landing after a successful acquire (the lock then stays taken)
leaves every later wait() right.
"""
import _thread


class Latch:
    def __init__(self):
        self._gate = _thread.allocate_lock()
        self._gate.acquire()            # closed: waiters block on it
        self._open = False
        self._guard = _thread.allocate_lock()   # open() from two threads at once

    def open(self):
        """Open the latch for every waiter, now and later.  Any thread; idempotent."""
        with self._guard:
            if not self._open:
                self._open = True
                self._gate.release()

    def is_open(self):
        return self._open

    def wait(self, timeout):
        """Wait up to timeout seconds (>= 0) for the latch to open; whether it is."""
        if self._open:
            return True
        if self._gate.acquire(True, max(0.0, timeout)):
            self._gate.release()        # pass it on to the next waiter
        return self._open
