"""hv/loader.py: PVH ELF loading and validation.

The test ELFs are assembled here with struct (no toolchain needed): an ELF64
header, PT_LOAD segments and a PT_NOTE carrying the Xen PVH entry note.  Each
validation rule of the loader has a test, and a Hypothesis property test
mutates a good image at random: the loader either returns an image that
still satisfies every invariant, or raises LoadError -- nothing else.
"""
import io
import os
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hv import loader
from hv.abi import ffi, lib
from hv.loader import BOOT_GPA, RESERVED_END, LoadError, load_pvh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20

# ---- A tiny PVH ELF, byte by byte (System V gABI + x86-64 psABI layouts) ----
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")      # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")              # Elf64_Phdr, 56 bytes
PT_LOAD, PT_NOTE, PF_X, PF_W, PF_R = 1, 4, 1, 2, 4
ET_EXEC, EM_X86_64 = 2, 62

# Field offsets for mutation: (name, offset, size) in the ELF header / a phdr.
EHDR_FIELDS = [("e_type", 16, 2), ("e_machine", 18, 2), ("e_version", 20, 4),
               ("e_entry", 24, 8), ("e_phoff", 32, 8), ("e_shoff", 40, 8),
               ("e_phentsize", 54, 2), ("e_phnum", 56, 2), ("e_shnum", 60, 2),
               ("e_shstrndx", 62, 2), ("ei_class", 4, 1), ("ei_data", 5, 1)]
PHDR_FIELDS = [("p_type", 0, 4), ("p_flags", 4, 4), ("p_offset", 8, 8),
               ("p_vaddr", 16, 8), ("p_paddr", 24, 8), ("p_filesz", 32, 8),
               ("p_memsz", 40, 8), ("p_align", 48, 8)]

CODE = b"\xfa\xf4\xeb\xfd" + bytes(12)           # cli; hlt; jmp $-1
LOAD_GPA = 0x100000


def note(desc, name=b"Xen\0", ntype=None):
    ntype = lib.HV_PVH_NOTE_ENTRY if ntype is None else ntype
    pad = lambda b: b + bytes(-len(b) % 4)     # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def make_elf(loads=None, notes=None, entry=LOAD_GPA, ehdr=None):
    """Assemble an ELF64 image.

    loads: [(paddr, data, memsz, flags)]; notes: PT_NOTE contents (bytes) or
    None for one entry note naming `entry`; ehdr: header field overrides.
    """
    if loads is None:
        loads = [(LOAD_GPA, CODE, 0x3000, PF_R | PF_X)]
    if notes is None:
        notes = note(struct.pack("<I", entry))
    nph = len(loads) + (1 if notes else 0)
    body_at = EHDR.size + nph * PHDR.size
    body, phdrs = bytearray(), []
    if notes:
        phdrs.append(PHDR.pack(PT_NOTE, PF_R, body_at, 0, 0, len(notes), len(notes), 4))
        body += notes
    for paddr, data, memsz, flags in loads:
        body += bytes(-(body_at + len(body)) % 16)
        off = body_at + len(body)
        phdrs.append(PHDR.pack(PT_LOAD, flags, off, paddr, paddr, len(data), memsz, 0x1000))
        body += data
    fields = dict(ident=b"\x7fELF\x02\x01\x01" + bytes(9), type=ET_EXEC, machine=EM_X86_64,
                  version=1, entry=entry, phoff=EHDR.size, shoff=0, flags=0,
                  ehsize=EHDR.size, phentsize=PHDR.size, phnum=nph, shentsize=64,
                  shnum=0, shstrndx=0)
    fields.update(ehdr or {})
    return EHDR.pack(*fields.values()) + b"".join(phdrs) + bytes(body)


GOOD = make_elf()


