"""SMP partitions (docs/scheduler.md, "SMP"): several vCPUs per partition.

The guests check themselves and end with one result line: smp-counter
(atomic and lock-protected totals exact), ipi-pingpong, tlb-shootdown,
smp-selftest (every error path, and that an error changes nothing),
smp-coherence (code one vCPU writes runs on the other; stores in order).  Here:
each on both engines, the command line, pause/resume/destroy stopping
every vCPU, a crash of one vCPU stopping its partition only, and the
dispatcher's SMP error paths driven directly with the state digest.
"""
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, engine_missing, guest
from hv.abi import ffi, lib
from hv.console import CaptureConsole
from hv.partition import CRASHED, DESTROYED, PAUSED, RUNNING, SHUTDOWN, Partition
from hv.scheduler import Scheduler
from hv.testing.core import Core

ENGINES = [pytest.param(e, marks=pytest.mark.skipif(engine_missing(e) is not None,
                                                    reason=f"{e}: {engine_missing(e)}"))
           for e in ("kvm", "tcg")]
# Enough additions that TCG's slices (0.5-10 ms) cut into the loops.
COUNTER_N = {"kvm": 3000, "tcg": 400000}


@pytest.fixture(scope="module")
def sched():
    s = Scheduler(workers=2)
    yield s
    s.close()


def run(sched, name, engine, smp, cmdline=""):
    console = CaptureConsole()
    with Partition(guest(name), mem="16M", engine=engine, console=console, cmdline=cmdline,
                   scheduler=sched, smp=smp) as p:
        state = p.run()
        return state, p, console.text()


def result(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("smp", [2, 4])
def test_counter_totals_are_exact(sched, engine, smp):
    n = COUNTER_N[engine]
    state, p, text = run(sched, "smp-counter", engine, smp, f"n={n}")
    assert state == SHUTDOWN and result(text) == "SUCCESS", (p.crash_report, text)
    assert f"smp-counter: cpus={smp} n={n} xadd={n * smp} locked={n * smp}" in text


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, cmdline", [
    ("ipi-pingpong", "rounds=200"),
    ("tlb-shootdown", ""),
    ("smp-selftest", ""),
    ("smp-coherence", "rounds=200"),    # cross-modifying code, store buffering, message passing
])
def test_smp_guest_succeeds(sched, engine, name, cmdline):
    state, p, text = run(sched, name, engine, 2, cmdline)
    assert state == SHUTDOWN and result(text) == "SUCCESS", (p.crash_report, text)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_ipi_to_a_down_vcpu_reaches_it_once_it_is_up(sched, engine):
    # smp-snap's last vCPU goes down half way and is brought up again; the
    # vCPU before it in the ring sends it an IPI meanwhile.  vcpu_up used
    # to drop the upcall that IPI left owed (upcall_pending set in its
    # block, so no later event injected one): the ring stopped for good.
    # On KVM the vCPU brought up again also inherited the last exit's
    # interrupt_bitmap and took the old vector into an IDT not yet loaded.
    state, p, text = run(sched, "smp-snap", engine, 3, "rounds=12 pause=500000")
    assert state == SHUTDOWN and result(text) == "SUCCESS", (p.crash_report, text)
    assert text.count("token=12 ") == 3


