"""Device state in snapshots: the DEVICE records.

T:904 Each virtio device's record holds the transport registers the C core
keeps (status, features, queue addresses) and what its backend needs to go
on: queue positions, and the identity of what it is connected to (a disk
image's path and size, a MAC and switch, a console).  Backends are
reconnected on restore, never recreated from the record alone.
"""


def check_savable(part):
    """Raise SnapshotError if part has state hv cannot write down yet."""
    from hv.snapshot import SnapshotError
    if part.devices:
        names = ", ".join(d.name for d in part.devices)
        raise SnapshotError(f"partition {part.name} has devices ({names}): device state is "
                            "not saved yet")


def device_records(part):
    """[(DEVICE, body)] for every device of part (paused)."""
    return []
