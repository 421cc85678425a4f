"""Partitions with virtio devices as files and on the move
(hv/snapshot_devices.py, hv/devices/persist.py and the *_persist.py beside
each device).

Each test pauses a guest at an exact point chosen by its device, not by
time: a gate wrapped around the backend's serve() pauses the partition
from the device's own thread once the guest has made N requests and posted
the next one, so a request is always in flight (posted, not taken) when the
snapshot is taken.

- guests/blk-durable: numbered, checksummed blocks and flushes; after the
  restore the guest must get exactly one completion for the request in
  flight (a second would name a chain it no longer has: it fails), the used
  ring must count exactly the requests it made, and the image must hold
  every block, on both engines and across them, restored and migrated.
- guests/net-ping: a ping/pong pair on a switch; the pong is saved while
  the ping keeps resending into its backlog, restored on the other engine,
  rejoins the switch, and the ping gets every echo, checked byte for byte.
- records that lie (rings outside RAM, frames too big, ...) and disks that
  changed are refused with one line before anything is opened.
"""
import json
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, guest, kvm_missing_reason
from hv import snapshot_format as fmt
from hv.devices.blk import BlkDevice
from hv.devices.net import NetDevice
from hv.devices.rng import RngDevice
from hv.devices.switch import Switch
from hv.devices.vconsole import ConsoleDevice
from hv.partition import PAUSED, SHUTDOWN, Partition
from hv.snapshot import STATE_FILE, SnapshotError, load
from test_crash_consistency import check_image
from test_snapshot import Output

BLOCKS, K, RUN = 300, 50, 9
BLK_CMDLINE = f"blocks={BLOCKS} bsize=1 k={K} run={RUN}"
BLK_REQUESTS = BLOCKS + BLOCKS // K         # writes and flushes the guest makes
GATE = 120                                  # requests answered before the pause

KVM = pytest.mark.skipif(kvm_missing_reason() is not None, reason="KVM unavailable")
ENGINE_PAIRS = [("tcg", "tcg"), pytest.param("kvm", "kvm", marks=KVM),
                pytest.param("tcg", "kvm", marks=KVM), pytest.param("kvm", "tcg", marks=KVM)]


def pause_at(part, device, requests, queue_index, in_flight=True):
    """Pause `part` from `device`'s own thread once it has answered
    `requests` requests on queue `queue_index` and (in_flight) the guest
    has posted its next one there, which nobody takes.  Returns an Event
    set then."""
    paused = threading.Event()
    serve = device.serve

    def gated(index, queue):
        serve(index, queue)
        if paused.is_set() or device.requests < requests or index != queue_index:
            return
        while in_flight and not queue.pending():    # the guest sees the answer, posts the next
            pass
        part.pause()                         # freezes this device too: it takes no more
        paused.set()
    device.serve = gated
    return paused


def blk_partition(engine, image, out, more=(), smp=1):
    blk = BlkDevice(str(image))
    return Partition(guest("blk-durable"), engine=engine, cmdline=BLK_CMDLINE, console=out,
                     devices=[blk, *more], smp=smp), blk


def used_idx(part, slot=0, queue=0):
    """used.idx as the guest sees it in RAM (a restored device never reads it back)."""
    s = part.devices[slot].state()
    at = s.queue[queue].used + 2
    return int.from_bytes(part.memory()[at:at + 2], "little")


def finish_blk(part, out, image):
    state, report = part.wait(60), part.crash_report
    done = used_idx(part)
    part.destroy()
    assert state == SHUTDOWN, (report, out.data[-400:])
    assert out.data.rstrip().endswith(b"SUCCESS"), out.data[-400:]
    assert done == BLK_REQUESTS         # every request answered once: no more, no fewer
    assert check_image(image.read_bytes(), RUN, 1, BLOCKS - 1) == 0


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(BLOCKS * 512))
    return path


@pytest.mark.parametrize("first, then", ENGINE_PAIRS)
def test_a_block_request_in_flight_completes_once_after_restore(first, then, image, tmp_path):
    out = Output()
    part, blk = blk_partition(first, image, out)
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60), out.data[-400:]
    assert part.state == PAUSED
    part.snapshot(str(tmp_path / "snap"), resume=False)
    part.destroy()

    state = load(str(tmp_path / "snap"))
    (dev,) = state.devices
    state.close()
    assert dev.kind.NAME == "blk" and dev.backend["path"] == str(image)
    assert dev.positions[0]["used_idx"] == GATE          # saved where the gate stopped it

    part = Partition.restore(str(tmp_path / "snap"), engine=then, console=out)
    assert part.devices[0].path == str(image)
    part.start()
    finish_blk(part, out, image)


