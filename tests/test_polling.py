"""Adaptive polling of virtqueues (hv/devices/polling.py) and the core's
watch of avail.idx (hv_virtio_poll, csrc/virtio_mmio.c).  No guest: the
window's rules are checked on sequences of events, the watch on a
partition's RAM written from another thread."""
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv.abi import ffi, lib
from hv.devices import polling
from hv.devices.polling import MAX_NS, MIN_NS, AdaptivePoll, CpuPressure

T0 = 10**12                         # some monotonic time, in ns


def quiet_machine(now_ns):
    return 0.0


def test_window_grows_to_cover_the_gap_it_missed():
    p = AdaptivePoll(pressure=quiet_machine)
    assert p.window(T0) == 0        # a new queue does not poll
    p.missed(100_000, T0)           # the driver came back 100 us after service
    assert p.window(T0) == 125_000  # a quarter more than the gap
    p.hit()
    p.hit()
    assert p.window(T0) == 125_000  # hits keep it


def test_window_never_exceeds_its_maximum():
    p = AdaptivePoll(max_ns=50_000, pressure=quiet_machine)
    p.missed(45_000, T0)
    assert p.window(T0) == 50_000


def test_gaps_longer_than_the_maximum_shrink_the_window_to_nothing():
    p = AdaptivePoll(window_ns=64_000, pressure=quiet_machine)
    windows = []
    for _ in range(8):
        p.missed(10 * MAX_NS, T0)   # an idle device: the next kick came late
        windows.append(p.window(T0))
    assert windows[:3] == [32_000, 16_000, 8_000] and windows[-1] == 0


def test_two_misses_in_a_row_halve_instead_of_chasing():
    p = AdaptivePoll(pressure=quiet_machine)
    p.missed(40_000, T0)            # no watch yet: grow to the gap
    assert p.window(T0) == 50_000
    p.missed(90_000, T0)            # the first watch missed: grow again
    assert p.window(T0) == 112_500
    p.missed(90_000, T0)            # and the second: gaps vary, halve
    assert p.window(T0) == 56_250
    p.hit()
    p.missed(90_000, T0)            # a miss after a hit grows again
    assert p.window(T0) == 112_500


def test_cpu_pressure_stops_polling_for_a_while():
    level = [0.0]
    p = AdaptivePoll(window_ns=100_000, pressure=lambda now: level[0])
    assert p.window(T0) == 100_000
    level[0] = 0.5                  # threads wait for a CPU half of the time
    assert p.window(T0) == 0 and p.backoffs == 1
    level[0] = 0.0
    assert p.window(T0 + polling.BACKOFF_NS - 1) == 0
    p.missed(20_000, T0 + 1)        # misses during the pause do not regrow it
    assert p.window(T0 + polling.BACKOFF_NS) == 0
    p.missed(20_000, T0 + polling.BACKOFF_NS)
    assert p.window(T0 + polling.BACKOFF_NS) == 25_000


def test_a_watch_that_lost_its_cpu_stops_polling():
    p = AdaptivePoll(window_ns=100_000, pressure=quiet_machine)
    p.watched(100_000, 2_000, T0)   # timer noise: kept
    assert p.window(T0) == 100_000
    p.watched(100_000, 30_000, T0)  # 30 % of the watch off the CPU
    assert p.window(T0) == 0 and p.backoffs == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["hit", "miss", "watched"]),
                          st.integers(0, 4 * MAX_NS), st.integers(0, 4 * MAX_NS),
                          st.floats(0, 1)), max_size=60))
def test_window_stays_bounded_and_off_under_pressure(events):
    level, now = [0.0], T0
    p = AdaptivePoll(pressure=lambda _: level[0])
    for kind, a, b, pressure in events:
        now += a + 1
        level[0] = pressure
        if kind == "hit":
            p.hit()
        elif kind == "miss":
            p.missed(a, now)
        else:
            p.watched(a + b, b, now)
        w = p.window(now)
        assert w == 0 or MIN_NS <= w <= MAX_NS
        if pressure > polling.PRESSURE_MAX:
            assert w == 0


def test_cpu_pressure_reads_the_kernels_counter(tmp_path):
    f = tmp_path / "cpu"
    f.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n"
                 "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    psi = CpuPressure(str(f))
    assert psi.now(T0) == 0.0       # the first reading only sets the start
    f.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=6000\n")
    assert psi.now(T0 + 1_000_000) == 0.0       # read at most every PRESSURE_EVERY_NS
    assert psi.now(T0 + polling.PRESSURE_EVERY_NS) == pytest.approx(
        5000 * 1000 / polling.PRESSURE_EVERY_NS)
    assert CpuPressure(str(tmp_path / "missing")).now(T0) == 0.0


# ---- the core's watch ------------------------------------------------------------

@pytest.fixture
def partition():
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 1 << 20, pp) == 0
    ram = ffi.buffer(lib.hv_partition_ram(pp[0]), 1 << 20)
    yield pp[0], ram
    lib.hv_partition_destroy(pp[0])


def watch(p, gpa, seen, timeout_ns, fd=-1):
    times = ffi.new("uint64_t[2]")
    return lib.hv_virtio_poll(p, gpa, seen, timeout_ns, fd, times, times + 1), times


def test_watch_sees_a_post_from_another_thread(partition):
    p, ram = partition
    ram[0x102:0x104] = (7).to_bytes(2, "little")
    assert watch(p, 0x102, 6, 10**9)[0] == lib.HV_VIRTIO_POLL_POSTED    # already moved
    written = threading.Event()

    def post():
        ram[0x102:0x104] = (8).to_bytes(2, "little")
        written.set()
    writer = threading.Thread(target=post)
    writer.start()
    # Each watch lasts at most 1 ms (the core's cap): watch until the post
    # is seen, whenever the other thread gets to run.
    outcomes = []
    while not outcomes or outcomes[-1] != lib.HV_VIRTIO_POLL_POSTED:
        assert len(outcomes) < 100_000
        was_written = written.is_set()
        outcomes.append(watch(p, 0x102, 7, 10**9)[0])
        if was_written:
            assert outcomes[-1] == lib.HV_VIRTIO_POLL_POSTED
    writer.join()
    assert set(outcomes[:-1]) <= {lib.HV_VIRTIO_POLL_TIMEOUT}


def test_watch_is_bounded(partition):
    p, _ = partition
    outcome, times = watch(p, 0x100, 0, 200_000)
    assert outcome == lib.HV_VIRTIO_POLL_TIMEOUT and times[0] >= 200_000
    start = time.monotonic()
    outcome, times = watch(p, 0x100, 0, 10**12)         # capped by the core: 1 ms
    assert outcome == lib.HV_VIRTIO_POLL_TIMEOUT and times[1] <= times[0]
    assert time.monotonic() - start < 0.5


def test_watch_ends_when_the_thread_has_other_work(partition):
    p, _ = partition
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        os.eventfd_write(fd, 1)
        assert watch(p, 0x100, 0, 10**9, fd)[0] == lib.HV_VIRTIO_POLL_WOKEN
    finally:
        os.close(fd)


@pytest.mark.parametrize("gpa", [0x101, (1 << 20) - 1, 1 << 20, 2**64 - 2])
def test_watch_reads_only_aligned_words_of_ram(partition, gpa):
    p, _ = partition
    assert watch(p, gpa, 0, 1000)[0] == -22            # -EINVAL
