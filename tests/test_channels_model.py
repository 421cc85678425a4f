"""Event channels and grant copy across three partitions, driven through
the real dispatcher (the 'none' engine: no guest runs) and held call by
call to the reference model in tests/models/channels.py.

Partitions A, B, C: the parent permits A-B and B-C, never A-C.  A
Hypothesis state machine allocates, binds, sends, closes, queries ports;
writes grant entries straight into the granter's RAM (as its guest would,
including hv's in-use marks, to stand for a copy in flight), registers
tables at good and bad places, copies in batches, ends access; and may
destroy C while its ports and grants are in use.  After every step each
partition's pending event bits must be exactly the model's, and every
byte of the buffers and granted frames what the model says.
"""
import os
import struct

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hv.abi import ffi, lib
from hv.testing.core import Core
from hv.testing.isolate import run_isolated
from models.channels import ENTRY, ChannelsModel

MEM = 1 << 20
EVENT_PAGE, STATUS_OUT, SEGS, TABLE, HV_PAGE = 0x6000, 0x7000, 0x7100, 0x8000, 0x9000
BUF, BUF_LEN = 0x10000, 0x1000
FRAMES = range(0x20, 0x28)                       # frames a partition grants from
SEG = struct.Struct("<QIIHHHHiI")                # struct hv_grant_copy_seg
PERMITTED = [(0, 1), (1, 2)]

PORT_EDGES = [0, 1, 32, 63, 64, 65, 200, 511, 512, 513, 1 << 32]
refs = st.one_of(st.integers(0, 3), st.integers(0, 18))
frames = st.one_of(st.sampled_from(list(FRAMES)), st.sampled_from([0, HV_PAGE >> 12, (MEM >> 12) + 3, 0xffffffff]))
# (caller, peer) index pairs, mostly ones the parent permitted; peer 3..5
# names no partition (0, an unused id, a value beyond 32 bits).
pairs = st.one_of(st.sampled_from([(0, 1), (1, 0), (1, 2), (2, 1)] * 3 + [(0, 2), (2, 0), (1, 1)]),
                  st.tuples(st.integers(0, 2), st.integers(0, 5)))
gflags = st.sampled_from([0, 1, 2, 3, 1 | 4, 1 | 8, 1 | 16, 1 | 4 | 8, 0xffe1])


