"""Decoded traces of what a partition did: hypercalls, hand-overs to the
parent, injected vectors, engine exits.

T:650 The core appends fixed-size records to a ring (csrc/trace.c); the
parent drains it each time the run call returns and turns records into
lines a student can read, names and argument names coming from the ABI:

    1.203 ms vcpu0 hypercall page placed at 0x10d000
    1.250 ms vcpu0 console_write(buf=0x101440, len=24) = 24 [parent] 'Hello from an hv guest!\n'
    1.300 ms vcpu0 shutdown(reason=0, code=0) [parent]

On a deterministic partition the time column is the instruction count.
"""
from hv.abi import error_name, ffi, hypercall_args, hypercall_name, lib

EXIT_NAMES = {
    lib.HV_TRACE_EXIT_HLT: "hlt",
    lib.HV_TRACE_EXIT_EXCEPTION: "exception",
    lib.HV_TRACE_EXIT_PORT: "port",
    lib.HV_TRACE_EXIT_MMIO: "mmio",
}
BATCH = 256


class Tracer:
    """Collects a partition's trace; writes decoded lines to `out` (a text
    stream) if given, and keeps the raw records in `self.records`.

    Filters (None = everything): hypercalls, a set of names; vcpus, a set of
    numbers; partitions, a set of partition ids."""

    def __init__(self, out=None, hypercalls=None, vcpus=None, partitions=None,
                 capacity=1 << 16, keep=True, instructions=None):
        self.out = out
        self.hypercalls = set(hypercalls) if hypercalls else None
        self.vcpus = set(vcpus) if vcpus else None
        self.partitions = set(partitions) if partitions else None
        self.capacity = capacity
        self.keep = keep
        self.instructions = instructions   # (start, end) guest addresses, TCG only
        self._disassembler = None
        self.records = []          # (kind, vcpu, nr, args tuple, result, time_ns)
        self.lines = []            # decoded lines, without the time column
        self.dropped = 0
        self._partition = None
        self._core = lambda: None  # the C partition while it exists (attach())
        self._pending = {}         # vcpu -> (nr, args, time) handed to the parent
        self._console = {}         # vcpu -> bytes of the pending console_write
        self._next_seq = 0
        self._buf = ffi.new("struct hv_trace_record[]", BATCH)
        self.write_error = None    # the OSError that stopped the output, if one did
        self.on_write_error = None # fn(OSError), called once, on the thread that wrote

    def attach(self, partition, core):
        """Trace partition; core() is its C partition, None once destroyed
        (the partition hands it over: the tracer reads the core's ring)."""
        err = lib.hv_partition_trace_enable(core(), self.capacity)
        if err:
            raise ValueError(f"cannot enable tracing: error {err}")
        if self.instructions is not None:
            start, end = self.instructions
            if lib.hv_partition_trace_instructions(core(), start, end):
                raise ValueError("an instruction trace needs the tcg engine and start <= end")
        self._partition, self._core = partition, core
        self.deterministic = getattr(partition, "deterministic", False)

    # -- fed by the partition ----------------------------------------------
    def console(self, data):
        """The bytes of the console_write being handed to the parent."""
        vcpu = max(self._pending, key=lambda v: self._pending[v][2], default=0)
        self._console[vcpu] = data

    def drain(self):
        p = self._core()
        while p is not None:
            n = lib.hv_partition_trace_read(p, self._buf, BATCH)
            for i in range(n):
                self._record(self._buf[i])
            if n < BATCH:
                break

    def finish(self):
        self.drain()
        for vcpu, (nr, args, t) in sorted(self._pending.items()):
            self._emit(t, vcpu, nr, self._call(nr, args) + " [parent]")
        self._pending.clear()
        if self.dropped:
            self._write(f"... {self.dropped} trace records dropped (ring full)")
        if self.out is not None and self.write_error is None:
            try:
                self.out.flush()        # a full disk shows here, not at exit
            except OSError as e:
                self._failed(e)

    # -- decoding ------------------------------------------------------------
    def _record(self, r):
        if r.seq != self._next_seq:
            self.dropped += r.seq - self._next_seq
        self._next_seq = r.seq + 1
        args = tuple(r.args)
        if self.keep:
            self.records.append((r.kind, r.vcpu, r.nr, args, r.result, r.time_ns))
        kind, vcpu, t = r.kind, r.vcpu, r.time_ns
        if kind == lib.HV_TRACE_HYPERCALL:
            self._emit(t, vcpu, r.nr, f"{self._call(r.nr, args)} = {error_name(r.result)}")
        elif kind == lib.HV_TRACE_TO_PARENT:
            self._pending[vcpu] = (r.nr, args, t)
        elif kind == lib.HV_TRACE_COMPLETE:
            nr, args, t0 = self._pending.pop(vcpu, (r.nr, (0,) * 5, t))
            text = self._console.pop(vcpu, None)
            extra = f" {text.decode(errors='replace')[:72]!r}" if text is not None else ""
            self._emit(t0, vcpu, nr, f"{self._call(nr, args)} = {error_name(r.result)} [parent]{extra}")
        elif kind == lib.HV_TRACE_INJECT:
            self._emit(t, vcpu, None, f"inject vector {r.nr:#x}")
        elif kind == lib.HV_TRACE_PAGE:
            self._emit(t, vcpu, None, f"hypercall page placed at {args[0]:#x}")
        elif kind == lib.HV_TRACE_EXIT:
            self._emit(t, vcpu, None, self._exit(r.nr, args))
        elif kind == lib.HV_TRACE_INSN:
            code = (args[0].to_bytes(8, "little") + args[1].to_bytes(8, "little"))[:r.result]
            self._emit(t, vcpu, None, f"{r.nr:#x}: {self._disassemble(code, r.nr, bool(args[2]))}")

    def _disassemble(self, code, address, long_mode):
        """capstone (pip install capstone) if it is there; the bytes if not."""
        if self._disassembler is None:
            try:
                import capstone
                self._disassembler = {
                    True: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64),
                    False: capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)}
            except ImportError:
                self._disassembler = False
        if self._disassembler:
            for insn in self._disassembler[long_mode].disasm(code, address):
                return f"{insn.mnemonic} {insn.op_str}".strip()
        return code.hex(" ")

    @staticmethod
    def _call(nr, args):
        names = hypercall_args(nr)
        # Addresses in hex, counts and numbers in decimal.
        shown = ", ".join(f"{n}={v:#x}" if v >= 1 << 16 or n in ("buf", "page", "calls") and v
                          else f"{n}={v}" for n, v in zip(names, args))
        return f"{hypercall_name(nr)}({shown})"

    @staticmethod
    def _exit(kind, args):
        name = EXIT_NAMES.get(kind, f"exit {kind}")
        if kind == lib.HV_TRACE_EXIT_HLT:
            return f"hlt at rip={args[0]:#x}"
        if kind == lib.HV_TRACE_EXIT_EXCEPTION:
            return f"exception vector {args[0]} at rip={args[1]:#x}"
        if kind in (lib.HV_TRACE_EXIT_PORT, lib.HV_TRACE_EXIT_MMIO):
            where, value, size, write = args[:4]
            direction = f"write {value:#x}" if write else "read"
            return f"{name} {where:#x} {direction} ({size} bytes)"
        return name

    def _emit(self, t, vcpu, nr, text):
        if self.vcpus is not None and vcpu not in self.vcpus:
            return
        if self.hypercalls is not None and (nr is None or hypercall_name(nr) not in self.hypercalls):
            return
        if self.partitions is not None and self._partition.id not in self.partitions:
            return
        line = f"p{self._partition.id} vcpu{vcpu} {text}"
        self.lines.append(line)
        stamp = f"{t:>12} insn" if self.deterministic else f"{t / 1e6:>10.3f} ms"
        self._write(f"{stamp} {line}")

    def _write(self, line):
        if self.out is not None and self.write_error is None:
            try:
                self.out.write(line + "\n")
            except OSError as e:
                self._failed(e)

    def _failed(self, e):
        """The trace cannot be written (a closed pipe, a full disk): stop
        writing it, and tell whoever asked (the CLI decides what follows)."""
        self.write_error = e
        if self.on_write_error is not None:
            self.on_write_error(e)
