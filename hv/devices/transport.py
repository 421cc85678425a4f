"""A device's one door into its partition: its slot of the core's
virtio-mmio register file, and the partition's device thread.

T:665 A backend never reaches into the Partition object.  attach() hands
it a Transport (Partition.transport(slot)), and every call the device
makes into the core about itself goes through it: the registers
(state, restore), the rings' generation (claim_rings, release_rings,
resets), the used-buffer interrupt, DEVICE_NEEDS_RESET, the watch of
avail.idx (csrc/virtio_mmio.c), and a NIC's frame mover to a peer
(csrc/net_frames.c).  The core partition it holds stays valid while the
device is open: Partition.destroy() closes every device before it
destroys the partition, and close() marks the transport closed first.
Tests build one over a core partition of their own.
"""
from hv.abi import ffi, lib


class Transport:
    def __init__(self, core, slot, host=lambda: None, owner="-"):
        """core: the struct hv_partition *; host(): the partition's
        DeviceHost or None (it exists only while the guest runs); owner:
        how log lines name the partition."""
        self._core = core
        self.slot = slot
        self._host = host
        self.owner = owner
        self.closed = False

    def add(self, device_id, features, queues, queue_max, config, queue_fds, control_fd):
        """Put the device in its slot (before the guest runs): 0 or -errno."""
        return lib.hv_virtio_add(self._core, self.slot, device_id, features, queues, queue_max,
                                 config, len(config), ffi.new("int[]", queue_fds), control_fd)

    def state(self):
        s = ffi.new("struct hv_virtio_state *")
        lib.hv_virtio_state(self._core, self.slot, s)
        return s

    def restore(self, s):
        return lib.hv_virtio_restore(self._core, self.slot, s)

    def claim_rings(self, resets):
        """Claim the rings of driver generation `resets`: 0, or the driver
        has reset since (read the state again)."""
        return lib.hv_virtio_rings_claim(self._core, self.slot, resets)

    def release_rings(self):
        lib.hv_virtio_rings_release(self._core, self.slot)

    def resets(self):
        return lib.hv_virtio_resets(self._core, self.slot)

    def interrupt(self):
        lib.hv_virtio_interrupt(self._core, self.slot, lib.VIRTIO_MMIO_INT_VRING)

    def needs_reset(self):
        lib.hv_virtio_needs_reset(self._core, self.slot)

    def watch(self, avail_idx_gpa, last_avail, window_ns, times):
        """Watch avail.idx for up to window_ns in C, without the GIL, ending
        early when the device thread has other work; the outcome
        (HV_VIRTIO_POLL_*), times = [waited ns, ns the thread did not run]."""
        host = self._host()
        return lib.hv_virtio_poll(self._core, avail_idx_gpa, last_avail, window_ns,
                                  host.fileno() if host is not None else -1, times, times + 1)

    def forward_frames(self, tx, peer, rx, dst_mac, src_mac, max_frames, moved):
        """Frames from our transmit ring view tx to peer's receive ring view
        rx (csrc/net_frames.c): how many moved, bytes in moved[0]."""
        return lib.hv_net_forward(self._core, tx, peer._core, rx, dst_mac, src_mac,
                                  max_frames, moved)

    def wake(self, device):
        """From any thread: device has host-side input for the device thread."""
        host = self._host()
        if host is not None:
            host.wake(device)

    def close(self):
        self.closed = True
