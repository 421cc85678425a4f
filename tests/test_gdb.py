"""`hv run --gdb`: the real gdb (Debian's package) drives a guest on each
engine through hv's GDB stub (hv/gdbstub.py): break at a function by its
symbol, print an argument and a global, step over lines, read a control
register, watch a memory word change, continue to the guest's shutdown.
Plus the protocol details gdb's batch mode cannot reach: a Ctrl-C (0x03)
stops a guest that never exits, on a Unix socket.

guests/debug-demo is the kernel: add_up(4) calls step(i), which adds i to
the global `total`, so the watch fires once per call.
"""
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, engine_missing, guest

GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")
ENGINES = [pytest.param(e, marks=pytest.mark.skipif(engine_missing(e) is not None,
                                                    reason=f"{e}: {engine_missing(e)}"))
           for e in ("tcg", "kvm")]

SESSION = """\
set pagination off
set confirm off
target remote {address}
info registers rip
break add_up
continue
print n
print total
next
next
info registers cr0
watch total
continue
continue
print total
delete
continue
"""


def start_hv(*args):
    """hv run with --gdb; returns (process, the address it printed)."""
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    m = re.match(r"hv: gdb: target remote (\S+)", line)
    assert m, line + proc.stderr.read()
    return proc, m.group(1)


def gdb_session(engine, script_text, tmp_path):
    """Start hv held at the entry of debug-demo, run GDB's batch script on
    it; returns (GDB's output, hv's stdout, hv's stderr, hv's exit status)."""
    hv, address = start_hv("--engine", engine, "--gdb", "127.0.0.1:0", "--gdb-wait",
                           guest("debug-demo"))
    script = tmp_path / "session.gdb"
    script.write_text(script_text.format(address=address))
    try:
        out = subprocess.run([GDB, "-batch", "-nx", "-x", str(script), guest("debug-demo")],
                             capture_output=True, text=True, timeout=120)
        stdout, stderr = hv.communicate(timeout=60)
    finally:
        hv.kill()
    return out.stdout + out.stderr, stdout, stderr, hv.returncode


@pytest.mark.parametrize("engine", ENGINES)
def test_gdb_session(engine, tmp_path):
    text, stdout, stderr, status = gdb_session(engine, SESSION, tmp_path)
    # --gdb-wait: held at the PVH entry, the first instruction.
    assert re.search(r"rip\s+0x100200\s+0x100200 <pvh_start32>", text), text
    assert "Breakpoint 1, add_up (n=n@entry=4) at debug-demo/main.c:" in text, text
    assert "$1 = 4" in text and "$2 = 0" in text, text                 # an argument, a global
    assert re.search(r"\n22\s+step\(i\);", text), text                  # `next` went a line on
    assert re.search(r"cr0\s+0x80010031", text), text                   # paging, long mode on
    # The two `next`s ran step(1); the watch fires at each write after:
    # step(2) (1 -> 3), then step(3) (3 -> 6).
    assert re.search(r"Old value = 1\s+New value = 3", text), text
    assert re.search(r"Old value = 3\s+New value = 6", text), text
    assert "$3 = 6" in text, text
    assert "[Inferior 1 (Remote target) exited normally]" in text, text
    assert status == 0 and stdout == "total=10\nSUCCESS\n", stderr


def packet(payload):
    return b"$" + payload + b"#%02x" % (sum(payload) & 0xff)


def read_reply(conn):
    data = b""
    while not re.search(rb"\$([^#]*)#..", data):
        chunk = conn.recv(4096)
        assert chunk, data
        data += chunk
    conn.sendall(b"+")
    return re.search(rb"\$([^#]*)#..", data).group(1)


