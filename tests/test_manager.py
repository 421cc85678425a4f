"""hv.manager.Manager, in this process: the state machine against a model
(Hypothesis), what a partition holds and gives back, refused specs that
leave nothing behind, and concurrent operations on one partition."""
import random
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import guest
from hv.manager import BadRequest, Conflict, Manager, NotFound

# The transitions a client may make (docs/api.md); anything else is a Conflict.
MODEL = {
    ("created", "start"): "running", ("created", "stop"): "stopped",
    ("running", "pause"): "paused", ("running", "stop"): "stopped",
    ("paused", "resume"): "running", ("paused", "stop"): "stopped",
}
ACTIONS = ("start", "pause", "resume", "stop")


def waiter(tmp_path, name, **extra):
    """vcon-echo waits for a console line that never comes: it lives until stopped."""
    spec = {"name": name, "kernel": guest("vcon-echo"), "cmdline": "wait=600",
            "devices": [{"type": "console", "socket": str(tmp_path / f"{name}.con")}]}
    spec.update(extra)
    return spec


@pytest.fixture
def manager():
    m = Manager()
    yield m
    m.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(ACTIONS), max_size=7))
def test_state_machine_follows_the_model(steps, tmp_path):
    m = Manager()
    try:
        state = m.create(waiter(tmp_path, "p"))["state"]
        for action in steps:
            want = MODEL.get((state, action))
            if want is None:
                with pytest.raises(Conflict):
                    getattr(m, action)("p")
                assert m.describe("p")["state"] == state      # a refusal changes nothing
            else:
                state = getattr(m, action)("p")["state"]
                assert state == want
        m.delete("p")
        with pytest.raises(NotFound):
            m.describe("p")
    finally:
        m.close()


def test_a_guest_that_ends_is_recorded_and_freed(manager, tmp_path):
    manager.create({"name": "hello", "kernel": guest("hello")})
    manager.start("hello")
    assert manager.wait("hello", timeout=60) == "shutdown"
    about = manager.describe("hello")
    assert about["exit_code"] == 0 and about["id"] is None and about["ended_at"]
    assert about["metrics"]["hypercalls_slow"] >= 1            # console_write, shutdown
    assert b"Hello from an hv guest!" in manager.console_output("hello")
    with pytest.raises(Conflict):
        manager.stop("hello")


def test_a_crash_is_recorded_with_its_report(manager):
    manager.create({"name": "c", "kernel": guest("crash"), "cmdline": "triple-fault"})
    manager.start("c")
    assert manager.wait("c", timeout=60) == "crashed"
    report = manager.describe("c")["crash_report"]
    assert "crashed" in report and "rip=" in report


