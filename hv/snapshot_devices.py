"""Device state in snapshots and migration: the DEVICE records.

T:904 Each virtio device's record holds the transport registers the C core
keeps, its queue positions, and the identity of what its backend is
connected to (hv/devices/persist.py lays that out; a persist module beside
each device adds its kind's part).  Saving needs the devices quiesced:
Partition.pause() freezes them (every request taken is answered first,
nothing new is taken until resume), so a record and the RAM written with
it agree.  Restoring reopens each backend from its record (a disk reopened,
checked and locked; a NIC back on its switch; a console on its sink)
before anything is created, then puts the registers and positions back.
"""
from hv import snapshot_format as fmt
from hv.abi import lib
from hv.devices import persist


def check_savable(part):
    """Raise SnapshotError if part has state hv cannot write down yet."""
    from hv.snapshot import SnapshotError
    for d in part.devices:
        if d.DEVICE_ID not in persist.kinds():
            raise SnapshotError(f"partition {part.name}: device {d.name} cannot be saved")


def device_records(part, copy_disks_to=None):
    """[(DEVICE, body)] for every device of part (paused, so quiesced);
    copy_disks_to: a directory that gets a copy of each writable disk."""
    from hv.snapshot import SnapshotError
    try:
        return [(fmt.DEVICE, fmt.pack_device(slot, d.DEVICE_ID,
                                             persist.save(d, slot, copy_disks_to)))
                for slot, d in enumerate(part.devices)]
    except persist.PersistError as e:
        raise SnapshotError(str(e)) from None
    except OSError as e:
        raise SnapshotError(f"cannot copy a disk into {copy_disks_to}: {e.strerror}") from None


def load_devices(bodies, mem_size):
    """The checked devices of a state's DEVICE records, by slot (FormatError)."""
    saved = []
    for body in bodies:
        slot, device_id, doc = fmt.unpack_device(body)
        try:
            saved.append(persist.check(slot, device_id, doc, mem_size))
        except persist.PersistError as e:
            raise fmt.FormatError(str(e)) from None
    saved.sort(key=lambda d: d.slot)
    if [d.slot for d in saved] != list(range(len(saved))) or len(saved) > lib.HV_VIRTIO_MMIO_SLOTS:
        raise fmt.FormatError("device records do not fill slots 0..n-1")
    return saved


def reopen_devices(state, switches=None, consoles=None):
    """New backends for a state's devices, connected as the saved ones were
    (SnapshotError, and nothing left open, if one cannot be)."""
    from hv.snapshot import SnapshotError
    reconnect = persist.Reconnect(switches, consoles, state.directory or None)
    devices = []
    try:
        for saved in state.devices:
            devices.append(persist.reopen(saved, reconnect))
    except (persist.PersistError, ValueError) as e:
        for d in devices:
            d.close()
        raise SnapshotError(str(e)) from None
    return devices


def apply_devices(part, state):
    """The saved registers and positions onto the attached devices (before the vCPU)."""
    for device, saved in zip(part.devices, state.devices):
        persist.apply(device, saved)


# -- live migration on one machine: the destination takes the disks over ----
def hand_over(part):
    """Release what the destination must take (image locks); the devices
    handed over, for take_back()."""
    handed = []
    for d in part.devices:
        kind = persist.kinds()[d.DEVICE_ID]
        if hasattr(kind, "hand_over"):
            kind.hand_over(d)
            handed.append(d)
    return handed


def take_back(handed):
    """The migration failed: take the devices back (a line on stderr for
    one that cannot be, which then runs on unlocked)."""
    from hv.log import log
    for d in handed:
        try:
            persist.kinds()[d.DEVICE_ID].take_back(d)
        except persist.PersistError as e:
            log.warning("%s", e)
