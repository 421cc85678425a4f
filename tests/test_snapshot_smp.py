"""SMP partitions in snapshots, restores and migrations (hv/snapshot.py,
csrc/snapshot.c; docs/lifecycle.md, "SMP").

The guest half is guests/smp-snap: three vCPUs, each with its own buffer,
checksum, timer and place in a ring of IPIs, one of them going down and up
again half way.  Its output does not depend on how the vCPUs interleave, so
every journey (saved and restored, or migrated, several times mid-run, on
one engine or across) must print exactly what an uninterrupted run prints;
an IPI lost anywhere stops the ring and the run never finishes.
"""
import os
import time

import pytest

from conftest import guest, needs_kvm
from hv.partition import SHUTDOWN, Partition
from hv.snapshot import load
from test_migrate import receiver
from test_snapshot import Output

SMP = 3
CMDLINE = "rounds=60 pause=5000000"


def start(engine, cmdline=CMDLINE, deterministic=False, trace=None):
    out = Output()
    part = Partition(guest("smp-snap"), mem="16M", engine=engine, cmdline=cmdline, console=out,
                     smp=SMP, deterministic=deterministic, trace=trace)
    part.start()
    return part, out


def finish(part, out):
    state, report = part.wait(120), part.crash_report
    part.destroy()
    assert state == SHUTDOWN, (report, out.data)
    return out.data


@pytest.fixture(scope="module")
def reference():
    data = finish(*start("tcg"))
    assert data.endswith(b"SUCCESS\n") and data.count(b"smp-snap: cpu=") == SMP, data
    return data


def hop(engines, tmp_path, wait=0.03):
    """smp-snap saved and restored once per engine after the first."""
    part, out = start(engines[0])
    for n, engine in enumerate(engines[1:]):
        time.sleep(wait)
        directory = str(tmp_path / f"snap{n}")
        part.snapshot(directory, resume=False)
        part.destroy()
        part = Partition.restore(directory, engine=engine, console=out)
        assert part.engine == engine and part.smp == SMP
        part.start()
    return finish(part, out)


def test_an_smp_guest_restored_on_tcg_goes_on(tmp_path, reference):
    assert hop(["tcg"] * 5, tmp_path) == reference


@needs_kvm
def test_an_smp_guest_restored_on_kvm_goes_on(tmp_path, reference):
    assert hop(["kvm"] * 5, tmp_path) == reference


@needs_kvm
def test_an_smp_guest_moves_between_engines(tmp_path, reference):
    assert hop(["tcg", "kvm", "tcg", "kvm", "tcg"], tmp_path) == reference


def test_every_vcpu_is_saved_up_or_down(tmp_path, reference):
    """Saved right after boot (vCPUs 1 and 2 still down) and again while
    they run: each snapshot finishes the run exactly."""
    part, out = start("tcg")
    part.snapshot(str(tmp_path / "early"))
    time.sleep(0.05)
    part.snapshot(str(tmp_path / "later"))
    assert finish(part, out) == reference
    state = load(str(tmp_path / "later"))
    try:
        assert len(state.vcpus) == SMP and state.vcpus[0][2].up
        # GS holds each running vCPU's per-CPU data: distinct bases.
        bases = {cpu.seg[5].base for _, cpu, pending in state.vcpus if pending.up}
        assert len(bases) == sum(1 for _, _, p in state.vcpus if p.up)
    finally:
        state.close()
    for name in ("early", "later"):
        restored = Output()
        with Partition.restore(str(tmp_path / name), console=restored) as q:
            assert q.run() == SHUTDOWN, q.crash_report
        assert restored.data and reference.endswith(restored.data)


def test_a_vcpu_caught_down_half_way_comes_back(tmp_path, reference):
    """vCPU 2 goes down half way until vCPU 0 brings it back: save until a
    snapshot holds it down with the others up, then finish from that one."""
    cmdline = "rounds=60 pause=5000000 park=100000000"     # 100 ms down
    part, out = start("tcg", cmdline)
    caught = None
    for n in range(400):
        directory = str(tmp_path / f"s{n}")
        part.snapshot(directory)
        state = load(directory)
        ups = [bool(p.up) for _, _, p in state.vcpus]
        state.close()
        if ups == [True, True, False] and n > 0:
            caught = directory
            break
        time.sleep(0.005)
    finish(part, out)
    assert caught, "no snapshot caught vCPU 2 down"
    restored = Output()
    with Partition.restore(caught, console=restored) as q:
        assert q.run() == SHUTDOWN, q.crash_report
    assert reference.endswith(restored.data) and b"cpu=2" in restored.data


def test_deterministic_smp_restore_gives_the_same_output(tmp_path):
    """On deterministic TCG the output is byte-identical.  (The trace's
    interleaving of vCPUs is not: a pause alone, without any snapshot,
    already moves the deterministic scheduler's slice boundaries;
    docs/lifecycle.md, "SMP".)"""
    cmdline = "rounds=400 pause=1000000"

    def run(hops=0):
        part, out = start("tcg", cmdline, deterministic=True)
        for n in range(hops):
            time.sleep(0.03)
            part.snapshot(str(tmp_path / f"d{n}"), resume=False)
            part.destroy()
            part = Partition.restore(str(tmp_path / f"d{n}"), console=out)
            assert part.deterministic and part.smp == SMP
            part.start()
        return finish(part, out)

    assert run(3) == run()


