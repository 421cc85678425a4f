"""virtio-net in snapshots: the MAC, the switch, and the frames waiting.

T:903 The record holds the NIC's MAC, the name of its switch, and the
frames the switch had handed it that its guest had not taken yet (the
backlog, at most BACKLOG_MAX frames).  Restore puts the NIC on the switch
of that name in the restoring process (made if there is none) and gives
the guest those frames first: a frame the switch accepted for a partition
reaches it once, as Firecracker keeps its queues.  Frames sent to the
partition while it is a file (between the source's pause and the restored
partition joining the switch) find no port and are lost, as on a real
wire when a NIC is unplugged; the guests' protocols resend.  A switch
lives in one hv process: a partition migrated to another process joins
that process's switch of the same name.
"""
import base64

from hv.devices.net import BACKLOG_MAX, NetDevice
from hv.devices.persist import PersistError
from hv.devices.switch import ETH_MAX, ETH_MIN, Switch

DEVICE = NetDevice
NAME = "net"
SWITCH_NAME_MAX = 64


def save(device):
    return {"mac": device.mac.hex(), "switch": device.switch.name,
            "backlog": [base64.b64encode(bytes(f)).decode() for f in list(device.backlog)]}


def check(backend, where):
    mac = backend.get("mac") if isinstance(backend, dict) else None
    try:
        raw = bytes.fromhex(mac) if isinstance(mac, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 6 or raw[0] & 1:
        raise PersistError(f"{where}: MAC {mac!r} is not a unicast MAC address")
    name = backend.get("switch")
    if not isinstance(name, str) or not 0 < len(name) <= SWITCH_NAME_MAX:
        raise PersistError(f"{where}: switch name {name!r} is not 1..{SWITCH_NAME_MAX} characters")
    frames = backend.get("backlog")
    if not isinstance(frames, list) or len(frames) > BACKLOG_MAX:
        raise PersistError(f"{where}: the backlog is not a list of at most {BACKLOG_MAX} frames")
    for frame in frames:
        try:
            n = len(base64.b64decode(frame, validate=True)) if isinstance(frame, str) else -1
        except ValueError:
            n = -1
        if not ETH_MIN <= n <= ETH_MAX:
            raise PersistError(f"{where}: a backlog frame is not an Ethernet frame")


def reopen(backend, reconnect):
    name = backend["switch"]
    switch = reconnect.switches.get(name)
    if switch is None:
        switch = reconnect.switches[name] = Switch(name)
    return NetDevice(switch, bytes.fromhex(backend["mac"]))


def restored(device, backend):
    device.backlog.extend(base64.b64decode(f) for f in backend["backlog"])
