"""Reference model: the driver's side of a virtio split virtqueue (virtio 1.2, 2.7).

`Driver` lays a ring out in a bytearray the way a correct driver does, adds
chains (direct or indirect) over buffers with known contents, and takes used
entries back.  `expected_pop` is an independent reading of the rules a device
must apply to whatever is in memory -- the oracle for corrupted rings.  It is
written differently from hv/devices/virtqueue.py on purpose: loops are found
by revisiting an index, not by counting steps.
"""
import struct
from collections import namedtuple

DESC = struct.Struct("<QIHH")               # addr, len, flags, next (2.7.5)
NEXT, WRITE, INDIRECT = 1, 2, 4             # virtq_desc.flags
NO_INTERRUPT = 1                            # avail.flags (2.7.7)
NO_NOTIFY = 1                               # used.flags (2.7.10)
WRITABLE_FILL = 0xA5                        # what the driver puts in writable buffers

Layout = namedtuple("Layout", "desc avail used end")
InFlight = namedtuple("InFlight", "head readable writable descs allocations")


def align(x, a):
    return (x + a - 1) // a * a


def layout(size, base):
    """The three parts packed from base with the spec's alignments (2.7)."""
    desc = align(base, 16)
    avail = desc + 16 * size
    used = align(avail + 6 + 2 * size, 4)
    return Layout(desc, avail, used, used + 6 + 8 * size)


def crossed(event, old, new):
    """Did an index moving from old to new (mod 2^16) pass through `event`?
    Spelled out as a set, not with vring_need_event's arithmetic."""
    return event in {(old + k) & 0xFFFF for k in range((new - old) & 0xFFFF)}


def u16(mem, gpa):
    return int.from_bytes(mem[gpa:gpa + 2], "little")


def put16(mem, gpa, value):
    mem[gpa:gpa + 2] = (value & 0xFFFF).to_bytes(2, "little")


