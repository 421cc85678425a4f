"""hv.testing's own checks: the Python model of the ABI agrees with the C
dispatcher call by call; the page-table builder builds what the walker
reads; guest pointers are of the kind they claim to be.

The model is an oracle users extend, so it is held to the real dispatcher
here, on programs of random calls over RAM with hv-reserved frames, with
paging off and through page tables built by hv.testing.pagetables.
"""
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv.abi import ffi, lib
from hv.testing.core import Core
from hv.testing.isolate import run_isolated
from hv.testing.model import ENTRY, AbiModel, GuestMemory
from hv.testing.pagetables import P, PageTables, identity_map
from hv.testing.strategies import (ANY, POINTER_KINDS, AddressSpace, argument_words, call,
                                   guest_pointers, hypercall_numbers, resolve, unknown_hypercalls)

MEM = 1 << 20
RESERVED = [(0, 0x1000), (0x9000, 0x1000)]      # page 0 (the harness's) and one more
TABLES = 0xc0000                                # page tables live here
# Symbols for this RAM: buffers, hv's page, past RAM, non-canonical.
SYMS = {"buf": 0x4000, "evp": 0x6000, "mc": 0x7000, "si": 0x9000, "bad": 0x200000,
        "nc": 0x800000000000, "end": MEM}
SPACE = AddressSpace(valid={"buf": 0x2000, "evp": 0x1000, "mc": 0x1000}, foreign=("si",),
                     unmapped=("bad",), noncanonical=("nc",), ram_end="end")


def pointers(size, align=1):
    return guest_pointers(POINTER_KINDS, size=size, align=align, space=SPACE)


# One call of each kind, its pointers drawn from SPACE.
CALLS = st.one_of(
    call(hypercall_numbers(), ANY, ANY, ANY, ANY, ANY),
    call(lib.HV_HC_CONSOLE_WRITE, pointers(16), st.integers(0, 40)),
    call(lib.HV_HC_EVENT_REGISTER, st.one_of(pointers(4096, 4096), ANY),
         st.one_of(st.integers(0, 300), st.sampled_from([31, 32, 255, 256]))),
    call(lib.HV_HC_EVENT_RAISE, st.one_of(st.integers(0, 520), st.sampled_from([0, 63, 64, 511, 512]))),
    call(lib.HV_HC_SET_TIMER, ANY),
    call(lib.HV_HC_BLOCK),
    call(lib.HV_HC_MULTICALL, pointers(3 * ENTRY.size, 8), st.integers(0, 3)),
    call(unknown_hypercalls(), ANY),
)
ENTRIES = st.lists(st.tuples(st.sampled_from([lib.HV_HC_VERSION, lib.HV_HC_CONSOLE_WRITE,
                                              lib.HV_HC_EVENT_RAISE, lib.HV_HC_MULTICALL,
                                              lib.HV_HC_BLOCK, lib.HV_HC_FEATURES, 99]),
                             argument_words(5)), max_size=3)


def play_parent(core, nr, result, kind):
    """Finish what the dispatcher handed to the parent, as the parent would."""
    while kind is not None:
        if kind == lib.HV_EXIT_SHUTDOWN:
            return None
        assert kind == lib.HV_EXIT_HYPERCALL and core.exit.nr == lib.HV_HC_CONSOLE_WRITE
        core.complete(core.exit.data_len)
        if nr != lib.HV_HC_MULTICALL:
            lib.hv_vcpu_get_regs(core.v, core.regs)
            return int(ffi.cast("int64_t", core.regs.rax))
        result, kind = core.resume()
    return result


