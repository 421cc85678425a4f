"""The request paths above the ring -- virtio-blk (hv/devices/blk_io.py) and
virtio-net frames (hv/devices/net_io.py) -- on both copies of the data path
(hv/devices/datapath.py), driven through the driver model of
tests/models/virtqueue_ref.py.  The same random requests go to the pure and
to the compiled copy, each with its own guest RAM and its own image; the
answers, the guest RAM and the image must come out byte for byte the same,
and agree with what virtio-blk means.  No engine needed.
"""
import collections
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models.virtqueue_ref import Driver

from hv.devices import datapath
from hv.devices.blk_io import (
    HEADER,
    S_IOERR,
    S_OK,
    S_UNSUPP,
    SECTOR,
    T_DISCARD,
    T_FLUSH,
    T_GET_ID,
    T_IN,
    T_OUT,
)
from hv.devices.switch import Switch

MEM, RING, DATA = 0x40000, 0x1000, 0x4000
DISK_SECTORS = 64
PATHS = ["pure", "compiled"]


def path(name):
    p = datapath.PURE if name == "pure" else datapath.COMPILED
    assert p is not None, datapath.WHY_NOT_COMPILED
    return p


class Rig:
    """One data path's device side: guest RAM, a ring, an image file."""

    def __init__(self, name, image, readonly=False, size=16):
        p = path(name)
        self.mem = bytearray(MEM)
        self.drv = Driver(self.mem, size, RING, DATA, MEM, event_idx=True)
        r = self.drv.ring
        self.q = p.SplitQueue(p.GuestMemory(self.mem), size, r.desc, r.avail, r.used,
                              event_idx=True, indirect=True, refuse_foreign=True)
        self.fd = os.open(image, os.O_RDWR)
        self.io = p.blk_io.BlkRequests(self.fd, DISK_SECTORS, readonly, b"disk.img")
        self.path = p

    def close(self):
        os.close(self.fd)


requests = st.lists(st.tuples(
    st.sampled_from([T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, 99]),
    st.one_of(st.integers(0, DISK_SECTORS + 2), st.just(2**64 - 1)),   # sector
    st.integers(0, 3),                                                 # sectors of data
    st.integers(0, 255),                                               # fill byte
    st.booleans()), min_size=1, max_size=12)                           # data split in two


