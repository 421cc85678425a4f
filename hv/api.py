"""`hv serve`'s REST API: HTTP/1.1 over a Unix socket, JSON in and out.

T:730 The server is the standard library's (socketserver + http.server),
one daemon thread per connection, keep-alive.  Every request is routed by
ROUTES (a path pattern and a table of methods) to one Manager call; what
the manager refuses comes back as {"fault_message": ...} with the status
its error class names (400 bad input, 404 no such partition, 409 the state
forbids it), as Firecracker's API does.  A bad request changes nothing.
The document of record is docs/api.yaml (OpenAPI 3), checked against this
server by tests/test_api_openapi.py.
"""
import json
import os
import re
import socketserver
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from hv.manager import BadRequest, ManagerError
from hv.unix_socket import claim_socket_path as _claim
from hv.unix_socket import remove_if_ours, socket_identity

API_VERSION = "1.0"
MAX_BODY = 1 << 20                  # bytes of request body accepted (413 above)
IDLE_TIMEOUT = 300                  # seconds an idle keep-alive connection is kept
MAX_CONNECTIONS = 64                # open at once (a thread each); more are answered 503
ACTIONS = ("start", "pause", "resume", "stop")


class APIError(Exception):
    """A request refused before it reaches the manager."""

    def __init__(self, status, message, allow=None):
        super().__init__(message)
        self.status = status
        self.allow = allow              # the methods a 405's Allow header lists


def version():
    from hv.abi import lib
    return {"api_version": API_VERSION,
            "abi_version": f"{lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}"}


# -- the handlers: (manager, name from the path, parsed body) -> (status, body) --------------
def list_partitions(manager, body):
    return 200, {"partitions": manager.list()}


def create_partition(manager, body, name):
    body = _object(body)
    if body.get("name", name) != name:
        raise APIError(400, f"the body names {body['name']!r}, the path {name!r}")
    return 201, manager.create({**body, "name": name})


def describe_partition(manager, body, name):
    return 200, manager.describe(name)


def delete_partition(manager, body, name):
    manager.delete(name)
    return 204, None


def act_on_partition(manager, body, name):
    body = _object(body)
    if set(body) != {"action"} or body["action"] not in ACTIONS:
        raise APIError(400, f"the body must be {{\"action\": one of {', '.join(ACTIONS)}}}")
    return 200, getattr(manager, body["action"])(name)


def set_partition_share(manager, body, name):
    body = _object(body)
    if not body or set(body) - {"weight", "cap"}:
        raise APIError(400, 'the body must be {"weight": N, "cap": PERCENT}, either or both')
    return 200, manager.set_share(name, **body)


def snapshot_partition(manager, body, name):
    body = _object(body)
    if set(body) - {"directory", "resume", "copy_disks"} or "directory" not in body:
        raise APIError(400, 'the body must be {"directory": "/absolute/path", '
                            '"resume": true|false, "copy_disks": true|false}')
    return 200, manager.snapshot(name, body["directory"], body.get("resume", True),
                                 body.get("copy_disks", False))


def migrate_partition(manager, body, name):
    body = _object(body)
    if set(body) - {"address", "downtime_ms"} or "address" not in body:
        raise APIError(400, 'the body must be {"address": "unix:PATH", "downtime_ms": N}')
    return 200, manager.migrate(name, body["address"], body.get("downtime_ms", 300))


def set_partition_protection(manager, body, name):
    return 200, manager.set_protection(name, _object(body))


def get_partition_protection(manager, body, name):
    return 200, manager.protection(name)


def clear_partition_protection(manager, body, name):
    manager.clear_protection(name)
    return 204, None


def partition_metrics(manager, body, name):
    return 200, manager.metrics(name)


def partition_console(manager, body, name):
    return 200, manager.console_output(name)        # bytes: sent as text/plain


def list_channels(manager, body):
    return 200, {"channels": manager.channels()}


def connect_partitions(manager, body, name, peer):
    body = _object(body)
    if set(body) - {"gref"}:
        raise APIError(400, 'the body must be {} or {"gref": N}')
    return 201, manager.connect(name, peer, body.get("gref"))


def all_metrics(manager, body):
    return 200, manager.all_metrics()


def get_version(manager, body):
    return 200, version()


NAME = r"(?P<name>[^/]+)"
ROUTES = [
    (re.compile(r"/version"), {"GET": get_version}),
    (re.compile(r"/metrics"), {"GET": all_metrics}),
    (re.compile(r"/partitions"), {"GET": list_partitions}),
    (re.compile(rf"/partitions/{NAME}"),
     {"PUT": create_partition, "GET": describe_partition, "DELETE": delete_partition}),
    (re.compile(rf"/partitions/{NAME}/actions"), {"PUT": act_on_partition}),
    (re.compile(rf"/partitions/{NAME}/share"), {"PUT": set_partition_share}),
    (re.compile(rf"/partitions/{NAME}/snapshot"), {"PUT": snapshot_partition}),
    (re.compile(rf"/partitions/{NAME}/migrate"), {"PUT": migrate_partition}),
    (re.compile(rf"/partitions/{NAME}/protection"),
     {"PUT": set_partition_protection, "GET": get_partition_protection,
      "DELETE": clear_partition_protection}),
    (re.compile(rf"/partitions/{NAME}/metrics"), {"GET": partition_metrics}),
    (re.compile(rf"/partitions/{NAME}/console"), {"GET": partition_console}),
    (re.compile(rf"/partitions/{NAME}/channels/(?P<peer>[^/]+)"), {"PUT": connect_partitions}),
    (re.compile(r"/channels"), {"GET": list_channels}),
]
BODY_METHODS = {"PUT", "POST", "PATCH"}


