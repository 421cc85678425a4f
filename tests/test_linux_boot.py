"""Debian's own kernel boots on hv's TCG engine (issue 13's milestones), and
the same vmlinux + initramfs boot under stock QEMU's microvm, the peer.

One boot of each serves all the milestone checks (module fixtures):
  M1  the kernel's first line on ttyS0;
  M2  its clocks work: the TSC frequency from CPUID (no calibration), the
      TSC as clocksource, timer interrupts from the local APIC (the boot
      reaches "Freeing unused kernel memory", which waits on jiffies);
  M3  /init runs and prints its markers, then `poweroff -f` ends the
      partition with exit status 0.

They run in the default suite when the fixture is already built
(build/linux/, `make linux-fixture`); `make linux-test` builds it and runs
them (and a reboot) whatever the state.  A boot takes ~10-30 s of
wall time on the development machine, depending on its load.
"""
import os
import subprocess
import sys

import pytest

from conftest import QEMU, ROOT
from linux_support import fixture_built, linux_fixture

FORCED = os.environ.get("HV_LINUX_TESTS") == "1"
pytestmark = pytest.mark.skipif(
    not (FORCED or fixture_built()),
    reason="Debian's kernel is not fetched: `make linux-test` (or `make linux-fixture`) runs these")

CMDLINE = "console=ttyS0 earlyprintk=ttyS0 panic=-1"
MEM = "512M"
BOOT_TIMEOUT = 300          # a loaded 2-CPU machine; a good boot takes 10-30 s


def hv_boot(extra_cmdline=""):
    files = linux_fixture()
    proc = subprocess.run(
        [sys.executable, "-m", "hv", "run", "--engine", "tcg", "--mem", MEM,
         "--initrd", files["initramfs"], "--cmdline", f"{CMDLINE} {extra_cmdline}".strip(),
         files["vmlinux"]],
        cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=BOOT_TIMEOUT,
        stdin=subprocess.DEVNULL)
    return proc, files["info"]


@pytest.fixture(scope="module")
def hv_run():
    return hv_boot()


def detail(proc):
    return f"exit {proc.returncode}\n--- console (tail) ---\n{proc.stdout[-3000:]}\n" \
           f"--- stderr ---\n{proc.stderr[-2000:]}"


def test_m1_first_kernel_line_on_ttys0(hv_run):
    proc, _ = hv_run
    first = proc.stdout.splitlines()[:3]
    assert any("Linux version 6." in line and "Debian" in line for line in first), detail(proc)


def test_m2_clocks_from_cpuid_and_the_local_apic(hv_run):
    proc, _ = hv_run
    out = proc.stdout
    for line in ("tsc: Detected", "IOAPIC[0]: apic_id 0", "Switched to clocksource tsc",
                 "Freeing unused kernel image"):
        assert line in out, f"{line!r} missing\n" + detail(proc)
    # The TSC's rate came from CPUID 0x15 and stayed trusted.
    assert "Unable to calibrate" not in out and "Marking TSC unstable" not in out, detail(proc)


def test_m3_init_runs_and_poweroff_exits_0(hv_run):
    proc, info = hv_run
    out = proc.stdout
    assert info["marker_init"] in out and info["marker_poweroff"] in out, detail(proc)
    assert out.index(info["marker_init"]) < out.index("sum: 42") < out.index(info["marker_poweroff"])
    assert "reboot: Power down" in out, detail(proc)
    assert proc.returncode == 0, detail(proc)


@pytest.mark.skipif(not FORCED, reason="a second boot: `make linux-test` runs it")
def test_reboot_ends_the_partition_with_status_0():
    """`reboot -f`: Debian's kernel takes its BIOS path (f000:fff0), where
    hv's reset stub writes the ACPI reset register."""
    proc, info = hv_boot("hvfixture.end=reboot")
    assert info["marker_poweroff"] in proc.stdout, detail(proc)
    assert "reboot: Restarting system" in proc.stdout and proc.returncode == 0, detail(proc)


# ---- The peer: stock QEMU, same files -----------------------------------------

@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_qemu_microvm_boots_the_same_files_to_the_same_markers():
    files = linux_fixture()
    # microvm without ACPI cannot power off, so /init reboots, which
    # -no-reboot turns into QEMU's exit (status 0).  With ACPI, microvm's
    # hardware-reduced platform has no PIT and its TCG CPU no CPUID 0x15:
    # Linux cannot calibrate the TSC there and stalls.
    proc = subprocess.run(
        [QEMU, "-M", "microvm,acpi=off", "-accel", "tcg", "-m", MEM, "-nodefaults",
         "-nographic", "-no-reboot", "-serial", "stdio", "-kernel", files["vmlinux"],
         "-initrd", files["initramfs"], "-append", f"{CMDLINE} hvfixture.end=reboot"],
        capture_output=True, text=True, errors="replace", timeout=BOOT_TIMEOUT,
        stdin=subprocess.DEVNULL)
    info = files["info"]
    assert info["marker_init"] in proc.stdout and "sum: 42" in proc.stdout, detail(proc)
    assert info["marker_poweroff"] in proc.stdout and proc.returncode == 0, detail(proc)
