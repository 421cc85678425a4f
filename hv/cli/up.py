"""`hv up FILE.toml`: the partitions a config file describes, in one process."""
import sys

from hv.cli.common import EXIT_CRASHED, EXIT_INTERRUPTED, error


def add_parsers(sub):
    up = sub.add_parser("up", help="start the partitions a TOML file describes, in one process")
    up.add_argument("config", help="TOML file with [[partition]] tables (see hv/config.py)")
    up.add_argument("-v", "--verbose", action="store_true")
    up.set_defaults(func=cmd_up)


def cmd_up(args):
    """Start every partition of a config file; wait for all; the exit
    status is the first non-zero one (125 for a crash)."""
    from hv.config import ConfigError, load, make_devices
    from hv.devices.blk import DiskError
    from hv.loader import LoadError
    from hv.partition import CRASHED, HostError, Partition

    parts, switches = [], {}
    try:
        specs = load(args.config)
        for spec in specs:
            devices = make_devices(spec["devices"], switches)
            try:
                parts.append(Partition(spec["kernel"], mem=spec.get("mem", "64M"),
                                       cmdline=spec.get("cmdline", ""),
                                       initrd=spec.get("initrd"),
                                       engine=spec.get("engine", "auto"),
                                       deterministic=spec.get("deterministic", False),
                                       console=PrefixConsole(spec["name"]), devices=devices))
            except BaseException:
                for device in devices:
                    device.close()
                raise
            parts[-1].name = spec["name"]
    except (ConfigError, LoadError, ValueError, HostError, DiskError, OSError) as e:
        for part in parts:
            part.destroy()
        return error(str(e))
    status = 0
    try:
        for part in parts:
            part.start()
        for part in parts:
            state = part.wait()
            if args.verbose:
                print(f"hv: {part.name}: {state}", file=sys.stderr)
            if state == CRASHED:
                print(f"hv: {part.name}: {part.crash_report}", file=sys.stderr)
                status = status or EXIT_CRASHED
            elif part.exit_code:
                status = status or part.exit_code
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        for part in parts:
            part.destroy()
    return status


class PrefixConsole:
    """Console output of one of several partitions: each line tagged."""

    def __init__(self, name, stream=None):
        self.prefix = f"[{name}] ".encode()
        self.out = stream or sys.stdout.buffer
        self._partial = b""

    def write(self, data):
        *lines, self._partial = (self._partial + data).split(b"\n")
        if lines:
            self.out.write(b"".join(self.prefix + line + b"\n" for line in lines))
            self.out.flush()

    def flush(self):
        if self._partial:
            self.out.write(self.prefix + self._partial + b"\n")
            self._partial = b""
        self.out.flush()

    def close(self):
        pass
