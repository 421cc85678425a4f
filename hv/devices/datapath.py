"""Which copy of the device data path a device runs: compiled or pure Python.

T:661 The per-request work -- guest-memory range checks and copies
(guestmem.py), the virtqueue walk (virtqueue.py), the block request path
(blk_io.py) and the network frame path (net_io.py) -- is one source per module, written in Cython's pure-Python
mode: C types in annotations and `cython.declare`, decorators such as
`@cython.cclass`, nothing that plain Python cannot run.  setup.py compiles
each file into hv.devices._<name>_compiled; the file itself, imported as
usual, is the pure-Python path.  There is no second copy to keep in step:
the reference-model tests (tests/test_virtqueue.py) run against both and
check that they behave the same, and tools/bench runs both in one run.

A device takes its copy when it is made (`BlkDevice(path, datapath="pure")`);
by default the compiled one where it is built, else the pure one.
HV_DATAPATH=pure|compiled in the environment changes the default.
"""
import importlib
import os

from hv.devices import blk_io, guestmem, net_io, virtqueue

COMPILED_MODULES = ("guestmem", "virtqueue", "blk_io", "net_io")
HERE = os.path.dirname(os.path.abspath(__file__))
# A development tree (a git checkout) can hold a compiled copy older than
# its source; an installed package cannot, since both come from one build.
IN_SOURCE_TREE = os.path.exists(os.path.join(HERE, "..", "..", ".git"))


class DataPath:
    """One copy of the data path: its name and its modules' classes."""

    def __init__(self, name, guestmem, virtqueue, blk_io, net_io):
        self.name = name
        self.GuestMemory = guestmem.GuestMemory
        self.SplitQueue = virtqueue.SplitQueue
        self.blk_io, self.net_io = blk_io, net_io

    def __repr__(self):
        return f"<DataPath {self.name}>"


def _load_compiled():
    """(the compiled DataPath, None) or (None, why it cannot be used)."""
    modules = {}
    for name in COMPILED_MODULES:
        try:
            mod = importlib.import_module(f"hv.devices._{name}_compiled")
        except ImportError as e:
            return None, f"hv.devices._{name}_compiled is not built ({e}; run `make build`)"
        source = os.path.join(HERE, f"{name}.py")
        if IN_SOURCE_TREE and os.path.getmtime(source) > os.path.getmtime(mod.__file__):
            return None, f"hv/devices/{name}.py changed since it was compiled (run `make build`)"
        modules[name] = mod
    return DataPath("compiled", **modules), None


PURE = DataPath("pure", guestmem, virtqueue, blk_io, net_io)
COMPILED, WHY_NOT_COMPILED = _load_compiled()


def select(name=None):
    """The DataPath called `name` ("compiled" or "pure"); None: HV_DATAPATH
    from the environment, else the compiled one where it is built."""
    name = name or os.environ.get("HV_DATAPATH") or ("compiled" if COMPILED else "pure")
    if name == "pure":
        return PURE
    if name == "compiled":
        if COMPILED is None:
            raise ValueError(f"the compiled device data path is not available: {WHY_NOT_COMPILED}")
        return COMPILED
    raise ValueError(f"unknown device data path {name!r} (compiled or pure)")