def setfield(image, offset, size, value):
    b = bytearray(image)
    b[offset:offset + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
    return bytes(b)


def phdr_at(image, index):
    return EHDR.size + index * PHDR.size


def expect_error(image, match, mem_size=16 * MIB, cmdline=""):
    with pytest.raises(LoadError, match=match) as info:
        load_pvh(image, mem_size, cmdline)
    assert "\n" not in str(info.value)


# ---- Invariants every successful load satisfies ------------------------------
def ref_phdrs(image):
    """A second, independent reading of the program headers (the oracle)."""
    _, _, _, _, _, phoff, _, _, _, _, phnum, _, _, _ = EHDR.unpack_from(image)
    return [PHDR.unpack_from(image, phoff + i * PHDR.size) for i in range(phnum)]


def elftools_segments(image):
    """(gpa, file bytes, memsz) of every PT_LOAD, as pyelftools reads them."""
    from elftools.elf.elffile import ELFFile
    elf = ELFFile(io.BytesIO(image))
    return sorted((seg["p_paddr"], seg.data(), seg["p_memsz"])
                  for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD")


def check_invariants(image, boot, mem_size, cmdline=""):
    segs = boot.segments
    assert segs and all(isinstance(s, loader.Segment) for s in segs)
    for s in segs:
        assert RESERVED_END <= s.gpa and s.gpa + s.memsz <= mem_size
        assert len(s.data) <= s.memsz
    for a, b in zip(segs, segs[1:]):
        assert a.gpa + a.memsz <= b.gpa
    # Entry: inside the file bytes of an executable PT_LOAD, by the oracle.
    assert any(t == PT_LOAD and f & PF_X and pa <= boot.entry < pa + fsz
               and image[off:off + fsz] in [s.data for s in segs]
               for t, f, off, _, pa, fsz, _, _ in ref_phdrs(image))
    assert boot.entry < 1 << 32
    # pyelftools, an independent ELF reader, sees the same PT_LOAD segments.
    assert elftools_segments(image) == sorted((s.gpa, s.data, s.memsz) for s in segs)
    assert boot.boot_gpa == boot.start_info_gpa == BOOT_GPA
    assert boot.reserved == ((0, RESERVED_END),)
    check_blob(boot.boot_blob, mem_size, cmdline)


def check_blob(blob, mem_size, cmdline):
    """Read the boot page back through the ABI structs."""
    assert len(blob) <= RESERVED_END - BOOT_GPA
    buf = ffi.from_buffer(blob)
    info = ffi.cast("struct hv_pvh_start_info *", buf)
    assert info.magic == lib.HV_PVH_START_MAGIC
    assert info.version == 1
    assert info.memmap_entries == 2
    map_off = info.memmap_paddr - BOOT_GPA
    assert map_off >= ffi.sizeof("struct hv_pvh_start_info")
    assert map_off % ffi.alignof("struct hv_pvh_memmap_entry") == 0
    memmap = ffi.cast("struct hv_pvh_memmap_entry *", buf + map_off)
    assert (memmap[0].addr, memmap[0].size, memmap[0].type) == (0, RESERVED_END, lib.HV_E820_RESERVED)
    assert (memmap[1].addr, memmap[1].size, memmap[1].type) == (
        RESERVED_END, mem_size - RESERVED_END, lib.HV_E820_RAM)
    cmd_off = info.cmdline_paddr - BOOT_GPA
    assert cmd_off >= map_off + 2 * ffi.sizeof("struct hv_pvh_memmap_entry")
    assert ffi.string(ffi.cast("char *", buf + cmd_off)) == cmdline.encode()
    assert blob[-1:] == b"\0" and len(blob) == cmd_off + len(cmdline.encode()) + 1
    assert info.nr_modules == 0 and info.rsdp_paddr == lib.HV_ACPI_GPA and info.flags == 0


# ---- Good images -------------------------------------------------------------
def test_good_image():
    boot = load_pvh(GOOD, 16 * MIB, "console=hv quiet")
    assert boot.entry == LOAD_GPA
    assert boot.segments == (loader.Segment(gpa=LOAD_GPA, data=CODE, memsz=0x3000),)
    check_invariants(GOOD, boot, 16 * MIB, "console=hv quiet")


def test_good_image_from_path(tmp_path):
    path = tmp_path / "k.elf"
    path.write_bytes(GOOD)
    assert load_pvh(path, 2 * MIB) == load_pvh(str(path), 2 * MIB) == load_pvh(GOOD, 2 * MIB)


def test_several_segments_sorted_and_entry_in_second():
    image = make_elf(loads=[(0x200000, b"data", 0x1000, PF_R | PF_W),
                            (0x100000, CODE, 0x1000, PF_R | PF_X)], entry=0x100002)
    boot = load_pvh(image, 4 * MIB)
    assert [s.gpa for s in boot.segments] == [0x100000, 0x200000]
    check_invariants(image, boot, 4 * MIB)


def test_adjacent_segments_and_segment_at_reserved_end_and_ram_end():
    image = make_elf(loads=[(RESERVED_END, CODE, 0x1000, PF_R | PF_X),
                            (RESERVED_END + 0x1000, b"x", MIB - RESERVED_END - 0x1000, PF_R)],
                     entry=RESERVED_END)
    check_invariants(image, load_pvh(image, MIB), MIB)


def test_eight_byte_entry_note_as_linux_emits():
    image = make_elf(notes=note(struct.pack("<Q", LOAD_GPA + 1)))
    assert load_pvh(image, 2 * MIB).entry == LOAD_GPA + 1


def test_other_notes_and_trailing_padding_are_ignored():
    notes = (note(b"\x01\x00\x00\x00", name=b"GNU\0", ntype=lib.HV_PVH_NOTE_ENTRY)
             + note(b"abcd", name=b"Xen\0", ntype=lib.HV_PVH_NOTE_ENTRY + 1)
             + note(struct.pack("<I", LOAD_GPA)) + bytes(4))
    assert load_pvh(make_elf(notes=notes), 2 * MIB).entry == LOAD_GPA


def test_empty_cmdline_still_points_at_a_nul():
    boot = load_pvh(GOOD, 2 * MIB)
    check_blob(boot.boot_blob, 2 * MIB, "")


def test_longest_cmdline_fits_in_the_boot_page():
    room = lib.HV_PAGE_SIZE - (len(load_pvh(GOOD, 2 * MIB).boot_blob))
    cmdline = "x" * room
    boot = load_pvh(GOOD, 2 * MIB, cmdline)
    assert len(boot.boot_blob) == lib.HV_PAGE_SIZE
    check_blob(boot.boot_blob, 2 * MIB, cmdline)
    expect_error(GOOD, "cmdline is .* bytes", cmdline=cmdline + "x")


HELLO = os.path.join(ROOT, "guests", "build", "hello.elf")


@pytest.mark.skipif(not os.path.exists(HELLO), reason="guests/build/hello.elf not built")
def test_built_guest_loads():
    with open(HELLO, "rb") as f:
        image = f.read()
    boot = load_pvh(HELLO, 64 * MIB, "hello")
    check_invariants(image, boot, 64 * MIB, "hello")


# ---- One test per validation rule --------------------------------------------
@pytest.mark.parametrize("image", [b"", b"\x7fEL", b"MZ\x90\x00" + bytes(60), b"\x00ELF" + GOOD[4:]])
def test_not_an_elf(image):
    expect_error(image, "not an ELF file")


@pytest.mark.parametrize("cut", [5, 6, 20, 63, 64, 100, EHDR.size + PHDR.size * 2 - 1])
def test_truncated_headers(cut):
    expect_error(GOOD[:cut], "truncated|corrupt|beyond end of file")


def test_truncated_segment_data():
    expect_error(GOOD[:-4], "segment 1: file range .* beyond end of file")


def test_wrong_class():
    expect_error(setfield(GOOD, 4, 1, 1), "wrong ELF class 1")


def test_wrong_byte_order():
    expect_error(setfield(GOOD, 5, 1, 2), "byte order")


def test_wrong_machine():
    expect_error(make_elf(ehdr={"machine": 3}), "wrong ELF machine EM_386")


@pytest.mark.parametrize("etype", [1, 3, 4, 0xfe00])
def test_wrong_type(etype):
    expect_error(make_elf(ehdr={"type": etype}), "wrong ELF type")


def test_no_program_headers():
    expect_error(setfield(GOOD, 56, 2, 0), "no program headers")


def test_extended_program_header_numbering():
    expect_error(setfield(GOOD, 56, 2, 0xffff), "extended program header numbering")


def test_bad_phentsize():
    expect_error(setfield(GOOD, 54, 2, 32), "bad e_phentsize 32")


def test_program_header_table_beyond_file():
    expect_error(setfield(GOOD, 32, 8, len(GOOD) - 60), "program header table beyond end")
    expect_error(setfield(GOOD, 32, 8, (1 << 64) - 8), "program header table beyond end")


def test_no_load_segment():
    expect_error(make_elf(loads=[]), "no PT_LOAD")


def test_zero_size_load_segment_alone_is_no_load_segment():
    expect_error(make_elf(loads=[(LOAD_GPA, b"", 0, PF_R | PF_X)]), "no PT_LOAD")


@pytest.mark.parametrize("field,value", [("p_offset", 1 << 40), ("p_filesz", 1 << 20),
                                         ("p_offset", (1 << 64) - 1)])
def test_segment_file_range_beyond_file(field, value):
    _, off, size = next(f for f in PHDR_FIELDS if f[0] == field)
    image = setfield(GOOD, phdr_at(GOOD, 1) + off, size, value)
    expect_error(image, "segment 1: file range .* beyond end of file")


def test_filesz_above_memsz():
    expect_error(make_elf(loads=[(LOAD_GPA, CODE, 4, PF_R | PF_X)]), "filesz 0x10 > memsz 0x4")


@pytest.mark.parametrize("paddr,memsz", [(MIB - 0x1000, 0x2000), (MIB, 0x1000), (1 << 40, 0x1000)])
def test_segment_outside_ram(paddr, memsz):
    image = make_elf(loads=[(paddr, CODE, memsz, PF_R | PF_X)], entry=paddr % (1 << 32))
    expect_error(image, "outside RAM", mem_size=MIB)


@pytest.mark.parametrize("paddr", [0, 0x1000, RESERVED_END - 0x10])
def test_segment_overlapping_reserved_range(paddr):
    image = make_elf(loads=[(paddr, CODE, 0x1000, PF_R | PF_X)], entry=paddr)
    expect_error(image, "overlaps hv's reserved range")


def test_segments_overlapping_each_other():
    image = make_elf(loads=[(LOAD_GPA, CODE, 0x2000, PF_R | PF_X),
                            (LOAD_GPA + 0x1fff, b"x", 0x10, PF_R)])
    expect_error(image, "segment 2 overlaps segment 1")


def test_gpa_plus_memsz_overflow():
    paddr = (1 << 64) - 0x1000
    image = make_elf(loads=[(paddr, CODE, 0x2000, PF_R | PF_X)], entry=0x100000)
    expect_error(image, "overflows 64 bits")


def test_missing_entry_note():
    expect_error(make_elf(notes=b""), "no PVH entry note")


@pytest.mark.parametrize("notes", [note(b"\0\0\x10\0", name=b"Xem\0"),
                                   note(b"\0\0\x10\0", ntype=17)])
def test_entry_note_with_other_name_or_type_is_not_the_entry(notes):
    expect_error(make_elf(notes=notes), "no PVH entry note")


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 7, 16])
def test_entry_note_of_wrong_size(size):
    expect_error(make_elf(notes=note(bytes(size))), f"PVH entry note has {size} bytes")


