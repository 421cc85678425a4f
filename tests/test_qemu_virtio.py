"""The guest virtio drivers against stock QEMU's virtio-mmio devices.

QEMU is the peer implementation: the same guest images (guests/blk-test,
rng-test, vcon-test, net-ping) will later run against hv's own devices.
``-M microvm,acpi=off`` makes QEMU list each device on the kernel command
line (``virtio_mmio.device=512@0xfeb00e00:12``), which the guest library
parses; with ACPI on the guest probes the 32 slots instead.
``virtio-mmio.force-legacy=false`` selects the virtio 1.x register layout
(version 2), the only one the guests drive.
"""
import re
import socket
import subprocess
import time

import pytest

from conftest import ACCELS, QEMU, guest
from hv.testing.results import RESULT_CODES, parse_result, qemu_exit_status

TIMEOUT = 30            # seconds per QEMU run; each takes well under one here
SECTOR = 512

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def qemu_cmd(kernel, accel, devices=(), append="", machine="microvm,acpi=off"):
    cmd = [QEMU, "-M", machine, "-accel", accel, "-nodefaults", "-nographic", "-no-reboot",
           "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
           "-global", "virtio-mmio.force-legacy=false", *devices, "-kernel", guest(kernel)]
    if append:
        cmd += ["-append", append]
    return cmd


def finish(proc, what, timeout=TIMEOUT):
    """Wait for a started QEMU; (exit status, serial output)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what}: QEMU did not exit within {timeout}s; output so far: "
                    f"{out.decode(errors='replace')!r}")
    text = out.decode(errors="replace").replace("\r\n", "\n")
    return proc.returncode, text + err.decode(errors="replace")


def start(cmd):
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def run(kernel, accel, devices=(), append="", **kw):
    return finish(start(qemu_cmd(kernel, accel, devices, append, **kw)), kernel)


def assert_verdict(status, out, verdict="SUCCESS"):
    assert parse_result(out)[0] == verdict, out
    assert status == qemu_exit_status(RESULT_CODES[verdict]), out


def pattern(sector, seed):
    """blk-test's sector contents: byte i = (sector * 31 + i + seed) & 0xff."""
    return bytes((sector * 31 + i + seed) & 0xff for i in range(SECTOR))


def blk_devices(image, serial="hvblk0", readonly=False, props=""):
    ro = ",readonly=on" if readonly else ""
    return ["-drive", f"id=d0,file={image},format=raw,if=none{ro}",
            "-device", f"virtio-blk-device,drive=d0,serial={serial}{props}"]


# ---- virtio-blk ----------------------------------------------------------------
# QEMU offers VIRTIO_RING_F_INDIRECT_DESC and VIRTIO_RING_F_EVENT_IDX by
# default; without them requests take three ring descriptors and notification
# follows used.flags.  256 sectors are two requests (the driver's 64 KiB cap).
RING_VARIANTS = [pytest.param("", 64, id="indirect+event_idx"),
                 pytest.param(",indirect_desc=off,event_idx=off", 256, id="plain-ring")]


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("props,count", RING_VARIANTS)
def test_blk_pattern_reaches_the_image(accel, props, count, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (1 << 20))      # not zero: the guest must overwrite
    start_sector, seed = 5, 7

    status, out = run("blk-test", accel, blk_devices(image, props=props),
                      f"sectors={count} start={start_sector} seed={seed}")
    assert_verdict(status, out)
    assert 'blk: id "hvblk0"' in out
    m = re.search(r"^blk: write (\d+) bytes (\d+) (.+?), flush (\d+), read (\d+) bytes (\d+)$",
                  out, re.M)
    assert m, out
    assert int(m.group(1)) == int(m.group(5)) == count * SECTOR
    assert m.group(3) == "tsc cycles (rdtsc)"   # not under hv: no hv clock

    data = image.read_bytes()
    for s in range(start_sector, start_sector + count):
        assert data[s * SECTOR:(s + 1) * SECTOR] == pattern(s, seed), f"sector {s}"
    # Untouched around the pattern (the discarded sectors after it may read
    # either way, so only the ones before are checked).
    assert data[:start_sector * SECTOR] == b"\xee" * (start_sector * SECTOR)


def test_blk_probes_slots_without_cmdline_entries(tmp_path):
    """ACPI on: no virtio_mmio.device= entries; the guest scans the window."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    status, out = run("blk-test", "tcg", blk_devices(image), "sectors=8 seed=1",
                      machine="microvm")
    assert_verdict(status, out)
    assert image.read_bytes()[:SECTOR] == pattern(0, 1)


@pytest.mark.parametrize("accel", ACCELS)
def test_blk_skips_without_device(accel):
    status, out = run("blk-test", accel, ["-device", "virtio-rng-device"])
    assert_verdict(status, out, "SKIP")
    assert parse_result(out)[1] == "no virtio-blk device"


def test_blk_read_only_skips(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    status, out = run("blk-test", "tcg", blk_devices(image, readonly=True))
    assert_verdict(status, out, "SKIP")
    assert image.read_bytes() == bytes(1 << 20)


# ---- virtio-rng ----------------------------------------------------------------
@pytest.mark.parametrize("accel", ACCELS)
def test_rng(accel):
    status, out = run("rng-test", accel, ["-device", "virtio-rng-device"], "bytes=256")
    assert_verdict(status, out)
    assert re.search(r"^rng: 256 bytes twice; first: [0-9a-f]{16}$", out, re.M), out


# ---- virtio-console ------------------------------------------------------------
@pytest.mark.parametrize("accel", ACCELS)
def test_vcon_line_reaches_chardev(accel, tmp_path):
    sink = tmp_path / "vcon.out"
    status, out = run("vcon-test", accel,
                      ["-chardev", f"file,id=c0,path={sink}", "-device", "virtio-serial-device",
                       "-device", "virtconsole,chardev=c0"])
    assert_verdict(status, out)
    assert sink.read_text() == "vcon: hello from vcon-test\n"
    assert "vcon: hello from" not in out        # the serial console got only progress


# ---- virtio-net ------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port):
    """Is something listening on 127.0.0.1:port?  Read /proc, since a probe
    connection would be taken by QEMU as its one peer."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A"
                   for line in f.readlines()[1:])


@pytest.mark.parametrize("accel", ACCELS)
def test_net_ping_pong_over_loopback(accel):
    port = _free_port()

    def net(mac, how):
        return ["-netdev", f"socket,id=n0,{how}=127.0.0.1:{port}",
                "-device", f"virtio-net-device,netdev=n0,mac={mac}"]

    pong = start(qemu_cmd("net-ping", accel, net("52:54:00:00:00:02", "listen"), "role=pong"))
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if pong.poll() is not None or time.monotonic() > deadline:
                pytest.fail("pong QEMU never listened: " + repr(finish(pong, "pong")))
            time.sleep(0.02)
        ping = start(qemu_cmd("net-ping", accel, net("52:54:00:00:00:01", "connect"),
                              "role=ping count=32 size=1000"))
        ping_status, ping_out = finish(ping, "ping")
    finally:
        pong_status, pong_out = finish(pong, "pong")

    assert_verdict(ping_status, ping_out)
    assert "net: mac 52:54:00:00:00:01," in ping_out
    assert re.search(r"^net: 32 frames of 1000 bytes echoed, \d+ resent", ping_out, re.M)
    assert_verdict(pong_status, pong_out)
    assert "net: pong echoed" in pong_out


def test_net_ping_skips_without_device():
    status, out = run("net-ping", "tcg", append="role=ping")
    assert_verdict(status, out, "SKIP")
