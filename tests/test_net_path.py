"""The whole frame path between two NICs on one switch, without an engine:
the sender's transmit kick (VirtioDevice.on_kick), the switch, and the
receiver's ring, on both copies of the data path, driven by the driver
model of tests/models/virtqueue_ref.py.

The driver kicks only when virtio's rules say it must (2.7.10: avail_event
with EVENT_IDX, else unless NO_NOTIFY), and may post more frames while the
device is serving its last kick (a vCPU racing the device thread), so a
device that re-enables kicks wrongly strands a frame and the test sees it
missing.  Every frame sent must come out of the other guest's receive ring
in order, byte for byte (or wait in its backlog).
"""
import contextlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from models.virtqueue_ref import Driver

from hv.abi import ffi, lib
from hv.devices import datapath
from hv.devices.net import RECEIVEQ, TRANSMITQ, NetDevice
from hv.devices.net_io import NET_HDR_SIZE, RX_HEADER
from hv.devices.switch import Switch
from hv.devices.transport import Transport

MEM = 0x100000
SIZE = 16
PATHS = ["pure", "compiled"]


class Guest:
    """Stands in for a Partition: a core partition with no engine (its RAM
    and frame owners are what the core's frame mover checks) and no vCPU."""
    id = 0

    def __init__(self):
        pp = ffi.new("struct hv_partition **")
        assert lib.hv_partition_create(lib.HV_ENGINE_NONE, MEM, pp) == 0
        self._p = pp[0]
        self.ram = memoryview(ffi.buffer(lib.hv_partition_ram(self._p), MEM))

    def destroy(self):
        self.ram.release()
        lib.hv_partition_destroy(self._p)
        self._p = None


class Nic(NetDevice):
    """A NetDevice with its rings built by hand and no register file under
    it: its transport reaches the core partition (the frame mover) only."""

    def __init__(self, switch, mac, path, event_idx, racer=None):
        super().__init__(switch, mac, datapath=path)
        self.partition = Guest()
        self.transport = Transport(self.partition._p, 0)
        self.interrupts = 0
        self.racer = racer          # called while a kick is being served
        self.rx_buffers = {}        # head -> the writable buffers post_rx() gave
        self.ram = self.partition.ram
        p = self.datapath
        self.tx = Driver(self.ram, SIZE, 0x1000, 0x10000, 0x40000, event_idx=event_idx)
        self.rx = Driver(self.ram, SIZE, 0x50000, 0x60000, MEM, event_idx=event_idx)
        mem = p.GuestMemory(self.ram)
        self._queues = {
            i: p.SplitQueue(mem, SIZE, d.ring.desc, d.ring.avail, d.ring.used,
                            event_idx=event_idx, indirect=True)
            for i, d in ((TRANSMITQ, self.tx), (RECEIVEQ, self.rx))}

    def _stale(self):
        return False

    def interrupt(self):
        self.interrupts += 1

    def serve(self, index, queue):
        super().serve(index, queue)
        if self.racer is not None and index == TRANSMITQ:
            self.racer(self)

    def send(self, frame, indirect):
        """The guest posts a frame; kicks if the rules say so.  False: ring full."""
        if self.tx.add([bytes(NET_HDR_SIZE), frame], [], indirect=indirect) is None:
            return False
        if self.tx.kicked:
            self.on_kick(TRANSMITQ)
        return True

    def post_rx(self, n, size=NET_HDR_SIZE + 1514):
        for _ in range(n):
            head = self.rx.add([], [size])
            if head is None:
                break
            self.rx_buffers[head] = self.rx.in_flight[head].writable
            if self.rx.kicked:
                self.on_kick(RECEIVEQ)

    def received(self):
        """The frames the guest finds in its receive ring, as it takes them."""
        out = []
        for head, length in self.rx.get_used():
            if length:
                (gpa, _), = self.rx_buffers.pop(head)
                # virtio-net's header first: no offloads, one buffer (5.1.6.4)
                assert bytes(self.ram[gpa:gpa + NET_HDR_SIZE]) == RX_HEADER
                out.append(bytes(self.ram[gpa + NET_HDR_SIZE:gpa + length]))
            else:
                self.rx_buffers.pop(head)
        return out