class Channels(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.cores = [Core(MEM) for _ in range(3)]
        self.ids = [lib.hv_partition_id(c.p) for c in self.cores]
        self.model = ChannelsModel()
        for core, pid in zip(self.cores, self.ids):
            lib.hv_partition_reserve(core.p, HV_PAGE, 0x1000)    # a frame that is hv's
            assert core.call(lib.HV_HC_EVENT_REGISTER, EVENT_PAGE, 40) == (0, None)
            self.model.add(pid, core.ram, lambda gpa, n, p=core.p: self._owned(p, gpa, n))
            assert core.call(lib.HV_HC_GRANT_TABLE_REGISTER, TABLE, 16) == (0, None)
            self.model.table_register(pid, TABLE, 16)
        for a, b in PERMITTED:
            assert lib.hv_channel_permit(self.cores[a].p, self.cores[b].p) == 0
            self.model.permit(self.ids[a], self.ids[b])
        self.alive = [True, True, True]

    @staticmethod
    def _owned(p, gpa, n):
        if gpa >= MEM or n > MEM - gpa:
            return False
        return all(lib.hv_partition_frame_owner(p, f * 4096) == lib.hv_partition_id(p)
                   for f in range(gpa // 4096, (gpa + n - 1) // 4096 + 1))

    def teardown(self):
        for core, alive in zip(self.cores, self.alive):
            if alive:
                core.close()

    def who(self, i):
        return self.cores[i], self.ids[i]

    def peer_id(self, j):
        return self.ids[j] if j < 3 else [0, 99999, 1 << 32][j - 3]

    def ports_of(self, i):
        p = self.model.parts[self.ids[i]]
        return [n for n, port in enumerate(p.ports) if port.state in (2, 3)]

    def call(self, i, nr, *args):
        result, kind = self.cores[i].call(nr, *args)
        assert kind is None, "a channel hypercall never goes to the parent"
        return result

    # -- ports --------------------------------------------------------------
    @rule(pair=pairs)
    def alloc_unbound(self, pair):
        i, j = pair
        if not self.alive[i]:
            return
        got = self.call(i, lib.HV_HC_EVTCHN_ALLOC_UNBOUND, self.peer_id(j))
        assert got == self.model.alloc_unbound(self.ids[i], self.peer_id(j))

    @rule(pair=pairs, data=st.data())
    def bind_interdomain(self, pair, data):
        i, j = pair
        if not self.alive[i]:
            return
        offered = [n for n, port in enumerate(self.model.parts[self.ids[j]].ports)
                   if port.state == 2 and port.peer == self.ids[i]] if j < 3 else []
        choices = offered * 4 + (self.ports_of(j) if j < 3 else [])
        remote = data.draw(st.sampled_from(choices + PORT_EDGES))
        got = self.call(i, lib.HV_HC_EVTCHN_BIND_INTERDOMAIN, self.peer_id(j), remote)
        assert got == self.model.bind_interdomain(self.ids[i], self.peer_id(j), remote)

    @rule(pair=pairs)
    def connect(self, pair):
        """The usual handshake in one step: j offers a port to i, i binds it."""
        i, j = pair
        if j > 2 or not (self.alive[i] and self.alive[j]):
            return
        offered = self.call(j, lib.HV_HC_EVTCHN_ALLOC_UNBOUND, self.ids[i])
        assert offered == self.model.alloc_unbound(self.ids[j], self.ids[i])
        if offered >= 0:
            got = self.call(i, lib.HV_HC_EVTCHN_BIND_INTERDOMAIN, self.ids[j], offered)
            assert got == self.model.bind_interdomain(self.ids[i], self.ids[j], offered)

    def draw_port(self, i, data):
        return data.draw(st.sampled_from(self.ports_of(i) * 4 + PORT_EDGES))

    @rule(i=st.integers(0, 2), data=st.data())
    def send(self, i, data):
        if self.alive[i]:
            port = self.draw_port(i, data)
            assert self.call(i, lib.HV_HC_EVTCHN_SEND, port) == self.model.send(self.ids[i], port)

    @rule(i=st.integers(0, 2), data=st.data())
    def close(self, i, data):
        if self.alive[i]:
            port = self.draw_port(i, data)
            assert self.call(i, lib.HV_HC_EVTCHN_CLOSE, port) == self.model.close(self.ids[i], port)

    @rule(i=st.integers(0, 2), vcpu=st.sampled_from([0, 1, 1 << 40]), data=st.data())
    def bind_vcpu(self, i, vcpu, data):
        if self.alive[i]:
            port = self.draw_port(i, data)
            got = self.call(i, lib.HV_HC_EVTCHN_BIND_VCPU, port, vcpu)
            assert got == self.model.bind_vcpu(self.ids[i], port, vcpu)

    @rule(i=st.integers(0, 2), data=st.data())
    def status(self, i, data):
        if not self.alive[i]:
            return
        port = self.draw_port(i, data)
        core = self.cores[i]
        got = self.call(i, lib.HV_HC_EVTCHN_STATUS, port, STATUS_OUT)
        want = self.model.status(self.ids[i], port)
        if isinstance(want, int):
            assert got == want
        else:
            assert got == 0
            assert struct.unpack_from("<4I", core.ram, STATUS_OUT) == want
        assert self.call(i, lib.HV_HC_EVTCHN_STATUS, 100, MEM - 4) == -lib.HV_EFAULT

    # -- grants ---------------------------------------------------------------
    @rule(i=st.integers(0, 2), gpa=st.sampled_from([TABLE, TABLE + 4, HV_PAGE, HV_PAGE - 8, MEM - 8, 0]),
          count=st.sampled_from([0, 1, 16, 2, lib.HV_GRANT_REFS_MAX, lib.HV_GRANT_REFS_MAX + 1]))
    def table_register(self, i, gpa, count):
        if self.alive[i]:
            got = self.call(i, lib.HV_HC_GRANT_TABLE_REGISTER, gpa, count)
            assert got == self.model.table_register(self.ids[i], gpa, count)

    @rule(i=st.integers(0, 2), ref=refs, flags=gflags, j=st.integers(0, 4), frame=frames)
    def write_entry(self, i, ref, flags, j, frame):
        """The granter's guest writes an entry (anything it likes)."""
        if self.alive[i]:
            domid = self.peer_id(j) & 0xffff
            ENTRY.pack_into(self.cores[i].ram, TABLE + 8 * ref, flags, domid, frame)

    @rule(pair=pairs, ref=st.integers(0, 3),
          frame=st.sampled_from(list(FRAMES)), readonly=st.booleans(),
          mark=st.sampled_from([0, 0, lib.HV_GTF_READING, lib.HV_GTF_WRITING]))
    def write_good_entry(self, pair, ref, frame, readonly, mark):
        i, j = pair
        if j > 2:
            return
        """A grant as a well-behaved granter writes it, maybe with a copy in flight."""
        if self.alive[i]:
            flags = lib.HV_GTF_PERMIT_ACCESS | (lib.HV_GTF_READONLY if readonly else 0) | mark
            ENTRY.pack_into(self.cores[i].ram, TABLE + 8 * ref, flags, self.ids[j], frame)

    @rule(i=st.integers(0, 2), ref=refs)
    def grant_end(self, i, ref):
        if self.alive[i]:
            got = self.call(i, lib.HV_HC_GRANT_END, ref)
            assert got == self.model.grant_end(self.ids[i], ref)

    @rule(pair=pairs, segs=st.lists(st.tuples(
              st.sampled_from([None] * 6 + [0, 1, 2, 3, 4]), refs, st.one_of(st.integers(0, 64), st.integers(0, 4096)), st.integers(0, 600), st.booleans(),
              st.sampled_from([0, 0, 0, 2])), min_size=0, max_size=4))
    def grant_copy(self, pair, segs):
        """Segments from the pair's granter mostly (None), sometimes another."""
        self.copy_and_check(pair, segs)

    def copy_and_check(self, pair, segs):
        i, granter_index = pair
        if not self.alive[i]:
            return
        core, me = self.who(i)
        core.ram[BUF:BUF + BUF_LEN] = os.urandom(BUF_LEN)
        # What memory must look like afterwards: simulate on copies.
        views = {k: bytearray(self.cores[k].ram[FRAMES[0] << 12:(FRAMES[-1] + 1) << 12])
                 for k in range(3) if self.alive[k]}
        buf = bytearray(core.ram[BUF:BUF + BUF_LEN])
        want = []
        for n, (j, ref, offset, length, to_peer, extra) in enumerate(segs):
            j = granter_index if j is None else j
            granter = self.peer_id(j) & 0xffffffff       # the field is 32 bits
            at = BUF + 512 * n
            SEG.pack_into(core.ram, SEGS + n * SEG.size, at, granter, ref, offset, length,
                          (1 if to_peer else 0) | extra, 0, 0x7eadbeef, 0)
            status, gpa = self.model.copy(me, granter, ref, offset, length, to_peer, extra)
            want.append(status)
            if status == 0 and length:
                assert FRAMES[0] << 12 <= gpa and gpa + length <= (FRAMES[-1] + 1) << 12
                rel, b = gpa - (FRAMES[0] << 12), at - BUF
                frame_bytes = views[j]
                if to_peer:
                    frame_bytes[rel:rel + length] = buf[b:b + length]
                else:
                    buf[b:b + length] = frame_bytes[rel:rel + length]
        assert self.call(i, lib.HV_HC_GRANT_COPY, SEGS, len(segs)) == 0
        got = [SEG.unpack_from(core.ram, SEGS + n * SEG.size)[7] for n in range(len(segs))]
        assert got == want
        assert bytes(core.ram[BUF:BUF + BUF_LEN]) == bytes(buf)
        for k, view in views.items():
            assert bytes(self.cores[k].ram[FRAMES[0] << 12:(FRAMES[-1] + 1) << 12]) == bytes(view)

    @rule(pair=pairs, ref=st.integers(0, 3), frame=st.sampled_from(list(FRAMES)),
          readonly=st.booleans(), segs=st.lists(st.tuples(
              st.just(None), st.integers(0, 3), st.integers(0, 4096), st.integers(0, 600),
              st.booleans(), st.just(0)), min_size=1, max_size=3))
    def grant_then_copy(self, pair, ref, frame, readonly, segs):
        """The granter grants a frame to the caller, which copies at once."""
        i, g = pair
        if g > 2 or not self.alive[g]:
            return
        flags = lib.HV_GTF_PERMIT_ACCESS | (lib.HV_GTF_READONLY if readonly else 0)
        ENTRY.pack_into(self.cores[g].ram, TABLE + 8 * ref, flags, self.ids[i] & 0xffff, frame)
        self.copy_and_check(pair, [(None, ref) + seg[2:] for seg in segs])

    @rule(i=st.integers(0, 2))
    def grant_copy_bad_array(self, i):
        if self.alive[i]:
            assert self.call(i, lib.HV_HC_GRANT_COPY, SEGS, lib.HV_GRANT_COPY_MAX + 1) == -lib.HV_E2BIG
            assert self.call(i, lib.HV_HC_GRANT_COPY, MEM - 16, 1) == -lib.HV_EFAULT
            assert self.call(i, lib.HV_HC_GRANT_COPY, HV_PAGE, 1) == -lib.HV_EFAULT

    # -- teardown ---------------------------------------------------------------
    @precondition(lambda self: self.alive[2])
    @rule(now=st.integers(0, 7))
    def destroy_c(self, now):
        """C goes away with its ports bound and its grants live (late in a run, mostly)."""
        if now:
            return
        self.cores[2].close()
        self.alive[2] = False
        self.model.destroy(self.ids[2])

    @invariant()
    def ports_are_the_models(self):
        """Every port the model knows of, and every port either end names."""
        for k in range(3):
            if not self.alive[k]:
                continue
            part = self.model.parts[self.ids[k]]
            ports = set(self.ports_of(k)) | {64, 65, 511}
            for other in self.model.parts.values():
                for port in other.ports:
                    if port.state == 3 and port.peer == self.ids[k]:
                        ports.add(port.remote)
            for port in ports:
                assert self.call(k, lib.HV_HC_EVTCHN_STATUS, port, STATUS_OUT) == 0
                got = struct.unpack_from("<4I", self.cores[k].ram, STATUS_OUT)
                assert got == part.ports[port].as_tuple(), (k, port)

    @invariant()
    def events_are_the_models(self):
        for k in range(3):
            if not self.alive[k]:
                continue
            ram = self.cores[k].ram
            words = struct.unpack_from("<8Q", ram, EVENT_PAGE)
            got = {w * 64 + b for w in range(8) for b in range(64) if words[w] >> b & 1}
            assert got == self.model.parts[self.ids[k]].pending
            ram[EVENT_PAGE:EVENT_PAGE + 64] = bytes(64)
            self.model.parts[self.ids[k]].pending.clear()


def _run_machine():
    from hypothesis.stateful import run_state_machine_as_test
    run_state_machine_as_test(Channels, settings=settings(
        max_examples=80, stateful_step_count=40, deadline=None,
        suppress_health_check=list(HealthCheck)))


def test_ports_and_grants_follow_the_model():
    run_isolated(_run_machine)


def test_permit_rules():
    with Core(MEM) as a, Core(MEM) as b:
        assert lib.hv_channel_permit(a.p, a.p) < 0
        assert lib.hv_channel_permit(a.p, b.p) == 0
        assert lib.hv_channel_permit(b.p, a.p) == 0        # twice is fine
        port = a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, lib.hv_partition_id(b.p))[0]
        assert port >= lib.HV_EVTCHN_FIRST


def test_every_port_can_be_taken_and_one_more_fails():
    with Core(MEM) as a, Core(MEM) as b:
        assert lib.hv_channel_permit(a.p, b.p) == 0
        peer = lib.hv_partition_id(b.p)
        got = [a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, peer)[0]
               for _ in range(lib.HV_EVTCHN_PORTS - lib.HV_EVTCHN_FIRST)]
        assert got == list(range(lib.HV_EVTCHN_FIRST, lib.HV_EVTCHN_PORTS))
        assert a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, peer) == (-lib.HV_ENOSPC, None)
        assert a.call(lib.HV_HC_EVTCHN_CLOSE, 100) == (0, None)
        assert a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, peer) == (100, None)


