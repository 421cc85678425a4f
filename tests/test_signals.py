"""Signals and cleanup, with real signals to a real `hv` process: SIGTERM is
handled like SIGINT (partitions stop, the console and trace are flushed,
sockets removed, disk locks released, one line on stderr, exit 143), and
`hv console` is a raw terminal relay (checked on a pty) with Ctrl-] to
detach and no traceback on Ctrl-C."""
import os
import pty
import select
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, engine_missing, guest

needs_tcg = pytest.mark.skipif(engine_missing("tcg") is not None,
                               reason=f"TCG: {engine_missing('tcg')}")


def start_spinning(*args):
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", "--engine", "tcg", *map(str, args),
                             "--cmdline", "spin", guest("crash")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"crash: spinning")
    return proc


def ended_by(proc, sig):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out.decode(), err.decode()


@needs_tcg
@pytest.mark.parametrize("sig, status, line", [(signal.SIGTERM, 143, "hv: terminated"),
                                               (signal.SIGINT, 130, "hv: interrupted")])
def test_signal_stops_and_cleans_up(sig, status, line, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    sock = tmp_path / "con.sock"
    trace = tmp_path / "trace.txt"
    proc = start_spinning("--disk", disk, "--vconsole", f"unix:{sock}", "--trace", trace)
    assert sock.exists()
    code, _, err = ended_by(proc, sig)
    assert (code, err.splitlines()) == (status, [line]), err
    assert not sock.exists()                        # the socket is removed
    # The disk lock is released: another writer may take the image.
    from hv.devices.blk import BlkDevice
    BlkDevice(str(disk)).close()
    # The trace was flushed: it has the boot's events up to the spin.
    assert "console_write(" in trace.read_text()


@needs_tcg
def test_sigterm_ends_hv_up(tmp_path):
    config = tmp_path / "up.toml"
    config.write_text(f'[[partition]]\nname = "spin"\nkernel = "{guest("crash")}"\n'
                      f'cmdline = "spin"\nengine = "tcg"\n')
    proc = subprocess.Popen([sys.executable, "-m", "hv", "up", config], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert b"crash: spinning" in proc.stdout.readline()
    code, _, err = ended_by(proc, signal.SIGTERM)
    assert (code, err.splitlines()) == (143, ["hv: terminated"]), err


# ---- hv console on a terminal --------------------------------------------------------

class FakeConsole:
    """The listening end of a console socket, played by the test."""

    def __init__(self, path):
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(30)

    def accept(self):
        self.conn, _ = self.server.accept()
        self.conn.settimeout(30)
        return self.conn


def spawn_on_pty(*args):
    """hv ARGS with a pty as its terminal: (Popen, master fd)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hv", *map(str, args)], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    return proc, master


def read_until(fd, needle, limit=1 << 16):
    data = b""
    while needle not in data and len(data) < limit:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"no {needle!r} within 30 s; got {data!r}"
        try:
            data += os.read(fd, 4096)
        except OSError:             # the pty closed: hv ended
            break
    return data


def test_console_is_raw_ctrl_c_reaches_the_guest_ctrl_bracket_detaches(tmp_path):
    path = tmp_path / "c.sock"
    guest_end = FakeConsole(path)
    proc, master = spawn_on_pty("console", path)
    try:
        conn = guest_end.accept()
        assert b"Ctrl-] detaches" in read_until(master, b"detaches")
        conn.sendall(b"guest says hi\n")
        assert b"guest says hi\r\n" in read_until(master, b"hi\r\n")   # lines still start left
        os.write(master, b"ab\x03")             # Ctrl-C is a byte for the guest...
        got = b""
        while len(got) < 3:
            got += conn.recv(16)
        assert got == b"ab\x03"
        assert proc.poll() is None              # ...and does not end hv
        os.write(master, b"x\x1d")              # Ctrl-] detaches
        assert proc.wait(30) == 0
        rest = read_until(master, b"detached")
        assert b"detached" in rest and b"Traceback" not in rest, rest
        assert conn.recv(16) == b"x"            # what came before the escape went through
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_console_ctrl_c_without_a_terminal_ends_quietly(tmp_path):
    path = tmp_path / "c.sock"
    guest_end = FakeConsole(path)
    proc = subprocess.Popen([sys.executable, "-m", "hv", "console", path], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn = guest_end.accept()
    conn.sendall(b"ready\n")
    assert proc.stdout.readline() == b"ready\n"
    code, _, err = ended_by(proc, signal.SIGINT)
    assert (code, err.splitlines()) == (130, ["hv: interrupted"]), err


def test_console_wait_for_a_console_that_appears_later(tmp_path):
    path = tmp_path / "late.sock"
    proc = subprocess.Popen([sys.executable, "-m", "hv", "console", "--wait", "30", path], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    guest_end = FakeConsole(path)               # created after hv console started
    conn = guest_end.accept()
    conn.sendall(b"late but here\n")
    conn.close()
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, b"late but here\n"), err
