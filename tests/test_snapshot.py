"""Snapshot and restore (hv/snapshot.py, hv/snapshot_format.py, csrc/snapshot.c).

The guest half is guests/snap-counter: its last line depends on its
registers, stack, RAM, timer and clock, so a restore that loses any of
them shows.  Each test saves it mid-run (often several times), restores
it, on the same engine or the other one, and compares the final output
with an uninterrupted run.
"""
import io
import os
import struct
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import guest, needs_kvm
from hv import snapshot_format as fmt
from hv.partition import SHUTDOWN, Partition
from hv.snapshot import SnapshotError, load

ROUNDS = 60
PAUSE_NS = 3_000_000
CMDLINE = f"rounds={ROUNDS} pause={PAUSE_NS}"


class Output:
    """A console that keeps what the guest wrote."""

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    def flush(self):
        pass


def uninterrupted(engine="tcg"):
    out = Output()
    with Partition(guest("snap-counter"), engine=engine, cmdline=CMDLINE, console=out) as p:
        assert p.run() == SHUTDOWN
    return out.data


@pytest.fixture(scope="module")
def reference():
    return uninterrupted()


def hop(engines, tmp_path, wait=0.05):
    """Run snap-counter, saving and restoring it once per engine after the
    first: the output of the whole journey."""
    out = Output()
    part = Partition(guest("snap-counter"), engine=engines[0], cmdline=CMDLINE, console=out)
    part.start()
    for n, engine in enumerate(engines[1:]):
        time.sleep(wait)
        directory = str(tmp_path / f"snap{n}")
        part.snapshot(directory, resume=False)
        part.destroy()
        part = Partition.restore(directory, engine=engine, console=out)
        assert part.engine == engine
        part.start()
    state = part.wait(60)
    report = part.crash_report
    part.destroy()
    assert state == SHUTDOWN, report
    return out.data


def test_restore_goes_on_where_the_guest_stopped(tmp_path, reference):
    assert b"SUCCESS" in reference
    assert hop(["tcg", "tcg", "tcg", "tcg"], tmp_path) == reference


def test_saved_after_port_writes_queued_in_a_block(tmp_path, reference):
    """Two writes to a port the parent answers, in one block: on TCG the
    second waits in the engine's queue.  Once the queue has been emptied the
    vCPU is between instructions again; the emptiness test compared the count
    with the ring's head index, so after the first queued write no TCG
    vCPU could be saved ("never stopped between instructions": every Linux
    guest, whose UART writes queue)."""
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE + " ports=1",
                   console=out) as p:
        p.start()
        time.sleep(0.05)
        p.snapshot(str(tmp_path / "s"))
        assert p.wait(60) == SHUTDOWN
    assert out.data == reference
    restored = Output()
    with Partition.restore(str(tmp_path / "s"), console=restored) as q:
        assert q.run() == SHUTDOWN
    assert reference.endswith(restored.data) and restored.data


def test_snapshot_leaves_the_partition_running(tmp_path, reference):
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out) as p:
        p.start()
        time.sleep(0.05)
        for n in range(3):
            p.snapshot(str(tmp_path / f"s{n}"))
        assert p.wait(60) == SHUTDOWN
    assert out.data == reference
    # and each of them finishes the run the same way
    restored = Output()
    with Partition.restore(str(tmp_path / "s2"), console=restored) as q:
        assert q.run() == SHUTDOWN
    assert reference.endswith(restored.data) and restored.data


@needs_kvm
def test_tcg_to_kvm_and_back(tmp_path, reference):
    assert hop(["tcg", "kvm", "tcg", "kvm"], tmp_path) == reference


def test_deterministic_restore_is_exact(tmp_path):
    cmdline = "rounds=400 pause=1000000"

    def run(save_after=None):
        out = Output()
        p = Partition(guest("snap-counter"), engine="tcg", deterministic=True,
                      cmdline=cmdline, console=out)
        p.start()
        if save_after is not None:
            time.sleep(save_after)
            p.snapshot(str(tmp_path / "d"), resume=False)
            p.destroy()
            p = Partition.restore(str(tmp_path / "d"), console=out)
            assert p.deterministic
            p.start()
        state, report = p.wait(60), p.crash_report
        p.destroy()
        assert state == SHUTDOWN, report
        return out.data

    assert run(0.01) == run()


def test_the_clock_does_not_run_backwards(tmp_path):
    from hv.abi import ffi, lib
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=Output()) as p:
        p.start()
        time.sleep(0.05)
        p.snapshot(str(tmp_path / "c"), resume=False)
    state = load(str(tmp_path / "c"))
    saved = state.partition["clock_ns"]
    state.close()
    assert saved > 0
    snap = ffi.new("struct hv_partition_snapshot *")
    with Partition.restore(str(tmp_path / "c"), console=Output()) as q:
        lib.hv_partition_get_snapshot(q.core(), snap)
        assert saved <= snap.clock_ns < saved + 1_000_000_000


