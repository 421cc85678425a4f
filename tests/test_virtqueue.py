"""The device side of a split virtqueue (hv/devices/virtqueue.py) against a
driver model (tests/models/virtqueue_ref.py): a Hypothesis state machine for
well-behaved drivers, a table of malformed rings, a double-fetch test and
random corruption of a valid ring.  No engine needed.

Every test runs twice, on both copies of the data path
(hv/devices/datapath.py): the pure-Python one and the one Cython compiled
from the same files.  The same checks on both is how they are kept one.
"""
import random
import struct
import types
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from models import virtqueue_ref as ref
from models.virtqueue_ref import INDIRECT, NEXT, WRITE, Driver

from hv.devices import datapath
from hv.devices.errors import GuestMemoryError, QueueError
from hv.devices.virtqueue import vring_need_event

MEM = 0x10000                      # guest RAM in these tests
RING = 0x1000                      # the three ring parts start here
DATA, DATA_END = 0x3000, 0xF000    # the driver's buffers and indirect tables
SIZES = [1, 2, 4, 8, 16, 256]


def memory_classes(GuestMemory):
    """The test doubles of guest memory, over one data path's GuestMemory."""

    class BoundedMemory(GuestMemory):
        """Counts reads, and fails once a test's budget is spent: a device that
        loops forever over the ring reads on every turn, so it fails, not hangs."""
        budget = 10_000

        def __init__(self, buf):
            super().__init__(buf)
            self.reads = 0

        def read(self, gpa, n):
            self.reads += 1
            assert self.reads <= self.budget, "the device is reading without end"
            return super().read(gpa, n)

    class RewritingMemory(GuestMemory):
        """Another vCPU that rewrites whatever the device has just read, and a log
        of reads and writes.  A device that read anything twice would see the rewrite."""

        def __init__(self, buf):
            super().__init__(buf)
            self.buf, self.reads, self.writes = buf, [], []

        def read(self, gpa, n):
            data = super().read(gpa, n)
            self.reads.append((gpa, n))
            self.buf[gpa:gpa + n] = bytes(b ^ 0xFF for b in data)
            return data

        def write(self, gpa, data):
            super().write(gpa, data)
            self.writes.append((gpa, len(data)))

    return BoundedMemory, RewritingMemory


def use_data_path(name):
    """Point this module's GuestMemory, SplitQueue and memory doubles at one
    copy of the data path."""
    global GuestMemory, SplitQueue, BoundedMemory, RewritingMemory
    path = datapath.PURE if name == "pure" else datapath.COMPILED
    if path is None:
        pytest.fail(f"the compiled data path is missing: {datapath.WHY_NOT_COMPILED}")
    GuestMemory, SplitQueue = path.GuestMemory, path.SplitQueue
    BoundedMemory, RewritingMemory = memory_classes(GuestMemory)


use_data_path("pure")


@pytest.fixture(autouse=True, params=["pure", "compiled"])
def data_path(request):
    """Every test in this file runs on both copies of the data path."""
    use_data_path(request.param)
    yield request.param
    use_data_path("pure")


def make_ring(size=4, event_idx=False, indirect=True, start=0, memory=None, seed=0, **kw):
    """Guest RAM full of noise, a driver model, and the device's SplitQueue
    (over BoundedMemory unless `memory` says otherwise)."""
    memory = memory or BoundedMemory
    mem = bytearray(random.Random(seed).randbytes(MEM))
    drv = Driver(mem, size, RING, DATA, DATA_END, event_idx, start)
    q = SplitQueue(memory(mem), size, drv.ring.desc, drv.ring.avail, drv.ring.used,
                   event_idx=event_idx, indirect=indirect, last_avail=start, used_idx=start, **kw)
    return mem, drv, q


