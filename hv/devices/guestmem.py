"""Guest RAM as the parent partition's devices see it: bounded, little-endian.

Every access names a guest-physical range (gpa, n) and is checked before a
byte moves: 0 <= gpa, 0 <= n, gpa + n <= size, written so that no sum can
overflow in a C port.  A range outside guest RAM, or one the optional
`allowed(gpa, n)` hook refuses (frame ownership, later), raises
GuestMemoryError and reads or writes nothing.  Reads return copies, so a
caller that checks a value then uses it acts on one snapshot (XSA-155).
"""


class GuestMemoryError(ValueError):
    """A guest-physical range outside guest RAM or refused by `allowed`."""

    def __init__(self, gpa, length, why="is outside guest memory"):
        super().__init__(f"guest range gpa={gpa:#x} length={length:#x} {why}")
        self.gpa, self.length = gpa, length


class GuestMemory:
    """A writable buffer (Partition.memory(), or a bytearray in tests)."""

    def __init__(self, buf, allowed=None):
        view = memoryview(buf)
        if view.readonly:
            raise ValueError("guest memory must be writable")
        self._buf = view.cast("B")
        self.size = len(self._buf)
        self._allowed = allowed

    def check(self, gpa, n):
        """Raise GuestMemoryError unless [gpa, gpa + n) may be accessed."""
        if gpa < 0 or n < 0 or n > self.size or gpa > self.size - n:
            raise GuestMemoryError(gpa, n)
        if self._allowed is not None and not self._allowed(gpa, n):
            raise GuestMemoryError(gpa, n, "is not the guest's")

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
