"""The device side of a virtio split virtqueue (virtio 1.2, section 2.7).

The driver (the guest) owns the descriptor table and the available ring; the
device owns the used ring.  Everything the guest wrote is untrusted, so:

- pop() reads avail.idx once, each descriptor once and each readable buffer
  once, and hands the device a Chain built from those copies (XSA-155);
- every index is checked against its table, every buffer range against guest
  RAM, and every walk is bounded: at most `size` descriptors in the
  descriptor table and at most `size` in one indirect table, so a loop ends;
- the device's own indices (last_avail, used_idx) live here and are never
  read back from guest memory.

Error rule: every guest mistake raises QueueError -- a guest range outside
RAM too (the GuestMemoryError is its __cause__) -- and halts the queue: every
later call raises QueueError until the transport resets the device (it sets
DEVICE_NEEDS_RESET, 2.1.2) and builds a new SplitQueue (XSA-229: a bogus
producer index halts the ring, it is not processed).  A failing pop() writes
nothing to guest memory and consumes nothing.  Mistakes of the calling
device (a head >= size, more bytes than the chain holds) raise ValueError.

T:664 Compiled by Cython as hv.devices._virtqueue_compiled (setup.py); the
annotations are Cython's pure-Python mode, so this same file is also the
pure-Python path (hv/devices/datapath.py picks one; the reference-model
tests run both).

Use from a device, for one kick (2.7.10, notification suppression):

    q.disable_kicks()
    while True:
        while (chain := q.pop()) is not None:
            q.push(chain, q.write(chain, serve(chain.readable)))
        if not q.enable_kicks():        # re-check: buffers added meanwhile?
            break
    if q.should_notify():
        interrupt the guest
"""
try:
    import cython
except ImportError:                 # the pure path where Cython is not installed
    from hv.devices import cython_shim as cython

import struct
from collections import namedtuple

from hv.devices.errors import GuestMemoryError, NotGuestFrameError, QueueError

__all__ = ["Chain", "QueueError", "SplitQueue", "vring_need_event", "first_bytes"]

DESC = struct.Struct("<QIHH")          # struct virtq_desc: addr, len, flags, next (2.7.5)
USED_ELEM = struct.Struct("<II")       # struct virtq_used_elem: id, len (2.7.8)
DESC_SIZE, USED_ELEM_SIZE = 16, 8      # DESC.size, USED_ELEM.size as C constants
DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT = 1, 2, 4
AVAIL_F_NO_INTERRUPT = 1               # avail.flags: driver needs no interrupt (2.7.7)
USED_F_NO_NOTIFY = 1                   # used.flags: device needs no kick (2.7.10)
MAX_QUEUE_SIZE = 32768                 # 2.7: a power of 2, at most 32768
MAX_CHAIN_BYTES = 1 << 32              # 2.7.5.2: no chain longer than 2^32 bytes
MAX_READABLE = 16 << 20                # default bound on bytes one pop() copies (XSA-392)


class Chain(namedtuple("Chain", "head readable writable writable_len")):
    """One popped request: the head descriptor index (its id in the used
    ring), the readable bytes as copied once, the writable buffers as
    ((gpa, len), ...) in chain order, and their total length.

    Two attributes, not fields (a chain still unpacks as four):
    `uncopied` lists the readable buffers past the bytes pop(copy=N) copied,
    as ((gpa, len), ...), for data the device passes on without reading it
    (a disk write's payload, written to the file straight from guest RAM).
    `refused` lists buffers in frames the guest does not own, when the
    queue was built with refuse_foreign=True: then nothing readable was
    copied (readable is b""), and the device answers the request with an
    error of its own (blk: IOERR)."""

    refused = ()
    uncopied = ()


def new_chain(head, readable, writable, writable_len):
    """Chain(...) without namedtuple's __new__, which is Python code: one
    request pays for it once, so it is skipped here."""
    return tuple.__new__(Chain, (head, readable, writable, writable_len))


