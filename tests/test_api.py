"""hv serve's REST API through real clients: http.client over the Unix
socket, curl --unix-socket (the examples of docs/api.md), and the hv
client commands (ps, create, pause, resume, stop, describe, delete, top,
up --api-socket)."""
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apiserver import Server, attach_and_send, console_path, raw_exchange, waiter_spec
from conftest import ROOT, guest


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


def hv(server, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "hv", *map(str, args), "--api-socket", server.path],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ---- the lifecycle over HTTP -------------------------------------------------------------

def test_lifecycle_over_one_keep_alive_connection(server, tmp_path):
    c = server.connect()
    about = c.json("PUT", "/partitions/w", waiter_spec(tmp_path, "w"), expect=201)
    assert about["state"] == "created" and about["consoles"] == [console_path(tmp_path, "w")]
    for action, state in (("start", "running"), ("pause", "paused"), ("resume", "running")):
        assert c.json("PUT", "/partitions/w/actions", {"action": action})["state"] == state
    assert [p["name"] for p in c.json("GET", "/partitions")["partitions"]] == ["w"]
    # The guest was never harmed by pausing: it answers on its console and ends.
    assert attach_and_send(console_path(tmp_path, "w"), "ping") == "echo: ping\n"
    deadline = time.monotonic() + 60        # the guest shuts down once it has echoed
    while (about := c.json("GET", "/partitions/w"))["state"] == "running":
        assert time.monotonic() < deadline, about
        time.sleep(0.01)
    assert about["state"] == "shutdown" and about["exit_code"] == 0, about
    assert b"SUCCESS" in c.request("GET", "/partitions/w/console")[2]
    assert about["metrics"]["hypercalls_slow"] > 0
    status, _, _ = c.request("DELETE", "/partitions/w")
    assert status == 204
    assert c.json("GET", "/partitions")["partitions"] == []
    c.close()


def test_stop_frees_what_the_partition_held(server, tmp_path):
    c = server.connect()
    c.json("PUT", "/partitions/a", waiter_spec(tmp_path, "a"), expect=201)
    c.json("PUT", "/partitions/a/actions", {"action": "start"})
    assert os.path.exists(console_path(tmp_path, "a"))
    # Another partition naming the same console socket is refused while a holds it...
    status, _, reply = c.request("PUT", "/partitions/b", waiter_spec(tmp_path, "a"))
    assert status == 409 and "held by partition 'a'" in reply["fault_message"]
    about = c.json("PUT", "/partitions/a/actions", {"action": "stop"})
    assert about["state"] == "stopped" and about["id"] is None
    assert not os.path.exists(console_path(tmp_path, "a"))
    # ...and accepted once a has stopped.
    c.json("PUT", "/partitions/b", waiter_spec(tmp_path, "a"), expect=201)
    c.close()


def test_concurrent_clients_on_one_partition(server, tmp_path):
    """Four clients pausing, resuming and describing one partition at once:
    every answer is 200 or 409, and the guest comes out unharmed."""
    import random
    import threading
    c = server.connect()
    c.json("PUT", "/partitions/w", waiter_spec(tmp_path, "w"), expect=201)
    c.json("PUT", "/partitions/w/actions", {"action": "start"})
    seen = []

    def client(seed):
        rng, conn = random.Random(seed), server.connect()
        for _ in range(20):
            action = rng.choice(("pause", "resume", None))
            if action:
                status, _, reply = conn.request("PUT", "/partitions/w/actions", {"action": action})
            else:
                status, _, reply = conn.request("GET", "/partitions/w")
            seen.append((status, reply.get("state") if status == 200 else reply["fault_message"]))
        conn.close()

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _ in seen} <= {200, 409}, seen
    assert all(what in ("running", "paused") for status, what in seen if status == 200), seen
    if c.json("GET", "/partitions/w")["state"] == "paused":
        c.json("PUT", "/partitions/w/actions", {"action": "resume"})
    assert attach_and_send(console_path(tmp_path, "w"), "ok") == "echo: ok\n"
    c.close()


# ---- every bad request: its status, its one message, and no harm done ------------------------

