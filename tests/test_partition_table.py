"""The partition table (csrc/partition_table.c), driven directly.

A Hypothesis state machine creates, destroys, looks up and releases
partitions on the 'none' engine and checks the table against a dict:
a live id finds its own partition, a destroyed one is never found again
(even while a reference keeps its memory), ids are never reused, and the
count matches.  A held reference keeps the partition readable after destroy.
"""
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from hv.abi import ffi, lib

MEM = 1 << 20


def create():
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, MEM, pp) == 0
    return pp[0]


class PartitionTable(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.base = lib.hv_partition_count()    # other tests' partitions still alive
        self.live = {}                          # id -> pointer
        self.dead = set()                       # destroyed ids
        self.held = []                          # (id, pointer) references taken

    ids = Bundle("ids")

    @rule(target=ids)
    def create(self):
        p = create()
        pid = lib.hv_partition_id(p)
        assert pid not in self.live and pid not in self.dead      # never reused
        self.live[pid] = p
        return pid

    @rule(pid=ids)
    def destroy(self, pid):
        if pid in self.live:
            lib.hv_partition_destroy(self.live.pop(pid))
            self.dead.add(pid)

    @rule(pid=ids)
    def get(self, pid):
        p = lib.hv_partition_get(pid)
        if pid in self.live:
            assert p == self.live[pid]
            self.held.append((pid, p))
        else:
            assert p == ffi.NULL

    @rule(unknown=st.integers(0, 2**32 - 1))
    def get_unknown(self, unknown):
        if unknown not in self.live:
            assert lib.hv_partition_get(unknown) == ffi.NULL

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def put(self, data):
        pid, p = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        # Still readable while referenced, destroyed or not.
        assert lib.hv_partition_id(p) == pid
        assert lib.hv_partition_mem_size(p) == MEM
        lib.hv_partition_put(p)

    @invariant()
    def count_matches(self):
        assert lib.hv_partition_count() == self.base + len(self.live)

    def teardown(self):
        for _, p in self.held:
            lib.hv_partition_put(p)
        for p in self.live.values():
            lib.hv_partition_destroy(p)


TestPartitionTable = PartitionTable.TestCase
TestPartitionTable.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_table_grows_and_shrinks_past_many_partitions():
    """Enough partitions to make the table grow several times, with ids
    spread over several times its capacity so probe runs form; destroying
    half of them in a scattered order leaves the rest findable (the
    backward-shift deletion keeps every run unbroken)."""
    base = lib.hv_partition_count()
    rng = random.Random(7)
    kept = []
    for _ in range(3000):
        p = create()
        if rng.random() < 0.15:
            kept.append(p)
        else:
            lib.hv_partition_destroy(p)
    ids = [lib.hv_partition_id(p) for p in kept]
    order = list(range(len(kept)))
    rng.shuffle(order)
    gone, stay = order[::2], order[1::2]
    for i in gone:
        lib.hv_partition_destroy(kept[i])
    for i in stay:
        got = lib.hv_partition_get(ids[i])
        assert got == kept[i]
        lib.hv_partition_put(got)
    for i in gone:
        assert lib.hv_partition_get(ids[i]) == ffi.NULL
    assert lib.hv_partition_count() == base + len(stay)
    for i in stay:
        lib.hv_partition_destroy(kept[i])
    assert lib.hv_partition_count() == base


def _mapped(address):
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


def _ram_outlives_its_last_holder():
    p = create()
    hold = lib.hv_partition_hold_ram(p)         # the parent's views of RAM
    ram = lib.hv_partition_ram(p)
    address = int(ffi.cast("uintptr_t", ram))
    ram[0] = 0x5a
    peer = lib.hv_partition_get(lib.hv_partition_id(p))    # a peer mid grant copy
    lib.hv_partition_destroy(p)
    lib.hv_ram_release(hold)                    # the parent lets go first
    still = ram[0]                              # the peer's copy reads on
    mapped_while_held = _mapped(address)
    lib.hv_partition_put(peer)                  # the last holder
    return still, mapped_while_held, _mapped(address)


def test_ram_outlives_destroy_while_a_peer_holds_the_partition():
    """Regression: RAM the parent had taken was unmapped as soon as the
    parent let go, even while a peer held a reference to the destroyed
    partition (a grant copy in flight): a use after free.  RAM now goes with
    the last of its holders, and then it does go."""
    from hv.testing import run_isolated
    assert run_isolated(_ram_outlives_its_last_holder) == (0x5a, True, False)
