"""Snapshot and restore: a partition becomes a directory, and back.

T:900 A snapshot directory holds two files:

    state            the records (hv/snapshot_format.py): partition, vCPUs,
                     devices, the memory file's name and size, verify, end
    memory-<id>      guest RAM, raw, zero pages left as holes

save() pauses the partition, takes the state from the core (which hands
out only guest-visible state) and writes both files crash-safely: the
memory file under a new name, fsynced, then `state` through a temporary
file and a rename, so a crash mid-save leaves the previous snapshot whole.
load() reads and checks `state` completely before anything is created;
restore() then builds a Partition over the memory file mapped
copy-on-write (MAP_PRIVATE): restore reads no RAM, pages come in as the
guest touches them.  The engine may differ from the one that saved:
every record is engine-neutral.
"""
import errno
import os
import re
import time
from dataclasses import dataclass, field

from hv import snapshot_format as fmt
from hv.abi import ffi, lib

STATE_FILE = "state"
MEMORY_PREFIX = "memory-"
MEMORY_FILE = re.compile(MEMORY_PREFIX + "[0-9a-f]{16}")    # the names save() gives them
CHUNK = 1 << 20                 # memory is written in 1 MiB pieces; a zero piece is a hole
ZERO_CHUNK = bytes(CHUNK)
BUSY_RETRIES = 200              # the vCPU owes an instruction its work: run it a little
PARENT_WAITS = 20               # ms paused for the parent to answer a vCPU, before a run
# struct hv_partition_snapshot's fields that the PARTITION record carries as they are.
PARTITION_SNAPSHOT_FIELDS = ("clock_ns", "instructions", "hypercall_page_gpa", "event_page_gpa",
                             "event_vector", "deterministic")


class SnapshotError(Exception):
    """Saving or restoring failed; the message is one line for the user."""


@dataclass
class SavedState:
    """A checked snapshot, nothing created yet."""
    directory: str
    partition: dict
    foreign: list
    event_vcpu: bytes
    name: str
    engine: str
    vcpus: list = field(default_factory=list)      # (id, VCPU body), by id
    platform: object = None         # struct hv_platform_snapshot, or None: as reset
    lapics: dict = field(default_factory=dict)     # vCPU id -> struct hv_lapic_snapshot
    devices: list = field(default_factory=list)    # persist.SavedDevice, by slot
    memory_path: str = ""
    memory_fd: int = -1

    @property
    def mem_size(self):
        return self.partition["mem_size"]

    def close(self):
        if self.memory_fd >= 0:
            os.close(self.memory_fd)
            self.memory_fd = -1


# -- save -------------------------------------------------------------------
def vcpu_state(vcpu):
    """(hv_cpu_state, hv_vcpu_pending) of a paused vCPU, or raise BlockingIOError."""
    cpu = ffi.new("struct hv_cpu_state *")
    pending = ffi.new("struct hv_vcpu_pending *")
    err = lib.hv_vcpu_get_state(vcpu, cpu, pending)
    if err == -errno.EBUSY:
        raise BlockingIOError
    if err:
        raise SnapshotError(f"cannot read the vCPU's state: {os.strerror(-err)}")
    return cpu, pending


def _all_vcpu_states(part):
    """[(id, cpu, pending)] of every vCPU of the paused part, or raise
    BlockingIOError if one of them is not between instructions."""
    return [(i, *vcpu_state(v)) for i, v in enumerate(part.snapshot_vcpus())]


