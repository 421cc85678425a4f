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


def _parser():
    p = _Parser(prog="hv", description="hv: a paravirtualizing hypervisor")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot a PVH kernel in a new partition")
    run.add_argument("kernel", help="ELF image with a PVH entry note")
    run.add_argument("--mem", default="64M", help="guest RAM, e.g. 64M (default), 1G")
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--engine", default="auto",
                     help="execution engine: auto (default: KVM if hardware-accelerated, else TCG), kvm, tcg")
    run.add_argument("--console", metavar="FILE", help="write the console to FILE instead of stdout")
    run.add_argument("-v", "--verbose", action="store_true", help="report engine and exit details")
    sub.add_parser("info", help="host capabilities: engines, ABI version")
    return p


def _error(message):
    print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_run(args):
    from hv.console import Console
    from hv.loader import LoadError
    from hv.partition import CRASHED, HostError, Partition

    try:
        console = Console(path=args.console)
    except OSError as e:
        return _error(f"cannot open console file: {e.strerror}: {args.console}")
    try:
        part = Partition(args.kernel, mem=args.mem, cmdline=args.cmdline,
                         engine=args.engine, console=console)
    except (LoadError, ValueError, HostError) as e:
        return _error(str(e))
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


COMMANDS = {"run": cmd_run, "info": cmd_info}


def main(argv=None):
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)