def test_entry_note_above_4g():
    expect_error(make_elf(notes=note(struct.pack("<Q", 1 << 32))), "above 4 GiB")


def test_two_entry_notes():
    two = note(struct.pack("<I", LOAD_GPA)) * 2
    expect_error(make_elf(notes=two), "more than one PVH entry note")


@pytest.mark.parametrize("descsz", [0x100, 0xffffffff])
def test_truncated_note(descsz):
    image = make_elf()
    note_at = struct.unpack_from("<Q", image, phdr_at(image, 0) + 8)[0]
    expect_error(setfield(image, note_at + 4, 4, descsz), "truncated note")


def test_note_segment_beyond_file():
    image = setfield(GOOD, phdr_at(GOOD, 0) + 32, 8, 1 << 30)
    expect_error(image, "note segment 0 beyond end of file")


@pytest.mark.parametrize("entry", [0x2000, LOAD_GPA - 1, LOAD_GPA + len(CODE),   # zero fill
                                   LOAD_GPA + 0x3000, 0xffffffff])
def test_entry_not_in_loaded_executable_segment(entry):
    expect_error(make_elf(entry=entry), "not inside a loaded executable segment")


def test_entry_in_non_executable_segment():
    image = make_elf(loads=[(LOAD_GPA, CODE, 0x1000, PF_R | PF_W)])
    expect_error(image, "not inside a loaded executable segment")


