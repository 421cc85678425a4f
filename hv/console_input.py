"""Console input: what is typed to `hv run` reaches the guest's UART.

T:553 The other direction of the console.  A thread reads hv's stdin and
hands the bytes to the core's UART (Partition.uart_input), whose receive
buffer the guest's ttyS0 driver reads on its received-data interrupt; the
interrupt wakes a halted vCPU, so an idle shell costs nothing until a key
arrives.  A buffer that is full (the guest is not reading) makes the
thread wait and retry: input is delayed, never dropped.

On a terminal (stdin and stdout both), the terminal is raw while the guest
runs, as under QEMU's -nographic: every key, Ctrl-C included, goes to the
guest, whose own tty echoes and edits; Ctrl-] ends hv as Ctrl-C would
elsewhere.  The terminal is restored however hv ends.  stdin a pipe or a
file: its bytes go as they come; /dev/null or a closed stdin: nothing.
A terminal that is only stdin (output redirected) is left alone, so a
background `hv run > log` does not take the keyboard.
"""
import os
import signal
import threading
import time

from hv.cli.console import ESCAPE, RawTerminal

RETRY_S = 0.01          # how long a full receive buffer waits between tries


class ConsoleInput:
    def __init__(self, partition, fd=0, out_fd=1):
        self.partition = partition
        self.fd = fd
        self.interactive = _isatty(fd) and _isatty(out_fd)
        self.terminal = None
        self.thread = None

    def wanted(self):
        """Read stdin at all?  Not a terminal that is not also our output."""
        try:
            os.fstat(self.fd)
        except OSError:
            return False                # closed
        return self.interactive or not _isatty(self.fd)

    def start(self):
        if not self.wanted():
            return self
        if self.interactive:
            self.terminal = RawTerminal(self.fd).__enter__()
        self.thread = threading.Thread(target=self._pump, name="hv-console-input", daemon=True)
        self.thread.start()
        return self

    def close(self):
        """Restore the terminal (the thread, blocked in read, dies with hv)."""
        if self.terminal is not None:
            self.terminal.__exit__(None, None, None)
            self.terminal = None

    def _pump(self):
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return                  # end of input: the guest keeps running
            if self.interactive and ESCAPE in data:
                self._send(data[:data.index(ESCAPE)])
                os.kill(os.getpid(), signal.SIGINT)     # ends the run as Ctrl-C does
                return
            if not self._send(data):
                return

    def _send(self, data):
        """All of data to the UART; False once the partition is gone."""
        while data:
            n = self.partition.uart_input(data)
            if n == 0:
                if self.partition.finished:
                    return False
                time.sleep(RETRY_S)     # the guest has not read yet
            data = data[n:]
        return True


def _isatty(fd):
    try:
        return os.isatty(fd)
    except OSError:
        return False
