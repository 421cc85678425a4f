"""The one record format of snapshot files and migration streams.

T:902 Modelled on Xen's migration stream v2 (the facts, not the code): a
header, then records until an END record.

    header   magic "HVSTATE\\n" (8 bytes) | version u32 | flags u32 | stream id u64
    record   type u32 | body length u32 | body | zero padding to 8 bytes

Bit 31 of a record's type marks it optional: a reader that does not know
an optional record skips it; an unknown mandatory record ends the restore
with an error before anything starts.  All integers are little-endian.
Every record body is laid out here, and only here: hv/snapshot.py and
hv/migrate.py speak in records, the C core only fills structs.
"""
import hashlib
import json
import os
import struct

MAGIC = b"HVSTATE\n"
VERSION = 1
HEADER = struct.Struct("<8sIIQ")
RECORD = struct.Struct("<II")
OPTIONAL = 1 << 31
ALIGN = 8
MAX_BODY = 1 << 30              # a record longer than this is corruption, not data

# Record types (append-only numbers).
END = 0
PARTITION = 1                   # the partition: engine, RAM size, clock, hv's guest state
VCPU = 2                        # one per vCPU: CPU registers and the core's pending work
MEMORY = 3                      # RAM is the raw file named here (snapshots)
PAGES = 4                       # RAM pages inline (migration): pfn list, then the pages
DEVICE = 5                      # one per virtio device: registers, queues, backend
VERIFY = 6                      # SHA-256 of every record before it
NAMES = {END: "end", PARTITION: "partition", VCPU: "vcpu", MEMORY: "memory", PAGES: "pages",
         DEVICE: "device", VERIFY: "verify"}


class FormatError(ValueError):
    """A stream or file that is not a state this hv can restore (one line)."""


# -- record bodies ----------------------------------------------------------
# PARTITION: fixed part, then foreign (hv-owned) RAM ranges as u64 pairs,
# the vCPU each event goes to (nevents bytes), the name and engine as UTF-8.
PARTITION_FIXED = struct.Struct("<QQQQQIIIIIII")
PARTITION_FIELDS = ("mem_size", "clock_ns", "instructions", "hypercall_page_gpa",
                    "event_page_gpa", "event_vector", "deterministic", "nvcpus", "nforeign",
                    "nevents", "name_len", "engine_len")

# VCPU: u32 id, u32 nmsrs, then u64 fields in this order.  Segments are
# ES CS SS DS FS GS LDTR TR, each (base, limit, selector, attrib).
REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
SEGMENT = ("base", "limit", "selector", "attrib")
NSEGMENTS = 8
CONTROL = ("gdt_base", "gdt_limit", "idt_base", "idt_limit",
           "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "xcr0",
           "interrupt_shadow", "injected_vector")
FPU = ("fcw", "fsw", "ftw", "fop", "fip", "fdp", "mxcsr")
PENDING = ("wait", "mc_active", "mc_gva", "mc_count", "mc_index",
           "timer_deadline", "inject_pending", "up")
SIGNED = {"injected_vector"}    # -1 = nothing in flight
VCPU_HEAD = struct.Struct("<II")
MSR = struct.Struct("<IIQ")     # index, 0, value
U64 = 1 << 64

# MEMORY: u64 size, then the file's name (relative to the snapshot's directory).
MEMORY_FIXED = struct.Struct("<Q")
# PAGES: u32 count, u32 0, count u64 pfns, then count pages of 4096 bytes.
PAGES_FIXED = struct.Struct("<II")
PAGE = 4096
# DEVICE: u32 slot, u32 device id, then the transport registers, queue
# positions and the backend's state as one JSON object (UTF-8): the
# backends are Python, and hv/devices/persist.py checks every field.
DEVICE_FIXED = struct.Struct("<II")


def _u64(value, name):
    return value % U64 if name in SIGNED else value


def _from_u64(value, name):
    return value - U64 if name in SIGNED and value >= 1 << 63 else value


