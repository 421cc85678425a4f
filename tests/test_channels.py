"""Two guests over a channel (guests/vchan-stream, lib/vchan.c), set up
the way `hv up` does it ([[channel]] in the config, hv.manager.connect):
a checksummed stream and echoes on both engines, the parent only in the
setup; the config's [[channel]] checks; a lone partition's channel errors
from inside a guest (guests/evtchn-xtf)."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT, engine_missing, guest
from hv.config import ConfigError, load
from hv.testing.boot import boot


def channel_config(tmp_path, engine, cmdline):
    path = tmp_path / f"channel-{engine}.toml"
    path.write_text(f"""
[[partition]]
name = "server"
kernel = "{guest('vchan-stream')}"
mem = "16M"
engine = "{engine}"
cmdline = "{cmdline}"

[[partition]]
name = "client"
kernel = "{guest('vchan-stream')}"
mem = "16M"
engine = "{engine}"
cmdline = "{cmdline}"

[[channel]]
a = "server"
b = "client"
""")
    return path


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
