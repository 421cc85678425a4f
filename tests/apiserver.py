"""A live `hv serve` for the API tests, and a raw HTTP/1.1 client over its
Unix socket (http.client, as any client would use it)."""
import http.client
import json
import os
import socket
import subprocess
import sys

from conftest import ROOT, guest

# A guest that lives until told otherwise: it waits (up to wait= seconds)
# for one line on its virtio-console, echoes it, and shuts down with SUCCESS.
WAITER_ARGS = {"cmdline": "wait=600"}


def waiter_spec(tmp_path, name, **extra):
    spec = {"kernel": guest("vcon-echo"), **WAITER_ARGS,
            "devices": [{"type": "console", "socket": str(tmp_path / f"{name}.con")}]}
    spec.update(extra)
    return spec


class Server:
    """`python -m hv serve --api-socket PATH` in a subprocess, ready when
    it has said so on stderr (it listens before it says it)."""

    def __init__(self, tmp_path, *extra):
        self.path = str(tmp_path / "api.socket")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hv", "serve", "--api-socket", self.path, *extra],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        line = self.proc.stderr.readline()
        if not line.startswith("hv serve: listening on"):
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"hv serve did not start: {line}{err}")

    def connect(self):
        return Connection(self.path)

    def stop(self):
        """SIGTERM; (exit status, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()            # a hung server must not outlive the test
            self.proc.communicate()
            raise
        return self.proc.returncode, out, err


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connect blocking: with a timeout set, a Unix socket whose listen
        # queue is full fails at once with EAGAIN instead of waiting its turn.
        self.sock.connect(self.socket_path)
        self.sock.settimeout(self.timeout)


class Connection:
    """One keep-alive connection: request() -> (status, headers, body)."""

    def __init__(self, path):
        self.conn = UnixHTTPConnection(path)

    def request(self, method, url, body=None, raw=None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        self.conn.request(method, url, body=data, headers=headers or {})
        response = self.conn.getresponse()
        payload = response.read()
        kind = response.getheader("Content-Type", "")
        value = json.loads(payload) if kind.startswith("application/json") else payload
        return response.status, response, value

    def json(self, method, url, body=None, expect=200):
        status, _, value = self.request(method, url, body)
        assert status == expect, (method, url, status, value)
        return value

    def close(self):
        self.conn.close()


def raw_exchange(path, data):
    """Send bytes in one write and read the reply until the server closes
    (send `Connection: close` in a request that the server would answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(path)
        try:
            if data:
                s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                        # answered and closed before it read us: read the answer
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    head, _, body = reply.decode().partition("\r\n\r\n")
    return head, body


def attach_and_send(console_path, line):
    """Send one line to a vcon-echo guest's console; return what it echoes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(console_path)
        s.sendall(line.encode() + b"\n")
        got = b""
        while b"\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return got.decode()


def console_path(tmp_path, name):
    return os.path.realpath(tmp_path / f"{name}.con")
