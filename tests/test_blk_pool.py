"""virtio-blk requests served out of order: inline from the page cache, or
by the worker pool (hv/devices/blk_pool.py) when they would wait for the
disk -- on both copies of the data path (hv/devices/datapath.py), through
the real BlkDevice, against the driver model of tests/models/virtqueue_ref.py.

- a reference model that allows any completion order: every request
  completes exactly once, with the status, length and data virtio-blk
  means, whatever the order; the image and the dirty map agree;
- the pool is forced (BlkRequests.force_pool, the stand-in for a cold page
  cache) or held (a gate in front of the worker) to make the order, the
  FLUSH rule, freeze, reset and close deterministic;
- a guest at queue depth 16 whose every read and write goes to the pool.
"""
import errno
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models.virtqueue_ref import WRITABLE_FILL, Driver

from conftest import guest, kvm_missing_reason
from hv.devices import datapath
from hv.devices.blk import BlkDevice
from hv.devices.blk_io import (
    HEADER,
    S_IOERR,
    S_OK,
    S_UNSUPP,
    SECTOR,
    T_DISCARD,
    T_FLUSH,
    T_GET_ID,
    T_IN,
    T_OUT,
)
from hv.devices.errors import QueueError
from hv.testing.results import parse_result

MEM, RING, DATA = 0x40000, 0x1000, 0x4000
DISK_SECTORS = 64
PATHS = ["pure", "compiled"]
ENGINES = ["tcg", pytest.param("kvm", marks=pytest.mark.skipif(bool(kvm_missing_reason()),
                                                              reason=kvm_missing_reason() or ""))]


def seed_bytes():
    return bytes(i * 7 & 0xFF for i in range(DISK_SECTORS * SECTOR))


