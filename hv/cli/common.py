"""What every hv command shares: exit statuses, the one-line error, the parser."""
import argparse
import sys

# Exit statuses (listed in `hv --help` and the README).
EXIT_USAGE = 2
EXIT_CONSOLE_FAILED = 74        # EX_IOERR
EXIT_CRASHED = 125
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`hv: error: ...`) and exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"hv: error: {message} (see hv --help)\n")


def error(message):
    """One line on stderr; the status of bad input."""
    print(f"hv: error: {message}", file=sys.stderr)
    return EXIT_USAGE
