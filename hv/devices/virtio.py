"""The parent partition's side of virtio-mmio: the device skeleton every
backend shares, and the thread that serves a partition's devices.

T:660 The register file lives in the C core (csrc/virtio_mmio.c): the guest
never waits for Python to read a register.  What reaches Python is a kick
(an eventfd per queue; on KVM written by the kernel itself, an ioeventfd)
and driver status changes (one more eventfd).  DeviceHost waits on all of
them with one selector; a kick calls the device's serve(queue), which pops
requests from the split virtqueue in guest memory (hv/devices/virtqueue.py),
handles them, pushes the results and interrupts the guest.

Every backend has the same skeleton: class attributes DEVICE_ID, FEATURES,
QUEUES, QUEUE_MAX; config() -> bytes; serve(index, queue); reset().  A
guest that breaks a ring (QueueError) or sends a bad request it cannot be
answered for loses that device until it resets it (DEVICE_NEEDS_RESET),
with one log line and a counter; nothing else is touched.
"""
import os
import select
import threading
import time

from hv.abi import ffi, lib
from hv.devices import datapath as datapaths
from hv.devices import polling
from hv.devices.polling import AdaptivePoll
from hv.devices.errors import QueueError
from hv.log import log

# Feature bits (virtio 1.2, section 6) every hv device offers, and status
# bits: csrc/include/hv/virtio_mmio.h, through cffi (the interrupt bit is
# the transport's: hv/devices/transport.py).
VIRTIO_F_RING_INDIRECT_DESC = 1 << lib.VIRTIO_RING_F_INDIRECT_DESC
VIRTIO_F_RING_EVENT_IDX = 1 << lib.VIRTIO_RING_F_EVENT_IDX
VIRTIO_F_VERSION_1 = 1 << lib.VIRTIO_F_VERSION_1
TRANSPORT_FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_RING_INDIRECT_DESC | VIRTIO_F_RING_EVENT_IDX

STATUS_DRIVER_OK = lib.VIRTIO_STATUS_DRIVER_OK
STATUS_NEEDS_RESET = lib.VIRTIO_STATUS_NEEDS_RESET