def test_tcg_tlb_is_stale_without_the_flush(sched):
    # The control for tlb-shootdown: on TCG each vCPU's TLB really holds the
    # old translation, so the fault there is the hypercall's doing.
    if engine_missing("tcg"):
        pytest.skip(engine_missing("tcg"))
    state, p, text = run(sched, "tlb-shootdown", "tcg", 2, "flush=0")
    assert state == SHUTDOWN and "fault=none read=0x5eed" in text, (p.crash_report, text)


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_smp_counter(engine):
    # The "done when": hv run --smp 4 guests/build/smp-counter.elf.
    proc = subprocess.run([sys.executable, "-m", "hv", "run", "--engine", engine, "--smp", "4",
                           guest("smp-counter")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "SUCCESS", proc.stdout


def sched_states(p):
    info = ffi.new("struct hv_sched_info *")
    out = []
    for v in p._vcpus:
        assert lib.hv_sched_vcpu_info(v, info) == 0
        out.append(info.state)
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_pause_resume_destroy_stop_every_vcpu(sched, engine):
    console = CaptureConsole()
    p = Partition(guest("smp-counter"), mem="16M", engine=engine, console=console,
                  cmdline="n=100000000", scheduler=sched, smp=4)
    try:
        p.start()
        # Wait until the secondaries are up (they leave DOWN).
        deadline = 200
        while deadline and sched_states(p).count(lib.HV_SCHED_DOWN) > 0:
            threading.Event().wait(0.05)
            deadline -= 1
        assert deadline, sched_states(p)
        p.pause()
        assert p.state == PAUSED
        assert sched_states(p) == [lib.HV_SCHED_PAUSED] * 4
        runtime = [Partition.vcpu_counters(v)["run_ns"] for v in p._vcpus]
        threading.Event().wait(0.1)
        assert [Partition.vcpu_counters(v)["run_ns"] for v in p._vcpus] == runtime
        p.resume()
        assert p.state == RUNNING
        assert lib.HV_SCHED_PAUSED not in sched_states(p)
    finally:
        p.destroy()
    assert p.state == DESTROYED


@pytest.mark.parametrize("engine", ENGINES)
def test_crash_of_one_vcpu_stops_that_partition_only(sched, engine):
    other = Partition(guest("smp-counter"), mem="16M", engine=engine, console=CaptureConsole(),
                      cmdline=f"n={COUNTER_N[engine]}", scheduler=sched, smp=2)
    try:
        other.start()
        state, p, text = run(sched, "smp-selftest", engine, 2, "crash=1")
        assert state == CRASHED, text
        assert "vCPU 1: triple fault" in p.crash_report
        assert other.wait(120) == SHUTDOWN
        assert other.exit_code == 0
    finally:
        other.destroy()


def test_smp_forces_the_scheduler_and_checks_the_count():
    with pytest.raises(ValueError, match="smp is 1..16"):
        Partition(guest("hello"), smp=17)
    with pytest.raises(ValueError, match="runs on the scheduler"):
        Partition(guest("hello"), smp=2, scheduler=False)
    assert lib.HV_VCPUS_MAX == 16


# ---- the dispatcher, no guest: errors change nothing ----------------------------

CTX = 0x8000                 # a struct hv_vcpu_context in RAM (paging off: gva == gpa)


def put_context(core, rip=0x100000, rsp=0x90000, cr3=0x20000, arg=7):
    core.ram[CTX:CTX + 32] = b"".join(x.to_bytes(8, "little") for x in (rip, rsp, cr3, arg))


@pytest.mark.parametrize("nr, args, error", [
    ("VCPU_UP", (2, CTX), "EINVAL"),                  # no such vCPU
    ("VCPU_UP", (1, 0x7fff_0000_0000), "EFAULT"),     # context not readable
    ("VCPU_UP", (0, CTX), "EBUSY"),                   # up already
    ("VCPU_DOWN", (2,), "EINVAL"),
    ("VCPU_DOWN", (1,), "EPERM"),                     # down already
    ("VCPU_DOWN", (0,), "EBUSY"),                     # the last one up
    ("VCPU_SEND_EVENT", (2, 1), "EINVAL"),
    ("VCPU_SEND_EVENT", (1, lib.HV_EVENTS_MAX), "EINVAL"),
    ("VCPU_SEND_EVENT", (1, 1), "EPERM"),             # no event page
    ("TLB_FLUSH", (1 << 16, 0), "EINVAL"),
    ("EVENT_BIND_VCPU", (lib.HV_EVENT_TIMER, 1), "EINVAL"),
    ("EVENT_BIND_VCPU", (5, 2), "EINVAL"),
])
def test_smp_error_changes_nothing(nr, args, error):
    with Core(vcpus=2) as core:
        put_context(core)
        before = core.digest()
        r, kind = core.call(getattr(lib, "HV_HC_" + nr), *args)
        assert (r, kind) == (-getattr(lib, "HV_" + error), None)
        assert core.digest() == before
        assert lib.hv_vcpu_is_up(core.vcpus[1]) == 0


def test_bad_cr3_is_refused_before_anything_moves():
    with Core(vcpus=2) as core:
        put_context(core, cr3=0x20008)
        before = core.digest()
        assert core.call(lib.HV_HC_VCPU_UP, 1, CTX) == (-lib.HV_EINVAL, None)
        put_context(core, cr3=core.mem_size)
        assert core.call(lib.HV_HC_VCPU_UP, 1, CTX) == (-lib.HV_EINVAL, None)
        assert core.digest() == before


def test_up_loads_the_context_and_down_parks():
    with Core(vcpus=2) as core:
        put_context(core)
        assert core.call(lib.HV_HC_VCPU_UP, 1, CTX) == (0, None)
        assert lib.hv_vcpu_is_up(core.vcpus[1]) == 1
        r = ffi.new("struct hv_regs *")
        s = ffi.new("struct hv_sregs *")
        lib.hv_vcpu_get_regs(core.vcpus[1], r)
        lib.hv_vcpu_get_sregs(core.vcpus[1], s)
        assert (r.rip, r.rsp, r.rdi, r.rflags) == (0x100000, 0x90000, 7, 2)
        assert (s.cr3, s.cs, s.ss) == (0x20000, lib.HV_VCPU_UP_CS, lib.HV_VCPU_UP_DS)
        assert s.efer & 0x400 and s.cr0 & 0x80000000            # LMA, PG: 64-bit mode
        assert core.call(lib.HV_HC_VCPU_UP, 1, CTX) == (-lib.HV_EBUSY, None)   # twice
        assert core.call(lib.HV_HC_VCPU_COUNT) == (2, None)
        assert core.call(lib.HV_HC_VCPU_ID) == (0, None)
        assert core.call(lib.HV_HC_VCPU_DOWN, 1) == (0, None)
        assert core.call(lib.HV_HC_VCPU_DOWN, 1) == (-lib.HV_EPERM, None)   # going down


def test_events_land_in_the_bound_vcpus_block():
    with Core(vcpus=2) as core:
        page = 0x10000
        assert core.call(lib.HV_HC_EVENT_REGISTER, page, 0x40) == (0, None)
        assert core.call(lib.HV_HC_EVENT_BIND_VCPU, 5, 1) == (0, None)
        assert core.call(lib.HV_HC_EVENT_RAISE, 5) == (0, None)
        assert core.call(lib.HV_HC_VCPU_SEND_EVENT, 1, 9) == (0, None)
        assert core.call(lib.HV_HC_VCPU_SEND_EVENT, 0, 3) == (0, None)
        block = lambda i: int.from_bytes(core.ram[page + i * lib.HV_VCPU_EVENTS_SIZE:][:8], "little")
        assert block(1) == (1 << 5) | (1 << 9)
        assert block(0) == 1 << 3


def test_hv_up_smp_key():
    from hv import config
    assert config.SMP_MAX == lib.HV_VCPUS_MAX
    spec = config.check_partition({"name": "a", "kernel": "k.elf", "smp": 4})
    assert spec["smp"] == 4
    for bad in (0, 17, "2", True):
        with pytest.raises(config.ConfigError, match="smp must be an integer"):
            config.check_partition({"name": "a", "kernel": "k.elf", "smp": bad})


# ---- deterministic SMP: the interleaving replays exactly ------------------------

def deterministic_run(name, smp, cmdline):
    from hv.trace import Tracer
    console, tracer = CaptureConsole(), Tracer(None, keep=True)
    with Partition(guest(name), mem="16M", engine="tcg", console=console, cmdline=cmdline,
                   deterministic=True, trace=tracer, smp=smp) as p:
        state = p.run()
    return state, console.text(), tracer.records


@pytest.mark.skipif(engine_missing("tcg") is not None, reason="needs tcg")
@pytest.mark.parametrize("name, smp, cmdline", [
    ("smp-counter", 2, "n=1000000"),     # longer than a 10 ms slice: switches inside the loop
    ("ipi-pingpong", 2, "rounds=100"),   # a switch at every IPI
    ("tlb-shootdown", 2, ""),
])
def test_deterministic_smp_replays_byte_for_byte(name, smp, cmdline):
    first = deterministic_run(name, smp, cmdline)
    second = deterministic_run(name, smp, cmdline)
    assert first[0] == SHUTDOWN and result(first[1]) == "SUCCESS", first[1]
    assert first[1] == second[1]                  # the console, clock readings included
    assert first[2] == second[2]                  # every trace record, times included
    assert {r[1] for r in first[2]} == set(range(smp))    # every vCPU ran
