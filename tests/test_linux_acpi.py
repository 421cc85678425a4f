"""hv/acpi.py: the tables a stock kernel reads, checked by an independent
reading here (field by field, checksums) and by ACPICA's disassembler
(iasl, Debian's acpica-tools) when it is installed."""
import shutil
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hv import acpi
from hv._core import lib

BASE = lib.HV_ACPI_GPA


def tables_by_signature(page, base=BASE):
    """Follow RSDP -> XSDT -> entries, and FADT -> DSDT, checking every
    checksum and length on the way."""
    assert page[:8] == b"RSD PTR " and sum(page[:20]) % 256 == 0 and sum(page[:36]) % 256 == 0
    revision, = struct.unpack_from("<B", page, 15)
    length, xsdt = struct.unpack_from("<IQ", page, 20)
    assert (revision, length) == (2, 36)

    def table(gpa):
        at = gpa - base
        signature, length = struct.unpack_from("<4sI", page, at)
        assert at + length <= len(page)
        assert sum(page[at:at + length]) % 256 == 0, f"{signature} checksum"
        return signature, page[at:at + length]

    sig, x = table(xsdt)
    assert sig == b"XSDT" and (len(x) - 36) % 8 == 0
    found = {}
    for i in range((len(x) - 36) // 8):
        s, t = table(struct.unpack_from("<Q", x, 36 + 8 * i)[0])
        found[s] = t
    found[b"DSDT"] = table(struct.unpack_from("<Q", found[b"FACP"], 140)[0])[1]
    return found


@pytest.mark.parametrize("slots", [0, 1, 8, 32])
def test_tables_fit_the_page_and_chain(slots):
    page = acpi.tables(lib, BASE, slots)
    assert len(page) <= lib.HV_PAGE_SIZE
    found = tables_by_signature(page)
    assert set(found) == {b"FACP", b"APIC", b"DSDT"}


def test_fadt_is_hardware_reduced_with_hvs_power_registers():
    fadt = tables_by_signature(acpi.tables(lib, BASE))[b"FACP"]
    assert len(fadt) == 276 and fadt[8] == 6                   # revision 6
    flags, = struct.unpack_from("<I", fadt, 112)
    assert flags & (1 << 20) and flags & (1 << 10)             # HW_REDUCED_ACPI, RESET_REG_SUP

    def gas(offset):
        return struct.unpack_from("<BBBBQ", fadt, offset)
    assert gas(116) == (1, 8, 0, 1, lib.HV_ACPI_RESET_PORT)    # system I/O, 8 bits
    assert fadt[128] == lib.HV_ACPI_RESET_VALUE
    assert gas(244) == (1, 8, 0, 1, lib.HV_ACPI_SLEEP_CONTROL_PORT)
    assert gas(256) == (1, 8, 0, 1, lib.HV_ACPI_SLEEP_STATUS_PORT)
    dsdt32, = struct.unpack_from("<I", fadt, 40)
    assert dsdt32 == struct.unpack_from("<Q", fadt, 140)[0]


def test_madt_has_one_cpu_and_the_ioapic():
    madt = tables_by_signature(acpi.tables(lib, BASE))[b"APIC"]
    lapic, flags = struct.unpack_from("<II", madt, 36)
    assert (lapic, flags) == (lib.HV_LAPIC_BASE, 0)
    entries, at = [], 44
    while at < len(madt):
        kind, length = madt[at], madt[at + 1]
        entries.append((kind, madt[at + 2:at + length]))
        at += length
    assert at == len(madt)
    kinds = [k for k, _ in entries]
    assert kinds.count(0) == 1 and kinds.count(1) == 1
    cpu = dict(entries)[0]
    assert struct.unpack("<BBI", cpu) == (0, 0, 1)            # UID 0, APIC ID 0, enabled
    io = dict(entries)[1]
    assert struct.unpack("<BBII", io) == (0, 0, lib.HV_IOAPIC_BASE, 0)


def test_dsdt_names_s5_com1_and_the_virtio_devices():
    dsdt = tables_by_signature(acpi.tables(lib, BASE, 3))[b"DSDT"]
    assert b"_S5_\x12" in dsdt
    assert dsdt.count(acpi.VIRTIO_HID) == 3
    assert acpi.eisa_id("PNP0501") == b"\x0c\x41\xd0\x05\x01"   # as iasl's EISAID() encodes it
    for slot in range(3):
        base = lib.HV_VIRTIO_MMIO_BASE + slot * lib.HV_VIRTIO_MMIO_SLOT
        assert struct.pack("<BHBII", 0x86, 9, 1, base, lib.HV_VIRTIO_MMIO_SLOT) in dsdt
        assert struct.pack("<BHBBI", 0x89, 6, 1, 1, lib.HV_VIRTIO_IRQ_BASE + slot) in dsdt


def decode_pkg_length(data):
    lead = data[0]
    extra = lead >> 6
    if extra == 0:
        return lead & 0x3f, 1
    value = lead & 0xf
    for i in range(extra):
        value |= data[1 + i] << (4 + 8 * i)
    return value, 1 + extra


@given(st.integers(0, (1 << 28) - 8))
def test_pkg_length_round_trips(body_len):
    encoded = acpi.pkg_length(body_len)
    total, size = decode_pkg_length(encoded + bytes(4))
    assert size == len(encoded) and total == body_len + size


@pytest.mark.skipif(shutil.which("iasl") is None,
                    reason="iasl is not installed (apt-get install acpica-tools)")
def test_acpica_disassembles_the_dsdt_cleanly(tmp_path):
    (tmp_path / "dsdt.aml").write_bytes(acpi.dsdt(lib, 2))
    r = subprocess.run(["iasl", "-d", "dsdt.aml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    dsl = (tmp_path / "dsdt.dsl").read_text()
    for text in ('Name (_S5, Package (0x04)', 'EisaId ("PNP0501")', "IRQNoFlags ()", "{4}",
                 'Name (_HID, "LNRO0005")', "0xFEB00200",
                 "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )"):
        assert text in dsl, text