@pytest.mark.parametrize("first, then", [("tcg", "tcg"), pytest.param("kvm", "kvm", marks=KVM),
                                         pytest.param("tcg", "kvm", marks=KVM)])
def test_an_smp_partition_with_a_disk_restores_its_request_in_flight(first, then, image,
                                                                     tmp_path):
    """Two vCPUs (the second never brought up) and a disk: vcpu, lapic and
    device records of one pause, restored together."""
    out = Output()
    part, blk = blk_partition(first, image, out, smp=2)
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60), out.data[-400:]
    part.snapshot(str(tmp_path / "snap"), resume=False)
    part.destroy()
    state = load(str(tmp_path / "snap"))
    ups = [pending.up for _, _, pending in state.vcpus]
    assert ups == [1, 0] and sorted(state.lapics) == [0, 1] and len(state.devices) == 1
    state.close()
    part = Partition.restore(str(tmp_path / "snap"), engine=then, console=out)
    assert part.smp == 2
    part.start()
    finish_blk(part, out, image)


@pytest.mark.parametrize("first, then", [("tcg", "tcg"), pytest.param("kvm", "tcg", marks=KVM)])
def test_a_partition_with_a_disk_migrates_and_the_disk_goes_with_it(first, then, image, tmp_path):
    """... and its console socket: the destination listens on the same path."""
    import socket
    from hv.devices.vconsole import SocketConsole
    from test_migrate import receiver
    out = Output()
    console_path = str(tmp_path / "c.sock")
    part, blk = blk_partition(first, image, out, [ConsoleDevice(SocketConsole(console_path))])
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60)
    address = f"unix:{tmp_path}/m.sock"
    t, got = receiver(address, then, out)
    part.migrate(address)            # the destination takes the image lock from the source
    t.join(30)
    assert "part" in got, got
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(console_path)             # attached to the destination's console
    finish_blk(got["part"], out, image)


