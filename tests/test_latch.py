"""Waiting on the main thread while Ctrl-C arrives (hv/latch.py).

A signal handler that raises (KeyboardInterrupt, or SIGTERM's Terminated)
runs between two bytecodes of whatever the main thread is doing.  The
harness below raises KeyboardInterrupt at step 1 of a call, then at step 2
of a fresh call, and so on through every step the call executes (a trace
function with opcode events), and collects every exception that is not
that KeyboardInterrupt.  threading.Condition.wait() fails it (the first
test shows the harness finds that: "cannot release un-acquired lock", as
`hv run` once printed under Ctrl-C); the waits hv's commands use must not.
"""
import gc
import sys
import threading
import time

from conftest import guest

from hv.latch import Latch
from hv.partition import DESTROYED, Partition


def interrupted_at_every_step(call, limit=20000):
    """[(step, exception)] for every run of call() that raised anything but
    the KeyboardInterrupt injected at that step; and the number of steps."""
    failures = []
    step = 1
    while step < limit:
        seen, fired = [0], [False]

        def local(frame, event, arg):
            if event == "opcode":
                seen[0] += 1
                if seen[0] == step and not fired[0]:
                    fired[0] = True
                    raise KeyboardInterrupt
            return local

        def on_call(frame, event, arg):
            frame.f_trace_opcodes = True
            return local

        # No garbage collection inside: a collector's callback (an earlier
        # test's partition RAM given back through ffi.gc) would be traced
        # too, and the interrupt raised there instead, losing the release.
        gc.collect()
        gc.disable()
        sys.settrace(on_call)
        try:
            call()
        except KeyboardInterrupt:
            pass
        except Exception as e:              # noqa: BLE001 - what the test collects
            failures.append((step, e))
        finally:
            sys.settrace(None)
            gc.enable()
        if not fired[0]:                    # the call ran out before this step
            return failures, step - 1
        step += 1
    raise AssertionError(f"the call took more than {limit} steps")


def test_the_harness_finds_conditions_interrupt_race():
    def condition_wait():
        cond = threading.Condition()
        with cond:
            cond.wait(0.001)

    failures, steps = interrupted_at_every_step(condition_wait)
    assert steps > 10
    assert any("un-acquired lock" in str(e) for _, e in failures), failures


def test_latch_wait_survives_an_interrupt_at_every_step():
    latch = Latch()
    failures, steps = interrupted_at_every_step(lambda: latch.wait(0.001))
    assert failures == [] and steps > 3
    # Opened by another thread, it wakes a waiter, whatever happened before.
    threading.Timer(0.05, latch.open).start()
    assert latch.wait(10)
    failures, _ = interrupted_at_every_step(lambda: latch.wait(0.001))
    assert failures == [] and latch.wait(0) and latch.is_open()


def test_partition_wait_survives_an_interrupt_at_every_step():
    """Partition.wait() (hv run's, hv snapshot's) on a partition that has
    not ended: interrupted anywhere, it raises KeyboardInterrupt and leaves
    the partition's lock free for the threads that still need it."""
    part = Partition(guest("hello"), mem="4M", engine="tcg")
    try:
        failures, steps = interrupted_at_every_step(lambda: part.wait(0.001))
        assert failures == [] and steps > 3
        took = []

        def take():
            took.append(part._cond.acquire(timeout=5))
            if took[0]:
                part._cond.release()
        t = threading.Thread(target=take)
        t.start()
        t.join()
        assert took == [True]
    finally:
        part.destroy()
    start = time.monotonic()
    assert part.wait(10) == DESTROYED and time.monotonic() - start < 5
