"""Boot a guest kernel from a test and get back how it ended.

    run = boot("hcall-selftest", engine="tcg")      # a GuestRun
    run.verdict, run.detail, run.describe()
    traced = boot_traced("hello", deterministic=True)   # + the core's trace records
    assert_passed(run)          # SUCCESS passes, SKIP skips, ERROR/FAILURE fail

Kernels are named by file name in guests/build (hv.testing.paths) or given
as a path.
"""
import collections
from dataclasses import dataclass, field

from hv.testing.isolate import fork_call
from hv.testing.paths import guest_path
from hv.testing.results import RESULT_CODES, parse_result


@dataclass
class GuestRun:
    """How one boot of a guest ended, as the parent partition saw it.
    records is the core's trace (hv.trace.Tracer.records: (kind, vcpu, nr,
    args, result, time)) when the boot was traced, else empty."""
    state: str
    exit_code: object          # int, or None if the guest never shut down
    console: str
    crash_report: object       # str when state == "crashed", else None
    records: list = field(default_factory=list)
    console_bytes: bytes = b""                          # the console exactly as written
    trace_lines: list = field(default_factory=list)   # decoded, for reports

    @property
    def verdict(self):
        return parse_result(self.console)[0]

    @property
    def detail(self):
        return parse_result(self.console)[1]

    def describe(self, tail=2000):
        """Everything a failing assertion should show."""
        console = self.console.rstrip()
        if len(console) > tail:
            console = "..." + console[-tail:]
        lines = [f"state={self.state} exit_code={self.exit_code}",
                 "console:", console or "(empty)"]
        if self.crash_report:
            lines += ["crash report:", self.crash_report]
        return "\n".join(lines)


def boot(name, cmdline="", mem="64M", engine="kvm", timeout=None, deterministic=False,
         trace=False, serve=None, trace_tail=None):
    """Boot a guest in this process through the Python API and return a GuestRun.

    run() executes on this thread unless timeout is given: then on a thread
    of its own via start()/wait(), and a guest still running after timeout
    seconds is destroyed and reported with state "timeout".  trace=True
    keeps the core's trace records and decoded lines (trace_tail=N: only the
    last N decoded lines, no records: cheap for long runs); serve maps hypercall numbers to Python
    handlers (Partition.serve).  The Partition is destroyed before returning.
    """
    from hv.console import CaptureConsole
    from hv.partition import Partition
    from hv.trace import Tracer

    console = CaptureConsole()
    tracer = None
    if trace or trace_tail:
        tracer = Tracer(keep=trace_tail is None)
        if trace_tail:
            tracer.lines = collections.deque(maxlen=trace_tail)
    part = Partition(guest_path(name), mem=mem, cmdline=cmdline, engine=engine,
                     console=console, deterministic=deterministic, trace=tracer)
    try:
        for nr, handler in (serve or {}).items():
            part.serve(nr, handler)
        if timeout is None:
            state = part.run()
        else:
            part.start()
            state = part.wait(timeout)
            if state in ("created", "running", "paused"):
                state = "timeout"
        if tracer is not None and tracer.dropped:
            raise RuntimeError(f"{tracer.dropped} trace records dropped")
        return GuestRun(state=state, exit_code=part.exit_code, console=console.text(),
                        crash_report=part.crash_report,
                        records=list(tracer.records) if tracer else [],
                        console_bytes=b"".join(console.chunks),
                        trace_lines=list(tracer.lines) if tracer else [])
    finally:
        part.destroy()


def boot_traced(name, cmdline="", engine="tcg", deterministic=False, mem="64M"):
    """boot() with the trace kept, on TCG unless told."""
    return boot(name, cmdline, mem=mem, engine=engine, deterministic=deterministic, trace=True)


def boot_isolated(name, cmdline="", mem="64M", engine="kvm", timeout=60, deterministic=False,
                  trace=False, trace_tail=None):
    """boot() in a forked child (a C-core crash or hang cannot take the test
    process with it); the GuestRun comes back through a pipe.  A guest still
    running after timeout seconds is stopped (state "timeout").

    A child killed by a signal or by the watchdog raises RuntimeError naming
    it (XTF's CRASH), so the caller's test fails with a clear message.
    """
    kind, value = fork_call(boot, name, cmdline, mem, engine, timeout, deterministic, trace,
                            None, trace_tail, timeout=timeout + 10)
    if kind == "crash":
        raise RuntimeError(f"CRASH: booting {name} killed the parent process by {value}")
    if kind == "exc":
        raise RuntimeError(f"booting {name} raised in the child:\n{value}")
    return value


def assert_passed(run):
    """Turn a test kernel's result into pytest's: SUCCESS passes, SKIP skips,
    ERROR/FAILURE fail with the guest's own line (file:line: expression)."""
    import pytest

    verdict, detail = parse_result(run.console)
    if verdict is None:
        pytest.fail(f"no result line from the guest\n{run.describe()}", pytrace=False)
    if verdict in ("ERROR", "FAILURE"):
        pytest.fail(f"guest {verdict}: {detail}\n{run.describe()}", pytrace=False)
    assert run.state == "shutdown", run.describe()
    assert run.exit_code == RESULT_CODES[verdict], (
        f"result line says {verdict} but the shutdown code is {run.exit_code}\n{run.describe()}")
    if verdict == "SKIP":
        pytest.skip(f"guest SKIP: {detail}")
