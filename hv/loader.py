"""PVH ELF loader: turn a guest kernel file into a validated BootImage.

The image is untrusted input.  Everything is checked before a BootImage is
returned, and every problem becomes a one-line LoadError; nothing else
escapes.

The ELF header and program headers are read with the struct module: they are
two fixed little-endian records (System V gABI), and importing pyelftools
costs ~14 ms at every `hv run` -- a third of the start-up budget.  pyelftools
stays the independent reference: tests/test_loader.py checks this parser
against it on every mutated image.  The
result is plain data: the parent partition copies the segments and the boot
blob into guest RAM, reserves `reserved`, and starts the vCPU at `entry` with
EBX = `start_info_gpa` (csrc hv_vcpu_set_pvh_entry).

Values and struct layouts of the boot protocol (start_info, memmap entries,
the PVH note type, E820 types) come from csrc/include/hv/abi.h through cffi,
never retyped here.  The constants below are hv's own layout choices, not ABI.
"""
import os
import stat
import struct
from collections import namedtuple

# Guest-physical layout and RAM limits are defined once, in
# csrc/include/hv/layout.h, and come from the compiled core (read when first
# asked for, so `import hv.loader` stays cheap): hv keeps [0, RESERVED_END)
# for itself; page 0 holds only the boot GDT, so a guest null-pointer access
# never reads boot data; the boot page at BOOT_GPA holds start_info, then
# the memmap entries, then the command line -- all of it within that page.
_LAYOUT = {"BOOT_GPA": "HV_BOOT_PAGE_GPA", "RESERVED_END": "HV_RESERVED_END",
           "MIN_MEM_SIZE": "HV_MEM_MIN", "MAX_MEM_SIZE": "HV_MEM_MAX"}


