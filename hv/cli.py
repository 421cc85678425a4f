"""The hv command: `hv run KERNEL ...`, `hv info`.

T:700 The CLI is a thin skin over hv.partition: parse, validate, build a
Partition, run it on this thread, and turn its end state into an exit status.
Every error is one line on stderr; nothing is started when the input is bad.

Exit statuses of `hv run`:
  the guest's own shutdown code   the guest powered off (0..255)
  2                               bad input or no usable engine: nothing started
  125                             the partition crashed (triple fault, hang,
                                  a crash the guest reported); a register dump
                                  goes to stderr
  74                              the console's output failed (e.g. disk full):
                                  guest output was lost
  130                             interrupted (Ctrl-C)
"""
import argparse
import os
import sys

EXIT_USAGE = 2
EXIT_CONSOLE_FAILED = 74        # EX_IOERR
EXIT_CRASHED = 125
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`hv: error: ...`) and exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"hv: error: {message} (see hv --help)\n")


def _add_run_options(run):
    run.add_argument("kernel", help="ELF image with a PVH entry note")
    run.add_argument("--mem", default="64M", help="guest RAM, e.g. 64M (default), 1G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--engine", default="auto",
                     help="execution engine: auto (default: KVM if hardware-accelerated, else TCG), kvm, tcg")
    run.add_argument("--deterministic", action="store_true",
                     help="TCG only: the clock counts guest instructions, so runs repeat exactly")
    run.add_argument("-v", "--verbose", action="store_true", help="report engine and exit details")
    run.add_argument("--disk", action="append", default=[], metavar="IMAGE[,ro]",
                     help="a virtio-blk disk on a raw image file (repeatable)")
    run.add_argument("--rng", action="store_true", help="a virtio-rng entropy device")
    run.add_argument("--vconsole", metavar="FILE|-|unix:NAME|unix:PATH",
                     help="a virtio-console: to FILE, stdout (-), or a Unix socket that "
                          "`hv console NAME` (or PATH) attaches to")
    run.add_argument("--net", metavar="MAC", action="append", default=[],
                     help="a virtio-net NIC on the partition's switch (repeatable)")


def _device_specs(args):
    """The same device dicts a config file holds (hv/config.py)."""
    specs = []
    for disk in args.disk:
        path, _, flag = disk.partition(",")
        if flag not in ("", "ro"):
            raise ValueError(f"bad --disk option {flag!r} (only ro)")
        specs.append({"type": "blk", "path": path, "readonly": flag == "ro"})
    if args.rng:
        specs.append({"type": "rng"})
    if args.vconsole:
        where = args.vconsole
        specs.append({"type": "console", "socket": where[5:]} if where.startswith("unix:")
                     else {"type": "console", "output": where})
    specs += [{"type": "net", "switch": "default", "mac": mac} for mac in args.net]
    return specs


def _parser():
    p = _Parser(prog="hv", description="hv: a paravirtualizing hypervisor")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot a PVH kernel in a new partition")
    _add_run_options(run)
    run.add_argument("--console", metavar="FILE", help="write the console to FILE instead of stdout")
    run.add_argument("--trace", metavar="FILE", help="write a decoded trace to FILE ('-' = stderr)")
    trace = sub.add_parser("trace", help="boot a kernel and print the decoded trace of what it did")
    _add_run_options(trace)
    trace.add_argument("--hypercall", action="append", metavar="NAME",
                       help="only these hypercalls (repeatable)")
    trace.add_argument("--vcpu", action="append", type=int, metavar="N", help="only this vCPU")
    trace.add_argument("--partition", action="append", type=int, metavar="ID",
                       help="only this partition")
    trace.add_argument("--insn", metavar="START:END",
                       help="TCG: also every instruction executed in [START, END] (hex), "
                            "disassembled with capstone if installed")
    up = sub.add_parser("up", help="start the partitions a TOML file describes, in one process")
    up.add_argument("config", help="TOML file with [[partition]] tables (see hv/config.py)")
    up.add_argument("-v", "--verbose", action="store_true")
    con = sub.add_parser("console", help="attach to a virtio-console's Unix socket")
    con.add_argument("socket", metavar="NAME|PATH",
                     help="a console name (--vconsole unix:NAME, `socket = \"NAME\"`) or a socket path")
    sub.add_parser("info", help="host capabilities: engines, ABI version")
    return p


