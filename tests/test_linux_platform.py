"""The PC platform in the core (csrc/platform.c, uart16550.c, lapic.c,
ioapic.c), driven through the same doors the engines use, with no guest
running: the registers Linux's drivers probe, the UART -> IOAPIC -> local
APIC interrupt path, the APIC timer, ACPI power-off and reset, CPUID's clock
leaves."""
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv.abi import ffi, lib
from hv.testing.core import Core

UART = lib.HV_UART_PORT
THR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
LAPIC, IOAPIC = lib.HV_LAPIC_BASE, lib.HV_IOAPIC_BASE
# Local APIC registers (Intel SDM vol. 3, table 11-1).
ID, VERSION, TPR, PPR, EOI, SVR = 0x20, 0x30, 0x80, 0xa0, 0xb0, 0xf0
ISR, TMR, IRR, ICR_LOW, ICR_HIGH = 0x100, 0x180, 0x200, 0x300, 0x310
LVT_TIMER, TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x320, 0x380, 0x390, 0x3e0


class Platform:
    def __init__(self, core):
        self.core = core
        self.value = ffi.new("uint32_t *")
        self.wide = ffi.new("uint64_t *")

    def port(self, port, value=None, size=1):
        """(result, exit kind): result is the read value for reads."""
        self.value[0] = value or 0
        r = lib.hv_test_platform_port(self.core.v, port, size, value is not None, self.value,
                                      self.core.exit)
        assert r in (0, 1), f"port {port:#x} is not a platform port"
        return (self.value[0] if value is None else r), (self.core.exit.kind if r == 1 else None)

    def uart(self, reg, value=None):
        return self.port(UART + reg, value)[0]

    def mmio(self, addr, value=None, size=4):
        self.wide[0] = value or 0
        assert lib.hv_test_platform_mmio(self.core.v, addr, size, value is not None, self.wide) == 0
        return self.wide[0]

    def apic(self, reg, value=None):
        return self.mmio(LAPIC + reg, value)

    def ioapic(self, index, value=None):
        self.mmio(IOAPIC, index)
        return self.mmio(IOAPIC + 0x10, value)

    def pending(self, reg, vector):
        return bool(self.apic(reg + 0x10 * (vector // 32)) & (1 << (vector % 32)))


@pytest.fixture
def pc():
    with Core() as core:
        yield Platform(core)


# ---- UART: what Linux's 8250 driver probes ----------------------------------

def test_uart_registers_look_like_a_16550a(pc):
    pc.uart(SCR, 0xa5)
    assert pc.uart(SCR) == 0xa5
    pc.uart(IER, 0xff)
    assert pc.uart(IER) == 0x0f                 # four interrupt enables
    pc.uart(IER, 0)
    assert pc.uart(IIR) & 0x01                  # no interrupt pending
    pc.uart(IIR, 0x01)                          # FCR: FIFOs on
    assert pc.uart(IIR) & 0xc0 == 0xc0          # "16550A", not "16550"
    assert pc.uart(LSR) & 0x60 == 0x60          # THR empty, transmitter empty
    pc.uart(LCR, 0x83)                          # DLAB: the divisor latch
    pc.uart(THR, 0x01)
    pc.uart(IER, 0x00)
    assert (pc.uart(THR), pc.uart(IER)) == (0x01, 0x00)
    pc.uart(LCR, 0x03)
    assert pc.uart(IER) == 0                    # the real IER again


@pytest.mark.parametrize("mcr, msr", [(0x1a, 0x90), (0x10, 0x00), (0x1f, 0xf0), (0x00, 0xb0)])
def test_uart_modem_loopback(pc, mcr, msr):
    # Linux's autoconfig writes LOOP | OUT2 | RTS and expects DCD | CTS back.
    pc.uart(MCR, mcr)
    assert pc.uart(MSR) & 0xf0 == msr


def test_uart_output_goes_to_the_parent_a_line_at_a_time(pc):
    for byte in b"hello":
        assert pc.port(UART + THR, byte) == (0, None)
    result, kind = pc.port(UART + THR, ord("\n"))
    assert (result, kind) == (1, lib.HV_EXIT_UART)
    assert bytes(ffi.buffer(pc.core.exit.data, pc.core.exit.data_len)) == b"hello\n"
    # A partial line waits; the parent takes it when the partition stops.
    pc.port(UART + THR, ord("$"))
    buf = ffi.new("uint8_t[16]")
    assert lib.hv_uart_drain(pc.core.p, buf, 16) == 1 and buf[0] == ord("$")
    assert lib.hv_uart_drain(pc.core.p, buf, 16) == 0


def test_uart_loopback_output_is_not_sent(pc):
    pc.uart(MCR, 0x10)
    pc.port(UART + THR, ord("\n"))
    assert lib.hv_uart_drain(pc.core.p, ffi.new("uint8_t[4]"), 4) == 0


@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=1, max_size=9000))
def test_uart_loses_no_byte(data):
    with Core() as core:
        pc, got = Platform(core), b""
        for byte in data:
            if pc.port(UART + THR, byte)[1] == lib.HV_EXIT_UART:
                got += bytes(ffi.buffer(core.exit.data, core.exit.data_len))
        buf = ffi.new("uint8_t[4096]")
        while n := lib.hv_uart_drain(core.p, buf, 4096):
            got += bytes(ffi.buffer(buf, n))
        assert got == data


# ---- Interrupts: UART -> IOAPIC pin 4 -> local APIC ---------------------------

def enable_apic(pc):
    pc.apic(SVR, 0x1ff)                         # software enable, spurious vector 0xff


def test_ioapic_identifies_itself_and_starts_masked(pc):
    assert pc.ioapic(1) == 0x11 | (23 << 16)    # version 0x11, 24 pins
    for pin in range(lib.HV_IOAPIC_PINS):
        assert pc.ioapic(0x10 + 2 * pin) & (1 << 16)
    pc.ioapic(0x10 + 2 * 7, 0x0000_d035)        # read-only bits 12, 14 stay clear
    assert pc.ioapic(0x10 + 2 * 7) == 0x8035
    pc.ioapic(0x11 + 2 * 7, 0x0100_0000)
    assert pc.ioapic(0x11 + 2 * 7) == 0x0100_0000


def test_uart_transmit_interrupt_reaches_the_local_apic(pc):
    enable_apic(pc)
    pc.ioapic(0x10 + 2 * lib.HV_UART_IRQ, 0x34)          # edge, fixed, vector 0x34
    pc.uart(IER, 0x02)                                    # THR empty interrupt on
    assert pc.pending(IRR, 0x34)
    assert pc.uart(IIR) & 0x0f == 0x02                    # THRE reported...
    assert pc.uart(IIR) & 0x0f == 0x01                    # ...and cleared by the read
    pc.uart(IER, 0)


def test_masked_pin_delivers_nothing(pc):
    enable_apic(pc)
    pc.ioapic(0x10 + 2 * lib.HV_UART_IRQ, 0x10034)       # masked
    pc.uart(IER, 0x02)
    assert not pc.pending(IRR, 0x34)


def test_level_pin_redelivers_after_eoi_while_high(pc):
    enable_apic(pc)
    pc.ioapic(0x10 + 2 * lib.HV_UART_IRQ, 0x8044)        # level, vector 0x44
    pc.uart(IER, 0x02)                                    # line high
    assert pc.pending(IRR, 0x44) and pc.pending(TMR, 0x44)
    assert pc.ioapic(0x10 + 2 * lib.HV_UART_IRQ) & (1 << 14)   # remote IRR


def test_apic_identity_and_priority(pc):
    assert pc.apic(VERSION) & 0xff == 0x14
    assert pc.apic(ID) >> 24 == 0
    pc.apic(TPR, 0x50)
    assert (pc.apic(TPR), pc.apic(PPR)) == (0x50, 0x50)


def test_self_ipi_and_eoi(pc):
    enable_apic(pc)
    pc.apic(ICR_LOW, (1 << 18) | 0x61)                    # fixed, to self
    assert pc.pending(IRR, 0x61)
    pc.apic(EOI, 0)                                       # nothing in service: no effect
    assert pc.pending(IRR, 0x61)


def test_disabled_apic_masks_its_timer(pc):
    pc.apic(LVT_TIMER, 0x30)
    assert pc.apic(LVT_TIMER) & (1 << 16)


@pytest.mark.parametrize("divide, divisor", [(0xb, 1), (0x0, 2), (0x3, 16), (0xa, 128)])
def test_apic_timer_counts_down(pc, divide, divisor):
    enable_apic(pc)
    pc.apic(TIMER_DIVIDE, divide)
    pc.apic(LVT_TIMER, 0x10000 | 0xec)                    # masked: counts without firing
    pc.apic(TIMER_INITIAL, 0xffffffff)
    first = pc.apic(TIMER_CURRENT)
    time.sleep(0.002)
    second = pc.apic(TIMER_CURRENT)
    assert 0 < second < first <= 0xffffffff
    pc.apic(TIMER_INITIAL, 0)                             # 0 stops it
    assert pc.apic(TIMER_CURRENT) == 0


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_apic_timer_one_shot_fires_once(pc):
    enable_apic(pc)
    pc.apic(TIMER_DIVIDE, 0xb)
    pc.apic(LVT_TIMER, 0xec)                              # one-shot, vector 0xec
    pc.apic(TIMER_INITIAL, 1000)                          # well under a millisecond
    wait_for(lambda: pc.pending(IRR, 0xec))
    assert pc.apic(TIMER_CURRENT) == 0


def test_apic_timer_periodic_reloads(pc):
    enable_apic(pc)
    pc.apic(TIMER_DIVIDE, 0xb)
    pc.apic(LVT_TIMER, (1 << 17) | 0xed)
    pc.apic(TIMER_INITIAL, 10_000_000)                    # a few ms at the bus clock
    wait_for(lambda: pc.pending(IRR, 0xed))
    assert 0 < pc.apic(TIMER_CURRENT) <= 10_000_000       # counting the next period


# ---- ACPI power registers ---------------------------------------------------------

def test_s5_powers_off_and_reset_reboots(pc):
    slp = lib.HV_ACPI_SLP_EN | (lib.HV_ACPI_S5 << 2)
    assert pc.port(lib.HV_ACPI_SLEEP_CONTROL_PORT, slp) == (1, lib.HV_EXIT_SHUTDOWN)
    assert (pc.core.exit.reason, pc.core.exit.code) == (lib.HV_SHUTDOWN_POWEROFF, 0)
    assert pc.port(lib.HV_ACPI_RESET_PORT, lib.HV_ACPI_RESET_VALUE) == (1, lib.HV_EXIT_SHUTDOWN)
    assert pc.core.exit.reason == lib.HV_SHUTDOWN_REBOOT


@pytest.mark.parametrize("port, value", [
    (lib.HV_KBC_PORT, lib.HV_KBC_RESET),                 # the 8042's reset pulse
    (lib.HV_RESET_CONTROL_PORT, 0x06),                   # reset control: hard reset
])
def test_pc_reset_paths_reboot(pc, port, value):
    assert pc.port(port, value) == (1, lib.HV_EXIT_SHUTDOWN)
    assert pc.core.exit.reason == lib.HV_SHUTDOWN_REBOOT


def test_other_kbc_and_reset_control_accesses_are_not_the_platforms(pc):
    for port, value in ((lib.HV_KBC_PORT, 0xd1), (lib.HV_RESET_CONTROL_PORT, 0x02)):
        pc.value[0] = value
        assert lib.hv_test_platform_port(pc.core.v, port, 1, 1, pc.value, pc.core.exit) == -1
    assert lib.hv_test_platform_port(pc.core.v, lib.HV_KBC_PORT, 1, 0, pc.value, pc.core.exit) == -1


def test_reset_vector_writes_the_reset_register():
    """The stub at f000:fff0, disassembled: what a BIOS would do for a reset."""
    from capstone import CS_ARCH_X86, CS_MODE_16, Cs
    from hv.loader import load_pvh
    from test_loader import GOOD
    (stub,) = load_pvh(GOOD, 2 << 20).firmware
    assert stub.gpa == lib.HV_RESET_VECTOR and stub.gpa + stub.memsz <= 0x100000
    insns = [f"{i.mnemonic} {i.op_str}".strip() for i in Cs(CS_ARCH_X86, CS_MODE_16).disasm(stub.data, 0)]
    assert insns[:4] == [f"mov al, {lib.HV_ACPI_RESET_VALUE}", f"mov dx, {lib.HV_ACPI_RESET_PORT:#x}",
                         "out dx, al", "hlt"]


@pytest.mark.parametrize("port, value", [
    (lib.HV_ACPI_SLEEP_CONTROL_PORT, lib.HV_ACPI_S5 << 2),          # no SLP_EN
    (lib.HV_ACPI_SLEEP_CONTROL_PORT, lib.HV_ACPI_SLP_EN | (3 << 2)),  # S3: not offered
    (lib.HV_ACPI_RESET_PORT, 0x2),
])
def test_other_power_writes_do_nothing(pc, port, value):
    assert pc.port(port, value) == (0, None)


def test_other_ports_are_not_the_platforms(pc):
    pc.value[0] = 0
    assert lib.hv_test_platform_port(pc.core.v, 0x80, 1, 1, pc.value, pc.core.exit) == -1


# ---- CPUID: the clocks without calibration ---------------------------------------

def test_cpuid_names_the_tsc_frequency(pc):
    core = pc.core
    r = ffi.new("uint32_t[4]")
    assert lib.hv_test_cpuid(core.p, 0, 0, r) and r[0] >= lib.HV_CPUID_FREQ_LEAF
    assert lib.hv_test_cpuid(core.p, lib.HV_CPUID_TSC_LEAF, 0, r)
    denominator, numerator, crystal_hz = r[0], r[1], r[2]
    tsc_hz = crystal_hz * numerator // denominator
    # Linux computes crystal_khz * numerator and crystal_khz * 1000 in 32 bits.
    assert (crystal_hz // 1000) * numerator < 1 << 32
    assert (crystal_hz // 1000) * 1000 < 1 << 32
    # The host's TSC: bracket two reads with the monotonic clock, so a
    # delay anywhere only widens the interval the true rate lies in.
    rdtsc = _tsc_reader()
    t0a, c0, t0b = time.monotonic_ns(), rdtsc(), time.monotonic_ns()
    time.sleep(0.1)
    t1a, c1, t1b = time.monotonic_ns(), rdtsc(), time.monotonic_ns()
    low, high = (c1 - c0) * 1e9 / (t1b - t0a), (c1 - c0) * 1e9 / (t1a - t0b)
    assert low * 0.995 <= tsc_hz <= high * 1.005, (low, tsc_hz, high)
    assert lib.hv_test_cpuid(core.p, lib.HV_CPUID_FREQ_LEAF, 0, r) and abs(r[0] - tsc_hz / 1e6) < 2
    assert not lib.hv_test_cpuid(core.p, 1, 0, r)                 # the CPU model's own


def _tsc_reader():
    """A function reading the host TSC through a TCG guest (Unicorn's RDTSC
    is the host's, which is what hv's guests see)."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDX
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\x31")

    def rdtsc():
        uc.emu_start(0, 2)
        return uc.reg_read(UC_X86_REG_RAX) | uc.reg_read(UC_X86_REG_RDX) << 32
    rdtsc()                 # translate once, outside the brackets
    return rdtsc


def test_cpuid_leaf_7_is_the_models_plus_tsc_adjust_and_the_tsc_is_invariant(pc):
    """platform.c answers leaf 7 with Unicorn's own Haswell bits plus
    TSC_ADJUST: check those bits against the model, so an engine upgrade
    that changes them is noticed here."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX
    core = pc.core
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")                          # cpuid
    uc.reg_write(UC_X86_REG_EAX, 7)
    uc.reg_write(UC_X86_REG_ECX, 0)
    uc.emu_start(0, 2)
    model = [uc.reg_read(r) for r in (UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX)]
    r = ffi.new("uint32_t[4]")
    assert lib.hv_test_cpuid(core.p, 7, 0, r)
    assert list(r) == [model[0], model[1] | 0x2, model[2], model[3]]
    assert not lib.hv_test_cpuid(core.p, 7, 1, r)                 # other subleaves: the model's
    assert lib.hv_test_cpuid(core.p, 0x80000007, 0, r) and r[3] == 1 << 8


# ---- The CMOS clock --------------------------------------------------------------

def rtc(pc, index, value=None):
    pc.port(lib.HV_RTC_PORT, index)
    return pc.port(lib.HV_RTC_PORT + 1, value)[0]


def bcd(v):
    return (v >> 4) * 10 + (v & 0xf)


def test_rtc_reads_the_hosts_utc_time_never_mid_update(pc):
    assert rtc(pc, 0x0a) & 0x80 == 0                      # UIP clear: Linux reads at once
    assert rtc(pc, 0x0d) & 0x80                           # valid
    assert rtc(pc, 0x0b) & 0x02                           # 24-hour, BCD
    before = time.gmtime()
    fields = [bcd(rtc(pc, i)) for i in (0x09, 0x08, 0x07, 0x04, 0x02)]
    after = time.gmtime()
    year = bcd(rtc(pc, 0x32)) * 100 + fields[0]
    got = (year, *fields[1:])
    assert (before.tm_year, before.tm_mon, before.tm_mday, before.tm_hour, before.tm_min) <= got
    assert got <= (after.tm_year, after.tm_mon, after.tm_mday, after.tm_hour, after.tm_min)


def test_rtc_binary_mode_and_cmos_ram(pc):
    rtc(pc, 0x0b, 0x06)                                   # binary, 24-hour
    before, month, after = time.gmtime().tm_mon, rtc(pc, 0x08), time.gmtime().tm_mon
    assert month in (before, after)
    assert rtc(pc, 0x04) <= 23 and rtc(pc, 0x02) <= 59
    rtc(pc, 0x40, 0x5a)                                   # plain CMOS RAM
    assert rtc(pc, 0x40) == 0x5a
    rtc(pc, 0x00, 0x00)                                   # the clock cannot be set
    assert rtc(pc, 0x0c) == 0


def test_deterministic_tsc_is_the_instruction_clock():
    """--deterministic: RDTSC reads the instruction count (1 per ns), so
    CPUID says 1 GHz and the APIC timer's crystal is 500 MHz."""
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_TCG, 4 << 20, pp) == 0
    try:
        assert lib.hv_partition_set_deterministic(pp[0]) == 0
        r = ffi.new("uint32_t[4]")
        assert lib.hv_test_cpuid(pp[0], lib.HV_CPUID_TSC_LEAF, 0, r)
        assert (r[0], r[1], r[2]) == (1, 2, 500_000_000)
        assert lib.hv_test_cpuid(pp[0], lib.HV_CPUID_FREQ_LEAF, 0, r) and r[0] == 1000
    finally:
        lib.hv_partition_destroy(pp[0])


# ---- virtio-mmio interrupts on IOAPIC pins (a guest without an event page) ----

VIRTIO_SLOT = 2
VIRTIO_PIN = lib.HV_VIRTIO_IRQ_BASE + VIRTIO_SLOT
INTERRUPT_ACK, STATUS = 0x064, 0x070        # virtio-mmio registers (virtio 1.2, 4.2.2)


class _VcpuOnly:
    def __init__(self, v):
        self.v, self.exit = v, ffi.new("struct hv_exit *")


@pytest.fixture
def pc_with_device():
    """A partition with a virtio device in VIRTIO_SLOT (added, as always,
    before the vCPU exists) and no event page: a stock kernel's view."""
    import os
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 4 << 20, pp) == 0
    p = pp[0]
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    version_1 = 1 << 32
    assert lib.hv_virtio_add(p, VIRTIO_SLOT, 2, version_1, 1, 64, b"", 0,
                             ffi.new("int[]", fds[:1]), fds[1]) == 0
    vv = ffi.new("struct hv_vcpu **")
    assert lib.hv_vcpu_create(p, 0, vv) == 0
    pc = Platform(_VcpuOnly(vv[0]))
    enable_apic(pc)

    def device_write(off, value):
        v = ffi.new("uint64_t *", value)
        base = lib.HV_VIRTIO_MMIO_BASE + VIRTIO_SLOT * lib.HV_VIRTIO_MMIO_SLOT
        assert lib.hv_test_mmio(p, base + off, 4, 1, v) == 0

    yield pc, p, device_write
    lib.hv_partition_destroy(p)
    for fd in fds:
        os.close(fd)


def test_virtio_interrupt_without_event_page_raises_its_ioapic_pin(pc_with_device):
    pc, p, _ = pc_with_device
    pc.ioapic(0x10 + 2 * VIRTIO_PIN, 0x8051)              # level, vector 0x51 (as the DSDT says)
    assert lib.hv_virtio_interrupt(p, VIRTIO_SLOT, 1) == 0
    assert pc.pending(IRR, 0x51) and pc.pending(TMR, 0x51)
    assert pc.ioapic(0x10 + 2 * VIRTIO_PIN) & (1 << 14)  # remote IRR: waits for the EOI


@pytest.mark.parametrize("lower", ["ack", "reset"])
def test_virtio_line_stays_high_until_acked_or_reset(pc_with_device, lower):
    """The line is InterruptStatus != 0.  Watched on an edge-triggered entry
    with a fresh vector each time: a new vector arrives only on a rising line."""
    pc, p, device_write = pc_with_device
    entry = 0x10 + 2 * VIRTIO_PIN
    pc.ioapic(entry, 0x61)                                # edge
    assert lib.hv_virtio_interrupt(p, VIRTIO_SLOT, 1) == 0
    assert pc.pending(IRR, 0x61)
    pc.ioapic(entry, 0x62)
    assert lib.hv_virtio_interrupt(p, VIRTIO_SLOT, 2) == 0   # still high: no edge
    device_write(INTERRUPT_ACK, 1)                           # one bit left: still high
    assert not pc.pending(IRR, 0x62)
    if lower == "ack":
        device_write(INTERRUPT_ACK, 2)
    else:
        device_write(STATUS, 0)
    pc.ioapic(entry, 0x63)
    assert lib.hv_virtio_interrupt(p, VIRTIO_SLOT, 1) == 0   # low -> high: delivered
    assert pc.pending(IRR, 0x63) and not pc.pending(IRR, 0x62)


# ---- UART receive: console input for the guest's ttyS0 ------------------------

RBR = THR


def test_uart_receives_bytes_in_order_with_data_ready(pc):
    assert pc.uart(LSR) & 0x01 == 0
    assert lib.hv_uart_input(pc.core.p, b"ls\n", 3) == 3
    got = []
    while pc.uart(LSR) & 0x01:
        got.append(pc.uart(RBR))
    assert bytes(got) == b"ls\n"
    assert pc.uart(RBR) == 0                    # empty: nothing new


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=4),
       reads=st.integers(1, 5000))
