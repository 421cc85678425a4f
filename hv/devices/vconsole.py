"""virtio-console (virtio 1.2, section 5.3), one port, no multiport.

Queue 1 (transmitq) carries the guest's output to a host sink: a binary
stream or file (hv.console.Console), or a Unix socket that `hv console NAME`
attaches to.  Queue 0 (receiveq) takes host input when there is some.
"""
import os
import socket
import threading

from hv.devices.virtio import VirtioDevice
from hv.unix_socket import claim_socket_path as _claim
from hv.unix_socket import remove_if_ours, runtime_dir, socket_identity

RECEIVEQ, TRANSMITQ = 0, 1


class ConsoleDevice(VirtioDevice):
    DEVICE_ID = 3
    QUEUES = 2
    QUEUE_MAX = 64
    HOST_FED_QUEUES = frozenset({RECEIVEQ})

    def __init__(self, output, name="vconsole"):
        """output has write(bytes) and flush(); or it is a function that
        makes one, called when the device is attached, so that a file or
        socket the user named is created only once the partition's kernel
        is known good (bad input leaves nothing behind)."""
        super().__init__(name)
        self._open_output = output if not hasattr(output, "write") else None
        self.output = None
        self._input = bytearray()       # host input waiting for receive buffers
        self._pending = bytearray()     # host input not yet taken by the device thread
        self._lock = threading.Lock()
        self.bytes_to_guest = self.bytes_from_guest = 0     # input, output
        if self._open_output is None:
            self._take_output(output)

    def _take_output(self, output):
        self.output = output
        if hasattr(output, "device"):
            output.device = self

    def attach(self, partition, slot):
        if self._open_output is not None:
            try:
                self._take_output(self._open_output())
            except OSError as e:
                raise ValueError(f"cannot open console output: {e.strerror}: "
                                 f"{e.filename}") from None
            self._open_output = None
        super().attach(partition, slot)

    def config(self):
        return bytes(12)                # cols, rows, max_nr_ports, emerg_wr: unused

    def serve(self, index, queue):
        if index == TRANSMITQ:
            while (chain := queue.pop()) is not None:
                self.output.write(chain.readable)
                self.bytes_from_guest += len(chain.readable)
                queue.push(chain, 0)
                self.requests += 1
        elif index == RECEIVEQ:
            self._deliver(queue)

    def feed_from_host(self, data):
        """Host input (any thread): handed to the device thread."""
        with self._lock:
            self._pending += data
        if self.transport is not None:
            self.transport.wake(self)

    def notify_host(self):
        with self._lock:
            self._input += self._pending
            self._pending.clear()
        with self.lock:
            queue = self._queues.get(RECEIVEQ)
            if queue is not None and not self.frozen:
                self._deliver(queue)
                if queue.should_notify():
                    self.interrupt()

    def close(self):
        super().close()
        if self.output is not None and hasattr(self.output, "close"):
            self.output.close()

    def _deliver(self, queue):
        while self._input and (chain := queue.pop()) is not None:
            n = queue.write(chain, bytes(self._input[:chain.writable_len]))
            del self._input[:n]
            queue.push(chain, n)
            self.bytes_to_guest += n


def console_socket_path(name, create=True):
    """Where the console called `name` listens: a path (anything with a /)
    as given, or a name in the user's runtime directory, so that
    `hv console NAME` finds it (the directory is made if create)."""
    if "/" in name:
        return name
    directory = runtime_dir()
    if create:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"{name}.sock")


class ConsoleSocketError(ValueError):
    """The console socket cannot be listened on (one line naming the path)."""


def claim_socket_path(path):
    """Make `path` free for a console's listening socket (hv/unix_socket.py)."""
    _claim(path, "console socket", "is in use (a running hv listens on it)", ConsoleSocketError)


class SocketConsole:
    """A console sink on a Unix socket that `hv console PATH` attaches to.

    Output goes to every attached client; what arrived before anyone
    attached is kept (the last BACKLOG bytes) and replayed to the first
    client.  Input from a client is fed to the guest (feed_from_host)."""

    BACKLOG = 64 << 10

    def __init__(self, path):
        self.path = path
        self.device = None              # set by ConsoleDevice when attached
        self._clients = []
        self._backlog = bytearray()
        self._lock = threading.Lock()      # guards _clients, _backlog, _closed
        self._closed = False
        claim_socket_path(path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(path)
            self._server.listen(4)
        except OSError as e:
            self._server.close()
            raise ConsoleSocketError(f"cannot listen on console socket {path}: {e.strerror}") \
                from None
        # Which file is ours: close() removes it only if it is still this one.
        self._identity = socket_identity(path)
        threading.Thread(target=self._accept, daemon=True, name=f"console-{path}").start()

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return                  # closed
            with self._lock:
                if self._closed:        # accepted as close() ran: it sees end-of-file too
                    _hang_up(client)
                    return
                if self._backlog:
                    client.sendall(bytes(self._backlog))
                    self._backlog.clear()
                self._clients.append(client)
            threading.Thread(target=self._read, args=(client,), daemon=True).start()

    def _read(self, client):
        while True:
            try:
                data = client.recv(4096)
            except OSError:             # close() hung up on this client
                data = b""
            if not data:
                break
            if self.device is not None:
                self.device.feed_from_host(data)
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def write(self, data):
        with self._lock:
            if not self._clients:
                self._backlog += data
                del self._backlog[:-self.BACKLOG]
            for client in list(self._clients):
                try:
                    client.sendall(data)
                except OSError:
                    self._clients.remove(client)

    def flush(self):
        pass

    def close(self):
        with self._lock:
            if self._closed:
                return      # once: the path may be another listener's by now (same inode, even)
            self._closed = True
            clients, self._clients = self._clients, []
        try:
            self._server.shutdown(socket.SHUT_RDWR)    # wakes the accept() blocked on it
        except OSError:
            pass
        self._server.close()
        for client in clients:
            _hang_up(client)
        remove_if_ours(self.path, self._identity)


def _hang_up(client):
    """End a client's connection so that it sees end-of-file at once."""
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    client.close()