def _pause_quiescent(part):
    """Pause part with every vCPU between instructions, all at one moment;
    returns (whether it was running and so should be resumed, the vCPUs'
    states).

    T:917 Every vCPU of an SMP partition stops together (the scheduler
    takes them all off their workers), and the record is taken only when
    none of them is inside a call: a vCPU whose hypercall the parent is
    serving is answered while the others stay paused (the answer lands in
    its registers; it runs no instruction before the resume), and work an
    engine owes an instruction is finished by a short run of the whole
    partition.  A vCPU in tlb_flush cannot be caught waiting: it waits
    only for vCPUs in guest code, and a paused one is not."""
    from hv.partition import PAUSED, RUNNING
    was_running = part.state == RUNNING
    for _ in range(BUSY_RETRIES):
        if part.state == RUNNING:
            part.pause()
        if part.state != PAUSED:
            raise SnapshotError(f"partition {part.name} is {part.state}: only a running or "
                                "paused partition can be saved")
        for _ in range(PARENT_WAITS):
            try:
                return was_running, _all_vcpu_states(part)
            except BlockingIOError:
                if not part.scheduled:
                    break           # only the scheduler's servers answer a paused vCPU
                time.sleep(0.001)
        part.resume()               # finish the instruction's work, then stop again
        time.sleep(0.001)
    raise SnapshotError(f"partition {part.name} never stopped between instructions")


def fsync_dir(path):
    """Make a rename or a new file in directory path durable."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_memory(ram, path):
    """Write RAM to a new file, leaving all-zero pieces as holes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        size = len(ram)
        for at in range(0, size, CHUNK):
            piece = ram[at:at + CHUNK]
            # A memoryview compares element by element (0.5 s for 64 MiB of
            # zeros here); a bytes copy compares with memcmp (~16 ms).
            if piece[0] == 0 and piece.tobytes() == ZERO_CHUNK[:len(piece)]:
                continue
            os.pwrite(fd, piece, at)
        os.ftruncate(fd, size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def partition_records(part, states, copy_disks_to=None):
    """The records of a paused partition, RAM excluded: [(type, body)]
    (copy_disks_to: see device_records)."""
    snap = ffi.new("struct hv_partition_snapshot *")
    lib.hv_partition_get_snapshot(part.core(), snap)
    fields = {n: getattr(snap, n) for n in PARTITION_SNAPSHOT_FIELDS}
    fields.update(mem_size=part.mem_size, nvcpus=len(states))
    records = [(fmt.PARTITION, fmt.pack_partition(fields, part.foreign_ranges(),
                                                  bytes(snap.event_vcpu), part.name,
                                                  part.engine))]
    records += [(fmt.VCPU, fmt.pack_vcpu(i, cpu, pending)) for i, cpu, pending in states]
    platform = ffi.new("struct hv_platform_snapshot *")
    lib.hv_platform_get_snapshot(part.core(), platform)
    records.append((fmt.PLATFORM, fmt.pack_platform(platform)))
    for i, vcpu in enumerate(part.snapshot_vcpus()):
        lapic = ffi.new("struct hv_lapic_snapshot *")
        if lib.hv_lapic_get_snapshot(vcpu, lapic) == 0:
            records.append((fmt.LAPIC, fmt.pack_lapic(i, lapic)))
    from hv.snapshot_devices import device_records
    records += device_records(part, copy_disks_to)
    return records


def save(part, directory, resume=True, copy_disks=False):
    """Write a snapshot of part into directory (created if missing).
    Returns {'bytes': memory bytes, 'seconds': how long the guest was paused}.
    With resume=False a running partition stays paused.  copy_disks: the
    snapshot holds each writable disk too, and restoring it puts them back
    (hv/devices/blk_persist.py, T:921)."""
    from hv.snapshot_devices import check_savable
    check_savable(part)
    os.makedirs(directory, exist_ok=True)
    t0 = time.monotonic()
    was_running, states = _pause_quiescent(part)
    try:
        records = partition_records(part, states, directory if copy_disks else None)
        stream_id = int.from_bytes(os.urandom(8), "little")
        memory_name = f"{MEMORY_PREFIX}{stream_id:016x}"
        write_memory(part.memory(), os.path.join(directory, memory_name))
        tmp = os.path.join(directory, STATE_FILE + ".tmp")
        with open(tmp, "wb") as out:
            w = fmt.Writer(out, stream_id)
            for rtype, body in records:
                w.record(rtype, body)
            w.record(fmt.MEMORY, fmt.MEMORY_FIXED.pack(part.mem_size), memory_name.encode())
            w.finish()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, os.path.join(directory, STATE_FILE))
        fsync_dir(directory)
        for old in os.listdir(directory):      # the memory files no state names any more
            if MEMORY_FILE.fullmatch(old) and old != memory_name:
                os.unlink(os.path.join(directory, old))
    finally:
        paused_for = time.monotonic() - t0
        if was_running and resume:
            part.resume()
    return {"bytes": part.mem_size, "seconds": paused_for, "directory": directory}