def _wide_ids():
    """Partition ids only grow, so a long-lived parent gets past 65535.
    A grant entry names its peer in 16 bits: a caller whose id is
    65536 + X must not be given what was granted to X, and a granter with
    a wide id still grants to narrow ones."""
    granter, narrow = Core(MEM), Core(MEM)
    want = lib.hv_partition_id(narrow.p) + 0x10000
    pp = ffi.new("struct hv_partition **")
    while True:                                     # burn ids: ~15 us each
        assert lib.hv_partition_create(lib.HV_ENGINE_NONE, MEM, pp) == 0
        last = lib.hv_partition_id(pp[0])
        lib.hv_partition_destroy(pp[0])
        if last + 1 == want:
            break
    wide = Core(MEM)
    assert lib.hv_partition_id(wide.p) == want
    ids = [lib.hv_partition_id(c.p) for c in (granter, narrow, wide)]
    for other in (narrow, wide):
        assert lib.hv_channel_permit(granter.p, other.p) == 0
    assert lib.hv_channel_permit(wide.p, narrow.p) == 0
    results = {}
    for g, peer in ((granter, narrow), (wide, narrow)):
        g.ram[TABLE:TABLE + 8] = ENTRY.pack(lib.HV_GTF_PERMIT_ACCESS, lib.hv_partition_id(peer.p) & 0xffff,
                                           FRAMES[0])
        g.ram[FRAMES[0] << 12:(FRAMES[0] << 12) + 8] = b"granted!"
        assert g.call(lib.HV_HC_GRANT_TABLE_REGISTER, TABLE, 1) == (0, None)
    for name, caller, g in (("alias", wide, granter), ("intended", narrow, granter),
                            ("wide granter", narrow, wide)):
        caller.ram[BUF:BUF + 8] = bytes(8)
        SEG.pack_into(caller.ram, SEGS, BUF, lib.hv_partition_id(g.p), 0, 0, 8, 0, 0, 1, 0)
        assert caller.call(lib.HV_HC_GRANT_COPY, SEGS, 1) == (0, None)
        results[name] = (SEG.unpack_from(caller.ram, SEGS)[7], bytes(caller.ram[BUF:BUF + 8]))
    return ids, results


