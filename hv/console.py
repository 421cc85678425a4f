"""The console backend: where a partition's console bytes go.

T:640 The guest's console_write hypercall reaches here with bytes the core
already copied out of guest memory.  Output is written through unbuffered
(or flushed at once), so nothing the guest printed is lost if hv stops
right after.
"""
import sys


class Console:
    """Writes guest console output to a binary stream (stdout by default) or a file."""

    def __init__(self, path=None, stream=None):
        self._owned = path is not None
        self._out = open(path, "ab", buffering=0) if path else (stream or sys.stdout.buffer)

    def write(self, data):
        self._out.write(data)
        self._out.flush()

    def flush(self):
        self._out.flush()

    def close(self):
        if self._owned:
            self._out.close()


class CaptureConsole(Console):
    """Keeps the output in memory (tests, benchmarks)."""

    def __init__(self):
        self._owned = False
        self.chunks = []

    def write(self, data):
        self.chunks.append(data)

    def flush(self):
        pass

    def text(self):
        return b"".join(self.chunks).decode(errors="replace")