def pack_vcpu(vcpu_id, cpu, pending):
    """A VCPU body from cffi structs hv_cpu_state and hv_vcpu_pending."""
    values = [getattr(cpu.regs, n) for n in REGS]
    for i in range(NSEGMENTS):
        values += [getattr(cpu.seg[i], n) for n in SEGMENT]
    values += [_u64(getattr(cpu, n), n) for n in CONTROL]
    values += [getattr(cpu.fpu, n) for n in FPU]
    values += [getattr(pending, n) for n in PENDING]
    body = [VCPU_HEAD.pack(vcpu_id, cpu.nmsrs), struct.pack(f"<{len(values)}Q", *values)]
    body += [MSR.pack(cpu.msr_index[i], 0, cpu.msr_value[i]) for i in range(cpu.nmsrs)]
    body += [bytes(cpu.fpu.st[i]) for i in range(8)] + [bytes(cpu.fpu.xmm[i]) for i in range(16)]
    return b"".join(body)


def _vcpu_scalars():
    names = [("regs", n) for n in REGS]
    for i in range(NSEGMENTS):
        names += [(("seg", i), n) for n in SEGMENT]
    names += [(None, n) for n in CONTROL] + [("fpu", n) for n in FPU]
    return names + [("pending", n) for n in PENDING]


VCPU_SCALARS = _vcpu_scalars()
VCPU_FIXED = VCPU_HEAD.size + 8 * len(VCPU_SCALARS)
FPU_ARRAYS = 8 * 16 + 16 * 16


def unpack_vcpu(body, cpu, pending, max_msrs):
    """Fill cffi structs from a VCPU body; returns the vCPU id."""
    if len(body) < VCPU_FIXED:
        raise FormatError(f"vcpu record is {len(body)} bytes, shorter than its fixed part")
    vcpu_id, nmsrs = VCPU_HEAD.unpack_from(body)
    if nmsrs > max_msrs or len(body) != VCPU_FIXED + nmsrs * MSR.size + FPU_ARRAYS:
        raise FormatError(f"vcpu record of {len(body)} bytes does not hold {nmsrs} MSRs")
    values = struct.unpack_from(f"<{len(VCPU_SCALARS)}Q", body, VCPU_HEAD.size)
    for (where, name), value in zip(VCPU_SCALARS, values):
        target = {"regs": cpu.regs, "fpu": cpu.fpu, "pending": pending, None: cpu}.get(where) \
            if not isinstance(where, tuple) else cpu.seg[where[1]]
        try:
            setattr(target, name, _from_u64(value, name))
        except OverflowError:
            raise FormatError(f"vcpu field {name} = {value:#x} is out of range") from None
    at = VCPU_FIXED
    cpu.nmsrs = nmsrs
    for i in range(nmsrs):
        index, _, value = MSR.unpack_from(body, at)
        cpu.msr_index[i], cpu.msr_value[i] = index, value
        at += MSR.size
    for i in range(8):
        cpu.fpu.st[i] = list(body[at:at + 16])
        at += 16
    for i in range(16):
        cpu.fpu.xmm[i] = list(body[at:at + 16])
        at += 16
    return vcpu_id


def pack_partition(fields, foreign, event_vcpu, name, engine):
    name_b, engine_b = name.encode(), engine.encode()
    values = dict(fields, nforeign=len(foreign), nevents=len(event_vcpu), name_len=len(name_b),
                  engine_len=len(engine_b))
    flat = [x for pair in foreign for x in pair]
    return (PARTITION_FIXED.pack(*(values[n] for n in PARTITION_FIELDS))
            + struct.pack(f"<{len(flat)}Q", *flat) + bytes(event_vcpu) + name_b + engine_b)


