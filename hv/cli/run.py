"""`hv run KERNEL` and `hv trace KERNEL`: one partition, on this process."""
import argparse
import os
import sys

from hv.cli.common import (
    EXIT_CONSOLE_FAILED,
    EXIT_CRASHED,
    EXIT_INTERRUPTED,
    EXIT_STATUSES,
    error,
)


def add_run_options(run):
    run.add_argument("kernel", help="ELF image with a PVH entry note")
    run.add_argument("--mem", default="64M", help="guest RAM, e.g. 64M (default), 1G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--initrd", metavar="FILE", help="initial RAM disk (PVH module 0), e.g. a cpio archive")
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


def device_specs(args):
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


def add_parsers(sub):
    run = sub.add_parser("run", help="boot a PVH kernel in a new partition",
                         epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(run)
    run.add_argument("--console", metavar="FILE", help="write the console to FILE instead of stdout")
    run.add_argument("--trace", metavar="FILE", help="write a decoded trace to FILE ('-' = stderr)")
    run.add_argument("--gdb", metavar="PORT|HOST:PORT|unix:PATH",
                     help="serve the GDB remote protocol here (docs/debugging.md)")
    run.add_argument("--gdb-wait", action="store_true",
                     help="with --gdb: hold the guest at its first instruction until GDB continues")
    run.set_defaults(func=run_command)
    trace = sub.add_parser("trace", help="boot a kernel and print the decoded trace of what it did",
                           epilog=EXIT_STATUSES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(trace)
    trace.add_argument("--hypercall", action="append", metavar="NAME",
                       help="only these hypercalls (repeatable)")
    trace.add_argument("--vcpu", action="append", type=int, metavar="N", help="only this vCPU")
    trace.add_argument("--partition", action="append", type=int, metavar="ID",
                       help="only this partition")
    trace.add_argument("--insn", metavar="START:END",
                       help="TCG: also every instruction executed in [START, END] (hex), "
                            "disassembled with capstone if installed")
    trace.add_argument("--format", choices=("text", "chrome"), default="text",
                       help="text (default), or chrome: Chrome trace-event JSON for Perfetto")
    trace.add_argument("--plot", metavar="FILE.png",
                       help="also draw a timeline of hypercalls and exits per vCPU (matplotlib)")
    trace.set_defaults(func=run_command)


def run_command(args):
    if args.command == "trace" or args.trace:
        return cmd_run_traced(args)
    return cmd_run(args)


def cmd_run(args, tracer=None):
    from hv.config import check_device, make_devices
    from hv.console import Console
    from hv.devices.blk import DiskError
    from hv.loader import LoadError
    from hv.partition import CRASHED, HostError, Partition

    devices = []
    try:
        specs = device_specs(args)
        for spec in specs:
            check_device(spec, "hv run")
        devices = make_devices(specs, {})
        part = Partition(args.kernel, mem=args.mem, cmdline=args.cmdline, engine=args.engine,
                         deterministic=args.deterministic, trace=tracer, devices=devices,
                         initrd=args.initrd)
    except (LoadError, ValueError, HostError, DiskError, OSError) as e:
        for device in devices:
            device.close()
        return error(str(e))
    stub = None
    if getattr(args, "gdb", None):
        from hv.gdbstub import GdbStub
        try:
            stub = GdbStub(part, args.gdb, wait=args.gdb_wait)
        except (OSError, ValueError) as e:
            part.destroy()
            return error(f"cannot serve GDB at {args.gdb}: {e}")
        print(f"hv: gdb: target remote {_gdb_address(stub.address)}", file=sys.stderr)
    # The console file is opened only once the kernel is known good.
    console = part.console
    try:
        if getattr(args, "console", None):
            console = part.console = Console(path=args.console)
        elif args.command == "trace":
            console = part.console = Console(stream=sys.stderr.buffer)
    except OSError as e:
        part.destroy()
        return error(f"cannot open console file: {e.strerror}: {args.console}")
    try:
        if args.verbose:
            print(f"hv: partition {part.id}: engine {part.engine} ({part.engine_reason}), "
                  f"{part.mem_size >> 20} MiB, entry {part.image.entry:#x}", file=sys.stderr)
        # The vCPU runs on a thread of its own and this thread waits, so that
        # Ctrl-C reaches Python at once even while a TCG guest spins without
        # exits (Python runs signal handlers only on the main thread).
        part.start()
        state = part.wait()
        if stub is not None:
            stub.finish()                   # GDB hears how the guest ended
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


def cmd_run_traced(args):
    """`hv run --trace FILE`, or `hv trace` (trace on stdout, console on stderr)."""
    from hv.trace import Tracer

    if args.command == "trace":
        instructions = None
        if args.insn:
            try:
                start, end = (int(x, 16) for x in args.insn.split(":"))
            except ValueError:
                return error(f"bad --insn {args.insn!r} (want START:END in hex)")
            instructions = (start, end)
            if args.engine == "auto":
                args.engine = "tcg"             # only TCG sees each instruction
        if args.plot:
            from hv.trace_plot import matplotlib_missing
            if matplotlib_missing():
                return error(matplotlib_missing())
        views = args.format == "chrome" or args.plot       # they need the records
        tracer = Tracer(sys.stdout if args.format == "text" else None, hypercalls=args.hypercall,
                        vcpus=args.vcpu, partitions=args.partition, keep=bool(views),
                        instructions=instructions)
        status = cmd_run(args, tracer)
        if views and tracer.records:
            _write_views(args, tracer)
        return status
    try:
        out = sys.stderr if args.trace == "-" else open(args.trace, "w")
    except OSError as e:
        return error(f"cannot open trace file: {e.strerror}: {args.trace}")
    try:
        return cmd_run(args, Tracer(out, keep=False))
    finally:
        if out is not sys.stderr:
            out.close()


def _gdb_address(address):
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def _write_views(args, tracer):
    """--format chrome (hv/trace_chrome.py) and --plot (hv/trace_plot.py)."""
    name = os.path.basename(args.kernel)
    if args.format == "chrome":
        from hv.trace_chrome import write_chrome
        write_chrome(tracer, sys.stdout, process_name=name)
    if args.plot:
        from hv.trace_plot import plot
        plot(tracer.records, args.plot, title=f"hv trace {name}", deterministic=args.deterministic)


def _run_command(args):
    if args.command == "trace" or args.trace:
        return cmd_run_traced(args)
    return cmd_run(args)
