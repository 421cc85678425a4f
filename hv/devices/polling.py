"""How long a device watches a ring after serving it: adaptive polling.

T:663 A kick costs the guest an exit (on this kind of machine's software
KVM 7-11 us from ring 0, an ioeventfd still ~1 us) and the device thread a
wake-up (1-25 us here, more under load).  A driver that posts its next
request soon after the last completion avoids both if the device is still
watching avail.idx with kicks suppressed (VRING_USED_F_NO_NOTIFY or
avail_event, 2.7.10) -- QEMU's iothreads do the same (aio poll).  Watching
costs a host CPU, so the window follows the driver:

- a request that arrives inside the window: the window stays;
- the window passed and the next kick came `idle_ns` after the service
  (watch included, as QEMU counts it): if that was shorter than `max_ns`, the window grows to cover it (a
  quarter more, at least double), so the next gap like it is caught;
  if longer, the window halves: a device used now and then polls less and
  less, down to not at all; an idle one never polls;
- two misses in a row (the gaps vary more than a window can follow): the
  window halves instead;
- the machine has no CPU to spare: Linux's pressure stall information
  (/proc/pressure/cpu) says threads waited for a CPU in more than
  PRESSURE_MAX of the last PRESSURE_EVERY_NS, or the polling thread itself
  was kept off its CPU for more than an eighth of a watch.  Spinning then
  takes time from other threads (the guest's own vCPU may be one of them):
  the device stops polling for BACKOFF_NS, then starts over from no window.

The spin itself runs in C without the GIL (hv_virtio_poll, csrc/virtio_mmio.c),
bounded by the window and by a cap in the core, which also says how much
of the watch the thread did not run.
"""
import os
import threading

MAX_NS = 256_000            # never watch longer than this after serving
MIN_NS = 2_000              # a window smaller than this is no window
BACKOFF_NS = 50_000_000     # no polling this long after a watch lost its CPU
STOLEN_MIN_NS = 4_000       # less lost than this is timer noise, not contention
PRESSURE_EVERY_NS = 20_000_000      # how often the CPU pressure is read
PRESSURE_MAX = 0.05         # threads waited for a CPU this much of the time: no polling


class CpuPressure:
    """The share of recent time in which some thread waited for a CPU
    (/proc/pressure/cpu, "some" total), read at most every PRESSURE_EVERY_NS
    by whichever device asks; 0.0 where the kernel has no PSI."""

    def __init__(self, path="/proc/pressure/cpu"):
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = -1
        self._lock = threading.Lock()
        self._at = self._total_us = 0
        self.value = 0.0

    def _read_total_us(self):
        text = os.pread(self._fd, 256, 0).decode()
        for word in text.split("\n", 1)[0].split():
            if word.startswith("total="):
                return int(word[6:])
        raise ValueError("no total= in /proc/pressure/cpu")

    def now(self, now_ns):
        if self._fd < 0 or now_ns - self._at < PRESSURE_EVERY_NS:
            return self.value
        with self._lock:
            if now_ns - self._at >= PRESSURE_EVERY_NS:
                try:
                    total = self._read_total_us()
                except (OSError, ValueError):
                    return self.value
                if self._at:
                    self.value = (total - self._total_us) * 1000 / (now_ns - self._at)
                self._at, self._total_us = now_ns, total
        return self.value


PRESSURE = CpuPressure()


class AdaptivePoll:
    """The polling window of one queue, in ns (0: do not poll)."""

    def __init__(self, max_ns=MAX_NS, window_ns=0, pressure=None):
        """pressure(now_ns) -> the CPU pressure (PRESSURE.now by default)."""
        if max_ns < 0 or not 0 <= window_ns <= max_ns:
            raise ValueError(f"window {window_ns} ns outside [0, {max_ns}]")
        self.max_ns = max_ns
        self.window_ns = window_ns
        self.quiet_until = 0            # no polling before this (monotonic ns)
        self._pressure = pressure or PRESSURE.now
        self._missed_last = False
        self.hits = self.misses = self.backoffs = 0    # for metrics and benchmarks

    def window(self, now_ns):
        """How long to watch now."""
        if self.window_ns == 0 or now_ns < self.quiet_until:
            return 0
        if self._pressure(now_ns) > PRESSURE_MAX:
            self._back_off(now_ns)
            return 0
        return self.window_ns

    def hit(self):
        """A request arrived while the device watched."""
        self.hits += 1
        self._missed_last = False

    def missed(self, idle_ns, now_ns):
        """The window passed without a request, and the next kick came idle_ns
        after the end of the last service (the watch included)."""
        self.misses += 1
        if now_ns < self.quiet_until:
            return
        # Two watches in a row that missed: halve rather than chase the gaps.
        twice = self._missed_last and self.window_ns > 0
        self._missed_last = self.window_ns > 0
        if idle_ns <= self.max_ns and not twice:
            grown = max(2 * self.window_ns, idle_ns + idle_ns // 4, MIN_NS)
            self.window_ns = min(self.max_ns, grown)
        else:
            self.window_ns //= 2
            if self.window_ns < MIN_NS:
                self.window_ns = 0

    def watched(self, waited_ns, stolen_ns, now_ns):
        """A watch took waited_ns, of which the thread ran all but stolen_ns."""
        if stolen_ns > STOLEN_MIN_NS and 8 * stolen_ns > waited_ns:
            self._back_off(now_ns)

    def _back_off(self, now_ns):
        self.backoffs += 1
        self.window_ns = 0
        self.quiet_until = now_ns + BACKOFF_NS