def unpack_partition(body):
    """(fields, foreign ranges, event vCPUs, name, engine) of a PARTITION body."""
    if len(body) < PARTITION_FIXED.size:
        raise FormatError("partition record is truncated")
    fields = dict(zip(PARTITION_FIELDS, PARTITION_FIXED.unpack_from(body)))
    at = PARTITION_FIXED.size
    n = fields["nforeign"]
    end = at + 16 * n + fields["nevents"] + fields["name_len"] + fields["engine_len"]
    if end != len(body):
        raise FormatError("partition record's lengths do not add up")
    flat = struct.unpack_from(f"<{2 * n}Q", body, at)
    at += 16 * n
    event_vcpu = body[at:at + fields["nevents"]]
    at += fields["nevents"]
    name = body[at:at + fields["name_len"]].decode(errors="replace")
    at += fields["name_len"]
    engine = body[at:end].decode(errors="replace")
    return fields, list(zip(flat[0::2], flat[1::2])), event_vcpu, name, engine


def pack_device(slot, device_id, state):
    return DEVICE_FIXED.pack(slot, device_id) + json.dumps(state, separators=(",", ":")).encode()


def unpack_device(body):
    """(slot, device id, the decoded JSON object) of a DEVICE body."""
    if len(body) < DEVICE_FIXED.size:
        raise FormatError("device record is truncated")
    slot, device_id = DEVICE_FIXED.unpack_from(body)
    try:
        state = json.loads(body[DEVICE_FIXED.size:].decode())
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"device record {slot}: its state is not JSON") from None
    if not isinstance(state, dict):
        raise FormatError(f"device record {slot}: its state is not a JSON object")
    return slot, device_id, state


# -- writing and reading streams ------------------------------------------
class Writer:
    """Records to a binary file object, with a running digest for VERIFY."""

    def __init__(self, out, stream_id=None):
        self.out = out
        self.digest = hashlib.sha256()
        sid = int.from_bytes(os.urandom(8), "little") if stream_id is None else stream_id
        self._emit(HEADER.pack(MAGIC, VERSION, 0, sid))

    def _emit(self, data):
        self.digest.update(data)
        self.out.write(data)

    def record(self, rtype, *parts):
        length = sum(len(p) for p in parts)
        self._emit(RECORD.pack(rtype, length))
        for p in parts:
            self._emit(p)
        pad = -length % ALIGN
        if pad:
            self._emit(bytes(pad))

    def finish(self):
        """VERIFY (the digest of everything before it), then END."""
        self.record(VERIFY, self.digest.digest())
        self.record(END)


class Reader:
    """Records from a binary file object: iterate (type, body) up to END,
    which is not yielded.  VERIFY is checked here; a missing END, a bad
    digest or a short read raise FormatError."""

    def __init__(self, inp, known=NAMES):
        self.inp = inp
        self.known = known
        self.digest = hashlib.sha256()
        head = self._read(HEADER.size, "header")
        magic, version, _flags, self.stream_id = HEADER.unpack(head)
        if magic != MAGIC:
            raise FormatError("not an hv state file (bad magic)")
        if version != VERSION:
            raise FormatError(f"state format version {version}; this hv reads version {VERSION}")
        self.verified = False

    def _read(self, n, what):
        data = self.inp.read(n) if n else b""
        if len(data) != n:
            raise FormatError(f"truncated: the {what} needs {n} bytes, {len(data)} remain")
        self.digest.update(data)
        return data

    def __iter__(self):
        while True:
            before = self.digest.digest()       # what a VERIFY record here must carry
            rtype, length = RECORD.unpack(self._read(RECORD.size, "record header"))
            kind = rtype & ~OPTIONAL
            if length > MAX_BODY:
                raise FormatError(f"record of {length} bytes: corrupted")
            body = self._read(length, f"{NAMES.get(kind, 'unknown')} record")
            if length % ALIGN:
                self._read(-length % ALIGN, "padding")
            if kind == END:
                if not self.verified:
                    raise FormatError("no verify record right before the end")
                return
            if kind == VERIFY:
                if body != before:
                    raise FormatError("verify digest mismatch: the state is corrupted")
                self.verified = True
                continue
            self.verified = False
            if kind not in self.known:
                if rtype & OPTIONAL:
                    continue
                raise FormatError(f"unknown mandatory record type {rtype:#x}")
            yield kind, body
