"""Debian's own kernel boots on hv's TCG engine (issue 13's milestones), and
the same vmlinux + initramfs boot under stock QEMU's microvm, the peer.

One boot of each serves all the milestone checks (module fixtures):
  M1  the kernel's first line on ttyS0;
  M2  its clocks work: the TSC frequency from CPUID (no calibration), the
      TSC as clocksource, timer interrupts from the local APIC (the boot
      reaches "Freeing unused kernel memory", which waits on jiffies);
  M3  /init runs and prints its markers, then `poweroff -f` ends the
      partition with exit status 0;
  M4  with a virtio-blk disk (the fixture's ext4 image) and a virtio-net
      NIC: the DSDT names both, /init loads Debian's virtio and ext4
      modules, the devices probe and interrupt on their IOAPIC pins, and
      /init switch_roots into the ext4 root, whose /sbin/init writes a file
      to the disk and powers off.

They run in the default suite when the fixture is already built
(build/linux/, `make linux-fixture`); `make linux-test` builds it and runs
them (and a reboot) whatever the state.  A boot takes ~10-30 s of
wall time on the development machine, depending on its load.
"""
import os
import shutil
import subprocess
import sys
import threading

import pytest

from conftest import QEMU, ROOT
from linux_support import fixture_built, linux_fixture, qemu_microvm_command

FORCED = os.environ.get("HV_LINUX_TESTS") == "1"
pytestmark = pytest.mark.skipif(
    not (FORCED or fixture_built()),
    reason="Debian's kernel is not fetched, or an older tools/linux-fixture made it: "
           "`make linux-test` (or `make linux-fixture`) runs these")

CMDLINE = "console=ttyS0 earlyprintk=ttyS0 panic=-1"
MEM = "512M"
BOOT_TIMEOUT = 300          # a loaded 2-CPU machine; a good boot takes 10-30 s


NIC_MAC = "52:54:00:12:34:56"
DEBUGFS = shutil.which("debugfs", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin",
                                                         "/sbin"]))


