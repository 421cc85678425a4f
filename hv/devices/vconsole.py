"""virtio-console (virtio 1.2, section 5.3), one port, no multiport.

Queue 1 (transmitq) carries the guest's output to a host sink: a binary
stream or file (hv.console.Console), or a Unix socket that `hv console NAME`
attaches to.  Queue 0 (receiveq) takes host input when there is some.
"""
from hv.devices.virtio import VirtioDevice

RECEIVEQ, TRANSMITQ = 0, 1


class ConsoleDevice(VirtioDevice):
    DEVICE_ID = 3
    QUEUES = 2
    QUEUE_MAX = 64

    def __init__(self, output, name="vconsole"):
        super().__init__(name)
        self.output = output            # has write(bytes) and flush()
        self._input = bytearray()

    def config(self):
        return bytes(12)                # cols, rows, max_nr_ports, emerg_wr: unused

    def serve(self, index, queue):
        if index == TRANSMITQ:
            while (chain := queue.pop()) is not None:
                self.output.write(chain.readable)
                queue.push(chain, 0)
                self.requests += 1
        elif index == RECEIVEQ:
            self._deliver(queue)

    def feed(self, data):
        """Host input for the guest (from the device thread)."""
        self._input += data
        queue = self._queues.get(RECEIVEQ)
        if queue is not None:
            self._deliver(queue)
            if queue.should_notify():
                self.interrupt()

    def _deliver(self, queue):
        while self._input and (chain := queue.pop()) is not None:
            n = queue.write(chain, bytes(self._input[:chain.writable_len]))
            del self._input[:n]
            queue.push(chain, n)
