"""Several partitions in one hv process, from a small declarative file.

T:710 `hv up FILE.toml` reads a file like this, checks all of it, and only
then starts anything:

    [[partition]]
    name = "pong"
    kernel = "guests/build/net-ping.elf"
    mem = "32M"
    cmdline = "role=pong"
    devices = [{ type = "net", switch = "lan", mac = "52:54:00:00:00:02" }]

    [[partition]]
    name = "ping"
    kernel = "guests/build/net-ping.elf"
    cmdline = "role=ping count=32"
    devices = [{ type = "net", switch = "lan", mac = "52:54:00:00:00:01" },
               { type = "blk", path = "disk.img", readonly = false },
               { type = "rng" },
               { type = "console", output = "ping-vcon.txt" }]

Top-level `workers = N` sets how many scheduler worker threads run every
partition's vCPU (default: one per host CPU); each partition may say
`weight = W` (1..65535, default 256) and `cap = PERCENT` (of one CPU).

A NIC joins the switch it names; every NIC naming one switch shares it.
A switch that only one NIC names could carry nothing (it is almost always a
typo: "lan" here, "lna" there), so it is refused unless it is declared:

    [[switch]]
    name = "lan"        # e.g. for partitions that join later through the API

A partition may be protected by periodic snapshots (hv/protect.py,
docs/lifecycle.md): one every `every`, the last `keep` (default 3) kept,
in `directory` (relative to this file), as snap-<n> directories that
`hv restore DIRECTORY` resumes the newest of after a crash:

    protect = { every = "30s", keep = 3, directory = "snaps/web" }

`every` is a number with a unit: "500ms", "30s", "5m", "1h".  With
`copy_disks = true` each snapshot also holds the partition's writable disks
as they were, and restoring it puts them back: a guest that writes its disk
can be restored after a crash (otherwise the disk it wrote since no longer
matches the snapshot, and the restore is refused).

Device specs are the same dicts `hv run --disk/--rng/--vconsole/--net` build
(hv run's NICs share the declared switch "default").  Values have exactly
their documented types: `readonly = "no"` is refused, not taken as true.
"""
import os

PARTITION_KEYS = {"name", "kernel", "initrd", "mem", "cmdline", "engine", "deterministic", "devices",
                  "weight", "cap", "smp", "protect"}
PROTECT_KEYS = {"every", "keep", "directory", "copy_disks"}
PROTECT_KEEP_MAX = 1000
PROTECT_EVERY_MIN = 0.01        # seconds: a save pauses the guest, so not more often
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
SMP_MAX = 16                    # vCPUs per partition: hv/abi.h's HV_VCPUS_MAX (a test checks)
# The scheduler's share of a partition (docs/scheduler.md): either key puts it
# on the process's scheduler.  (lowest, highest) accepted.
SHARE_RANGES = {"weight": (1, 65535), "cap": (0, 100)}
DEVICE_KEYS = {
    "blk": {"type", "path", "readonly"},
    "rng": {"type"},
    "console": {"type", "output", "socket"},
    "net": {"type", "switch", "mac"},
}


class ConfigError(ValueError):
    """One line naming the problem."""


