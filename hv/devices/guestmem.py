"""Guest RAM as the parent partition's devices see it: bounded, little-endian,
and only the frames the partition owns.

Every access names a guest-physical range (gpa, n) and is checked before a
byte moves: 0 <= gpa, 0 <= n, gpa + n <= size, written so that no sum can
overflow (the compiled copy does this arithmetic in C integers).  A range
outside guest RAM raises GuestMemoryError; a range that touches a frame the
partition does not own (hv's boot area: csrc/memory.c keeps the owner of
every frame, and the C core refuses the same ranges) or that the optional
`allowed(gpa, n)` hook refuses raises NotGuestFrameError (a
GuestMemoryError).  Either way nothing is read or written.  Reads return
copies, so a caller that checks a value then uses it acts on one snapshot
(XSA-155); views() hands out checked windows into guest RAM for data the
device only moves and never interprets (disk payloads: preadv/pwritev go
straight between the file and guest RAM).

Every write is marked in the partition's written map after it is done
(wrote(): one byte store per 4 KiB frame), as is data a device moved into
views() itself; live migration's rounds send those frames again
(csrc/dirty.c: KVM's dirty log sees only the guest's own writes).

Frame ownership is fixed once a device is added (the core refuses
hv_partition_reserve after), so for_partition() copies
the few ranges that are not the guest's once, and a check costs a compare
per range rather than a call into the core.

T:662 Compiled by Cython as hv.devices._guestmem_compiled (setup.py); the
annotations are Cython's pure-Python mode, so this file also runs as it is
(hv/devices/datapath.py picks the copy).
"""
try:
    import cython
except ImportError:                 # the pure path where Cython is not installed
    from hv.devices import cython_shim as cython

from hv.abi import ffi, lib
from hv.devices.errors import GuestMemoryError, NotGuestFrameError

__all__ = ["GuestMemory", "GuestMemoryError", "NotGuestFrameError", "foreign_ranges"]

MAX_FOREIGN_RANGES = 64     # hv reserves one range today (loader.py's boot area)


def foreign_ranges(p):
    """[start, end) gpa ranges of partition p's RAM that it does not own."""
    out = ffi.new("uint64_t[]", 2 * MAX_FOREIGN_RANGES)
    n = lib.hv_partition_foreign_ranges(p, out, MAX_FOREIGN_RANGES)
    if n < 0:
        raise ValueError(f"more than {MAX_FOREIGN_RANGES} ranges of hv-owned frames")
    return tuple((out[2 * i], out[2 * i + 1]) for i in range(n))


@cython.cfunc
def _first_byte(view) -> cython.p_char:
    """The address of a writable buffer's first byte (compiled only)."""
    ram: cython.uchar[::1] = view
    return cython.cast(cython.p_char, cython.address(ram[0]))


