"""The ABI as Python sees it: every value comes from csrc/include/hv/abi.h
through the compiler (cffi API mode in hv/_build_core.py), none is retyped.

T:150 Names for numbers.  The tables below are built from the compiled
extension's constants at import time, so a hypercall added to abi.h appears
here (and in traces and errors) without editing Python.
"""
import importlib
import os
import re

# HV_CORE=asan or coverage: an instrumented build of the same core
# (hv/_build_core.py, make test-asan / make coverage).
_core = importlib.import_module("hv._core" + (f"_{os.environ['HV_CORE']}"
                                             if os.environ.get("HV_CORE") else ""))
ffi, lib = _core.ffi, _core.lib

__all__ = ["ffi", "lib", "HYPERCALL_NAMES", "ERROR_NAMES", "error_name", "hypercall_name",
           "hypercall_args"]


def _table(pattern, skip=()):
    """{value: suffix} for every constant whose whole name matches pattern."""
    rx = re.compile(pattern)
    return {getattr(lib, n): m.group(1)
            for n in dir(lib) if (m := rx.fullmatch(n)) and n not in skip}


#: hypercall number -> name, e.g. 2 -> "console_write"
HYPERCALL_NAMES = {k: v.lower() for k, v in _table(r"HV_HC_(\w+)", skip=("HV_HC_COUNT",)).items()}
#: positive errno value -> name, e.g. 14 -> "EFAULT" (HV_E<LETTERS>, no underscore,
#: which leaves out HV_EXIT_*, HV_EVENT_*, HV_ENGINE_*, HV_E820_*)
ERROR_NAMES = _table(r"HV_(E[A-Z0-9]+)")


def hypercall_name(nr):
    return HYPERCALL_NAMES.get(nr, f"#{nr}")


def hypercall_args(nr):
    """Argument names of hypercall nr, from the core's dispatch table."""
    names = ffi.new("char *[1]")
    if lib.hv_hypercall_info(nr, ffi.cast("const char **", names)) == ffi.NULL:
        return ()
    text = ffi.string(names[0]).decode()
    return tuple(text.split(",")) if text else ()


def error_name(result):
    """-14 -> '-EFAULT'; other values as decimal."""
    if result < 0 and -result in ERROR_NAMES:
        return "-" + ERROR_NAMES[-result]
    return str(result)
