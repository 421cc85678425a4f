"""What a user of hv.testing writes: properties of hypercalls, checked on
the C dispatcher (no guest), against the reference model, and on a real
guest through the replay harness."""
from hypothesis import given, settings
from hypothesis import strategies as st

from hv.abi import lib
from hv.testing.core import Core
from hv.testing.isolate import isolated
from hv.testing.model import AbiModel, GuestMemory
from hv.testing.replay import run_program
from hv.testing.strategies import (POINTER_KINDS, AddressSpace, argument_words, guest_pointers,
                                   programs, resolve, unknown_hypercalls)

MEM = 1 << 20
# My layout: a 4 KiB buffer at 0x5000, hv's page at 0 (Core reserves it).
SYMBOLS = {"buf": 0x5000, "hv": 0, "gone": 0x40000000, "weird": 1 << 47, "end": MEM}
SPACE = AddressSpace(valid={"buf": 0x1000}, foreign=("hv",), unmapped=("gone",),
                     noncanonical=("weird",), ram_end="end")


@given(nr=unknown_hypercalls(), args=argument_words(5))
def test_unknown_numbers_are_enosys(nr, args):
    with Core(MEM) as core:
        assert core.call(nr, *args) == (-lib.HV_ENOSYS, None)


@settings(max_examples=50)
@given(buf=guest_pointers(POINTER_KINDS, size=16, space=SPACE), length=st.integers(0, 16))
def test_console_write_agrees_with_the_model(buf, length):
    gva = resolve(buf, SYMBOLS)
    with Core(MEM) as core:
        model = AbiModel(GuestMemory(bytearray(core.ram), reserved=[(0, 0x1000)]))
        result, to_parent = core.call(lib.HV_HC_CONSOLE_WRITE, gva, length)
        if to_parent:                       # the parent writes the bytes: length is the result
            result = core.exit.data_len
            core.complete(result)
        assert result == model.call(lib.HV_HC_CONSOLE_WRITE, gva, length), buf.kind
        if buf.kind in ("valid", "unaligned") or length == 0:
            assert result == length


@settings(max_examples=5, deadline=None)
@given(programs(max_calls=6, max_entries=3))
def test_programs_on_a_real_guest(program):
    isolated(run_program, program)