def offer(drv, kind, sector, count, fill, split):
    """A request as a correct driver posts it; its head."""
    header = HEADER.pack(kind, 0, sector)
    data = bytes([fill]) * (count * SECTOR)
    if kind == T_DISCARD:
        data = struct.pack("<QII", sector, count, 0)
    if kind in (T_OUT, T_DISCARD):
        parts = [data[:len(data) // 2], data[len(data) // 2:]] if split and data else [data]
        return drv.add([header] + [p for p in parts if p], [1], indirect=True)
    room = 20 if kind == T_GET_ID else count * SECTOR
    return drv.add([header], ([room // 2, room - room // 2] if split and room else
                              [room] if room else []) + [1], indirect=True)


def status_of(rig, head):
    """The status byte the device wrote: the chain's last writable byte."""
    gpa, n = rig.drv.in_flight[head].writable[-1]
    return gpa + n - 1


@pytest.mark.parametrize("readonly", [False, True])
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(reqs=requests)
def test_blk_requests_agree_on_both_paths(tmp_path, readonly, reqs):
    tmp = tmp_path
    seed = bytes(i * 7 & 0xFF for i in range(DISK_SECTORS * SECTOR))
    rigs = []
    for name in PATHS:
        image = tmp / f"{name}.img"
        image.write_bytes(seed)
        rigs.append(Rig(name, image, readonly))
    try:
        for rig in rigs:
            heads = [offer(rig.drv, *r) for r in reqs]
            assert None not in heads
            status = [status_of(rig, h) for h in heads]
            served, bad = rig.io.serve(rig.q)
            assert served == len(reqs)
            rig.result = (served, bad, rig.drv.get_used(), bytes(rig.mem),
                          rig.io.bytes_to_guest, rig.io.bytes_from_guest)
            rig.status = [rig.mem[gpa] for gpa in status]
        pure, compiled = rigs
        assert pure.result == compiled.result
        assert (tmp / "pure.img").read_bytes() == (tmp / "compiled.img").read_bytes()
        # What virtio-blk means: statuses and the disk.
        disk = bytearray(seed)
        for (kind, sector, count, fill, _), (head, written), status in zip(
                reqs, pure.result[2], pure.status):
            fits = sector + count <= DISK_SECTORS
            refused = readonly and kind in (T_OUT, T_DISCARD)
            assert status == (S_UNSUPP if kind == 99 else
                              S_IOERR if refused or not fits and kind != T_FLUSH and
                              kind != T_GET_ID else S_OK), (kind, sector, count)
            if kind == T_OUT and fits and not readonly:
                disk[sector * SECTOR:(sector + count) * SECTOR] = bytes([fill]) * count * SECTOR
            if kind == T_DISCARD and fits and not readonly:
                disk[sector * SECTOR:(sector + count) * SECTOR] = bytes(count * SECTOR)
            want_written = 1 + (count * SECTOR if kind == T_IN and fits else
                                20 if kind == T_GET_ID else 0)
            assert written == want_written, (kind, sector, count, written)
        assert (tmp / "pure.img").read_bytes() == bytes(disk)
        assert pure.result[1] == sum(
            1 for kind, sector, count, _, _ in reqs
            if kind in (T_IN, T_OUT, T_DISCARD) and (sector + count > DISK_SECTORS or
                                                     readonly and kind != T_IN))
    finally:
        for rig in rigs:
            rig.close()


@pytest.mark.parametrize("name", PATHS)
def test_blk_status_byte_is_the_last_writable_byte(name, tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(DISK_SECTORS * SECTOR))
    rig = Rig(name, image)
    try:
        for kind, sector, want in [(T_IN, 0, S_OK), (T_IN, DISK_SECTORS, S_IOERR),
                                   (99, 0, S_UNSUPP), (T_FLUSH, 0, S_OK)]:
            head = offer(rig.drv, kind, sector, 1 if kind == T_IN else 0, 0,
                         False)
            status_gpa = rig.drv.in_flight[head].writable[-1][0]
            rig.io.serve(rig.q)
            rig.drv.get_used()
            assert rig.mem[status_gpa] == want, (kind, sector)
    finally:
        rig.close()


# ---- net: frames in batches -------------------------------------------------------

@pytest.mark.parametrize("name", PATHS)
def test_net_transmit_and_receive_a_batch(name):
    p = path(name)
    mem = bytearray(MEM)
    tx = Driver(mem, 16, RING, DATA, DATA + 0x10000, event_idx=True)
    rx = Driver(mem, 16, 0x20000, 0x24000, MEM, event_idx=True)
    gm = p.GuestMemory(mem)
    tq = p.SplitQueue(gm, 16, tx.ring.desc, tx.ring.avail, tx.ring.used, indirect=True)
    rq = p.SplitQueue(gm, 16, rx.ring.desc, rx.ring.avail, rx.ring.used, indirect=True)
    frames = [bytes([i]) * (60 + i) for i in range(5)]
    for f in frames:
        tx.add([bytes(12), f], [])
    sent = p.net_io.transmit(tq)
    assert [bytes(f) for f in sent] == frames and len(tx.get_used()) == 5
    for size in (12 + 64, 12 + 10, 12 + 70, 12 + 70):     # the second is too small
        rx.add([], [size])
    backlog = collections.deque(sent)
    delivered, dropped, nbytes = p.net_io.receive(rq, backlog)
    assert (delivered, dropped, len(backlog)) == (3, 1, 1)
    assert nbytes == 60 + 62 + 63
    used = rx.get_used()
    assert [n for _, n in used] == [12 + 60, 0, 12 + 62, 12 + 63]


class Port:
    def __init__(self):
        self.batches = []

    def deliver(self, frames):
        self.batches.append([bytes(f) for f in frames])


def frame(dst, src, body=b"x" * 50):
    return dst + src + b"\x08\x00" + body


def test_switch_hands_each_port_its_frames_in_one_batch():
    sw = Switch()
    a, b, c = Port(), Port(), Port()
    for port in (a, b, c):
        sw.connect(port)
    A, B, C = (bytes([2, 0, 0, 0, 0, i]) for i in (1, 2, 3))
    sw.send_batch(b, [frame(A, B)])                     # flooded: learn B
    sw.send_batch(c, [frame(A, C)])                     # flooded: learn C
    for port in (a, b, c):
        port.batches.clear()
    burst = [frame(B, A, b"1" * 50), frame(C, A, b"2" * 50), frame(B, A, b"3" * 50),
             frame(b"\xff" * 6, A), frame(B, A, b"\x00" * 2000)]        # last: too long
    sw.send_batch(a, burst)
    assert b.batches == [[burst[0], burst[2], burst[3]]]
    assert c.batches == [[burst[1], burst[3]]]
    assert a.batches == []
    assert (sw.forwarded, sw.flooded, sw.dropped) == (3, 3, 1)
