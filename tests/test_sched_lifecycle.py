"""The parent's run loop as users see it (hv/partition.py): what wait()
promises once it returns."""
import time

from conftest import guest
from hv.partition import SHUTDOWN, Partition
from hv.trace import Tracer



class SlowTracer(Tracer):
    """A tracer whose last drain takes a while, as a big trace does."""

    finished = False

    def finish(self):
        time.sleep(0.2)
        super().finish()
        self.finished = True


def test_wait_returns_after_the_trace_is_complete():
    # Regression: wait() returned before run() had written the trace's last
    # lines, so `hv trace` could exit without them.
    tracer = SlowTracer()
    with Partition(guest("hello"), mem="16M", engine="tcg", deterministic=True,
                   trace=tracer) as part:
        part.start()
        assert part.wait(timeout=30) == SHUTDOWN
        assert tracer.finished
        assert tracer.lines[-1].endswith("shutdown(reason=0, code=0) [parent]")


def _destroy_while_its_exit_is_served():
    import threading

    from hv.abi import lib
    handling, release = threading.Event(), threading.Event()

    def console_write(args):
        handling.set()
        release.wait(10)
        return 0

    # Traced: completing the call then records the exit record's number.
    part = Partition(guest("hello"), mem="16M", engine="tcg", trace=Tracer())
    part.serve(lib.HV_HC_CONSOLE_WRITE, console_write)
    part.start()
    assert handling.wait(30)
    destroyer = threading.Thread(target=part.destroy)
    destroyer.start()
    time.sleep(0.1)                 # destroy is under way while the handler runs
    release.set()                   # ... which then completes the call
    destroyer.join(30)
    return part.state


def test_destroy_waits_for_the_server_handling_the_vcpus_exit():
    # Regression: detach freed the vCPU's exit record while a server thread
    # was still handling it; completing the call then read freed memory
    # (`hv run` died with SIGSEGV on Ctrl-C during a console write).
    from hv.testing import fork_call
    assert fork_call(_destroy_while_its_exit_is_served, timeout=60) == ("ok", "destroyed")
