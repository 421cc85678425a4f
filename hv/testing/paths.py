"""Where hv.testing finds the files it reads: the source tree hv runs from.

The guest library's result codes (guests/lib/result.h) and the ABI's doc
blocks (csrc/include/hv/abi.h) are read from the files themselves, never
retyped.  HV_GUEST_BUILD names another directory of built kernels.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_BUILD = os.environ.get("HV_GUEST_BUILD") or os.path.join(ROOT, "guests", "build")
# Copies the wheel carries (setup.py copies them at build time), for an
# installed hv that has no source tree beside it.
PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _tree_or_packaged(*parts):
    path = os.path.join(ROOT, *parts)
    return path if os.path.exists(path) else os.path.join(PACKAGED, parts[-1])


ABI_H = _tree_or_packaged("csrc", "include", "hv", "abi.h")
RESULT_H = _tree_or_packaged("guests", "lib", "result.h")


def guest_path(name):
    """<GUEST_BUILD>/<name>.elf, or a path given as is."""
    if os.sep in name or name.endswith(".elf"):
        return name
    return os.path.join(GUEST_BUILD, f"{name}.elf")
