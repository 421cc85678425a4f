"""The C page-table walker against the Python reference (hv.testing.pagetables)
on random page tables, and copy_from_guest through real tables."""
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_isolated
from hv.abi import ffi, lib
from hv.testing import pagetables as model
from hv.testing.core import Core

MEM = 2 << 20
FRAMES = MEM // 4096
TABLE_FRAMES = list(range(16, 48))   # tables live here; other frames are data

flag_bits = st.sets(st.sampled_from([model.P, model.RW, model.US, model.PS, model.NX])).map(sum)
# A target frame: usually another table frame, sometimes data, sometimes past RAM.
targets = st.one_of(st.sampled_from(TABLE_FRAMES), st.integers(0, FRAMES - 1),
                    st.integers(FRAMES, FRAMES + 1000))
entries = st.tuples(st.sampled_from(TABLE_FRAMES), st.integers(0, 511), targets, flag_bits,
                    st.integers(0, 7))   # table, index, target frame, flags, extra low bits


@st.composite
def scenarios(draw):
    """Page tables built along random walk paths (so most walks go deep),
    then random noise entries on top."""
    cr3_frame = draw(st.sampled_from(TABLE_FRAMES))
    entries_at = {}                                    # (table frame, index) -> entry
    walks = []
    for _ in range(draw(st.integers(1, 12))):
        gva = draw(st.integers(0, (1 << 48) - 1))
        if gva >> 47:
            gva |= 0xFFFF << 48                        # canonical
        table = cr3_frame
        for level in (4, 3, 2, 1):
            index = (gva >> (12 + 9 * (level - 1))) & 511
            entry = entries_at.get((table, index))
            if entry is None:
                flags = model.P | model.RW | model.US
                for bit in (model.P, model.RW, model.US):
                    if draw(st.integers(0, 15)) == 0:
                        flags &= ~bit
                if draw(st.integers(0, 7)) == 0:
                    flags |= model.NX
                large = level in (2, 3) and draw(st.integers(0, 3)) == 0
                if large:
                    flags |= model.PS
                target = draw(targets) if (large or level == 1) else draw(st.sampled_from(TABLE_FRAMES))
                entry = ((target << 12) & model.ADDR) | flags
                entries_at[(table, index)] = entry
            if not entry & model.P or (entry & model.PS and level in (2, 3)) or level == 1:
                break
            table = (entry & model.ADDR) >> 12
            if table >= FRAMES:
                break                                  # points past RAM: the walk faults there
        walks.append((gva, draw(st.integers(0, 7)), draw(st.integers(0, 3))))
    for table, index, target, flags, low in draw(st.lists(entries, max_size=20)):
        entries_at[(table, index)] = ((target << 12) & model.ADDR) | flags | (low << 3 & 0x18)
    for _ in range(draw(st.integers(0, 5))):           # non-canonical and random addresses
        walks.append((draw(st.integers(0, (1 << 64) - 1)), draw(st.integers(0, 7)), 0))
    return entries_at, cr3_frame, walks


def check(entries_at, cr3_frame, walks):
    core = Core(MEM)
    try:
        for (table, index), entry in entries_at.items():
            struct.pack_into("<Q", core.ram, table * 4096 + index * 8, entry)
        read = lambda gpa: struct.unpack_from("<Q", core.ram, gpa)[0]  # noqa: E731
        # The harness reserves page 0 for hv (the boot GDT): not the guest's.
        guest_ram = lambda gpa: 4096 <= gpa and gpa + 8 <= MEM  # noqa: E731
        gpa = ffi.new("uint64_t *")
        for gva, access, flags in walks:
            want = model.walk(read, guest_ram, cr3_frame << 12, gva, access, flags)
            err = lib.hv_test_walk(core.p, cr3_frame << 12, gva, access, flags, gpa)
            have = None if err else gpa[0]
            assert have == want, f"gva={gva:#x} access={access} flags={flags}: C {have} model {want}"
    finally:
        core.close()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(s=scenarios())
def _property_walk(s):
    check(*s)


def test_walker_matches_reference_model():
    run_isolated(_property_walk)


def build_identity_map(core, pml4=0x10000):
    """4 KiB pages for [0, 2 MiB): PML4 -> PDPT -> PD -> PT, all RW, supervisor."""
    pdpt, pd, pt = pml4 + 0x1000, pml4 + 0x2000, pml4 + 0x3000
    struct.pack_into("<Q", core.ram, pml4, pdpt | 3)
    struct.pack_into("<Q", core.ram, pdpt, pd | 3)
    struct.pack_into("<Q", core.ram, pd, pt | 3)
    for i in range(512):
        struct.pack_into("<Q", core.ram, pt + i * 8, (i << 12) | 3)
    return pml4, pt


def test_copy_from_guest_follows_page_tables():
    core = Core(MEM)
    try:
        pml4, pt = build_identity_map(core)
        core.set_paging(pml4)
        core.ram[0x30ffe:0x31002] = b"abcd"            # straddles a page boundary
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x30ffe, 4)[1] == lib.HV_EXIT_HYPERCALL
        assert bytes(core.exit.data[0:4]) == b"abcd"
        core.complete(4)
        struct.pack_into("<Q", core.ram, pt + 0x31 * 8, 0)   # unmap the second page
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x30ffe, 4) == (-lib.HV_EFAULT, None)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x30ffe, 2)[1] == lib.HV_EXIT_HYPERCALL
        core.complete(2)
        # Legacy 32-bit paging is not walked: every pointer faults.
        core.set_paging(pml4, efer=0)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x30ffe, 2) == (-lib.HV_EFAULT, None)
    finally:
        core.close()


def test_user_mode_caller_cannot_pass_supervisor_pages():
    core = Core(MEM)
    try:
        pml4, _ = build_identity_map(core)
        core.set_paging(pml4)
        s = ffi.new("struct hv_sregs *")
        lib.hv_vcpu_get_sregs(core.v, s)
        s.cs = 0x33                                     # CPL 3
        lib.hv_vcpu_set_sregs(core.v, s)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x30000, 4) == (-lib.HV_EFAULT, None)
    finally:
        core.close()
