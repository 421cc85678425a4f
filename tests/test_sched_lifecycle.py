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
