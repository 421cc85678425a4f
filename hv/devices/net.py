"""virtio-net (virtio 1.2, section 5.1) attached to a virtual switch.

Queue 1 (transmitq) carries frames from the guest, each behind a 12-byte
virtio_net_hdr; hv needs no offloads, so the header is ignored and the
frames of one kick go to the switch as one batch.  The per-frame work is
hv/devices/net_io.py, the compiled frame path.  Frames for the guest wait in a bounded backlog until
the driver posts receive buffers on queue 0 (receiveq); a guest that never
posts any loses frames, not the parent's memory.
"""
import collections
import struct

from hv.devices.errors import QueueError
from hv.devices.net_io import NET_HDR  # noqa: F401  (the header's layout, for readers)
from hv.devices.virtio import VirtioDevice

RECEIVEQ, TRANSMITQ = 0, 1
F_MAC = 5
BACKLOG_MAX = 256                        # frames waiting for receive buffers


class NetDevice(VirtioDevice):
    DEVICE_ID = 1
    FEATURES = 1 << F_MAC
    QUEUES = 2
    QUEUE_MAX = 256
    HOST_FED_QUEUES = frozenset({RECEIVEQ})
    POLL_MAX_NS = 0         # (measured below)

    def __init__(self, switch, mac, name=None, datapath=None):
        super().__init__(name or f"net({mac_text(mac)})", datapath=datapath)
        self.switch = switch
        self.mac = bytes(mac)
        self.backlog = collections.deque()
        self.rx_dropped = 0
        self.bytes_to_guest = self.bytes_from_guest = 0     # frames received, sent
        switch.connect(self)

    def config(self):
        return self.mac + struct.pack("<H", 1)      # mac, status: link up

    def serve(self, index, queue):
        if index == TRANSMITQ:
            frames = self.datapath.net_io.transmit(queue)
            self.requests += len(frames)
            self.bytes_from_guest += sum(map(len, frames))
            if frames:
                self.switch.send_batch(self, frames)
        else:
            self._receive(queue)

    # -- frames for this guest --------------------------------------------------
    def deliver(self, frames):
        """From the switch, on the sender's thread: copy the frames into our
        guest at once if our device thread is not busy with this device (no
        thread hop; one interrupt for them all), else leave them in the
        backlog and wake that thread.  Past BACKLOG_MAX frames wait, more
        are dropped."""
        if self.partition is None or self.partition._p is None:
            return                  # not attached, or the partition is gone
        room = max(0, BACKLOG_MAX - len(self.backlog))
        self.rx_dropped += max(0, len(frames) - room)
        if room == 0:
            return
        self.backlog.extend(frames[:room])
        if self.lock.acquire(blocking=False):
            try:
                self.notify_host()
            finally:
                self.lock.release()
            return
        host = self.partition and self.partition._device_host
        if host is not None:
            host.wake(self)

    def notify_host(self):
        with self.lock:
            if self.closed or self.frozen:
                return              # paused: the frames wait in the backlog
            queue = self._queues.get(RECEIVEQ)
            if queue is None:
                self._on_control()
                queue = self._queues.get(RECEIVEQ)
            if queue is not None:
                try:
                    self._receive(queue)
                    if queue.should_notify():
                        self.interrupt()
                except QueueError as e:
                    self.fail(str(e))

    def _receive(self, queue):
        while True:
            _, dropped, nbytes = self.datapath.net_io.receive(queue, self.backlog)
            self.rx_dropped += dropped      # buffers too small for their frame
            self.bytes_to_guest += nbytes
            # Frames still wait: the ring is out of buffers.  Ask the driver
            # to kick when it posts the next (with EVENT_IDX it kicks only
            # when asked, 2.7.10), and look once more for one posted meanwhile.
            if not self.backlog or not queue.enable_kicks():
                return

    def close(self):
        self.switch.disconnect(self)
        super().close()


def mac_text(mac):
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text):
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"bad MAC address {text!r} (want xx:xx:xx:xx:xx:xx)")
    try:
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r} (want xx:xx:xx:xx:xx:xx)") from None
    if mac[0] & 1:
        raise ValueError(f"MAC address {text} is a multicast address")
    return mac