def assert_only_changed(before, after, regions):
    """Every byte outside `regions` [(gpa, len)] is as it was."""
    patched = bytearray(before)
    for gpa, n in regions:
        patched[gpa:gpa + n] = after[gpa:gpa + n]
    if patched != after:
        first = next(i for i in range(len(after)) if patched[i] != after[i])
        pytest.fail(f"byte {first:#x} changed outside {[(hex(a), n) for a, n in regions]}")


def used_ring(drv):
    return (drv.ring.used, drv.ring.end - drv.ring.used)


# ---- GuestMemory ----------------------------------------------------------------
def test_guest_memory_bounds_and_endianness():
    m = GuestMemory(bytearray(64))
    m.write_u64(8, 0x1122334455667788)
    assert m.read(8, 2) == b"\x88\x77" and m.read_u16(8) == 0x7788
    assert m.read_u32(8) == 0x55667788 and m.read_u64(8) == 0x1122334455667788
    m.write_u16(62, 0xBEEF)
    assert m.read(62, 2) == b"\xef\xbe" and m.read(64, 0) == b""
    for gpa, n in [(-1, 1), (0, -1), (63, 2), (64, 1), (65, 0), (2**64 - 1, 2), (1, 2**64 - 1)]:
        with pytest.raises(GuestMemoryError) as e:
            m.read(gpa, n)
        assert e.value.gpa == gpa and e.value.length == n and isinstance(e.value, ValueError)
        if 0 <= n < 100:
            with pytest.raises(GuestMemoryError):
                m.write(gpa, bytes(n))
    with pytest.raises(ValueError):
        GuestMemory(bytes(8))


def test_guest_memory_allowed_hook():
    buf = bytearray(64)
    m = GuestMemory(buf, allowed=lambda gpa, n: gpa + n <= 32)
    m.write(0, b"ok")
    with pytest.raises(GuestMemoryError, match="not the guest's"):
        m.write(31, b"no")
    assert buf[31:33] == b"\0\0"


# ---- ring layout and the notification rule ----------------------------------------
@pytest.mark.parametrize("size, desc, avail, used", [
    (0, 0, 0x100, 0x200), (3, 0, 0x100, 0x200), (65536, 0, 0x100, 0x200),
    (4, 8, 0x100, 0x200), (4, 0, 0x101, 0x200), (4, 0, 0x100, 0x202),
    (4, MEM - 32, 0x100, 0x200), (4, 0, MEM - 8, 0x200), (4, 0, 0x100, MEM - 16),
    (4, 2**64 - 64, 0x100, 0x200)])
def test_bad_ring_layout_is_refused(size, desc, avail, used):
    with pytest.raises(QueueError):
        SplitQueue(GuestMemory(bytearray(MEM)), size, desc, avail, used)


def test_vring_need_event_wraps():
    assert vring_need_event(5, 6, 5) and not vring_need_event(6, 6, 5)
    assert vring_need_event(0xFFFF, 1, 0xFFFE) and vring_need_event(0, 1, 0xFFFE)
    assert not vring_need_event(1, 1, 0xFFFE) and not vring_need_event(7, 7, 7)
    for event, old, n in [(0, 0xFFF0, 40), (0xFFFF, 0xFFFF, 1), (3, 0, 3)]:
        new = (old + n) & 0xFFFF
        assert vring_need_event(event, new, old) == ref.crossed(event, old, new)


