"""Device state in snapshots: what every virtio device saves, and the one
registry of what each kind of backend adds (Firecracker keeps a persist
file beside each device; hv does too: blk_persist.py, net_persist.py,
vconsole_persist.py, rng_persist.py).

T:905 A device's saved state has three parts:

    transport   the virtio-mmio registers the C core keeps: status, the
                features offered and accepted, the selectors, interrupt
                status, config generation, and per queue its size, ready
                bit and the three ring addresses
    queues      per queue the backend's two positions, last_avail (the next
                avail.ring entry to take) and used_idx (what it last stored
                in used.idx); never read back from guest memory, which the
                guest could have written
    backend     what the device is connected to (its kind's persist module)

It is written only of a quiesced device (VirtioDevice.freeze(): every
request taken has been answered and the interrupt owed delivered), so a
queue has nothing in flight: last_avail == used_idx, and the backend's
other two queue fields (avail.idx as last read, used_idx at the last
notification) follow from them.  Requests the guest posted and the device
had not taken stay in the avail ring, in RAM: the restored device is
kicked once per queue and takes them, so each completes exactly once.

Nothing in a saved state is trusted (a file can say anything): check()
bounds every number before any backend is opened, and the queue rings are
checked again against the partition's memory when the restored device
builds its view of them (SplitQueue).
"""
from hv.abi import lib

VERSION = 1
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
RING_INDEX = 1 << 16
TRANSPORT_FIELDS = ("status", "device_features", "driver_features", "interrupt_status",
                    "config_generation", "queue_sel", "features_sel", "driver_features_sel")
QUEUE_FIELDS = ("num", "ready", "desc", "avail", "used")
DESC_SIZE, USED_ELEM_SIZE = 16, 8


class PersistError(ValueError):
    """A saved device that cannot be restored here (one line)."""


# device id -> the persist module of that kind (save, check, reopen; see rng_persist.py)
KINDS = {}


def kinds():
    """The registry, filled on first use (the persist modules import backends)."""
    if not KINDS:
        from hv.devices import blk_persist, net_persist, rng_persist, vconsole_persist
        for module in (blk_persist, net_persist, rng_persist, vconsole_persist):
            KINDS[module.DEVICE.DEVICE_ID] = module
    return KINDS


# -- saving ---------------------------------------------------------------------
def save(device, slot=0, copy_disks_to=None):
    """The saved state of a quiesced device, as a JSON-ready dict; with
    copy_disks_to, a disk's image is copied into that directory too
    (hv/devices/blk_persist.py, T:921)."""
    kind = kinds().get(device.DEVICE_ID)
    if kind is None:
        raise PersistError(f"{device.name}: hv cannot save a device of id {device.DEVICE_ID}")
    with device.lock:
        s = device.state()
        # A view the driver reset away (the frozen device has not seen the
        # reset yet) is of no queue the guest still has: those start at 0.
        stale = s.resets != device._resets
        queues, positions = [], []
        for i in range(device.QUEUES):
            q = s.queue[i]
            queues.append({n: getattr(q, n) for n in QUEUE_FIELDS})
            view = None if stale or not q.ready else device._queues.get(i)
            last_avail, used_idx = (view.last_avail, view.used_idx) if view is not None else (0, 0)
            if last_avail != used_idx:
                raise PersistError(f"{device.name}: queue {i} has requests taken and not "
                                   "answered: the device was not quiesced")
            positions.append({"last_avail": last_avail, "used_idx": used_idx})
        return {"version": VERSION,
                "transport": dict({n: getattr(s, n) for n in TRANSPORT_FIELDS}, queues=queues),
                "positions": positions,
                "backend": dict(kind.save(device), **(
                    kind.copy_into(device, copy_disks_to, slot)
                    if copy_disks_to is not None and hasattr(kind, "copy_into") else {}))}


# -- loading --------------------------------------------------------------------
class SavedDevice:
    """A checked device record: nothing opened yet."""

    def __init__(self, slot, device_id, kind, doc):
        self.slot, self.device_id, self.kind = slot, device_id, kind
        self.transport, self.positions, self.backend = doc["transport"], doc["positions"], doc["backend"]


def _int(doc, name, top, where):
    value = doc.get(name) if isinstance(doc, dict) else None
    if type(value) is not int or not 0 <= value <= top:
        raise PersistError(f"{where}: {name} is {value!r}, not an integer 0..{top}")
    return value