def test_restore_maps_memory_copy_on_write(tmp_path):
    """The guest's writes after a restore never reach the memory file."""
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=Output()) as p:
        p.start()
        time.sleep(0.05)
        p.snapshot(str(tmp_path / "m"), resume=False)
    before = {n: open(tmp_path / "m" / n, "rb").read() for n in os.listdir(tmp_path / "m")}
    with Partition.restore(str(tmp_path / "m"), console=Output()) as q:
        assert q.run() == SHUTDOWN
    after = {n: open(tmp_path / "m" / n, "rb").read() for n in os.listdir(tmp_path / "m")}
    assert before == after


# ---- bad files: one clear error, nothing created ---------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=Output()) as p:
        p.start()
        time.sleep(0.03)
        p.snapshot(str(directory), resume=False)
    return directory


def copy_of(saved, tmp_path, state=None, memory_size=None):
    for name in os.listdir(saved):
        if name.startswith("memory-") and memory_size is None:
            os.symlink(saved / name, tmp_path / name)     # 64 MiB: not copied
            continue
        data = open(saved / name, "rb").read()
        if name == "state" and state is not None:
            data = state(data)
        if name.startswith("memory-") and memory_size is not None:
            data = data[:memory_size]
        (tmp_path / name).write_bytes(data)
    return str(tmp_path)


def test_a_good_snapshot_loads(saved):
    state = load(str(saved))
    assert state.mem_size == 64 << 20 and len(state.vcpus) == 1
    state.close()


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=0))
def test_a_truncated_state_is_refused(saved, tmp_path_factory, cut):
    data = open(saved / "state", "rb").read()
    cut %= len(data)
    d = copy_of(saved, tmp_path_factory.mktemp("t"), state=lambda b: b[:cut])
    with pytest.raises(SnapshotError, match="truncated|magic|verify"):
        load(d)


@settings(max_examples=30, deadline=None)
@given(at=st.integers(min_value=fmt.HEADER.size), bit=st.integers(0, 7))
def test_a_corrupted_state_is_refused(saved, tmp_path_factory, at, bit):
    data = open(saved / "state", "rb").read()
    at = fmt.HEADER.size + at % (len(data) - fmt.HEADER.size)

    def flip(b):
        b = bytearray(b)
        b[at] ^= 1 << bit
        return bytes(b)
    d = copy_of(saved, tmp_path_factory.mktemp("c"), state=flip)
    with pytest.raises(SnapshotError):
        load(d)


def test_another_version_is_refused(saved, tmp_path):
    def bump(b):
        return b[:8] + struct.pack("<I", fmt.VERSION + 1) + b[12:]
    with pytest.raises(SnapshotError, match=f"version {fmt.VERSION + 1}"):
        load(copy_of(saved, tmp_path, state=bump))


def test_a_short_memory_file_is_refused(saved, tmp_path):
    with pytest.raises(SnapshotError, match="truncated"):
        load(copy_of(saved, tmp_path, memory_size=1 << 20))


# ---- the record format alone -------------------------------------------------

def stream(records, optional_unknown=False):
    buf = io.BytesIO()
    w = fmt.Writer(buf, stream_id=7)
    for rtype, body in records:
        w.record(rtype, body)
    w.finish()
    return buf.getvalue()


@given(st.lists(st.tuples(st.sampled_from([fmt.PARTITION, fmt.VCPU, fmt.DEVICE]),
                          st.binary(max_size=40)), max_size=6))
def test_records_round_trip(records):
    data = stream(records)
    assert len(data) % fmt.ALIGN == 0
    r = fmt.Reader(io.BytesIO(data))
    assert list(r) == records and r.stream_id == 7


def test_unknown_records_optional_skipped_mandatory_refused():
    assert list(fmt.Reader(io.BytesIO(stream([(99 | fmt.OPTIONAL, b"x"), (fmt.VCPU, b"v")])))) \
        == [(fmt.VCPU, b"v")]
    with pytest.raises(fmt.FormatError, match="unknown mandatory record"):
        list(fmt.Reader(io.BytesIO(stream([(99, b"x")]))))


def test_a_stream_without_verify_is_refused():
    buf = io.BytesIO()
    w = fmt.Writer(buf)
    w.record(fmt.VCPU, b"v")
    w.record(fmt.END)
    with pytest.raises(fmt.FormatError, match="no verify"):
        list(fmt.Reader(io.BytesIO(buf.getvalue())))


# ---- the command line ----------------------------------------------------------