def journey(engines, tmp_path, wait=0.03):
    part, out = start(engines[0])
    for n, engine in enumerate(engines[1:]):
        time.sleep(wait)
        address = f"unix:{tmp_path}/m{n}.sock"
        t, got = receiver(address, engine, out)
        report = part.migrate(address)
        t.join(30)
        assert "part" in got, got
        part = got["part"]
        assert part.engine == engine and part.smp == SMP
        assert report["downtime"] < 10
    return finish(part, out)


def test_an_smp_guest_migrates_mid_run(tmp_path, reference):
    assert journey(["tcg", "tcg", "tcg"], tmp_path) == reference


@needs_kvm
def test_an_smp_guest_migrates_across_engines(tmp_path, reference):
    assert journey(["kvm", "tcg", "kvm"], tmp_path) == reference


def test_a_snapshot_with_no_vcpu_up_is_refused(tmp_path, reference):
    from hv import snapshot_format as fmt
    from hv.snapshot import SnapshotError
    part, out = start("tcg")
    time.sleep(0.03)
    part.snapshot(str(tmp_path / "ok"), resume=False)
    part.destroy()
    raw = open(tmp_path / "ok" / "state", "rb").read()
    import io
    records = list(fmt.Reader(io.BytesIO(raw)))
    buf = io.BytesIO()
    w = fmt.Writer(buf)
    for rtype, body in records:
        if rtype == fmt.VCPU:
            # pending.up is the last of the scalars before the MSRs
            at = fmt.VCPU_FIXED - 8
            body = body[:at] + bytes(8) + body[at + 8:]
        w.record(rtype, body)
    w.finish()
    (tmp_path / "ok" / "state").write_bytes(buf.getvalue())
    with pytest.raises(SnapshotError, match="no vcpu is up"):
        load(str(tmp_path / "ok"))
    assert os.path.exists(tmp_path / "ok" / "state")


def just_brought_up(engine):
    """vCPU 1's saved state right after vCPU 0's vcpu_up, before it runs."""
    import struct
    from hv.abi import ffi, lib
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(getattr(lib, f"HV_ENGINE_{engine.upper()}"), 4 << 20, pp) == 0
    p = pp[0]
    try:
        assert lib.hv_partition_set_vcpus(p, 2) == 0
        vcpus = []
        for i in range(2):
            out = ffi.new("struct hv_vcpu **")
            assert lib.hv_vcpu_create(p, i, out) == 0
            vcpus.append(out[0])
        lib.hv_partition_reserve(p, 0, 0x1000)                  # page 0: hv's boot GDT
        assert lib.hv_vcpu_set_pvh_entry(vcpus[0], 0x100000, 0x1000) == 0
        ram = memoryview(ffi.buffer(lib.hv_partition_ram(p), 4 << 20))
        ram[0x8000:0x8020] = struct.pack("<4Q", 0x100000, 0x90000, 0x20000, 7)  # the context
        regs, exit_ = ffi.new("struct hv_regs *"), ffi.new("struct hv_exit *")
        regs.rax, regs.rdi, regs.rsi = lib.HV_HC_VCPU_UP, 1, 0x8000
        assert lib.hv_test_dispatch(vcpus[0], regs, exit_) == 1 and regs.rax == 0
        cpu, pending = ffi.new("struct hv_cpu_state *"), ffi.new("struct hv_vcpu_pending *")
        assert lib.hv_vcpu_get_state(vcpus[1], cpu, pending) == 0 and pending.up
        segs = [(s.base, s.limit, s.selector, s.attrib) for s in cpu.seg[0:6]]
        return segs, (cpu.cr0, cpu.cr3, cpu.cr4, cpu.efer), \
            (cpu.regs.rip, cpu.regs.rsp, cpu.regs.rdi, cpu.regs.rflags)
    finally:
        lib.hv_partition_destroy(p)


def test_a_vcpu_saved_right_after_vcpu_up_has_its_64_bit_segments():
    """TCG's vcpu_up set the selectors alone: a vCPU saved before its first
    instruction had an unusable CS (restored, it ran as 16-bit code and
    faulted at its first segment load).  Its record is the one KVM gives."""
    from conftest import engine_missing
    segs, control, regs = just_brought_up("tcg")
    cs, ss = segs[1], segs[2]
    assert cs[2:] == (0x20, 0xa09b) and ss[2:] == (0x18, 0xc093)   # 64-bit code, flat data
    assert control == (0x80010031, 0x20000, 0x20, 0xd00) and regs == (0x100000, 0x90000, 7, 2)
    if engine_missing("kvm") is None:
        assert just_brought_up("kvm") == (segs, control, regs)