@contextlib.contextmanager
def pair(name, event_idx=True, racer=None, switch=None):
    """Two NICs, a (02:..:01) and b (02:..:02), on one switch."""
    p = datapath.PURE if name == "pure" else datapath.COMPILED
    assert p is not None, datapath.WHY_NOT_COMPILED
    sw = switch or Switch()
    nics = []
    try:
        nics.append(Nic(sw, bytes([2, 0, 0, 0, 0, 1]), name, event_idx, racer))
        nics.append(Nic(sw, bytes([2, 0, 0, 0, 0, 2]), name, event_idx))
        yield sw, nics[0], nics[1]
    finally:
        for nic in nics:
            nic.close()
            nic.partition.destroy()


def frame(dst, src, seq, size):
    body = seq.to_bytes(4, "little") + bytes((seq + i) & 0xFF for i in range(size - 18))
    return dst.mac + src.mac + b"\x88\xb5" + body


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("event_idx", [True, False])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(60, 1514),
                                st.booleans(), st.integers(0, 3)), min_size=1, max_size=25))
def test_every_frame_sent_arrives_in_order(name, event_idx, steps):
    """Random bursts, receive buffers posted now and then, and a driver that
    posts more frames while its last kick is served: nothing is stranded."""
    racing, posted = [], []

    def racer(nic):
        while racing:               # frames the guest posts while the device serves
            f = racing.pop()
            if nic.tx.add([bytes(NET_HDR_SIZE), f], [], indirect=False) is None:
                break
            posted.append(f)
            if nic.tx.kicked:
                nic.kicks_during_service += 1

    with pair(name, event_idx, racer) as (sw, a, b):
        b.send(frame(a, b, 0, 60), indirect=False)      # the switch learns where b is
        a.kicks_during_service = 0
        got, seq = [], 0
        b.post_rx(4)
        for burst, race, size, indirect, rx_posts in steps:
            for _ in range(race):
                racing.append(frame(b, a, seq, size))
                seq += 1
            for _ in range(burst):
                f = frame(b, a, seq, size)
                seq += 1
                posted.append(f)        # before the kick: the racer's frames follow it
                if not a.send(f, indirect):
                    posted.pop()
                    break
            a.tx.get_used()
            got += b.received()
            b.post_rx(rx_posts)
            got += b.received()
        # A kick the driver owed during service is one more kick, served now.
        for _ in range(a.kicks_during_service):
            a.on_kick(TRANSMITQ)
        a.tx.get_used()
        # Everything posted left the sender's ring (nothing stranded there) ...
        assert a.tx.in_flight == {}, "frames stranded in the transmit ring"
        assert a.requests == len(posted)
        # ... and reached the receiver in order, or waits in its backlog.
        b.post_rx(SIZE)
        got += b.received()
        waiting = [bytes(f) for f in b.backlog]
        assert b.rx_dropped == 0        # every buffer holds a frame; the backlog never fills
        assert got + waiting == posted


@pytest.mark.parametrize("name", PATHS)
def test_one_kick_serves_frames_posted_during_service(name):
    """With EVENT_IDX the device leaves kicks on while it serves; a frame
    the guest posts meanwhile (no kick: avail_event was not crossed again)
    is still served by the same kick, not left for a kick that never comes."""
    extra = []

    def racer(nic):
        if extra:
            nic.tx.add([bytes(NET_HDR_SIZE), extra.pop()], [])
            assert not nic.tx.kicked        # the driver owes no kick for it
    with pair(name, True, racer) as (sw, a, b):
        b.post_rx(4)
        extra.append(frame(b, a, 1, 64))
        assert a.send(frame(b, a, 0, 64), indirect=False)
        assert [f[14:18] for f in b.received()] == [b"\0\0\0\0", b"\1\0\0\0"]
        assert a.tx.get_used() and a.tx.in_flight == {}
        # ... and the next frame the guest posts does kick.
        a.tx.add([bytes(NET_HDR_SIZE), frame(b, a, 2, 64)], [])
        assert a.tx.kicked


# ---- the core's frame mover against the Python path ------------------------------

class CountingSwitch(Switch):
    def __init__(self):
        super().__init__()
        self.by_port = 0

    def forwarded_by_port(self, n):
        self.by_port += n
        super().forwarded_by_port(n)


