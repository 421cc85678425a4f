"""Reliability: valid but racy driver sequences, on both engines.

virtio-reset-race resets its virtio-blk device with a request in flight and
sets it up again at the same ring addresses, round after round; the device
must never answer with DEVICE_NEEDS_RESET, lose the new request, or complete
the old one into the new rings (csrc/virtio_mmio.c, T:576).  Before the fix
it failed within 10-40 rounds on both engines.
"""
import errno
import os
import time

import pytest

from hv.devices.blk import BlkDevice
from test_devices import ENGINES, SECTOR, run_api

# KVM's ring-0 MMIO exits are slow here (~10 us each, dozens per round).
RESET_ROUNDS = {"kvm": 300, "tcg": 2000}


def reset_race_image(path, sectors=128):
    path.write_bytes(b"".join(bytes((s * 7 + i) & 0xff for i in range(SECTOR))
                              for s in range(sectors)))
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_reset_with_a_request_in_flight(engine, tmp_path):
    blk = BlkDevice(str(reset_race_image(tmp_path / "disk.img")))
    rounds = RESET_ROUNDS[engine]
    r = run_api("virtio-reset-race", engine, [blk], f"rounds={rounds}")
    r.assert_success()
    assert f"{rounds} rounds" in r.text()
    assert blk.errors == 0


class SlowBlkDevice(BlkDevice):
    """A disk that takes STALL_S to notice its first kick.  The guest resets
    the device meanwhile, and that reset completes only when the backend
    lets go of the rings (csrc/virtio_mmio.c, T:576): Status keeps reading
    non-zero for the whole stall."""
    STALL_S = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stalled = False

    def on_kick(self, index):
        if not self.stalled:
            self.stalled = True
            time.sleep(self.STALL_S)
        super().on_kick(index)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_reset_that_completes_late_is_waited_for(engine, tmp_path):
    """The driver waits for Status to read 0 on the clock, not for a number
    of reads: before, virtio_begin gave up after a million reads, which on
    TCG is well under a second, and a loaded host made the reset race fail."""
    blk = SlowBlkDevice(str(reset_race_image(tmp_path / "disk.img")))
    r = run_api("virtio-reset-race", engine, [blk], "rounds=1")
    r.assert_success()
    assert blk.stalled and blk.errors == 0


# ---- device backends honour frame ownership ------------------------------------------

def test_guest_memory_of_a_partition_refuses_hv_frames():
    """GuestMemory.for_partition() takes the ranges the core says are not the
    guest's (hv_partition_foreign_ranges) and refuses them, as the core does."""
    from hv.abi import ffi, lib
    from hv.devices.guestmem import GuestMemory, NotGuestFrameError, foreign_ranges
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 1 << 20, pp) == 0
    p = pp[0]
    try:
        assert foreign_ranges(p) == ()
        assert lib.hv_partition_reserve(p, 0x3000, 0x2000) == 0
        assert lib.hv_partition_reserve(p, 0xff000, 0x1000) == 0
        assert foreign_ranges(p) == ((0x3000, 0x5000), (0xff000, 0x100000))
        mem = GuestMemory(ffi.buffer(lib.hv_partition_ram(p), 1 << 20),
                          foreign=foreign_ranges(p))
        mem.write(0x2ffe, b"ok")                        # ends where hv's frames start
        mem.read(0x5000, 16)
        for gpa, n in [(0x2fff, 2), (0x3000, 1), (0x4fff, 1), (0x2000, 0x4000), (0xff000, 8)]:
            with pytest.raises(NotGuestFrameError):
                mem.read(gpa, n)
            assert lib.hv_partition_frame_owner(p, gpa + n - 1) in (0, lib.hv_partition_id(p))
        out = ffi.new("uint64_t[]", 2)
        assert lib.hv_partition_foreign_ranges(p, out, 1) == -errno.E2BIG
        # Once a device holds a copy, ownership is fixed.
        fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
        try:
            assert lib.hv_virtio_add(p, 0, 4, 1 << 32, 1, 8, b"", 0,
                                     ffi.new("int[]", fds[:1]), fds[1]) == 0
            assert lib.hv_partition_reserve(p, 0x8000, 0x1000) == -errno.EBUSY
            assert foreign_ranges(p) == ((0x3000, 0x5000), (0xff000, 0x100000))
        finally:
            lib.hv_partition_destroy(p)
            p = None
            for fd in fds:
                os.close(fd)
    finally:
        if p is not None:
            lib.hv_partition_destroy(p)


