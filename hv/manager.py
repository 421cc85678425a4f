"""The parent partition's inventory: many partitions, the switches that
join them and the consoles they speak on, behind one object.

T:720 `hv up`, `hv serve` and its REST API (hv/api.py) all drive partitions
through a Manager.  It names partitions, checks a spec with the same rules
as a config file (hv/config.py), refuses what would clash with a partition
already there (a name, a MAC, a disk attached read-write, a console
socket), and serializes the operations on one partition: two requests on
the same partition never interleave, requests on different ones do.

States a client sees (Partition's own, plus "stopped"):

    created --start--> running --pause--> paused --resume--> running
    running | paused --(the guest ends)--> shutdown | crashed
    created | running | paused --stop--> stopped
    any --delete--> (gone)

A partition that has ended (shutdown, crashed, stopped) has given back its
memory, devices, disk locks and console sockets; its record (state, exit
code, crash report, last counters, console output) stays until delete.
"""
import copy
import os
import re
import threading
import time

from hv.abi import lib
from hv.config import SHARE_RANGES, ConfigError, check_partition, make_devices
from hv.devices.blk import DiskError
from hv.latch import Latch
from hv.loader import LoadError
from hv.log import log
from hv.partition import (CRASHED, CREATED, PAUSED, RUNNING, SHUTDOWN, HostError, Partition,
                          StateError)

STOPPED = "stopped"             # stopped on request before the guest ended
ENDED = (SHUTDOWN, CRASHED, STOPPED)
CONSOLE_KEEP = 64 << 10         # bytes of console output kept per partition
MAX_PARTITIONS = 1024           # records kept, live or ended: the inventory is bounded
CHANNEL_REFS = 16               # grant refs a channel takes in its side a's table (vchan: 9)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")   # safe in URLs, paths, logs
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class ManagerError(Exception):
    """A request the manager refuses; `status` is the HTTP status it maps to."""
    status = 500


class BadRequest(ManagerError):
    status = 400


class NotFound(ManagerError):
    status = 404


class Conflict(ManagerError):
    """The partition's state (or another partition's resource) forbids it."""
    status = 409


class ConsoleLog:
    """A managed partition's hypercall console: every line tagged with the
    partition's name on a stream (the terminal of `hv up`, `hv serve`'s
    stdout), and the last CONSOLE_KEEP bytes kept for the API.  If the
    stream fails (a closed terminal), the log goes on without it."""

    def __init__(self, name, stream=None):
        self.name = name
        self.prefix = f"[{name}] ".encode()
        self.out = stream
        self.kept = bytearray()
        self.written = 0                # bytes the guest wrote in all
        self._partial = b""
        self._lock = threading.Lock()

    def write(self, data):
        with self._lock:
            self.kept += data
            del self.kept[:-CONSOLE_KEEP]
            self.written += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            if lines:
                self._emit(b"".join(self.prefix + line + b"\n" for line in lines))

    def flush(self):
        with self._lock:
            if self._partial:
                self._emit(self.prefix + self._partial + b"\n")
                self._partial = b""

    def _emit(self, data):
        if self.out is None:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except (OSError, ValueError) as e:      # ValueError: the stream was closed
            self.out = None
            log.warning("partition %r: console stream failed (%s); "
                        "its output is kept for the API only", self.name, e)

    def text(self):
        with self._lock:
            return bytes(self.kept)

    def close(self):
        self.flush()


def thread_cpu_seconds(native_id):
    """CPU time (user + system, which includes guest time under KVM) of one
    thread of this process, or None once it has gone.  Read from /proc, so a
    thread that ended is an absent file, never a dangling handle."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK    # utime, stime (proc(5))


class Managed:
    """One partition's record in the manager."""

    def __init__(self, name, spec, partition, console):
        self.name = name
        self.spec = spec                # the checked spec it was made from
        self.partition = partition      # None once it has ended and been freed
        self.console = console
        self.lock = threading.RLock()   # serializes every operation on it
        self.ended = Latch()            # opened once it has ended (hv/latch.py)
        self.state = CREATED            # the recorded state once ended
        self.exit_code = None
        self.crash_report = None
        self.created_at = time.time()
        self.started_at = self.ended_at = None
        self.vcpu_tid = None            # native id of the vCPU thread
        self.cpu_seconds = 0.0          # the vCPU thread's CPU time when it ended
        self.last_metrics = {}
        self.resources = claims(spec)
        self.engine = partition.engine
        self.scheduled = partition.scheduled        # its vCPU runs on the scheduler's workers
        self.protection = None          # hv.protect.Protection while protected (the last one after)

    def current_state(self):
        part = self.partition
        return part.state if part is not None and not self.ended.is_open() else self.state