def _object(body):
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    return body


def route(method, path):
    """(handler, path arguments), or APIError 404/405."""
    path = urlsplit(path).path.rstrip("/") or "/"
    for pattern, methods in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if method not in methods:
                allow = ", ".join(sorted(methods))
                raise APIError(405, f"{method} is not allowed on {path} (allowed: {allow})", allow)
            return methods[method], {k: unquote(v) for k, v in match.groupdict().items()}
    raise APIError(404, f"no such resource: {path}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, Content-Length on every reply
    server_version = "hv"
    timeout = IDLE_TIMEOUT

    def address_string(self):
        # A Unix socket's peer has no address (client_address is ''): the
        # base class's host lookup would fail and the reply be lost.
        return "unix"

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write(f"hv serve: {format % args}\n")

    def do_GET(self):
        self._serve("GET")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_POST(self):
        self._serve("POST")

    def do_PATCH(self):
        self._serve("PATCH")

    def _serve(self, method):
        extra = {}
        try:
            body = self._body()
            handler, params = route(method, self.path)
            if method in BODY_METHODS and body is None:
                body = {}
            status, reply = handler(self.server.manager, body, **params)
        except (APIError, ManagerError) as e:
            status, reply = e.status, {"fault_message": str(e)}
            if getattr(e, "allow", None):
                extra["Allow"] = e.allow
        except Exception as e:          # a bug here costs this request only
            traceback.print_exc(file=sys.stderr)
            status, reply = 500, {"fault_message": f"internal error: {type(e).__name__}: {e}"}
        self._reply(status, reply, extra)

    def _body(self):
        """The request's JSON body, or None.  A body too large is refused
        unread, and the connection closed (its bytes are still coming)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise APIError(411, "send the body with a Content-Length, not chunked")
        text = self.headers.get("Content-Length")
        if text is None:
            return None
        if not text.isdigit():
            self.close_connection = True
            raise APIError(400, f"bad Content-Length {text!r}")
        length = int(text)
        if length > MAX_BODY:
            self.close_connection = True
            raise APIError(413, f"the body is {length} bytes; at most {MAX_BODY} are accepted")
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise APIError(400, "the body ended before its Content-Length")
        if not data:
            return None
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise APIError(400, f"the body is not JSON: {e}") from None

    def _reply(self, status, reply, extra=None):
        if isinstance(reply, bytes):
            data, kind = reply, "text/plain; charset=utf-8"
        elif reply is None:
            data, kind = b"", None
        else:
            data, kind = json.dumps(reply).encode() + b"\n", "application/json"
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if kind:
            self.send_header("Content-Type", kind)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        # http.server's own refusals (a malformed request line, headers too
        # long, an unknown method) in the API's JSON form.
        self.close_connection = True
        # A request line too garbled to name its version would be answered
        # HTTP/0.9-style, without a status line: answer in our own version.
        self.request_version = self.protocol_version
        try:
            self._reply(code, {"fault_message": message or HTTPStatus(code).phrase})
        except OSError:
            pass


class APIServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The API socket: mode 0600 (only its owner drives partitions)."""

    daemon_threads = True           # a client left connected never holds up exit
    request_queue_size = MAX_CONNECTIONS    # listen backlog: a burst of connects waits, not fails
    block_on_close = False

    def __init__(self, path, manager, verbose=False):
        self.manager = manager
        self.verbose = verbose
        self.path = path
        claim_socket_path(path)
        old = os.umask(0o077)
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)
        self.identity = socket_identity(path)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address):
        # Each connection costs a thread for as long as it stays open: bound
        # them, so that a client opening sockets in a loop cannot exhaust the
        # parent partition.  The one over the limit is told so and closed.
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"fault_message": f"more than {MAX_CONNECTIONS} connections "
                                                "are open; close some"}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                                b"Content-Type: application/json\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def close(self):
        """Stop listening and remove the socket (if it is still ours)."""
        self.server_close()
        remove_if_ours(self.path, self.identity)


def claim_socket_path(path):
    """Make `path` free for a new socket: remove a stale socket (nobody
    listens), refuse a live one or anything that is not a socket."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BadRequest(f"cannot create the API socket {path}: no directory {directory}")
    _claim(path, "API socket", "is in use by a running server", BadRequest)