def test_ring_or_buffer_in_hv_frames():
    """A ring in a frame hv owns is a broken ring; a buffer there fails that
    request on devices with an error status (blk), else breaks the ring."""
    from hv.devices.guestmem import GuestMemory
    from hv.devices.virtqueue import DESC, DESC_F_NEXT, DESC_F_WRITE, QueueError, SplitQueue
    buf = bytearray(0x10000)
    mem = GuestMemory(buf, foreign=((0x8000, 0x9000),))
    with pytest.raises(QueueError, match="not the guest's"):
        SplitQueue(mem, 8, 0x8000, 0x2000, 0x3000)
    with pytest.raises(QueueError, match="not the guest's"):
        SplitQueue(mem, 8, 0x1000, 0x2000, 0x8ff0)

    def post(queue_kwargs):
        buf[:] = bytes(len(buf))
        q = SplitQueue(mem, 8, 0x1000, 0x2000, 0x3000, **queue_kwargs)
        mem.write(0x1000, DESC.pack(0x4000, 16, DESC_F_NEXT, 1))          # header: ours
        mem.write(0x1000 + DESC.size, DESC.pack(0x8800, 512, DESC_F_NEXT | DESC_F_WRITE, 2))
        mem.write(0x1000 + 2 * DESC.size, DESC.pack(0x5000, 1, DESC_F_WRITE, 0))
        mem.write_u16(0x2004, 0)
        mem.write_u16(0x2002, 1)
        return q

    q = post({})
    with pytest.raises(QueueError, match="not the guest's"):
        q.pop()
    assert q.halted
    q = post({"refuse_foreign": True})
    chain = q.pop()
    assert chain.refused == ((0x8800, 512),) and chain.readable == b""
    assert chain.writable_len == 513
    q.write(chain, b"\1", offset=512)          # the status byte: the guest's frame
    q.push(chain, 1)
    assert buf[0x5000] == 1 and buf[0x8000:0x9000] == bytes(0x1000)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["ring-reserved", "buf-reserved"])
def test_guest_pointing_its_device_at_hv_frames(engine, mode, tmp_path, capsys):
    """virtio-bad puts its descriptor table (DEVICE_NEEDS_RESET) or a data
    buffer (IOERR, the device goes on) in hv's boot page; the page and the
    disk are unchanged, rng keeps working, a reset brings blk back."""
    from hv.devices.rng import RngDevice
    from test_devices import make_image
    image = make_image(tmp_path / "bad.img", fill=b"\x33")
    before = image.read_bytes()
    blk = BlkDevice(str(image))
    r = run_api("virtio-bad", engine, [blk, RngDevice()], f"mode={mode}")
    r.assert_success()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if mode == "ring-reserved":
        assert "(DEVICE_NEEDS_RESET)" in r.text()
        assert len(err) == 1 and "not the guest's" in err[0], err
    else:
        assert "read into hv's page: IOERR" in r.text()
        assert "write from hv's page: IOERR" in r.text()
        assert blk.errors == 2 and err == [], err
    assert image.read_bytes() == before


# ---- constants defined once ---------------------------------------------------------

