"""`hv run KERNEL` and `hv trace KERNEL`: one partition, on this process.

The order matters and is the promise: parse and check every option, build
the devices and the partition (the kernel is loaded and checked), and only
then open the files the user named (--console, --trace), so bad input
leaves nothing behind -- no truncated trace, no created console file.
"""
import argparse
import json
import os
import re
import sys
import time

from hv.cli.common import (
    EXIT_CONSOLE_FAILED,
    EXIT_CRASHED,
    EXIT_STATUSES,
    EXIT_USAGE,
    add_log_options,
    error,
    interrupted,
    log,
)

EXIT_READER_GONE = 141          # 128 + SIGPIPE: `hv trace ... | head` ends like any filter


def add_run_options(run):
    run.add_argument("kernel", help="ELF image with a PVH entry note")
    run.add_argument("--mem", default="64M", help="guest RAM, e.g. 64M (default), 1G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--smp", type=int, default=1, metavar="N",
                     help="vCPUs (default 1); vCPU 0 boots, the guest brings the others up")
    run.add_argument("--initrd", metavar="FILE", help="initial RAM disk (PVH module 0), e.g. a cpio archive")
    run.add_argument("--engine", default="auto",
                     help="execution engine: auto (default: KVM if hardware-accelerated, else TCG), kvm, tcg")
    run.add_argument("--deterministic", action="store_true",
                     help="TCG only: the clock counts guest instructions, so runs repeat exactly")
    add_log_options(run)
    run.add_argument("--json", action="store_true",
                     help="end with one JSON line on stderr: the partition's state, exit code "
                          "and counters (or {\"error\": ...} for bad input)")
    run.add_argument("--metrics", metavar="FILE",
                     help="append the partition's counters to FILE as JSON lines, "
                          "every --metrics-interval seconds and once at the end")
    run.add_argument("--metrics-interval", type=float, default=1.0, metavar="SECONDS")
    run.add_argument("--disk", action="append", default=[], metavar="IMAGE[,ro]|path=IMAGE[,readonly=on]",
                     help="a virtio-blk disk on a raw image file or block device (repeatable); "
                          "in the key=value form a comma in the path is written ,,")
    run.add_argument("--rng", action="store_true", help="a virtio-rng entropy device")
    run.add_argument("--vconsole", metavar="FILE|-|unix:NAME|unix:PATH",
                     help="a virtio-console: to FILE, stdout (-), or a Unix socket that "
                          "`hv console NAME` (or PATH) attaches to")
    run.add_argument("--net", metavar="MAC", action="append", default=[],
                     help="a virtio-net NIC on the partition's switch (repeatable)")


def add_scheduler_options(run):
    """hv run's and hv trace's (hv create has --weight and --cap of its own)."""
    run.add_argument("--workers", type=int, metavar="N",
                     help="scheduler worker threads that run the vCPUs (default: one per host "
                          "CPU; a deterministic partition always runs on one)")
    run.add_argument("--weight", type=int, default=0, metavar="W",
                     help="the partition's scheduler weight, 1..65535 (default 256)")
    run.add_argument("--cap", type=int, default=0, metavar="PERCENT",
                     help="at most this percent of one host CPU (default 0: no cap)")


