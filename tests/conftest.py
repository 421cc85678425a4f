"""Shared test helpers: where things are, what the host has, crash isolation."""
import os
import pickle
import signal
import traceback

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_BUILD = os.path.join(ROOT, "guests", "build")


def guest(name):
    """Path of a built guest kernel; the Makefile builds them before tests."""
    path = os.path.join(GUEST_BUILD, f"{name}.elf")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `make guests`")
    return path


def kvm_missing_reason():
    from hv.partition import engine_status
    ok, why = engine_status("kvm")
    return None if ok else why


needs_kvm = pytest.mark.skipif(kvm_missing_reason() is not None,
                               reason=f"KVM unavailable: {kvm_missing_reason()}")


def run_isolated(fn, *args, timeout=300):
    """Run fn(*args) in a forked child, so a crash of the C core (a signal)
    or a hang is reported as a test failure instead of ending the suite.
    Exceptions in the child are re-raised here with their traceback text."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                # child
        os.close(rfd)
        status, payload = 0, None
        try:
            fn(*args)
        except BaseException as e:              # noqa: BLE001 - report everything
            status, payload = 1, (type(e).__name__, "".join(traceback.format_exc()))
        with os.fdopen(wfd, "wb") as w:
            pickle.dump(payload, w)
        os._exit(status)
    os.close(wfd)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(timeout)
    try:
        with os.fdopen(rfd, "rb") as r:
            data = r.read()
        _, status = os.waitpid(pid, 0)
    finally:
        signal.alarm(0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        pytest.fail(f"CRASH: the child died by {sig}" + (" (timeout)" if sig == "SIGKILL" else ""))
    payload = pickle.loads(data) if data else None
    if payload:
        pytest.fail(f"{payload[0]} in isolated child:\n{payload[1]}", pytrace=False)