# ---- a well-behaved driver: the state machine ---------------------------------------
class RingMachine(RuleBasedStateMachine):
    """Driver model adds, device pops, writes and pushes, driver consumes."""

    @initialize(size=st.sampled_from(SIZES), event_idx=st.booleans(), indirect=st.booleans(),
                start=st.one_of(st.integers(0xFFFF - 20, 0xFFFF), st.integers(0, 0xFFFF)))
    def setup(self, size, event_idx, indirect, start):
        self.mem, self.drv, self.q = make_ring(size, event_idx, indirect, start, seed=size)
        self.outside = self.bytes_outside()
        self.offered = deque()             # driver's InFlight records, not yet popped
        self.popped = []                   # Chains the device holds
        self.pushed = deque()              # (id, len) the driver has not seen yet
        self.signalled = start             # used.idx at the last should_notify()
        self.kicks = "on"                  # "on", "off", or "armed": enabled with nothing pending

    def bytes_outside(self):
        return bytes(self.mem[:RING] + self.mem[self.drv.ring.end:DATA] + self.mem[DATA_END:])

    @rule(readable=st.lists(st.binary(max_size=40), max_size=4),
          writable=st.lists(st.integers(0, 40), max_size=3), indirect=st.booleans())
    def add(self, readable, writable, indirect):
        if not readable and not writable:
            readable = [b"!"]
        head = self.drv.add(readable, writable, indirect and self.q.indirect)
        if head is None:
            return                         # ring or buffer space full
        self.offered.append(self.drv.in_flight[head])
        if self.kicks == "armed":          # 2.7.10: no lost wake-up after enable_kicks()
            assert self.drv.kicked, "driver added a buffer after enable_kicks() and was told not to kick"
            self.kicks = "on"
        elif self.kicks == "off":
            assert not self.drv.kicked, "disable_kicks() did not suppress the kick"

    @rule()
    def pop(self):
        before = bytes(self.mem)
        chain = self.q.pop()
        assert bytes(self.mem) == before, "pop() wrote to guest memory"
        if not self.offered:
            assert chain is None
            return
        want = self.offered.popleft()
        assert chain is not None, "an offered chain was not popped"
        assert (chain.head, chain.readable, chain.writable) == (want.head, want.readable, want.writable)
        assert chain.writable_len == sum(n for _, n in want.writable)
        self.popped.append(chain)
        if self.kicks == "armed":
            self.kicks = "on"

    @precondition(lambda self: self.popped)
    @rule(which=st.integers(0, 1000), data=st.binary(max_size=130), offset=st.integers(0, 8))
    def complete(self, which, data, offset):
        chain = self.popped.pop(which % len(self.popped))
        before, slot = bytes(self.mem), self.q.used_idx
        n = self.q.write(chain, data, offset)
        assert n == max(0, min(len(data), chain.writable_len - offset))
        written = n
        self.q.push(chain, written)
        assert_only_changed(before, self.mem, list(chain.writable) + [used_ring(self.drv)])
        # The bytes landed in order after `offset`, and nothing else changed in the buffers.
        want = (bytes(before[a:a + ln]) for a, ln in chain.writable)
        want = bytearray(b"".join(want))
        want[offset:offset + n] = data[:n]
        assert b"".join(bytes(self.mem[a:a + ln]) for a, ln in chain.writable) == want
        u = self.drv.ring.used
        assert struct.unpack_from("<II", self.mem, u + 4 + 8 * (slot % self.q.size)) == (chain.head, written)
        assert ref.u16(self.mem, u + 2) == self.q.used_idx == (slot + 1) & 0xFFFF
        self.pushed.append((chain.head, written))

    @rule()
    def notify(self):
        old, new = self.signalled, self.q.used_idx
        if self.q.event_idx:               # 2.7.7.2: used.idx crossed used_event
            want = ref.crossed(ref.u16(self.mem, self.drv.ring.avail + 4 + 2 * self.q.size), old, new)
        else:                              # 2.7.7.2: anything new, unless NO_INTERRUPT
            want = new != old and not ref.u16(self.mem, self.drv.ring.avail) & ref.NO_INTERRUPT
        assert self.q.should_notify() == want
        self.signalled = new

    @rule()
    def driver_consumes(self):
        got = self.drv.get_used()
        assert got == list(self.pushed)
        self.pushed.clear()

    @rule(no_interrupt=st.booleans(), ahead=st.integers(-3, 6))
    def driver_hints(self, no_interrupt, ahead):
        self.drv.set_no_interrupt(no_interrupt)
        self.drv.set_used_event(self.drv.last_used + ahead)

    @rule()
    def kicks_off(self):
        before = bytes(self.mem)
        self.q.disable_kicks()
        assert_only_changed(before, self.mem, [used_ring(self.drv)])
        self.kicks = "off"

    @rule()
    def kicks_on(self):
        before = bytes(self.mem)
        pending = self.q.enable_kicks()
        assert_only_changed(before, self.mem, [used_ring(self.drv)])
        assert pending == bool(self.offered)
        self.kicks = "on" if pending else "armed"

    @invariant()
    def ring_is_consistent(self):
        if not hasattr(self, "q"):
            return
        assert self.q.halted is None
        assert (self.drv.avail_idx - self.q.last_avail) & 0xFFFF == len(self.offered)
        assert self.bytes_outside() == self.outside, "a byte outside the ring and buffers changed"


