"""What every hv command shares: exit statuses, the one-line error, the parser."""
import argparse
import sys

# Exit statuses (listed in `hv --help` and the README).
EXIT_USAGE = 2
EXIT_CONSOLE_FAILED = 74        # EX_IOERR
EXIT_CRASHED = 125
EXIT_INTERRUPTED = 130          # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143           # 128 + SIGTERM

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
    """One line on stderr; the status of bad input."""
    print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE
