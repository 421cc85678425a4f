"""Dirty tracking for live migration (csrc/dirty.c, hv.migrate.DirtyLog).

The C core is driven directly: a partition with one vCPU whose guest code
(below) increments one byte in each page a table names, then traps with an
OUT; between collects Hypothesis makes random guest, core (hv_copy_to_guest,
an event raised into the event page) and device (GuestMemory.write) writes.  Every collect must report every page
written since the collect before (nothing lost), and after the first
(which also sends every non-zero page) nothing that was not written.  Every
method each engine has is checked: KVM's memslot log, the kernel's write
protection, the page compare.

Then a virtio-blk read into guest RAM made while pre-copy runs (after the
first round sent the page) must reach the destination: on KVM only hv's
own written map can see it, the kernel wrote the page for a device.
"""
import os
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models.virtqueue_ref import Driver

from conftest import ROOT, guest, kvm_missing_reason
from hv import migrate
from hv.abi import ffi, lib
from hv.devices import datapath
from hv.devices.blk_io import HEADER, SECTOR, T_IN
from hv.devices.guestmem import GuestMemory
from hv.partition import PAUSED, Partition
from test_snapshot import Output

PAGE = 4096
MEM = 4 << 20
FRAMES = MEM // PAGE
CODE, TABLE, EVENTS = 0x100000, 0x101000, 0x102000   # code, its page list, the event page
FIRST_TARGET = 0x103000 // PAGE              # pages written start above those
EXIT_PORT = 0x5000

# 32-bit flat protected mode, paging off (the PVH entry):
#   start: mov esi, TABLE
#   next:  lodsd              ; eax = the next gpa, 0 ends the list
#          test eax, eax
#          jz done
#          inc byte [eax]
#          jmp next
#   done:  mov dx, EXIT_PORT
#          out dx, al
#          jmp start
GUEST_CODE = (b"\xbe" + TABLE.to_bytes(4, "little") +
              b"\xad" b"\x85\xc0" b"\x74\x04" b"\xfe\x00" b"\xeb\xf7" +
              b"\x66\xba" + EXIT_PORT.to_bytes(2, "little") + b"\xee" +
              b"\xeb\xeb")

ENGINES = {"kvm": lib.HV_ENGINE_KVM, "tcg": lib.HV_ENGINE_TCG}
METHODS = {"kvm": ["engine-log", "write-protect", "compare"], "tcg": ["write-protect", "compare"]}
CASES = [(e, m) for e in ENGINES for m in METHODS[e]]


def skip_without(engine):
    if engine == "kvm" and kvm_missing_reason():
        pytest.skip(f"KVM unavailable: {kvm_missing_reason()}")


