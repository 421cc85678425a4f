"""virtio-console in snapshots: where its output went, and input not yet read.

The record names the console's sink: standard output, a file (reopened
for appending) or a Unix socket that `hv console` attaches to (listened
on again; a client attaches anew), and holds the host input the guest had
not read.  A sink hv cannot name (an object of the caller's) comes back
as standard output unless the restore is given one for the device's name
(Reconnect.consoles).
"""
import base64

from hv.console import Console
from hv.devices.persist import PersistError
from hv.devices.vconsole import ConsoleDevice, SocketConsole

DEVICE = ConsoleDevice
NAME = "console"
SINKS = ("stdout", "file", "socket", "other")
INPUT_MAX = 1 << 20


def save(device):
    out, path = device.output, None
    if isinstance(out, SocketConsole):
        sink, path = "socket", out.path
    elif type(out) is Console and out._owned:
        sink, path = "file", out._out.name
    elif type(out) is Console:
        sink = "stdout"
    else:
        sink = "other"
    with device._lock:
        pending = bytes(device._input) + bytes(device._pending)
    return {"name": device.name, "sink": sink, "path": path,
            "input": base64.b64encode(pending).decode()}


def check(backend, where):
    if not isinstance(backend, dict) or backend.get("sink") not in SINKS:
        raise PersistError(f"{where}: the console sink is not one of {', '.join(SINKS)}")
    path = backend.get("path")
    if (backend["sink"] in ("file", "socket")) != isinstance(path, str) or \
            (isinstance(path, str) and (not path or "\0" in path)):
        raise PersistError(f"{where}: a file or socket console needs a path, and only it")
    if not isinstance(backend.get("name"), str) or not 0 < len(backend["name"]) <= 64:
        raise PersistError(f"{where}: the console's name is not 1..64 characters")
    data = backend.get("input")
    try:
        n = len(base64.b64decode(data, validate=True)) if isinstance(data, str) else -1
    except ValueError:
        n = -1
    if not 0 <= n <= INPUT_MAX:
        raise PersistError(f"{where}: the console input is not base64 of at most {INPUT_MAX} bytes")


def reopen(backend, reconnect):
    name, path = backend["name"], backend["path"]
    given = reconnect.consoles.get(name)
    if given is not None:
        return ConsoleDevice(given, name=name)
    if backend["sink"] == "socket":
        return ConsoleDevice(lambda: SocketConsole(path), name=name)   # listened on when attached
    if backend["sink"] == "file":
        return ConsoleDevice(lambda: Console(path=path), name=name)
    return ConsoleDevice(Console(), name=name)


def restored(device, backend):
    with device._lock:
        device._input += base64.b64decode(backend["input"])


# -- live migration on one machine -------------------------------------------
def hand_over(device):
    """A socket console's path goes to the destination: stop listening on it
    (its clients are hung up; they attach to the destination's)."""
    if isinstance(device.output, SocketConsole):
        device.output.close()


def take_back(device):
    """The migration was abandoned: listen on the path again."""
    out = device.output
    if isinstance(out, SocketConsole):
        try:
            device._take_output(SocketConsole(out.path))
        except ValueError as e:
            raise PersistError(f"console {device.name}: {e}") from None
