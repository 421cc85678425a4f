"""ACPI tables for the PC platform: how a stock kernel learns what hv's
machine has (the core's csrc/platform.c serves what they describe)."""
import struct

# T:206 The loader writes these into hv's ACPI page (layout.h HV_ACPI_GPA)
# and points start_info.rsdp_paddr at the RSDP, as QEMU's microvm does:
#
#   RSDP -> XSDT -> FADT -> DSDT     hardware-reduced ACPI: no PM timer, no
#                |                   SCI events; S5 and reset through the
#                |                   sleep-control and reset registers
#                +-> MADT            one local APIC, one IOAPIC
#
# The DSDT holds \_S5 (the SLP_TYP power-off writes), COM1 (PNP0501: the
# only way the UART's IRQ is described without legacy IRQs) and one LNRO0005
# device per virtio-mmio slot with its registers and interrupt, which is how
# a kernel without VIRTIO_MMIO_CMDLINE_DEVICES (Debian's) finds them.
# Layouts are ACPI 6.4 (section numbers below); every value hv serves comes
# from abi.h through cffi.

OEM_ID = b"HV    "            # 6 bytes
OEM_TABLE_ID = b"HVPLATFM"     # 8 bytes
CREATOR_ID = b"HV  "
VIRTIO_HID = b"LNRO0005"       # virtio-mmio's ACPI id (Linux's virtio_mmio_acpi_match)


def checksum(data):
    """The byte that makes data sum to 0 mod 256 (5.2.5.3, 5.2.6)."""
    return (-sum(data)) & 0xff


def sdt(signature, revision, body):
    """A table: the 36-byte System Description Table header (5.2.6), then body."""
    length = 36 + len(body)
    header = struct.pack("<4sIBB6s8sI4sI", signature, length, revision, 0, OEM_ID,
                         OEM_TABLE_ID, 1, CREATOR_ID, 1)
    table = bytearray(header + body)
    table[9] = checksum(table)
    return bytes(table)


def gas_io(port, width_bits=8):
    """A Generic Address Structure (5.2.3.2) naming an I/O port, byte access."""
    return struct.pack("<BBBBQ", 1, width_bits, 0, 1, port)


def rsdp(xsdt_gpa):
    """The Root System Description Pointer, ACPI 2.0+ form (5.2.5.3)."""
    first = bytearray(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 2, 0))
    first[8] = checksum(first)
    whole = bytearray(first + struct.pack("<IQB3s", 36, xsdt_gpa, 0, b"\0\0\0"))
    whole[32] = checksum(whole)
    return bytes(whole)


# FADT flags (5.2.9, table 5.10) and IA-PC boot architecture flags (5.2.9.3).
_FADT_PWR_BUTTON = 1 << 4          # no fixed power button
_FADT_SLP_BUTTON = 1 << 5          # no fixed sleep button
_FADT_RESET_REG_SUP = 1 << 10
_FADT_HW_REDUCED_ACPI = 1 << 20
_BOOT_VGA_NOT_PRESENT = 1 << 2
_BOOT_CMOS_RTC_NOT_PRESENT = 1 << 5


def fadt(lib, dsdt_gpa):
    """The Fixed ACPI Description Table, revision 6 (276 bytes)."""
    body = bytearray(276 - 36)

    def put(offset, fmt, *values):
        struct.pack_into(fmt, body, offset - 36, *values)

    put(40, "<I", dsdt_gpa)
    put(46, "<H", lib.HV_ACPI_SCI_IRQ)
    put(109, "<H", _BOOT_VGA_NOT_PRESENT | _BOOT_CMOS_RTC_NOT_PRESENT)
    put(112, "<I", _FADT_PWR_BUTTON | _FADT_SLP_BUTTON | _FADT_RESET_REG_SUP
        | _FADT_HW_REDUCED_ACPI)
    body[116 - 36:128 - 36] = gas_io(lib.HV_ACPI_RESET_PORT)
    put(128, "<B", lib.HV_ACPI_RESET_VALUE)
    put(131, "<B", 4)                                   # FADT minor version (ACPI 6.4)
    put(140, "<Q", dsdt_gpa)                            # X_DSDT
    body[244 - 36:256 - 36] = gas_io(lib.HV_ACPI_SLEEP_CONTROL_PORT)
    body[256 - 36:268 - 36] = gas_io(lib.HV_ACPI_SLEEP_STATUS_PORT)
    put(268, "<8s", b"hv      ")                        # hypervisor vendor identity
    return sdt(b"FACP", 6, bytes(body))


def madt(lib):
    """The Multiple APIC Description Table (5.2.12): the one CPU's local APIC
    (ID 0, as CPUID leaf 1 reports) and the IOAPIC with GSIs from 0.  Flags 0:
    no 8259 PICs."""
    body = struct.pack("<II", lib.HV_LAPIC_BASE, 0)
    body += struct.pack("<BBBBI", 0, 8, 0, 0, 1)                 # processor local APIC, enabled
    body += struct.pack("<BBBBII", 1, 12, 0, 0, lib.HV_IOAPIC_BASE, 0)   # I/O APIC id 0
    body += struct.pack("<BBBHB", 4, 6, 0xff, 0x5, 1)            # NMI on LINT1, all CPUs
    return sdt(b"APIC", 4, body)


# ---- AML (ACPI 6.4, chapter 20) -------------------------------------------------