def test_claims_are_refused_while_held_and_free_after(manager, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    first = waiter(tmp_path, "a", devices=[
        {"type": "console", "socket": str(tmp_path / "a.con")},
        {"type": "net", "mac": "52:54:00:00:00:01"},
        {"type": "blk", "path": str(disk)}])
    manager.create(first)
    clashes = {
        "MAC 52:54:00:00:00:01": [{"type": "net", "mac": "52:54:00:00:00:01"}],
        "disk (read-write)": [{"type": "blk", "path": str(tmp_path / "." / "disk.img")}],
        "console socket": [{"type": "console", "socket": str(tmp_path / "a.con")}],
    }
    for what, devices in clashes.items():
        with pytest.raises(Conflict, match=re.escape(what) + ".* held by partition 'a'"):
            manager.create(waiter(tmp_path, "b", devices=devices))
    with pytest.raises(Conflict, match="exists"):
        manager.create(waiter(tmp_path, "a"))
    assert manager.names() == ["a"]
    manager.stop("a")
    for i, devices in enumerate(clashes.values()):
        manager.create(waiter(tmp_path, f"b{i}", devices=devices))


def test_a_refused_spec_leaves_nothing_behind(manager, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    bad = [
        {"name": "x", "kernel": str(tmp_path / "none.elf"), "devices": [{"type": "blk", "path": str(disk)}]},
        {"name": "x", "kernel": guest("hello"), "mem": "0"},
        {"name": "x", "kernel": guest("hello"), "smp": 17},
        {"name": "x", "kernel": guest("hello"), "protect": {"every": "1s"}},
        {"name": "x", "kernel": guest("hello"),
         "protect": {"every": "1s", "directory": str(disk / "sub")}},   # not a directory
        {"name": "x", "kernel": guest("hello"), "devices": [{"type": "console", "output": 5}]},
        {"name": "", "kernel": guest("hello")},
        {"name": "../x", "kernel": guest("hello")},
        ["not", "a", "table"],
    ]
    for spec in bad:
        with pytest.raises(BadRequest):
            manager.create(spec)
    assert manager.names() == []
    # The disk the first spec opened was closed again: it can be taken read-write.
    manager.create({"name": "x", "kernel": guest("hello"), "devices": [{"type": "blk", "path": str(disk)}]})


def test_concurrent_operations_on_one_partition_are_serialized(manager, tmp_path):
    manager.create(waiter(tmp_path, "p"))
    manager.start("p")
    errors = []

    def client(seed):
        rng = random.Random(seed)
        for _ in range(25):
            op = rng.choice(("pause", "resume", "describe", "metrics"))
            try:
                about = getattr(manager, op)("p")
                assert about["state"] in ("running", "paused"), about
            except Conflict:
                pass                    # the other clients moved it first
            except Exception as e:      # noqa: BLE001 - anything else is the bug
                errors.append(e)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert manager.describe("p")["state"] in ("running", "paused")
    assert manager.stop("p")["state"] == "stopped"


def test_a_weight_or_a_cap_is_the_partitions_share_on_the_scheduler(manager, tmp_path):
    about = manager.create(waiter(tmp_path, "s", weight=512))
    assert about["scheduled"] and about["weight"] == 512 and about["cap"] is None
    manager.start("s")
    assert manager.pause("s")["state"] == "paused"
    assert manager.resume("s")["state"] == "running"
    about = manager.set_share("s", cap=50)
    assert (about["weight"], about["cap"]) == (512, 50)
    metrics = manager.metrics("s")
    assert set(metrics["scheduler"]) == {"run_ns", "dispatches", "blocks", "parent_waits", "migrations"}
    assert metrics["cpu_seconds"] == metrics["scheduler"]["run_ns"] / 1e9
    with pytest.raises(BadRequest, match="weight must be an integer 1..65535"):
        manager.set_share("s", weight=0)
    assert manager.describe("s")["weight"] == 512                     # unchanged
    assert manager.stop("s")["state"] == "stopped"
    with pytest.raises(Conflict, match="it is stopped"):
        manager.set_share("s", cap=10)
    # A guest that ends by itself on the scheduler is recorded as on a thread.
    manager.create({"name": "h", "kernel": guest("hello"), "weight": 300})
    manager.start("h")
    assert manager.wait("h", timeout=60) == "shutdown"
    assert manager.describe("h")["exit_code"] == 0


def test_every_partition_is_on_the_scheduler_and_its_share_can_change(manager, tmp_path):
    """No weight or cap given: the default share, on the scheduler all the
    same; a deterministic partition may not have a cap (its worker's clock
    is guest instructions, not host CPU time)."""
    manager.create(waiter(tmp_path, "t"))
    assert manager.start("t")["scheduled"]
    assert set(manager.metrics("t")["scheduler"]) >= {"run_ns", "migrations"}
    about = manager.set_share("t", weight=300)
    assert (about["weight"], about["cap"]) == (300, None)
    for bad in ({"weight": 0}, {"weight": True}, {"cap": 101}, {"cap": "50"}, {"cap": 10, "deterministic": True}):
        with pytest.raises(BadRequest):
            manager.create({"name": "x", "kernel": guest("hello"), "engine": "tcg", **bad})
