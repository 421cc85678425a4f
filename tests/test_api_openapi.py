"""docs/api.yaml is a valid OpenAPI 3 document, and it is what the live
server does: every documented path, method and status code is produced by
a request below and answered with the documented media type and schema;
every route the server has is documented."""
import os
import re

import pytest

from apiserver import Server, waiter_spec
from conftest import ROOT, guest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with openapi-spec-validator "
                                          "(pip install -r requirements-test.txt)")
validator = pytest.importorskip("openapi_spec_validator",
                                reason="pip install -r requirements-test.txt")
from openapi_schema_validator import OAS31Validator  # noqa: E402 - after the skip

DOC_PATH = os.path.join(ROOT, "docs", "api.yaml")
METHODS = ("get", "put", "post", "delete", "patch")


def document():
    with open(DOC_PATH) as f:
        return yaml.safe_load(f)


def resolve(doc, node):
    """`node` with every local $ref replaced by what it points at."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(doc, target)
        return {k: resolve(doc, v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(doc, v) for v in node]
    return node


def documented(doc):
    """{(METHOD, path template, status): response object}."""
    found = {}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                for status, response in item[method]["responses"].items():
                    found[(method.upper(), path, int(status))] = resolve(doc, response)
    return found


def test_document_is_valid_openapi():
    validator.validate(document())


# How to make each documented answer happen: (method, path template, status) ->
# fn(tmp_path) -> (url, JSON body, or the Content-Length of a body that is not sent).  The names used:
# "live" is created and running, "made" created, never started, "sched" running on the scheduler.
def _spec(tmp_path, name):
    return waiter_spec(tmp_path, name)


SCENARIOS = {
    ("GET", "/version", 200): lambda t: ("/version", None, None),
    ("GET", "/metrics", 200): lambda t: ("/metrics", None, None),
    ("GET", "/partitions", 200): lambda t: ("/partitions", None, None),
    ("PUT", "/partitions/{name}", 201): lambda t: ("/partitions/new", _spec(t, "new"), None),
    ("PUT", "/partitions/{name}", 400): lambda t: ("/partitions/bad", {"kernel": guest("hello"),
                                                                      "mem": "lots"}, None),
    # "other" names the console socket that "live" holds.
    ("PUT", "/partitions/{name}", 409): lambda t: ("/partitions/other", _spec(t, "live"), None),
    ("PUT", "/partitions/{name}", 413): lambda t: ("/partitions/big", None, 1 << 20 | 1),
    ("GET", "/partitions/{name}", 200): lambda t: ("/partitions/live", None, None),
    ("GET", "/partitions/{name}", 404): lambda t: ("/partitions/nope", None, None),
    ("DELETE", "/partitions/{name}", 204): lambda t: ("/partitions/made", None, None),
    ("DELETE", "/partitions/{name}", 404): lambda t: ("/partitions/nope", None, None),
    ("PUT", "/partitions/{name}/actions", 200): lambda t: ("/partitions/live/actions",
                                                           {"action": "pause"}, None),
    ("PUT", "/partitions/{name}/actions", 400): lambda t: ("/partitions/live/actions",
                                                           {"action": "explode"}, None),
    ("PUT", "/partitions/{name}/actions", 404): lambda t: ("/partitions/nope/actions",
                                                           {"action": "start"}, None),
    ("PUT", "/partitions/{name}/actions", 409): lambda t: ("/partitions/live/actions",
                                                           {"action": "start"}, None),
    ("PUT", "/partitions/{name}/share", 200): lambda t: ("/partitions/sched/share",
                                                         {"weight": 512, "cap": 40}, None),
    ("PUT", "/partitions/{name}/share", 400): lambda t: ("/partitions/sched/share",
                                                         {"weight": 0}, None),
    ("PUT", "/partitions/{name}/share", 404): lambda t: ("/partitions/nope/share",
                                                         {"cap": 10}, None),
    # Every partition is on the scheduler: one that has not started has no share to change.
    ("PUT", "/partitions/{name}/share", 409): lambda t: ("/partitions/idle/share",
                                                         {"cap": 10}, None),
    ("PUT", "/partitions/{name}/migrate", 200): lambda t: ("/partitions/mover/migrate",
                                                           {"address": f"unix:{t}/rx.sock"}, None),
    ("PUT", "/partitions/{name}/migrate", 400): lambda t: ("/partitions/bare/migrate",
                                                           {"address": "tcp:10.0.0.1:1"}, None),
    ("PUT", "/partitions/{name}/migrate", 404): lambda t: ("/partitions/nope/migrate",
                                                           {"address": "unix:/x"}, None),
    # "idle" was created and never started.
    ("PUT", "/partitions/{name}/migrate", 409): lambda t: ("/partitions/idle/migrate",
                                                           {"address": "unix:/x"}, None),
    # "bare" runs snap-counter (no devices); "ended" was stopped.
    ("PUT", "/partitions/{name}/protection", 200): lambda t: (
        "/partitions/bare/protection", {"every": "1s", "keep": 2, "directory": str(t / "guard")}, None),
    ("PUT", "/partitions/{name}/protection", 400): lambda t: (
        "/partitions/bare/protection", {"every": "soon", "directory": str(t / "guard")}, None),
    ("PUT", "/partitions/{name}/protection", 404): lambda t: (
        "/partitions/nope/protection", {"every": "1s", "directory": str(t / "guard")}, None),
    ("PUT", "/partitions/{name}/protection", 409): lambda t: (
        "/partitions/ended/protection", {"every": "1s", "directory": str(t / "guard")}, None),
    ("GET", "/partitions/{name}/protection", 200): lambda t: ("/partitions/bare/protection",
                                                              None, None),
    ("GET", "/partitions/{name}/protection", 404): lambda t: ("/partitions/nope/protection",
                                                              None, None),
    ("DELETE", "/partitions/{name}/protection", 204): lambda t: ("/partitions/bare/protection",
                                                                 None, None),
    ("DELETE", "/partitions/{name}/protection", 404): lambda t: ("/partitions/nope/protection",
                                                                 None, None),
    ("PUT", "/partitions/{name}/snapshot", 200): lambda t: ("/partitions/bare/snapshot",
                                                            {"directory": str(t / "snap")}, None),
    ("PUT", "/partitions/{name}/snapshot", 400): lambda t: ("/partitions/bare/snapshot",
                                                            {"dir": "x"}, None),
    ("PUT", "/partitions/{name}/snapshot", 404): lambda t: ("/partitions/nope/snapshot",
                                                            {"directory": str(t / "s")}, None),
    # "idle" was created and never started: nothing to save yet.
    ("PUT", "/partitions/{name}/snapshot", 409): lambda t: ("/partitions/idle/snapshot",
                                                            {"directory": str(t / "s")}, None),
    ("GET", "/partitions/{name}/metrics", 200): lambda t: ("/partitions/live/metrics", None, None),
    ("GET", "/partitions/{name}/metrics", 404): lambda t: ("/partitions/nope/metrics", None, None),
    ("GET", "/partitions/{name}/console", 200): lambda t: ("/partitions/live/console", None, None),
    ("GET", "/partitions/{name}/console", 404): lambda t: ("/partitions/nope/console", None, None),
    # "made2" and "made3" are created, never started; "live" runs.
    ("PUT", "/partitions/{name}/channels/{peer}", 201): lambda t: (
        "/partitions/made2/channels/made3", {}, None),
    ("PUT", "/partitions/{name}/channels/{peer}", 400): lambda t: (
        "/partitions/made2/channels/made2", {}, None),
    ("PUT", "/partitions/{name}/channels/{peer}", 404): lambda t: (
        "/partitions/made2/channels/nope", {}, None),
    ("PUT", "/partitions/{name}/channels/{peer}", 409): lambda t: (
        "/partitions/made2/channels/live", {}, None),
    ("GET", "/channels", 200): lambda t: ("/channels", None, None),
}


def test_every_documented_answer_has_a_scenario():
    assert set(documented(document())) == set(SCENARIOS)


def test_every_route_of_the_server_is_documented():
    from hv.api import ROUTES
    doc_paths = {re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p): {m.upper() for m in item if m in METHODS}
                 for p, item in document()["paths"].items()}
    served = {pattern.pattern: set(methods) for pattern, methods in ROUTES}
    assert served == doc_paths


def headers_only(c, method, url, length):
    """A request that announces a body and sends none (the server must
    refuse it without waiting for the bytes)."""
    import json
    c.conn.putrequest(method, url)
    c.conn.putheader("Content-Length", str(length))
    c.conn.endheaders()
    response = c.conn.getresponse()
    return response.status, response, json.loads(response.read())


def test_live_server_answers_as_documented(tmp_path):
    doc = document()
    answers = documented(doc)
    server = Server(tmp_path)
    try:
        c = server.connect()
        c.json("PUT", "/partitions/live", _spec(tmp_path, "live"), expect=201)
        c.json("PUT", "/partitions/live/actions", {"action": "start"})
        c.json("PUT", "/partitions/made", _spec(tmp_path, "made"), expect=201)
        c.json("PUT", "/partitions/idle", _spec(tmp_path, "idle"), expect=201)
        for name in ("made2", "made3"):
            c.json("PUT", f"/partitions/{name}", _spec(tmp_path, name), expect=201)
        c.json("PUT", "/partitions/sched", {**_spec(tmp_path, "sched"), "weight": 256}, expect=201)
        c.json("PUT", "/partitions/sched/actions", {"action": "start"})
        c.json("PUT", "/partitions/bare", {"kernel": guest("snap-counter"),
                                           "cmdline": "rounds=100000"}, expect=201)
        c.json("PUT", "/partitions/bare/actions", {"action": "start"})
        c.json("PUT", "/partitions/ended", _spec(tmp_path, "ended"), expect=201)
        c.json("PUT", "/partitions/ended/actions", {"action": "stop"})
        c.json("PUT", "/partitions/mover", {"kernel": guest("snap-counter"),
                                            "cmdline": "rounds=100000"}, expect=201)
        c.json("PUT", "/partitions/mover/actions", {"action": "start"})
        import subprocess
        import sys
        receiver = subprocess.Popen([sys.executable, "-m", "hv", "receive", f"unix:{tmp_path}/rx.sock"],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert b"listening" in receiver.stderr.readline()
        for (method, template, status), make in sorted(SCENARIOS.items()):
            url, body, length = make(tmp_path)
            if length is None:
                got, response, reply = c.request(method, url, body=body)
            else:
                got, response, reply = headers_only(c, method, url, length)
            where = f"{method} {url} -> {got}, documented {status}: {reply!r}"[:400]
            assert got == status, where
            content = answers[(method, template, status)].get("content")
            if content is None:
                assert reply == b"" and response.getheader("Content-Type") is None, where
                continue
            (media, spec), = content.items()
            assert response.getheader("Content-Type").split(";")[0] == media, where
            OAS31Validator(spec["schema"]).validate(
                reply.decode() if media == "text/plain" else reply)
            if length is not None:      # the server closed it after the refusal
                c.close()
                c = server.connect()
            if (method, url) == ("PUT", "/partitions/live/actions") and got == 200:
                c.json("PUT", url, {"action": "resume"})
        c.close()
    finally:
        server.stop()
        if "receiver" in locals():
            receiver.kill()
            receiver.wait()
