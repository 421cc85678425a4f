"""Reference model: the virtio-mmio register file (virtio 1.2, 4.2.2), as
short as it can be.  csrc/virtio_mmio.c is tested against it.  The register
map is the one both take from csrc/include/hv/virtio_mmio.h; the behaviour
is written out here independently."""
from types import SimpleNamespace

from hv.abi import lib

# VIRTIO_MMIO_STATUS -> R.STATUS, ...
R = SimpleNamespace(**{n[len("VIRTIO_MMIO_"):]: getattr(lib, n)
                       for n in dir(lib) if n.startswith("VIRTIO_MMIO_")})
MAGIC, VENDOR = lib.VIRTIO_MMIO_MAGIC, lib.VIRTIO_MMIO_VENDOR_HV
FEATURES_OK, NEEDS_RESET = lib.VIRTIO_STATUS_FEATURES_OK, lib.VIRTIO_STATUS_NEEDS_RESET
VERSION_1 = 1 << lib.VIRTIO_F_VERSION_1
# Ring address registers: the field each half sets, and which half.
RING_ADDRESS = {R.QUEUE_DESC_LOW: ("desc", 0), R.QUEUE_DESC_HIGH: ("desc", 32),
                R.QUEUE_DRIVER_LOW: ("avail", 0), R.QUEUE_DRIVER_HIGH: ("avail", 32),
                R.QUEUE_DEVICE_LOW: ("used", 0), R.QUEUE_DEVICE_HIGH: ("used", 32)}


class Queue:
    def __init__(self, num_max):
        self.num_max, self.num, self.ready = num_max, 0, 0
        self.desc = self.avail = self.used = 0


class Device:
    def __init__(self, device_id, features, nqueues, queue_max, config):
        self.device_id, self.device_features = device_id, features | VERSION_1
        self.queues = [Queue(queue_max) for _ in range(nqueues)]
        self.config = bytes(config)
        self.kicks = [0] * nqueues
        self.controls = 0
        self.resets = 0
        # The backend's claim on the rings (csrc/virtio_mmio.c, T:576).
        self.rings_held, self.reset_pending, self.status_before_reset = False, False, 0
        self.reset()
        self.resets = 0

    def reset(self):
        if self.rings_held and not self.reset_pending:
            self.reset_pending, self.status_before_reset = True, self.status
        self.resets += 1
        self.status = self.driver_features = self.interrupt_status = 0
        self.queue_sel = self.features_sel = self.driver_features_sel = 0
        self.generation = 0 if not hasattr(self, "generation") else self.generation
        for q in self.queues:
            q.num = q.ready = 0
            q.desc = q.avail = q.used = 0

    def claim(self, resets):
        """The backend will read the rings of generation `resets`."""
        if resets != self.resets:
            return False
        self.rings_held = True
        return True

    def release(self):
        """The backend dropped its view: a reset in progress completes."""
        self.rings_held = self.reset_pending = False

    def _queue(self):
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def read(self, off, size):
        if off >= R.CONFIG:
            at = off - R.CONFIG
            return int.from_bytes(self.config[at:at + size].ljust(size, b"\0"), "little")
        if size != 4 or off % 4:
            return 0
        q = self._queue()
        return {
            R.MAGIC_VALUE: MAGIC, R.VERSION: R.VERSION_MODERN,
            R.DEVICE_ID: self.device_id, R.VENDOR_ID: VENDOR,
            R.DEVICE_FEATURES: (self.device_features >> (32 * self.features_sel)) & 0xffffffff
            if self.features_sel < 2 else 0,
            R.QUEUE_NUM_MAX: q.num_max if q else 0, R.QUEUE_READY: q.ready if q else 0,
            R.INTERRUPT_STATUS: self.interrupt_status,
            R.STATUS: self.status_before_reset if self.reset_pending else self.status,
            R.CONFIG_GENERATION: self.generation,
        }.get(off, 0)

    def write(self, off, size, value):
        if off >= R.CONFIG or size != 4 or off % 4:
            return
        value &= 0xffffffff
        q = self._queue()
        frozen = q is None or q.ready
        if off == R.DEVICE_FEATURES_SEL:
            self.features_sel = value
        elif off == R.DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif off == R.DRIVER_FEATURES:
            if self.driver_features_sel < 2 and not self.status & FEATURES_OK:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xffffffff << shift)) | (value << shift)
        elif off == R.QUEUE_SEL:
            self.queue_sel = value
        elif off == R.QUEUE_NUM and not frozen:
            q.num = value
        elif off == R.QUEUE_READY:
            if q is not None:
                q.ready = value & 1
            self.controls += 1
        elif off == R.QUEUE_NOTIFY:
            if value < len(self.queues):
                self.kicks[value] += 1
        elif off == R.INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif off == R.STATUS:
            if value == 0:
                self.reset()
            else:
                if (value & FEATURES_OK and not self.status & FEATURES_OK and
                        (self.driver_features & ~self.device_features or
                         not self.driver_features & VERSION_1)):
                    value &= ~FEATURES_OK
                self.status = (self.status & NEEDS_RESET) | value
            self.controls += 1
        elif off in RING_ADDRESS and not frozen:
            name, shift = RING_ADDRESS[off]
            old = getattr(q, name)
            setattr(q, name, (old & ~(0xffffffff << shift)) | (value << shift))
