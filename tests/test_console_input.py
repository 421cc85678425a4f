"""hv/console_input.py: hv run's stdin to the guest's UART, with a stand-in
partition whose receive buffer takes only a few bytes at a time."""
import os
import pty
import termios
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from hv.console_input import ConsoleInput


class SlowUart:
    """Takes at most `room` bytes per call, and none every other call (a
    guest that has not read yet)."""

    def __init__(self, room):
        self.room, self.got, self.calls, self.finished = room, bytearray(), 0, False
        self.done = threading.Event()
        self.expected = None

    def uart_input(self, data):
        self.calls += 1
        n = 0 if self.calls % 2 else min(self.room, len(data))
        self.got += data[:n]
        if self.expected is not None and len(self.got) >= self.expected:
            self.done.set()
        return n


@settings(max_examples=20, deadline=None)
@given(data=st.binary(min_size=1, max_size=20000), room=st.integers(1, 5000))
def test_pipe_input_reaches_the_uart_whole_and_in_order(data, room):
    uart = SlowUart(room)
    uart.expected = len(data)
    r, w = os.pipe()
    try:
        feeder = ConsoleInput(uart, fd=r, out_fd=w)
        assert feeder.wanted() and not feeder.interactive
        feeder.start()
        os.write(w, data)                   # below a pipe's 64 KiB: never blocks
        os.close(w)
        w = None
        assert uart.done.wait(30)
        feeder.thread.join(30)
        assert bytes(uart.got) == data
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_devnull_and_closed_stdin_give_nothing():
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        feeder = ConsoleInput(SlowUart(10), fd=fd).start()
        if feeder.thread is not None:
            feeder.thread.join(10)
            assert not feeder.thread.is_alive()
        assert feeder.partition.got == b""
    finally:
        os.close(fd)
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    assert not ConsoleInput(SlowUart(10), fd=closed).wanted()


def test_a_terminal_is_raw_while_in_use_and_restored():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON
        feeder = ConsoleInput(SlowUart(100), fd=slave, out_fd=slave).start()
        assert feeder.interactive
        raw = termios.tcgetattr(slave)
        assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
        os.write(master, b"ls\r")
        feeder.close()
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_a_terminal_that_is_only_stdin_is_not_taken():
    master, slave = pty.openpty()
    r, w = os.pipe()
    try:
        assert not ConsoleInput(SlowUart(1), fd=slave, out_fd=w).wanted()
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)