def test_ring_machine():
    run_state_machine_as_test(RingMachine, settings=settings(
        max_examples=250, stateful_step_count=50, deadline=None,
        suppress_health_check=list(HealthCheck)))


# ---- spec corners a correct driver may use ---------------------------------------
def test_indirect_table_after_direct_descriptors_and_write_flag_ignored():
    """2.7.5.3.2: a device handles direct descriptors followed by one indirect
    descriptor, and ignores WRITE on the descriptor naming the table."""
    mem, drv, q = make_ring(size=4)
    mem[DATA:DATA + 4] = b"head"
    mem[DATA + 0x100:DATA + 0x104] = b"tail"
    drv.write_desc(0, DATA, 4, NEXT, 2)
    drv.write_desc(2, DATA + 0x200, 32, INDIRECT | WRITE, 0)
    mem[DATA + 0x200:DATA + 0x220] = (struct.pack("<QIHH", DATA + 0x100, 4, NEXT, 1)
                                      + struct.pack("<QIHH", DATA + 0x300, 8, WRITE, 0))
    drv.publish(0)
    chain = q.pop()
    assert chain == (0, b"headtail", ((DATA + 0x300, 8),), 8)
    before = bytes(mem)
    assert q.write(chain, b"0123456789") == 8 and mem[DATA + 0x300:DATA + 0x308] == b"01234567"
    assert_only_changed(before, mem, [(DATA + 0x300, 8)])
    assert q.pop() is None


def test_zero_length_buffers_and_restore_indices():
    mem, drv, q = make_ring(size=4, start=0xFFFF)
    drv.add([b""], [0])
    drv.add([b"x"], [])
    a, b = q.pop(), q.pop()
    assert (a.readable, a.writable_len, b.readable) == (b"", 0, b"x")
    assert q.last_avail == 1 and q.pop() is None
    q.push(a, 0)
    q.push(b.head, 0)
    assert q.used_idx == 1 and drv.get_used() == [(a.head, 0), (b.head, 0)]


def test_push_refuses_device_mistakes():
    mem, drv, q = make_ring(size=4)
    drv.add([b"r"], [4])
    chain = q.pop()
    for head, written in [(chain, 5), (4, 0), (-1, 0), (0, 2**32), (0, -1)]:
        with pytest.raises(ValueError) as e:
            q.push(head, written)
        assert not isinstance(e.value, QueueError)
    assert q.halted is None and q.used_idx == 0


def test_should_notify_honours_no_interrupt_and_used_event_across_wrap():
    mem, drv, q = make_ring(size=4, start=0xFFFE)
    drv.set_no_interrupt(True)
    drv.add([b"a"], [])
    q.push(q.pop(), 0)
    assert not q.should_notify()
    drv.set_no_interrupt(False)
    assert not q.should_notify()                    # nothing new since
    drv.add([b"b"], [])
    q.push(q.pop(), 0)
    assert q.should_notify()
    mem, drv, q = make_ring(size=4, event_idx=True, start=0xFFFE)
    drv.set_no_interrupt(True)                      # ignored with EVENT_IDX
    drv.set_used_event(0)                           # interrupt when entry 0 (after the wrap) is used
    for _ in range(3):
        drv.add([b"c"], [])
    q.push(q.pop(), 0)                              # used.idx 0xFFFE -> 0xFFFF
    assert not q.should_notify()
    q.push(q.pop(), 0)                              # 0xFFFF -> 0: entry 0xFFFF, not 0
    assert not q.should_notify()
    q.push(q.pop(), 0)                              # 0 -> 1 crosses used_event 0
    assert q.should_notify()


