"""The C dispatcher, driven directly (no guest, no KVM needed).

Properties: any number and any arguments give either a result or a
documented error, never a crash; an error changes no hv state; a multicall
gives the same per-entry results as the same calls made one by one.
The Hypothesis runs execute in a forked child (run_isolated): a crash in the
C core fails the test instead of ending the suite.
"""
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_isolated
from hv.testing.core import Core, documented_errors
from hv.abi import HYPERCALL_NAMES, lib

ERRORS = documented_errors()
MEM = 4 << 20
ENTRY = struct.Struct("<Q5Qq")           # struct hv_multicall_entry
assert ENTRY.size == 56

# Values that hit edges: zero, small, page-ish, near RAM's end, beyond it,
# non-canonical, all ones.
edge_values = st.sampled_from([0, 1, 5, 31, 32, 255, 256, 4095, 4096, 0x5000, MEM - 8, MEM - 4096,
                               MEM, MEM + 4096, 1 << 47, 0xFFFF800000000000, (1 << 64) - 1])
words = st.one_of(edge_values, st.integers(0, MEM + 8192), st.integers(0, (1 << 64) - 1))
numbers = st.one_of(st.sampled_from(sorted(HYPERCALL_NAMES)), st.integers(0, 200),
                    st.integers(0, (1 << 64) - 1))


def finish_parent_call(core, kind):
    """Play the parent: finish what the core handed over; return the result."""
    if kind == lib.HV_EXIT_SHUTDOWN:
        core.complete(0)          # a real parent stops the partition instead
        return 0
    assert kind == lib.HV_EXIT_HYPERCALL
    assert core.exit.nr == lib.HV_HC_CONSOLE_WRITE
    n = core.exit.data_len
    assert 0 < n <= lib.HV_CONSOLE_WRITE_MAX
    core.complete(n)
    return n


def check_one_call(nr, args):
    core = Core(MEM)
    try:
        core.ram[0x5000:0x5010] = b"hello, console!\n"
        before = core.digest()
        result, kind = core.call(nr, *args)
        if kind is not None:                                  # went to the parent
            if kind == lib.HV_EXIT_HYPERCALL and nr == lib.HV_HC_CONSOLE_WRITE:
                buf, n = args[0], args[1]
                assert bytes(core.exit.data[0:n]) == bytes(core.ram[buf:buf + n])
            result = finish_parent_call(core, kind)
        if nr not in ERRORS:
            assert result == -lib.HV_ENOSYS, (nr, result)
        elif result < 0:
            assert result in ERRORS[nr], f"{HYPERCALL_NAMES[nr]}{args} -> undocumented {result}"
            assert core.digest() == before, "an error changed hv state"
    finally:
        core.close()


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(nr=numbers, args=st.lists(words, min_size=5, max_size=5))
def _property_any_call(nr, args):
    check_one_call(nr, args)


def test_any_hypercall_gives_a_documented_result():
    run_isolated(_property_any_call)


def test_every_hypercall_has_a_documented_error_list():
    assert set(ERRORS) == set(HYPERCALL_NAMES)


def test_known_answers():
    core = Core(MEM)
    try:
        assert core.call(lib.HV_HC_VERSION) == ((lib.HV_ABI_VERSION_MAJOR << 16) | lib.HV_ABI_VERSION_MINOR, None)
        assert core.call(lib.HV_HC_FEATURES, 1) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_COUNT) == (-lib.HV_ENOSYS, None)
        assert core.call(1 << 63) == (-lib.HV_ENOSYS, None)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x5000, lib.HV_CONSOLE_WRITE_MAX + 1) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, MEM - 2, 4) == (-lib.HV_EFAULT, None)
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x5000, 0) == (0, None)
        assert core.call(lib.HV_HC_BLOCK) == (-lib.HV_EPERM, None)       # nothing could wake it
        assert core.call(lib.HV_HC_EVENT_RAISE, 3) == (-lib.HV_EPERM, None)
        assert core.call(lib.HV_HC_EVENT_REGISTER, 0x6000, 31) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_EVENT_REGISTER, 0x6001, 40) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_EVENT_REGISTER, MEM, 40) == (-lib.HV_EFAULT, None)
        assert core.call(lib.HV_HC_EVENT_REGISTER, 0x6000, 40) == (0, None)
        assert core.call(lib.HV_HC_EVENT_RAISE, lib.HV_EVENTS_MAX) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_EVENT_RAISE, 70) == (0, None)
        pending = struct.unpack_from("<8Q", core.ram, 0x6000)
        assert pending[1] == 1 << 6 and core.ram[0x6000 + 128] == 1   # bit 70; upcall_pending
        assert core.call(lib.HV_HC_SHUTDOWN, 7, 0) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_SHUTDOWN, 0, 256) == (-lib.HV_EINVAL, None)
        assert core.call(lib.HV_HC_SHUTDOWN, 0, 3) == (None, lib.HV_EXIT_SHUTDOWN)
        assert (core.exit.reason, core.exit.code) == (0, 3)
    finally:
        core.close()


