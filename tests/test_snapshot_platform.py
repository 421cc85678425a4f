"""The PC platform in snapshots: UART, IOAPIC, RTC (PLATFORM record) and
each vCPU's local APIC (LAPIC records); csrc/platform_snapshot.c, lapic.c.

Before these records a restored Linux guest never printed again: its UART
had lost IER (so no THR-empty interrupt ever came), its IOAPIC the routes,
its local APIC the timer.  The property tests drive the core directly:
every state a guest could leave goes in and comes out the same, through
the record format too, and a state no guest could leave is refused.  The
Linux test restores Debian's kernel at its shell and types into it.
"""
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv import snapshot_format as fmt
from hv.abi import ffi, lib

MEM = 1 << 20

u8, u32, u64 = (st.integers(0, (1 << n) - 1) for n in (8, 32, 64))
PINS = fmt.IOAPIC_PINS
READ_ONLY_REDIR = (1 << 12) | (1 << 14)         # delivery status, remote IRR (ioapic.c)


@st.composite
def platform_states(draw):
    s = {n: draw(u8) for n in fmt.UART_REGS[:7]}
    s.update(uart_thre_pending=draw(st.integers(0, 1)), uart_line=draw(st.integers(0, 1)))
    s["tx"] = draw(st.binary(max_size=fmt.UART_BUFFER_MAX))
    s["rx"] = draw(st.binary(max_size=fmt.UART_BUFFER_MAX))
    s.update(ioapic_select=draw(u8), ioapic_id=draw(st.integers(0, 0xf)),
             ioapic_lines=draw(st.integers(0, (1 << PINS) - 1)),
             ioapic_remote_irr=draw(st.integers(0, (1 << PINS) - 1)))
    s["redir"] = draw(st.lists(u64.map(lambda e: e & ~READ_ONLY_REDIR), min_size=PINS,
                               max_size=PINS))
    s["rtc_index"] = draw(st.integers(0, 0x7f))
    s["rtc_ram"] = draw(st.binary(min_size=128, max_size=128))
    return s


def to_struct(s):
    snap = ffi.new("struct hv_platform_snapshot *")
    for n in fmt.UART_REGS + fmt.IOAPIC_REGS + ("rtc_index",):
        setattr(snap, n, s[n])
    snap.uart_tx_len, snap.uart_rx_len = len(s["tx"]), len(s["rx"])
    snap.uart_tx[0:len(s["tx"])] = list(s["tx"])
    snap.uart_rx[0:len(s["rx"])] = list(s["rx"])
    snap.ioapic_redir[0:PINS] = s["redir"]
    snap.rtc_ram[0:128] = list(s["rtc_ram"])
    return snap


def from_struct(snap):
    s = {n: getattr(snap, n) for n in fmt.UART_REGS + fmt.IOAPIC_REGS + ("rtc_index",)}
    s["tx"] = bytes(snap.uart_tx[0:snap.uart_tx_len])
    s["rx"] = bytes(snap.uart_rx[0:snap.uart_rx_len])
    s["redir"] = list(snap.ioapic_redir)
    s["rtc_ram"] = bytes(snap.rtc_ram)
    return s


class Core:
    """A partition of the core's 'none' engine: a platform, no vCPU."""

    def __enter__(self):
        pp = ffi.new("struct hv_partition **")
        assert lib.hv_partition_create(lib.HV_ENGINE_NONE, MEM, pp) == 0
        self.p = pp[0]
        return self.p

    def __exit__(self, *exc):
        lib.hv_partition_destroy(self.p)


@settings(max_examples=60, deadline=None)
@given(platform_states())
def test_a_guest_made_platform_state_comes_back_the_same(state):
    body = fmt.pack_platform(to_struct(state))
    parsed = ffi.new("struct hv_platform_snapshot *")
    fmt.unpack_platform(body, parsed)
    with Core() as p:
        assert lib.hv_platform_set_snapshot(p, parsed) == 0
        out = ffi.new("struct hv_platform_snapshot *")
        lib.hv_platform_get_snapshot(p, out)
    assert from_struct(out) == state
    assert fmt.pack_platform(out) == body


@pytest.mark.parametrize("field, value", [
    ("uart_tx_len", fmt.UART_BUFFER_MAX + 1), ("uart_rx_len", 1 << 31),
    ("uart_thre_pending", 2), ("uart_line", 7), ("ioapic_select", 0x100),
    ("ioapic_id", 0x10), ("ioapic_lines", 1 << PINS), ("ioapic_remote_irr", 1 << 31),
    ("rtc_index", 0x80), ("redir", 1 << 12), ("redir", 1 << 14)])
def test_the_core_refuses_what_no_guest_could_leave(field, value):
    snap = ffi.new("struct hv_platform_snapshot *")
    if field == "redir":
        snap.ioapic_redir[5] = value
    else:
        setattr(snap, field, value)
    with Core() as p:
        before = ffi.new("struct hv_platform_snapshot *")
        lib.hv_platform_get_snapshot(p, before)
        assert lib.hv_platform_set_snapshot(p, snap) == -lib.HV_EINVAL
        after = ffi.new("struct hv_platform_snapshot *")
        lib.hv_platform_get_snapshot(p, after)
    assert bytes(ffi.buffer(after)) == bytes(ffi.buffer(before))     # nothing taken


