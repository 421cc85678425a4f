"""hv's messages: one logger, "hv", for the library and the CLI alike.

A device that the guest broke, a console that failed, a stream that closed:
each says so once through `log.warning`, so the line reaches stderr as
`hv: ...` and, under the CLI, `--log-file` too (hv/cli/common.py replaces
the handlers below with its own at the -v level it was given).
"""
import logging
import sys

log = logging.getLogger("hv")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message is emitted, not when
    the handler was made (a CLI that redirected it, pytest's capture)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def stderr_handler(level):
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("hv: %(message)s"))
    handler.setLevel(level)
    return handler


if not log.handlers:                    # a library user: warnings and errors on stderr
    log.addHandler(stderr_handler(logging.WARNING))
    log.propagate = False