def bad_requests(tmp_path):
    """(method, url, body or raw bytes, expected status, a word of the message)."""
    hello = guest("hello")
    return [
        ("PUT", "/partitions/x", b"{not json", 400, "not JSON"),
        ("PUT", "/partitions/x", b"[1, 2]", 400, "object"),
        ("PUT", "/partitions/x", {}, 400, "kernel"),
        ("PUT", "/partitions/x", {"kernel": hello, "vcpus": 2}, 400, "unknown key 'vcpus'"),
        ("PUT", "/partitions/x", {"kernel": hello, "mem": 64}, 400, "mem must be str"),
        ("PUT", "/partitions/x", {"kernel": hello, "mem": "lots"}, 400, "memory size"),
        ("PUT", "/partitions/x", {"kernel": hello, "engine": "qemu"}, 400, "engine"),
        ("PUT", "/partitions/x", {"kernel": str(tmp_path / "none.elf")}, 400, "none.elf"),
        ("PUT", "/partitions/x", {"kernel": hello, "devices": [{"type": "gpu"}]}, 400, "type"),
        ("PUT", "/partitions/x", {"kernel": hello, "devices": [{"type": "net", "mac": "1:2"}]},
         400, "MAC"),
        ("PUT", "/partitions/x", {"kernel": hello, "devices": [{"type": "blk", "path": 5}]},
         400, "path"),
        ("PUT", "/partitions/x", {"kernel": hello, "name": "y"}, 400, "names 'y'"),
        ("PUT", "/partitions/a%20b", {"kernel": hello}, 400, "name"),
        ("PUT", "/partitions/w", {"kernel": hello}, 409, "exists"),
        ("PUT", "/partitions/w/actions", {"action": "start"}, 409, "running"),
        ("PUT", "/partitions/w/actions", {"action": "resume"}, 409, "running"),
        ("PUT", "/partitions/w/actions", {"action": "reboot"}, 400, "action"),
        ("PUT", "/partitions/w/actions", {"action": "stop", "now": True}, 400, "action"),
        ("PUT", "/partitions/w/actions", None, 400, "action"),
        ("PUT", "/partitions/nope/actions", {"action": "pause"}, 404, "no partition 'nope'"),
        ("GET", "/partitions/nope", None, 404, "nope"),
        ("DELETE", "/partitions/nope", None, 404, "nope"),
        ("GET", "/partitions/nope/metrics", None, 404, "nope"),
        ("GET", "/partitions/nope/console", None, 404, "nope"),
        ("GET", "/nothing/here", None, 404, "no such resource"),
        ("POST", "/partitions", None, 405, "allowed: GET"),
        ("DELETE", "/version", None, 405, "allowed: GET"),
        ("PATCH", "/partitions/w", {}, 405, "allowed"),
    ]


def test_bad_requests_are_refused_and_harm_nothing(server, tmp_path):
    c = server.connect()
    c.json("PUT", "/partitions/w", waiter_spec(tmp_path, "w"), expect=201)
    c.json("PUT", "/partitions/w/actions", {"action": "start"})
    for method, url, body, status, word in bad_requests(tmp_path):
        raw = body if isinstance(body, bytes) else None
        got, response, reply = c.request(method, url, body=None if raw else body, raw=raw)
        assert got == status, (method, url, body, got, reply)
        assert word in reply["fault_message"], (method, url, reply)
        if status == 405:
            assert response.getheader("Allow")
    # Same connection still good; nothing was made; w runs on unharmed.
    assert [p["name"] for p in c.json("GET", "/partitions")["partitions"]] == ["w"]
    assert c.json("GET", "/partitions/w")["state"] == "running"
    assert attach_and_send(console_path(tmp_path, "w"), "still here") == "echo: still here\n"
    c.close()


def test_body_too_large_is_refused_unread(server):
    c = server.connect()
    c.conn.putrequest("PUT", "/partitions/big")
    c.conn.putheader("Content-Length", str(2 << 20))
    c.conn.endheaders()                 # no body sent: the server must not wait for it
    response = c.conn.getresponse()
    assert response.status == 413
    assert "at most 1048576" in json.loads(response.read())["fault_message"]
    assert response.getheader("Connection") == "close"
    c.close()
    assert server.connect().json("GET", "/partitions")["partitions"] == []


