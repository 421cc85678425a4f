"""A stateful reference model of the hypercall ABI (csrc/include/hv/abi.h),
in Python, short enough to read next to the doc blocks it follows.

It is an oracle: hv's own suite checks the C dispatcher against it call by
call (tests/test_testing_model.py), and a user who adds a hypercall adds it
here too, by subclassing -- the table is a plain dict, as the C one is:

    class MyModel(AbiModel):
        def hc_answer(self, args):                # args: the five raw words
            return 42 if args[0] == 0 else -lib.HV_EINVAL
        HYPERCALLS = {**AbiModel.HYPERCALLS, MY_HC_ANSWER: hc_answer}

    m = MyModel(GuestMemory(ram, reserved=[(0, 0x1000)]))
    m.call(lib.HV_HC_CONSOLE_WRITE, 0x5000, 4)    # -> 4; m.console == the bytes
    m.call(lib.HV_HC_SHUTDOWN, 0, 3)              # -> None; m.shutdown == (0, 3)

What it leaves out, on purpose: time (clock_read returns the model's own
counter, a timer never fires by itself -- call fire_timer()), interrupt
delivery (events only set pending bits and upcall_pending) and other vCPUs
(the SMP calls are modelled for a partition of one vCPU, which is up).
"""
import struct

from hv.abi import lib
from hv.testing.pagetables import NXE, WP, WRITE, walk

PAGE = lib.HV_PAGE_SIZE
ENTRY = struct.Struct("<Q5Qq")           # struct hv_multicall_entry
GRANT_SEG = struct.Struct("<QIIHHHHiI")  # struct hv_grant_copy_seg
GRANT_SEG_STATUS = 24                    # offsetof(struct hv_grant_copy_seg, status)
FEATURES = (lib.HV_FEATURE_EVENTS | lib.HV_FEATURE_TIMER | lib.HV_FEATURE_MULTICALL
            | lib.HV_FEATURE_CLOCK | lib.HV_FEATURE_CHANNELS | lib.HV_FEATURE_SMP)
TIMER_MAX = 1 << 62                       # event.c clamps deadlines here
CR0_PG, CR0_WP, EFER_NXE = 1 << 31, 1 << 16, 1 << 11


