"""What a guest can get wrong on the device data path.

One module that is never compiled, so the compiled and the pure-Python
copies of the data path (hv/devices/datapath.py) raise the same classes and
`except QueueError` catches either.
"""


class GuestMemoryError(ValueError):
    """A guest-physical range outside guest RAM or refused by `allowed`."""

    def __init__(self, gpa, length, why="is outside guest memory"):
        super().__init__(f"guest range gpa={gpa:#x} length={length:#x} {why}")
        self.gpa, self.length = gpa, length


class NotGuestFrameError(GuestMemoryError):
    """A range inside guest RAM that touches a frame the guest does not own."""

    def __init__(self, gpa, length):
        super().__init__(gpa, length, "is not the guest's")


class QueueError(ValueError):
    """The guest broke the ring; the queue is halted until reset."""