def test_chunked_body_is_refused(server):
    head, body = raw_exchange(server.path, b"PUT /partitions/x HTTP/1.1\r\nHost: x\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert head.startswith("HTTP/1.1 411 ") and "Content-Length" in json.loads(body)["fault_message"]


def test_malformed_request_line_gets_a_json_error(server):
    head, body = raw_exchange(server.path, b"GARBAGE\r\n\r\n")
    assert head.startswith("HTTP/1.1 400 ") and "fault_message" in json.loads(body)


def test_socket_is_private_and_removed_on_sigterm(server):
    assert os.stat(server.path).st_mode & 0o077 == 0
    status, _, err = server.stop()
    assert status == 0 and err.strip().endswith("hv serve: stopped"), err
    assert not os.path.exists(server.path)


def test_a_live_socket_is_not_taken_over(server, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hv", "serve", "--api-socket", server.path],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "in use by a running server" in proc.stderr
    assert server.connect().json("GET", "/version")["api_version"]


def test_a_file_at_the_socket_path_is_not_removed(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("data")
    proc = subprocess.run([sys.executable, "-m", "hv", "serve", "--api-socket", str(precious)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a socket" in proc.stderr
    assert precious.read_text() == "data"


# ---- curl, as docs/api.md shows it ---------------------------------------------------------

def doc_examples():
    """(command, expected) pairs from docs/api.md's example session: each
    `curl` command (with its continuation lines) and the `# ` line after it."""
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    session = re.search(r"<!-- example session -->\n```sh\n(.*?)```", text, re.S).group(1)
    examples, command = [], None
    for line in session.splitlines():
        if command is not None and command.endswith("\\"):
            command = command[:-1] + line.strip()
        elif line.startswith("curl"):
            command = line
        elif line.startswith("# ") and command is not None:
            examples.append((command, line[2:]))
            command = None
    return examples


def matches(expected, actual):
    """`expected` is a JSON object, perhaps cut short with `...`: every key
    shown must have the value shown."""
    if expected.endswith(", ...}"):
        expected = expected[:-len(", ...}")] + "}"
    want = json.loads(expected)
    return all(actual.get(k) == v for k, v in want.items())


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples_of_the_docs(server):
    examples = doc_examples()
    assert len(examples) >= 8
    env = {**os.environ, "S": server.path}
    for command, expected in examples:
        proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (command, proc.stderr)
        out = proc.stdout.strip()
        if expected.startswith("{"):
            assert matches(expected, json.loads(out) if out else {}), (command, out)
        else:
            assert expected in out, (command, out)


# ---- the hv client commands ---------------------------------------------------------------

def test_client_commands(server, tmp_path):
    con = tmp_path / "c.con"
    proc = hv(server, "create", "c", guest("vcon-echo"), "--cmdline", "wait=600",
              "--vconsole", f"unix:{con}", "--start")
    assert (proc.returncode, proc.stdout) == (0, "c: running\n"), proc.stderr
    ps = hv(server, "ps")
    assert ps.returncode == 0
    header, row = ps.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "ENGINE", "MEM", "EXIT", "UPTIME", "CONSOLES"]
    assert row.split()[:2] == ["c", "running"] and row.split()[-1] == os.path.realpath(con)
    assert hv(server, "pause", "c").stdout == "c: paused\n"
    again = hv(server, "pause", "c")
    assert again.returncode == 2 and again.stderr == "hv: error: cannot pause partition 'c': it is paused\n"
    assert hv(server, "resume", "c").stdout == "c: running\n"
    about = json.loads(hv(server, "describe", "c", "--json").stdout)
    assert about["state"] == "running" and about["cmdline"].startswith("wait=600")
    text = hv(server, "describe", "c").stdout
    assert "state: running" in text and "device 0: console" in text
    listed = json.loads(hv(server, "ps", "--json").stdout)
    assert [p["name"] for p in listed] == ["c"]
    assert hv(server, "stop", "c").stdout == "c: stopped\n"
    assert hv(server, "stop", "c").returncode == 2
    assert hv(server, "delete", "c").returncode == 0
    missing = hv(server, "describe", "c")
    assert missing.returncode == 2 and "no partition 'c'" in missing.stderr


def test_client_without_a_server(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hv", "ps", "--api-socket", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("hv: error: no hv serve at") and len(proc.stderr.splitlines()) == 1


def test_up_registers_with_a_server(server, tmp_path):
    config = tmp_path / "two.toml"
    config.write_text(f"""
[[partition]]
name = "one"
kernel = "{guest('vcon-echo')}"
cmdline = "wait=600"
devices = [{{ type = "console", socket = "./one.con" }}]

[[partition]]
name = "two"
kernel = "{guest('vcon-echo')}"
cmdline = "wait=600"
devices = [{{ type = "console", socket = "./two.con" }}]
""")
    proc = subprocess.run([sys.executable, "-m", "hv", "up", str(config), "--api-socket", server.path],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["one: running", "two: running"]
    c = server.connect()
    assert c.json("GET", "/partitions/one")["state"] == "running"
    # The console socket's path was relative to the config file.
    assert attach_and_send(str(tmp_path / "one.con"), "hi") == "echo: hi\n"
    # A second registration of the same file is refused whole: nothing new is made.
    again = subprocess.run([sys.executable, "-m", "hv", "up", str(config), "--api-socket", server.path],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    assert [p["name"] for p in c.json("GET", "/partitions")["partitions"]] == ["one", "two"]


def test_top_in_a_terminal(server, tmp_path):
    c = server.connect()
    for name in ("alpha", "beta"):
        c.json("PUT", f"/partitions/{name}", waiter_spec(tmp_path, name), expect=201)
    c.json("PUT", "/partitions/alpha/actions", {"action": "start"})
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "hv", "top", "--api-socket", server.path,
                                  "--iterations", "2", "--interval", "0.05"])
    screen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:                 # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, screen
    frames = screen.decode().split("\x1b[H\x1b[2J")
    assert len(frames) == 3 and frames[0] == ""        # two screens, each clears the last
    lines = frames[-1].replace("\r\n", "\n").splitlines()
    assert re.match(r"hv top - \d\d:\d\d:\d\d - 2 partitions, 1 running$", lines[0]), lines
    assert lines[1].split() == ["NAME", "STATE", "CPU%", "EXITS/s", "HCALLS/s", "DEVREQ/s",
                                "OUT", "KiB/s", "IN", "KiB/s", "UPTIME"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert rows["alpha"][1] == "running" and rows["beta"][1] == "created"
    assert all(re.fullmatch(r"\d+(\.\d)?", cell) for cell in rows["alpha"][2:8])


def test_top_rates_are_differences_over_time():
    from hv.top import rates, render

    def sample(t, cpu, exits, fast, slow, requests, out, into, state="running"):
        dev = {"slot": 0, "name": "blk", "type": "blk", "requests": requests, "errors": 0,
               "bytes_from_guest": out, "bytes_to_guest": into}
        return {"time": t, "switches": {}, "partitions": [
            {"name": "a", "state": state, "uptime_seconds": t, "cpu_seconds": cpu, "exits": exits,
             "hypercalls_fast": fast, "hypercalls_slow": slow, "devices": [dev]}]}

    prev = sample(10.0, 1.0, 100, 50, 10, 4, 0, 0)
    cur = sample(12.0, 2.5, 300, 250, 30, 8, 4096, 2048)
    (row,) = rates(prev, cur)
    assert row == {"name": "a", "state": "running", "uptime": 12.0, "cpu": 0.75, "exits": 100.0,
                   "hypercalls": 110.0, "requests": 2.0, "out": 2048.0, "in": 1024.0}
    screen = render(prev, cur, clock=0).splitlines()
    assert screen[3].split() == ["a", "running", "75.0", "100", "110", "2", "2.0", "1.0", "12s"]
    # A partition new since the last sample has no rates yet.
    (row,) = rates({"time": 0, "partitions": []}, cur)
    assert row["cpu"] is None and "-" in render({"time": 0, "partitions": []}, cur).splitlines()[3]


def test_connections_are_bounded(server):
    """Each open connection costs the server a thread: the one over the
    limit is answered 503 and closed; once one closes, a new one is served."""
    import socket

    from hv.api import MAX_CONNECTIONS
    idle = []
    for _ in range(MAX_CONNECTIONS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(server.path)
        idle.append(s)
    # The server takes connections in order: the first ones are served, the
    # one past the limit is answered at once (before it sends a request).
    idle[0].sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle[0].recv(65536).startswith(b"HTTP/1.1 200 ")
    head, body = raw_exchange(server.path, b"")
    assert head.startswith("HTTP/1.1 503 ") and "connections" in json.loads(body)["fault_message"]
    idle.pop().close()
    # The slot comes back when the server's thread for that connection has
    # seen the close and ended: wait for that (a condition, not a time).
    deadline = time.monotonic() + 60
    request = b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    while (head := raw_exchange(server.path, request)[0]).startswith("HTTP/1.1 503 "):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert head.startswith("HTTP/1.1 200 "), head
    for s in idle:
        s.close()


def test_top_json_lines(server, tmp_path):
    c = server.connect()
    c.json("PUT", "/partitions/j", waiter_spec(tmp_path, "j"), expect=201)
    c.json("PUT", "/partitions/j/actions", {"action": "start"})
    proc = hv(server, "top", "--json", "--iterations", "2", "--interval", "0.05")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["name"] for line in lines] == ["j", "j"]
    assert lines[0]["time"] < lines[1]["time"] and lines[0]["exits"] <= lines[1]["exits"]
    assert {"hypercalls_fast", "hypercalls_slow", "devices", "cpu_seconds"} <= set(lines[0])


# ---- any body, any field: a 4xx or a partition, never a 500 --------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
FIELDS = ["name", "kernel", "initrd", "mem", "cmdline", "engine", "deterministic", "devices",
          "smp", "bogus"]
DEVICE = st.fixed_dictionaries({"type": st.sampled_from(["blk", "rng", "console", "net", "gpu"])},
                               optional={k: JSON_VALUES for k in ("path", "readonly", "output",
                                                                  "socket", "switch", "mac")})
SPEC = st.fixed_dictionaries({}, optional={
    **{k: JSON_VALUES for k in FIELDS},
    "kernel": st.sampled_from([guest("hello"), "/nonexistent", ""]) | JSON_VALUES,
    "devices": st.lists(DEVICE | JSON_VALUES, max_size=3),
})


@pytest.fixture(scope="module")
def inprocess_server(tmp_path_factory):
    """An APIServer on a thread of this process (a subprocess per example would be slow)."""
    import threading

    from hv.api import APIServer
    from hv.manager import Manager
    path = str(tmp_path_factory.mktemp("api") / "api.socket")
    server = APIServer(path, Manager())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.close()
    server.manager.close()


# A good spec with at most one field changed: reaches past the first check.
GOOD_FIELD_VALUES = {"mem": st.sampled_from(["32M", "1G", "0", "-1", "64X"]),
                     "engine": st.sampled_from(["auto", "tcg", "kvm", "none"]),
                     "cmdline": st.text(max_size=20), "deterministic": st.booleans(),
                     "devices": st.lists(DEVICE, max_size=2)}
ONE_CHANGE = st.sampled_from(FIELDS).flatmap(lambda key: st.tuples(
    st.just(key), GOOD_FIELD_VALUES.get(key, JSON_VALUES) | JSON_VALUES)).map(
    lambda kv: {"kernel": guest("hello"), kv[0]: kv[1]})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=ONE_CHANGE | SPEC | JSON_VALUES)
def test_any_create_body_is_refused_cleanly_or_made(inprocess_server, body):
    from apiserver import Connection
    c = Connection(inprocess_server.path)
    try:
        status, _, reply = c.request("PUT", "/partitions/fuzz", body)
        assert status in (201, 400, 409), (status, reply)
        event(f"status {status}")
        if status == 201:
            assert reply["state"] == "created"
            assert c.request("DELETE", "/partitions/fuzz")[0] == 204
        else:
            assert reply["fault_message"]
        assert c.json("GET", "/partitions")["partitions"] == []
    finally:
        c.close()


def test_client_create_on_the_scheduler_and_share(server, tmp_path):
    proc = hv(server, "create", "s", guest("vcon-echo"), "--cmdline", "wait=600",
              "--vconsole", f"unix:{tmp_path / 's.con'}", "--weight", "512", "--start")
    assert (proc.returncode, proc.stdout) == (0, "s: running\n"), proc.stderr
    assert "scheduler: weight 512, cap 0%" in hv(server, "describe", "s").stdout
    share = hv(server, "share", "s", "--weight", "300")
    assert (share.returncode, share.stdout) == (0, "s: weight 300, cap 0%\n"), share.stderr
    bad = hv(server, "share", "s", "--weight", "0")
    assert bad.returncode == 2 and "weight must be an integer" in bad.stderr
    assert attach_and_send(str(tmp_path / "s.con"), "sched") == "echo: sched\n"