def _check_ring(where, name, gpa, length, align, mem_size):
    if gpa % align or gpa + length > mem_size:
        raise PersistError(f"{where}: {name} at {gpa:#x} ({length} bytes) is not "
                           f"{align}-byte aligned inside the partition's {mem_size} bytes of RAM")


def check(slot, device_id, doc, mem_size):
    """A SavedDevice from a record's slot, device id and decoded JSON, or
    PersistError: every field typed and bounded, every ready queue's rings
    inside RAM, every queue quiescent."""
    where = f"device {slot}"
    kind = kinds().get(device_id)
    if kind is None:
        raise PersistError(f"{where}: unknown device id {device_id}")
    where = f"device {slot} ({kind.NAME})"
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        version = doc.get("version") if isinstance(doc, dict) else "?"
        raise PersistError(f"{where}: state version {version!r}; this hv reads version {VERSION}")
    t, positions = doc.get("transport"), doc.get("positions")
    if not isinstance(t, dict) or not isinstance(t.get("queues"), list) or \
            not isinstance(positions, list) or "backend" not in doc:
        raise PersistError(f"{where}: transport, positions and backend are required")
    device = kind.DEVICE
    if len(t["queues"]) != device.QUEUES or len(positions) != device.QUEUES:
        raise PersistError(f"{where}: {len(t['queues'])} queues saved; the device has {device.QUEUES}")
    for n in TRANSPORT_FIELDS:
        _int(t, n, U64 if n.endswith("features") else U32, where)
    for i, (q, pos) in enumerate(zip(t["queues"], positions)):
        qwhere = f"{where} queue {i}"
        num = _int(q, "num", device.QUEUE_MAX, qwhere)
        ready = _int(q, "ready", 1, qwhere)
        desc, avail, used = (_int(q, n, U64, qwhere) for n in ("desc", "avail", "used"))
        if num & (num - 1) or (ready and not num):
            raise PersistError(f"{qwhere}: size {num} is not a power of 2")
        if ready:
            _check_ring(qwhere, "descriptor table", desc, DESC_SIZE * num, 16, mem_size)
            _check_ring(qwhere, "available ring", avail, 6 + 2 * num, 2, mem_size)
            _check_ring(qwhere, "used ring", used, 6 + USED_ELEM_SIZE * num, 4, mem_size)
        last_avail = _int(pos, "last_avail", RING_INDEX - 1, qwhere)
        if _int(pos, "used_idx", RING_INDEX - 1, qwhere) != last_avail:
            raise PersistError(f"{qwhere}: saved with requests in flight")
        if not ready and last_avail:
            raise PersistError(f"{qwhere}: positions saved for a queue that is not ready")
    kind.check(doc["backend"], where)
    return SavedDevice(slot, device_id, kind, doc)


# -- restoring ------------------------------------------------------------------
class Reconnect:
    """What restored backends connect to in this process: switches by name
    (a restored NIC joins the switch of its saved name, made if missing),
    and console outputs by device name (else the saved sink is reopened)."""

    def __init__(self, switches=None, consoles=None, directory=None):
        self.switches = {} if switches is None else switches
        self.consoles = consoles or {}
        self.directory = directory      # the snapshot's (a disk's copy is there), or None


def reopen(saved, reconnect):
    """The backend of a saved device, opened and connected (a disk reopened
    and locked, a NIC on its switch); PersistError if it cannot be."""
    return saved.kind.reopen(saved.backend, reconnect)


def apply(device, saved):
    """Put the saved transport registers on a restored device (attached,
    no vCPU yet) and hand it its queue positions; its first look at the
    rings (the control event this raises) builds the queues from them, and
    one kick per queue takes what the guest posted before the snapshot."""
    s = device.transport.state()
    t = saved.transport
    for n in TRANSPORT_FIELDS:
        setattr(s, n, t[n])
    for i, q in enumerate(t["queues"]):
        for n in QUEUE_FIELDS:
            setattr(s.queue[i], n, q[n])
    err = device.transport.restore(s)
    if err:
        raise PersistError(f"device {saved.slot} ({saved.kind.NAME}): the saved registers do not "
                           f"fit the device here (features or queues differ)")
    if t["status"] & lib.VIRTIO_STATUS_NEEDS_RESET:
        device._broken = True           # the guest broke it: it stays so until it resets it
    device.restore_positions({i: (p["last_avail"], p["used_idx"])
                              for i, p in enumerate(saved.positions)})
    saved.kind.restored(device, saved.backend)
