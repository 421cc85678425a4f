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
PLATFORM = 7                    # the PC platform: UART, IOAPIC, RTC (absent: as reset)
LAPIC = 8                       # one per vCPU: its local APIC (absent: as reset)
NAMES = {END: "end", PARTITION: "partition", VCPU: "vcpu", MEMORY: "memory", PAGES: "pages",
         DEVICE: "device", VERIFY: "verify", PLATFORM: "platform", LAPIC: "lapic"}


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
# PLATFORM: the UART's nine byte registers (padded to 12), its transmit and
# receive lengths, the IOAPIC's select, id, pin levels and remote IRR bits,
# its 24 redirection entries, the RTC's index and 128 CMOS bytes; then the
# UART's transmit bytes and its receive bytes (oldest first).  Fields as
# struct hv_platform_snapshot names them; the core checks every value.
UART_REGS = ("uart_ier", "uart_lcr", "uart_mcr", "uart_scr", "uart_dll", "uart_dlm",
             "uart_fcr", "uart_thre_pending", "uart_line")
IOAPIC_REGS = ("ioapic_select", "ioapic_id", "ioapic_lines", "ioapic_remote_irr")
IOAPIC_PINS = 24
UART_BUFFER_MAX = 4096
PLATFORM_FIXED = struct.Struct(f"<9B3xII4I{IOAPIC_PINS}QB128s")
# LAPIC: u32 vCPU id, then struct hv_lapic_snapshot's fields in this order.
LAPIC_REGS = ("id", "tpr", "ldr", "dfr", "svr", "esr", "icr_low", "icr_high")
LAPIC_BODY = struct.Struct("<I8I6I2I2Q8I8I8I")


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


def pack_platform(snap):
    """A PLATFORM body from a cffi struct hv_platform_snapshot."""
    tx, rx = snap.uart_tx_len, snap.uart_rx_len
    return (PLATFORM_FIXED.pack(*(getattr(snap, n) for n in UART_REGS), tx, rx,
                                *(getattr(snap, n) for n in IOAPIC_REGS), *snap.ioapic_redir,
                                snap.rtc_index, bytes(snap.rtc_ram))
            + bytes(snap.uart_tx[0:tx]) + bytes(snap.uart_rx[0:rx]))


def unpack_platform(body, snap):
    """Fill a cffi struct hv_platform_snapshot from a PLATFORM body."""
    if len(body) < PLATFORM_FIXED.size:
        raise FormatError("platform record is truncated")
    values = PLATFORM_FIXED.unpack_from(body)
    nuart, nio = len(UART_REGS), len(IOAPIC_REGS)
    tx, rx = values[nuart:nuart + 2]
    if tx > UART_BUFFER_MAX or rx > UART_BUFFER_MAX or len(body) != PLATFORM_FIXED.size + tx + rx:
        raise FormatError(f"platform record: UART buffers of {tx} and {rx} bytes in a body "
                          f"of {len(body)}")
    for name, value in zip(UART_REGS, values):
        setattr(snap, name, value)
    snap.uart_tx_len, snap.uart_rx_len = tx, rx
    at = nuart + 2
    for name, value in zip(IOAPIC_REGS, values[at:at + nio]):
        setattr(snap, name, value)
    at += nio
    snap.ioapic_redir[0:IOAPIC_PINS] = list(values[at:at + IOAPIC_PINS])
    snap.rtc_index, ram = values[at + IOAPIC_PINS:]
    snap.rtc_ram[0:len(ram)] = list(ram)
    data = body[PLATFORM_FIXED.size:]
    snap.uart_tx[0:tx] = list(data[:tx])
    snap.uart_rx[0:rx] = list(data[tx:])


def pack_lapic(vcpu_id, snap):
    """A LAPIC body from a cffi struct hv_lapic_snapshot."""
    return LAPIC_BODY.pack(vcpu_id, *(getattr(snap, n) for n in LAPIC_REGS), *snap.lvt,
                           snap.timer_initial, snap.timer_divide, snap.timer_start,
                           snap.timer_deadline, *snap.irr, *snap.tmr, *snap.isr)


def unpack_lapic(body, snap):
    """Fill a cffi struct hv_lapic_snapshot from a LAPIC body; the vCPU id."""
    if len(body) != LAPIC_BODY.size:
        raise FormatError(f"lapic record is {len(body)} bytes, not {LAPIC_BODY.size}")
    values = LAPIC_BODY.unpack(body)
    vcpu_id, values = values[0], values[1:]
    for name, value in zip(LAPIC_REGS, values):
        setattr(snap, name, value)
    values = values[len(LAPIC_REGS):]
    snap.lvt[0:6] = list(values[:6])
    (snap.timer_initial, snap.timer_divide, snap.timer_start,
     snap.timer_deadline) = values[6:10]
    snap.irr[0:8], snap.tmr[0:8], snap.isr[0:8] = (list(values[10:18]), list(values[18:26]),
                                                   list(values[26:34]))
    return vcpu_id


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
