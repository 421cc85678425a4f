"""Reference model: the virtio-mmio register file (virtio 1.2, 4.2.2), as
short as it can be.  csrc/virtio_mmio.c is tested against it."""
MAGIC, VENDOR = 0x74726976, 0x7668
FEATURES_OK, NEEDS_RESET = 8, 64
VERSION_1 = 1 << 32


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
        if off >= 0x100:
            at = off - 0x100
            return int.from_bytes(self.config[at:at + size].ljust(size, b"\0"), "little")
        if size != 4 or off % 4:
            return 0
        q = self._queue()
        return {
            0x000: MAGIC, 0x004: 2, 0x008: self.device_id, 0x00c: VENDOR,
            0x010: (self.device_features >> (32 * self.features_sel)) & 0xffffffff
            if self.features_sel < 2 else 0,
            0x034: q.num_max if q else 0, 0x044: q.ready if q else 0,
            0x060: self.interrupt_status, 0x070: self.status_before_reset if self.reset_pending else self.status, 0x0fc: self.generation,
        }.get(off, 0)

    def write(self, off, size, value):
        if off >= 0x100 or size != 4 or off % 4:
            return
        value &= 0xffffffff
        q = self._queue()
        frozen = q is None or q.ready
        if off == 0x014:
            self.features_sel = value
        elif off == 0x024:
            self.driver_features_sel = value
        elif off == 0x020:
            if self.driver_features_sel < 2 and not self.status & FEATURES_OK:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xffffffff << shift)) | (value << shift)
        elif off == 0x030:
            self.queue_sel = value
        elif off == 0x038 and not frozen:
            q.num = value
        elif off == 0x044:
            if q is not None:
                q.ready = value & 1
            self.controls += 1
        elif off == 0x050:
            if value < len(self.queues):
                self.kicks[value] += 1
        elif off == 0x064:
            self.interrupt_status &= ~value
        elif off == 0x070:
            if value == 0:
                self.reset()
            else:
                if (value & FEATURES_OK and not self.status & FEATURES_OK and
                        (self.driver_features & ~self.device_features or
                         not self.driver_features & VERSION_1)):
                    value &= ~FEATURES_OK
                self.status = (self.status & NEEDS_RESET) | value
            self.controls += 1
        elif off in (0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4) and not frozen:
            name = {0x080: "desc", 0x084: "desc", 0x090: "avail", 0x094: "avail",
                    0x0a0: "used", 0x0a4: "used"}[off]
            shift = 32 if off % 8 == 4 else 0
            old = getattr(q, name)
            setattr(q, name, (old & ~(0xffffffff << shift)) | (value << shift))
