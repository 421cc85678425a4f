"""Snapshots that hold their disks (copy_disks; hv/devices/blk_persist.py).

Without a copy a snapshot names its disk, and a guest that wrote the disk
after the snapshot can never be restored from it (the disk is no longer
the one its RAM remembers: refused).  With copy_disks the snapshot holds
each writable disk as it was at the pause, and restoring puts it back.
Each test scribbles over the image after the snapshot, so a restore that
did not put the copy back fails check_image.
"""
import os
import time

import pytest

from conftest import guest
from hv.devices.blk import BlkDevice
from hv.partition import PAUSED, SHUTDOWN, Partition
from hv.protect import Protection, latest, snapshots
from hv.snapshot import SnapshotError
from test_snapshot import Output
from test_snapshot_devices import (BLOCKS, ENGINE_PAIRS, GATE, blk_partition, finish_blk,
                                   pause_at)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(BLOCKS * 512))
    return path


def scribble(image):
    image.write_bytes(b"\xff" * (BLOCKS * 512))


def saved_with_disk(engine, image, directory):
    """blk-durable saved with its disk at GATE requests, then run to its end."""
    out = Output()
    part, blk = blk_partition(engine, image, out)
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60), out.data[-400:]
    assert part.state == PAUSED
    part.snapshot(str(directory), copy_disks=True)
    part.resume()                                       # it runs on, writing its disk
    assert part.wait(60) == SHUTDOWN, part.crash_report
    part.destroy()
    return out


@pytest.mark.parametrize("first, then", ENGINE_PAIRS)
def test_a_snapshot_with_its_disk_restores_after_the_disk_changed(first, then, image, tmp_path):
    saved_with_disk(first, image, tmp_path / "snap")
    assert os.path.exists(tmp_path / "snap" / "disk-0.img")
    scribble(image)
    out = Output()
    part = Partition.restore(str(tmp_path / "snap"), engine=then, console=out)
    assert part.devices[0].path == str(image)
    part.start()
    finish_blk(part, out, image)            # every request once, every block intact


def test_without_the_copy_the_same_restore_is_refused(image, tmp_path):
    out = Output()
    part, blk = blk_partition("tcg", image, out)
    paused = pause_at(part, blk, GATE, 0)
    part.start()
    assert paused.wait(60)
    part.snapshot(str(tmp_path / "snap"))
    part.resume()
    assert part.wait(60) == SHUTDOWN, part.crash_report
    part.destroy()
    with pytest.raises(SnapshotError, match="was written since the snapshot"):
        Partition.restore(str(tmp_path / "snap"))


def test_a_changed_copy_is_refused_and_the_image_left_alone(image, tmp_path):
    saved_with_disk("tcg", image, tmp_path / "snap")
    with open(tmp_path / "snap" / "disk-0.img", "r+b") as f:
        f.write(b"x")
    scribble(image)
    with pytest.raises(SnapshotError, match="was changed since it was written"):
        Partition.restore(str(tmp_path / "snap"))
    assert image.read_bytes() == b"\xff" * (BLOCKS * 512)


def test_a_disk_in_use_is_not_replaced(image, tmp_path):
    saved_with_disk("tcg", image, tmp_path / "snap")
    scribble(image)
    holder = BlkDevice(str(image))
    try:
        with pytest.raises(SnapshotError, match="is in use"):
            Partition.restore(str(tmp_path / "snap"))
    finally:
        holder.close()
    assert image.read_bytes() == b"\xff" * (BLOCKS * 512)
    assert not [n for n in os.listdir(image.parent) if ".hv-restore-" in n]


def test_the_copy_keeps_the_image_sparse(tmp_path):
    """A 256 MiB image with 512 bytes of data: the copy holds the data, not the holes."""
    image = tmp_path / "big.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
        f.write(b"hv" * 256)
    part = Partition(guest("snap-counter"), engine="tcg", console=Output(),
                     cmdline="rounds=400 pause=3000000", devices=[BlkDevice(str(image))])
    part.start()
    try:
        part.snapshot(str(tmp_path / "snap"), copy_disks=True)
    finally:
        part.destroy()
    copy = tmp_path / "snap" / "disk-0.img"
    assert os.path.getsize(copy) == 256 << 20
    assert os.stat(copy).st_blocks * 512 < 1 << 20
    with open(copy, "rb") as f:
        assert f.read(512) == b"hv" * 256


def test_a_protected_disk_writer_is_restored_after_a_crash(image, tmp_path):
    """Scheduled protection with copy_disks, of a guest held mid-run (a
    request in flight): the partition is destroyed, as a host crash would,
    its image scribbled; the newest snapshot restores RAM and disk to one
    moment and finishes, and pruning took the old snapshots' copies too."""
    out = Output()
    part, blk = blk_partition("tcg", image, out)
    paused = pause_at(part, blk, GATE, 0)          # hold it mid-run while protection saves
    part.start()
    assert paused.wait(60)
    guard = Protection(part, str(tmp_path / "p"), every=0.02, keep=2, copy_disks=True)
    deadline = time.monotonic() + 60
    while guard.saved < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    guard.stop()
    assert guard.saved >= 3, guard.error
    part.destroy()                                  # the crash
    scribble(image)
    ours = snapshots(str(tmp_path / "p"), ours=True)
    assert len(ours) == 2                           # the pruned ones went with their copies
    assert sorted(os.listdir(tmp_path / "p")) == sorted(os.path.basename(p) for p in ours)
    out = Output()
    restored = Partition.restore(latest(str(tmp_path / "p")), console=out)
    restored.start()
    finish_blk(restored, out, image)