@cython.cclass
class GuestMemory:
    """A writable buffer (Partition.memory(), or a bytearray in tests).

    Tests subclass it and override read() or write() (to count or to play
    a racing vCPU); every other method goes through those two, so an
    override sees every access on both the compiled and the pure path."""

    size = cython.declare(cython.longlong, visibility="public")
    _view = cython.declare(object)          # memoryview of unsigned bytes
    _allowed = cython.declare(object)
    _foreign = cython.declare(tuple)        # ((start, end), ...) not the guest's
    _written = cython.declare(cython.uchar[::1])   # a byte per frame, or None (no partition)
    # Compiled: the first byte of _view, so read() copies with one memcpy
    # (uncompiled it stays unset; _view is read instead).
    _base = cython.declare(cython.p_char)

    def __init__(self, buf, allowed=None, foreign=(), written=None):
        view = memoryview(buf)
        if view.readonly:
            raise ValueError("guest memory must be writable")
        self._view = view.cast("B")
        self.size = len(self._view)
        self._allowed = allowed
        self._foreign = tuple(foreign)
        self._written = written
        if cython.compiled and self.size:
            self._base = _first_byte(self._view)    # _view keeps the buffer exported

    @classmethod
    def for_partition(cls, partition):
        """The RAM of a live hv.partition.Partition, minus the frames hv owns."""
        return cls(partition.memory(), foreign=partition.foreign_ranges(),
                   written=partition.written_map())

    @cython.ccall
    def check(self, gpa, n):
        """Raise GuestMemoryError unless [gpa, gpa + n) may be accessed."""
        at: cython.longlong
        length: cython.longlong
        try:
            # Compiled, C integers from here on; a guest value can be any
            # 64-bit number, and one past a C long long is outside RAM anyway.
            at, length = gpa, n
        except OverflowError:
            raise GuestMemoryError(gpa, n) from None
        if at < 0 or length < 0 or length > self.size or at > self.size - length:
            raise GuestMemoryError(gpa, n)
        start: cython.longlong
        end: cython.longlong
        for start, end in self._foreign:
            if at < end and start < at + length:
                raise NotGuestFrameError(gpa, n)
        if self._allowed is not None and not self._allowed(gpa, n):
            raise NotGuestFrameError(gpa, n)

    @cython.ccall
    def read(self, gpa, n) -> bytes:
        self.check(gpa, n)
        if not cython.compiled:
            return bytes(self._view[gpa:gpa + n])
        at: cython.Py_ssize_t = gpa         # checked: both fit
        end: cython.Py_ssize_t = gpa + n
        return self._base[at:end] if end > at else b""

    @cython.ccall
    def write(self, gpa, data):
        n: cython.Py_ssize_t = len(data)
        self.check(gpa, n)
        if cython.compiled and type(data) is bytes:
            # The device's own small writes (used elements, indices, status
            # bytes, headers): C stores, no memoryview slice per write.  A
            # ring index (used.idx, avail_event, flags) is one aligned 16-bit
            # store: the driver reads it with one 16-bit load while the
            # device writes, and two byte stores could show it torn (0x00ff
            # -> 0x0100 read as 0x0000: 65281 completions).  (Measured in
            # the disassembly: the byte loop this replaced did two stores.)
            src: cython.p_char = data
            at: cython.Py_ssize_t = gpa
            i: cython.Py_ssize_t
            if n == 2 and at % 2 == 0:
                cython.cast(cython.p_ushort, self._base + at)[0] = \
                    cython.cast(cython.p_ushort, src)[0]
            elif n == 4 and at % 4 == 0:
                cython.cast(cython.p_uint, self._base + at)[0] = cython.cast(cython.p_uint, src)[0]
            else:
                for i in range(n):
                    self._base[at + i] = src[i]
        else:
            self._view[gpa:gpa + n] = data
        if self._written is not None:
            self._mark(gpa, n)

    def wrote(self, gpa, n):
        """[gpa, gpa + n), a range views() handed out, was written for the
        device by someone else (the kernel's preadv): mark it, after the
        write (csrc/dirty.c)."""
        if self._written is not None:
            self._mark(gpa, n)

    @cython.cfunc
    def _mark(self, gpa: cython.longlong, n: cython.longlong):
        """A checked range: a byte store per frame (a plain store, never a
        read-modify-write: the migration thread swaps them to zero)."""
        frame: cython.longlong
        for frame in range(gpa >> 12, (gpa + n + 4095) >> 12):
            self._written[frame] = 1

    def views(self, ranges):
        """Checked windows [(gpa, len), ...] into guest RAM, for data the
        device moves but never reads (it may change under the device: the
        guest's own business).  All are checked before any is returned."""
        for gpa, n in ranges:
            self.check(gpa, n)
        return [self._view[gpa:gpa + n] for gpa, n in ranges]

    @cython.ccall
    def read_u16(self, gpa) -> cython.uint:
        d: bytes = self.read(gpa, 2)
        return d[0] | d[1] << 8

    def read_u32(self, gpa):
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa):
        return int.from_bytes(self.read(gpa, 8), "little")

    @cython.ccall
    def write_u16(self, gpa, value):
        self.write(gpa, (value & 0xFFFF).to_bytes(2, "little"))

    def write_u32(self, gpa, value):
        self.write(gpa, value.to_bytes(4, "little"))

    def write_u64(self, gpa, value):
        self.write(gpa, value.to_bytes(8, "little"))