def test_shared_constants_have_one_definition():
    """The virtio-mmio register map, the boot layout and the RAM limits are
    defined in csrc/include/hv/ only; C takes them by #include, Python from
    the compiler (cffi).  A copy elsewhere would drift."""
    import re
    from conftest import ROOT
    copies = re.compile(r"#define\s+(VIRTIO_MMIO_[A-Z_]+|VIRTIO_STATUS_[A-Z_]+)\s|"
                        r"PVH_BOOT_GDT_GPA|1ull << 46|1 << 52|REG_QUEUE_NOTIFY")
    found = []
    for top in ("csrc", "hv", "guests/lib", "tests/models"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not name.endswith((".c", ".h", ".py")) or name.startswith("_core"):
                    continue
                if path.endswith(os.path.join("include", "hv", "virtio_mmio.h")):
                    continue
                with open(path) as f:
                    found += [f"{os.path.relpath(path, ROOT)}: {m.group(0)}"
                              for m in copies.finditer(f.read())]
    assert found == []


def test_layout_reaches_python_from_the_compiler():
    from hv import loader
    from hv.abi import lib
    assert (loader.BOOT_GPA, loader.RESERVED_END) == (lib.HV_BOOT_PAGE_GPA, lib.HV_RESERVED_END)
    assert (loader.MIN_MEM_SIZE, loader.MAX_MEM_SIZE) == (lib.HV_MEM_MIN, lib.HV_MEM_MAX)
    from hv.abi import ffi
    pp = ffi.new("struct hv_partition **")
    # The C core and the loader refuse the same sizes.
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, lib.HV_MEM_MAX + 4096, pp) == -errno.EINVAL
    with pytest.raises(loader.LoadError, match="TiB limit"):
        loader._check_mem_size(lib.HV_MEM_MAX + 4096, 4096)


# ---- the sanitizer build is live --------------------------------------------------------

@pytest.mark.skipif(os.environ.get("HV_CORE") != "asan",
                    reason="checks the sanitizer build itself: make test-asan runs it")
def test_sanitizer_build_reports_a_heap_overflow():
    """Under make test-asan the core really is instrumented: a caller that
    hands hv_virtio_add a config shorter than it says makes the core read
    past a heap buffer, and ASan ends the process with a report."""
    import subprocess
    import sys
    code = ("import os\n"
            "from hv.abi import ffi, lib\n"
            "pp = ffi.new('struct hv_partition **')\n"
            "assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 1 << 20, pp) == 0\n"
            "fds = ffi.new('int[]', [os.eventfd(0), os.eventfd(0)])\n"
            "lib.hv_virtio_add(pp[0], 0, 4, 1 << 32, 1, 8, ffi.new('uint8_t[]', 8), 200, fds, fds[1])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr
    assert "hv_virtio_add" in proc.stderr


# ---- validation branches the guest tests do not reach -----------------------------------
# (make coverage lists the error exits of the input checks; these drive the
# host-facing ones.  docs/reliability.md lists what stays unreachable.)

def test_virtio_add_refuses_each_bad_argument():
    from hv.abi import ffi, lib
    from hv.testing.core import Core
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    qfds = ffi.new("int[]", fds[:1])
    v1 = 1 << 32
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 1 << 20, pp) == 0
    p = pp[0]
    try:
        for slot, dev_id, feat, nq, qmax, cfg_len in [
                (lib.HV_VIRTIO_MMIO_SLOTS, 2, v1, 1, 8, 0), (0, 0, v1, 1, 8, 0),
                (0, 2, v1, 0, 8, 0), (0, 2, v1, lib.HV_VIRTIO_QUEUES_MAX + 1, 8, 0),
                (0, 2, v1, 1, 0, 0), (0, 2, v1, 1, 65536, 0), (0, 2, v1, 1, 12, 0),
                (0, 2, v1, 1, 8, lib.HV_VIRTIO_CONFIG_MAX + 1), (0, 2, 0, 1, 8, 0)]:
            cfg = ffi.new("uint8_t[]", max(cfg_len, 1))
            assert lib.hv_virtio_add(p, slot, dev_id, feat, nq, qmax, cfg, cfg_len, qfds,
                                     fds[1]) == -errno.EINVAL, (slot, dev_id, feat, nq, qmax)
        assert lib.hv_virtio_add(p, 0, 2, v1, 1, 8, b"", 0, qfds, fds[1]) == 0
        assert lib.hv_virtio_add(p, 0, 2, v1, 1, 8, b"", 0, qfds, fds[1]) == -errno.EINVAL
        # Every device entry refuses an empty slot.
        s = ffi.new("struct hv_virtio_state *")
        assert lib.hv_virtio_state(p, 1, s) == -errno.ENOENT
        assert lib.hv_virtio_interrupt(p, 1, 1) == -errno.EINVAL
        assert lib.hv_virtio_interrupt(p, 0, 0) == -errno.EINVAL
        assert lib.hv_virtio_interrupt(p, 0, 4) == -errno.EINVAL
        assert lib.hv_virtio_set_config(p, 1, b"x", 1) == -errno.EINVAL
        assert lib.hv_virtio_set_config(p, 0, bytes(lib.HV_VIRTIO_CONFIG_MAX + 1),
                                        lib.HV_VIRTIO_CONFIG_MAX + 1) == -errno.EINVAL
        assert lib.hv_virtio_needs_reset(p, 1) == -errno.ENOENT
        assert lib.hv_virtio_rings_claim(p, 1, 0) == -errno.ENOENT
        assert lib.hv_virtio_rings_release(p, 1) == -errno.ENOENT
        assert lib.hv_virtio_resets(p, 1) == 0
        # Reservations: empty, outside RAM, straddling its end.
        for gpa, n in [(0, 0), (1 << 20, 4096), ((1 << 20) - 4096, 8192)]:
            assert lib.hv_partition_reserve(p, gpa, n) == -errno.EINVAL
    finally:
        lib.hv_partition_destroy(p)
    # RAM up to the device window is refused a device; so is a running partition.
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, lib.HV_VIRTIO_MMIO_BASE + (1 << 20), pp) == 0
    try:
        assert lib.hv_virtio_add(pp[0], 0, 2, v1, 1, 8, b"", 0, qfds, fds[1]) == -errno.ERANGE
    finally:
        lib.hv_partition_destroy(pp[0])
    core = Core()
    try:
        assert lib.hv_virtio_add(core.p, 0, 2, v1, 1, 8, b"", 0, qfds, fds[1]) == -errno.EBUSY
    finally:
        core.close()
        for fd in fds:
            os.close(fd)


