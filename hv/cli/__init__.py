"""The hv command: `hv run|trace|up|console|info ...`.

T:700 The CLI is a thin skin over hv.partition: parse, validate, build a
Partition, run it on this thread, and turn its end state into an exit status.
Every error is one line on stderr; nothing is started when the input is bad.

Exit statuses: see common.py (EXIT_STATUSES, shown by `hv --help`).
"""
import argparse

import hv
from hv.cli import console, control, info, run, serve, snapshot, up
from hv.cli.common import EXIT_STATUSES, Parser, handle_signals, setup_logging

# Each command's module adds its parser(s) and sets `func`; listed here, in
# the order `hv --help` shows them.
COMMAND_MODULES = (run, up, console, info, serve, control, snapshot)


def parser():
    p = Parser(prog="hv", description="hv: a paravirtualizing hypervisor",
               epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hv {hv.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    handle_signals()
    setup_logging(args)
    return args.func(args)
