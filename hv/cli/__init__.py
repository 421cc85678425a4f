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
from hv.cli import console, info, run, up
from hv.cli.common import Parser

# Each command's module adds its parser(s) and sets `func`; listed here, in
# the order `hv --help` shows them.
COMMAND_MODULES = (run, up, console, info)


def parser():
    p = Parser(prog="hv", description="hv: a paravirtualizing hypervisor")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    return args.func(args)