class VirtioDevice:
    """A virtio device served by the parent partition.  Subclasses set the
    class attributes and implement serve() (and config(), reset())."""

    DEVICE_ID = 0
    FEATURES = 0            # device-specific bits; the transport adds its own
    QUEUES = 1
    QUEUE_MAX = 256
    # Queues whose buffers wait for host data (a NIC's receive queue): a kick
    # only says buffers were added; they are filled when data arrives.
    HOST_FED_QUEUES = frozenset()
    # After serving, watch the ring for the next request up to this long
    # (the window adapts to the driver: hv/devices/polling.py); 0: never.
    POLL_MAX_NS = polling.MAX_NS
    # A buffer in a frame the guest does not own (hv's boot area): True if
    # the device answers that request with an error status (serve() checks
    # Chain.refused), False if the ring is broken (DEVICE_NEEDS_RESET).
    REFUSES_FOREIGN_BUFFERS = False

    def __init__(self, name, datapath=None):
        """datapath: "compiled", "pure" or None, the copy of the data path
        this device runs (hv/devices/datapath.py)."""
        self.name = name
        self.datapath = datapaths.select(datapath)
        self.partition = None
        self.transport = None       # hv/devices/transport.py, from attach()
        self.slot = None
        self.errors = 0             # bad requests and broken rings seen
        self.requests = 0           # requests served
        self._queues = {}           # index -> SplitQueue, built when the driver is ready
        self._polls = {}            # index -> AdaptivePoll: how long to watch it after serving
        self._slept_at = {}         # index -> when it was served last, if its watch then missed
        self._served_at = 0         # when the last batch was served
        self._watch_times = ffi.new("uint64_t[2]")     # hv_virtio_poll's report
        self._broken = False        # fail()ed: nothing is served until the driver resets
        self._resets = 0            # driver resets seen (the core counts them)
        self._mem = None
        # Held while the device's queues are worked on: the device thread
        # holds it, and so may a peer's thread that hands over data directly.
        self.lock = threading.RLock()
        self.closed = False         # set under the lock: no more work after close()
        # Set under the lock while the partition is paused (freeze()): the
        # device takes no request and touches no guest memory until thaw().
        self.frozen = False
        self._positions = {}        # queue index -> (last_avail, used_idx) of a restored queue

    # -- set-up (before the guest runs) --------------------------------------
    def config(self):
        """The device's configuration space (little-endian bytes)."""
        return b""

    def attach(self, partition, slot):
        self.partition, self.slot = partition, slot
        self.transport = partition.transport(slot)
        self._mem = self.datapath.GuestMemory.for_partition(partition)
        flags = os.EFD_CLOEXEC | os.EFD_NONBLOCK
        self.queue_fds = [os.eventfd(0, flags) for _ in range(self.QUEUES)]
        self.control_fd = os.eventfd(0, flags)
        err = self.transport.add(self.DEVICE_ID, self.FEATURES | TRANSPORT_FEATURES,
                                 self.QUEUES, self.QUEUE_MAX, self.config(), self.queue_fds,
                                 self.control_fd)
        if err:
            self.close()
            raise ValueError(f"cannot add {self.name} in slot {slot}: {os.strerror(-err)}")

    @staticmethod
    def cmdline_entry(slot):
        """How the guest learns of the device in `slot` (QEMU microvm's format)."""
        base = lib.HV_VIRTIO_MMIO_BASE + slot * lib.HV_VIRTIO_MMIO_SLOT
        return f"virtio_mmio.device={lib.HV_VIRTIO_MMIO_SLOT}@{base:#x}:{lib.HV_VIRTIO_EVENT_BASE + slot}"

    def close(self):
        with self.lock:                     # no peer thread is inside us now
            self.abandon()
            for fd in getattr(self, "queue_fds", []) + [getattr(self, "control_fd", -1)]:
                if fd >= 0:
                    os.close(fd)
            self.queue_fds, self.control_fd = [], -1
            self._queues.clear()
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # -- the device thread ----------------------------------------------------
    def state(self):
        return self.transport.state()

    def on_control(self):
        """The driver changed status or readied a queue: rebuild our view."""
        with self.lock:
            self._on_control()

    def _on_control(self):
        if self.closed or self.frozen:
            return              # thaw() raises the control event again
        while True:
            s = self.state()
            if s.resets != self._resets:
                # The driver reset the device, perhaps more than once and
                # perhaps already set it up again since: drop every view of
                # the old rings, let the reset complete (T:576), start over.
                self._drop_queues()
                self._resets = s.resets
                self._broken = False
                self.reset()
            if self._broken or not s.status & STATUS_DRIVER_OK:
                return
            ready = [i for i in range(self.QUEUES) if s.queue[i].ready and i not in self._queues]
            if not ready:
                return
            # Claim the rings of this generation before reading them; if the
            # driver reset meanwhile, what we read is stale: read again.
            if self.transport.claim_rings(s.resets) == 0:
                break
        for index in ready:
            queue = self._make_queue(s, s.queue[index], index)
            if queue is None:
                return                  # fail()ed: no queue is served
            self._queues[index] = queue

    def _drop_queues(self):
        self.abandon()                      # nothing of the old rings is answered
        self._queues.clear()
        self.transport.release_rings()

    def _stale(self):
        """Has the driver reset the device since our queues were built?
        (A device driven without a transport, as unit tests do, never is.)"""
        if self.transport is None:
            return False
        return self.transport.resets() != self._resets

    def _make_queue(self, s, q, index=None):
        last_avail, used_idx = self._positions.pop(index, (0, 0))
        try:
            return self.datapath.SplitQueue(self._mem, q.num, q.desc, q.avail, q.used,
                              last_avail=last_avail, used_idx=used_idx,
                              event_idx=bool(s.driver_features & VIRTIO_F_RING_EVENT_IDX),
                              indirect=bool(s.driver_features & VIRTIO_F_RING_INDIRECT_DESC),
                              refuse_foreign=self.REFUSES_FOREIGN_BUFFERS)
        except QueueError as e:
            self.fail(f"queue set-up: {e}")
            return None

    def on_kick(self, index):
        """The driver kicked queue `index`: serve it, then watch it for a
        while (hv/devices/polling.py) while the window says so.  The watch
        holds no lock, so a peer can hand this device data meanwhile."""
        with self.lock:
            queue = self._on_kick(index)
        while queue is not None:
            outcome = self._watch(queue, self._polls[index])
            with self.lock:
                queue = self._after_watch(index, queue, outcome)

    def _on_kick(self, index):
        """Serve a kick; the queue if it is to be watched next, else None."""
        if self.frozen:
            return None             # the request waits in the ring; thaw() kicks again
        if self._stale():           # a kick for rings set up after a reset
            self._on_control()      # we have not seen yet: never the old view
        queue = self._queues.get(index)
        if queue is None:           # the kick may be seen before the status change
            self._on_control()
            queue = self._queues.get(index)
            if queue is None:
                return None         # not ready, or halted: the driver must reset
        if index in self.HOST_FED_QUEUES:
            self._serve_batch(index, queue, watch=False)    # fill what host data there is
            return None
        if self.POLL_MAX_NS == 0:
            self._serve_unwatched(index, queue)
            return None
        poll = self._polls.get(index)
        if poll is None:
            poll = self._polls[index] = AdaptivePoll(self.POLL_MAX_NS)
        served_at = self._slept_at.pop(index, None)
        before = queue.last_avail
        queue = self._serve_batch(index, queue, watch=True)
        if served_at is not None and queue is not None and queue.last_avail != before:
            # The last watch missed this request (a kick that found nothing
            # is a late one for work already done, and says nothing).
            poll.missed(self._served_at - served_at, self._served_at)
        return queue

    def _after_watch(self, index, queue, outcome):
        """Back from watching `queue`: serve what was posted, or ask for
        kicks again; the queue to watch next, or None."""
        if self.closed or self.frozen or self._queues.get(index) is not queue:
            return None             # closed, paused (thaw() kicks again), reset or failed
        if outcome == lib.HV_VIRTIO_POLL_POSTED:
            self._polls[index].hit()
        else:
            try:
                # Buffers added while kicks were off are served now (2.7.10).
                pending = queue.enable_kicks()
            except QueueError as e:
                self._queue_error(e)
                return None
            if not pending:
                if outcome == lib.HV_VIRTIO_POLL_TIMEOUT:
                    self._slept_at[index] = self._served_at     # the next kick says how long
                return None
        if self._stale():
            return None             # reset meanwhile: the control event rebuilds
        return self._serve_batch(index, queue, watch=True)

    def _serve_batch(self, index, queue, watch):
        """Serve every chain available, with kicks off if it is watched next;
        interrupt once for the batch.  The queue to watch, or None."""
        try:
            if watch:
                queue.disable_kicks()
            self.serve(index, queue)
            if queue.should_notify():
                self.interrupt()
        except QueueError as e:
            self._queue_error(e)
            return None
        self._served_at = time.perf_counter_ns()
        if self.frozen:
            return None             # paused from this thread (a backend's own pause)
        return queue if watch else None

    def _serve_unwatched(self, index, queue):
        """A device that never polls: serve, ask for the next kick, serve
        what was posted meanwhile (2.7.10); interrupt once.  Kicks stay on
        while it serves: with EVENT_IDX the driver kicks only when avail.idx
        crosses avail_event, which enable_kicks() moves past the last chain
        taken, so a batch still costs one kick, and no poll bookkeeping is
        paid for a window that is always 0."""
        try:
            while True:
                self.serve(index, queue)
                if self.frozen or not queue.enable_kicks():
                    break
            if queue.should_notify():
                self.interrupt()
        except QueueError as e:
            self._queue_error(e)

    def _queue_error(self, e):
        if self._stale():
            # The driver reset under us (it did not wait for Status to
            # read 0): what broke was the old view, not the new rings.
            self._on_control()
        else:
            self.fail(str(e))

    def _watch(self, queue, poll):
        """Watch avail.idx for up to the window (no lock, no GIL); what ended it."""
        if poll.window_ns == 0 or self.transport is None or self.transport.closed:
            return lib.HV_VIRTIO_POLL_TIMEOUT
        window = poll.window(time.perf_counter_ns())
        if window == 0:
            return lib.HV_VIRTIO_POLL_TIMEOUT
        times = self._watch_times
        outcome = self.transport.watch(queue.avail + 2, queue.last_avail, window, times)
        poll.watched(times[0], times[1], time.perf_counter_ns())
        return outcome if outcome >= 0 else lib.HV_VIRTIO_POLL_TIMEOUT

    def interrupt(self):
        self.transport.interrupt()

    def fail(self, why):
        """The guest broke this device: it needs a reset; nothing else is affected."""
        self.errors += 1
        self._drop_queues()
        self._broken = True
        log.warning("partition %s: %s: %s; device needs reset", self.transport.owner, self.name,
                    why)
        self.transport.needs_reset()

    # -- pause, snapshot, restore (hv/devices/persist.py) -------------------------
    def freeze(self):
        """The partition is paused: answer every request already taken
        (drain()), deliver the interrupt owed for them, then take no more
        and touch neither guest memory nor the backend until thaw().  What
        the guest posts meanwhile waits in its rings."""
        with self.lock:
            self.frozen = True
            self.drain()
            for queue in self._queues.values():
                try:
                    if not queue.halted and queue.should_notify():
                        self.interrupt()
                except QueueError:
                    pass                # halted: the driver must reset it anyway

    def thaw(self):
        """The partition runs again: look at every queue and the status once."""
        with self.lock:
            self.frozen = False
        self.wake_all()

    def wake_all(self):
        """A control event and a kick on every queue (a spurious kick costs
        nothing: the device finds the ring as it is), and host-side input."""
        for fd in list(getattr(self, "queue_fds", [])) + [getattr(self, "control_fd", -1)]:
            if fd >= 0:
                os.eventfd_write(fd, 1)
        if self.transport is not None and self.HOST_FED_QUEUES:
            self.transport.wake(self)

    def restore_positions(self, positions):
        """A restored device: its queues start at these (last_avail, used_idx)
        when built, and are looked at once the device thread starts."""
        with self.lock:
            self._positions = dict(positions)
        self.wake_all()

    def drain(self):
        """Answer every request taken and not yet answered (under the lock).
        Backends that answer requests before returning from serve() have
        none; blk's pool may (hv/devices/blk.py)."""

    def abandon(self):
        """The rings are being dropped (a reset, a broken ring, close):
        wait until nothing touches guest memory for a request taken, and
        answer none of them (under the lock).  Backends that answer
        requests before returning from serve() have nothing to wait for."""

    # -- what backends implement ------------------------------------------------
    def serve(self, index, queue):
        """Pop and answer every request available on queue `index`."""
        raise NotImplementedError

    def reset(self):
        """The driver reset the device: forget per-driver state."""

    def notify_host(self):
        """Called when host-side input may be ready (e.g. a frame arrived)."""