@pytest.mark.parametrize("mem_size,match", [
    (0, "not a positive multiple"), (-4096, "not a positive multiple"),
    (MIB + 1, "not a positive multiple"), (MIB - 4096, "below the 1 MiB"),
    (4096, "below the 1 MiB"), (1 << 60, "above"), (2.0 * MIB, "integer"),
    (True, "integer"), ("16M", "integer")])
def test_bad_mem_size(mem_size, match):
    expect_error(GOOD, match, mem_size=mem_size)


def test_cmdline_with_nul_or_not_a_string():
    expect_error(GOOD, "NUL", cmdline="a\0b")
    expect_error(GOOD, "cmdline must be a str", cmdline=b"abc")


def test_unreadable_source(tmp_path):
    expect_error(str(tmp_path / "missing.elf"), "cannot read .*missing.elf: No such file")
    expect_error(tmp_path, "cannot read .*: not a regular file")
    expect_error("/dev/zero", "cannot read /dev/zero: not a regular file")
    expect_error(None, "source must be a path or bytes")
    expect_error(0, "source must be a path or bytes, not int")   # not stdin's fd


def test_oversized_file(tmp_path, monkeypatch):
    path = tmp_path / "big.elf"
    path.write_bytes(GOOD + bytes(4096))
    monkeypatch.setattr(loader, "MAX_IMAGE_SIZE", len(GOOD))
    expect_error(path, "larger than")


