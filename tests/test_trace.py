"""`hv trace`: the decoded story of a boot, its filters, and the TCG
instruction trace."""
import subprocess
import sys

import pytest

from conftest import ROOT, guest, needs_kvm


def hv(*args):
    return subprocess.run([sys.executable, "-m", "hv", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_trace_of_hello_tells_its_boot():
    proc = hv("trace", "--deterministic", guest("hello"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "hypercall page placed at" in lines[0]
    assert "console_write(buf=" in lines[1] and "'Hello from an hv guest!\\n'" in lines[1]
    assert lines[2].endswith("shutdown(reason=0, code=0) [parent]")
    assert proc.stderr == "Hello from an hv guest!\n"      # the console goes to stderr


def test_trace_filters_by_hypercall():
    proc = hv("trace", "--deterministic", "--hypercall", "shutdown", guest("hcall-selftest"))
    assert proc.returncode == 0, proc.stderr
    calls = [line.split(" vcpu0 ")[1] for line in proc.stdout.splitlines()]
    assert all(call.startswith("shutdown(") for call in calls)
    assert "shutdown(reason=7, code=0) = -EINVAL" in calls       # its error paths
    assert calls[-1] == "shutdown(reason=0, code=0) [parent]"


def test_instruction_trace_disassembles_the_entry():
    pytest.importorskip("capstone")
    proc = hv("trace", "--deterministic", "--insn", "100200:100210", guest("hello"))
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "0x100200: lgdt [0x" in first, first      # decoded as 32-bit code


@needs_kvm
def test_instruction_trace_needs_tcg():
    proc = hv("trace", "--engine", "kvm", "--insn", "100200:100210", guest("hello"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hv: error: an instruction trace needs the tcg engine and start <= end"]
