"""virtio-rng (virtio 1.2, section 5.4): fill the guest's buffers from the OS."""
import os

from hv.devices.virtio import VirtioDevice

MAX_CHUNK = 64 << 10            # bytes per request: a guest cannot drain the pool


class RngDevice(VirtioDevice):
    DEVICE_ID = 4
    QUEUES = 1
    QUEUE_MAX = 64

    def __init__(self, name="rng"):
        super().__init__(name)

    def serve(self, index, queue):
        while (chain := queue.pop()) is not None:
            n = min(chain.writable_len, MAX_CHUNK)
            queue.push(chain, queue.write(chain, os.urandom(n)))
            self.requests += 1