# ---- Property: mutated images load correctly or fail with LoadError ----------
INTERESTING = [0, 1, 2, 4, 0x38, 0x40, 0xfff, 0x1000, 0x2000, LOAD_GPA, LOAD_GPA + 0x3000,
               MIB, 16 * MIB, 0x7fffffff, 0xffffffff, 1 << 32, 1 << 63, (1 << 64) - 1]
MUTABLE_PHDRS = 2


@st.composite
def mutation(draw, image):
    kind = draw(st.sampled_from(["flip", "code", "truncate", "ehdr", "phdr", "note"]))
    value = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1),
                           st.integers(-64, 64)))
    if kind == "flip":
        at = draw(st.integers(0, len(image) - 1))
        return setfield(image, at, 1, image[at] ^ draw(st.integers(1, 255)))
    if kind == "code":      # the last bytes are code or data: should still load
        at = len(image) - draw(st.integers(1, len(CODE)))
        return setfield(image, at, 1, draw(st.integers(0, 255)))
    if kind == "truncate":
        return image[:draw(st.integers(0, len(image) - 1))]
    if kind == "ehdr":
        _, off, size = draw(st.sampled_from(EHDR_FIELDS))
        return setfield(image, off, size, value)
    if kind == "phdr":
        _, off, size = draw(st.sampled_from(PHDR_FIELDS))
        at = phdr_at(image, draw(st.integers(0, MUTABLE_PHDRS - 1))) + off
        return setfield(image, at, size, value)
    note_at = struct.unpack_from("<Q", image, phdr_at(image, 0) + 8)[0]
    at = note_at + draw(st.sampled_from([0, 4, 8, 12, 16]))   # namesz descsz type name desc
    return setfield(image, at, 4, value)


@st.composite
def mutated(draw):
    image = GOOD if draw(st.booleans()) else make_elf(
        loads=[(0x200000, b"data" * 4, 0x1000, PF_R | PF_W), (LOAD_GPA, CODE, 0x3000, PF_R | PF_X)])
    for _ in range(draw(st.integers(1, 3))):
        image = draw(mutation(image))
        if len(image) < EHDR.size + 2 * PHDR.size + 20:
            break          # truncated below the note: further field edits are moot
    return image


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=mutated(), mem_size=st.sampled_from([2 * MIB, 16 * MIB, 1 << 32]),
       cmdline=st.text(max_size=64).filter(lambda s: "\0" not in s))
def test_mutated_images_load_correctly_or_raise_load_error(image, mem_size, cmdline):
    try:
        boot = load_pvh(image, mem_size, cmdline)
    except LoadError as e:
        assert str(e) and "\n" not in str(e)
        event("LoadError")
        return
    event("loaded")
    check_invariants(image, boot, mem_size, cmdline)