def pkg_length(body_len):
    """PkgLength (20.2.4) for a package whose contents are body_len bytes:
    the encoding counts its own bytes."""
    for extra in range(1, 5):
        total = body_len + extra
        if extra == 1 and total < 0x40:
            return bytes([total])
        if extra > 1 and total < 1 << (4 + 8 * (extra - 1)):
            lead = ((extra - 1) << 6) | (total & 0xf)
            return bytes([lead]) + (total >> 4).to_bytes(extra - 1, "little")
    raise ValueError(f"AML package of {body_len} bytes is too long")


def aml_name(name, value):
    return b"\x08" + name + value                     # NameOp NameString DataRefObject


def aml_integer(n):
    if n == 0:
        return b"\x00"                                 # ZeroOp
    if n == 1:
        return b"\x01"                                 # OneOp
    if n < 0x100:
        return b"\x0a" + bytes([n])                   # BytePrefix
    if n < 0x10000:
        return b"\x0b" + struct.pack("<H", n)         # WordPrefix
    return b"\x0c" + struct.pack("<I", n)             # DWordPrefix


def aml_string(s):
    return b"\x0d" + s + b"\0"                        # StringPrefix


def aml_package(*elements):
    body = bytes([len(elements)]) + b"".join(elements)
    return b"\x12" + pkg_length(len(body)) + body     # PackageOp


def aml_buffer(data):
    body = aml_integer(len(data)) + data
    return b"\x11" + pkg_length(len(body)) + body     # BufferOp


def aml_scope(name, body):
    return b"\x10" + pkg_length(len(name) + len(body)) + name + body


def aml_device(name, body):
    return b"\x5b\x82" + pkg_length(len(name) + len(body)) + name + body


def resources_mmio_irq(base, size, gsi):
    """A _CRS buffer (6.4): Memory32Fixed read/write, an Extended Interrupt
    (consumer, level, active high), the end tag."""
    memory = struct.pack("<BHBII", 0x86, 9, 1, base, size)
    interrupt = struct.pack("<BHBBI", 0x89, 6, 0x01, 1, gsi)
    return memory + interrupt + b"\x79\x00"


def eisa_id(text):
    """EISAID("PNP0501") (19.6.35): three letters in 5 bits each, then
    four hex digits, stored big-endian in a DWord."""
    letters = [ord(c) - 0x40 for c in text[:3]]
    value = (letters[0] << 26) | (letters[1] << 21) | (letters[2] << 16) | int(text[3:], 16)
    return b"\x0c" + value.to_bytes(4, "big")


def resources_io_irq(port, count, irq):
    """A _CRS buffer: an I/O range (16-bit decode, 6.4.2.5), an ISA IRQ
    (edge, active high: IRQNoFlags, 6.4.2.1), the end tag."""
    io = struct.pack("<BBHHBB", 0x47, 1, port, port, 1, count)
    return io + struct.pack("<BH", 0x22, 1 << irq) + b"\x79\x00"


def com1(lib):
    """COM1 as a PNP0501 device.  Hardware-reduced ACPI has no legacy IRQs,
    so the UART's IRQ reaches the IOAPIC only through this description
    (Linux's 8250_pnp driver maps it)."""
    return aml_device(b"COM1", b"".join((
        aml_name(b"_HID", eisa_id("PNP0501")),
        aml_name(b"_UID", aml_integer(0)),
        aml_name(b"_CRS", aml_buffer(resources_io_irq(lib.HV_UART_PORT, 8, lib.HV_UART_IRQ))),
    )))


def dsdt(lib, virtio_slots=0):
    """\\_S5, COM1 and one LNRO0005 device per virtio-mmio slot in use."""
    s5 = aml_name(b"_S5_", aml_package(aml_integer(lib.HV_ACPI_S5), aml_integer(lib.HV_ACPI_S5),
                                      aml_integer(0), aml_integer(0)))
    devices = com1(lib)
    for slot in range(min(virtio_slots, lib.HV_VIRTIO_IRQ_SLOTS)):
        base = lib.HV_VIRTIO_MMIO_BASE + slot * lib.HV_VIRTIO_MMIO_SLOT
        devices += aml_device(b"VR%02X" % slot, b"".join((
            aml_name(b"_HID", aml_string(VIRTIO_HID)),
            aml_name(b"_UID", aml_integer(slot)),
            aml_name(b"_CRS", aml_buffer(resources_mmio_irq(
                base, lib.HV_VIRTIO_MMIO_SLOT, lib.HV_VIRTIO_IRQ_BASE + slot))),
        )))
    body = s5 + aml_scope(b"\\_SB_", devices)
    return sdt(b"DSDT", 2, body)


def tables(lib, base_gpa, virtio_slots=0):
    """The whole ACPI page: RSDP at base_gpa, then XSDT, FADT, MADT, DSDT
    (each 8-byte aligned).  Returns bytes to copy to base_gpa."""
    out = bytearray()

    def place(blob):
        out.extend(bytes(-len(out) % 8))
        at = base_gpa + len(out)
        out.extend(blob)
        return at

    place(bytes(36))                                   # the RSDP, filled in last
    dsdt_at = place(dsdt(lib, virtio_slots))
    fadt_at = place(fadt(lib, dsdt_at))
    madt_at = place(madt(lib))
    xsdt_at = place(sdt(b"XSDT", 1, struct.pack("<QQ", fadt_at, madt_at)))
    out[0:36] = rsdp(xsdt_at)
    return bytes(out)
