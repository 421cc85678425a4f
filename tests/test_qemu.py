"""The same guest images boot under stock QEMU, as a peer of hv.

QEMU's microvm loads the PVH entry note like hv does.  Without hv's CPUID
signature the guest library falls back to COM1 for the console and to
isa-debug-exit for the shutdown code, so QEMU exits with (code << 1) | 1.
"""
import subprocess

import pytest

from conftest import ACCELS, QEMU, guest
from hv.testing.results import RESULT_CODES, parse_result, qemu_exit_status

HELLO_LINE = "Hello from an hv guest!"

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def qemu(kernel, accel, append=None, timeout=60):
    """Boot kernel under QEMU microvm; (exit status, serial output as text)."""
    cmd = [QEMU, "-M", "microvm", "-accel", accel, "-nodefaults", "-nographic", "-no-reboot",
           "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
           "-kernel", kernel]
    if append is not None:
        cmd += ["-append", append]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"QEMU ({accel}) did not exit within {timeout}s; output so far: "
                    f"{(e.stdout or b'').decode(errors='replace')!r}")
    out = proc.stdout.decode(errors="replace").replace("\r\n", "\n")
    # QEMU writes its own warnings (e.g. unsupported CPUID bits) to stderr only.
    return proc.returncode, out, proc.stderr.decode(errors="replace")


@pytest.mark.parametrize("accel", ACCELS)
def test_hello(accel):
    status, out, err = qemu(guest("hello"), accel)
    assert out == HELLO_LINE + "\n", err
    assert status == qemu_exit_status(RESULT_CODES["SUCCESS"]) == (0 << 1) | 1, err


@pytest.mark.parametrize("accel", ACCELS)
def test_hcall_selftest_skips(accel):
    status, out, err = qemu(guest("hcall-selftest"), accel)
    assert parse_result(out) == ("SKIP", "not running under hv"), out + err
    assert out.splitlines()[-1] == "SKIP: not running under hv"
    assert status == qemu_exit_status(RESULT_CODES["SKIP"]) == (3 << 1) | 1, err


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("append", ["", "console=ttyS0 foo=bar", "  spaced  "])
def test_append_reaches_guest(accel, append):
    status, out, err = qemu(guest("cmdline-echo"), accel, append=append)
    assert out == f"cmdline: [{append}]\n", err
    assert status == qemu_exit_status(0), err


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("verdict", ["SUCCESS", "SKIP", "ERROR", "FAILURE"])
def test_verdict_exit_status(accel, verdict):
    status, out, err = qemu(guest("verdict"), accel, append=verdict.lower())
    assert parse_result(out)[0] == verdict, out + err
    assert status == qemu_exit_status(RESULT_CODES[verdict]), err


@pytest.mark.parametrize("accel", ACCELS)
def test_guest_reported_exception(accel):
    """ud2: the guest library's report, then isa-debug-exit with FAILURE."""
    status, out, err = qemu(guest("crash"), accel, append="exception")
    assert "EXCEPTION vector=0x6 " in out, out + err
    assert parse_result(out) == ("FAILURE", "unexpected exception")
    assert status == qemu_exit_status(RESULT_CODES["FAILURE"]), err


@pytest.mark.parametrize("accel", ACCELS)
def test_hv_only_modes_skip(accel):
    status, out, err = qemu(guest("crash"), accel, append="spin=10")
    assert parse_result(out)[0] == "SKIP", out + err
    assert status == qemu_exit_status(RESULT_CODES["SKIP"]), err


def test_triple_fault_tcg():
    """With -no-reboot QEMU ends on a triple fault (status 0, no result line).
    Not under -accel kvm here: the host's kvm-pvm reports it as an internal
    emulation error and QEMU then stops the VM without exiting."""
    status, out, err = qemu(guest("crash"), "tcg", append="triple-fault")
    assert out == "crash: triple fault\n", err
    assert status == 0, err
