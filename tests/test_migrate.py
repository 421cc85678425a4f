"""Live migration (hv/migrate.py): guests/snap-counter moved mid-run, on
the same engine and across; a broken stream leaves the source running and
the destination empty."""
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, guest, needs_kvm
from hv import migrate
from hv.abi import lib
from hv.partition import RUNNING, SHUTDOWN, Partition
from test_snapshot import Output

CMDLINE = "rounds=150 pause=5000000"     # ~0.8 s: room for two moves


@pytest.fixture(scope="module")
def reference():
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out) as p:
        assert p.run() == SHUTDOWN
    return out.data


def receiver(address, engine, out):
    """Listen at address; a thread takes one migration and starts it."""
    srv = migrate.listen(address)
    got = {}

    def take():
        try:
            part, conn = migrate.receive(srv, engine=engine, console=out)
            part.start()
            migrate.accepted(conn)
            got["part"] = part
        except migrate.MigrationError as e:
            got["error"] = e
        finally:
            srv.close()
    t = threading.Thread(target=take)
    t.start()
    return t, got


def journey(engines, tmp_path, wait=0.05):
    out = Output()
    part = Partition(guest("snap-counter"), engine=engines[0], cmdline=CMDLINE, console=out)
    part.start()
    for n, engine in enumerate(engines[1:]):
        time.sleep(wait)
        address = f"unix:{tmp_path}/m{n}.sock"
        t, got = receiver(address, engine, out)
        report = part.migrate(address)
        t.join(30)
        assert report["downtime"] < 10 and "part" in got, got
        part = got["part"]
        assert part.engine == engine
    state, report = part.wait(60), part.crash_report
    part.destroy()
    assert state == SHUTDOWN, report
    return out.data


def test_live_migration_goes_on_where_the_guest_was(tmp_path, reference):
    assert journey(["tcg", "tcg", "tcg"], tmp_path) == reference


@needs_kvm
def test_live_migration_across_engines(tmp_path, reference):
    assert journey(["tcg", "kvm", "tcg"], tmp_path) == reference


def test_a_receiver_that_dies_leaves_the_source_running(tmp_path, reference):
    path = str(tmp_path / "dies.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def die_after_a_little():
        conn, _ = srv.accept()
        conn.recv(5000)
        conn.close()                    # killed mid-stream
    t = threading.Thread(target=die_after_a_little)
    t.start()
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out) as p:
        p.start()
        time.sleep(0.05)
        with pytest.raises(migrate.MigrationError, match="runs on"):
            p.migrate(f"unix:{path}")
        assert p.state == RUNNING
        assert p.wait(60) == SHUTDOWN
    t.join()
    srv.close()
    assert out.data == reference


def test_a_sender_that_dies_leaves_nothing_behind(tmp_path):
    address = f"unix:{tmp_path}/cut.sock"
    before = lib.hv_partition_count()
    t, got = receiver(address, "tcg", Output())
    # A real stream, cut after the memory record and some pages.
    import io
    from hv import snapshot_format as fmt
    buf = io.BytesIO()
    w = fmt.Writer(buf)
    w.record(fmt.MEMORY, fmt.MEMORY_FIXED.pack(64 << 20))
    w.record(fmt.PAGES, fmt.PAGES_FIXED.pack(1, 0), (5).to_bytes(8, "little"), bytes(4096))
    s = socket.socket(socket.AF_UNIX)
    s.connect(address[5:])
    s.sendall(buf.getvalue())
    s.close()
    t.join(30)
    assert "discarded" in str(got.get("error")) and "part" not in got
    assert lib.hv_partition_count() == before