class Rig:
    """A real BlkDevice with no partition: its queue is a ring in a
    bytearray, driven by the model driver; interrupts are counted."""

    def __init__(self, name, image, size=16, readonly=False):
        p = datapath.PURE if name == "pure" else datapath.COMPILED
        assert p is not None, datapath.WHY_NOT_COMPILED
        self.mem = bytearray(MEM)
        self.written = bytearray(MEM // 4096)
        self.drv = Driver(self.mem, size, RING, DATA, MEM, event_idx=True)
        r = self.drv.ring
        self.q = p.SplitQueue(p.GuestMemory(self.mem, written=self.written), size, r.desc,
                              r.avail, r.used, event_idx=True, indirect=True,
                              refuse_foreign=True)
        self.dev = BlkDevice(str(image), readonly=readonly, datapath=name)
        self.dev._queues[0] = self.q
        self.interrupts = 0
        self.dev.interrupt = self._interrupt

    def _interrupt(self):
        self.interrupts += 1

    def kick(self):
        """What the device thread does for a kick (without watching)."""
        with self.dev.lock:
            self.dev._serve_batch(0, self.q, watch=False)

    def hold(self):
        """Hold every pool request in front of its I/O until release()."""
        gate, run = threading.Event(), self.dev.pool._run
        self.log, self.started = [], threading.Semaphore(0)

        def held(job):
            self.started.release()          # a worker (or a waiter) has taken it
            gate.wait()
            run(job)
            self.log.append(("done", job.kind))
        self.dev.pool._run = held
        return gate

    def close(self):
        self.dev.close()


def offer(drv, kind, sector, count, fill):
    """A request as a correct driver posts it: (head, data gpa ranges, status gpa)."""
    header = HEADER.pack(kind, 0, sector)
    if kind == T_OUT:
        head = drv.add([header, bytes([fill]) * (count * SECTOR)] if count else [header], [1],
                       indirect=True)
    elif kind == T_DISCARD:
        head = drv.add([header, DISCARD(sector, count)], [1], indirect=True)
    else:
        room = 20 if kind == T_GET_ID else count * SECTOR
        head = drv.add([header], ([room] if room else []) + [1], indirect=True)
    assert head is not None
    writable = drv.in_flight[head].writable
    gpa, n = writable[-1]
    return head, writable[:-1], gpa + n - 1


def DISCARD(sector, count):
    return sector.to_bytes(8, "little") + count.to_bytes(4, "little") + bytes(4)


def expected(kind, sector, count, readonly):
    """(status, used length) virtio-blk means for a request (in any order)."""
    fits = sector + count <= DISK_SECTORS
    if kind == 99:
        return S_UNSUPP, 1
    if kind == T_FLUSH:
        return S_OK, 1
    if kind == T_GET_ID:
        return S_OK, 21
    if not fits or readonly and kind in (T_OUT, T_DISCARD):
        return S_IOERR, 1
    return S_OK, 1 + (count * SECTOR if kind == T_IN else 0)


requests = st.tuples(
    st.sampled_from([T_IN, T_IN, T_OUT, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, 99]),
    st.one_of(st.integers(0, DISK_SECTORS + 2), st.just(2**64 - 1)),    # sector
    st.integers(0, 3),                                                  # sectors of data
    st.integers(1, 255))                                                # fill byte
# Epochs: batches kicked one after another without waiting (requests of
# several batches are in flight together), then every answer is awaited.
# force: the batch's reads and writes go to the pool as on a cold cache.
batches = st.lists(st.tuples(st.lists(requests, min_size=1, max_size=5), st.booleans()),
                   min_size=1, max_size=3)
epochs = st.lists(batches, min_size=1, max_size=3)


@pytest.mark.parametrize("name", PATHS)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(epochs=epochs, readonly=st.booleans())
def test_every_request_completes_once_with_its_answer_in_any_order(tmp_path, name, epochs,
                                                                   readonly):
    image = tmp_path / f"{name}.img"
    image.write_bytes(seed_bytes())
    rig = Rig(name, image, readonly=readonly)
    disk = bytearray(seed_bytes())          # the model's disk at the start of the epoch
    try:
        for epoch in epochs:
            # Per byte of the disk, the values a read in this epoch may see:
            # the epoch's start, or any write or discard posted in it (they
            # are in flight together, in no order).
            maybe = {}
            posted = {}                     # head -> (request, data ranges, status gpa)
            for batch, force in epoch:
                for req in batch:
                    kind, sector, count, fill = req
                    head, data, status_gpa = offer(rig.drv, kind, sector, count, fill)
                    posted[head] = (req, data, status_gpa)
                    ok = expected(kind, sector, count, readonly)[0] == S_OK
                    if ok and kind in (T_OUT, T_DISCARD):
                        for b in range(sector * SECTOR, (sector + count) * SECTOR):
                            maybe.setdefault(b, set()).add(fill if kind == T_OUT else 0)
                rig.dev.io.force_pool = force
                rig.drv.set_used_event(rig.drv.last_used)   # interrupt me at the next answer
                rig.kick()
            with rig.dev.lock:
                rig.dev.drain()             # freeze's wait: every pool request answered
            used = rig.drv.get_used()       # a second answer for a head: KeyError
            assert sorted(h for h, _ in used) == sorted(posted), "a request was not answered"
            assert rig.dev.io.waiting == 0 and rig.dev.pool.in_flight == 0
            for head, length in used:
                (kind, sector, count, fill), data, status_gpa = posted[head]
                status, want_length = expected(kind, sector, count, readonly)
                assert (rig.mem[status_gpa], length) == (status, want_length), (kind, sector, count)
                if kind == T_IN and status == S_OK:
                    got = b"".join(bytes(rig.mem[g:g + n]) for g, n in data)
                    base = sector * SECTOR
                    for i, byte in enumerate(got):
                        assert byte == disk[base + i] or byte in maybe.get(base + i, ()), \
                            f"read of sector {sector}: byte {i} is {byte}"
                    for g, n in data:       # the kernel wrote guest RAM: marked for migration
                        assert all(rig.written[f] for f in range(g >> 12, (g + n + 4095) >> 12))
            now = image.read_bytes()
            for b, values in maybe.items():
                assert now[b] in values, f"disk byte {b} is {now[b]}, not one written"
            assert all(now[b] == disk[b] for b in range(len(disk)) if b not in maybe)
            disk = bytearray(now)
            if any(expected(kind, sector, count, readonly)[0] == S_OK and
                   (kind in (T_FLUSH, T_DISCARD) or force and kind in (T_IN, T_OUT) and count)
                   for batch, force in epoch for kind, sector, count, _ in batch):
                assert rig.dev.io.deferred > 0
                assert rig.interrupts > 0, "answers from the pool raised no interrupt"
    finally:
        rig.close()


# ---- the order, made deterministic by holding the pool ---------------------------------

@pytest.fixture(params=PATHS)
def rig(request, tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(seed_bytes())
    r = Rig(request.param, image)
    yield r
    r.close()


def test_a_slow_read_completes_after_the_fast_ones_behind_it(rig):
    gate = rig.hold()
    rig.dev.io.force_pool = True
    slow, slow_data, slow_status = offer(rig.drv, T_IN, 1, 2, 0)
    rig.kick()
    rig.dev.io.force_pool = False
    fast = [offer(rig.drv, T_IN, s, 1, 0)[0] for s in (5, 6)] + \
        [offer(rig.drv, T_GET_ID, 0, 0, 0)[0]]
    rig.kick()
    assert [h for h, _ in rig.drv.get_used()] == fast      # answered inline, in order
    assert rig.mem[slow_status] == WRITABLE_FILL           # untouched while in the pool
    rig.drv.set_used_event(rig.drv.last_used)
    before = rig.interrupts
    gate.set()
    with rig.dev.lock:
        rig.dev.drain()
    assert rig.drv.get_used() == [(slow, 1 + 2 * SECTOR)]
    assert rig.mem[slow_status] == S_OK
    got = b"".join(bytes(rig.mem[g:g + n]) for g, n in slow_data)
    assert got == seed_bytes()[SECTOR:3 * SECTOR]
    assert rig.interrupts == before + 1


def test_a_flush_in_the_pool_holds_up_no_read_and_covers_the_writes_answered_before(rig, monkeypatch):
    """virtio 1.2 5.2.6: a write is stable once completed and a FLUSH sent
    after it completed has completed.  The write is answered (used) before
    the FLUSH is posted; the fsync must start after its pwritev returned,
    and reads posted behind the FLUSH are answered while it waits."""
    events = []
    real_os = rig.dev.datapath.blk_io.os

    class Os:
        def __getattr__(self, name):
            return getattr(real_os, name)

        def pwritev(self, fd, views, offset, *flags):
            n = real_os.pwritev(fd, views, offset, *flags)
            events.append("pwritev")
            return n

        def fsync(self, fd):
            events.append("fsync")
            real_os.fsync(fd)
    monkeypatch.setattr(rig.dev.datapath.blk_io, "os", Os())
    gate = rig.hold()
    write = offer(rig.drv, T_OUT, 3, 1, 0x5A)[0]
    rig.kick()
    assert rig.drv.get_used() == [(write, 1)]
    flush, _, flush_status = offer(rig.drv, T_FLUSH, 0, 0, 0)
    reads = [offer(rig.drv, T_IN, s, 1, 0)[0] for s in (3, 9)]
    rig.kick()
    assert [h for h, _ in rig.drv.get_used()] == reads     # not behind the fsync
    assert rig.mem[flush_status] == WRITABLE_FILL
    gate.set()
    with rig.dev.lock:
        rig.dev.drain()
    assert rig.drv.get_used() == [(flush, 1)] and rig.mem[flush_status] == S_OK
    assert events == ["pwritev", "fsync"]


@pytest.mark.parametrize("driver_flush", [True, False])
def test_a_driver_without_flush_gets_each_write_stable_before_it_completes(rig, monkeypatch,
                                                                           driver_flush):
    """Regression: virtio 1.2 5.2.6.2 -- FLUSH offered but not negotiated:
    a completed write is stable.  hv used to leave it in the page cache."""
    import types
    from hv.devices.blk import F_FLUSH
    from hv.devices.virtio import VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC
    r = rig.drv.ring
    rig.dev._mem = rig.q.mem
    features = VIRTIO_F_RING_EVENT_IDX | VIRTIO_F_RING_INDIRECT_DESC | \
        (1 << F_FLUSH if driver_flush else 0)
    rig.q = rig.dev._queues[0] = rig.dev._make_queue(
        types.SimpleNamespace(driver_features=features),
        types.SimpleNamespace(num=16, desc=r.desc, avail=r.avail, used=r.used), 0)
    assert rig.dev.io.writethrough == (not driver_flush)
    events = []
    real_os = rig.dev.datapath.blk_io.os

    class Os:
        def __getattr__(self, name):
            return getattr(real_os, name)

        def fdatasync(self, fd):
            real_os.fdatasync(fd)
            events.append(("fdatasync", rig.q.used_idx))
    monkeypatch.setattr(rig.dev.datapath.blk_io, "os", Os())
    import time
    rig.dev.pool._max = 1                   # one after the other: the order is known
    heads = [offer(rig.drv, T_OUT, 3, 1, 0x77)[0], offer(rig.drv, T_DISCARD, 5, 2, 0)[0]]
    rig.kick()
    deadline = time.monotonic() + 30
    while rig.q.used_idx != 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    with rig.dev.lock:
        assert sorted(h for h, _ in rig.drv.get_used()) == sorted(heads)
    # Each synced before its own answer: the used index had not counted it.
    assert events == ([] if driver_flush else [("fdatasync", 0), ("fdatasync", 1)])


def freeze_like(rig, what):
    """Run what() (freeze's drain, or abandon) on another thread while the
    pool holds a read; release the read only once what() had time to
    return early.  What what() left behind, and the log."""
    gate = rig.hold()
    rig.dev.io.force_pool = True
    head, data, status = offer(rig.drv, T_IN, 2, 1, 0)
    rig.kick()
    rig.started.acquire()                   # its I/O has begun
    returned = []

    def go():
        what()                              # each takes the device lock itself
        returned.append(list(rig.log))      # what the pool had done when it returned
    t = threading.Thread(target=go)
    t.start()
    t.join(0.2)                             # a wrong what() returns now, before the I/O
    gate.set()
    t.join()
    return head, status, returned[0]


def test_freeze_waits_for_the_pool_and_answers_what_it_held(rig):
    head, status, log_at_return = freeze_like(rig, rig.dev.freeze)
    assert log_at_return == [("done", T_IN)]
    assert rig.drv.get_used() == [(head, 1 + SECTOR)] and rig.mem[status] == S_OK
    assert rig.q.last_avail == rig.q.used_idx      # quiesced: a snapshot may be taken
    rig.dev.frozen = False


def test_a_reset_waits_for_the_pool_and_answers_nothing(rig):
    used_before = bytes(rig.mem[rig.drv.ring.used:rig.drv.ring.end])
    head, status, log_at_return = freeze_like(rig, rig.dev.abandon)
    assert log_at_return == [("done", T_IN)]       # the preadv was over when it returned
    rig.dev._queues.clear()                         # as _drop_queues() goes on to do
    rig.dev._pool_done()                            # a late answer finds nothing to push
    assert bytes(rig.mem[rig.drv.ring.used:rig.drv.ring.end]) == used_before
    assert rig.mem[status] == WRITABLE_FILL
    assert rig.dev.io.waiting == 0


def test_a_reset_drops_the_requests_no_worker_has_started(rig):
    """One worker, held in its read; the second read waits in the pool's
    queue.  The reset waits for the first and never starts the second."""
    rig.dev.pool._max = 1
    gate = rig.hold()
    rig.dev.io.force_pool = True
    statuses = [offer(rig.drv, T_IN, s, 1, 0)[2] for s in (2, 4)]
    rig.kick()
    rig.started.acquire()
    t = threading.Thread(target=rig.dev.abandon)
    t.start()
    t.join(0.2)
    gate.set()
    t.join()
    assert rig.log == [("done", T_IN)]              # the second never ran
    assert rig.dev.pool.in_flight == 0 and rig.dev.io.waiting == 0
    assert [rig.mem[s] for s in statuses] == [WRITABLE_FILL] * 2
    assert rig.drv.get_used() == []


def test_close_waits_for_the_pool_and_its_threads_end(rig):
    used_before = bytes(rig.mem[rig.drv.ring.used:rig.drv.ring.end])
    head, status, log_at_return = freeze_like(rig, rig.dev.close)
    assert log_at_return == [("done", T_IN)]
    assert bytes(rig.mem[rig.drv.ring.used:rig.drv.ring.end]) == used_before
    assert not any(t.is_alive() for t in rig.dev.pool._threads)


def test_queued_reads_the_page_cache_holds_are_answered_with_the_slow_one(rig):
    """One worker, held in the first read; two more wait in its queue, and
    the image is in the page cache: once the first is done, the worker
    finishes the other two without blocking and answers all three under
    one interrupt."""
    import time
    rig.dev.pool._max = 1
    gate = rig.hold()
    rig.dev.io.force_pool = True
    posted = [offer(rig.drv, T_IN, s, 1, 0) for s in (1, 7, 12)]
    rig.drv.set_used_event(rig.drv.last_used)
    rig.kick()
    rig.started.acquire()
    gate.set()
    deadline = time.monotonic() + 30
    while rig.q.used_idx != 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    with rig.dev.lock:
        used = rig.drv.get_used()
    assert sorted(used) == sorted((h, 1 + SECTOR) for h, _, _ in posted)
    assert rig.log == [("done", T_IN)]          # only the first went through run()
    assert rig.interrupts == 1
    for head, data, status in posted:
        sector = {h: s for (h, _, _), s in zip(posted, (1, 7, 12))}[head]
        got = b"".join(bytes(rig.mem[g:g + n]) for g, n in data)
        assert got == seed_bytes()[sector * SECTOR:(sector + 1) * SECTOR]
        assert rig.mem[status] == S_OK


def test_a_worker_answers_the_queued_jobs_already_done_with_its_own():
    """One worker finishes job 0 (blocking), then takes 1 and 2, whose I/O
    is done (ready), and hands the three back in one on_done(); 3 is not
    ready, so it is put back first in line and run blocking after."""
    from hv.devices.blk_pool import BlkPool
    gate, answered, ran, finished = threading.Event(), [], [], threading.Event()

    def run(job):
        if job == 0:
            gate.wait()
        ran.append(job)

    def on_done():
        answered.append(pool.take_done())
        if sum(map(len, answered)) == 4:
            finished.set()
    pool = BlkPool(run, on_done, workers=1, ready=lambda job: job in (1, 2))
    for job in range(4):
        pool.submit(job)
    gate.set()
    assert finished.wait(30)
    pool.stop()
    assert ran == [0, 3]                        # 1 and 2 never blocked
    assert answered == [[0, 1, 2], [3]]


def test_wait_idle_runs_a_job_a_worker_put_back_while_it_waited():
    """Regression: a worker had taken a queued job to see whether it was
    ready (it was not) when wait_idle() found the queue empty and waited;
    the worker put the job back and then blocked on the lock the waiter
    holds (the device lock), so nobody ran the job: freeze hung."""
    from hv.devices.blk_pool import BlkPool
    device_lock = threading.Lock()
    gate, looking, not_ready = threading.Event(), threading.Event(), threading.Event()

    def run(job):
        if job == "a":
            gate.wait()

    def ready(job):
        looking.set()
        not_ready.wait()
        return False

    def on_done():
        with device_lock:
            pool.take_done()
    pool = BlkPool(run, on_done, workers=1, ready=ready)
    pool.submit("a")
    pool.submit("b")
    gate.set()
    assert looking.wait(30)                 # the worker holds "b", deciding

    def freeze():
        with device_lock:
            pool.wait_idle()
    t = threading.Thread(target=freeze, daemon=True)
    t.start()
    t.join(0.2)                             # wait_idle() is waiting now
    not_ready.set()                         # "b" goes back to the queue
    t.join(30)
    assert not t.is_alive(), "wait_idle() never ran the job put back"
    assert pool.in_flight == 0
    pool.stop()


def test_more_requests_in_flight_than_descriptors_halt_the_queue(tmp_path):
    """A driver that reuses a head the pool still holds is broken: the
    queue halts rather than let the pool grow past the ring."""
    image = tmp_path / "d.img"
    image.write_bytes(seed_bytes())
    rig = Rig("compiled" if datapath.COMPILED else "pure", image, size=4)
    gate = rig.hold()
    rig.dev.io.force_pool = True
    heads = [offer(rig.drv, T_IN, s, 1, 0)[0] for s in range(4)]
    try:
        with rig.dev.lock:
            rig.dev.io.serve(rig.q)
        assert rig.dev.io.waiting == 4
        rig.drv.publish(heads[0])               # the same chain once more
        with pytest.raises(QueueError, match="more than 4 requests in flight"):
            with rig.dev.lock:
                rig.dev.io.serve(rig.q)
        assert rig.dev.pool.in_flight == 4
    finally:
        gate.set()
        rig.close()


# ---- a guest at depth 16, every request through the pool --------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_blk_bench_at_depth_16_through_the_pool(engine, tmp_path):
    from hv.console import CaptureConsole
    from hv.partition import Partition
    region, rand_ops = 256 << 10, 64
    image = tmp_path / "bench.img"
    image.write_bytes(bytes(2048 * SECTOR + region + (64 << 10)))
    dev = BlkDevice(str(image))
    dev.io.force_pool = True                # as if the page cache held nothing
    con = CaptureConsole()
    cmdline = (f"region={region} passes=1 seq_size=16K rand_ops={rand_ops} rand_size=4K "
               "depths=1,16 seed=7")
    part = Partition(guest("blk-bench"), mem="64M", cmdline=cmdline, engine=engine,
                     console=con, devices=[dev])
    try:
        part.start()
        part.wait(120)
    finally:
        part.destroy()
    text = con.text()
    assert parse_result(text)[0] == "SUCCESS", text     # the guest checked every read
    assert dev.io.deferred >= 2 * (2 * region // (16 << 10) + 2 * rand_ops)
    assert dev.errors == 0
    data = image.read_bytes()[2048 * SECTOR:2048 * SECTOR + region]
    for s in range(region // SECTOR):           # stamped by seed 7 or, written at random, 8
        word = int.from_bytes(data[s * SECTOR:s * SECTOR + 8], "little")
        assert word in (stamp(2048 + s, 7), stamp(2048 + s, 8)), s
        assert int.from_bytes(data[s * SECTOR + 504:s * SECTOR + 512], "little") == \
            word ^ ((1 << 64) - 1)


def stamp(sector, seed):
    """guests/blk-bench stamp()."""
    return (((seed << 40) ^ sector) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)


def test_a_read_alone_that_would_wait_is_read_inline_more_go_to_the_pool(rig, monkeypatch):
    """Nothing cached (RWF_NOWAIT says EAGAIN): a read with no other request
    in the pool or on the ring waits for the disk on the device thread (no
    hand-off); reads with others behind them go to the pool."""
    real = os.preadv

    def cold(fd, views, offset, flags=0):
        if flags & os.RWF_NOWAIT:
            raise BlockingIOError(errno.EAGAIN, "not cached")
        return real(fd, views, offset)
    monkeypatch.setattr(os, "preadv", cold)
    head, data, status = offer(rig.drv, T_IN, 1, 2, 0)
    rig.kick()
    assert rig.drv.get_used() == [(head, 1 + 2 * SECTOR)] and rig.dev.io.deferred == 0
    assert b"".join(bytes(rig.mem[g:g + n]) for g, n in data) == seed_bytes()[SECTOR:3 * SECTOR]
    heads = [offer(rig.drv, T_IN, s, 1, 0)[0] for s in (3, 4)]
    rig.kick()
    with rig.dev.lock:
        rig.dev.drain()
    assert sorted(h for h, _ in rig.drv.get_used()) == sorted(heads)
    assert rig.dev.io.deferred == 2
