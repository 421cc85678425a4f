"""`hv trace --format chrome` and `hv trace --plot`: traces to look at.

The Chrome trace-event JSON is loaded and validated against a JSON schema
of the parts of the format it uses (the "JSON Object Format": traceEvents
with phases M, X, s, f), then checked for what a viewer relies on: a track
per vCPU, slices that nest in time, flows that end after they start.  The
plot is a PNG matplotlib wrote; without matplotlib the option says so in
one line.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, guest
from hv.abi import lib
from hv.trace_chrome import chrome_events

jsonschema = pytest.importorskip("jsonschema")

NUMBER = {"type": "number", "minimum": 0}
COMMON = {"name": {"type": "string", "minLength": 1}, "pid": {"type": "integer"},
          "tid": {"type": "integer"}}
TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": {"oneOf": [
            {"type": "object", "required": ["name", "ph", "pid", "args"],
             "properties": {**COMMON, "ph": {"const": "M"},
                            "name": {"enum": ["process_name", "thread_name"]},
                            "args": {"type": "object", "required": ["name"]}}},
            {"type": "object", "required": ["name", "cat", "ph", "pid", "tid", "ts", "dur"],
             "properties": {**COMMON, "ph": {"const": "X"}, "cat": {"type": "string"},
                            "ts": NUMBER, "dur": NUMBER, "args": {"type": "object"}}},
            {"type": "object", "required": ["name", "cat", "ph", "id", "pid", "tid", "ts"],
             "properties": {**COMMON, "ph": {"enum": ["s", "f"]}, "id": {"type": "integer"},
                            "ts": NUMBER, "bp": {"const": "e"}}},
        ]}},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
}


def hv(*args):
    return subprocess.run([sys.executable, "-m", "hv", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def check_trace(trace):
    jsonschema.validate(trace, TRACE_SCHEMA)
    events = trace["traceEvents"]
    threads = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {e["tid"] for e in events if e["ph"] == "X"}, "a track per vCPU"
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    for end in (e for e in events if e["ph"] == "f"):
        assert end["ts"] >= starts[end["id"]]["ts"], end
        # Perfetto binds a flow's end to the slice that encloses it ("bp": "e").
        assert any(x["ph"] == "X" and x["tid"] == end["tid"] and x["ts"] <= end["ts"]
                   <= x["ts"] + x["dur"] for x in events), end
    return events


def test_chrome_trace_of_a_timer_upcall():
    proc = hv("trace", "--deterministic", "--format", "chrome", guest("timer-spin"))
    assert proc.returncode == 0, proc.stderr
    events = check_trace(json.loads(proc.stdout))
    names = [e["name"] for e in events if e["ph"] == "X"]
    assert names[0] == "hypercall page" and "set_timer" in names and names[-1] == "shutdown"
    assert any(n.startswith("inject 0xf0") for n in names), names
    # The timer that was armed is joined to the upcall it caused.
    (flow_start,) = [e for e in events if e["ph"] == "s"]
    assert flow_start["name"] == "set_timer"
    parent = [e for e in events if e["ph"] == "X" and e["cat"] == "parent"]
    assert parent and all("result" in e["args"] for e in parent[:-1])   # the last: shutdown


def test_chrome_trace_on_kvm_has_exits_and_wall_time():
    from conftest import kvm_missing_reason
    if kvm_missing_reason():
        pytest.skip(f"KVM unavailable: {kvm_missing_reason()}")
    proc = hv("trace", "--engine", "kvm", "--format", "chrome", "--rng", guest("rng-test"))
    assert proc.returncode == 0, proc.stderr
    events = check_trace(json.loads(proc.stdout))
    exits = [e for e in events if e["ph"] == "X" and e["cat"] == "exit"]
    assert exits and exits[0]["name"] == "exit mmio" and "address" in exits[0]["args"]


def test_device_kicks_and_raises_flow_to_the_injection():
    """The flow logic on records made up for it: a QueueNotify write and an
    event_raise both end at the next injection; a read is not a kick."""
    notify = lib.HV_VIRTIO_MMIO_BASE + lib.HV_VIRTIO_MMIO_SLOT + 0x50
    z = (0,) * 5
    records = [
        (lib.HV_TRACE_EXIT, 0, lib.HV_TRACE_EXIT_MMIO, (notify, 0, 4, 1, 0), 0, 1000),
        (lib.HV_TRACE_EXIT, 0, lib.HV_TRACE_EXIT_MMIO, (notify, 0, 4, 0, 0), 0, 1500),
        (lib.HV_TRACE_HYPERCALL, 1, lib.HV_HC_EVENT_RAISE, (5, 0, 0, 0, 0), 0, 2000),
        (lib.HV_TRACE_HYPERCALL, 1, lib.HV_HC_EVENT_RAISE, (5000, 0, 0, 0, 0), -22, 2100),
        (lib.HV_TRACE_INJECT, 1, 0xf0, z, 0, 3000),
        (lib.HV_TRACE_TO_PARENT, 0, lib.HV_HC_CONSOLE_WRITE, (0x5000, 4, 0, 0, 0), 0, 3500),
        (lib.HV_TRACE_COMPLETE, 0, lib.HV_HC_CONSOLE_WRITE, z, 4, 4500),
    ]
    events = check_trace({"traceEvents": chrome_events(records)})
    starts = [e["name"] for e in events if e["ph"] == "s"]
    ends = [(e["tid"], e["ts"]) for e in events if e["ph"] == "f"]
    assert starts == ["device kick", "event_raise"] and ends == [(1, 3.0), (1, 3.0)]
    write = next(e for e in events if e.get("cat") == "parent")
    assert (write["ts"], write["dur"], write["args"]["result"]) == (3.5, 1.0, "4")


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "trace.png"
    proc = hv("trace", "--deterministic", "--plot", str(out), guest("timer-spin"))
    assert proc.returncode == 0, proc.stderr
    assert "set_timer(deadline=" in proc.stdout          # the text trace is still printed
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_without_matplotlib_says_so_in_one_line(tmp_path):
    """A Python whose matplotlib import fails (a stub package that raises)."""
    stub = tmp_path / "stub" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'stub'}{os.pathsep}{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "hv", "trace", "--plot", str(tmp_path / "x.png"),
                           guest("hello")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["hv: error: hv trace --plot needs matplotlib "
                                        "(pip install matplotlib)"]
    assert proc.stdout == "" and not (tmp_path / "x.png").exists()      # nothing ran