# ---- malformed rings: QueueError, nothing written, the queue halted -----------------
def table(mem, gpa, *descs):
    mem[gpa:gpa + 16 * len(descs)] = b"".join(struct.pack("<QIHH", *d) for d in descs)


def set_avail_idx(drv, delta):
    ref.put16(drv.mem, drv.ring.avail + 2, drv.avail_idx + delta)


T = DATA + 0x400                   # where malformed cases put an indirect table
MALFORMED = {
    "loop": lambda d, m: (d.write_desc(0, DATA, 8, NEXT, 1), d.write_desc(1, DATA, 8, NEXT, 0), d.publish(0)),
    "self loop": lambda d, m: (d.write_desc(2, DATA, 8, NEXT, 2), d.publish(2)),
    "chain longer than the queue": lambda d, m: (
        [d.write_desc(i, DATA + 8 * i, 8, NEXT, (i + 1) % 4) for i in range(4)], d.publish(1)),
    "next = size": lambda d, m: (d.write_desc(0, DATA, 8, NEXT, 4), d.publish(0)),
    "next = 0xffff": lambda d, m: (d.write_desc(0, DATA, 8, NEXT, 0xFFFF), d.publish(0)),
    "head = size": lambda d, m: d.publish(4),
    "head = 0xffff": lambda d, m: d.publish(0xFFFF),
    "buffer past the end": lambda d, m: (d.write_desc(0, MEM - 8, 16, 0, 0), d.publish(0)),
    "buffer just past the end": lambda d, m: (d.write_desc(0, MEM, 1, 0, 0), d.publish(0)),
    "writable past the end": lambda d, m: (d.write_desc(0, MEM - 4, 8, WRITE, 0), d.publish(0)),
    "empty buffer beyond the end": lambda d, m: (d.write_desc(0, MEM + 1, 0, WRITE, 0), d.publish(0)),
    "buffer wrapping 2^64": lambda d, m: (d.write_desc(0, 2**64 - 16, 32, 0, 0), d.publish(0)),
    "writable wrapping 2^64": lambda d, m: (
        d.write_desc(0, DATA, 1, NEXT, 1), d.write_desc(1, 2**64 - 1, 0xFFFFFFFF, WRITE, 0), d.publish(0)),
    "second buffer bad": lambda d, m: (
        d.write_desc(0, DATA, 8, NEXT, 1), d.write_desc(1, MEM - 1, 2, 0, 0), d.publish(0)),
    "indirect len 0": lambda d, m: (d.write_desc(0, T, 0, INDIRECT, 0), d.publish(0)),
    "indirect len 15": lambda d, m: (table(m, T, (DATA, 1, 0, 0)), d.write_desc(0, T, 15, INDIRECT, 0),
                                     d.publish(0)),
    "indirect len 24": lambda d, m: (table(m, T, (DATA, 1, 0, 0), (DATA, 1, 0, 0)),
                                     d.write_desc(0, T, 24, INDIRECT, 0), d.publish(0)),
    "indirect larger than the queue": lambda d, m: (
        table(m, T, *[(DATA, 1, NEXT if i < 4 else 0, i + 1) for i in range(5)]),
        d.write_desc(0, T, 80, INDIRECT, 0), d.publish(0)),
    "indirect len 2^32-16": lambda d, m: (d.write_desc(0, T, 2**32 - 16, INDIRECT, 0), d.publish(0)),
    "indirect table past the end": lambda d, m: (d.write_desc(0, MEM - 16, 32, INDIRECT, 0), d.publish(0)),
    "nested indirect": lambda d, m: (table(m, T, (T + 0x100, 16, INDIRECT, 0)),
                                     table(m, T + 0x100, (DATA, 4, 0, 0)),
                                     d.write_desc(0, T, 16, INDIRECT, 0), d.publish(0)),
    "INDIRECT | NEXT": lambda d, m: (table(m, T, (DATA, 4, 0, 0)), d.write_desc(0, T, 16, INDIRECT | NEXT, 1),
                                     d.write_desc(1, DATA, 4, WRITE, 0), d.publish(0)),
    "indirect loop": lambda d, m: (table(m, T, (DATA, 4, NEXT, 1), (DATA, 4, NEXT, 0)),
                                   d.write_desc(0, T, 32, INDIRECT, 0), d.publish(0)),
    "indirect next out of table": lambda d, m: (table(m, T, (DATA, 4, NEXT, 2), (DATA, 4, 0, 0)),
                                                d.write_desc(0, T, 32, INDIRECT, 0), d.publish(0)),
    "indirect buffer past the end": lambda d, m: (table(m, T, (MEM - 2, 4, 0, 0)),
                                                  d.write_desc(0, T, 16, INDIRECT, 0), d.publish(0)),
    "readable after writable": lambda d, m: (
        d.write_desc(0, DATA, 4, WRITE | NEXT, 1), d.write_desc(1, DATA + 8, 4, 0, 0), d.publish(0)),
    "readable after writable, through indirect": lambda d, m: (
        table(m, T, (DATA + 8, 4, 0, 0)), d.write_desc(0, DATA, 4, WRITE | NEXT, 1),
        d.write_desc(1, T, 16, INDIRECT, 0), d.publish(0)),
    "readable after writable, in the table": lambda d, m: (
        table(m, T, (DATA, 4, WRITE | NEXT, 1), (DATA + 8, 4, 0, 0)),
        d.write_desc(0, T, 32, INDIRECT, 0), d.publish(0)),
    "avail.idx jumps by size + 1": lambda d, m: set_avail_idx(d, 5),
    "avail.idx jumps by 0x8000": lambda d, m: set_avail_idx(d, 0x8000),
    "avail.idx goes back by 1": lambda d, m: set_avail_idx(d, -1),
    "avail.idx goes back by size + 1": lambda d, m: set_avail_idx(d, -5),
}