def hv_boot(extra_cmdline="", devices=()):
    files = linux_fixture()
    proc = subprocess.run(
        [sys.executable, "-m", "hv", "run", "--engine", "tcg", "--mem", MEM,
         "--initrd", files["initramfs"], "--cmdline", f"{CMDLINE} {extra_cmdline}".strip(),
         *devices, files["vmlinux"]],
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


# ---- An interactive shell: hv's stdin to the guest's ttyS0 ----------------------

class ConsoleReader:
    """The console of a running `hv run`, read on a thread, so the test can
    wait for a line (with a deadline that only guards against a hang)."""

    def __init__(self, proc):
        self.proc, self.out, self.cond = proc, b"", threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while data := self.proc.stdout.read1(4096):
            with self.cond:
                self.out += data
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    closed = False

    def wait_for(self, text):
        with self.cond:
            self.cond.wait_for(lambda: text.encode() in self.out or self.closed, BOOT_TIMEOUT)
            return text.encode() in self.out


def test_shell_on_ttys0_runs_what_is_typed():
    files = linux_fixture()
    info = files["info"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hv", "run", "--engine", "tcg", "--mem", MEM,
         "--initrd", files["initramfs"], "--cmdline", f"{CMDLINE} hvfixture.end=shell",
         files["vmlinux"]],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console = ConsoleReader(proc)
    try:
        assert console.wait_for(info["marker_shell"]), console.out[-3000:]
        # Typed once the console is up: the driver flushes its FIFO when it starts.
        proc.stdin.write(b"echo $((6 * 7))x; uname -r\n")
        proc.stdin.flush()
        assert console.wait_for("42x"), console.out[-3000:]       # the echo shows $((6 * 7))x
        assert console.wait_for(info["kernel_package"].split("linux-image-")[1]), console.out[-3000:]
        proc.stdin.write(b"exit\n")
        proc.stdin.flush()
        assert proc.wait(BOOT_TIMEOUT) == 0, console.out[-3000:]
        assert console.wait_for(info["marker_poweroff"]) and console.wait_for("reboot: Power down")
    finally:
        proc.kill()
        proc.wait()


# ---- M4: an ext4 root on virtio-blk ---------------------------------------------

def root_image_copy(tmp_path):
    """A private copy of the fixture's ext4 image (the boot writes to it)."""
    files = linux_fixture()
    image = tmp_path / "rootfs.ext4"
    shutil.copyfile(files["rootfs"], image)
    return files, image


def written_file(image, info):
    """The file /sbin/init wrote, read back from the image by e2fsprogs."""
    r = subprocess.run([DEBUGFS, "-R", f"cat {info['root_written_file']}", str(image)],
                       capture_output=True, text=True)
    return r.stdout.strip()


def check_ext4_root(proc, info, image):
    out = proc.stdout
    assert info["marker_init"] in out, detail(proc)
    for module in ("virtio_mmio", "virtio_blk", "virtio_net", "ext4"):
        assert module in info["modules"]
    assert "insmod" not in out and "cannot mount" not in out, detail(proc)
    assert "[vda] 65536 512-byte logical blocks" in out, detail(proc)
    assert "EXT4-fs (vda): mounted filesystem" in out, detail(proc)
    assert out.index(info["marker_init"]) < out.index(info["marker_root"]), detail(proc)
    assert "root: /dev/vda / ext4 rw" in out and "pid: 1" in out, detail(proc)
    assert f"nic: eth0 {NIC_MAC}" in out, detail(proc)
    assert out.index(info["marker_root"]) < out.index(info["marker_poweroff"]), detail(proc)
    assert written_file(image, info) == info["root_written_text"], detail(proc)
    # Both devices' interrupts are IOAPIC pins (the ones the DSDT names), and
    # the disk's arrived there (the idle NIC may have had none).
    irqs = {line.split()[-1]: line.split() for line in out.splitlines() if line.startswith("irq: ")}
    assert {"virtio0", "virtio1"} <= set(irqs), detail(proc)
    assert all("IO-APIC" in fields for fields in irqs.values()), detail(proc)
    assert int(irqs["virtio0"][2]) > 0, detail(proc)
    assert proc.returncode == 0, detail(proc)


@pytest.mark.skipif(DEBUGFS is None, reason="debugfs (e2fsprogs) is not installed")
def test_m4_virtio_blk_ext4_root_and_virtio_net(tmp_path):
    files, image = root_image_copy(tmp_path)
    proc, info = hv_boot("root=/dev/vda", ["--disk", str(image), "--net", NIC_MAC])
    check_ext4_root(proc, info, image)
    assert "reboot: Power down" in proc.stdout, detail(proc)


# ---- The peer: stock QEMU, same files -----------------------------------------

def qemu_boot(files, extra_cmdline="", devices=()):
    """microvm with ACPI, like hv: its DSDT lists the virtio-mmio devices
    (Debian's kernel finds them nowhere else) and its sleep registers power
    off."""
    return subprocess.run(
        qemu_microvm_command(files["vmlinux"], files["initramfs"], MEM,
                             f"{CMDLINE} {extra_cmdline}".strip()) + list(devices),
        capture_output=True, text=True, errors="replace", timeout=BOOT_TIMEOUT,
        stdin=subprocess.DEVNULL)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_qemu_microvm_boots_the_same_files_to_the_same_markers():
    files = linux_fixture()
    proc = qemu_boot(files)
    info = files["info"]
    assert info["marker_init"] in proc.stdout and "sum: 42" in proc.stdout, detail(proc)
    assert info["marker_poweroff"] in proc.stdout and "reboot: Power down" in proc.stdout, \
        detail(proc)
    assert proc.returncode == 0, detail(proc)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.skipif(DEBUGFS is None, reason="debugfs (e2fsprogs) is not installed")
def test_qemu_microvm_boots_the_same_ext4_root(tmp_path):
    files, image = root_image_copy(tmp_path)
    proc = qemu_boot(files, "root=/dev/vda", [
        "-drive", f"id=root,file={image},format=raw,if=none",
        "-device", "virtio-blk-device,drive=root",
        "-netdev", "hubport,id=net0,hubid=0", "-device", f"virtio-net-device,netdev=net0,mac={NIC_MAC}"])
    check_ext4_root(proc, files["info"], image)
