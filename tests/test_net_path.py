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
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models.virtqueue_ref import Driver

from hv.devices import datapath
from hv.devices.net import RECEIVEQ, TRANSMITQ, NetDevice
from hv.devices.net_io import NET_HDR_SIZE
from hv.devices.switch import Switch

MEM = 0x100000
SIZE = 16
PATHS = ["pure", "compiled"]


class Guest:
    """Stands in for a partition: nothing but a live handle."""
    _p = 1
    _device_host = None
    id = 0


class Nic(NetDevice):
    """A NetDevice with its rings built by hand and no transport under it."""

    def __init__(self, switch, mac, path, event_idx, racer=None):
        super().__init__(switch, mac, datapath=path)
        self.partition = Guest()
        self.interrupts = 0
        self.racer = racer          # called while a kick is being served
        self.ram = bytearray(MEM)
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
            if self.rx.add([], [size]) is None:
                break
            if self.rx.kicked:
                self.on_kick(RECEIVEQ)

    def received(self):
        """The frames the guest finds in its receive ring, as it takes them."""
        out = []
        for head, length in self.rx.get_used():
            if length:
                (gpa, _), = self.rx_buffers.pop(head)
                out.append(bytes(self.ram[gpa + NET_HDR_SIZE:gpa + length]))
            else:
                self.rx_buffers.pop(head)
        return out


def pair(name, event_idx, racer=None):
    p = datapath.PURE if name == "pure" else datapath.COMPILED
    assert p is not None, datapath.WHY_NOT_COMPILED
    sw = Switch()
    a = Nic(sw, bytes([2, 0, 0, 0, 0, 1]), name, event_idx, racer)
    b = Nic(sw, bytes([2, 0, 0, 0, 0, 2]), name, event_idx)
    for nic in (a, b):
        nic.rx_buffers = {}
        orig = nic.rx.add

        def add(readable, writable, indirect=False, nic=nic, orig=orig):
            head = orig(readable, writable, indirect)
            if head is not None:
                nic.rx_buffers[head] = nic.rx.in_flight[head].writable
            return head
        nic.rx.add = add
    return sw, a, b


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
    racing = []

    def racer(nic):
        while racing:               # frames the guest posts while the device serves
            f = racing.pop()
            if nic.tx.add([bytes(NET_HDR_SIZE), f], [], indirect=False) is None:
                break
            posted.append(f)
            if nic.tx.kicked:
                nic.kicks_during_service += 1

    sw, a, b = pair(name, event_idx, racer)
    a.kicks_during_service = 0
    posted, got, seq = [], [], 0
    b.post_rx(4)
    for burst, race, size, indirect, rx_posts in steps:
        for _ in range(race):
            racing.append(frame(b, a, seq, size))
            seq += 1
        for _ in range(burst):
            f = frame(b, a, seq, size)
            seq += 1
            posted.append(f)            # before the kick: the racer's frames follow it
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
    assert b.rx_dropped == 0            # every buffer holds a frame; the backlog never fills
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
    sw, a, b = pair(name, True, racer)
    b.post_rx(4)
    extra.append(frame(b, a, 1, 64))
    assert a.send(frame(b, a, 0, 64), indirect=False)
    assert [f[14:18] for f in b.received()] == [b"\0\0\0\0", b"\1\0\0\0"]
    assert a.tx.get_used() and a.tx.in_flight == {}
    # ... and the next frame the guest posts does kick.
    a.tx.add([bytes(NET_HDR_SIZE), frame(b, a, 2, 64)], [])
    assert a.tx.kicked