def test_a_truncated_or_overlong_platform_record_is_a_format_error():
    body = fmt.pack_platform(ffi.new("struct hv_platform_snapshot *"))
    snap = ffi.new("struct hv_platform_snapshot *")
    for bad in (body[:-1], body + b"x", body[:10]):
        with pytest.raises(fmt.FormatError):
            fmt.unpack_platform(bad, snap)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 15), st.lists(u32, min_size=12, max_size=12),
       st.lists(u64, min_size=2, max_size=2), st.lists(u32, min_size=24, max_size=24))
def test_lapic_records_carry_every_field(vcpu_id, regs, times, bitmaps):
    snap = ffi.new("struct hv_lapic_snapshot *")
    for name, value in zip(fmt.LAPIC_REGS, regs):
        setattr(snap, name, value)
    snap.lvt[0:6] = regs[8:] + regs[:2]
    snap.timer_initial, snap.timer_divide = regs[2], regs[3]
    snap.timer_start, snap.timer_deadline = times
    snap.irr[0:8], snap.tmr[0:8], snap.isr[0:8] = bitmaps[:8], bitmaps[8:16], bitmaps[16:]
    back = ffi.new("struct hv_lapic_snapshot *")
    assert fmt.unpack_lapic(fmt.pack_lapic(vcpu_id, snap), back) == vcpu_id
    assert bytes(ffi.buffer(back)) == bytes(ffi.buffer(snap))
    with pytest.raises(fmt.FormatError):
        fmt.unpack_lapic(fmt.pack_lapic(vcpu_id, snap)[:-4], back)


# ---- Debian's kernel, restored at its shell ---------------------------------------

def linux_files():
    from linux_support import fixture_built, linux_fixture
    if not fixture_built():
        pytest.skip("Debian's kernel is not fetched (`make linux-fixture`)")
    return linux_fixture()


class Console:
    def __init__(self):
        self.data, self.cond = b"", threading.Condition()

    def write(self, data):
        with self.cond:
            self.data += data
            self.cond.notify_all()
        return len(data)

    def flush(self):
        pass

    def wait_for(self, text, timeout=300):
        with self.cond:
            return self.cond.wait_for(lambda: text.encode() in self.data, timeout)


def test_linux_restored_at_its_shell_reads_what_is_typed_and_sleeps(tmp_path):
    """The restored kernel takes typed input (UART receive interrupt through
    the IOAPIC), answers (THR-empty interrupts), and `sleep 1` ends (the
    local APIC's timer): each failed before the platform was saved."""
    from hv.partition import SHUTDOWN, Partition
    files = linux_files()
    info = files["info"]
    first = Console()
    part = Partition(files["vmlinux"], mem="512M", engine="tcg", console=first,
                     initrd=files["initramfs"],
                     cmdline="console=ttyS0 earlyprintk=ttyS0 panic=-1 hvfixture.end=shell")
    try:
        part.start()
        assert first.wait_for(info["marker_shell"]), first.data[-2000:]
        time.sleep(0.5)         # the shell is waiting for a line
        part.snapshot(str(tmp_path / "s"), resume=False)
    finally:
        part.destroy()
    second = Console()
    restored = Partition.restore(str(tmp_path / "s"), console=second)
    try:
        restored.start()
        assert restored.uart_input(b"echo $((6 * 7))x; sleep 1; echo slept\n") > 0
        assert second.wait_for("42x", 120), second.data[-2000:]
        assert second.wait_for("slept", 120), second.data[-2000:]
        restored.uart_input(b"exit\n")
        assert restored.wait(120) == SHUTDOWN, restored.crash_report
    finally:
        restored.destroy()


def test_linux_migrated_live_at_its_shell_goes_on_answering(tmp_path):
    """The same through a live migration (pre-copy rounds while the kernel
    runs, platform and lapic records in the stream's last part)."""
    from hv.partition import SHUTDOWN, Partition
    from test_migrate import receiver
    files = linux_files()
    out = Console()
    part = Partition(files["vmlinux"], mem="512M", engine="tcg", console=out,
                     initrd=files["initramfs"],
                     cmdline="console=ttyS0 earlyprintk=ttyS0 panic=-1 hvfixture.end=shell")
    moved = None
    try:
        part.start()
        assert out.wait_for(files["info"]["marker_shell"]), out.data[-2000:]
        address = f"unix:{tmp_path}/m.sock"
        t, got = receiver(address, "tcg", out)
        report = part.migrate(address)
        t.join(60)
        assert "part" in got, got
        moved = got["part"]
        assert report["downtime"] < 10
        assert moved.uart_input(b"echo $((7 * 8))y; sleep 1; echo slept\n") > 0
        assert out.wait_for("56y", 120) and out.wait_for("slept", 120), out.data[-2000:]
        moved.uart_input(b"exit\n")
        assert moved.wait(120) == SHUTDOWN, moved.crash_report
    finally:
        part.destroy()
        if moved is not None:
            moved.destroy()