def assert_rejected_and_halted(mem, drv, q):
    before, last = bytes(mem), q.last_avail
    with pytest.raises(QueueError):
        q.pop()
    assert bytes(mem) == before, "a rejected pop() wrote to guest memory"
    assert q.last_avail == last and q.halted
    for call in (q.pop, lambda: q.push(0, 0), q.should_notify, q.enable_kicks, q.disable_kicks):
        with pytest.raises(QueueError, match="halted"):
            call()
    assert bytes(mem) == before


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("start", [0, 0xFFFE])
def test_malformed_ring_is_rejected(case, start):
    mem, drv, q = make_ring(size=4, start=start)
    MALFORMED[case](drv, mem)
    assert_rejected_and_halted(mem, drv, q)


def test_indirect_without_the_feature_is_rejected():
    mem, drv, q = make_ring(size=4, indirect=False)
    drv.add([b"abc"], [4], indirect=True)
    assert_rejected_and_halted(mem, drv, q)


def test_avail_idx_going_back_within_what_was_seen_is_rejected():
    mem, drv, q = make_ring(size=4, start=0xFFFF)
    for _ in range(3):
        drv.add([b"r"], [1])
    q.pop()                                         # saw avail.idx = start + 3
    set_avail_idx(drv, -1)                          # still ahead of last_avail, but moved back
    assert_rejected_and_halted(mem, drv, q)