def test_reserved_frames_are_not_the_guests():
    core = Core(MEM)
    try:
        assert lib.hv_partition_reserve(core.p, 0, 0x2000) == 0
        assert lib.hv_partition_frame_owner(core.p, 0x1000) == 0
        assert lib.hv_partition_frame_owner(core.p, 0x2000) == lib.hv_partition_id(core.p)
        assert lib.hv_partition_frame_owner(core.p, MEM) == -1
        assert core.call(lib.HV_HC_CONSOLE_WRITE, 0x1ff0, 32) == (-lib.HV_EFAULT, None)
        assert core.call(lib.HV_HC_EVENT_REGISTER, 0x1000, 40) == (-lib.HV_EFAULT, None)
    finally:
        core.close()


# ---- multicall == the same calls one by one ----------------------------------

entry_ops = st.sampled_from([lib.HV_HC_VERSION, lib.HV_HC_FEATURES, lib.HV_HC_CONSOLE_WRITE,
                             lib.HV_HC_CLOCK_READ, lib.HV_HC_MULTICALL, lib.HV_HC_BLOCK,
                             lib.HV_HC_EVENT_REGISTER, lib.HV_HC_EVENT_RAISE, 63, 1 << 40])
entries = st.lists(st.tuples(entry_ops, st.lists(words, min_size=5, max_size=5)), max_size=12)


def run_single(core, op, args):
    if op in (lib.HV_HC_MULTICALL, lib.HV_HC_BLOCK):
        return -lib.HV_EOPNOTSUPP
    result, kind = core.call(op, *args)
    return finish_parent_call(core, kind) if kind is not None else result


def check_multicall(batch):
    table = 0x8000
    one, many = Core(MEM), Core(MEM)
    try:
        for core in (one, many):
            core.ram[0x5000:0x5010] = b"hello, console!\n"
        expected = []
        for op, args in batch:
            r = run_single(one, op, args)
            expected.append(r if op != lib.HV_HC_CLOCK_READ else None)
        for i, (op, args) in enumerate(batch):
            ENTRY.pack_into(many.ram, table + i * ENTRY.size, op, *args, 0x5A5A)
        result, kind = many.call(lib.HV_HC_MULTICALL, table, len(batch))
        while kind is not None:                 # entries the parent finishes
            finish_parent_call(many, kind)
            result, kind = many.resume()
        assert result == 0
        got = [ENTRY.unpack_from(many.ram, table + i * ENTRY.size)[6] for i in range(len(batch))]
        for i, (want, have) in enumerate(zip(expected, got)):
            if want is not None:
                assert have == want, f"entry {i} {batch[i][0]}: {have} != {want}"
        assert one.digest() == many.digest()
    finally:
        one.close()
        many.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=entries)
def _property_multicall(batch):
    check_multicall(batch)


def test_multicall_equals_calls_one_by_one():
    run_isolated(_property_multicall)


def test_multicall_bad_arrays():
    core = Core(MEM)
    try:
        before = core.digest()
        assert core.call(lib.HV_HC_MULTICALL, 0x8000, lib.HV_MULTICALL_MAX + 1) == (-lib.HV_E2BIG, None)
        assert core.call(lib.HV_HC_MULTICALL, MEM - 56, 2) == (-lib.HV_EFAULT, None)
        assert core.call(lib.HV_HC_MULTICALL, (1 << 64) - 56, 2) == (-lib.HV_EFAULT, None)
        assert core.digest() == before
        assert core.call(lib.HV_HC_MULTICALL, 0x8000, 0) == (0, None)
    finally:
        core.close()
