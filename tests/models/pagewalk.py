"""Reference model: the x86-64 4-level page walk, as short as it can be.

The C walker (csrc/pagewalk.c) is tested against this on random page tables.
Intel SDM vol. 3, 4.5 (IA-32e paging) and 4.6 (access rights).
"""
P, RW, US, PS, NX = 1 << 0, 1 << 1, 1 << 2, 1 << 7, 1 << 63
ADDR = 0x000FFFFFFFFFF000
WRITE, USER, FETCH = 1, 2, 4          # access bits, as hv_test_walk takes them
NXE, WP = 1, 2                        # paging flags


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