def scheduling(spec):
    """Partition's scheduler arguments: every partition runs on the
    process's scheduler (docs/scheduler.md), with its weight and cap."""
    return {"weight": spec.get("weight", 0), "cap": spec.get("cap", 0)}


def check_share(share):
    for key, value in share.items():
        low, high = SHARE_RANGES[key]
        if type(value) is not int or not low <= value <= high:
            raise ConfigError(f"{key} must be an integer {low}..{high}")


def claims(spec):
    """What a partition holds that no other may hold at the same time."""
    from hv.devices.net import parse_mac
    from hv.devices.vconsole import console_socket_path
    held = set()
    for dev in spec["devices"]:
        if dev["type"] == "net":
            held.add(("MAC", bytes(parse_mac(dev["mac"]))))
        elif dev["type"] == "blk" and not dev.get("readonly"):
            held.add(("disk (read-write)", os.path.realpath(dev["path"])))
        elif dev["type"] == "console" and "socket" in dev:
            held.add(("console socket", os.path.realpath(console_socket_path(dev["socket"]))))
    return held


def claim_text(claim):
    kind, value = claim
    if kind == "MAC":
        return f"MAC {':'.join(f'{b:02x}' for b in value)}"
    return f"{kind} {value}"


class Manager:
    """Partitions by name.  Thread-safe: every method may be called from
    any thread; operations on one partition are serialized."""

    def __init__(self, console_stream=None, max_partitions=MAX_PARTITIONS):
        self.max_partitions = max_partitions
        self.console_stream = console_stream    # where partitions' console lines go
        self.switches = {}                      # name -> Switch, made on first use
        self._entries = {}                      # name -> Managed, in creation order
        self._reserved = {}                     # name -> claims of a partition being built
        self._channels = []                     # {"a", "b", "gref"} in the order made
        self._lock = threading.Lock()           # guards _entries, switches, claims

    # -- create ---------------------------------------------------------------
    def create(self, spec, base=None):
        """Make (not start) a partition from a spec: the dict a [[partition]]
        table holds.  Relative paths are taken from `base` (default: the
        working directory).  Returns its description."""
        spec = copy.deepcopy(spec)          # checking fills in defaults and paths
        try:
            check_partition(spec, base=base or os.getcwd())
        except ConfigError as e:
            raise BadRequest(str(e)) from None
        except (TypeError, AttributeError) as e:     # a value of a type no check expected
            raise BadRequest(f"partition: a value has the wrong type ({e})") from None
        name = spec["name"]
        if not NAME_PATTERN.fullmatch(name):
            raise BadRequest(f"partition name {name!r}: use 1-64 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
        entry = None
        held = claims(spec)
        # The name and the claims are reserved under the lock; the partition
        # is built outside it (loading a large kernel takes a while), so
        # that requests about other partitions are not held up.
        with self._lock:
            if len(self._entries) + len(self._reserved) >= self.max_partitions:
                raise Conflict(f"at most {self.max_partitions} partitions (delete some)")
            if name in self._entries or name in self._reserved:
                raise Conflict(f"partition {name!r} exists")
            holders = [(e.name, e.resources) for e in self._entries.values() if not e.ended.is_open()]
            for other, resources in holders + list(self._reserved.items()):
                clash = held & resources
                if clash:
                    raise Conflict(f"partition {name!r}: {claim_text(min(clash))} "
                                   f"is held by partition {other!r}")
            self._reserved[name] = held
        try:
            entry = self._build(name, spec)
        finally:
            with self._lock:
                del self._reserved[name]
                if entry is not None:
                    self._entries[name] = entry
        return self._describe(entry)

    def _build(self, name, spec):
        console = ConsoleLog(name, self.console_stream)
        devices = []
        try:
            with self._lock:                # switches are made on first use
                devices = make_devices(spec["devices"], self.switches)
            part = Partition(spec["kernel"], mem=spec.get("mem", "64M"),
                             cmdline=spec.get("cmdline", ""), initrd=spec.get("initrd"),
                             engine=spec.get("engine", "auto"),
                             deterministic=spec.get("deterministic", False),
                             console=console, devices=devices, name=name,
                             smp=spec.get("smp", 1), **scheduling(spec))
        except (LoadError, ValueError, HostError, DiskError, OSError) as e:
            for device in devices:
                device.close()
            raise BadRequest(f"partition {name!r}: {e}") from None
        except BaseException:
            for device in devices:
                device.close()
            raise
        if "protect" in spec:
            from hv.snapshot import SnapshotError
            from hv.snapshot_devices import check_savable
            try:
                check_savable(part)
                os.makedirs(spec["protect"]["directory"], exist_ok=True)
            except SnapshotError as e:
                part.destroy()
                raise BadRequest(f"partition {name!r}: protect: {e}") from None
            except OSError as e:
                part.destroy()
                raise BadRequest(f"partition {name!r}: protect: cannot make "
                                 f"{spec['protect']['directory']}: {e.strerror}") from None
        entry = Managed(name, spec, part, console)
        return entry

    # -- channels -----------------------------------------------------------
    def connect(self, a, b, gref=None):
        """T:805 A channel between two created partitions (docs/channels.md):
        the core lets them name each other, and each guest's command line
        gets `channel=PEER_NAME,PEER_ID,SIDE,GREF` (side a serves the rings
        from grant ref gref of its table; b connects).  Without a gref, side
        a's channels take 16 refs each, in the order they are made.
        Returns the channel's description."""
        if a == b:
            raise BadRequest(f"channel {a!r}-{b!r}: a partition cannot have a channel to itself")
        if gref is not None and (type(gref) is not int or not 0 <= gref < lib.HV_GRANT_REFS_MAX):
            raise BadRequest(f"channel {a!r}-{b!r}: gref must be an integer "
                             f"0..{lib.HV_GRANT_REFS_MAX - 1}")
        ea, eb = self._get(a), self._get(b)
        first, second = sorted((ea, eb), key=lambda e: e.name)     # one lock order for all
        with first.lock, second.lock:
            for entry in (ea, eb):
                if entry.current_state() != CREATED:
                    raise Conflict(f"partition {entry.name!r} has started: connect before start")
            with self._lock:
                if any({c["a"], c["b"]} == {a, b} for c in self._channels):
                    raise Conflict(f"partitions {a!r} and {b!r} already have a channel")
                if gref is None:
                    gref = CHANNEL_REFS * sum(c["a"] == a for c in self._channels)
            pa, pb = ea.partition, eb.partition
            err = lib.hv_channel_permit(pa.core(), pb.core())
            if err:
                raise Conflict(f"channel {a!r}-{b!r}: {os.strerror(-err)}")
            try:
                pa.append_cmdline(f"channel={b},{pb.id},a,{gref}")
                pb.append_cmdline(f"channel={a},{pa.id},b,{gref}")
            except LoadError as e:
                raise BadRequest(f"channel {a!r}-{b!r}: {e}") from None
            channel = {"a": a, "b": b, "gref": gref}
            with self._lock:
                self._channels.append(channel)
        return dict(channel)

    def channels(self):
        """Every channel made, both of whose partitions are still listed."""
        with self._lock:
            return [dict(c) for c in self._channels
                    if c["a"] in self._entries and c["b"] in self._entries]

    # -- lifecycle --------------------------------------------------------------
    def start(self, name):
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state != CREATED:
                raise Conflict(f"cannot start partition {name!r}: it is {state}")
            part = entry.partition
            entry.started_at = time.time()
            if entry.scheduled:
                part.start()        # on the workers; its vCPU exists when this returns
            thread = threading.Thread(target=self._run, args=(entry, part), daemon=True,
                                      name=f"partition-{name}")
            thread.start()
            # run()'s first step marks the partition running; wait for it, so
            # that a pause right after start finds it running.
            while part.state == CREATED and thread.is_alive():
                time.sleep(0.0002)
            if "protect" in entry.spec:
                self._protect(entry)
        return self._describe(entry)

    def _run(self, entry, part):
        """The vCPU thread (or, on the scheduler, a thread that waits for
        the guest): run it, then, if it ended by itself, record how and free
        what it held."""
        try:
            if entry.scheduled:
                part.wait()
            else:
                entry.vcpu_tid = threading.get_native_id()
                part.run()
        finally:
            with entry.lock:
                if not entry.ended.is_open():
                    self._end(entry)

    def pause(self, name):
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state != RUNNING:
                raise Conflict(f"cannot pause partition {name!r}: it is {state}")
            try:
                entry.partition.pause()
            except StateError as e:
                raise Conflict(f"partition {name!r}: {e}") from None
        return self._describe(entry)

    def resume(self, name):
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state != PAUSED:
                raise Conflict(f"cannot resume partition {name!r}: it is {state}")
            try:
                entry.partition.resume()
            except StateError as e:
                raise Conflict(f"partition {name!r}: {e}") from None
        return self._describe(entry)

    def stop(self, name):
        """Stop the guest (wherever it is) and free what it held; the record stays."""
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state in ENDED:
                raise Conflict(f"cannot stop partition {name!r}: it is {state}")
            self._end(entry)
        return self._describe(entry)

    def set_share(self, name, weight=None, cap=None):
        """Change a scheduled partition's weight and cap while it lives."""
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state not in (RUNNING, PAUSED):
                raise Conflict(f"cannot change the share of partition {name!r}: it is {state}")
            if not entry.scheduled:
                raise Conflict(f"partition {name!r} is not on the scheduler")
            share = {k: v for k, v in (("weight", weight), ("cap", cap)) if v is not None}
            try:
                check_share(share)
                entry.partition.set_share(**share)
            except (ConfigError, ValueError) as e:
                raise BadRequest(f"partition {name!r}: {e}") from None
            except StateError as e:
                raise Conflict(f"partition {name!r}: {e}") from None
            entry.spec.update(share)
        return self._describe(entry)

    def snapshot(self, name, directory, resume=True, copy_disks=False):
        """Save a running or paused partition into directory (docs/lifecycle.md);
        it runs on afterwards unless resume is false (then it stays paused);
        copy_disks: its writable disks too."""
        from hv.snapshot import SnapshotError
        if not isinstance(directory, str) or not os.path.isabs(directory) or \
                not isinstance(resume, bool) or not isinstance(copy_disks, bool):
            raise BadRequest('the body must be {"directory": "/absolute/path", '
                             '"resume": true|false, "copy_disks": true|false}')
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state not in (RUNNING, PAUSED):
                raise Conflict(f"cannot save partition {name!r}: it is {state}")
            try:
                saved = entry.partition.snapshot(directory, resume=resume,
                                                 copy_disks=copy_disks)
            except SnapshotError as e:
                raise Conflict(str(e)) from None
            except OSError as e:
                raise Conflict(f"cannot write {directory}: {e.strerror}") from None
        return {"name": name, "state": entry.current_state(), **saved}

    # -- scheduled protection (hv/protect.py) ---------------------------------
    def _protect(self, entry):
        """Start saving entry's partition as its spec's protect table says
        (entry.lock held; the partition runs or is paused)."""
        from hv.config import parse_duration
        from hv.protect import Protection
        table = entry.spec["protect"]
        try:
            entry.protection = Protection(entry.partition, table["directory"],
                                          parse_duration(table["every"]), table["keep"],
                                          lock=entry.lock,
                                          copy_disks=table.get("copy_disks", False))
        except OSError as e:
            raise Conflict(f"partition {entry.name!r}: protect: cannot use "
                           f"{table['directory']}: {e.strerror}") from None

    def set_protection(self, name, table):
        """Protect a partition from now on (replacing its protection), or,
        not started yet, once it starts.  Returns protection(name)."""
        from hv.config import check_protect
        from hv.snapshot import SnapshotError
        from hv.snapshot_devices import check_savable
        entry = self._get(name)
        try:
            table = check_protect(table, f"partition {name!r}", os.getcwd())
        except ConfigError as e:
            raise BadRequest(str(e)) from None
        with entry.lock:
            state = entry.current_state()
            if state not in (CREATED, RUNNING, PAUSED):
                raise Conflict(f"cannot protect partition {name!r}: it is {state}")
            try:
                check_savable(entry.partition)
                os.makedirs(table["directory"], exist_ok=True)
            except SnapshotError as e:
                raise Conflict(str(e)) from None
            except OSError as e:
                raise BadRequest(f"partition {name!r}: protect: cannot make "
                                 f"{table['directory']}: {e.strerror}") from None
            if entry.protection is not None:
                entry.protection.stop(wait=False)
            entry.spec["protect"] = table
            if state != CREATED:
                self._protect(entry)
        return self.protection(name)

    def clear_protection(self, name):
        """No more periodic snapshots; those taken stay."""
        entry = self._get(name)
        with entry.lock:
            if entry.protection is not None:
                entry.protection.stop(wait=False)
            entry.spec.pop("protect", None)

    def protection(self, name):
        """A partition's protection: its settings, how it goes, and the
        complete snapshots in its directory, oldest first."""
        from hv.protect import snapshots
        entry = self._get(name)
        with entry.lock:
            table = entry.spec.get("protect")
            guard = entry.protection
            about = {"name": name, "every": table["every"] if table else None,
                     "keep": table["keep"] if table else None,
                     "directory": table["directory"] if table else None,
                     "copy_disks": table.get("copy_disks", False) if table else None,
                     "active": bool(guard and guard.active), "saved": 0, "last_error": None,
                     "last_saved_at": None, "last_pause_seconds": None}
            if guard is not None and (table is None or guard.directory == table["directory"]):
                status = guard.status()
                about.update({k: status[k] for k in ("saved", "last_error", "last_saved_at",
                                                     "last_pause_seconds")})
                about["directory"] = about["directory"] or guard.directory
        found = []
        for path in snapshots(about["directory"]) if about["directory"] else []:
            try:
                found.append({"directory": path,
                              "saved_at": os.stat(os.path.join(path, "state")).st_mtime})
            except FileNotFoundError:
                pass                    # pruned meanwhile
        about["snapshots"] = found
        return about

    def migrate(self, name, address, downtime_ms=300):
        """Move a running partition to an `hv receive` at address; it ends
        here (stopped) once it runs there, and runs on here if that fails."""
        from hv.migrate import MigrationError, send
        if not isinstance(address, str) or not isinstance(downtime_ms, int) or downtime_ms < 1:
            raise BadRequest('the body must be {"address": "unix:PATH", "downtime_ms": N}')
        entry = self._get(name)
        with entry.lock:
            state = entry.current_state()
            if state not in (RUNNING, PAUSED):
                raise Conflict(f"cannot migrate partition {name!r}: it is {state}")
            try:
                report = send(entry.partition, address, downtime=downtime_ms / 1000)
            except ValueError as e:
                raise BadRequest(str(e)) from None
            except MigrationError as e:
                raise Conflict(str(e)) from None
            self._end(entry)
        return {"name": name, "state": entry.current_state(), "address": address, **report}

    def delete(self, name):
        """Stop it if it runs, and forget it."""
        entry = self._get(name)
        with entry.lock:
            if not entry.ended.is_open():
                self._end(entry)
            with self._lock:
                self._entries.pop(name, None)
                # A new partition of the same name is not the old one's peer.
                self._channels = [c for c in self._channels if name not in (c["a"], c["b"])]

    def _end(self, entry):
        """Record how the partition ended and free it (entry.lock held)."""
        part = entry.partition
        if entry.protection is not None:
            entry.protection.stop(wait=False)   # it saves under entry.lock: none starts now
        part.destroy()                  # returns once the vCPU has stopped
        if part.crash_report is not None:
            entry.state = CRASHED
        elif part.exit_code is not None:
            entry.state = SHUTDOWN      # the guest ended itself, perhaps just before a stop
        else:
            entry.state = STOPPED
        entry.exit_code = part.exit_code
        entry.crash_report = part.crash_report
        entry.last_metrics = part.metrics()
        if entry.last_metrics.get("scheduler"):
            entry.cpu_seconds = entry.last_metrics["scheduler"]["run_ns"] / 1e9
        elif entry.vcpu_tid is not None:
            entry.cpu_seconds = thread_cpu_seconds(entry.vcpu_tid) or entry.cpu_seconds
        entry.partition = None          # its RAM goes with the last reference
        entry.ended_at = time.time()
        entry.ended.open()

    def wait(self, name, timeout=None):
        """Wait until the partition has ended; returns its state."""
        entry = self._get(name)
        # In slices, as Partition.wait(): a Ctrl-C or SIGTERM delivered to
        # another thread still wakes the main thread to run its handler.
        # A Latch, not an Event: an interrupt cannot break its lock.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not entry.ended.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
        return entry.current_state()

    def close(self):
        """Stop every partition (hv serve's and hv up's last step)."""
        for name in self.names():
            try:
                self.delete(name)
            except NotFound:
                pass

    # -- inspection -------------------------------------------------------------
    def names(self):
        with self._lock:
            return list(self._entries)

    def list(self):
        return [self._describe(e) for e in self._snapshot()]

    def describe(self, name):
        return self._describe(self._get(name))

    def console_output(self, name):
        """The last CONSOLE_KEEP bytes the partition wrote to its console."""
        return self._get(name).console.text()

    def metrics(self, name):
        return self._metrics(self._get(name))

    def all_metrics(self):
        with self._lock:
            switches = {name: {"ports": len(s.ports), "forwarded": s.forwarded,
                               "flooded": s.flooded, "dropped": s.dropped}
                        for name, s in self.switches.items()}
        return {"time": time.time(), "partitions": [self._metrics(e) for e in self._snapshot()],
                "switches": switches}

    def _snapshot(self):
        with self._lock:
            return list(self._entries.values())

    def _get(self, name):
        with self._lock:
            entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"no partition {name!r}")
        return entry

    def _describe(self, entry):
        with entry.lock:
            part = entry.partition
            live = part is not None and not entry.ended.is_open()
            return {
                "name": entry.name,
                "id": part.id if live else None,
                "state": entry.current_state(),
                "kernel": entry.spec["kernel"],
                "mem": entry.spec.get("mem", "64M"),
                "cmdline": entry.spec.get("cmdline", ""),
                "initrd": entry.spec.get("initrd"),
                "engine": entry.engine,
                "deterministic": entry.spec.get("deterministic", False),
                "scheduled": entry.scheduled,
                "weight": entry.spec.get("weight"),
                "cap": entry.spec.get("cap"),
                "devices": entry.spec["devices"],
                "protect": entry.spec.get("protect"),
                "consoles": console_sockets(entry.spec),
                "exit_code": part.exit_code if live else entry.exit_code,
                "crash_report": part.crash_report if live else entry.crash_report,
                "created_at": entry.created_at,
                "started_at": entry.started_at,
                "ended_at": entry.ended_at,
                "metrics": self._metrics(entry),
            }

    def _metrics(self, entry):
        """Partition.metrics() (live, or its last values), with the vCPU's
        CPU time and the partition's age."""
        with entry.lock:
            part = entry.partition
            live = part is not None and not entry.ended.is_open()
            metrics = dict(part.metrics() if live else entry.last_metrics)
            if metrics.get("scheduler"):
                # On the scheduler's workers: the core counts the vCPU's time.
                cpu = metrics["scheduler"]["run_ns"] / 1e9
            elif live and entry.vcpu_tid:
                cpu = thread_cpu_seconds(entry.vcpu_tid)
            else:
                cpu = None
            end = entry.ended_at or time.time()
            metrics.update(
                name=entry.name, state=entry.current_state(),
                id=part.id if live else None,
                uptime_seconds=round(end - entry.started_at, 6) if entry.started_at else 0.0,
                cpu_seconds=cpu if cpu is not None else entry.cpu_seconds,
                console_bytes=entry.console.written)
            return metrics


def console_sockets(spec):
    """The Unix sockets `hv console` attaches to, one per socket console."""
    from hv.devices.vconsole import console_socket_path
    return [console_socket_path(dev["socket"]) for dev in spec["devices"]
            if dev["type"] == "console" and "socket" in dev]