def __getattr__(name):
    """hv.loader.BOOT_GPA and the other _LAYOUT names, from layout.h."""
    if name in _LAYOUT:
        from hv.abi import lib
        return getattr(lib, _LAYOUT[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_IMAGE_SIZE = 1 << 30    # a kernel file is read whole; bound what that costs

# ELF identification and header values (System V gABI, "ELF Header").
_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_PF_X = 0x1
_ET_EXEC = 2
_EM_X86_64 = 62
_PT_LOAD = 1
_PT_NOTE = 4
# Names for the values people meet by mistake (for error messages).
_MACHINES = {3: "EM_386", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}
_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")    # Elf64_Ehdr, 64 bytes
_EHDR_FIELDS = ("e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff",
                "e_shoff", "e_flags", "e_ehsize", "e_phentsize", "e_phnum",
                "e_shentsize", "e_shnum", "e_shstrndx")
_PHDR = struct.Struct("<IIQQQQQQ")            # Elf64_Phdr, 56 bytes
_PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz",
                "p_memsz", "p_align")
_XEN_NOTE_NAME = b"Xen"
# One note header: namesz, descsz, type -- three 32-bit words in ELF64 too.
_NOTE_HEADER = struct.Struct("<III")


class LoadError(Exception):
    """One line naming the problem; the CLI prints it and exits 2."""


class CmdlineTooLong(LoadError):
    """The command line does not fit the boot page (length, room in bytes)."""

    def __init__(self, length, room):
        super().__init__(f"cmdline is {length} bytes; the boot page has room for {room}")
        self.length, self.room = length, room


# Immutable records (namedtuple: dataclasses would cost ~5 ms of imports).
#: One PT_LOAD: `data` (a read-only view into the image) goes to `gpa`, zero
#: fill up to `memsz`.
Segment = namedtuple("Segment", "gpa data memsz")

#: What the parent needs to start a guest:
#:   entry           32-bit PVH entry (the Xen note HV_PVH_NOTE_ENTRY)
#:   segments        tuple of Segment, sorted by gpa, disjoint
#:   boot_gpa        where boot_blob goes in guest memory
#:   boot_blob       start_info + memmap entries + NUL-terminated cmdline
#:   start_info_gpa  == boot_gpa; the guest gets it in EBX
#:   reserved        ((gpa, length), ...) ranges hv keeps for itself
#:   modules         tuple of Segment: the initrd (PVH module 0), if any
#:   acpi            Segment: the ACPI tables (hv/acpi.py) in hv's ACPI page
#:   firmware        tuple of Segment written before the kernel: the reset stub
BootImage = namedtuple("BootImage", "entry segments boot_gpa boot_blob start_info_gpa reserved "
                                    "modules acpi firmware")

# T:207 The real-mode reset vector (f000:fff0).  A kernel that reboots "through
# the BIOS" (Linux's last resort, and its default without reboot=acpi) jumps
# there in real mode; hv has no BIOS, so the vector holds what a BIOS would do
# for a reset: write the ACPI reset register.  It lies in the guest's own RAM
# below 1 MiB, which Linux never allocates; a kernel segment there wins.
#   mov al, HV_ACPI_RESET_VALUE; mov dx, HV_ACPI_RESET_PORT; out dx, al; hlt; jmp $-1


def _reset_stub(lib):
    code = (bytes([0xb0, lib.HV_ACPI_RESET_VALUE, 0xba]) + lib.HV_ACPI_RESET_PORT.to_bytes(2, "little")
            + bytes([0xee, 0xf4, 0xeb, 0xfd]))
    return Segment(gpa=lib.HV_RESET_VECTOR, data=code, memsz=len(code))

# The PVH entry runs in 32-bit mode: start_info and modules lie below 4 GiB.
_LOW_LIMIT = 1 << 32


def load_pvh(source, mem_size: int, cmdline: str = "", initrd=None,
             virtio_slots: int = 0) -> BootImage:
    """Load and validate a PVH ELF from a path or bytes for a guest of
    mem_size bytes of RAM, with an optional initial RAM disk (path or
    bytes); raise LoadError naming the first problem."""
    # The ELF parser and the compiled ABI are imported here, not at module
    # import: `import hv.loader` stays cheap for commands that never boot.
    from hv.abi import ffi, lib

    # T:200 Loading a guest.  hv boots a guest the way QEMU boots a PVH
    # kernel: an ELF64 executable whose PT_LOAD segments go to their physical
    # addresses, a "Xen" note naming the 32-bit entry point, and a start_info
    # struct (memory map, command line) whose address arrives in EBX.  Every
    # step below validates; nothing is written to guest memory here.
    _check_mem_size(mem_size, lib.HV_PAGE_SIZE)
    image = _read_image(source)
    phdrs = _parse_elf(image)
    segments = _load_segments(image, phdrs, mem_size)
    entry = _find_entry(image, phdrs, lib.HV_PVH_NOTE_ENTRY)
    _check_entry(entry, phdrs)
    modules = _place_initrd(initrd, segments, mem_size, lib.HV_PAGE_SIZE)
    boot_blob = _boot_blob(ffi, lib, mem_size, cmdline, modules)
    from hv import acpi
    tables = acpi.tables(lib, lib.HV_ACPI_GPA, virtio_slots)
    return BootImage(entry=entry, segments=segments, boot_gpa=lib.HV_BOOT_PAGE_GPA,
                     boot_blob=boot_blob, start_info_gpa=lib.HV_BOOT_PAGE_GPA,
                     reserved=((0, lib.HV_RESERVED_END),), modules=modules,
                     acpi=Segment(gpa=lib.HV_ACPI_GPA, data=tables, memsz=len(tables)),
                     firmware=(_reset_stub(lib),))


def with_cmdline(image, mem_size, cmdline):
    """The same image with another command line (LoadError if it does not
    fit): the parent completes a command line once the partition has an id
    (hv up's channels name their peers' ids)."""
    from hv.abi import ffi, lib
    return image._replace(boot_blob=_boot_blob(ffi, lib, mem_size, cmdline, image.modules))


def _check_mem_size(mem_size, page_size):
    from hv.abi import lib
    # bool is an int subclass; True bytes of RAM is a caller bug, not a size.
    if not isinstance(mem_size, int) or isinstance(mem_size, bool):
        raise LoadError(f"mem_size must be an integer, not {type(mem_size).__name__}")
    if mem_size <= 0 or mem_size % page_size:
        raise LoadError(f"mem_size {mem_size:#x} is not a positive multiple of {page_size} bytes")
    if mem_size < lib.HV_MEM_MIN:
        raise LoadError(f"mem_size {mem_size:#x} is below the {lib.HV_MEM_MIN >> 20} MiB minimum")
    if mem_size > lib.HV_MEM_MAX:
        raise LoadError(f"mem_size {mem_size:#x} is above hv's {lib.HV_MEM_MAX >> 40} TiB limit")


def _read_image(source, what="source"):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    # Not open() on anything: an int would be taken as a file descriptor.
    if not isinstance(source, (str, os.PathLike)):
        raise LoadError(f"{what} must be a path or bytes, not {type(source).__name__}")
    path = os.fspath(source)
    try:
        # A device or FIFO given as the kernel (/dev/zero, a pipe) would read
        # forever or block: only regular files, and only up to a bound.
        size = os.stat(path).st_size
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise LoadError(f"cannot read {path}: not a regular file")
        if size > MAX_IMAGE_SIZE:
            raise LoadError(f"{path} is larger than {MAX_IMAGE_SIZE >> 20} MiB")
        with open(path, "rb") as f:
            # Bounded even if the file grows meanwhile; sized to the file so
            # no 1 GiB buffer is allocated for a 5 KiB kernel.
            image = f.read(size + 1)
    except OSError as e:
        raise LoadError(f"cannot read {path}: {e.strerror}") from None
    if len(image) > size:
        raise LoadError(f"{path} changed while it was read")
    return image


# T:201 Parse the ELF header and program headers: two fixed records.  The
# identification bytes are checked first so the common mistakes (not an
# ELF, a 32-bit or big-endian build) get a precise message.
def _parse_elf(image):
    """Return the program headers as a list of dicts, checked for shape."""
    if image[:4] != _ELF_MAGIC:
        raise LoadError("not an ELF file (bad magic)")
    if len(image) < 6:
        raise LoadError("truncated ELF header")
    if image[4] != _ELFCLASS64:
        raise LoadError(f"wrong ELF class {image[4]} (need ELFCLASS64)")
    if image[5] != _ELFDATA2LSB:
        raise LoadError(f"wrong ELF byte order {image[5]} (need little-endian)")
    if len(image) < _EHDR.size:
        raise LoadError("truncated ELF header")
    header = dict(zip(_EHDR_FIELDS, _EHDR.unpack_from(image)))
    if header["e_type"] != _ET_EXEC:
        name = _TYPES.get(header["e_type"], header["e_type"])
        raise LoadError(f"wrong ELF type {name} (need ET_EXEC)")
    if header["e_machine"] != _EM_X86_64:
        name = _MACHINES.get(header["e_machine"], header["e_machine"])
        raise LoadError(f"wrong ELF machine {name} (need EM_X86_64)")
    # The table's shape is checked here so that a table running past the end
    # of the file is a clean error; extended numbering (PN_XNUM) would send us
    # to section headers a PVH kernel has no need for.
    count, table = header["e_phnum"], header["e_phoff"]
    if count == 0:
        raise LoadError("no program headers")
    if count == 0xffff:
        raise LoadError("extended program header numbering is not supported")
    if header["e_phentsize"] != _PHDR.size:
        raise LoadError(f"bad e_phentsize {header['e_phentsize']} (need {_PHDR.size})")
    if table + count * _PHDR.size > len(image):
        raise LoadError("program header table beyond end of file")
    return [dict(zip(_PHDR_FIELDS, _PHDR.unpack_from(image, at)))
            for at in range(table, table + count * _PHDR.size, _PHDR.size)]


# T:202 PT_LOAD segments become Segments at their physical address (p_paddr,
# as PVH and QEMU use it).  Each must lie in RAM above hv's reserved pages and
# apart from every other segment: copying one must never overwrite another
# or the boot page.
def _load_segments(image, phdrs, mem_size):
    from hv.abi import lib
    # Views, not copies: a distribution kernel is a 65 MB ELF.
    view = memoryview(image)
    segments = []
    for i, ph in enumerate(phdrs):
        if ph["p_type"] != _PT_LOAD:
            continue
        off, filesz, memsz, gpa = ph["p_offset"], ph["p_filesz"], ph["p_memsz"], ph["p_paddr"]
        if off + filesz > len(image):
            raise LoadError(f"segment {i}: file range [{off:#x}, {off + filesz:#x}) "
                            f"beyond end of file ({len(image):#x} bytes)")
        if filesz > memsz:
            raise LoadError(f"segment {i}: filesz {filesz:#x} > memsz {memsz:#x}")
        if memsz == 0:
            continue    # loads nothing; an empty range cannot overlap anything
        end = gpa + memsz
        if end > 1 << 64:
            raise LoadError(f"segment {i}: gpa {gpa:#x} + memsz {memsz:#x} overflows 64 bits")
        if end > mem_size:
            raise LoadError(f"segment {i}: [{gpa:#x}, {end:#x}) outside RAM [0, {mem_size:#x})")
        if gpa < lib.HV_RESERVED_END:
            raise LoadError(f"segment {i}: [{gpa:#x}, {end:#x}) overlaps hv's reserved "
                            f"range [0, {lib.HV_RESERVED_END:#x})")
        segments.append((gpa, end, i, view[off:off + filesz]))
    if not segments:
        raise LoadError("no PT_LOAD segment")
    segments.sort()
    for (_, prev_end, prev_i, _), (gpa, _, i, _) in zip(segments, segments[1:]):
        if gpa < prev_end:
            raise LoadError(f"segment {i} overlaps segment {prev_i}")
    return tuple(Segment(gpa=gpa, data=data, memsz=end - gpa)
                 for gpa, end, _, data in segments)


# T:203 The entry point is not e_entry (that is the 64-bit virtual entry of a
# Linux-style kernel) but the XEN_ELFNOTE_PHYS32_ENTRY note: the 32-bit
# physical address hv starts the vCPU at.  Notes are parsed by hand with
# 4-byte padding (gABI "Note Section", as readelf and Xen's libelf read them)
# so every length is checked against the segment before it is used.
def _find_entry(image, phdrs, note_type):
    entries = []
    for i, ph in enumerate(phdrs):
        if ph["p_type"] != _PT_NOTE:
            continue
        off, size = ph["p_offset"], ph["p_filesz"]
        if off + size > len(image):
            raise LoadError(f"note segment {i} beyond end of file")
        notes = image[off:off + size]
        pos = 0
        # Trailing bytes shorter than a note header are padding to p_align.
        while pos + _NOTE_HEADER.size <= size:
            note_at = off + pos
            namesz, descsz, ntype = _NOTE_HEADER.unpack_from(notes, pos)
            name_at = pos + _NOTE_HEADER.size
            desc_at = name_at + _align4(namesz)
            pos = desc_at + _align4(descsz)
            if pos > size:
                raise LoadError(f"note segment {i}: truncated note at file offset {note_at:#x}")
            name = notes[name_at:name_at + namesz].rstrip(b"\0")
            if name == _XEN_NOTE_NAME and ntype == note_type:
                entries.append(notes[desc_at:desc_at + descsz])
    if not entries:
        raise LoadError(f"no PVH entry note (Xen note type {note_type})")
    if len(entries) > 1:
        raise LoadError("more than one PVH entry note")
    desc = entries[0]
    # 4 bytes is what the PVH spec writes; Linux x86-64 emits 8 (_ASM_PTR)
    # and Xen's libelf reads both, so hv does too.
    if len(desc) not in (4, 8):
        raise LoadError(f"PVH entry note has {len(desc)} bytes (need 4 or 8)")
    entry = int.from_bytes(desc, "little")
    if entry >> 32:
        raise LoadError(f"PVH entry {entry:#x} is above 4 GiB (it runs in 32-bit mode)")
    return entry


def _align4(n):
    return (n + 3) & ~3


def _check_entry(entry, phdrs):
    # The first instruction must be bytes from the file in an executable
    # segment: zero fill is not code, and a non-executable segment means the
    # note and the link map disagree.
    for ph in phdrs:
        if (ph["p_type"] == _PT_LOAD and ph["p_flags"] & _PF_X
                and ph["p_paddr"] <= entry < ph["p_paddr"] + ph["p_filesz"]):
            return
    raise LoadError(f"PVH entry {entry:#x} is not inside a loaded executable segment")


# T:204 The initial RAM disk is PVH module 0.  Like QEMU, hv puts it at the
# top of RAM below 4 GiB (the entry runs in 32-bit mode), page-aligned, and
# it must clear the kernel's last segment: Linux reserves the range it is
# told about and unpacks it after the kernel is up.
def _place_initrd(initrd, segments, mem_size, page_size):
    if initrd is None:
        return ()
    data = _read_image(initrd, "initrd")
    if not data:
        raise LoadError("initrd is empty")
    top = min(mem_size, _LOW_LIMIT) // page_size * page_size
    gpa = (top - len(data)) // page_size * page_size
    kernel_end = _align_up(max(s.gpa + s.memsz for s in segments), page_size)
    if gpa < kernel_end:
        raise LoadError(f"initrd of {len(data)} bytes does not fit in RAM between the kernel's "
                        f"end {kernel_end:#x} and {top:#x} (give the guest more memory)")
    return (Segment(gpa=gpa, data=memoryview(data), memsz=len(data)),)


# T:205 The boot page: start_info (version 1, so the memmap fields count),
# then the memory map, the module list, then the command line.  Layout and
# values come from abi.h through cffi; the page is built in host memory and
# copied in whole.
def _boot_blob(ffi, lib, mem_size, cmdline, modules=()):
    if not isinstance(cmdline, str):
        raise LoadError(f"cmdline must be a str, not {type(cmdline).__name__}")
    try:
        cmd = cmdline.encode("utf-8")
    except UnicodeEncodeError:
        raise LoadError("cmdline is not valid Unicode (lone surrogate)") from None
    if b"\0" in cmd:
        raise LoadError("cmdline contains a NUL byte")

    info_size = ffi.sizeof("struct hv_pvh_start_info")
    map_at = _align_up(info_size, ffi.alignof("struct hv_pvh_memmap_entry"))
    memmap = ffi.new("struct hv_pvh_memmap_entry[2]")
    reserved_end = lib.HV_RESERVED_END
    memmap[0].addr, memmap[0].size, memmap[0].type = 0, reserved_end, lib.HV_E820_RESERVED
    memmap[1].addr, memmap[1].size, memmap[1].type = (
        reserved_end, mem_size - reserved_end, lib.HV_E820_RAM)
    mods_at = _align_up(map_at + ffi.sizeof(memmap), ffi.alignof("struct hv_pvh_modlist_entry"))
    modlist = ffi.new("struct hv_pvh_modlist_entry[]", len(modules))
    for entry, module in zip(modlist, modules):
        entry.paddr, entry.size = module.gpa, module.memsz
    cmd_at = mods_at + ffi.sizeof(modlist)
    # The string always exists (empty if none) so a guest can print it
    # without a null check, as under QEMU.
    room = lib.HV_PAGE_SIZE - cmd_at - 1
    if len(cmd) > room:
        raise CmdlineTooLong(len(cmd), room)

    info = ffi.new("struct hv_pvh_start_info *")
    info.magic = lib.HV_PVH_START_MAGIC
    info.version = 1
    info.memmap_paddr = lib.HV_BOOT_PAGE_GPA + map_at
    info.memmap_entries = len(memmap)
    info.cmdline_paddr = lib.HV_BOOT_PAGE_GPA + cmd_at
    info.rsdp_paddr = lib.HV_ACPI_GPA          # hv/acpi.py: the RSDP opens the page
    if modules:
        info.nr_modules = len(modules)
        info.modlist_paddr = lib.HV_BOOT_PAGE_GPA + mods_at
    return b"".join((bytes(ffi.buffer(info)), bytes(map_at - info_size),
                     bytes(ffi.buffer(memmap)), bytes(mods_at - map_at - ffi.sizeof(memmap)),
                     bytes(ffi.buffer(modlist)), cmd, b"\0"))


def _align_up(n, align):
    return (n + align - 1) // align * align