class Rig:
    """A partition, its vCPU at GUEST_CODE, and the pages truly written."""

    def __init__(self, engine):
        pp = ffi.new("struct hv_partition **")
        assert lib.hv_partition_create(ENGINES[engine], MEM, pp) == 0
        self.p = pp[0]
        self.ram = memoryview(ffi.buffer(lib.hv_partition_ram(self.p), MEM))
        assert lib.hv_partition_reserve(self.p, 0, PAGE) == 0       # the boot GDT
        self.exit = ffi.new("struct hv_exit *")
        vv = ffi.new("struct hv_vcpu **")
        assert lib.hv_vcpu_create(self.p, 0, vv) == 0
        self.v = vv[0]
        assert lib.hv_vcpu_set_pvh_entry(self.v, CODE, 0) == 0
        self.ram[CODE:CODE + len(GUEST_CODE)] = GUEST_CODE
        # The event page, every event masked (an upcall would need an IDT).
        self.regs = ffi.new("struct hv_regs *")
        assert self.hypercall(lib.HV_HC_EVENT_REGISTER, EVENTS, 0x40) == 0
        masked = EVENTS + ffi.offsetof("struct hv_vcpu_events", "masked")
        self.ram[masked:masked + lib.HV_EVENTS_MAX // 8] = b"\xff" * (lib.HV_EVENTS_MAX // 8)
        self.written_map = memoryview(ffi.buffer(lib.hv_partition_written_map(self.p), FRAMES))
        self.mem = GuestMemory(self.ram, written=self.written_map)
        self.out = ffi.new("uint64_t[]", FRAMES)
        self.written = set()

    def hypercall(self, nr, *args):
        """The core's dispatcher, as a trap would reach it (a core hypercall);
        the vCPU's registers are put back after."""
        saved = ffi.new("struct hv_regs *")
        assert lib.hv_vcpu_get_regs(self.v, saved) == 0
        self.regs[0] = saved[0]
        self.regs.rax, self.regs.rdi, self.regs.rsi = nr, *(list(args) + [0, 0])[:2]
        assert lib.hv_test_dispatch(self.v, self.regs, self.exit) == 1
        assert lib.hv_vcpu_set_regs(self.v, saved) == 0
        return ffi.cast("int64_t", self.regs.rax)

    def close(self):
        lib.hv_dirty_stop(self.p)
        lib.hv_partition_destroy(self.p)

    def start(self, method):
        why = ffi.new("char[]", 256)
        got = lib.hv_dirty_start(self.p, migrate.DirtyLog.METHODS[method], why, 256)
        return got, ffi.string(why).decode()

    def collect(self):
        n = lib.hv_dirty_collect(self.p, self.out)
        assert n >= 0, os.strerror(-n)
        return set(ffi.unpack(self.out, n))

    def guest_writes(self, pages):
        """The guest increments a byte of each page (the table is written as
        a device would, marked)."""
        table = b"".join((p * PAGE + 8).to_bytes(4, "little") for p in pages) + bytes(4)
        self.mem.write(TABLE, table)
        assert lib.hv_vcpu_run(self.v, self.exit) == 0
        assert self.exit.kind == lib.HV_EXIT_IO and self.exit.io_port == EXIT_PORT, self.exit.kind
        assert lib.hv_vcpu_complete(self.v, 0) == 0
        self.written |= set(pages) | {TABLE // PAGE}

    def core_writes(self, page, offset, data):
        """hv_copy_to_guest, as a hypercall's result is written (paging off: gva = gpa)."""
        assert lib.hv_copy_to_guest(self.v, page * PAGE + offset, data, len(data)) == 0
        self.written |= {(page * PAGE + offset + i) // PAGE for i in (0, len(data) - 1)}

    def event_writes(self, event):
        """The core sets the event's pending bit in the event page (masked: no upcall)."""
        assert self.hypercall(lib.HV_HC_EVENT_RAISE, event) == 0
        self.written.add(EVENTS // PAGE)

    def device_writes(self, page, offset, data):
        self.mem.write(page * PAGE + offset, data)
        self.written |= {(page * PAGE + offset + i) // PAGE for i in (0, len(data) - 1)}


pages = st.integers(FIRST_TARGET, FRAMES - 2)
writes = st.one_of(
    st.tuples(st.just("guest"), st.lists(pages, min_size=1, max_size=8)),
    st.tuples(st.just("core"), pages, st.integers(0, PAGE - 1), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("device"), pages, st.integers(0, PAGE - 1), st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("event"), st.integers(0, lib.HV_EVENTS_MAX - 1)),
)
rounds = st.lists(st.lists(writes, max_size=6), min_size=1, max_size=5)


@pytest.mark.parametrize("engine,method", CASES)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(rounds=rounds)
def test_every_written_page_is_reported_and_only_those(engine, method, rounds):
    skip_without(engine)
    rig = Rig(engine)
    try:
        rig.device_writes(FIRST_TARGET + 3, 0, b"before")   # RAM that is not all zero
        got, why = rig.start(method)
        assert got == migrate.DirtyLog.METHODS[method], why
        first = rig.collect()
        nonzero = {f for f in range(FRAMES) if any(rig.ram[f * PAGE:(f + 1) * PAGE])}
        assert first == nonzero             # the first round: every non-zero page
        for writes_between in rounds:
            rig.written = set()
            for w in writes_between:
                getattr(rig, f"{w[0]}_writes")(*w[1:])
            reported = rig.collect()
            assert rig.written <= reported, f"lost: {sorted(rig.written - reported)}"
            assert reported <= rig.written, f"never written: {sorted(reported - rig.written)}"
    finally:
        rig.close()


@pytest.mark.parametrize("engine", list(ENGINES))
def test_auto_picks_the_engines_log_or_write_protection(engine):
    skip_without(engine)
    rig = Rig(engine)
    try:
        got = lib.hv_dirty_start(rig.p, lib.HV_DIRTY_AUTO, ffi.NULL, 0)
        want = {"kvm": lib.HV_DIRTY_ENGINE_LOG, "tcg": lib.HV_DIRTY_WRITE_PROTECT}[engine]
        assert got == want
        assert lib.hv_dirty_method(rig.p) == want
        assert lib.hv_dirty_start(rig.p, lib.HV_DIRTY_AUTO, ffi.NULL, 0) == -16    # EBUSY
        lib.hv_dirty_stop(rig.p)
        assert lib.hv_dirty_method(rig.p) == 0
        # Stopped, RAM is plain memory again and tracking can start afresh.
        rig.guest_writes([FIRST_TARGET])
        assert lib.hv_dirty_start(rig.p, lib.HV_DIRTY_AUTO, ffi.NULL, 0) == want
    finally:
        rig.close()


def test_an_engine_without_a_log_says_so():
    rig = Rig("tcg")
    try:
        got, why = rig.start("engine-log")
        assert got < 0 and "tcg engine keeps no dirty log" in why
    finally:
        rig.close()


# ---- every writer of guest RAM in the core marks it ----------------------------

# C files whose `->ram` arithmetic writes no guest RAM, and why.
WRITE_NO_GUEST_RAM = {"dirty.c": "reads RAM to compare and scan it for the rounds",
                      "rtc_cmos.c": "r->ram is the CMOS clock's own 128 bytes",
                      "virtio_mmio.c": "hv_virtio_poll reads a ring's index"}


def test_every_core_file_that_points_into_guest_ram_marks_its_writes():
    """KVM's log misses the core's writes: a C file that does pointer
    arithmetic on a partition's RAM either calls ram_written() or is known
    to write none.  A new one fails here until it is one or the other."""
    csrc = os.path.join(ROOT, "csrc")
    into_ram = re.compile(r"\w+->ram\s*[+\[]")
    unmarked = []
    for name in sorted(os.listdir(csrc)):
        if not name.endswith(".c"):
            continue
        with open(os.path.join(csrc, name)) as f:
            text = f.read()
        if into_ram.search(text) and "ram_written(" not in text and name not in WRITE_NO_GUEST_RAM:
            unmarked.append(name)
    assert not unmarked, f"write guest RAM without ram_written(): {unmarked}"


# ---- a device write while pre-copy runs ----------------------------------------

RING, DATA, DATA_END = 0x1000000, 0x1010000, 0x1080000   # free RAM of the guest's 64 MiB
CMDLINE = "rounds=150 pause=5000000"


class BlkReadBetweenRounds(migrate.Progress):
    """After the first round has sent every page, a virtio-blk read puts
    the disk's bytes into a guest buffer already sent (as a device thread
    would while the source runs)."""

    def __init__(self, serve):
        super().__init__(None)
        self.serve = serve
        self.served = 0

    def round(self, n, pages, rate, downtime):
        if n == 1:
            self.served = self.serve()


@pytest.mark.parametrize("engine,tracking", [("kvm", "engine-log"), ("tcg", "write-protect")])
def test_a_blk_read_during_precopy_reaches_the_destination(tmp_path, engine, tracking):
    skip_without(engine)
    disk = bytes((i * 13 + 5) & 0xFF for i in range(8 * SECTOR))
    image = tmp_path / "disk.img"
    image.write_bytes(disk)
    path = datapath.select()
    src = Partition(guest("snap-counter"), engine=engine, cmdline=CMDLINE, console=Output())
    fd = os.open(image, os.O_RDONLY)
    try:
        src.start()
        src.pause()
        assert src.state == PAUSED
        ram = src.memory()
        drv = Driver(ram, 16, RING, DATA, DATA_END)
        queue = path.SplitQueue(path.GuestMemory.for_partition(src), 16, drv.ring.desc,
                                drv.ring.avail, drv.ring.used)
        io = path.blk_io.BlkRequests(fd, 8, True, b"d")
        head = drv.add([HEADER.pack(T_IN, 0, 0)], [len(disk), 1])
        buf, length = drv.in_flight[head].writable[0]
        assert bytes(ram[buf:buf + length]) != disk
        progress = BlkReadBetweenRounds(lambda: io.serve(queue)[0])

        address = f"unix:{tmp_path}/m.sock"
        srv = migrate.listen(address)
        got = {}

        def take():
            try:
                part, conn = migrate.receive(srv, engine=engine, console=Output())
                got["ram"] = bytes(part.memory()[buf:buf + length])
                migrate.accepted(conn)
                part.destroy()
            finally:
                srv.close()
        t = threading.Thread(target=take)
        t.start()
        report = migrate.send(src, address, progress=progress, tracking=tracking)
        t.join(30)
        assert report["tracking"] == tracking
        assert progress.served == 1 and bytes(ram[buf:buf + length]) == disk
        assert got["ram"] == disk, "the device's write was lost on the way"
    finally:
        os.close(fd)
        src.destroy()
