"""virtio-rng in snapshots: the transport and its queue say it all.

Each persist module beside a device (hv/devices/persist.py's registry)
has the same five parts: DEVICE and NAME; save(device) -> the backend's
JSON-ready state; check(backend, where), which raises PersistError for
anything out of bounds; reopen(backend, reconnect) -> a new backend
connected to what the saved one was; restored(device, backend), anything
to put back once it is attached.
"""
from hv.devices.persist import PersistError
from hv.devices.rng import RngDevice

DEVICE = RngDevice
NAME = "rng"


def save(device):
    return {}


def check(backend, where):
    if backend != {}:
        raise PersistError(f"{where}: an rng device has no backend state")


def reopen(backend, reconnect):
    return RngDevice()


def restored(device, backend):
    pass
