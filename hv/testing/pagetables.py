"""Guest page tables: a builder that writes them into guest RAM, and the
reference model of the x86-64 4-level walk the C walker (csrc/pagewalk.c)
is tested against.  Intel SDM vol. 3, 4.5 (IA-32e paging) and 4.6 (access
rights).

    tables = PageTables(ram, base=0x10000)          # tables are allocated from base up
    tables.map(0x400000, 0x200000, 0x200000)        # gva, gpa, size (4K/2M/1G pages as fits)
    tables.map(0x7000, 0x7000, 0x1000, flags=P)     # read-only, supervisor
    core.set_paging(tables.cr3)
    walk(tables.read_qword, lambda gpa: True, tables.cr3, 0x400123, access=0, flags=0)
"""
import struct

P, RW, US, PS, NX = 1 << 0, 1 << 1, 1 << 2, 1 << 7, 1 << 63
ADDR = 0x000FFFFFFFFFF000
WRITE, USER, FETCH = 1, 2, 4          # access bits, as hv_test_walk takes them
NXE, WP = 1, 2                        # paging flags
PAGE = 4096
_LEVEL_SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}


def walk(read_qword, is_guest_ram, cr3, gva, access, flags):
    """Return the guest-physical address, or None for a fault.
    read_qword(gpa) reads 8 bytes of guest RAM; is_guest_ram(gpa) says whether
    hv lets the walk read a table entry there (RAM the partition owns)."""
    if (gva >> 47) not in (0, 0x1FFFF):
        return None                                   # non-canonical
    table, writable, user, executable = cr3 & ADDR, True, True, True
    for level in (4, 3, 2, 1):
        shift = 12 + 9 * (level - 1)
        at = table + ((gva >> shift) & 511) * 8
        if not is_guest_ram(at):
            return None
        entry = read_qword(at)
        if not entry & P:
            return None
        writable &= bool(entry & RW)
        user &= bool(entry & US)
        if flags & NXE and entry & NX:
            executable = False
        if level == 4 and entry & PS:
            return None                               # reserved bit
        if level == 1 or (entry & PS and level in (2, 3)):
            if access & USER and not user:
                return None
            if access & WRITE and not writable and (access & USER or flags & WP):
                return None
            if access & FETCH and not executable:
                return None
            size = 1 << shift
            return (entry & ADDR & ~(size - 1)) + (gva & (size - 1))
        table = entry & ADDR


def canonical(gva):
    """Is gva in canonical form (bits 63:47 all equal)?"""
    return (gva >> 47) in (0, 0x1FFFF)


class PageTables:
    """Builds 4-level page tables in `ram` (a writable buffer of guest RAM).

    Table pages are taken from `base` upwards (zeroed as they are taken);
    the PML4 is the first.  map() uses the largest page size that fits the
    alignment of gva, gpa and the remaining length, unless `largest` is
    smaller.  Intermediate entries get P|RW|US, so a leaf's flags decide."""

    def __init__(self, ram, base, limit=None):
        self.ram = ram
        self.next = base
        self.limit = limit if limit is not None else len(ram)
        self.cr3 = self._new_table()

    def _new_table(self):
        at = self.next
        if at + PAGE > self.limit:
            raise ValueError(f"no room for another page table at {at:#x}")
        self.ram[at:at + PAGE] = bytes(PAGE)
        self.next += PAGE
        return at

    def read_qword(self, gpa):
        return struct.unpack_from("<Q", self.ram, gpa)[0]

    def _entry(self, table, index, value=None):
        if value is not None:
            struct.pack_into("<Q", self.ram, table + index * 8, value)
        return self.read_qword(table + index * 8)

    def map(self, gva, gpa, size, flags=P | RW, largest=1 << 30):
        """Map [gva, gva+size) to [gpa, gpa+size); all three page aligned."""
        if gva % PAGE or gpa % PAGE or size % PAGE:
            raise ValueError("gva, gpa and size must be page aligned")
        while size:
            for level, page in ((3, 1 << 30), (2, 1 << 21), (1, PAGE)):
                if page <= largest and gva % page == 0 and gpa % page == 0 and size >= page:
                    break
            self._set_leaf(gva, level, gpa | flags | (PS if level > 1 else 0))
            gva, gpa, size = gva + page, gpa + page, size - page
        return self

    def unmap(self, gva):
        """Clear the leaf entry that maps gva (any page size)."""
        table = self.cr3
        for level in (4, 3, 2, 1):
            index = (gva >> _LEVEL_SHIFT[level]) & 511
            entry = self._entry(table, index)
            if not entry & P:
                return
            if level == 1 or entry & PS:
                self._entry(table, index, 0)
                return
            table = entry & ADDR

    def _set_leaf(self, gva, leaf_level, value):
        table = self.cr3
        for level in (4, 3, 2, 1):
            index = (gva >> _LEVEL_SHIFT[level]) & 511
            if level == leaf_level:
                self._entry(table, index, value)
                return
            entry = self._entry(table, index)
            if not entry & P or entry & PS:
                entry = self._new_table() | P | RW | US
                self._entry(table, index, entry)
            table = entry & ADDR

    def translate(self, gva, access=0, flags=0, is_guest_ram=None):
        """The reference walk over these tables (None = a fault)."""
        ok = is_guest_ram or (lambda gpa: 0 <= gpa and gpa + 8 <= len(self.ram))
        return walk(self.read_qword, ok, self.cr3, gva, access, flags)


def identity_map(ram, base, size, flags=P | RW, largest=PAGE):
    """PageTables at base mapping [0, size) to itself, 4 KiB pages by default."""
    return PageTables(ram, base).map(0, 0, size, flags, largest)
