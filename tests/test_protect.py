"""Scheduled protection (hv/protect.py; `protect` in hv/config.py, hv/manager.py,
the API's /partitions/{name}/protection; docs/lifecycle.md).

The real thing first: `hv up` runs an SMP guest with protection in a
subprocess, is killed with SIGKILL mid-run (the host "crashes"), and
`hv restore` of the protection directory resumes the newest snapshot; the
guest finishes exactly as an uninterrupted run does.  Then what a user is
promised besides: the last K are kept, hv never removes a file it did not
make, a bad protect table is one line and exit 2, and the manager's calls.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, guest
from hv.config import ConfigError, check_protect
from hv.manager import BadRequest, Conflict, Manager
from hv.partition import SHUTDOWN, Partition
from hv.protect import MARKER, Protection, latest, snapshots
from test_snapshot import Output

CMDLINE = "rounds=400 pause=5000000"      # smp-snap: 2 s of sleeping at least
SMP = 3


def hv(*args, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "hv", *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, **kw)


def config(tmp_path, protect, **extra):
    fields = {"name": "web", "kernel": guest("smp-snap"), "mem": "16M", "smp": SMP,
              "engine": "tcg", "cmdline": CMDLINE, **extra}
    lines = ["[[partition]]"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                                 for k, v in fields.items()]
    lines.append(f"protect = {protect}")
    path = tmp_path / "up.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return str(path)


def uninterrupted():
    out = Output()
    with Partition(guest("smp-snap"), mem="16M", engine="tcg", cmdline=CMDLINE, console=out,
                   smp=SMP) as p:
        assert p.run() == SHUTDOWN, p.crash_report
    return out.data.decode()


def test_hv_up_killed_mid_run_resumes_from_the_newest_snapshot(tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "notes.txt").write_text("mine")           # not hv's: must stay
    (guard / "snap-0").mkdir()                          # a number taken by someone else
    (guard / "snap-0" / "mine.txt").write_text("mine")
    cfg = config(tmp_path, '{ every = "100ms", keep = 2, directory = "guard" }')
    up = subprocess.Popen([sys.executable, "-m", "hv", "up", cfg], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Two snapshots, then the crash: a third may not come before a
        # quiet host has run the guest to its end.
        while len(snapshots(str(guard))) < 2 and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.poll() is None, up.communicate()
        up.send_signal(signal.SIGKILL)                  # the host crashes
        before, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert b"SUCCESS" not in before                     # it was killed mid-run
    kept = snapshots(str(guard), ours=True)
    assert 2 <= len(kept) <= 3                          # the last 2 (a third may be mid-prune)
    assert (guard / "notes.txt").read_text() == "mine"
    assert (guard / "snap-0" / "mine.txt").read_text() == "mine"
    assert not (guard / "snap-0" / MARKER).exists()
    newest = latest(str(guard))
    run = hv("restore", str(guard))
    assert run.returncode == 0, run.stderr.decode()
    assert f"{newest}, the newest of".encode() in run.stderr
    assert run.stdout.decode() == uninterrupted()


@pytest.mark.parametrize("protect, why", [
    ('{ every = "30", directory = "g" }', "not a duration"),
    ('{ every = "1s", keep = 0, directory = "g" }', "keep must be an integer 1..1000"),
    ('{ every = "1s" }', "needs every"),
    ('{ every = "1s", directory = "g", dir = "h" }', "unknown key 'dir'"),
    ('"every 30s"', "protect must be a table"),
])
def test_a_bad_protect_table_is_one_line_and_exit_2(tmp_path, protect, why):
    from hv.config import load
    cfg = config(tmp_path, protect)
    with pytest.raises(ConfigError, match=why):
        load(cfg)
    if why == "not a duration":             # and as the user sees it, once
        run = hv("up", cfg, timeout=60)
        lines = run.stderr.decode().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("hv: error:")
        assert why in lines[0] and not run.stdout
        assert not (tmp_path / "g").exists()


def test_protect_paths_are_relative_to_the_config_file(tmp_path):
    table = check_protect({"every": "500ms", "directory": "g"}, "p", str(tmp_path))
    assert table == {"every": "500ms", "keep": 3, "directory": str(tmp_path / "g"), "copy_disks": False}
    assert check_protect(table, "p", "/elsewhere") == table      # checked twice: the same


def test_only_protections_own_snapshots_are_pruned(tmp_path):
    """A complete snapshot someone put there (no marker) is never removed,
    nor is a directory of ours once it holds a file of someone else's."""
    out = Output()
    p = Partition(guest("snap-counter"), engine="tcg", cmdline="rounds=400 pause=3000000",
                  console=out)
    p.start()
    try:
        p.snapshot(str(tmp_path / "snap-0"))            # the user's own, complete
        guard = Protection(p, str(tmp_path), every=0.02, keep=1)
        deadline = time.monotonic() + 30
        while guard.saved < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        guard.stop()
    finally:
        p.destroy()
    assert guard.saved >= 4, guard.error
    assert os.path.exists(tmp_path / "snap-0" / "state")
    ours = snapshots(str(tmp_path), ours=True)
    assert len(ours) == 1 and ours[0] == latest(str(tmp_path))
    assert int(ours[0].rsplit("-", 1)[1]) >= 4          # numbers go on past the user's


