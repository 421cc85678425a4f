"""What every hv command shares: exit statuses, the one-line error, the parser."""
import argparse
import logging
import signal
import sys

# Exit statuses (listed in `hv --help` and the README).
EXIT_USAGE = 2
EXIT_CONSOLE_FAILED = 74        # EX_IOERR
EXIT_CRASHED = 125
EXIT_INTERRUPTED = 130          # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143           # 128 + SIGTERM

from hv.log import log, stderr_handler

EXIT_STATUSES = f"""\
exit statuses of hv run / trace / up:
  0..255  the guest's own shutdown code (hv up: the first non-zero one)
  {EXIT_USAGE:<6}  bad input or no usable engine: one `hv: error:` line, nothing started
  {EXIT_CONSOLE_FAILED:<6}  the console's output failed (e.g. disk full): guest output was lost
  {EXIT_CRASHED:<6}  a partition crashed: a register dump follows on stderr
  {EXIT_INTERRUPTED:<6}  interrupted (SIGINT, Ctrl-C)
  {EXIT_TERMINATED:<6}  terminated (SIGTERM)
A guest may itself shut down with any of these codes: to tell them apart, add
--json (the last stderr line is a JSON report whose "state" is "shutdown"
only when the guest powered off, with its "exit_code"; hv's own bad input
gives {{"error": ...}} instead), or -v (a `hv: partition N: shutdown` line)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`hv: error: ...`) and exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"hv: error: {message} (see hv --help)\n")


def error(message):
    """One line on stderr (and in the log file); the status of bad input."""
    if log.handlers:
        log.error("error: %s", message)
    else:
        print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---- signals ------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, docker, timeout), raised on the main thread the way
    SIGINT raises KeyboardInterrupt, so each command's Ctrl-C path -- stop
    the partitions, flush consoles and traces, remove sockets, release disk
    locks -- serves both."""


def _raise_terminated(signum, frame):
    raise Terminated()


def handle_signals():
    signal.signal(signal.SIGTERM, _raise_terminated)


def interrupted(exc):
    """One line on stderr and the exit status for a SIGINT or SIGTERM.  A
    second signal during the cleanup that follows ends hv at once."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if isinstance(exc, Terminated):
        print("hv: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    print("hv: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


# ---- logging --------------------------------------------------------------------


def add_log_options(parser):
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="report what hv does on stderr: -v engine and exit details, "
                             "-vv also each step")
    parser.add_argument("--log-file", metavar="FILE",
                        help="also write hv's messages, time-stamped, at every level, to FILE")


def setup_logging(args):
    """hv's messages: `hv: ...` lines on stderr at the -v level (warnings
    and errors always), and everything, time-stamped, in --log-file."""
    log.handlers.clear()
    log.setLevel(logging.DEBUG)
    log.propagate = False
    verbose = getattr(args, "verbose", 0)
    log.addHandler(stderr_handler(logging.DEBUG if verbose >= 2 else
                                  logging.INFO if verbose else logging.WARNING))
    if getattr(args, "log_file", None):
        try:
            handler = logging.FileHandler(args.log_file)
        except OSError as e:
            raise SystemExit(error(f"cannot open log file: {e.strerror}: {args.log_file}"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
