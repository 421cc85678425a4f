"""Reference model of event channels and grant copy across partitions
(docs/channels.md): what each hypercall must answer and change, written
from abi.h's rules alone, so the C core (csrc/evtchn.c, csrc/grant.c) can
be held to it call by call.

The model keeps, per partition: the permitted peers, the port table
(state, peer, remote port, vCPU), the pending event bits a send sets, and
the grant table's place; grant entries and frames live in the partitions'
RAM, which the test shares with the core, so the model reads them there.
"""
import struct

from hv.abi import lib

FREE, RESERVED, UNBOUND, INTERDOMAIN = (lib.HV_EVTCHN_FREE, lib.HV_EVTCHN_RESERVED,
                                        lib.HV_EVTCHN_UNBOUND, lib.HV_EVTCHN_INTERDOMAIN)
PORTS, FIRST, PAGE = lib.HV_EVTCHN_PORTS, lib.HV_EVTCHN_FIRST, lib.HV_PAGE_SIZE
ENTRY = struct.Struct("<HHI")            # struct hv_grant_entry
MARKS = lib.HV_GTF_READING | lib.HV_GTF_WRITING


class Port:
    __slots__ = ("state", "peer", "remote", "vcpu")

    def __init__(self, state=FREE, peer=0, remote=0, vcpu=0):
        self.state, self.peer, self.remote, self.vcpu = state, peer, remote, vcpu

    def as_tuple(self):
        return (self.state, self.peer, self.remote, self.vcpu)


class Part:
    def __init__(self, pid, ram, owned):
        self.id = pid
        self.ram = ram                   # shared with the core (a memoryview)
        self.owned = owned               # fn(gpa, len) -> the partition owns it
        self.permitted = set()
        self.ports = [Port(RESERVED if i < FIRST else FREE) for i in range(PORTS)]
        self.pending = set()             # event bits raised by sends
        self.table = None                # (gpa, count)
        self.alive = True


class ChannelsModel:
    def __init__(self):
        self.parts = {}

    def add(self, pid, ram, owned):
        self.parts[pid] = Part(pid, ram, owned)

    def permit(self, a, b):
        self.parts[a].permitted.add(b)
        self.parts[b].permitted.add(a)

    def _live(self, pid):
        p = self.parts.get(pid)
        return p if p is not None and p.alive else None

    def _free_port(self, p):
        for i in range(FIRST, PORTS):
            if p.ports[i].state == FREE:
                return i
        return None

    # -- event channels ----------------------------------------------------
    def alloc_unbound(self, me, peer):
        p = self.parts[me]
        if peer == me:
            return -lib.HV_EINVAL
        if peer not in p.permitted:
            return -lib.HV_EPERM
        port = self._free_port(p)
        if port is None:
            return -lib.HV_ENOSPC
        p.ports[port] = Port(UNBOUND, peer)
        return port

    def bind_interdomain(self, me, peer, remote):
        p = self.parts[me]
        if peer == me:
            return -lib.HV_EINVAL
        if peer not in p.permitted:
            return -lib.HV_EPERM
        if remote >= PORTS:
            return -lib.HV_EINVAL
        q = self._live(peer)
        if q is None:
            return -lib.HV_ENOENT
        rp = q.ports[remote]
        if rp.state != UNBOUND or rp.peer != me:
            return -lib.HV_EINVAL
        port = self._free_port(p)
        if port is None:
            return -lib.HV_ENOSPC
        p.ports[port] = Port(INTERDOMAIN, peer, remote)
        rp.state, rp.remote = INTERDOMAIN, port
        return port

    def _channel_port(self, p, port):
        return port < PORTS and p.ports[port].state in (UNBOUND, INTERDOMAIN)

    def send(self, me, port):
        p = self.parts[me]
        if not self._channel_port(p, port):
            return -lib.HV_EINVAL
        if p.ports[port].state != INTERDOMAIN:
            return -lib.HV_ENOTCONN
        self.parts[p.ports[port].peer].pending.add(p.ports[port].remote)
        return 0

    def close(self, me, port):
        p = self.parts[me]
        if not self._channel_port(p, port):
            return -lib.HV_EINVAL
        old = p.ports[port]
        p.ports[port] = Port()
        if old.state == INTERDOMAIN:
            rp = self.parts[old.peer].ports[old.remote]
            rp.state, rp.remote = UNBOUND, 0    # offered back to us
            self.parts[old.peer].pending.add(old.remote)   # and its waiter woken
        return 0

    def bind_vcpu(self, me, port, vcpu):
        p = self.parts[me]
        if not self._channel_port(p, port) or vcpu != 0:
            return -lib.HV_EINVAL
        p.ports[port].vcpu = vcpu
        return 0

    def status(self, me, port):
        if port >= PORTS:
            return -lib.HV_EINVAL
        return self.parts[me].ports[port].as_tuple()

    def destroy(self, me):
        p = self.parts[me]
        for port in range(FIRST, PORTS):
            self.close(me, port)
        p.alive = False

    # -- grants ---------------------------------------------------------------
    def table_register(self, me, gpa, count):
        p = self.parts[me]
        if count > lib.HV_GRANT_REFS_MAX:
            return -lib.HV_E2BIG
        if gpa % 8:
            return -lib.HV_EINVAL
        if count and not p.owned(gpa, count * 8):
            return -lib.HV_EFAULT
        p.table = (gpa, count) if count else None
        return 0

    def _entry_at(self, p, ref):
        """(gpa of the entry, None) or (None, error)."""
        if p.table is None:
            return None, -lib.HV_ENOENT
        gpa, count = p.table
        if ref >= count:
            return None, -lib.HV_EINVAL
        at = gpa + 8 * ref
        if not p.owned(at, 8):
            return None, -lib.HV_EFAULT
        return at, None

    def copy(self, me, granter, ref, offset, length, to_peer, flags_extra=0):
        """Status of one segment; the bytes are moved by the caller of the
        model (it knows the buffers) when the status is 0: returns
        (status, granter frame gpa or None)."""
        if flags_extra or offset + length > PAGE:
            return -lib.HV_EINVAL, None
        if me > 0xffff:                 # entries name peers in 16 bits: never this caller
            return -lib.HV_EPERM, None
        if granter == me or granter not in self.parts[me].permitted:
            return -lib.HV_EPERM, None
        g = self._live(granter)
        if g is None:
            return -lib.HV_ENOENT, None
        at, err = self._entry_at(g, ref)
        if at is None:
            return (-lib.HV_ENOENT if err == -lib.HV_EFAULT else err), None
        flags, domid, frame = ENTRY.unpack_from(g.ram, at)
        if (flags & lib.HV_GTF_TYPE_MASK) != lib.HV_GTF_PERMIT_ACCESS or domid != me \
                or (to_peer and flags & lib.HV_GTF_READONLY):
            return -lib.HV_EPERM, None
        if not g.owned(frame * PAGE, PAGE):
            return -lib.HV_EPERM, None
        if flags & MARKS:
            return -lib.HV_EAGAIN, None
        return 0, frame * PAGE + offset

    def grant_end(self, me, ref):
        p = self.parts[me]
        at, err = self._entry_at(p, ref)
        if at is None:
            return err
        if ENTRY.unpack_from(p.ram, at)[0] & MARKS:
            return -lib.HV_EBUSY
        p.ram[at:at + 8] = bytes(8)
        return 0