def test_hv_receive_in_another_process_opens_the_same_disk(image, tmp_path):
    """Across processes on one machine: `hv receive` reopens the image the
    source had (at its path), takes its lock, and runs the guest to the end."""
    import subprocess
    import sys
    from hv import migrate
    address = f"unix:{tmp_path}/rx.sock"
    rx = subprocess.Popen([sys.executable, "-m", "hv", "receive", address], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert b"listening" in rx.stderr.readline()
        out = Output()
        part, blk = blk_partition("tcg", image, out)
        paused = pause_at(part, blk, GATE, 0)
        part.start()
        assert paused.wait(60)
        part.migrate(address, progress=migrate.Progress(None))
        stdout, stderr = rx.communicate(timeout=60)
    finally:
        rx.kill()
    assert rx.returncode == 0, stderr
    assert stdout.rstrip().endswith(b"SUCCESS"), stdout[-300:]
    assert check_image(image.read_bytes(), RUN, 1, BLOCKS - 1) == 0


def test_an_abandoned_migration_gives_the_disk_back(image, tmp_path):
    """The destination takes the whole stream and never answers: the source
    locks its image again (no one else can open it for writing), listens on
    its console socket again, and the guest finishes there."""
    import socket
    from hv import migrate
    from hv.devices.vconsole import SocketConsole
    out = Output()
    console_path = str(tmp_path / "c.sock")
    part, blk = blk_partition("tcg", image, out, [ConsoleDevice(SocketConsole(console_path))])
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60)
    path = str(tmp_path / "silent.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def swallow():
        conn, _ = srv.accept()
        while conn.recv(1 << 16):
            pass
        conn.close()                 # no answer: the source must take everything back
    t = threading.Thread(target=swallow)
    t.start()
    with pytest.raises(migrate.MigrationError, match="did not take"):
        part.migrate(f"unix:{path}")
    t.join(30)
    srv.close()
    with pytest.raises(Exception, match="in use"):
        BlkDevice(str(image))        # the source holds its disk again
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(console_path)     # and its console's path
    part.resume()
    finish_blk(part, out, image)


# ---- the network: frames in flight between two partitions -----------------------------
PING_COUNT = 40


@pytest.mark.parametrize("first, then", [("tcg", "tcg"), pytest.param("tcg", "kvm", marks=KVM)])
def test_a_ping_pong_pair_survives_the_pong_being_saved_and_restored(first, then, tmp_path):
    lan = Switch("lan")
    ping_out, pong_out = Output(), Output()
    pong_nic = NetDevice(lan, bytes.fromhex("525400000002"))
    ping = Partition(guest("net-ping"), engine="tcg", console=ping_out,
                     cmdline=f"role=ping count={PING_COUNT} size=200",
                     devices=[NetDevice(lan, bytes.fromhex("525400000001"))])
    pong = Partition(guest("net-ping"), engine=first, console=pong_out, cmdline="role=pong",
                     devices=[pong_nic])
    paused = pause_at(pong, pong_nic, 10, 1, in_flight=False)      # after 10 echoes
    try:
        pong.start()
        ping.start()
        assert paused.wait(60)
        # The ping resends what got no echo: the switch hands it to the
        # paused pong, whose device keeps it for its guest.
        deadline = threading.Event()
        for _ in range(600):
            if pong_nic.backlog:
                break
            deadline.wait(0.05)
        assert pong_nic.backlog, "the ping resent nothing in 30 s"
        pong.snapshot(str(tmp_path / "pong"), resume=False)
        pong.destroy()
        state = load(str(tmp_path / "pong"))
        saved = state.devices[0].backend
        state.close()
        assert saved["switch"] == "lan" and saved["mac"] == "525400000002"
        assert saved["backlog"], "frames waiting for the guest are part of its state"

        pong = Partition.restore(str(tmp_path / "pong"), engine=then, console=pong_out,
                                 switches={"lan": lan})
        assert pong.devices[0].switch is lan and pong.devices[0] in lan.ports
        pong.start()
        assert ping.wait(60) == SHUTDOWN and pong.wait(60) == SHUTDOWN
    finally:
        ping.destroy()
        pong.destroy()
    assert ping_out.data.rstrip().endswith(b"SUCCESS"), ping_out.data[-300:]
    assert f"net: {PING_COUNT} frames of 200 bytes echoed".encode() in ping_out.data
    assert pong_out.data.rstrip().endswith(b"SUCCESS"), pong_out.data[-300:]


# ---- every kind of device round-trips; what changed is refused -----------------------
def test_every_kind_of_device_is_reopened_as_it_was(image, tmp_path):
    """blk, net, console (to a file) and rng on a partition whose guest
    drives none of them: each comes back connected as it was, the console
    input not yet read included."""
    lan = Switch("office")
    console_file = tmp_path / "console.txt"
    from hv.console import Console
    con = ConsoleDevice(lambda: Console(path=str(console_file)))
    devices = [BlkDevice(str(image), readonly=True), NetDevice(lan, bytes.fromhex("02aabbccddee")),
               con, RngDevice()]
    out = Output()
    with Partition(guest("snap-counter"), engine="tcg", cmdline="rounds=20 pause=3000000",
                   console=out, devices=devices) as p:
        p.start()
        p.pause()
        con.feed_from_host(b"typed ahead")
        p.snapshot(str(tmp_path / "s"))
        p.resume()
        assert p.wait(60) == SHUTDOWN
    reference = out.data
    out = Output()
    with Partition.restore(str(tmp_path / "s"), console=out) as q:
        blk, nic, con2, rng = q.devices
        assert (blk.path, blk.readonly) == (str(image), True)
        assert nic.mac == bytes.fromhex("02aabbccddee") and nic.switch.name == "office"
        assert nic.switch is not lan            # no switch given: one of that name is made
        assert con2.output._out.name == str(console_file)
        assert bytes(con2._input) == b"typed ahead"
        assert isinstance(rng, RngDevice)
        assert q.run() == SHUTDOWN
    assert out.data and reference.endswith(out.data)


@pytest.fixture
def saved_blk(image, tmp_path):
    """A snapshot of a paused blk-durable with a request in flight."""
    out = Output()
    part, blk = blk_partition("tcg", image, out)
    paused = pause_at(part, blk, 20, 0)
    part.start()
    assert paused.wait(60)
    part.snapshot(str(tmp_path / "snap"), resume=False)
    part.destroy()
    return str(tmp_path / "snap")


def test_a_missing_disk_is_refused_in_one_line(saved_blk, image):
    os.rename(image, str(image) + ".moved")
    with pytest.raises(SnapshotError, match=f"disk {image} is missing"):
        Partition.restore(saved_blk)


def test_a_disk_written_since_the_snapshot_is_refused(saved_blk, image):
    with open(image, "r+b") as f:
        f.write(b"x")
    with pytest.raises(SnapshotError, match="was written since the snapshot"):
        Partition.restore(saved_blk)


def test_a_resized_disk_is_refused(saved_blk, image):
    os.truncate(image, BLOCKS * 512 * 2)
    with pytest.raises(SnapshotError, match="bytes; it was"):
        Partition.restore(saved_blk)


def test_a_disk_in_use_is_refused(saved_blk, image):
    holder = BlkDevice(str(image))
    try:
        with pytest.raises(SnapshotError, match="in use"):
            Partition.restore(saved_blk)
    finally:
        holder.close()
    Partition.restore(saved_blk).destroy()      # and once it is free, it restores


def test_hv_restore_of_a_missing_disk_is_one_line_and_exit_2(saved_blk, image):
    import subprocess
    import sys
    os.unlink(image)
    r = subprocess.run([sys.executable, "-m", "hv", "restore", saved_blk], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "is missing" in r.stderr, r.stderr


def rewrite_device(directory, change):
    """Rewrite the state's DEVICE record through change(doc) (a new verify
    digest: the lie is well-formed, only the content is wrong)."""
    path = os.path.join(directory, STATE_FILE)
    with open(path, "rb") as f:
        records = list(fmt.Reader(f))
    with open(path, "wb") as f:
        w = fmt.Writer(f)
        for rtype, body in records:
            if rtype == fmt.DEVICE:
                slot, device_id, doc = fmt.unpack_device(body)
                out = change(doc)
                if isinstance(out, bytes):
                    body = out
                else:
                    slot, device_id = out if isinstance(out, tuple) else (slot, device_id)
                    body = fmt.pack_device(slot, device_id, doc)
            w.record(rtype, body)
        w.finish()


def _queue(doc):
    return doc["transport"]["queues"][0]


LIES = {
    "a ring outside RAM": (lambda d: _queue(d).update(desc=1 << 40), "descriptor table"),
    "a misaligned used ring": (lambda d: _queue(d).update(used=_queue(d)["used"] + 2), "used ring"),
    "a queue size not a power of 2": (lambda d: _queue(d).update(num=24), "power of 2"),
    "a queue bigger than the device's": (lambda d: _queue(d).update(num=1 << 15), "num is"),
    "requests in flight": (lambda d: d["positions"][0].update(used_idx=3), "in flight"),
    "an index past 16 bits": (lambda d: d["positions"][0].update(last_avail=1 << 16), "last_avail"),
    "a negative status": (lambda d: d["transport"].update(status=-1), "status"),
    "another version": (lambda d: d.update(version=99), "version 99"),
    "an unknown device": (lambda d: (0, 77), "unknown device id 77"),
    "a slot gap": (lambda d: (3, 2), "slots 0..n-1"),
    "a relative disk path": (lambda d: d["backend"].update(path="disk.img"), "absolute path"),
    "not JSON": (lambda d: fmt.DEVICE_FIXED.pack(0, 2) + b"{nope", "not JSON"),
}


@pytest.mark.parametrize("lie", LIES)
def test_a_device_record_that_lies_is_refused_before_anything_opens(saved_blk, image, lie):
    change, message = LIES[lie]
    rewrite_device(saved_blk, change)
    holder = BlkDevice(str(image))      # had the restore opened the disk, it would say "in use"
    try:
        with pytest.raises(SnapshotError, match=message):
            Partition.restore(saved_blk)
    finally:
        holder.close()


def test_net_backlog_frames_are_bounded_on_load(tmp_path):
    lan = Switch("lan")
    with Partition(guest("snap-counter"), engine="tcg", cmdline="rounds=5 pause=1000000",
                   console=Output(), devices=[NetDevice(lan, bytes.fromhex("020000000001"))]) as p:
        p.start()
        p.snapshot(str(tmp_path / "n"), resume=False)
    import base64
    big = base64.b64encode(bytes(9000)).decode()
    rewrite_device(str(tmp_path / "n"), lambda d: d["backend"].update(backlog=[big]))
    with pytest.raises(SnapshotError, match="not an Ethernet frame"):
        load(str(tmp_path / "n"))
    rewrite_device(str(tmp_path / "n"),
                   lambda d: d["backend"].update(backlog=[], mac="ffffffffffff"))
    with pytest.raises(SnapshotError, match="unicast"):
        load(str(tmp_path / "n"))


def test_the_device_record_is_json_after_its_slot_and_id(saved_blk):
    with open(os.path.join(saved_blk, STATE_FILE), "rb") as f:
        bodies = [b for t, b in fmt.Reader(f) if t == fmt.DEVICE]
    slot, device_id = fmt.DEVICE_FIXED.unpack_from(bodies[0])
    doc = json.loads(bodies[0][fmt.DEVICE_FIXED.size:])
    assert (slot, device_id) == (0, 2)
    assert set(doc) == {"version", "transport", "positions", "backend"}
    assert doc["transport"]["status"] & 4          # DRIVER_OK: the guest had it running


def test_snapshots_taken_while_the_driver_resets_its_device(tmp_path):
    """guests/virtio-reset-race resets its disk with a read in flight and
    sets it up again, round after round; saved and restored three times at
    whatever point each pause lands (mid-reset included), it must finish
    with every round's read whole and the device never broken."""
    from test_reliability import reset_race_image
    image = reset_race_image(tmp_path / "disk.img")
    out = Output()
    blk = BlkDevice(str(image))
    part = Partition(guest("virtio-reset-race"), engine="tcg", cmdline="rounds=400",
                     console=out, devices=[blk])
    part.start()
    wake = threading.Event()
    for n in range(3):
        # 100 more requests since the last hop: a round makes one (its
        # in-flight read may be reset away) or two, so three hops fit in
        # 400 rounds however the resets land.
        while blk.requests < 100 and not part.finished:
            wake.wait(0.001)
        assert not part.finished, (n, blk.requests, out.data[-300:])
        part.snapshot(str(tmp_path / f"s{n}"), resume=False)
        part.destroy()
        part = Partition.restore(str(tmp_path / f"s{n}"), console=out)
        blk = part.devices[0]
        part.start()
    state, report = part.wait(60), part.crash_report
    errors = blk.errors
    part.destroy()
    assert state == SHUTDOWN, (report, out.data[-300:])
    assert b"400 rounds" in out.data and out.data.rstrip().endswith(b"SUCCESS"), out.data[-300:]
    assert errors == 0


# Any value at any place of a device record: refused in one line or loaded,
# never another exception (the file is not trusted).
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2, max_value=1 << 66),
                       st.text(max_size=8), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(doc, at=()):
    """Every place in a JSON document: (path of keys and indices, value)."""
    yield at, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, at + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, at + (i,))