def test_page_walk_refuses_tables_outside_the_guest_and_reserved_bits():
    """A table in a frame the guest does not own, and PS set in a PML4 entry
    (a reserved bit: the CPU raises #PF), end the walk with -HV_EFAULT."""
    import struct
    from hv.abi import ffi, lib
    from hv.testing.core import Core
    core = Core()
    gpa = ffi.new("uint64_t *")
    try:
        lib.hv_partition_reserve(core.p, 0x1000, 0x1000)
        assert lib.hv_test_walk(core.p, 0x1000, 0x400000, 0, 0, gpa) == -lib.HV_EFAULT
        pml4, pdpt = 0x10000, 0x11000
        core.ram[pml4:pml4 + 8] = struct.pack("<Q", pdpt | 0x1 | 0x2 | 0x80)   # P, RW, PS
        assert lib.hv_test_walk(core.p, pml4, 0x0, 0, 0, gpa) == -lib.HV_EFAULT
        core.ram[pml4:pml4 + 8] = struct.pack("<Q", 0x1000 | 0x1 | 0x2)         # into hv's frame
        assert lib.hv_test_walk(core.p, pml4, 0x0, 0, 0, gpa) == -lib.HV_EFAULT
    finally:
        core.close()


def test_loader_refuses_a_command_line_that_is_not_unicode():
    """A str with a lone surrogate cannot be encoded for the guest: one
    LoadError, not a UnicodeEncodeError from deep inside."""
    from conftest import guest
    from hv.loader import LoadError, load_pvh
    with pytest.raises(LoadError, match="not valid Unicode"):
        load_pvh(guest("hello"), 16 << 20, cmdline="console=\ud800")
