"""Guests on the core's scheduler (every Partition's, here a Scheduler of
two workers): the same kernels give the same results as on a thread of
their own, on both engines;
pause, resume and destroy work; many partitions share two workers, and
the process's threads grow with workers, not with partitions."""
import os
import threading

import pytest

from conftest import engine_missing, guest
from hv.console import CaptureConsole
from hv.devices.rng import RngDevice
from hv.partition import CRASHED, PAUSED, RUNNING, SHUTDOWN, Partition
from hv.scheduler import Scheduler

ENGINES = [pytest.param(e, marks=pytest.mark.skipif(engine_missing(e) is not None,
                                                    reason=f"{e}: {engine_missing(e)}"))
           for e in ("kvm", "tcg")]


@pytest.fixture(scope="module")
def sched():
    s = Scheduler(workers=2)
    yield s
    s.close()


def run(sched, name, engine, cmdline="", devices=(), mem="16M"):
    console = CaptureConsole()
    with Partition(guest(name), mem=mem, engine=engine, console=console, cmdline=cmdline,
                   devices=devices, scheduler=sched) as p:
        state = p.run()
        return state, p, console.text()


def hv_threads():
    """The process's threads but KVM's own: the kernel adds one per VM
    (kvm-nx-lpage-recovery, the NX huge-page mitigation) to the task list."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass                                     # ended meanwhile
    return sum(1 for n in names if not n.startswith("kvm"))


def last_line(text):
    return text.strip().splitlines()[-1] if text.strip() else ""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, cmdline", [
    ("hello", ""),
    ("hcall-selftest", ""),          # block, timers, multicall, the error paths
    ("timer-spin", "delta=300000"),  # the worker's timer cuts a spin without exits
])
def test_guest_succeeds_on_the_scheduler(sched, engine, name, cmdline):
    state, p, text = run(sched, name, engine, cmdline)
    assert state == SHUTDOWN, (p.crash_report, text)
    assert p.exit_code == 0, text
    if name != "hello":
        assert last_line(text) == "SUCCESS", text
    assert p.last_counters["dispatches"] >= 1


@pytest.mark.parametrize("engine", ENGINES)
def test_device_events_wake_a_blocked_vcpu(sched, engine):
    # rng-test blocks until the device thread raises the used-buffer event.
    state, p, text = run(sched, "rng-test", engine, "bytes=2048", devices=[RngDevice()])
    assert state == SHUTDOWN and last_line(text) == "SUCCESS", (p.crash_report, text)


@pytest.mark.parametrize("engine", ENGINES)
def test_crash_is_reported(sched, engine):
    state, p, text = run(sched, "crash", engine, "triple-fault")
    assert state == CRASHED, text
    assert "triple fault" in p.crash_report


@pytest.mark.parametrize("engine", ENGINES)
def test_pause_resume_destroy_a_spinning_guest(sched, engine):
    console = CaptureConsole()
    p = Partition(guest("crash"), mem="16M", engine=engine, console=console, cmdline="spin",
                  scheduler=sched)
    p.start()
    try:
        deadline = threading.Event()
        for _ in range(1000):
            if "spinning" in console.text():
                break
            deadline.wait(0.01)
        assert "spinning" in console.text()
        p.pause()
        assert p.state == PAUSED
        ran = p.counters()["run_ns"]
        deadline.wait(0.05)
        assert p.counters()["run_ns"] == ran        # paused: it never runs
        p.resume()
        assert p.state == RUNNING
        for _ in range(1000):
            if p.counters()["run_ns"] > ran:
                break
            deadline.wait(0.005)
        assert p.counters()["run_ns"] > ran
    finally:
        p.destroy()


def test_many_partitions_share_two_workers(sched):
    """200 partitions at once (both engines when KVM is here) - spinning,
    blocking on timers again and again, calling the parent - on two workers;
    half the spinners destroyed mid-run; the rest finish right, and starting
    them added no thread at all."""
    parts = []
    # Not hcall-selftest here: its timer-cancel check assumes the vCPU is not
    # descheduled for 1 ms between two hypercalls, which 200 partitions on two
    # workers do not promise (the deadline then really passes first).
    kinds = [("sched-guest", "mode=wake n=20 period=200000"), ("timer-spin", "delta=200000"),
             ("hello", ""), ("crash", "spin")]
    engines = ["tcg"] if engine_missing("kvm") else ["tcg", "kvm"]
    for i in range(200):
        name, cmdline = kinds[i % len(kinds)]
        console = CaptureConsole()
        p = Partition(guest(name), mem="4M", engine=engines[i // len(kinds) % len(engines)],
                      console=console, cmdline=cmdline, scheduler=sched)
        parts.append((name, p, console))
    threads_before = hv_threads()
    for _, p, _ in parts:
        p.start()                                    # no thread: the workers run it
    assert hv_threads() <= threads_before
    spinners = [p for name, p, _ in parts if name == "crash"]
    for p in spinners[:len(spinners) // 2]:
        p.destroy()                                  # mid-run
    try:
        for name, p, console in parts:
            if name == "crash":
                continue
            assert p.wait(timeout=120) == SHUTDOWN, (name, p.crash_report, console.text())
            assert p.exit_code == 0, console.text()
            if name != "hello":
                assert last_line(console.text()) == "SUCCESS", console.text()
    finally:
        for _, p, _ in parts:
            p.destroy()


@pytest.mark.skipif(engine_missing("tcg") is not None, reason="deterministic mode is TCG's")
def test_deterministic_partitions_share_one_worker_and_repeat_exactly():
    """Deterministic partitions run on the deterministic scheduler's one
    worker, whose slices are counted in guest instructions: a spinning one
    beside a timer-driven one is cut into slices (several dispatches), and
    the timer-driven guest prints exactly what it prints alone."""
    from hv.scheduler import deterministic_scheduler

    def wake_guest():
        console = CaptureConsole()
        p = Partition(guest("sched-guest"), mem="4M", console=console, deterministic=True,
                      cmdline="mode=wake n=10 period=1000000")
        assert p.scheduled and p._scheduler is deterministic_scheduler()
        return p, console

    alone, alone_console = wake_guest()
    with alone:
        assert alone.run() == SHUTDOWN, alone.crash_report
    spin_console = CaptureConsole()
    spinner = Partition(guest("sched-guest"), mem="4M", console=spin_console,
                        deterministic=True, cmdline="mode=spin")
    shared, shared_console = wake_guest()
    try:
        spinner.start()
        assert shared.run() == SHUTDOWN, shared.crash_report
        assert last_line(shared_console.text()) == "SUCCESS"
        assert shared_console.text() == alone_console.text()
        assert spinner.counters()["dispatches"] >= 2     # preempted at a slice's end
    finally:
        spinner.destroy()
        shared.destroy()
    with pytest.raises(ValueError, match="cannot have a cap"):
        Partition(guest("hello"), deterministic=True, cap=50)
