"""Host side of the guests' XTF-style results (guests/lib/result.h, test.h).

A test kernel's console output ends with one result line -- ``SUCCESS``,
``SKIP: why``, ``ERROR: why`` or ``FAILURE: why`` -- and it shuts down with
the matching code.  The codes are read from guests/lib/result.h (the
``GUEST_RESULT_*`` #defines), never retyped here, so the guest library and
these helpers cannot drift apart.

    verdict, detail = parse_result(console_text)
    where = guest_location(detail)          # ("hcall-selftest/main.c", 42) or None
"""
import re

from hv.testing.paths import RESULT_H

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
# GUEST_ASSERT's "FAILURE: dir/file.c:42: expression"
_LOCATION = re.compile(r"^([\w./+-]+\.[chS]):(\d+):")


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


def guest_location(detail):
    """(file, line) a GUEST_ASSERT failure names at the start of its detail, or None."""
    m = _LOCATION.match(detail or "")
    return (m.group(1), int(m.group(2))) if m else None


def expected_code(verdict):
    """The shutdown code a guest uses with this verdict (result.h)."""
    return RESULT_CODES[verdict]


def qemu_exit_status(code):
    """QEMU's exit status when a guest writes code to isa-debug-exit."""
    return (code << 1) | 1
