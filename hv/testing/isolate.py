"""Run risky code in a forked child, so a crash of the C core (a signal) or
a hang is recorded as XTF's CRASH instead of ending the test process."""
import os
import pickle
import signal
import traceback


def _flush_coverage():
    from hv.abi import lib
    lib.hv_coverage_flush()


def fork_call(fn, *args, timeout=300):
    """Call fn(*args) in a forked child.  Returns ("ok", value),
    ("exc", traceback text) or ("crash", signal name [+ " (timeout)"])."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                # child
        os.close(rfd)
        try:
            payload = ("ok", fn(*args))
        except BaseException as e:              # noqa: BLE001 - report everything
            payload = ("exc", f"{type(e).__name__}:\n{traceback.format_exc()}")
        with os.fdopen(wfd, "wb") as w:
            pickle.dump(payload, w)
        _flush_coverage()                       # _exit skips the coverage build's exit hook
        os._exit(0)
    os.close(wfd)
    old = signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(timeout)
    try:
        with os.fdopen(rfd, "rb") as r:
            data = r.read()
        _, status = os.waitpid(pid, 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if os.WIFSIGNALED(status) or not data:
        sig = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "exit"
        return "crash", sig + (" (timeout)" if sig == "SIGKILL" else "")
    return pickle.loads(data)


def run_isolated(fn, *args, timeout=300):
    """fn(*args) in a forked child (see fork_call); a crash, hang or
    exception there fails the pytest test with what happened.  Returns fn's value."""
    import pytest

    kind, value = fork_call(fn, *args, timeout=timeout)
    if kind == "crash":
        pytest.fail(f"CRASH: the child died by {value}")
    if kind == "exc":
        pytest.fail(f"in isolated child: {value}", pytrace=False)
    return value


def isolated(fn, *args, timeout=60):
    """run_isolated, but a failure in the child is an AssertionError here, so
    Hypothesis (which lets pytest's own outcome exceptions through) shrinks it."""
    kind, value = fork_call(fn, *args, timeout=timeout)
    if kind == "crash":
        raise AssertionError(f"CRASH: the child died by {value}")
    if kind == "exc":
        raise AssertionError(f"in isolated child: {value}")
    return value