def test_grant_copy_checks_id_width():
    ids, results = run_isolated(_wide_ids, timeout=120)
    assert ids[2] == ids[1] + 0x10000
    assert results["alias"] == (-lib.HV_EPERM, bytes(8))
    assert results["intended"] == (0, b"granted!")
    assert results["wide granter"] == (0, b"granted!")


def _pending(core, vcpu):
    words = struct.unpack_from("<8Q", core.ram, EVENT_PAGE + vcpu * lib.HV_VCPU_EVENTS_SIZE)
    return {w * 64 + b for w in range(8) for b in range(64) if words[w] >> b & 1}


def test_a_port_bound_to_a_vcpu_is_raised_there():
    """evtchn_bind_vcpu on an SMP partition: the peer's sends set the bit in
    that vCPU's block of the event page and nowhere else; a closed and
    reallocated port is delivered to vCPU 0 again."""
    with Core(MEM, vcpus=2) as a, Core(MEM) as b:
        assert lib.hv_channel_permit(a.p, b.p) == 0
        ida, idb = lib.hv_partition_id(a.p), lib.hv_partition_id(b.p)
        for core in (a, b):
            assert core.call(lib.HV_HC_EVENT_REGISTER, EVENT_PAGE, 40) == (0, None)
        port, _ = a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, idb)
        mine, _ = b.call(lib.HV_HC_EVTCHN_BIND_INTERDOMAIN, ida, port)
        assert port >= lib.HV_EVTCHN_FIRST and mine >= lib.HV_EVTCHN_FIRST
        assert a.call(lib.HV_HC_EVTCHN_BIND_VCPU, port, 2) == (-lib.HV_EINVAL, None)    # 0 and 1
        assert a.call(lib.HV_HC_EVTCHN_BIND_VCPU, lib.HV_EVENT_TIMER, 1) == (-lib.HV_EINVAL, None)
        assert a.call(lib.HV_HC_EVTCHN_BIND_VCPU, port, 1) == (0, None)
        assert a.call(lib.HV_HC_EVTCHN_STATUS, port, STATUS_OUT) == (0, None)
        assert struct.unpack_from("<4I", a.ram, STATUS_OUT) == (lib.HV_EVTCHN_INTERDOMAIN, idb, mine, 1)
        assert b.call(lib.HV_HC_EVTCHN_SEND, mine) == (0, None)
        assert port in _pending(a, 1) and port not in _pending(a, 0)
        # Closed, then offered anew: the same number, back on vCPU 0.
        assert a.call(lib.HV_HC_EVTCHN_CLOSE, port) == (0, None)
        assert a.call(lib.HV_HC_EVTCHN_ALLOC_UNBOUND, idb) == (port, None)
        assert b.call(lib.HV_HC_EVTCHN_CLOSE, mine) == (0, None)
        mine, _ = b.call(lib.HV_HC_EVTCHN_BIND_INTERDOMAIN, ida, port)
        a.ram[EVENT_PAGE:EVENT_PAGE + 2 * lib.HV_VCPU_EVENTS_SIZE] = bytes(2 * lib.HV_VCPU_EVENTS_SIZE)
        assert b.call(lib.HV_HC_EVTCHN_SEND, mine) == (0, None)
        assert port in _pending(a, 0) and port not in _pending(a, 1)