def pieces(data, cuts):
    """data split at the given fractions (in 0..1000), empty pieces kept."""
    at = sorted({len(data) * c // 1000 for c in cuts})
    return [data[i:j] for i, j in zip([0] + at, at + [len(data)])]


chains = st.tuples(
    st.sampled_from(["b", "a", "bcast", "other"]),      # to whom (a: back to the sender)
    st.sampled_from([14, 59, 60, 64, 600, 1514, 1518, 1519, 1600]),   # frame bytes
    st.lists(st.integers(0, 1000), max_size=3),          # where the chain splits it
    st.booleans(),                                       # indirect
    st.booleans(),                                       # a writable buffer at the end
    st.integers(0, 2))                                   # receive buffers posted after it


def play(name, script, rx_sizes):
    """One script on one data path: everything both guests and the switch end with."""
    with pair(name, switch=CountingSwitch()) as (sw, a, b):
        b.send(frame(a, b, 0, 60), indirect=False)      # the switch learns where b is
        for size in rx_sizes:
            b.rx.add([], [size])
        for seq, (to, size, cuts, indirect, writable, posts) in enumerate(script):
            dst = {"b": b.mac, "a": a.mac, "bcast": b"\xff" * 6, "other": b"\x02" + b"\x09" * 5}[to]
            f = (dst + a.mac + b"\x88\xb5" + bytes((seq + i) & 0xFF for i in range(1600)))[:size]
            parts = pieces(bytes(NET_HDR_SIZE) + f, cuts)
            if a.tx.add(parts, [8] if writable else [], indirect=indirect) is not None:
                a.on_kick(TRANSMITQ)
            a.tx.get_used()
            b.rx.get_used()
            for _ in range(posts):
                if b.rx.add([], [NET_HDR_SIZE + 1514]) is not None:
                    b.on_kick(RECEIVEQ)
        return (bytes(a.ram), bytes(b.ram), a.requests, a.bytes_from_guest, b.bytes_to_guest,
                b.rx_dropped, [bytes(f) for f in b.backlog], a.errors, b.errors,
                (sw.forwarded, sw.flooded, sw.dropped)), sw.by_port


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=st.lists(chains, min_size=1, max_size=12),
       rx_sizes=st.lists(st.sampled_from([NET_HDR_SIZE + 20, NET_HDR_SIZE + 64, NET_HDR_SIZE + 1514,
                                          NET_HDR_SIZE + 1518]), max_size=8))
def test_the_core_mover_leaves_guests_as_the_python_path_does(script, rx_sizes):
    """Chains of every shape the core must pass on (split frames, empty
    pieces, indirect tables, a writable buffer on a transmit chain, runts
    and giants, other destinations, receive buffers too small, none at
    all): the compiled NIC, which moves what it can in C, leaves both
    guests' RAM, the backlog and every counter exactly as the pure one."""
    pure, _ = play("pure", script, rx_sizes)
    compiled, moved_in_c = play("compiled", script, rx_sizes)
    assert compiled == pure
    event("moved by the core" if moved_in_c else "all by the Python path")


def test_the_core_moves_a_flow_once_the_switch_has_learned_it():
    with pair("compiled", switch=CountingSwitch()) as (sw, a, b):
        b.post_rx(SIZE)
        b.send(frame(a, b, 0, 64), indirect=False)     # a learns b's address (flooded)
        for seq in range(1, 6):
            assert a.send(frame(b, a, seq, 60 + 100 * seq), indirect=seq % 2 == 0)
        got = b.received()
        assert [f[14:18] for f in got] == [seq.to_bytes(4, "little") for seq in range(1, 6)]
        assert got == [frame(b, a, seq, 60 + 100 * seq) for seq in range(1, 6)]
        # The first went through the switch's table; the core moved the rest.
        assert sw.by_port == 4 and sw.forwarded == 5 and sw.forwarded_by_nics == 4
        assert a.requests == 5 and b.bytes_to_guest == sum(60 + 100 * s for s in range(1, 6))
        # Each NIC keeps the core's views of its own rings only (a view holds
        # its guest's RAM), and none once it is closed.
        for nic in (a, b):
            assert set(nic._rings) <= set(nic._queues.values())
        b.close()
        assert not b._rings


def test_a_flow_follows_the_switch_table():
    """Once b's address shows up behind another port, a's frames for it go
    there: the core never moves a frame the switch would send elsewhere."""
    sw = CountingSwitch()
    with pair("compiled", switch=sw) as (_, a, b):
        c = Nic(sw, bytes([2, 0, 0, 0, 0, 3]), "compiled", True)
        try:
            for nic in (b, c):
                nic.post_rx(4)
            b.send(frame(a, b, 0, 60), indirect=False)      # b learned behind b
            a.send(frame(b, a, 1, 60), indirect=False)      # through the table
            a.send(frame(b, a, 2, 60), indirect=False)      # by the core
            assert sw.by_port == 1
            c.send(frame(a, b, 3, 60), indirect=False)      # b's address moves behind c
            a.send(frame(b, a, 4, 60), indirect=False)
            a.send(frame(b, a, 5, 60), indirect=False)
            assert [f[14] for f in b.received()] == [1, 2]
            assert [f[14] for f in c.received()] == [0, 4, 5]     # 0: flooded, a unknown
            assert sw.by_port == 2           # 5 again by the core, on the new flow
        finally:
            c.close()
            c.partition.destroy()


def test_the_core_marks_what_it_writes_for_migration():
    """KVM's dirty log misses writes from the host: every byte the core
    moves into a guest (the receive buffer, both used rings) is marked in
    that partition's written map, as GuestMemory marks the Python path's."""
    with pair("compiled") as (sw, a, b):
        b.send(frame(a, b, 0, 60), indirect=False)
        b.post_rx(1)
        a.send(frame(b, a, 1, 60), indirect=False)          # learn
        b.rx.get_used()
        b.post_rx(1)
        maps = {}
        for nic in (a, b):
            maps[nic] = memoryview(ffi.buffer(lib.hv_partition_written_map(nic.partition._p),
                                              MEM // 4096))
            maps[nic][:] = bytes(len(maps[nic]))
        assert a.send(frame(b, a, 2, 600), indirect=False)
        assert sw.forwarded_by_nics == 1
        (head, length), = b.rx.get_used()
        (gpa, n), = b.rx_buffers[head]
        assert length == NET_HDR_SIZE + 600
        want_b = {f for f in range(gpa // 4096, (gpa + length - 1) // 4096 + 1)}
        want_b.add((b.rx.ring.used + 2) // 4096)
        want_a = {(a.tx.ring.used + 2) // 4096}
        assert {f for f, m in enumerate(maps[b]) if m} == want_b
        assert {f for f, m in enumerate(maps[a]) if m} == want_a


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.integers(1, 4), indirect=st.booleans(),
       corruption=st.lists(st.tuples(st.integers(0, 0x1ff), st.integers(0, 255)), min_size=1,
                           max_size=6))
def test_a_broken_transmit_ring_ends_the_same_with_or_without_the_core(frames, indirect,
                                                                       corruption):
    """Bytes of the descriptor table and the available ring overwritten at
    random: whatever the core makes of it (it may move a chain that is still
    whole, and must stop at the first that is not), the Python path then
    halts the queue where the pure NIC does, and both guests' RAM ends the
    same: the core never writes where the reference would not."""
    outcomes = []
    for name in PATHS:
        with pair(name) as (sw, a, b):
            a.slot = b.slot = 0             # fail() tells the (absent) transport
            b.send(frame(a, b, 0, 60), indirect=False)
            b.post_rx(SIZE)
            a.send(frame(b, a, 1, 60), indirect=False)          # the flow is learned
            a.tx.get_used()
            b.rx.get_used()
            b.post_rx(4)
            for seq in range(frames):
                a.tx.add([bytes(NET_HDR_SIZE), frame(b, a, 2 + seq, 100)], [], indirect=indirect)
            for offset, value in corruption:            # desc table, then the avail ring
                a.ram[a.tx.ring.desc + offset] = value
            a.on_kick(TRANSMITQ)
            outcomes.append((bytes(a.ram), bytes(b.ram), a.errors, a.requests,
                             b.bytes_to_guest, sw.forwarded))
    assert outcomes[0] == outcomes[1]



@pytest.mark.parametrize("name", PATHS)
def test_frames_before_a_broken_chain_still_leave(name):
    """Regression: a kick that took a good frame and then met a broken
    chain completed the good one in the guest's used ring but never sent
    it (transmit() raised with the frame in its own list)."""
    with pair(name) as (sw, a, b):
        a.slot = 0                  # fail() tells the (absent) transport
        b.post_rx(2)
        a.tx.add([bytes(NET_HDR_SIZE), frame(b, a, 7, 100)], [])
        head = a.tx.add([bytes(NET_HDR_SIZE), frame(b, a, 8, 100)], [])
        d = a.tx.ring.desc + 16 * head
        a.ram[d:d + 8] = (MEM * 2).to_bytes(8, "little")     # outside the guest's RAM
        a.on_kick(TRANSMITQ)
        assert a.errors == 1                                  # the ring is broken ...
        assert [f[14] for f in b.backlog] + [f[14] for f in b.received()] == [7]   # ... 7 left
