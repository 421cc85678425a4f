"""Drive the C core without a guest: a partition on the 'none' engine, whose
vCPU registers live in memory, and hv_test_dispatch() into the real
dispatcher (the same code the run loop calls on a hypercall trap).

    core = Core(4 << 20)
    core.call(lib.HV_HC_VERSION)          # -> (result, None)
    core.call(lib.HV_HC_CONSOLE_WRITE, 0x5000, 4)   # -> (None, HV_EXIT_HYPERCALL): the parent's turn
    core.complete(4)
"""
import re

from hv.abi import ffi, lib
from hv.testing.paths import ABI_H

ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8")


def documented_errors(path=ABI_H):
    """{hypercall number: set of documented negative errors} from abi.h's doc blocks."""
    with open(path) as f:
        text = f.read()
    out = {}
    for block, name in re.findall(r"(/\* HC \w+:.*?\*/)\s*#define (HV_HC_\w+)", text, re.S):
        errs = re.search(r"errors:(.*)", block).group(1)
        out[getattr(lib, name)] = {-getattr(lib, "HV_" + e) for e in re.findall(r"-HV_(E\w+)", errs)}
    return out


class Core:
    """One partition + vCPU on the 'none' engine (vcpus > 1: an SMP
    partition; calls are made on vCPU 0, the others stay down)."""

    def __init__(self, mem_size=4 << 20, vcpus=1):
        pp = ffi.new("struct hv_partition **")
        assert lib.hv_partition_create(lib.HV_ENGINE_NONE, mem_size, pp) == 0
        self.p = pp[0]
        assert lib.hv_partition_set_vcpus(self.p, vcpus) == 0
        self.vcpus = []
        for i in range(vcpus):
            vv = ffi.new("struct hv_vcpu **")
            assert lib.hv_vcpu_create(self.p, i, vv) == 0
            self.vcpus.append(vv[0])
        self.v = self.vcpus[0]
        self.mem_size = mem_size
        self.ram = memoryview(ffi.buffer(lib.hv_partition_ram(self.p), mem_size))
        lib.hv_partition_reserve(self.p, 0, 0x1000)           # page 0: the boot GDT
        assert lib.hv_vcpu_set_pvh_entry(self.v, 0x100000, 0x1000) == 0   # paging off: gva == gpa
        self.regs = ffi.new("struct hv_regs *")
        self.exit = ffi.new("struct hv_exit *")

    def close(self):
        lib.hv_partition_destroy(self.p)     # destroys the vCPU too

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, nr, *args):
        """Dispatch one hypercall.  Returns (result, exit_kind or None):
        exit_kind is set when the parent must finish the call."""
        self.regs.rax = nr
        for reg, val in zip(ARG_REGS, list(args) + [0] * (5 - len(args))):
            setattr(self.regs, reg, val)
        done = lib.hv_test_dispatch(self.v, self.regs, self.exit)
        assert done in (0, 1), done
        if done:
            return int(ffi.cast("int64_t", self.regs.rax)), None
        return None, self.exit.kind

    def complete(self, result):
        assert lib.hv_vcpu_complete(self.v, result) == 0

    def resume(self):
        """Continue a suspended multicall (what the run loop does)."""
        done = lib.hv_test_dispatch(self.v, self.regs, self.exit)
        if done:
            return int(ffi.cast("int64_t", self.regs.rax)), None
        return None, self.exit.kind

    def digest(self):
        return lib.hv_test_state_digest(self.v)

    def set_paging(self, cr3, cr0=0x80010011, cr4=0x20, efer=0xD00):
        s = ffi.new("struct hv_sregs *")
        lib.hv_vcpu_get_sregs(self.v, s)
        s.cr0, s.cr3, s.cr4, s.efer = cr0, cr3, cr4, efer
        lib.hv_vcpu_set_sregs(self.v, s)