def _error(message):
    print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args, tracer=None):
    from hv.config import check_device, make_devices
    from hv.console import Console
    from hv.devices.blk import DiskError
    from hv.loader import LoadError
    from hv.partition import CRASHED, HostError, Partition

    devices = []
    try:
        specs = _device_specs(args)
        for spec in specs:
            check_device(spec, "hv run")
        devices = make_devices(specs, {})
        part = Partition(args.kernel, mem=args.mem, cmdline=args.cmdline, engine=args.engine,
                         deterministic=args.deterministic, trace=tracer, devices=devices)
    except (LoadError, ValueError, HostError, DiskError, OSError) as e:
        for device in devices:
            device.close()
        return _error(str(e))
    # The console file is opened only once the kernel is known good.
    console = part.console
    try:
        if getattr(args, "console", None):
            console = part.console = Console(path=args.console)
        elif args.command == "trace":
            console = part.console = Console(stream=sys.stderr.buffer)
    except OSError as e:
        part.destroy()
        return _error(f"cannot open console file: {e.strerror}: {args.console}")
    try:
        if args.verbose:
            print(f"hv: partition {part.id}: engine {part.engine} ({part.engine_reason}), "
                  f"{part.mem_size >> 20} MiB, entry {part.image.entry:#x}", file=sys.stderr)
        # The vCPU runs on a thread of its own and this thread waits, so that
        # Ctrl-C reaches Python at once even while a TCG guest spins without
        # exits (Python runs signal handlers only on the main thread).
        part.start()
        state = part.wait()
        if args.verbose:
            counts = ", ".join(f"{k} {v}" for k, v in part.last_counters.items())
            print(f"hv: partition {part.id}: {state}; {counts}", file=sys.stderr)
        if state == CRASHED:
            print(f"hv: {part.crash_report}", file=sys.stderr)
            return EXIT_CRASHED
        if part.console_failed:
            return EXIT_CONSOLE_FAILED
        return part.exit_code
    except KeyboardInterrupt:
        print("hv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        part.destroy()
        console.close()


def cmd_info(args):
    from hv.abi import lib
    from hv.partition import ENGINES, choose_engine, engine_status

    print(f"hv ABI version {lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}")
    for name in ENGINES:
        ok, why = engine_status(name)
        print(f"engine {name}: {'available' if ok else 'unavailable: ' + why}")
    name, why = choose_engine("auto")
    print(f"engine auto: picks {name} ({why})")
    return 0


def cmd_run_traced(args):
    """`hv run --trace FILE`, or `hv trace` (trace on stdout, console on stderr)."""
    from hv.trace import Tracer

    if args.command == "trace":
        instructions = None
        if args.insn:
            try:
                start, end = (int(x, 16) for x in args.insn.split(":"))
            except ValueError:
                return _error(f"bad --insn {args.insn!r} (want START:END in hex)")
            instructions = (start, end)
            if args.engine == "auto":
                args.engine = "tcg"             # only TCG sees each instruction
        tracer = Tracer(sys.stdout, hypercalls=args.hypercall, vcpus=args.vcpu,
                        partitions=args.partition, keep=False, instructions=instructions)
        return cmd_run(args, tracer)
    try:
        out = sys.stderr if args.trace == "-" else open(args.trace, "w")
    except OSError as e:
        return _error(f"cannot open trace file: {e.strerror}: {args.trace}")
    try:
        return cmd_run(args, Tracer(out, keep=False))
    finally:
        if out is not sys.stderr:
            out.close()


def _run_command(args):
    if args.command == "trace" or args.trace:
        return cmd_run_traced(args)
    return cmd_run(args)


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
        return _error(str(e))
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


def cmd_console(args):
    """Relay a virtio-console socket to this terminal until it closes."""
    import selectors
    import socket

    from hv.devices.vconsole import console_socket_path

    path = console_socket_path(args.socket)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError as e:
        return _error(f"cannot attach to console {args.socket} ({path}): {e.strerror}")
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    stdin_open = True
    try:
        sel.register(sys.stdin, selectors.EVENT_READ)
    except (ValueError, PermissionError, OSError):
        stdin_open = False
    while True:
        for key, _ in sel.select():
            if key.fileobj is conn:
                data = conn.recv(4096)
                if not data:
                    return 0
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif stdin_open:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    sel.unregister(sys.stdin)
                    stdin_open = False
                else:
                    conn.sendall(data)


COMMANDS = {"run": _run_command, "trace": _run_command, "up": cmd_up,
            "console": cmd_console, "info": cmd_info}


def main(argv=None):
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)