class GuestMemory:
    """What the model knows of a guest's memory: its RAM, the frames hv keeps
    for itself (reserved: (gpa, length) pairs, like LoadedImage.reserved),
    and how the caller's addresses translate (cr3=None: paging off, gva ==
    gpa; else 4-level long-mode paging from cr3, supervisor accesses)."""

    def __init__(self, ram, reserved=(), cr3=None, cr0=CR0_PG | CR0_WP, efer=EFER_NXE):
        self.ram = ram
        self.size = len(ram)
        self.cr3 = cr3
        self.flags = (NXE if efer & EFER_NXE else 0) | (WP if cr0 & CR0_WP else 0)
        self.foreign = set()
        for gpa, length in reserved:
            self.foreign.update(range(gpa // PAGE, (gpa + length - 1) // PAGE + 1))

    def owned(self, gpa, length):
        """The partition's own RAM (memory.c: partition_frame_is_guest)."""
        if length == 0:
            return gpa <= self.size
        if gpa >= self.size or length > self.size - gpa:
            return False
        return not any(f in self.foreign for f in range(gpa // PAGE, (gpa + length - 1) // PAGE + 1))

    def translate(self, gva, access=0):
        if self.cr3 is None:
            return gva
        return walk(self.read_qword, lambda gpa: self.owned(gpa, 8), self.cr3, gva, access,
                    self.flags)

    def read_qword(self, gpa):
        return struct.unpack_from("<Q", self.ram, gpa)[0]

    def pieces(self, gva, length, access=0):
        """[(gpa, n)] covering [gva, gva+length) page by page, or None if any
        page faults or is not the guest's (all or nothing, like pagewalk.c)."""
        if gva + length >= 1 << 64 and length:
            return None                       # wraps around
        out = []
        while length:
            n = min(length, PAGE - gva % PAGE)
            gpa = self.translate(gva, access)
            if gpa is None or not self.owned(gpa, n):
                return None
            out.append((gpa, n))
            gva, length = gva + n, length - n
        return out

    def read(self, gva, length):
        pieces = self.pieces(gva, length)
        return None if pieces is None else b"".join(bytes(self.ram[a:a + n]) for a, n in pieces)

    def write(self, gva, data):
        pieces = self.pieces(gva, len(data), WRITE)
        if pieces is None:
            return False
        at = 0
        for gpa, n in pieces:
            self.ram[gpa:gpa + n] = data[at:at + n]
            at += n
        return True


class AbiModel:
    """The partition-wide state a hypercall can see or change, and one
    method per hypercall.  call() returns the result (>= 0 or -HV_E*), or
    None when the call stopped the partition (then self.shutdown is set)."""

    def __init__(self, memory, partition_id=1):
        self.memory = memory
        self.partition_id = partition_id  # what HV_HC_PARTITION_ID answers
        self.grant_table = None         # (gpa, count) once registered
        self.event_page = None          # gpa of the registered page
        self.event_vector = None
        self.deadline = 0               # the one-shot timer, 0 = off
        self.console = b""              # everything console_write wrote
        self.shutdown = None            # (reason, code) once stopped
        self.blocked = False            # the last call was a block that sleeps
        self.clock = 0                  # the model's clock: +1 per read

    # -- the dispatcher --------------------------------------------------
    def call(self, nr, *args, in_multicall=False):
        args = tuple(args) + (0,) * (5 - len(args))
        self.blocked = False
        handler = self.HYPERCALLS.get(nr)
        if handler is None:
            return -lib.HV_ENOSYS
        if in_multicall and nr in (lib.HV_HC_MULTICALL, lib.HV_HC_BLOCK):
            return -lib.HV_EOPNOTSUPP    # bounded work per trap, no sleeping mid-batch
        return handler(self, args)

    # -- the hypercalls, in abi.h's order ---------------------------------
    def hc_version(self, args):
        return (lib.HV_ABI_VERSION_MAJOR << 16) | lib.HV_ABI_VERSION_MINOR

    def hc_features(self, args):
        return FEATURES if args[0] == 0 else -lib.HV_EINVAL

    def hc_console_write(self, args):
        buf, length = args[0], args[1]
        if length > lib.HV_CONSOLE_WRITE_MAX:
            return -lib.HV_EINVAL
        data = self.memory.read(buf, length)
        if data is None:
            return -lib.HV_EFAULT
        self.console += data
        return length

    def hc_yield(self, args):
        return 0

    def hc_block(self, args):
        if self.event_page is None:
            return -lib.HV_EPERM        # nothing could ever wake it
        self.blocked = not self.any_pending()
        return 0

    def hc_shutdown(self, args):
        reason, code = args[0], args[1]
        if reason not in (lib.HV_SHUTDOWN_POWEROFF, lib.HV_SHUTDOWN_CRASH) or code > 255:
            return -lib.HV_EINVAL
        self.shutdown = (reason, code)
        return None

    def hc_clock_read(self, args):
        self.clock += 1
        return self.clock

    def hc_set_timer(self, args):
        self.deadline = min(args[0], TIMER_MAX)
        return 0

    def hc_event_register(self, args):
        page, vector = args[0], args[1]
        if page % PAGE or not lib.HV_VECTOR_MIN <= vector <= 255:
            return -lib.HV_EINVAL
        if not self.memory.owned(page, PAGE):
            return -lib.HV_EFAULT
        self.event_page, self.event_vector = page, vector
        return 0

    def hc_event_raise(self, args):
        event = args[0]
        if event >= lib.HV_EVENTS_MAX:
            return -lib.HV_EINVAL
        if self.event_page is None:
            return -lib.HV_EPERM
        self.raise_event(event)
        return 0

    def hc_multicall(self, args):
        calls, count = args[0], args[1]
        if count > lib.HV_MULTICALL_MAX:
            return -lib.HV_E2BIG
        if self.memory.pieces(calls, count * ENTRY.size, WRITE) is None \
                or self.memory.pieces(calls, count * ENTRY.size) is None:
            return -lib.HV_EFAULT       # checked before any entry runs
        for i in range(count):
            at = calls + i * ENTRY.size
            raw = self.memory.read(at, ENTRY.size)
            if raw is None:             # an entry unmapped the array
                return -lib.HV_EFAULT
            op, *eargs, _ = ENTRY.unpack(raw)
            result = self.call(op, *eargs, in_multicall=True)
            if result is None:
                return None             # a shutdown entry ended the partition
            if not self.memory.write(at + ENTRY.size - 8, struct.pack("<q", result)):
                return -lib.HV_EFAULT
        return 0

    # -- a partition alone: no peer is permitted, so no port is ever made
    #    (tests/models/channels.py models several partitions talking) ----
    def hc_partition_id(self, args):
        return self.partition_id

    def hc_evtchn_alloc_unbound(self, args):
        return -lib.HV_EINVAL if args[0] == self.partition_id else -lib.HV_EPERM

    hc_evtchn_bind_interdomain = hc_evtchn_alloc_unbound

    def hc_evtchn_no_port(self, args):       # send, close, bind_vcpu: no port is allocated
        return -lib.HV_EINVAL

    def hc_evtchn_status(self, args):
        port, out = args[0], args[1]
        if port >= lib.HV_EVTCHN_PORTS:
            return -lib.HV_EINVAL
        state = lib.HV_EVTCHN_RESERVED if port < lib.HV_EVTCHN_FIRST else lib.HV_EVTCHN_FREE
        if not self.memory.write(out, struct.pack("<4I", state, 0, 0, 0)):
            return -lib.HV_EFAULT
        return 0

    def hc_grant_table_register(self, args):
        table, count = args[0], args[1]
        if count > lib.HV_GRANT_REFS_MAX:
            return -lib.HV_E2BIG
        if table % 8:
            return -lib.HV_EINVAL
        if count and not self.memory.owned(table, count * 8):
            return -lib.HV_EFAULT
        self.grant_table = (table, count) if count else None
        return 0

    def hc_grant_copy(self, args):
        segs, count = args[0], args[1]
        if count > lib.HV_GRANT_COPY_MAX:
            return -lib.HV_E2BIG
        if self.memory.pieces(segs, count * GRANT_SEG.size) is None \
                or self.memory.pieces(segs, count * GRANT_SEG.size, WRITE) is None:
            return -lib.HV_EFAULT
        for i in range(count):
            at = segs + i * GRANT_SEG.size
            raw = self.memory.read(at, GRANT_SEG.size)
            if raw is None:
                return -lib.HV_EFAULT
            _buf, _granter, _ref, offset, length, flags, *_ = GRANT_SEG.unpack(raw)
            if flags & ~lib.HV_GRANT_COPY_TO_PEER or offset + length > PAGE:
                status = -lib.HV_EINVAL
            else:
                status = -lib.HV_EPERM          # no granter is permitted to a partition alone
            if not self.memory.write(at + GRANT_SEG_STATUS, struct.pack("<i", status)):
                return -lib.HV_EFAULT
        return 0

    def hc_grant_end(self, args):
        ref = args[0]
        if self.grant_table is None:
            return -lib.HV_ENOENT
        table, count = self.grant_table
        if ref >= count:
            return -lib.HV_EINVAL
        at = table + 8 * ref
        if not self.memory.owned(at, 8):
            return -lib.HV_EFAULT
        flags = struct.unpack_from("<H", self.memory.ram, at)[0]
        if flags & (lib.HV_GTF_READING | lib.HV_GTF_WRITING):
            return -lib.HV_EBUSY
        self.memory.ram[at:at + 8] = bytes(8)
        return 0

    # -- SMP (abi.h "SMP"), one vCPU: vCPU 0, up ----------------------------
    def hc_vcpu_up(self, args):
        vcpu, context = args[0], args[1]
        if vcpu >= 1:
            return -lib.HV_EINVAL
        raw = self.memory.read(context, 32)         # struct hv_vcpu_context
        if raw is None:
            return -lib.HV_EFAULT
        cr3 = struct.unpack_from("<Q", raw, 16)[0]
        if cr3 % PAGE or cr3 >= self.memory.size:
            return -lib.HV_EINVAL
        return -lib.HV_EBUSY                        # vCPU 0 is up

    def hc_vcpu_down(self, args):
        return -lib.HV_EINVAL if args[0] >= 1 else -lib.HV_EBUSY   # the last one up

    def hc_vcpu_id(self, args):
        return 0

    def hc_vcpu_count(self, args):
        return 1

    def hc_vcpu_send_event(self, args):
        vcpu, event = args[0], args[1]
        if vcpu >= 1 or event >= lib.HV_EVENTS_MAX:
            return -lib.HV_EINVAL
        if self.event_page is None:
            return -lib.HV_EPERM
        self.raise_event(event)
        return 0

    def hc_tlb_flush(self, args):
        return -lib.HV_EINVAL if args[0] >> lib.HV_VCPUS_MAX else 0

    def hc_event_bind_vcpu(self, args):
        event, vcpu = args[0], args[1]
        if event >= lib.HV_EVENTS_MAX or event == lib.HV_EVENT_TIMER or vcpu >= 1:
            return -lib.HV_EINVAL
        return 0

    #: number -> handler; a subclass extends it with its own hypercalls.
    HYPERCALLS = {
        lib.HV_HC_VERSION: hc_version,
        lib.HV_HC_FEATURES: hc_features,
        lib.HV_HC_CONSOLE_WRITE: hc_console_write,
        lib.HV_HC_YIELD: hc_yield,
        lib.HV_HC_BLOCK: hc_block,
        lib.HV_HC_SHUTDOWN: hc_shutdown,
        lib.HV_HC_CLOCK_READ: hc_clock_read,
        lib.HV_HC_SET_TIMER: hc_set_timer,
        lib.HV_HC_EVENT_REGISTER: hc_event_register,
        lib.HV_HC_EVENT_RAISE: hc_event_raise,
        lib.HV_HC_MULTICALL: hc_multicall,
        lib.HV_HC_PARTITION_ID: hc_partition_id,
        lib.HV_HC_EVTCHN_ALLOC_UNBOUND: hc_evtchn_alloc_unbound,
        lib.HV_HC_EVTCHN_BIND_INTERDOMAIN: hc_evtchn_bind_interdomain,
        lib.HV_HC_EVTCHN_SEND: hc_evtchn_no_port,
        lib.HV_HC_EVTCHN_CLOSE: hc_evtchn_no_port,
        lib.HV_HC_EVTCHN_BIND_VCPU: hc_evtchn_no_port,
        lib.HV_HC_EVTCHN_STATUS: hc_evtchn_status,
        lib.HV_HC_GRANT_TABLE_REGISTER: hc_grant_table_register,
        lib.HV_HC_GRANT_COPY: hc_grant_copy,
        lib.HV_HC_GRANT_END: hc_grant_end,
        lib.HV_HC_VCPU_UP: hc_vcpu_up,
        lib.HV_HC_VCPU_DOWN: hc_vcpu_down,
        lib.HV_HC_VCPU_ID: hc_vcpu_id,
        lib.HV_HC_VCPU_COUNT: hc_vcpu_count,
        lib.HV_HC_VCPU_SEND_EVENT: hc_vcpu_send_event,
        lib.HV_HC_TLB_FLUSH: hc_tlb_flush,
        lib.HV_HC_EVENT_BIND_VCPU: hc_event_bind_vcpu,
    }

    # -- events (abi.h "Events") -------------------------------------------
    def _word(self, offset):
        return struct.unpack_from("<Q", self.memory.ram, self.event_page + offset)[0]

    def raise_event(self, event):
        word, bit = event // 64, 1 << (event % 64)
        ram, page = self.memory.ram, self.event_page
        struct.pack_into("<Q", ram, page + 8 * word, self._word(8 * word) | bit)
        masked = self._word(8 * lib.HV_EVENT_WORDS + 8 * word) & bit
        if not masked:
            ram[page + 16 * lib.HV_EVENT_WORDS] = 1      # upcall_pending

    def any_pending(self):
        return any(self._word(8 * w) for w in range(lib.HV_EVENT_WORDS))

    def fire_timer(self):
        """The timer's deadline passed: it raises HV_EVENT_TIMER once."""
        if self.deadline:
            self.deadline = 0
            if self.event_page is not None:
                self.raise_event(lib.HV_EVENT_TIMER)
