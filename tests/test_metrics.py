"""Partition.metrics(): the one snapshot of what a partition did (exits,
hypercalls fast and slow, per-device requests and bytes) that `hv run
--json`, `--metrics` lines and the management API all report."""
import json

import pytest

from conftest import engine_missing, guest

pytestmark = pytest.mark.skipif(engine_missing("tcg") is not None,
                                reason=f"TCG: {engine_missing('tcg')}")


def test_metrics_of_a_finished_partition_with_a_disk(tmp_path):
    from hv.console import CaptureConsole
    from hv.devices.blk import BlkDevice
    from hv.partition import Partition

    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (1 << 20))
    disk = BlkDevice(str(image))
    part = Partition(guest("blk-test"), engine="tcg", console=CaptureConsole(),
                     cmdline="sectors=16", devices=[disk], name="worker")
    try:
        before = part.metrics()
        assert (before["state"], before["exits"], before["devices"][0]["requests"]) == \
            ("created", 0, 0)
        part.start()
        assert part.wait(60) == "shutdown", part.console.text()
        m = part.metrics()
    finally:
        part.destroy()
    json.dumps(m)                       # JSON-ready as it is
    assert (m["name"], m["state"], m["engine"], m["exit_code"]) == ("worker", "shutdown", "tcg", 0)
    assert m["mem_bytes"] == 64 << 20
    assert m["exits"] > 0 and m["hypercalls_slow"] > 0 and m["hypercalls_fast"] >= 0
    (blk,) = m["devices"]
    assert (blk["slot"], blk["type"], blk["errors"]) == (0, "blk", 0)
    # blk-test writes its 16 sectors and reads them back (plus its own probes).
    assert blk["bytes_from_guest"] >= 16 * 512 and blk["bytes_to_guest"] >= 16 * 512
    assert blk["requests"] >= 3


def test_metrics_survive_destroy():
    from hv.console import CaptureConsole
    from hv.partition import Partition

    part = Partition(guest("hello"), engine="tcg", console=CaptureConsole())
    part.start()
    part.wait(60)
    part.destroy()
    m = part.metrics()
    assert m["state"] == "destroyed" and m["exits"] > 0 and m["devices"] == []