# -- load and restore -------------------------------------------------------
def load(directory):
    """Read and check a snapshot directory; raise SnapshotError (one line)."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as f:
            reader = fmt.Reader(f)
            records = list(reader)
    except FileNotFoundError:
        raise SnapshotError(f"{directory}: no snapshot here (no {STATE_FILE} file)") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path} is a directory") from None
    except fmt.FormatError as e:
        raise SnapshotError(f"{path}: {e}") from None
    try:
        state = from_records(directory, records)
    except fmt.FormatError as e:
        raise SnapshotError(f"{path}: {e}") from None
    _open_memory(state)
    return state


def from_records(directory, records, inline_memory=False):
    """A SavedState from checked records (the memory file not yet opened;
    inline_memory: a migration stream carried RAM in PAGES records)."""
    parts = [body for t, body in records if t == fmt.PARTITION]
    if len(parts) != 1:
        raise fmt.FormatError(f"{len(parts)} partition records; a state has exactly one")
    fields, foreign, event_vcpu, name, engine = fmt.unpack_partition(parts[0])
    if len(event_vcpu) > lib.HV_EVENTS_MAX:
        raise fmt.FormatError(f"{len(event_vcpu)} event routes; hv has {lib.HV_EVENTS_MAX} events")
    state = SavedState(directory, fields, foreign, event_vcpu, name, engine)
    vcpus = [body for t, body in records if t == fmt.VCPU]
    if len(vcpus) != fields["nvcpus"] or not vcpus:
        raise fmt.FormatError(f"{len(vcpus)} vcpu records for a partition of {fields['nvcpus']}")
    for body in vcpus:
        cpu, pending = ffi.new("struct hv_cpu_state *"), ffi.new("struct hv_vcpu_pending *")
        vid = fmt.unpack_vcpu(body, cpu, pending, lib.HV_CPU_MSRS_MAX)
        state.vcpus.append((vid, cpu, pending))
    state.vcpus.sort(key=lambda v: v[0])
    if [v[0] for v in state.vcpus] != list(range(len(vcpus))):
        raise fmt.FormatError("vcpu records do not number 0..n-1")
    if len(vcpus) > lib.HV_VCPUS_MAX:
        raise fmt.FormatError(f"{len(vcpus)} vcpus; hv runs at most {lib.HV_VCPUS_MAX}")
    if not any(pending.up for _, _, pending in state.vcpus):
        raise fmt.FormatError("no vcpu is up: the partition had stopped")
    platforms = [body for t, body in records if t == fmt.PLATFORM]
    if len(platforms) > 1:
        raise fmt.FormatError(f"{len(platforms)} platform records; a state has at most one")
    if platforms:
        state.platform = ffi.new("struct hv_platform_snapshot *")
        fmt.unpack_platform(platforms[0], state.platform)
    for body in (body for t, body in records if t == fmt.LAPIC):
        lapic = ffi.new("struct hv_lapic_snapshot *")
        vid = fmt.unpack_lapic(body, lapic)
        if vid >= len(state.vcpus) or vid in state.lapics:
            raise fmt.FormatError(f"lapic record for vcpu {vid}: no such vcpu, or a second one")
        state.lapics[vid] = lapic
    from hv.snapshot_devices import load_devices
    state.devices = load_devices([body for t, body in records if t == fmt.DEVICE], state.mem_size)
    mems = [body for t, body in records if t == fmt.MEMORY]
    if inline_memory:
        return state
    if len(mems) == 1:
        (size,) = fmt.MEMORY_FIXED.unpack_from(mems[0])
        if size != state.mem_size:
            raise fmt.FormatError(f"memory record says {size} bytes, the partition {state.mem_size}")
        mname = mems[0][fmt.MEMORY_FIXED.size:].decode(errors="replace")
        if os.sep in mname or mname in ("", ".", ".."):
            raise fmt.FormatError(f"memory file name {mname!r} is not a plain name")
        state.memory_path = os.path.join(directory, mname)
    else:
        raise fmt.FormatError(f"{len(mems)} memory records; a snapshot has exactly one")
    return state


def _open_memory(state):
    try:
        state.memory_fd = os.open(state.memory_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SnapshotError(f"{state.memory_path}: {e.strerror}") from None
    size = os.fstat(state.memory_fd).st_size
    if size < state.mem_size:
        state.close()
        raise SnapshotError(f"{state.memory_path} is {size} bytes; the state needs "
                            f"{state.mem_size}: truncated")


def restore(directory, engine=None, **kwargs):
    """A Partition (created, not started) from a snapshot directory.
    engine None: the engine that saved it.  kwargs go to Partition
    (console, scheduler, name, ...)."""
    state = load(directory)
    try:
        return restore_state(state, engine, **kwargs)
    finally:
        state.close()


def restore_state(state, engine=None, switches=None, consoles=None, **kwargs):
    """A Partition from a checked state.  Its devices come from the state,
    reconnected: switches (name -> Switch) and consoles (device name ->
    output) say what to, where the process has them (hv/devices/persist.py)."""
    from hv.partition import Partition
    from hv.snapshot_devices import reopen_devices
    if "devices" in kwargs:
        raise ValueError("a restored partition's devices come from its snapshot")
    engine = engine or state.engine
    kwargs.setdefault("name", state.name)
    deterministic = bool(state.partition["deterministic"]) and engine == "tcg"
    devices = reopen_devices(state, switches, consoles)
    try:
        return Partition(None, mem=state.mem_size, engine=engine, deterministic=deterministic,
                         smp=len(state.vcpus), restore_from=state, devices=devices, **kwargs)
    except BaseException:
        for d in devices:
            d.close()
        raise


def create_core(state, engine_number):
    """The C partition over the memory file (MAP_PRIVATE), or over fresh
    RAM for a migration stream whose pages follow."""
    out = ffi.new("struct hv_partition **")
    if state.memory_fd >= 0:
        err = lib.hv_partition_create_from_file(engine_number, state.mem_size, state.memory_fd, out)
    else:
        err = lib.hv_partition_create(engine_number, state.mem_size, out)
    return err, out[0]


def apply_partition(part, state):
    """hv's own frames and guest-visible state, before any vCPU exists."""
    for start, end in state.foreign:
        err = lib.hv_partition_reserve(part.core(), start, end - start)
        if err:
            raise SnapshotError(f"cannot reserve [{start:#x}, {end:#x}): {os.strerror(-err)}")
    snap = ffi.new("struct hv_partition_snapshot *")
    for n in PARTITION_SNAPSHOT_FIELDS:
        setattr(snap, n, state.partition[n])
    snap.event_vcpu[0:len(state.event_vcpu)] = list(state.event_vcpu)
    err = lib.hv_partition_set_snapshot(part.core(), snap)
    if err:
        raise SnapshotError(f"the partition state does not fit this partition: {os.strerror(-err)}")
    if state.platform is not None and lib.hv_platform_set_snapshot(part.core(), state.platform):
        raise SnapshotError("the platform record holds a state no guest could have left "
                            "(UART, IOAPIC or RTC)")


def apply_vcpus(part, vcpus, state):
    """Every vCPU's saved state, instead of the PVH entry; returns the
    vCPUs that were up (to be started), the others stay down."""
    up = []
    for vcpu, (index, cpu, pending) in zip(vcpus, state.vcpus):
        err = lib.hv_vcpu_set_state(vcpu, cpu, pending)
        if err:
            raise SnapshotError(f"the {part.engine} engine refuses the saved state of vCPU "
                                f"{index}: {os.strerror(-err)}")
        lapic = state.lapics.get(index)
        if lapic is not None and lib.hv_lapic_set_snapshot(vcpu, lapic):
            raise SnapshotError(f"the lapic record of vCPU {index} holds a state no guest "
                                "could have left")
        if pending.up:
            up.append(vcpu)
    return up