def check_program(paging, entries, calls):
    with Core(MEM) as core:
        lib.hv_partition_reserve(core.p, 0x9000, 0x1000)
        cr3 = None
        if paging:
            # 2 MiB pages over RAM, except 4 KiB ones for the first 2 MiB,
            # and one page (0x5000: the second half of buf) read-only.
            tables = identity_map(core.ram, TABLES, MEM)
            tables.map(0x5000, 0x5000, 0x1000, flags=P)
            cr3 = tables.cr3
            core.set_paging(cr3)
        for i, (op, args) in enumerate(entries):
            struct.pack_into("<Q5Qq", core.ram, SYMS["mc"] + i * ENTRY.size, op, *args, 0)
        model_ram = bytearray(core.ram)
        model = AbiModel(GuestMemory(model_ram, RESERVED, cr3=cr3),
                         partition_id=lib.hv_partition_id(core.p))
        for i, (nr, args) in enumerate(calls):
            values = tuple(resolve(a, SYMS) for a in args)
            if nr == lib.HV_HC_SHUTDOWN and values[0] in (0, 1) and values[1] <= 255:
                values = (7,) + values[1:]              # keep the program going
            result = play_parent(core, nr, *core.call(nr, *values))
            want = model.call(nr, *values)
            if nr != lib.HV_HC_CLOCK_READ:
                assert result == want, f"call {i} {nr}{values}: C {result}, model {want}"
            assert bytes(core.ram) == bytes(model_ram), f"RAM differs after call {i} {nr}{values}"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(paging=st.booleans(), entries=ENTRIES, calls=st.lists(CALLS, min_size=1, max_size=10))
def _property_model_is_the_dispatcher(paging, entries, calls):
    check_program(paging, entries, calls)


def test_model_agrees_with_the_dispatcher():
    run_isolated(_property_model_is_the_dispatcher)


def test_model_console_and_shutdown():
    ram = bytearray(MEM)
    ram[0x5000:0x5004] = b"abcd"
    m = AbiModel(GuestMemory(ram, RESERVED))
    assert m.call(lib.HV_HC_CONSOLE_WRITE, 0x5000, 4) == 4 and m.console == b"abcd"
    assert m.call(lib.HV_HC_CONSOLE_WRITE, 0x9000, 4) == -lib.HV_EFAULT     # hv's frame
    assert m.call(lib.HV_HC_SHUTDOWN, 0, 3) is None and m.shutdown == (0, 3)


def test_a_user_extends_the_model():
    class WithAnswer(AbiModel):
        def hc_answer(self, args):
            return 42 if args[0] == 0 else -lib.HV_EINVAL
        HYPERCALLS = {**AbiModel.HYPERCALLS, 200: hc_answer}

    m = WithAnswer(GuestMemory(bytearray(MEM)))
    assert (m.call(200), m.call(200, 1)) == (42, -lib.HV_EINVAL)
    assert AbiModel(GuestMemory(bytearray(MEM))).call(200) == -lib.HV_ENOSYS
    assert m.call(lib.HV_HC_VERSION) == (lib.HV_ABI_VERSION_MAJOR << 16) | lib.HV_ABI_VERSION_MINOR


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(POINTER_KINDS), data=st.data())
def test_pointers_are_of_their_kind(kind, data):
    """Each kind, resolved and read through the model's memory, behaves as
    its name says (unaligned: not a multiple of the alignment)."""
    size, align = 16, 8
    ref = data.draw(guest_pointers([kind], size=size, align=align, space=SPACE))
    assert ref.kind == kind
    gva = resolve(ref, SYMS)
    mem = GuestMemory(bytearray(MEM), RESERVED)
    readable = mem.read(gva, size) is not None
    if kind in ("valid", "unaligned"):
        assert readable and (gva % align != 0) == (kind == "unaligned")
    elif kind == "straddling":
        assert gva // 4096 != (gva + size - 1) // 4096
    else:
        assert not readable, (ref, hex(gva))


def test_page_table_builder_maps_what_the_c_walker_walks():
    with Core(MEM) as core:
        tables = PageTables(core.ram, TABLES)
        tables.map(0x7f0000000000, 0x200000 - 0x2000, 0x2000)     # 4 KiB pages
        tables.map(0x40000000, 0, 0x200000)                       # one 2 MiB page
        tables.map(0x1000, 0x1000, 0x1000, flags=P)               # read-only
        gpa = ffi.new("uint64_t *")
        for gva, access, want in [(0x7f0000001234, 0, 0x1ff234), (0x40000000 + 0x12345, 0, 0x12345),
                                  (0x1008, 0, 0x1008), (0x1008, 1, None), (0x2000, 0, None)]:
            err = lib.hv_test_walk(core.p, tables.cr3, gva, access, 2, gpa)  # 2: CR0.WP
            assert (None if err else gpa[0]) == want, hex(gva)
            assert tables.translate(gva, access, flags=2) == want
        tables.unmap(0x40000000)
        assert tables.translate(0x40000000) is None
        with pytest.raises(ValueError):
            tables.map(0x1001, 0, 0x1000)