def test_chains_over_2_32_bytes_or_the_copy_bound_are_rejected():
    class HugeMemory(BoundedMemory):                  # claims 1 TiB; the chain is never touched
        def __init__(self, buf):
            super().__init__(buf)
            self.size = 1 << 40
    mem, drv, q = make_ring(size=4, memory=HugeMemory)
    drv.write_desc(0, 0x100000, 0xFFFFFFFF, WRITE | NEXT, 1)
    drv.write_desc(1, 0x200000000, 2, WRITE, 0)
    drv.publish(0)
    assert_rejected_and_halted(mem, drv, q)
    mem, drv, q = make_ring(size=4, max_readable=64)
    drv.add([b"x" * 32, b"y" * 32], [8])
    first = q.pop()
    assert first.readable == b"x" * 32 + b"y" * 32
    q.push(first, 0)
    drv.get_used()
    assert drv.add([b"x" * 32, b"y" * 33], [8]) is not None
    assert_rejected_and_halted(mem, drv, q)


def test_a_memory_fault_after_pop_halts_the_queue():
    """The frame-ownership hook may take a buffer away after pop(): write()
    raises QueueError (the GuestMemoryError is its cause), writes nothing,
    not even to the buffers still allowed, and halts the queue."""
    gone = set()
    mem = bytearray(MEM)
    drv = Driver(mem, 4, RING, DATA, DATA_END)
    q = SplitQueue(GuestMemory(mem, allowed=lambda gpa, n: gpa not in gone), 4,
                   drv.ring.desc, drv.ring.avail, drv.ring.used)
    drv.add([b"r"], [4, 4])
    chain = q.pop()
    gone.add(chain.writable[1][0])
    before = bytes(mem)
    with pytest.raises(QueueError) as e:
        q.write(chain, b"12345678")
    assert isinstance(e.value.__cause__, GuestMemoryError) and q.halted
    assert bytes(mem) == before, "a failed write() wrote part of its data"


# ---- double fetch: every guest byte is read once -----------------------------------
@pytest.mark.parametrize("indirect", [False, True])
def test_pop_reads_each_guest_byte_once(indirect):
    mem, drv, q = make_ring(size=8, start=0xFFFF, memory=RewritingMemory)
    head = drv.add([b"request", b"-more"], [16, 3], indirect=indirect)
    want = drv.in_flight[head]
    chain = q.pop()
    assert chain == (head, b"request-more", want.writable, 19)
    reads = q.mem.reads
    assert len(reads) == len(set(reads)), f"something was read twice: {reads}"
    r = drv.ring
    assert (r.avail + 2, 2) in reads and (r.avail + 4 + 2 * (0xFFFF % 8), 2) in reads
    assert len([1 for gpa, _ in reads if r.desc <= gpa < r.avail]) == (1 if indirect else 4)
    # The device never reads the used ring back: its indices are its own;
    # and it stores the used element before used.idx (2.7.8.2).
    reads.clear()
    n = q.write(chain, b"x" * 19)
    q.mem.writes.clear()
    q.push(chain, n)
    assert reads == []
    assert q.mem.writes == [(r.used + 4 + 8 * (0xFFFF % 8), 8), (r.used + 2, 2)]