def load(path, with_channels=False, with_workers=False):
    """The parsed, checked list of partition specs (dicts); with_channels:
    (specs, the [[channel]] tables checked against them); with_workers also
    the top-level `workers = N` (scheduler worker threads, None if absent)."""
    import tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = os.path.dirname(os.path.abspath(path))
    unknown = set(data) - {"partition", "switch", "channel", "workers"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    specs = data.get("partition")
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{path}: no [[partition]] tables")
    declared = declared_switches(data.get("switch", []), path)
    names = set()
    for i, spec in enumerate(specs):
        check_partition(spec, path, base, index=i + 1)
        if spec["name"] in names:
            raise ConfigError(f"{path}: partition {i + 1}: name {spec['name']!r} is used twice")
        names.add(spec["name"])
    check_together(specs, declared, path)
    channels = data.get("channel", [])
    check_channels(channels, names, path)
    workers = data.get("workers")       # the scheduler's worker threads (docs/scheduler.md)
    if workers is not None:
        from hv.abi import lib
        if type(workers) is not int or not 1 <= workers <= lib.HV_SCHED_WORKERS_MAX:
            raise ConfigError(f"{path}: workers must be an integer 1..{lib.HV_SCHED_WORKERS_MAX}")
    out = (specs,) + ((channels,) if with_channels else ()) + ((workers,) if with_workers else ())
    return out if len(out) > 1 else specs


def check_channels(channels, names, path):
    """[[channel]] a = "NAME" b = "NAME": two existing partitions, once per pair."""
    if not isinstance(channels, list):
        raise ConfigError(f"{path}: channel must be [[channel]] tables")
    pairs = set()
    for i, ch in enumerate(channels):
        where = f"{path}: channel {i + 1}"
        if not isinstance(ch, dict) or set(ch) != {"a", "b"}:
            raise ConfigError(f"{where}: needs exactly a = NAME and b = NAME")
        for side in "ab":
            if ch[side] not in names:
                raise ConfigError(f"{where}: no partition named {ch[side]!r}")
        if ch["a"] == ch["b"]:
            raise ConfigError(f"{where}: a partition cannot have a channel to itself")
        pair = frozenset((ch["a"], ch["b"]))
        if pair in pairs:
            raise ConfigError(f"{where}: {ch['a']!r} and {ch['b']!r} already have a channel")
        pairs.add(pair)


def declared_switches(tables, source):
    """The names of the [[switch]] tables."""
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: switch must be [[switch]] tables")
    names = set()
    for i, table in enumerate(tables):
        where = f"{source}: switch {i + 1}"
        if not isinstance(table, dict) or set(table) != {"name"}:
            raise ConfigError(f"{where}: a switch has exactly one key, name")
        if not isinstance(table["name"], str) or not table["name"] or table["name"] in names:
            raise ConfigError(f"{where}: name {table['name']!r} is empty, not text, or used twice")
        names.add(table["name"])
    return names


def check_together(specs, declared, source=None):
    """What no single partition can check: MACs unique, an image attached
    read-write once, a console socket listened on once, no switch only one
    NIC names unless declared.  specs are checked partition specs."""
    from hv.devices.net import parse_mac
    from hv.devices.vconsole import console_socket_path

    prefix = f"{source}: " if source else ""
    macs, disks, sockets, nics_on = {}, {}, {}, {}
    for spec in specs:
        where = f"{prefix}partition {spec['name']!r}"
        for dev in spec["devices"]:
            if dev["type"] == "net":
                mac = parse_mac(dev["mac"])
                if mac in macs:
                    raise ConfigError(f"{where}: MAC {dev['mac']} is used twice "
                                      f"(also by partition {macs[mac]!r})")
                macs[mac] = spec["name"]
                nics_on.setdefault(dev["switch"], []).append(where)
            if dev["type"] == "blk" and not dev.get("readonly"):
                key = os.path.realpath(dev["path"])
                if key in disks:
                    raise ConfigError(f"{where}: disk {dev['path']} is attached read-write twice")
                disks[key] = spec["name"]
            if "socket" in dev:
                key = os.path.realpath(console_socket_path(dev["socket"], create=False))
                if key in sockets:
                    raise ConfigError(f"{where}: console socket {dev['socket']} is used twice "
                                      f"(also by partition {sockets[key]!r})")
                sockets[key] = spec["name"]
    for switch, users in nics_on.items():
        if len(users) == 1 and switch not in declared:
            raise ConfigError(f"{users[0]}: net device: switch {switch!r} has no other NIC and "
                              f"is not declared (a typo? else add [[switch]] name = {switch!r})")


def check_partition(spec, source=None, base=".", index=None):
    """Check one partition spec in place: a [[partition]] table (source is
    the file, index its place there, which also names a nameless one) or the
    body of an API create request.  Known keys of the right types, paths
    made relative to base, every device checked.  Raises ConfigError."""
    prefix = f"{source}: " if source else ""
    where = f"{prefix}partition {index}" if index is not None else f"{prefix}partition"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: not a table")
    extra = set(spec) - PARTITION_KEYS
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
    if index is not None:
        spec.setdefault("name", f"p{index}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name {name!r} is empty or not text")
    where = f"{prefix}partition {name!r}"
    if not isinstance(spec.get("kernel"), str):
        raise ConfigError(f"{where}: kernel (a path) is required")
    spec["kernel"] = os.path.join(base, spec["kernel"])
    if "initrd" in spec:
        if not isinstance(spec["initrd"], str):
            raise ConfigError(f"{where}: initrd must be a path")
        spec["initrd"] = os.path.join(base, spec["initrd"])
    for key, kind in (("mem", str), ("cmdline", str), ("engine", str), ("deterministic", bool)):
        if key in spec and not isinstance(spec[key], kind):
            raise ConfigError(f"{where}: {key} must be {kind.__name__}")
    for key, (low, high) in SHARE_RANGES.items():
        if key in spec and (type(spec[key]) is not int or not low <= spec[key] <= high):
            raise ConfigError(f"{where}: {key} must be an integer {low}..{high}")
    if "smp" in spec and (type(spec["smp"]) is not int or not 1 <= spec["smp"] <= SMP_MAX):
        raise ConfigError(f"{where}: smp must be an integer 1..{SMP_MAX} (vCPUs)")
    from hv.partition import ENGINES, parse_size
    try:
        parse_size(spec.get("mem", "64M"))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if spec.get("engine", "auto") not in ("auto", *ENGINES):
        raise ConfigError(f"{where}: unknown engine {spec['engine']!r} "
                          f"(choose from auto, {', '.join(ENGINES)})")
    if "protect" in spec:
        spec["protect"] = check_protect(spec["protect"], where, base)
    devices = spec.setdefault("devices", [])
    if not isinstance(devices, list):
        raise ConfigError(f"{where}: devices must be a list of tables")
    for dev in devices:
        check_device(dev, where, base)
    return spec


def parse_duration(text):
    """Seconds from "500ms", "30s", "5m", "1h" (a number, then its unit)."""
    import re
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a duration (a number and ms, s, m or h: \"30s\")")
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def check_protect(table, where, base="."):
    """A partition's protect table, checked and completed: {"every": text,
    "keep", "directory" (absolute)}.  Raises ConfigError."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: protect must be a table "
                          '{ every = "30s", keep = 3, directory = "DIR" }')
    extra = set(table) - PROTECT_KEYS
    if extra:
        raise ConfigError(f"{where}: protect: unknown key {sorted(extra)[0]!r}")
    if "every" not in table or "directory" not in table:
        raise ConfigError(f"{where}: protect needs every (\"30s\") and directory")
    try:
        every = parse_duration(table["every"])
    except ValueError as e:
        raise ConfigError(f"{where}: protect: every: {e}") from None
    if every < PROTECT_EVERY_MIN:
        raise ConfigError(f"{where}: protect: every must be at least {PROTECT_EVERY_MIN * 1000:.0f}ms")
    keep = table.get("keep", 3)
    if type(keep) is not int or not 1 <= keep <= PROTECT_KEEP_MAX:
        raise ConfigError(f"{where}: protect: keep must be an integer 1..{PROTECT_KEEP_MAX}")
    if not isinstance(table["directory"], str) or not table["directory"]:
        raise ConfigError(f"{where}: protect: directory must be a path")
    copy_disks = table.get("copy_disks", False)
    if not isinstance(copy_disks, bool):
        raise ConfigError(f"{where}: protect: copy_disks must be true or false")
    return {"every": table["every"], "keep": keep,
            "directory": os.path.join(base, table["directory"]), "copy_disks": copy_disks}


def check_device(dev, where, base="."):
    if not isinstance(dev, dict) or dev.get("type") not in DEVICE_KEYS:
        raise ConfigError(f"{where}: a device needs type = one of {', '.join(DEVICE_KEYS)}")
    extra = set(dev) - DEVICE_KEYS[dev["type"]]
    if extra:
        raise ConfigError(f"{where}: {dev['type']} device: unknown key {sorted(extra)[0]!r}")
    for key, value in dev.items():
        kind = bool if key == "readonly" else str
        if not isinstance(value, kind):
            raise ConfigError(f"{where}: {dev['type']} device: {key} must be "
                              f"{'true or false' if kind is bool else 'text'}, not {value!r}")
    if dev["type"] == "blk":
        if "path" not in dev:
            raise ConfigError(f"{where}: blk device: path is required")
        dev["path"] = os.path.join(base, dev["path"])
    if dev["type"] == "console" and "output" in dev and "socket" in dev:
        raise ConfigError(f"{where}: console device: output or socket, not both")
    if dev["type"] == "net":
        from hv.devices.net import parse_mac
        dev.setdefault("switch", "default")
        if "mac" not in dev:
            raise ConfigError(f"{where}: net device: mac is required")
        try:
            parse_mac(dev["mac"])
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if "output" in dev and dev["output"] != "-":
        dev["output"] = os.path.join(base, dev["output"])
    if "socket" in dev:
        # A path (with a /) is relative to the config file; a bare word is a
        # console name that `hv console NAME` finds.
        if not dev["socket"]:
            raise ConfigError(f"{where}: console socket must be a path or a name")
        if "/" in dev["socket"]:
            dev["socket"] = os.path.join(base, dev["socket"])


def make_devices(specs, switches):
    """Device objects for a partition's specs; switches: name -> Switch (filled in)."""
    from hv.console import Console
    from hv.devices.blk import BlkDevice
    from hv.devices.net import NetDevice, parse_mac
    from hv.devices.rng import RngDevice
    from hv.devices.switch import Switch
    from hv.devices.vconsole import ConsoleDevice, SocketConsole, console_socket_path

    devices = []
    try:
        for dev in specs:
            kind = dev["type"]
            if kind == "blk":
                devices.append(BlkDevice(dev["path"], readonly=dev.get("readonly", False)))
            elif kind == "rng":
                devices.append(RngDevice())
            elif kind == "console":
                # Opened when attached: after the kernel was checked.
                if "socket" in dev:
                    def sink(path=dev["socket"]):
                        return SocketConsole(console_socket_path(path))
                else:
                    def sink(output=dev.get("output", "-")):
                        return Console() if output == "-" else Console(path=output)
                devices.append(ConsoleDevice(sink))
            elif kind == "net":
                switch = switches.setdefault(dev["switch"], Switch(dev["switch"]))
                devices.append(NetDevice(switch, parse_mac(dev["mac"])))
    except BaseException:
        for d in devices:
            d.close()
        raise
    return devices