def hv_cli(*args, timeout=60):
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.run([sys.executable, "-m", "hv", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_hv_restore_finishes_the_run(saved, reference):
    proc = hv_cli("restore", str(saved), "--engine", "tcg")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() and reference.endswith(proc.stdout.encode())


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "version", "short-memory", "missing"])
def test_hv_restore_refuses_a_bad_snapshot_with_one_line(saved, tmp_path, damage):
    edits = {
        "truncated": dict(state=lambda b: b[:len(b) // 2]),
        "corrupted": dict(state=lambda b: b[:100] + bytes([b[100] ^ 0x40]) + b[101:]),
        "version": dict(state=lambda b: b[:8] + struct.pack("<I", 99) + b[12:]),
        "short-memory": dict(memory_size=4096),
        "missing": None,
    }
    directory = str(tmp_path / "nothing") if damage == "missing" else \
        copy_of(saved, tmp_path, **edits[damage])
    proc = hv_cli("restore", directory)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("hv: error: ")


def test_hv_snapshot_through_the_api(tmp_path):
    from apiserver import Server
    server = Server(tmp_path)
    long_run = "rounds=600 pause=5000000"      # ~3 s: outlasts the CLI's start-up
    try:
        c = server.connect()
        c.json("PUT", "/partitions/p", {"kernel": guest("snap-counter"), "cmdline": long_run},
               expect=201)
        c.json("PUT", "/partitions/p/actions", {"action": "start"})
        proc = hv_cli("snapshot", "p", str(tmp_path / "s"), "--stop",
                      "--api-socket", server.path)
        assert proc.returncode == 0, proc.stderr
        assert "p: saved to" in proc.stdout
        assert c.json("GET", "/partitions/p")["state"] == "paused"
        c.close()
    finally:
        server.stop()
    proc = hv_cli("restore", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("rounds=600 counter=600 checksum=" + proc.stdout.split("checksum=")[1])
    assert proc.stdout.endswith("SUCCESS\n") and "counter=600 " in proc.stdout


def test_a_pause_over_the_guests_timer_does_not_lose_it(reference):
    """Regression: a scheduled vCPU paused while blocked, whose deadline
    passed during the pause, went back to sleep on resume and never woke
    (every snapshot pauses the partition)."""
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out) as p:
        p.start()
        time.sleep(0.05)
        for _ in range(3):
            p.pause()
            time.sleep(PAUSE_NS / 1e9 * 3)          # past the guest's timer
            p.resume()
        assert p.wait(60) == SHUTDOWN
    assert out.data == reference


@pytest.mark.parametrize("engines", [("tcg", "tcg"),
                                     pytest.param(("tcg", "kvm"), marks=needs_kvm),
                                     pytest.param(("kvm", "tcg"), marks=needs_kvm)])
def test_a_guest_saved_in_ring_3_goes_on_in_ring_3(tmp_path, engines):
    """guests/compute hashes in a ring-3 loop: saved there (CPL 3, user
    segments), it finishes with the same hash on either engine."""
    # KVM runs ring 3 natively, ~4x TCG here: a longer loop to save it in.
    cmdline = "n0=1000 n3=" + ("400000000" if engines[0] == "kvm" else "100000000")

    def hashes(data):
        return [line.split("hash=")[1] for line in data.decode().splitlines() if "hash=" in line]
    plain = Output()
    with Partition(guest("compute"), engine=engines[0], cmdline=cmdline, console=plain) as p:
        assert p.run() == SHUTDOWN
    out = Output()
    with Partition(guest("compute"), engine=engines[0], cmdline=cmdline, console=out) as p:
        p.start()
        time.sleep(0.15)
        p.snapshot(str(tmp_path / "r3"), resume=False)
    state = load(str(tmp_path / "r3"))
    saved_cpl = state.vcpus[0][1].seg[2].attrib >> 5 & 3
    state.close()
    with Partition.restore(str(tmp_path / "r3"), engine=engines[1], console=out) as q:
        assert q.run() == SHUTDOWN, q.crash_report
    assert hashes(out.data) == hashes(plain.data) and len(hashes(plain.data)) == 2
    assert saved_cpl in (0, 3)


def test_scheduled_protection_keeps_the_last_k_and_the_latest_resumes(tmp_path, reference):
    from hv.protect import Protection, latest, snapshots
    out = Output()
    p = Partition(guest("snap-counter"), engine="tcg", cmdline=CMDLINE, console=out)
    p.start()
    guard = Protection(p, str(tmp_path / "guard"), every=0.02, keep=2)
    # At least three snapshots, however slow the host: a fixed sleep of
    # 0.12 s saw only one under load.
    deadline = time.monotonic() + 60
    while guard.saved < 3 and not p.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    guard.stop()
    p.destroy()                         # the host "crashes" mid-run
    assert guard.saved >= 3, (guard.saved, p.state, guard.error)
    assert len(snapshots(str(tmp_path / "guard"))) == 2
    with Partition.restore(latest(str(tmp_path / "guard")), console=out) as q:
        assert q.run() == SHUTDOWN
    assert out.data == reference
