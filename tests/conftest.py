"""Shared test helpers: where things are, what the host has, crash isolation."""
import os
import shutil

import pytest

# Crash isolation lives in hv.testing (one source for hv's suite and users').
from hv.testing.isolate import fork_call, run_isolated  # noqa: F401

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