def test_the_manager_sets_queries_and_clears_protection(tmp_path):
    m = Manager()
    try:
        m.create({"name": "c", "kernel": guest("snap-counter"), "engine": "tcg",
                  "cmdline": "rounds=400 pause=3000000"})
        with pytest.raises(BadRequest, match="every"):
            m.set_protection("c", {"every": "soon", "directory": str(tmp_path / "g")})
        about = m.set_protection("c", {"every": "20ms", "keep": 2, "directory": str(tmp_path / "g")})
        assert about["every"] == "20ms" and not about["active"]       # from its start on
        m.start("c")
        deadline = time.monotonic() + 30
        while m.protection("c")["saved"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        about = m.protection("c")
        assert about["active"] and about["saved"] >= 3 and about["last_error"] is None
        assert 1 <= len(about["snapshots"]) <= 3 and about["last_pause_seconds"] > 0
        assert m.describe("c")["protect"]["keep"] == 2
        m.clear_protection("c")
        about = m.protection("c")
        assert not about["active"] and about["every"] is None and about["snapshots"]
        m.stop("c")
        with pytest.raises(Conflict, match="stopped"):
            m.set_protection("c", {"every": "1s", "directory": str(tmp_path / "g")})
    finally:
        m.close()


def test_hv_protect_through_the_api(tmp_path):
    from apiserver import Server
    server = Server(tmp_path)
    try:
        c = server.connect()
        c.json("PUT", "/partitions/p", {"kernel": guest("snap-counter"), "engine": "tcg",
                                        "cmdline": "rounds=2000 pause=5000000"}, expect=201)
        c.json("PUT", "/partitions/p/actions", {"action": "start"})
        c.close()
        sock = ["--api-socket", server.path]
        bad = hv("protect", "p", str(tmp_path / "g"), *sock)
        assert bad.returncode == 2 and bad.stderr.decode().startswith("hv: error:")
        bad = hv("protect", "p", str(tmp_path / "g"), "--every", "soon", *sock)
        assert bad.returncode == 2 and "not a duration" in bad.stderr.decode()
        on = hv("protect", "p", str(tmp_path / "g"), "--every", "50ms", "--keep", "2", *sock)
        assert on.returncode == 0 and b"p: every 50ms, keep 2, into " in on.stdout, on.stderr
        deadline = time.monotonic() + 30
        while len(snapshots(str(tmp_path / "g"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        shown = hv("protect", "p", *sock)
        assert shown.returncode == 0 and shown.stdout.count(b"/snap-") >= 2, shown.stdout
        off = hv("protect", "p", "--off", *sock)
        assert off.returncode == 0 and off.stdout == b"p: not protected\n"
        assert hv("protect", "p", *sock).stdout.startswith(b"p: not protected\n")
    finally:
        server.stop()