class Driver:
    """A correct driver for one queue in `mem`; buffers come from [data, data_end)."""

    def __init__(self, mem, size, base, data, data_end, event_idx=False, start=0):
        self.mem, self.size, self.event_idx = mem, size, event_idx
        self.ring = layout(size, base)
        self.data, self.data_end = data, data_end
        self.avail_idx = self.last_used = start & 0xFFFF
        self.free = list(range(size))
        self.allocated = []                      # (start, end), sorted
        self.in_flight = {}                      # head -> InFlight
        self.kicked = None                       # did the last add() notify?
        mem[self.ring.desc:self.ring.end] = bytes(self.ring.end - self.ring.desc)
        put16(mem, self.ring.avail + 2, self.avail_idx)
        put16(mem, self.ring.used + 2, self.last_used)   # as the device left it
        self.set_used_event(self.last_used)

    # -- buffers ---------------------------------------------------------
    def alloc(self, n, alignment=1):
        at = self.data
        for start, end in self.allocated:
            if align(at, alignment) + n <= start:
                break
            at = max(at, end)
        at = align(at, alignment)
        if at + n > self.data_end:
            return None
        self.allocated.append((at, at + n))
        self.allocated.sort()
        return at

    def release(self, allocations):
        for a in allocations:
            self.allocated.remove(a)

    # -- offering chains (2.7.13) ----------------------------------------
    def add(self, readable, writable, indirect=False):
        """Offer a chain: readable buffers (bytes), then writable ones (lengths).
        Returns the head, or None if descriptors or buffer space ran out."""
        n = len(readable) + len(writable)
        assert n > 0
        if len(self.free) < (1 if indirect else n) or (indirect and n > self.size):
            return None
        allocations, entries = [], []
        for length, contents in [(len(b), b) for b in readable] + [(w, None) for w in writable]:
            at = self.alloc(length)
            if at is None:
                self.release(allocations)
                return None
            allocations.append((at, at + length))
            self.mem[at:at + length] = contents if contents is not None else bytes([WRITABLE_FILL]) * length
            entries.append((at, length, 0 if contents is not None else WRITE))
        writable_ranges = tuple((at, length) for at, length, flags in entries if flags & WRITE)
        if indirect:
            table = self.alloc(16 * n, 16)
            if table is None:
                self.release(allocations)
                return None
            allocations.append((table, table + 16 * n))
            for i, (at, length, flags) in enumerate(entries):
                last = i == n - 1
                self.mem[table + 16 * i:table + 16 * i + 16] = DESC.pack(
                    at, length, flags | (0 if last else NEXT), 0 if last else i + 1)
            entries = [(table, 16 * n, INDIRECT)]
        descs = [self.free.pop() for _ in entries]
        for i, (at, length, flags) in enumerate(entries):
            last = i == len(entries) - 1
            self.write_desc(descs[i], at, length, flags | (0 if last else NEXT), 0 if last else descs[i + 1])
        old = self.avail_idx
        self.publish(descs[0])
        self.kicked = self.should_kick(old, self.avail_idx)
        self.in_flight[descs[0]] = InFlight(descs[0], b"".join(readable), writable_ranges,
                                            descs, allocations)
        return descs[0]

    def write_desc(self, i, addr, length, flags, nxt):
        d = self.ring.desc + 16 * i
        self.mem[d:d + 16] = DESC.pack(addr & (2**64 - 1), length, flags, nxt)

    def publish(self, head):
        """avail.ring[idx % size] = head, then idx + 1 (2.7.13.2, 2.7.13.3)."""
        put16(self.mem, self.ring.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        put16(self.mem, self.ring.avail + 2, self.avail_idx)

    def should_kick(self, old, new):
        """2.7.10: with EVENT_IDX, kick if avail.idx crossed avail_event; else unless NO_NOTIFY."""
        if self.event_idx:
            return crossed(u16(self.mem, self.ring.used + 4 + 8 * self.size), old, new)
        return not u16(self.mem, self.ring.used) & NO_NOTIFY

    # -- interrupt hints (2.7.7) -------------------------------------------
    def set_no_interrupt(self, on):
        put16(self.mem, self.ring.avail, NO_INTERRUPT if on else 0)

    def set_used_event(self, value):
        put16(self.mem, self.ring.avail + 4 + 2 * self.size, value)

    # -- taking used buffers back (2.7.14) ---------------------------------
    def get_used(self):
        """All new used elements as [(id, len)]; their descriptors and buffers are freed."""
        out = []
        used_idx = u16(self.mem, self.ring.used + 2)
        while self.last_used != used_idx:
            slot = self.ring.used + 4 + 8 * (self.last_used % self.size)
            head, length = struct.unpack_from("<II", self.mem, slot)
            chain = self.in_flight.pop(head)
            self.free.extend(reversed(chain.descs))
            self.release(chain.allocations)
            out.append((head, length))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out


# -- the oracle: what a device must make of the ring ------------------------
def _chain(read, first, count):
    """[(addr, len, flags)] along NEXT links, or None if an index leaves the
    table or comes round again."""
    out, seen, i = [], set(), first
    while True:
        if i >= count or i in seen:
            return None
        seen.add(i)
        addr, length, flags, nxt = read(i)
        out.append((addr, length, flags))
        if not flags & NEXT:
            return out
        i = nxt


def expected_pop(mem, size, ring, last_avail, seen_avail, indirect_ok, max_readable):
    """What pop() must do: ("error",), ("empty",) or ("chain", Chain-like tuple)."""
    idx = u16(mem, ring.avail + 2)
    pending, seen = (idx - last_avail) & 0xFFFF, (seen_avail - last_avail) & 0xFFFF
    if pending > size or pending < seen:
        return ("error",)
    if pending == 0:
        return ("empty",)
    head = u16(mem, ring.avail + 4 + 2 * (last_avail % size))
    direct = _chain(lambda i: DESC.unpack_from(mem, ring.desc + 16 * i), head, size)
    if direct is None:
        return ("error",)
    buffers = []
    for addr, length, flags in direct:
        if not flags & INDIRECT:
            buffers.append((addr, length, flags & WRITE))
            continue
        if (not indirect_ok or flags & NEXT or length == 0 or length % 16
                or length > 16 * size or addr + length > len(mem)):
            return ("error",)
        table = bytes(mem[addr:addr + length])
        entries = _chain(lambda i: DESC.unpack_from(table, 16 * i), 0, length // 16)
        if entries is None or any(f & INDIRECT for _, _, f in entries):
            return ("error",)
        buffers += [(a, n, f & WRITE) for a, n, f in entries]
    kinds = [w for _, _, w in buffers]
    if kinds != sorted(kinds) or any(a + n > len(mem) for a, n, _ in buffers):
        return ("error",)
    readable = [(a, n) for a, n, w in buffers if not w]
    writable = tuple((a, n) for a, n, w in buffers if w)
    if sum(n for _, n, _ in buffers) > 2**32 or sum(n for _, n in readable) > max_readable:
        return ("error",)
    data = b"".join(bytes(mem[a:a + n]) for a, n in readable)
    return ("chain", (head, data, writable, sum(n for _, n in writable)))