class DeviceHost:
    """One thread that serves every device of a partition: it waits on their
    eventfds (and a wake-up fd for host-side input) and dispatches."""

    def __init__(self, partition, devices):
        self.partition = partition
        self.devices = list(devices)
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._targets = {self._wake: None}     # fd -> (device, queue index or None)
        for dev in self.devices:
            self._targets[dev.control_fd] = (dev, None)
            for index, fd in enumerate(dev.queue_fds):
                self._targets[fd] = (dev, index)
        for fd in self._targets:
            self._epoll.register(fd, select.EPOLLIN)
        self._host_work = []            # devices with host-side input pending
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"devices-{partition.id}")

    def start(self):
        self._thread.start()

    def wake(self, device):
        """From any thread: `device` has host-side input (net frames, console input)."""
        with self._lock:
            if self._stop:
                return              # the partition has stopped: nothing to serve
            self._host_work.append(device)
            os.eventfd_write(self._wake, 1)

    def fileno(self):
        """The epoll fd: readable while any device has work."""
        return self._epoll.fileno()

    def stop(self):
        with self._lock:
            self._stop = True
            os.eventfd_write(self._wake, 1)
        if self._thread.is_alive():
            self._thread.join()
        self._epoll.close()
        os.close(self._wake)

    def _loop(self):
        targets = self._targets
        while not self._stop:
            for fd, _ in self._epoll.poll():
                try:
                    os.eventfd_read(fd)
                except BlockingIOError:
                    continue
                target = targets[fd]
                if target is None:
                    with self._lock:
                        work, self._host_work = self._host_work, []
                    for dev in work:
                        try:
                            dev.notify_host()
                        except Exception as e:
                            dev.fail(f"backend error: {type(e).__name__}: {e}")
                    continue
                dev, index = target
                try:
                    if index is None:
                        dev.on_control()
                    else:
                        dev.on_kick(index)
                except Exception as e:      # a backend's own bug costs only that device
                    dev.fail(f"backend error: {type(e).__name__}: {e}")
