"""A client of `hv serve`'s API: HTTP/1.1 over its Unix socket.

T:740 `hv ps`, `hv pause NAME`, `hv top` and `hv up --api-socket` talk to a
running server through Client; one connection is kept open and reused.
The socket is found at --api-socket PATH, else $HV_API_SOCKET, else
DEFAULT (api.socket in the user's runtime directory, beside the named
consoles).
"""
import http.client
import json
import os
import socket
from urllib.parse import quote

from hv.unix_socket import runtime_dir


def default_socket():
    return os.environ.get("HV_API_SOCKET") or os.path.join(runtime_dir(), "api.socket")


class APIError(Exception):
    """The server refused the request (status, fault_message) or cannot be reached (status 0)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connect blocking: with a timeout set, a Unix socket whose listen
        # queue is full fails at once with EAGAIN instead of waiting its turn.
        self.sock.connect(self.socket_path)
        self.sock.settimeout(self.timeout)


class Client:
    def __init__(self, path=None, timeout=60):
        self.path = path or default_socket()
        self._conn = UnixHTTPConnection(self.path, timeout)

    def request(self, method, url, body=None):
        """(status, parsed JSON or bytes or None).  Raises APIError(0, ...)
        when there is no server."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self._conn.request(method, url, body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: once more, afresh.
                self._conn.close()
                if attempt == 2:
                    raise APIError(0, f"the server at {self.path} closed the connection") from None
            except (FileNotFoundError, ConnectionRefusedError) as e:
                self._conn.close()
                raise APIError(0, f"no hv serve at {self.path} ({e.strerror}); "
                                  "start one with `hv serve`") from None
            except OSError as e:
                self._conn.close()
                raise APIError(0, f"cannot talk to {self.path}: {e}") from None
        kind = response.getheader("Content-Type", "")
        if kind.startswith("application/json"):
            return response.status, json.loads(payload)
        return response.status, payload or None

    def call(self, method, url, body=None):
        """The reply of a request that must succeed; APIError otherwise."""
        status, reply = self.request(method, url, body)
        if status >= 400:
            message = reply.get("fault_message") if isinstance(reply, dict) else None
            raise APIError(status, message or f"HTTP {status}")
        return reply

    # -- one method per endpoint --------------------------------------------------
    def version(self):
        return self.call("GET", "/version")

    def list(self):
        return self.call("GET", "/partitions")["partitions"]

    def create(self, name, spec):
        return self.call("PUT", f"/partitions/{quote(name, safe='')}", spec)

    def describe(self, name):
        return self.call("GET", f"/partitions/{quote(name, safe='')}")

    def action(self, name, action):
        return self.call("PUT", f"/partitions/{quote(name, safe='')}/actions", {"action": action})

    def connect(self, a, b, gref=None):
        """A channel between two created partitions (a serves, b connects)."""
        body = {} if gref is None else {"gref": gref}
        return self.call("PUT", f"/partitions/{quote(a, safe='')}/channels/{quote(b, safe='')}",
                         body)

    def channels(self):
        return self.call("GET", "/channels")["channels"]

    def delete(self, name):
        return self.call("DELETE", f"/partitions/{quote(name, safe='')}")

    def metrics(self, name=None):
        if name is None:
            return self.call("GET", "/metrics")
        return self.call("GET", f"/partitions/{quote(name, safe='')}/metrics")

    def console(self, name):
        return self.call("GET", f"/partitions/{quote(name, safe='')}/console") or b""

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