@pytest.fixture(scope="module")
def saved_devices_doc(tmp_path_factory):
    """The DEVICE records of a paused partition with a disk, a NIC, a console and an rng."""
    tmp = tmp_path_factory.mktemp("fuzz")
    image = tmp / "disk.img"
    image.write_bytes(bytes(1 << 16))
    from hv.console import Console
    devices = [BlkDevice(str(image)), NetDevice(Switch("lan"), bytes.fromhex("020000000009")),
               ConsoleDevice(Console(path=str(tmp / "c.txt"))), RngDevice()]
    with Partition(guest("snap-counter"), engine="tcg", cmdline="rounds=400 pause=3000000",
                   console=Output(), devices=devices) as p:
        p.start()
        p.snapshot(str(tmp / "s"), resume=False)
    with open(tmp / "s" / STATE_FILE, "rb") as f:
        return [fmt.unpack_device(b) for t, b in fmt.Reader(f) if t == fmt.DEVICE], \
            p.mem_size


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_value_anywhere_in_a_device_record_is_refused_or_loaded(saved_devices_doc, data):
    import copy
    from hv.snapshot_devices import load_devices
    records, mem_size = saved_devices_doc
    which = data.draw(st.integers(0, len(records) - 1))
    slot, device_id, doc = records[which]
    doc = copy.deepcopy(doc)
    places = [p for p, _ in _paths(doc) if p]
    where = data.draw(st.sampled_from(places))
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = data.draw(ODD_VALUES)
    bodies = [fmt.pack_device(s, d, doc if i == which else o)
              for i, (s, d, o) in enumerate(records)]
    try:
        load_devices(bodies, mem_size)
    except fmt.FormatError as e:
        assert "\n" not in str(e)
