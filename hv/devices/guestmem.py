"""Guest RAM as the parent partition's devices see it: bounded, little-endian,
and only the frames the partition owns.

Every access names a guest-physical range (gpa, n) and is checked before a
byte moves: 0 <= gpa, 0 <= n, gpa + n <= size, written so that no sum can
overflow in a C port.  A range outside guest RAM raises GuestMemoryError; a
range that touches a frame the partition does not own (hv's boot area:
csrc/memory.c keeps the owner of every frame, and the C core refuses the
same ranges) or that the optional `allowed(gpa, n)` hook refuses raises
NotGuestFrameError (a GuestMemoryError).  Either way nothing is read or
written.  Reads return copies, so a caller that checks a value then uses it
acts on one snapshot (XSA-155).

Frame ownership is fixed once a device is added (the core refuses
hv_partition_reserve after), so for_partition() copies
the few ranges that are not the guest's once, and a check costs a compare
per range rather than a call into the core.
"""
from hv.abi import ffi, lib

MAX_FOREIGN_RANGES = 64     # hv reserves one range today (loader.py's boot area)


class GuestMemoryError(ValueError):
    """A guest-physical range outside guest RAM or refused by `allowed`."""

    def __init__(self, gpa, length, why="is outside guest memory"):
        super().__init__(f"guest range gpa={gpa:#x} length={length:#x} {why}")
        self.gpa, self.length = gpa, length


class NotGuestFrameError(GuestMemoryError):
    """A range inside guest RAM that touches a frame the guest does not own."""

    def __init__(self, gpa, length):
        super().__init__(gpa, length, "is not the guest's")


def foreign_ranges(p):
    """[start, end) gpa ranges of partition p's RAM that it does not own."""
    out = ffi.new("uint64_t[]", 2 * MAX_FOREIGN_RANGES)
    n = lib.hv_partition_foreign_ranges(p, out, MAX_FOREIGN_RANGES)
    if n < 0:
        raise ValueError(f"more than {MAX_FOREIGN_RANGES} ranges of hv-owned frames")
    return tuple((out[2 * i], out[2 * i + 1]) for i in range(n))


class GuestMemory:
    """A writable buffer (Partition.memory(), or a bytearray in tests)."""

    def __init__(self, buf, allowed=None, foreign=()):
        view = memoryview(buf)
        if view.readonly:
            raise ValueError("guest memory must be writable")
        self._buf = view.cast("B")
        self.size = len(self._buf)
        self._allowed = allowed
        self._foreign = tuple(foreign)      # ((start, end), ...) not the guest's

    @classmethod
    def for_partition(cls, partition):
        """The RAM of a live hv.partition.Partition, minus the frames hv owns."""
        return cls(partition.memory(), foreign=foreign_ranges(partition._live()))

    def check(self, gpa, n):
        """Raise GuestMemoryError unless [gpa, gpa + n) may be accessed."""
        if gpa < 0 or n < 0 or n > self.size or gpa > self.size - n:
            raise GuestMemoryError(gpa, n)
        for start, end in self._foreign:
            if gpa < end and start < gpa + n:
                raise NotGuestFrameError(gpa, n)
        if self._allowed is not None and not self._allowed(gpa, n):
            raise NotGuestFrameError(gpa, n)

    def read(self, gpa, n):
        self.check(gpa, n)
        return bytes(self._buf[gpa:gpa + n])

    def write(self, gpa, data):
        self.check(gpa, len(data))
        self._buf[gpa:gpa + len(data)] = data

    def read_u16(self, gpa):
        return int.from_bytes(self.read(gpa, 2), "little")

    def read_u32(self, gpa):
        return int.from_bytes(self.read(gpa, 4), "little")

    def read_u64(self, gpa):
        return int.from_bytes(self.read(gpa, 8), "little")

    def write_u16(self, gpa, value):
        self.write(gpa, value.to_bytes(2, "little"))

    def write_u32(self, gpa, value):
        self.write(gpa, value.to_bytes(4, "little"))

    def write_u64(self, gpa, value):
        self.write(gpa, value.to_bytes(8, "little"))