def add_parsers(sub):
    run = sub.add_parser("run", help="boot a PVH kernel in a new partition",
                         epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(run)
    add_scheduler_options(run)
    run.add_argument("--console", metavar="FILE", help="write the console to FILE instead of stdout")
    run.add_argument("--trace", metavar="FILE", help="write a decoded trace to FILE ('-' = stderr)")
    run.add_argument("--gdb", metavar="PORT|HOST:PORT|unix:PATH",
                     help="serve the GDB remote protocol here (docs/debugging.md)")
    run.add_argument("--gdb-wait", action="store_true",
                     help="with --gdb: hold the guest at its first instruction until GDB continues")
    run.set_defaults(func=cmd_run)
    trace = sub.add_parser("trace", help="boot a kernel and print the decoded trace of what it did",
                           epilog=EXIT_STATUSES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(trace)
    add_scheduler_options(trace)
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
    trace.set_defaults(func=cmd_run)


# ---- options -> device specs -------------------------------------------------------

def parse_disk(text):
    """--disk IMAGE[,ro] or --disk path=IMAGE[,readonly=on|off] (QEMU's
    key=value form, where ",," stands for a comma in the path)."""
    if not text.startswith("path="):
        path, _, flag = text.partition(",")
        if flag not in ("", "ro"):
            raise ValueError(f"bad --disk option {flag!r} (only ro: IMAGE[,ro], or "
                             "path=IMAGE[,readonly=on] for a path with a comma)")
        return {"type": "blk", "path": path, "readonly": flag == "ro"}
    fields = {}
    for field in re.split(r"(?<!,),(?!,)", text.replace(",,", "\0")):
        key, eq, value = field.partition("=")
        if not eq or key not in ("path", "readonly") or key in fields:
            raise ValueError(f"bad --disk field {field.replace(chr(0), ',')!r} "
                             "(path=IMAGE[,readonly=on|off])")
        fields[key] = value.replace("\0", ",")
    readonly = fields.get("readonly", "off")
    if readonly not in ("on", "off"):
        raise ValueError(f"bad --disk readonly={readonly} (on or off)")
    if not fields["path"]:
        raise ValueError("--disk path= is empty")
    return {"type": "blk", "path": fields["path"], "readonly": readonly == "on"}


def parse_vconsole(where):
    if where.startswith("unix:"):
        return {"type": "console", "socket": where[5:]}
    # "tcp:host:port" and friends are not files to create: refuse any scheme.
    scheme = re.match(r"([a-z][a-z0-9+.-]*):", where)
    if scheme:
        raise ValueError(f"--vconsole {where}: hv has no {scheme.group(1)!r} consoles (FILE, -, "
                         f"unix:NAME or unix:PATH; for a file of that name say ./{where})")
    return {"type": "console", "output": where}


def device_specs(args):
    """The same device dicts a config file holds (hv/config.py), checked as
    one partition of hv up is (a MAC used twice is refused)."""
    from hv.config import check_device, check_together

    specs = [parse_disk(disk) for disk in args.disk]
    if args.rng:
        specs.append({"type": "rng"})
    if args.vconsole:
        specs.append(parse_vconsole(args.vconsole))
    specs += [{"type": "net", "switch": "default", "mac": mac} for mac in args.net]
    for spec in specs:
        check_device(spec, "hv run")
    check_together([{"name": "hv run", "devices": specs}], declared={"default"})
    return specs


def trace_filters(args):
    """Check hv trace's filters: a name or a vCPU that cannot match is a
    mistake to report, not an empty trace."""
    from hv.abi import HYPERCALL_NAMES

    for name in args.hypercall or ():
        if name not in HYPERCALL_NAMES.values():
            raise ValueError(f"unknown hypercall {name!r} for --hypercall (known: "
                             f"{', '.join(sorted(HYPERCALL_NAMES.values()))})")
    vcpus = getattr(args, "smp", 1)
    for n in args.vcpu or ():
        if not 0 <= n < vcpus:
            raise ValueError(f"--vcpu {n}: the partition has vCPU 0" +
                             (f" to {vcpus - 1}" if vcpus > 1 else " only"))
    if args.insn:
        try:
            start, end = (int(x, 16) for x in args.insn.split(":"))
        except ValueError:
            raise ValueError(f"bad --insn {args.insn!r} (want START:END in hex)") from None
        if args.engine == "auto":
            args.engine = "tcg"             # only TCG sees each instruction
        return (start, end)
    return None


def counters_text(c):
    """hv run -v's last line: what the vCPU did and, on the scheduler, its
    time on the workers, its waits and its moves between them."""
    text = (f"vcpu 0: {c.get('exits', 0)} exits, {c.get('fast_hypercalls', 0)} fast and "
            f"{c.get('parent_hypercalls', 0)} parent hypercalls")
    if "run_ns" in c:
        text += (f"; ran {c['run_ns'] / 1e6:.3f} ms in {c['dispatches']} dispatches, "
                 f"waited {c['blocks']} times blocked and {c['parent_waits']} for the parent, "
                 f"{c['migrations']} migrations")
    return text


def run_scheduler(args):
    """--workers, --weight and --cap, checked; the scheduler to run on."""
    from hv.abi import lib
    from hv.scheduler import default_scheduler

    if args.workers is not None and not 1 <= args.workers <= lib.HV_SCHED_WORKERS_MAX:
        raise ValueError(f"--workers {args.workers}: 1..{lib.HV_SCHED_WORKERS_MAX}")
    if not 0 <= args.weight <= 65535:
        raise ValueError(f"--weight {args.weight}: 1..65535")
    if not 0 <= args.cap <= 100:
        raise ValueError(f"--cap {args.cap}: a percent, 0..100")
    if args.deterministic:
        if args.workers not in (None, 1):
            raise ValueError("--deterministic runs on one worker: --workers 1 or none")
        return None                 # Partition takes the deterministic scheduler
    return default_scheduler(args.workers)


# ---- the run ---------------------------------------------------------------------------

class Run:
    """One `hv run` / `hv trace`: what it opened, so that every way out
    (done, bad input, a crash, SIGINT, SIGTERM) closes the same things."""

    def __init__(self, args):
        self.args = args
        self.part = None
        self.devices = []
        self.tracer = None
        self.trace_out = None
        self.console = None
        self.metrics_out = None
        self.reader_gone = False
        self.views = False          # hv trace --format chrome / --plot: drawn after the run
        self.gdb = None             # hv.gdbstub.GdbStub with --gdb
        self.console_input = None   # hv.console_input.ConsoleInput: stdin to the UART

    def fail(self, message):
        if self.args.json:
            print(json.dumps({"error": message, "exit_status": EXIT_USAGE}), file=sys.stderr)
            return EXIT_USAGE
        return error(message)

    def build(self):
        """Everything the run needs, or an exception naming what is wrong."""
        from hv.config import make_devices
        from hv.partition import Partition
        from hv.trace import Tracer

        args = self.args
        specs = device_specs(args)
        if args.command == "trace":
            instructions = trace_filters(args)
            if args.plot:
                from hv.trace_plot import matplotlib_missing
                if matplotlib_missing():
                    raise ValueError(matplotlib_missing())
            self.views = args.format == "chrome" or bool(args.plot)    # they need the records
            self.tracer = Tracer(None, hypercalls=args.hypercall, vcpus=args.vcpu,
                                 partitions=args.partition, keep=self.views,
                                 instructions=instructions)
        elif args.trace:
            self.tracer = Tracer(None, keep=False)
        scheduler = run_scheduler(args)
        self.devices = make_devices(specs, {})
        self.part = Partition(args.kernel, mem=args.mem, cmdline=args.cmdline, engine=args.engine,
                              deterministic=args.deterministic, trace=self.tracer,
                              devices=self.devices, initrd=args.initrd, scheduler=scheduler,
                              weight=args.weight, cap=args.cap, smp=getattr(args, "smp", 1))
        if getattr(args, "gdb", None):
            from hv.gdbstub import GdbStub
            try:
                self.gdb = GdbStub(self.part, args.gdb, wait=args.gdb_wait)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot serve GDB at {args.gdb}: {e}") from None
            address = self.gdb.address
            address = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
            print(f"hv: gdb: target remote {address}", file=sys.stderr)
        self.open_outputs()

    def open_outputs(self):
        """The files the user named, now that the kernel is known good."""
        from hv.console import Console

        args = self.args
        if getattr(args, "console", None):
            try:
                self.console = self.part.console = Console(path=args.console)
            except OSError as e:
                raise ValueError(f"cannot open console file: {e.strerror}: {args.console}") from None
        elif args.command == "trace":
            self.console = self.part.console = Console(stream=sys.stderr.buffer)
        if self.tracer is not None:
            if args.command == "trace":
                self.trace_out = sys.stdout if args.format == "text" else None
            elif args.trace == "-":
                self.trace_out = sys.stderr
            else:
                try:
                    self.trace_out = open(args.trace, "w")      # noqa: SIM115 - closed in close()
                except OSError as e:
                    raise ValueError(f"cannot open trace file: {e.strerror}: {args.trace}") from None
            self.tracer.out = self.trace_out
            self.tracer.on_write_error = self.trace_failed
        if args.metrics:
            try:
                self.metrics_out = open(args.metrics, "a")      # noqa: SIM115 - closed in close()
            except OSError as e:
                raise ValueError(f"cannot open metrics file: {e.strerror}: {args.metrics}") from None

    def trace_failed(self, e):
        """On the vCPU thread: the trace cannot be written.  A reader that went
        away (`| head`) ends the run quietly; any other failure is one line,
        and the guest goes on without its trace."""
        if isinstance(e, BrokenPipeError) and self.trace_out is sys.stdout:
            self.reader_gone = True
            self.part.request_stop()
        else:
            where = self.args.trace if self.trace_out not in (sys.stdout, sys.stderr) else "stdout"
            log.warning("cannot write the trace to %s: %s; tracing stopped", where, e.strerror)

    def wait(self):
        """Wait for the end of the run, writing metrics lines meanwhile."""
        from hv.partition import RUNNING
        if self.metrics_out is None:
            return self.part.wait()
        while True:
            state = self.part.wait(self.args.metrics_interval)
            finished = self.part.finished or state not in (RUNNING, "paused")
            self.write_metrics()
            if finished:
                return state

    def write_metrics(self):
        line = json.dumps({"time": round(time.time(), 3), **self.part.metrics()})
        try:
            self.metrics_out.write(line + "\n")
            self.metrics_out.flush()
        except OSError as e:
            log.warning("cannot write metrics to %s: %s; metrics stopped", self.args.metrics,
                        e.strerror)
            self.metrics_out = None

    def status(self, state):
        """The exit status for how the run ended, and its report."""
        from hv.partition import CRASHED
        part = self.part
        if self.gdb is not None:
            self.gdb.finish()           # GDB hears how the guest ended
        if self.reader_gone:
            return EXIT_READER_GONE
        log.info("partition %d: %s; %s", part.id, state, counters_text(part.last_counters))
        if state == CRASHED:
            log.error("%s", part.crash_report)
            status = EXIT_CRASHED
        elif part.console_failed or (self.tracer is not None and self.tracer.write_error):
            status = EXIT_CONSOLE_FAILED
        else:
            status = part.exit_code
        if self.views and self.tracer.records:
            try:
                self.write_views()
            except BrokenPipeError:     # `| head`: the reader took what it wanted
                self.reader_gone = True
                return EXIT_READER_GONE
        if self.args.json:
            print(json.dumps({**part.metrics(), "exit_status": status}), file=sys.stderr)
        return status

    def write_views(self):
        """--format chrome (hv/trace_chrome.py) and --plot (hv/trace_plot.py)."""
        args = self.args
        name = os.path.basename(args.kernel)
        if args.format == "chrome":
            from hv.trace_chrome import write_chrome
            write_chrome(self.tracer, sys.stdout, process_name=name)
        if args.plot:
            from hv.trace_plot import plot
            plot(self.tracer.records, args.plot, title=f"hv trace {name}",
                 deterministic=args.deterministic)

    def close(self):
        """Stop and free everything; safe after a partial build()."""
        if self.console_input is not None:
            self.console_input.close()          # the terminal is itself again
        if self.part is not None:
            self.part.destroy()         # closes the devices
        else:
            for device in self.devices:
                device.close()
        for out in (self.trace_out, self.metrics_out):
            if out is not None and out not in (sys.stdout, sys.stderr):
                try:
                    out.close()
                except OSError:
                    pass                # reported when it first failed
        if self.console is not None:
            self.console.close()
        if self.reader_gone:
            # What is still buffered for stdout has nowhere to go: let the
            # interpreter's last flush write it to /dev/null, not raise.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def cmd_run(args):
    from hv.devices.blk import DiskError
    from hv.loader import LoadError
    from hv.partition import HostError

    run = Run(args)
    try:
        try:
            run.build()
        except (LoadError, ValueError, HostError, DiskError, OSError) as e:
            return run.fail(str(e))
        part = run.part
        log.info("partition %d: engine %s (%s), %d MiB, entry %#x", part.id, part.engine,
                 part.engine_reason, part.mem_size >> 20, part.image.entry)
        # The vCPU runs on a thread of its own and this thread waits, so that
        # Ctrl-C and SIGTERM reach Python at once even while a TCG guest spins
        # without exits (Python runs signal handlers only on the main thread).
        part.start()
        if args.command == "run":
            from hv.console_input import ConsoleInput
            run.console_input = ConsoleInput(part).start()      # stdin -> the guest's UART
        return run.status(run.wait())
    except KeyboardInterrupt as e:     # SIGINT, and SIGTERM (common.Terminated)
        status = interrupted(e)
        if args.json and run.part is not None:
            print(json.dumps({**run.part.metrics(), "exit_status": status}), file=sys.stderr)
        return status
    finally:
        run.close()
