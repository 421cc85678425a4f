"""The virtio-mmio register file in C (csrc/virtio_mmio.c) against the
reference model (tests/models/virtio_mmio.py): random register traffic, the
same answers, the same state, the same kicks."""
import errno
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hv.abi import ffi, lib
from models.virtio_mmio import VERSION_1, Device, R

SLOT = 3
BASE = lib.HV_VIRTIO_MMIO_BASE + SLOT * lib.HV_VIRTIO_MMIO_SLOT
REGISTERS = sorted(set(vars(R).values()) - {R.MAGIC, R.VERSION_MODERN, R.VENDOR_HV,
                                             R.INT_VRING, R.INT_CONFIG}) + \
    [R.CONFIG + 4, R.CONFIG + 10]
offsets = st.one_of(st.sampled_from(REGISTERS), st.integers(0, lib.HV_VIRTIO_MMIO_SLOT - 1))
sizes = st.sampled_from([4, 4, 4, 1, 2, 8])
values = st.one_of(st.sampled_from([0, 1, 2, 3, 8, 11, 15, 0xf, 64, 0xffffffff]),
                   st.integers(0, (1 << 32) - 1))


class RegisterFile(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        pp = ffi.new("struct hv_partition **")
        assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 4 << 20, pp) == 0
        self.p = pp[0]
        self.fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
        self.control = os.eventfd(0, os.EFD_NONBLOCK)
        config = bytes(range(12))
        features = (1 << 5) | (1 << 9) | VERSION_1
        assert lib.hv_virtio_add(self.p, SLOT, 2, features, 2, 64, config, len(config),
                                 ffi.new("int[]", self.fds), self.control) == 0
        self.model = Device(2, features, 2, 64, config)
        self.kicks = [0, 0]
        self.controls = 0

    def teardown(self):
        lib.hv_partition_destroy(self.p)
        for fd in self.fds + [self.control]:
            os.close(fd)

    def _drain(self, fd):
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            return 0

    @rule(off=offsets, size=sizes)
    def read(self, off, size):
        value = ffi.new("uint64_t *")
        assert lib.hv_test_mmio(self.p, BASE + off, size, 0, value) == 0
        if off + size <= lib.HV_VIRTIO_MMIO_SLOT:
            assert value[0] == self.model.read(off, size), f"read {off:#x}/{size}"

    @rule(off=offsets, size=sizes, value=values)
    def write(self, off, size, value):
        if off + size > lib.HV_VIRTIO_MMIO_SLOT:
            return
        v = ffi.new("uint64_t *", value)
        assert lib.hv_test_mmio(self.p, BASE + off, size, 1, v) == 0
        self.model.write(off, size, value)

    @rule(bits=st.sampled_from([1, 2, 3]))
    def device_interrupts(self, bits):
        assert lib.hv_virtio_interrupt(self.p, SLOT, bits) == 0
        self.model.interrupt_status |= bits

    @rule(stale=st.booleans())
    def backend_claims_rings(self, stale):
        resets = self.model.resets - 1 if stale else self.model.resets
        expected = self.model.claim(resets & 0xffffffff)
        assert lib.hv_virtio_rings_claim(self.p, SLOT, resets & 0xffffffff) == \
            (0 if expected else -errno.ESTALE)

    @rule()
    def backend_releases_rings(self):
        assert lib.hv_virtio_rings_release(self.p, SLOT) == 0
        self.model.release()

    @invariant()
    def same_state(self):
        s = ffi.new("struct hv_virtio_state *")
        assert lib.hv_virtio_state(self.p, SLOT, s) == 0
        m = self.model
        assert (s.status, s.driver_features, s.interrupt_status, s.queue_sel) == \
            (m.status, m.driver_features, m.interrupt_status, m.queue_sel & 0xffffffff)
        assert s.resets == m.resets == lib.hv_virtio_resets(self.p, SLOT)
        assert s.reset_pending == m.reset_pending
        for i, q in enumerate(m.queues):
            c = s.queue[i]
            assert (c.num, c.ready, c.desc, c.avail, c.used) == (q.num, q.ready, q.desc, q.avail, q.used)
        for i in range(2):
            self.kicks[i] += self._drain(self.fds[i])
        self.controls += self._drain(self.control)
        assert self.kicks == m.kicks
        assert self.controls == m.controls


RegisterFile.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                          suppress_health_check=list(HealthCheck))
TestRegisterFile = RegisterFile.TestCase


def test_window_outside_any_device_reads_zero():
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 4 << 20, pp) == 0
    try:
        value = ffi.new("uint64_t *", 123)
        assert lib.hv_test_mmio(pp[0], lib.HV_VIRTIO_MMIO_BASE, 4, 0, value) == 0
        assert value[0] == 0                    # empty slot: DeviceID/magic read 0
        assert lib.hv_test_mmio(pp[0], lib.HV_VIRTIO_MMIO_BASE - 4, 4, 0, value) == -1
    finally:
        lib.hv_partition_destroy(pp[0])


def test_reset_waits_for_the_backend_to_release_the_rings():
    """A driver reset while the backend holds the rings is in progress:
    Status reads its old value (a driver waits for 0, virtio 1.2 2.4.1)
    until the backend releases them; registers reset at once."""
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 4 << 20, pp) == 0
    p, fds = pp[0], [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    try:
        assert lib.hv_virtio_add(p, SLOT, 2, VERSION_1, 1, 64, b"", 0,
                                 ffi.new("int[]", fds[:1]), fds[1]) == 0

        def mmio(off, write=None):
            v = ffi.new("uint64_t *", write or 0)
            assert lib.hv_test_mmio(p, BASE + off, 4, write is not None, v) == 0
            return v[0]

        mmio(R.STATUS, 0x7)                                    # ACKNOWLEDGE, DRIVER, DRIVER_OK
        assert lib.hv_virtio_rings_claim(p, SLOT, 0) == 0
        mmio(R.STATUS, 0)                                      # the driver resets
        assert mmio(R.STATUS) == 0x7                           # not yet complete
        assert lib.hv_virtio_rings_claim(p, SLOT, 0) == -errno.ESTALE
        assert lib.hv_virtio_resets(p, SLOT) == 1
        assert lib.hv_virtio_rings_release(p, SLOT) == 0
        assert mmio(R.STATUS) == 0                             # complete
        mmio(R.STATUS, 0)                                      # nothing held: at once
        assert mmio(R.STATUS) == 0
    finally:
        lib.hv_partition_destroy(p)
        for fd in fds:
            os.close(fd)
