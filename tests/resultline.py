"""Host side of the guests' XTF-style results (guests/lib/result.h, test.h).

A test kernel's console output ends with one result line -- ``SUCCESS``,
``SKIP: why``, ``ERROR: why`` or ``FAILURE: why`` -- and it shuts down with
the matching code.  The codes are read from guests/lib/result.h (the
``GUEST_RESULT_*`` #defines), never retyped here, so the guest library and
these helpers cannot drift apart.

    verdict, detail = parse_result(console_text)
    run = boot("hcall-selftest")            # a GuestRun: state, exit_code, ...
    run.verdict, run.detail, run.expected_code
"""
import os
import re
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_H = os.path.join(ROOT, "guests", "lib", "result.h")
GUEST_BUILD = os.path.join(ROOT, "guests", "build")

#: The result words, in the order result.h lists them.
VERDICTS = ("SUCCESS", "SKIP", "ERROR", "FAILURE")

# "#define GUEST_RESULT_SKIP 3" (decimal or hex); the include guard
# GUEST_RESULT_H has no value and does not match.
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+GUEST_RESULT_([A-Z_]+)[ \t]+(0[xX][0-9a-fA-F]+|\d+)\b",
                     re.M)


def parse_result_codes(path=RESULT_H):
    """{'SUCCESS': 0, 'SKIP': 3, ...} from the GUEST_RESULT_* #defines of path."""
    with open(path) as f:
        text = f.read()
    # Comments may mention the names; only real #define lines count.
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    codes = {name: int(value, 0) for name, value in _DEFINE.findall(text)}
    missing = [v for v in VERDICTS if v not in codes]
    if missing:
        raise ValueError(f"{path}: no GUEST_RESULT_ define for {', '.join(missing)}")
    return codes


#: verdict word -> shutdown code, e.g. RESULT_CODES["SKIP"] == 3.
RESULT_CODES = parse_result_codes()
#: shutdown code -> verdict word.
CODE_VERDICTS = {code: word for word, code in RESULT_CODES.items()}

# "SUCCESS" alone (or with ": detail"), "SKIP: why", ...  A word must be the
# whole first token: "SUCCESSFUL" or "ERRORS: 3" are not result lines.
_RESULT_LINE = re.compile(r"^(%s)(?::\s?(.*)|\s*)$" % "|".join(VERDICTS))


def parse_result(text):
    """(verdict, detail) of the LAST result line in a console transcript.

    verdict is one of VERDICTS, detail the text after "WORD: " ('' for a
    bare SUCCESS).  (None, None) if no line is a result line.  Accepts str
    or bytes; CR LF line ends (a serial console) are fine.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode(errors="replace")
    for line in reversed(text.splitlines()):
        m = _RESULT_LINE.match(line.rstrip("\r"))
        if m:
            return m.group(1), (m.group(2) or "").rstrip()
    return None, None


def expected_code(verdict):
    """The shutdown code a guest uses with this verdict (result.h)."""
    return RESULT_CODES[verdict]


def qemu_exit_status(code):
    """QEMU's exit status when a guest writes code to isa-debug-exit."""
    return (code << 1) | 1


@dataclass
class GuestRun:
    """How one boot of a guest ended, as the parent partition saw it."""
    state: str
    exit_code: object          # int, or None if the guest never shut down
    console: str
    crash_report: object       # str when state == "crashed", else None

    @property
    def verdict(self):
        return parse_result(self.console)[0]

    @property
    def detail(self):
        return parse_result(self.console)[1]

    def describe(self):
        """Everything a failing assertion should show."""
        lines = [f"state={self.state} exit_code={self.exit_code}",
                 "console:", self.console.rstrip() or "(empty)"]
        if self.crash_report:
            lines += ["crash report:", self.crash_report]
        return "\n".join(lines)


def guest_path(name):
    """guests/build/<name>.elf, or a path given as is."""
    if os.sep in name or name.endswith(".elf"):
        return name
    return os.path.join(GUEST_BUILD, f"{name}.elf")


def boot(name, cmdline="", mem="64M", engine="kvm", timeout=None):
    """Boot a guest in this process through the Python API and return a GuestRun.

    run() executes on this thread unless timeout is given: then on a thread
    of its own via start()/wait(), and a guest still running after timeout
    seconds is destroyed and reported with state "timeout".  The Partition is
    destroyed before returning either way.
    """
    from hv.console import CaptureConsole
    from hv.partition import Partition

    console = CaptureConsole()
    part = Partition(guest_path(name), mem=mem, cmdline=cmdline, engine=engine,
                     console=console)
    try:
        if timeout is None:
            state = part.run()
        else:
            part.start()
            state = part.wait(timeout)
            if state in ("created", "running", "paused"):
                state = "timeout"
        return GuestRun(state=state, exit_code=part.exit_code, console=console.text(),
                        crash_report=part.crash_report)
    finally:
        part.destroy()


def boot_isolated(name, cmdline="", mem="64M", engine="kvm", timeout=60):
    """boot() in a forked child (a C-core crash or hang cannot take the test
    process with it); the GuestRun comes back through a pipe.

    A child killed by a signal or by the watchdog raises RuntimeError naming
    it (XTF's CRASH), so the caller's test fails with a clear message.
    """
    from conftest import fork_call
    kind, value = fork_call(boot, name, cmdline, mem, engine, timeout=timeout)
    if kind == "crash":
        raise RuntimeError(f"CRASH: booting {name} killed the parent process by {value}")
    if kind == "exc":
        raise RuntimeError(f"booting {name} raised in the child:\n{value}")
    return value