# ---- random corruption of a valid ring ------------------------------------------------
@st.composite
def corrupted_rings(draw):
    size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    indirect, event_idx = draw(st.booleans()), draw(st.booleans())
    start = draw(st.one_of(st.integers(0xFFF0, 0xFFFF), st.integers(0, 0xFFFF)))
    chains = draw(st.lists(st.tuples(st.lists(st.binary(max_size=12), max_size=3),
                                     st.lists(st.integers(0, 12), max_size=2), st.booleans()),
                           min_size=1, max_size=size + 2))
    hits = draw(st.lists(st.tuples(st.sampled_from(["desc", "avail", "data"]), st.integers(0, 1 << 16),
                                   st.integers(0, 255)), min_size=1, max_size=6))
    return size, indirect, event_idx, start, chains, hits


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(corrupted_rings())
def test_corrupted_ring_pops_valid_chains_or_raises_queue_error(case):
    size, indirect, event_idx, start, chains, hits = case
    mem, drv, q = make_ring(size, event_idx, indirect, start, max_readable=40)
    for readable, writable, ind in chains:
        drv.add(readable or [b"!"], writable, ind and indirect)
    spans = {"desc": (drv.ring.desc, 16 * size), "avail": (drv.ring.avail, 6 + 2 * size),
             "data": (DATA, max([e for _, e in drv.allocated] + [DATA + 1]) - DATA)}
    for part, offset, value in hits:
        base, span = spans[part]
        mem[base + offset % span] = value
    seen = q.last_avail
    for _ in range(size + 2):
        want = ref.expected_pop(mem, size, drv.ring, q.last_avail, seen, indirect, 40)
        before, avail_idx = bytes(mem), ref.u16(mem, drv.ring.avail + 2)
        q.mem.reads = 0
        try:
            chain = q.pop()
        except QueueError:
            assert want == ("error",) and q.halted
            break
        finally:
            assert bytes(mem) == before, "pop() wrote to guest memory"
            assert q.mem.reads <= 2 + size + 1 + 2 * size, "pop() did unbounded work"
        if chain is None:
            assert want == ("empty",)
            break
        assert want == ("chain", tuple(chain))
        assert chain.head < size and chain.writable_len < 2**32
        assert all(0 <= a and a + n <= MEM for a, n in chain.writable)
        seen = avail_idx


# ---- pop(copy=N): the header copied, the payload left where it is ---------------------
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(readable=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
       copy=st.integers(0, 100), indirect=st.booleans())
def test_pop_copy_splits_readable_bytes_at_n(readable, copy, indirect):
    """chain.readable holds the first `copy` readable bytes; chain.uncopied
    names the rest, in order, and views() of it reads them from guest RAM."""
    mem, drv, q = make_ring(size=8)
    drv.add(readable, [4], indirect=indirect)
    chain = q.pop(copy)
    data = b"".join(readable)
    assert chain.readable == data[:copy]
    assert b"".join(bytes(v) for v in q.views(chain.uncopied)) == data[copy:]
    assert all(n > 0 for _, n in chain.uncopied)


def test_views_are_checked_and_a_fault_halts_the_queue():
    mem, drv, q = make_ring(size=4)
    drv.add([b"r"], [8])
    chain = q.pop()
    (view,) = q.views(chain.writable)
    view[:3] = b"abc"
    assert mem[chain.writable[0][0]:chain.writable[0][0] + 3] == b"abc"
    with pytest.raises(QueueError):
        q.views([(MEM - 4, 8)])
    assert q.halted


def test_the_compiled_path_is_built_and_is_the_default(monkeypatch):
    """make builds it; a device without a datapath= takes it."""
    assert datapath.COMPILED is not None, datapath.WHY_NOT_COMPILED
    monkeypatch.delenv("HV_DATAPATH", raising=False)
    assert datapath.select() is datapath.COMPILED
    assert datapath.COMPILED.SplitQueue.__module__ == "hv.devices._virtqueue_compiled"
    assert not isinstance(datapath.COMPILED.SplitQueue.pop, types.FunctionType), "not compiled"
    assert isinstance(datapath.PURE.SplitQueue.pop, types.FunctionType)


def test_queue_state_is_readable_on_both_paths():
    """What a saved queue needs can be read from either copy (the compiled
    SplitQueue is a C type: its fields are visible only where declared so)."""
    mem, drv, q = make_ring(size=4, event_idx=True, start=7)
    drv.add([b"a"], [2])
    q.push(q.pop(), 1)
    q.should_notify()
    assert (q.size, q.last_avail, q.used_idx, q._seen_avail, q._signalled) == (4, 8, 8, 8, 8)
    assert (q.desc, q.avail, q.used) == (drv.ring.desc, drv.ring.avail, drv.ring.used)
    assert q.event_idx and q.indirect and q.halted is None