def vring_need_event(event, new, old):
    """True if `event` lies in [old, new) modulo 2^16: the index moved from
    old to new and crossed the one the other side asked about (2.7.7, 2.7.10)."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


def first_bytes(ranges, n):
    """The part of ((gpa, len), ...) that holds its first n bytes."""
    out = []
    for gpa, length in ranges:
        if n <= 0:
            break
        take = min(length, n)
        out.append((gpa, take))
        n -= take
    return out


def past_bytes(ranges, n):
    """The part of ((gpa, len), ...) past its first n bytes."""
    out = []
    for gpa, length in ranges:
        skip = min(length, n)
        n -= skip
        if length > skip:
            out.append((gpa + skip, length - skip))
    return out


@cython.cclass
class SplitQueue:
    """The device's view of one split virtqueue at guest-physical desc/avail/used."""

    mem = cython.declare(object, visibility="public")       # a GuestMemory
    size = cython.declare(cython.uint, visibility="public")
    desc = cython.declare(cython.ulonglong, visibility="public")
    avail = cython.declare(cython.ulonglong, visibility="public")
    used = cython.declare(cython.ulonglong, visibility="public")
    event_idx = cython.declare(cython.bint, visibility="public")
    indirect = cython.declare(cython.bint, visibility="public")
    refuse_foreign = cython.declare(cython.bint, visibility="public")
    max_readable = cython.declare(cython.longlong, visibility="public")
    last_avail = cython.declare(cython.uint, visibility="public")   # next avail.ring entry to consume
    used_idx = cython.declare(cython.uint, visibility="public")     # what we last stored in used.idx
    # Readable from Python on both paths (a saved queue needs them; the
    # core's frame mover, hv/devices/net.py T:687, moves _seen_avail).
    _seen_avail = cython.declare(cython.uint, visibility="public")     # avail.idx as last read (a C mover sets it too)
    _signalled = cython.declare(cython.uint, visibility="readonly")    # used_idx at the last should_notify()
    halted = cython.declare(object, visibility="public")   # why, once the guest broke the ring

    def __init__(self, mem, size, desc, avail, used, event_idx=False, indirect=False,
                 last_avail=0, used_idx=0, max_readable=MAX_READABLE, refuse_foreign=False):
        """mem is a GuestMemory; size, desc, avail and used come from the
        guest (virtio-mmio QueueNum/QueueDesc/QueueDriver/QueueDevice) and are
        checked here (QueueError).  last_avail and used_idx are 0 after a
        reset; other values restore a saved queue.  refuse_foreign: a buffer
        in a frame the guest does not own fails that request (Chain.refused)
        instead of halting the ring, for devices whose protocol has an error
        status to answer with."""
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise QueueError(f"queue size {size} is not a power of 2 up to {MAX_QUEUE_SIZE}")
        # 2.7: part, alignment, size in bytes (the avail and used rings end
        # with used_event and avail_event, present whether EVENT_IDX is on or not).
        for name, gpa, align, length in (("descriptor table", desc, 16, DESC_SIZE * size),
                                         ("available ring", avail, 2, 6 + 2 * size),
                                         ("used ring", used, 4, 6 + USED_ELEM_SIZE * size)):
            if gpa % align:
                raise QueueError(f"{name} at {gpa:#x} is not {align}-byte aligned")
            try:
                mem.check(gpa, length)
            except GuestMemoryError as e:
                raise QueueError(f"{name}: {e}") from e
        self.mem, self.size = mem, size
        self.desc, self.avail, self.used = desc, avail, used
        self.event_idx, self.indirect = event_idx, indirect
        self.max_readable = max_readable
        self.refuse_foreign = refuse_foreign
        self.last_avail = last_avail & 0xFFFF
        self.used_idx = used_idx & 0xFFFF
        self._seen_avail = self.last_avail
        self._signalled = self.used_idx
        self.halted = None

    # -- the four places in guest memory the device reads or writes --------
    @cython.cfunc
    def _used_event(self) -> cython.ulonglong:
        return self.avail + 4 + 2 * self.size    # after avail.ring[size] (2.7.6)

    @cython.cfunc
    def _avail_event(self) -> cython.ulonglong:
        return self.used + 4 + USED_ELEM_SIZE * self.size   # after used.ring[size] (2.7.8)

    # Every public operation starts with _refuse_if_halted() and turns a
    # guest fault into a halted queue with _halt() (try/except costs nothing
    # until something is raised; a `with` block per call did).
    @cython.cfunc
    def _refuse_if_halted(self):
        if self.halted:
            raise QueueError(f"queue halted: {self.halted}")

    @cython.cfunc
    def _halt(self, error):
        """The queue is halted by `error`: the QueueError to raise for it."""
        self.halted = str(error)
        return error if isinstance(error, QueueError) else QueueError(str(error))

    # -- taking requests ---------------------------------------------------
    def pop(self, copy=None):
        """The next available Chain, or None if the driver has offered none.
        copy=N copies only the first N readable bytes into chain.readable and
        leaves the rest as chain.uncopied ranges (checked, in guest RAM)."""
        self._refuse_if_halted()
        try:
            avail_idx: cython.uint = self.mem.read_u16(self.avail + 2)     # read once (2.7.6)
            pending: cython.uint = (avail_idx - self.last_avail) & 0xFFFF
            seen: cython.uint = (self._seen_avail - self.last_avail) & 0xFFFF
            # The driver only moves avail.idx forward, and never more than `size`
            # ahead of us: the ring has `size` entries (2.7.6).  Else it is bogus.
            if pending > self.size or pending < seen:
                raise QueueError(f"avail.idx {avail_idx} is bogus: last seen {self._seen_avail}, "
                                 f"consumed up to {self.last_avail}, queue size {self.size}")
            if pending == 0:
                return None
            head = self.mem.read_u16(self.avail + 4 + 2 * (self.last_avail % self.size))
            chain = self._walk(head, copy)
        except GuestMemoryError as e:
            raise self._halt(e) from e
        except QueueError as e:
            self._halt(e)
            raise
        self._seen_avail = avail_idx
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return chain

    @cython.cfunc
    def _walk(self, head, copy):
        """Follow the chain at `head`, check it whole, then copy its readable bytes."""
        buffers = []                                              # (gpa, len, writable)
        self._follow(head, self.size, None, buffers)
        readable, writable, refused = [], [], []
        total: cython.longlong = 0
        readable_len: cython.longlong = 0
        for addr, length, is_writable in buffers:
            try:
                self.mem.check(addr, length)
            except NotGuestFrameError:
                if not self.refuse_foreign:
                    raise
                refused.append((addr, length))
            total += length
            if is_writable:
                writable.append((addr, length))
            elif writable:
                raise QueueError("a readable descriptor follows a writable one (2.7.4.2)")
            else:
                readable.append((addr, length))
                readable_len += length
        if total > MAX_CHAIN_BYTES:
            raise QueueError(f"chain of {total} bytes is longer than 2^32 (2.7.5.2)")
        if readable_len > self.max_readable:
            raise QueueError(f"chain has {readable_len} readable bytes, more than {self.max_readable}")
        if refused:
            chain = new_chain(head, b"", tuple(writable), total - readable_len)
            chain.refused = tuple(refused)
            return chain
        uncopied = ()
        if copy is not None and readable_len > copy:
            copied = first_bytes(readable, copy)
            uncopied = tuple(past_bytes(readable, copy))
            readable = copied
        data = b"".join([self.mem.read(addr, length) for addr, length in readable])
        chain = new_chain(head, data, tuple(writable), total - readable_len)
        if uncopied:
            chain.uncopied = uncopied
        return chain

    @cython.cfunc
    def _follow(self, first, count: cython.uint, table, buffers: list):
        """Append (addr, len, writable) along NEXT links from entry `first` of
        a table of `count` descriptors -- the ring's own (table None: each
        visited entry read from guest memory once) or an indirect table's
        copy -- with the entries of an indirect table in its place.  A chain
        can hold at most `count` descriptors, so one more is a loop (2.7.5.2)."""
        i = first
        for _ in range(count):
            if i >= count:
                raise QueueError(f"descriptor index {i} is outside a table of {count}")
            if table is None:
                addr, length, flags, nxt = DESC.unpack(self.mem.read(self.desc + DESC_SIZE * i,
                                                                     DESC_SIZE))
            else:
                addr, length, flags, nxt = DESC.unpack_from(table, DESC_SIZE * i)
            if flags & DESC_F_INDIRECT:
                if table is not None:
                    raise QueueError("an indirect table holds an INDIRECT descriptor (2.7.5.3.1)")
                # Last in the chain (_indirect_table refuses NEXT); its entries
                # chain from entry 0, with indices into the table (2.7.5.3).
                entries = self._indirect_table(addr, length, flags)
                self._follow(0, len(entries) // DESC_SIZE, entries, buffers)
            else:
                buffers.append((addr, length, flags & DESC_F_WRITE))
            if not flags & DESC_F_NEXT:
                return
            i = nxt
        raise QueueError(f"descriptor chain longer than {count} (a loop?)")

    @cython.cfunc
    def _indirect_table(self, addr, length, flags):
        """Copy an indirect table once: a nonzero multiple of 16 bytes, at most
        `size` entries, never combined with NEXT; its WRITE flag means
        nothing (2.7.5.3.1, 2.7.5.3.2)."""
        if not self.indirect:
            raise QueueError("INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC")
        if flags & DESC_F_NEXT:
            raise QueueError("INDIRECT descriptor with NEXT (2.7.5.3.1)")
        if length == 0 or length % DESC_SIZE or length > DESC_SIZE * self.size:
            raise QueueError(f"indirect table of {length} bytes: not 16..{DESC_SIZE * self.size} "
                             "in multiples of 16")
        return self.mem.read(addr, length)

    # -- completing requests -----------------------------------------------
    def write(self, chain, data, offset=0):
        """Scatter data into the chain's writable buffers, starting `offset`
        bytes in; never past their end.  Returns the number of bytes written.
        Every range is checked before the first byte moves: a fault writes nothing."""
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        self._refuse_if_halted()
        try:
            pieces, done = [], 0
            for gpa, length in chain.writable:
                skip = min(offset, length)
                offset -= skip
                piece = data[done:done + length - skip]
                if piece:
                    pieces.append((gpa + skip, piece))
                    done += len(piece)
            for gpa, piece in pieces:
                self.mem.check(gpa, len(piece))
            for gpa, piece in pieces:
                self.mem.write(gpa, piece)
            return done
        except GuestMemoryError as e:
            raise self._halt(e) from e

    def views(self, ranges):
        """Checked memoryviews of guest RAM for ((gpa, len), ...) -- a chain's
        writable or uncopied buffers -- to read a file into or write one
        from (os.preadv/os.pwritev: no copy in between, the GIL released)."""
        self._refuse_if_halted()
        try:
            return self.mem.views(ranges)
        except GuestMemoryError as e:
            raise self._halt(e) from e

    def push(self, chain_or_head, written):
        """Give a chain back: used.ring[used.idx % size] = (head, written),
        then used.idx + 1 -- the element before the index (2.7.8.2)."""
        is_chain = isinstance(chain_or_head, Chain)
        head = chain_or_head.head if is_chain else chain_or_head
        if not 0 <= head < self.size:
            raise ValueError(f"head {head} is outside a queue of {self.size}")
        limit = chain_or_head.writable_len if is_chain else 0xFFFFFFFF
        if not 0 <= written <= min(limit, 0xFFFFFFFF):
            raise ValueError(f"{written} bytes written, but the chain holds {limit}")
        self._refuse_if_halted()
        try:
            slot = self.used + 4 + USED_ELEM_SIZE * (self.used_idx % self.size)
            self.mem.write(slot, USED_ELEM.pack(head, written))
            # x86 keeps stores in order; a C port needs a write barrier here.
            new_idx: cython.uint = (self.used_idx + 1) & 0xFFFF
            self.mem.write_u16(self.used + 2, new_idx)
            self.used_idx = new_idx
        except GuestMemoryError as e:
            raise self._halt(e) from e

    # -- notification suppression ----------------------------------------
    def should_notify(self):
        """After push()es: must the device interrupt the driver?  (2.7.7.2)
        Call once per batch; it compares used.idx with its value at the last call."""
        self._refuse_if_halted()
        try:
            old, new = self._signalled, self.used_idx
            self._signalled = new
            if self.event_idx:
                # avail.flags is ignored; notify if used.idx crossed used_event.
                return vring_need_event(self.mem.read_u16(self._used_event()), new, old)
            return new != old and not self.mem.read_u16(self.avail) & AVAIL_F_NO_INTERRUPT
        except GuestMemoryError as e:
            raise self._halt(e) from e

    def disable_kicks(self):
        """Advise the driver not to notify us of new buffers; a hint (2.7.10)."""
        self._refuse_if_halted()
        try:
            if self.event_idx:
                # The driver kicks when avail.idx crosses avail_event; one
                # behind what we consumed lies behind every index it can reach.
                self.mem.write_u16(self._avail_event(), (self.last_avail - 1) & 0xFFFF)
            else:
                self.mem.write_u16(self.used, USED_F_NO_NOTIFY)
        except GuestMemoryError as e:
            raise self._halt(e) from e

    def pending(self):
        """Has the driver offered buffers we have not popped?  (Reads avail.idx
        only; pop() does the checking.)"""
        self._refuse_if_halted()
        try:
            return self.mem.read_u16(self.avail + 2) != self.last_avail
        except GuestMemoryError as e:
            raise self._halt(e) from e

    def enable_kicks(self):
        """Ask for kicks again, then look once more: the driver may have added
        buffers while kicks were off, and will not kick for them.  Returns
        True if buffers are pending (pop them rather than wait for a kick)."""
        self._refuse_if_halted()
        try:
            if self.event_idx:
                self.mem.write_u16(self._avail_event(), self.last_avail)   # kick at the next one
            else:
                self.mem.write_u16(self.used, 0)
            # A C port needs a full barrier here: the store above before the load below.
            return self.mem.read_u16(self.avail + 2) != self.last_avail
        except GuestMemoryError as e:
            raise self._halt(e) from e