def test_uart_receive_buffer_loses_and_invents_nothing(chunks, reads):
    """What fitted is read back in order; what did not fit was refused
    (hv_uart_input's count), never dropped silently."""
    with Core() as core:
        pc = Platform(core)
        accepted, got = b"", bytearray()
        for chunk in chunks:
            n = lib.hv_uart_input(core.p, chunk, len(chunk))
            assert 0 <= n <= len(chunk)
            assert n == len(chunk) or len(accepted) + n - len(got) == 4096   # refused: full
            accepted += chunk[:n]
            for _ in range(min(reads, len(accepted) - len(got))):
                got.append(pc.uart(RBR))
        while pc.uart(LSR) & 0x01:
            got.append(pc.uart(RBR))
        assert bytes(got) == accepted


def test_uart_receive_interrupt_comes_first_and_clears_when_read(pc):
    enable_apic(pc)
    pc.ioapic(0x10 + 2 * lib.HV_UART_IRQ, 0x8034)          # level, so the line is visible
    pc.uart(IER, 0x03)                                      # received data + THR empty
    pc.uart(IIR)                                            # take the THRE report
    assert lib.hv_uart_input(pc.core.p, b"x", 1) == 1
    assert pc.pending(IRR, 0x34)
    assert pc.uart(IIR) & 0x0f == 0x04                      # received data available...
    assert pc.uart(IIR) & 0x0f == 0x04                      # ...until RBR is read
    assert pc.uart(RBR) == ord("x")
    assert pc.uart(IIR) & 0x0f == 0x01


def test_uart_fifo_clear_and_loopback(pc):
    lib.hv_uart_input(pc.core.p, b"abc", 3)
    pc.uart(IIR, 0x03)                                      # FCR: FIFOs on, clear the receiver
    assert pc.uart(LSR) & 0x01 == 0
    pc.uart(MCR, 0x10)                                      # loopback: THR -> RBR
    pc.uart(THR, 0x5a)
    assert pc.uart(LSR) & 0x01 and pc.uart(RBR) == 0x5a
    pc.uart(MCR, 0)
