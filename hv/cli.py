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
    sub.add_parser("info", help="host capabilities: engines, ABI version")
    return p


def _error(message):
    print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args, tracer=None):
    from hv.console import Console
    from hv.loader import LoadError
    from hv.partition import CRASHED, HostError, Partition

    try:
        part = Partition(args.kernel, mem=args.mem, cmdline=args.cmdline, engine=args.engine,
                         deterministic=args.deterministic, trace=tracer)
    except (LoadError, ValueError, HostError) as e:
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
        state = part.run()
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
        tracer = Tracer(sys.stdout, hypercalls=args.hypercall, vcpus=args.vcpu,
                        partitions=args.partition, keep=False)
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


COMMANDS = {"run": _run_command, "trace": _run_command, "info": cmd_info}


def main(argv=None):
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)