def test_ctrl_c_stops_a_spinning_guest(tmp_path):
    """The raw protocol on a Unix socket: attach (which stops the guest),
    continue, send 0x03, get SIGINT's stop reply with the guest inside its
    spin loop; read registers and memory; kill."""
    path = str(tmp_path / "gdb.sock")
    hv, address = start_hv("--engine", "tcg", "--gdb", f"unix:{path}", guest("crash"),
                           "--cmdline", "spin")
    assert address == path
    try:
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(path)
        conn.settimeout(30)
        conn.sendall(packet(b"?"))
        assert read_reply(conn).startswith(b"T02")            # attaching stopped it
        conn.sendall(packet(b"c"))
        time.sleep(0.2)
        conn.sendall(b"\x03")
        assert read_reply(conn).startswith(b"T02thread:1")
        conn.sendall(packet(b"g"))
        regs = bytes.fromhex(read_reply(conn).decode())
        rip = int.from_bytes(regs[16 * 8:17 * 8], "little")
        conn.sendall(packet(b"m%x,4" % rip))
        assert len(read_reply(conn)) == 8                        # 4 bytes of its code
        conn.sendall(packet(b"qXfer:features:read:target.xml:0,3fff"))
        xml = read_reply(conn)
        assert xml.startswith(b"l<?xml") and b'name="cr3"' in xml
        conn.sendall(packet(b"k"))
        read_reply(conn)
        hv.wait(timeout=30)
    finally:
        hv.kill()
        hv.communicate()


HARDWARE = """\
set pagination off
set confirm off
target remote {address}
hbreak step
continue
print i
set var total = 100
print total
stepi
delete
continue
"""


@pytest.mark.parametrize("engine", [ENGINES[0]])
def test_hardware_breakpoint_stepi_and_a_memory_write(engine, tmp_path):
    """TCG's hardware breakpoints (code hooks), one stepi, and a memory
    write through the guest's page tables that the guest then sees."""
    text, stdout, stderr, status = gdb_session(engine, HARDWARE, tmp_path)
    assert re.search(r"Breakpoint 1, step \(i=i@entry=1\) at debug-demo/main.c:16", text), text
    assert "$1 = 1" in text and "$2 = 100" in text, text
    assert re.search(r"\n0x0*10025[0-9a-f]\s+16\s+total \+= i;", text), text   # stepi: one instruction on
    assert "exited with code 05" in text, text
    # 100 + 1 + 2 + 3 + 4: the guest read what GDB wrote, and says so.
    assert "total=110" in stdout and "FAILURE" in stdout and status == 5, (stdout, stderr)


def test_gdb_leaving_lets_the_guest_run_on(tmp_path):
    """A debugger that disconnects while the guest is held at a breakpoint
    it inserted: the INT3 comes out, the guest runs to its end."""
    from elftools.elf.elffile import ELFFile
    with open(guest("debug-demo"), "rb") as f:
        add_up = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("add_up")[0]["st_value"]
    path = str(tmp_path / "gdb.sock")
    hv, _ = start_hv("--engine", "tcg", "--gdb", f"unix:{path}", "--gdb-wait", guest("debug-demo"))
    try:
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(path)
        conn.settimeout(30)
        conn.sendall(packet(b"?"))
        assert read_reply(conn).startswith(b"T05")             # held at the entry
        conn.sendall(packet(b"Z0,%x,1" % add_up))
        assert read_reply(conn) == b"OK"
        conn.sendall(packet(b"c"))
        assert b"swbreak" in read_reply(conn)                   # at add_up
        conn.close()
        stdout, stderr = hv.communicate(timeout=60)
    finally:
        hv.kill()
    assert (hv.returncode, stdout) == (0, "total=10\nSUCCESS\n"), stderr


def test_ctrl_c_at_hv_ends_a_held_guest(tmp_path):
    """hv's own Ctrl-C while --gdb-wait holds the guest (no GDB came):
    hv stops as after any Ctrl-C, it does not wait for a debugger."""
    import signal
    hv, _ = start_hv("--engine", "tcg", "--gdb", f"unix:{tmp_path / 'gdb.sock'}", "--gdb-wait",
                     guest("debug-demo"))
    try:
        time.sleep(0.3)
        hv.send_signal(signal.SIGINT)
        stdout, stderr = hv.communicate(timeout=30)
    finally:
        hv.kill()
    assert hv.returncode == 130 and "interrupted" in stderr and stdout == "", stderr