def test_hv_receive_runs_what_arrives(tmp_path, reference):
    address = f"unix:{tmp_path}/cli.sock"
    rx = subprocess.Popen([sys.executable, "-m", "hv", "receive", address, "--engine", "tcg"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert b"listening" in rx.stderr.readline()
        out = Output()
        p = Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out)
        p.start()
        time.sleep(0.05)
        p.migrate(address, progress=migrate.Progress(None))
        stdout, stderr = rx.communicate(timeout=60)
    finally:
        rx.kill()
    assert rx.returncode == 0, stderr
    assert out.data + stdout == reference


def test_addresses():
    assert migrate.parse_address("unix:/a/b") == (socket.AF_UNIX, "/a/b")
    assert migrate.parse_address("tcp:127.0.0.1:4444") == (socket.AF_INET, ("127.0.0.1", 4444))
    for bad in ("tcp:10.1.2.3:80", "udp:x", "unix:", "tcp:127.0.0.1:http"):
        with pytest.raises(ValueError):
            migrate.parse_address(bad)


def test_a_cold_migration_sends_everything_while_paused(tmp_path, reference):
    address = f"unix:{tmp_path}/cold.sock"
    out = Output()
    t, got = receiver(address, "tcg", out)
    p = Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out)
    p.start()
    time.sleep(0.05)
    report = migrate.send(p, address, max_rounds=0)
    p.destroy()
    t.join(30)
    assert report["rounds"] == 0 and report["last_pages"] > 0
    q = got["part"]
    assert q.wait(60) == SHUTDOWN
    q.destroy()
    assert out.data == reference


def test_live_migration_over_loopback_tcp(reference):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    address = f"tcp:127.0.0.1:{port}"
    out = Output()
    t, got = receiver(address, "tcg", out)
    p = Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out)
    p.start()
    time.sleep(0.05)
    p.migrate(address)
    t.join(30)
    q = got["part"]
    assert q.wait(60) == SHUTDOWN
    q.destroy()
    assert out.data == reference


def test_pages_are_sent_as_they_were_hashed():
    """A page of live RAM the guest writes while it is being sent must not
    corrupt the stream: the digest and the bytes sent are of one copy (the
    receiver refused such streams as corrupted, now and then, mid-run)."""
    import io
    from hv import snapshot_format as fmt
    page = migrate.PAGE
    ram = bytearray(4 * page)

    class LiveRam:
        def page(self, pfn):
            return memoryview(ram)[pfn * page:(pfn + 1) * page]

    class GuestWritesMeanwhile(io.BytesIO):
        def write(self, data):
            ram[0] ^= 0xff              # between the digest's update and the write
            return super().write(data)
    out = GuestWritesMeanwhile()
    w = fmt.Writer(out)
    migrate._send_pages(w, LiveRam(), [0, 1])
    w.finish()
    records = list(fmt.Reader(io.BytesIO(out.getvalue())))    # a bad digest raises
    assert [t for t, _ in records] == [fmt.PAGES]


def test_a_discarded_stream_hangs_up_on_the_source(tmp_path):
    """A stream the receiver refuses (here: its VERIFY does not match) ends
    the connection: the source reads end-of-file and runs on, it does not
    wait for an answer for ever (the receiver's file object kept the
    socket open)."""
    import io
    from hv import snapshot_format as fmt
    address = f"unix:{tmp_path}/bad.sock"
    t, got = receiver(address, "tcg", Output())
    buf = io.BytesIO()
    w = fmt.Writer(buf)
    w.record(fmt.MEMORY, fmt.MEMORY_FIXED.pack(1 << 20))
    w.record(fmt.VERIFY, bytes(32))              # not the digest
    w.record(fmt.END)
    s = socket.socket(socket.AF_UNIX)
    s.connect(address[5:])
    s.sendall(buf.getvalue())
    s.shutdown(socket.SHUT_WR)
    t.join(30)
    s.settimeout(10)
    try:
        assert s.recv(1) == b""                  # hung up, no answer
    finally:
        s.close()
    assert "corrupted" in str(got.get("error"))


def test_a_destination_that_cannot_create_the_partition_refuses_it(tmp_path, monkeypatch):
    """The destination has the whole stream but cannot make the partition
    (its engine is unavailable there): it says so, hangs up, and the source
    runs on (it waited for an answer for ever)."""
    import hv.snapshot
    from hv.partition import HostError

    def no_engine(*args, **kwargs):
        raise HostError("kvm engine unavailable: (for this test)")
    monkeypatch.setattr(hv.snapshot, "restore_state", no_engine)
    address = f"unix:{tmp_path}/noengine.sock"
    t, got = receiver(address, "kvm", Output())
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out) as p:
        p.start()
        with pytest.raises(migrate.MigrationError, match="did not take"):
            p.migrate(address)
        assert p.wait(60) == SHUTDOWN
    t.join(30)
    assert out.data.rstrip().endswith(b"SUCCESS")
    assert "engine unavailable" in str(got.get("error"))
