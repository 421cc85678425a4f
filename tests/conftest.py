"""Shared test helpers: where things are, what the host has, crash isolation."""
import os
import pickle
import shutil
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


# ---- QEMU, the peer that boots the same guest images ----------------------
QEMU = shutil.which("qemu-system-x86_64")


def _qemu_kvm_missing():
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no permission to open /dev/kvm"
    return None


#: QEMU accelerators to run a test on; KVM skipped, with the reason, if absent.
ACCELS = [
    pytest.param("kvm", marks=pytest.mark.skipif(_qemu_kvm_missing() is not None,
                                                 reason=f"QEMU KVM: {_qemu_kvm_missing()}")),
    "tcg",
]


def engine_missing(name):
    """None if hv's engine `name` can run here, else why not."""
    from hv.partition import ENGINES, engine_status
    if name not in ENGINES:
        return f"hv has no {name} engine"
    ok, why = engine_status(name)
    return None if ok else why


def fork_call(fn, *args, timeout=300):
    """Call fn(*args) in a forked child, so a crash of the C core (a signal)
    or a hang cannot end the test process.  Returns ("ok", value),
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
    exception there fails the test with what happened.  Returns fn's value."""
    kind, value = fork_call(fn, *args, timeout=timeout)
    if kind == "crash":
        pytest.fail(f"CRASH: the child died by {value}")
    if kind == "exc":
        pytest.fail(f"in isolated child: {value}", pytrace=False)
    return value
