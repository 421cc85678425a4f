"""Two guests over a channel (guests/vchan-stream, lib/vchan.c), set up
the way `hv up` does it ([[channel]] in the config, hv.manager.connect):
a checksummed stream and echoes on both engines, the parent only in the
setup; the config's [[channel]] checks; a lone partition's channel errors
from inside a guest (guests/evtchn-xtf)."""
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT, engine_missing, guest
from hv.config import ConfigError, load
from hv.testing.boot import boot


def channel_config(tmp_path, engine, cmdline, kernel="vchan-stream", names=("server", "client")):
    path = tmp_path / f"channel-{engine}.toml"
    text = "".join(f"""
[[partition]]
name = "{name}"
kernel = "{guest(kernel)}"
mem = "16M"
engine = "{engine}"
cmdline = "{cmdline}"
""" for name in names)
    path.write_text(text + f"""
[[channel]]
a = "{names[0]}"
b = "{names[1]}"
""")
    return path


def hv_up(config):
    proc = subprocess.run([sys.executable, "-m", "hv", "up", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# KVM here is a software KVM (ring-0 guest code ~1-2 M instr/s): less work there.
WORK = {"tcg": "bytes=262144 echo=20 size=200", "kvm": "bytes=32768 echo=4 size=100"}


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_stream_over_a_channel(tmp_path, engine):
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    proc = subprocess.run([sys.executable, "-m", "hv", "up", str(channel_config(tmp_path, engine, WORK[engine]))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "[server] SUCCESS" in out and "[client] SUCCESS" in out, out
    assert "checksum" in out and " ok" in out, out
    n = WORK[engine].split()[0].split("=")[1]
    assert f"[client] vchan: {n} bytes received" in out, out


def write_config(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text + f"""
[[partition]]
name = "x"
kernel = "{guest('hello')}"
[[partition]]
name = "y"
kernel = "{guest('hello')}"
""")
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('[[channel]]\na = "x"\nb = "z"\n', "no partition named 'z'"),
    ('[[channel]]\na = "x"\nb = "x"\n', "to itself"),
    ('[[channel]]\na = "x"\n', "exactly a = NAME and b = NAME"),
    ('[[channel]]\na = "x"\nb = "y"\nc = 1\n', "exactly a = NAME and b = NAME"),
    ('[[channel]]\na = "x"\nb = "y"\n[[channel]]\na = "y"\nb = "x"\n', "already have a channel"),
    ('channel = 3\n', "must be [[channel]] tables"),
])
def test_channel_config_is_checked(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(write_config(tmp_path, text), with_channels=True)


def test_channel_config_loads(tmp_path):
    specs, channels = load(write_config(tmp_path, '[[channel]]\na = "x"\nb = "y"\n'), with_channels=True)
    assert [s["name"] for s in specs] == ["x", "y"] and channels == [{"a": "x", "b": "y"}]
    assert len(load(write_config(tmp_path, ""))) == 2      # the old shape without the flag


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_channel_errors_from_a_lone_guest(engine):
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    run = boot("evtchn-xtf", engine=engine)
    assert run.verdict == "SUCCESS", run.describe()


def test_channel_declared_through_the_api(tmp_path):
    """`hv up --api-socket` hands [[channel]] to a running `hv serve`
    (hv.client: PUT /partitions/A/channels/B between create and start);
    the pair streams as under `hv up` alone; GET /channels lists it."""
    from apiserver import Server
    server = Server(tmp_path)
    try:
        config = channel_config(tmp_path, "tcg", "bytes=65536 echo=5 size=100")
        up = subprocess.run([sys.executable, "-m", "hv", "up", "--api-socket", server.path, str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        c = server.connect()
        assert c.json("GET", "/channels") == {"channels": [{"a": "server", "b": "client", "gref": 0}]}
        for name in ("server", "client"):
            for _ in range(600):
                about = c.json("GET", f"/partitions/{name}")
                if about["state"] not in ("created", "running"):
                    break
                time.sleep(0.1)
            assert about["state"] == "shutdown" and about["exit_code"] == 0, about
        _, _, out = c.request("GET", "/partitions/client/console")
        assert b"vchan: 65536 bytes received" in out and b"SUCCESS" in out, out
        _, _, out = c.request("GET", "/partitions/server/console")
        assert b"checksum" in out and b" ok" in out, out
        # Too late now, and never twice or to itself.
        status, _, reply = c.request("PUT", "/partitions/server/channels/client", {})
        assert status == 409, reply
        c.close()
    finally:
        server.stop()


def test_manager_connect_rules():
    """What the API and `hv up` refuse, at the manager (no guest runs)."""
    from hv.manager import BadRequest, Conflict, Manager, NotFound
    manager = Manager()
    try:
        for name in ("x", "y", "z"):
            manager.create({"name": name, "kernel": guest("hello"), "mem": "2M", "engine": "tcg"})
        assert manager.connect("x", "y") == {"a": "x", "b": "y", "gref": 0}
        assert manager.connect("x", "z") == {"a": "x", "b": "z", "gref": 16}   # x serves two
        with pytest.raises(Conflict, match="already have a channel"):
            manager.connect("y", "x")
        with pytest.raises(BadRequest, match="to itself"):
            manager.connect("z", "z")
        with pytest.raises(BadRequest, match="gref must be"):
            manager.connect("y", "z", gref=-1)
        with pytest.raises(NotFound):
            manager.connect("y", "nope")
        manager.delete("z")
        assert manager.channels() == [{"a": "x", "b": "y", "gref": 0}]
    finally:
        manager.close()


RACE_ROUNDS = {"tcg": 300, "kvm": 40}


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_revoke_close_and_destroy_while_the_peer_is_at_it(tmp_path, engine):
    """guests/channel-race: a grant revoked while the peer copies it (from
    its own vCPU thread), the peer closing its port while the other sends,
    and a partition destroyed while its grant and port are in use; each
    rule is checked inside the guests, whatever the interleaving."""
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    out = hv_up(channel_config(tmp_path, engine, f"rounds={RACE_ROUNDS[engine]}",
                               kernel="channel-race", names=("a", "b")))
    assert "[a] SUCCESS" in out and "[b] SUCCESS" in out, out
    assert f"[a] race a: {RACE_ROUNDS[engine]} revocations" in out, out
    assert "[b] race b: after" in out and "the peer was gone" in out, out


def test_event_latency_guest_reports(tmp_path):
    """guests/evtchn-latency (tools/bench channel) runs its round trips."""
    out = hv_up(channel_config(tmp_path, "tcg", "n=50 warm=5", kernel="evtchn-latency",
                               names=("a", "b")))
    assert "[a] SUCCESS" in out and "[b] SUCCESS" in out, out
    assert re.search(r"\[a\] evtchn-latency: n=50 rtt p50 ns=\d+ p99 ns=\d+ max ns=\d+ null ns=\d+", out), out
