"""The engines against each other, and the deterministic engine against itself.

Three kinds of test, all on real guest kernels (guests/build/*.elf):

  differential   every kernel runs on KVM and on TCG; both must end the same
                 way (state, exit code, console) after the same sequence of
                 hypercalls, read from the core's trace (hv/trace.py)
  determinism    deterministic TCG (the clock counts instructions) twice:
                 byte-identical console, identical traces *with* the time
                 column -- including a timer that cuts a spin loop that makes
                 no exits (guests/timer-spin)
  replay         Hypothesis writes lists of hypercalls; guests/hcall-replay
                 makes them on deterministic TCG and prints every result,
                 which must equal what the C dispatcher (hv.testing.core,
                 the same code on the no-op engine) and the Python model
                 (hv.testing.model) return for the same calls on a copy of
                 the same image -- and a second run must repeat the first
                 exactly (hv.testing.replay runs it all)

Every boot runs in a forked child (conftest.run_isolated): a crash or hang of
the core fails the one test and the rest of the suite goes on.
"""
import glob
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import GUEST_BUILD, kvm_missing_reason
from hv.abi import hypercall_args, lib
from hv.testing.boot import boot_traced
from hv.testing.isolate import isolated
from hv.testing.replay import first_difference, run_program, run_replay
from hv.testing.results import RESULT_CODES, parse_result
from hv.testing.strategies import programs

# ---- the kernels and their command lines --------------------------------------

# Every kernel in guests/build/ runs; one not named here runs with an empty
# command line.  Left out on purpose: `crash spin` (spins forever, for the
# pause/destroy tests).
CMDLINES = {
    "hello": [""],
    "hcall-selftest": [""],
    "cmdline-echo": ["", "console=hvc0 a=1"],
    "verdict": ["success", "skip", "error", "failure", "assert", "assert-eq", "noise",
                "return=7"],
    "crash": ["triple-fault", "halt", "exception", "page-fault", "bad-shutdown", "spin=5"],
    "bench-hypercall": ["n=100"],
    "compute": ["n0=1000 n3=100"],
    "timer-spin": ["", "delta=1000"],
    "snap-counter": ["rounds=20"],
    "hcall-fuzz": ["seed=3 count=300"],
    "hcall-replay": ["", "mc=0;2:@buf:5;3f;5:7:0 calls=0;2:@buf:3;2:@bad:4;8:@evp:f0;9:1ff;4;"
                         "a:@mc:4;40;100000000;7:10000;4;a:@mc+8:2;2:@end-4:4;8:@si:20"],
}


def kernels():
    return sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(GUEST_BUILD, "*.elf")))


CASES = [(name, cmdline) for name in kernels() for cmdline in CMDLINES.get(name, [""])]
CASE_IDS = [f"{name}[{cmdline[:24]}]" for name, cmdline in CASES]


def test_kernels_are_discovered():
    found = kernels()
    for name in ("hello", "hcall-selftest", "timer-spin", "hcall-replay"):
        assert name in found, f"{name}.elf missing from {GUEST_BUILD}: run `make guests`"


# ---- normalizing a trace for comparison across engines -------------------------

HYPERCALL_KINDS = (lib.HV_TRACE_HYPERCALL, lib.HV_TRACE_TO_PARENT, lib.HV_TRACE_COMPLETE)
TIME = "<time>"
LENGTH = "<length>"
PARTITION_ID = "<partition id>"     # a new partition, a new id


def hypercall_sequence(records, prints_time=False):
    """(kind, nr, args, result) of every hypercall record, with what depends on
    the clock taken out, so two engines' runs of one kernel compare equal:

      - only the arguments a hypercall takes are kept (abi.h's names): the
        trace records all five argument registers, and the ones a call
        ignores hold whatever the guest computed last (often a clock value);

      - clock_read's result is the clock: replaced by TIME;
      - set_timer's deadline is computed from the clock: replaced by TIME
        unless it is 0 (cancel), which is a constant of the guest;
      - loops that run until the clock passes a mark (hcall-selftest's
        yield loop, crash spin=MS, bench-hypercall's n calls) repeat the same
        records a number of times that depends on the engine's speed: every
        run of consecutive repeats of a block of up to four records is
        collapsed to one copy.  So "A A A" and "A" compare equal -- the price
        is that a repeat count is not checked, only what is repeated;
      - a kernel that prints a time (prints_time: see TIMING_IN_CONSOLE)
        writes lines whose length depends on it: its console_write lengths
        (argument and result) become LENGTH.  The bytes themselves are
        compared, normalized, on the console.

    Engine exits (HV_TRACE_EXIT) are left out: which instruction traps to
    whom is the engine's business (KVM exits on HLT, TCG handles it inside).
    Injections are compared as a count (inject_count)."""
    seq = []
    for kind, _vcpu, nr, args, result, _time in same_partition_id(records):
        if kind not in HYPERCALL_KINDS:
            continue
        args = args[:len(hypercall_args(nr))]
        if nr == lib.HV_HC_CLOCK_READ and kind == lib.HV_TRACE_HYPERCALL:
            result = TIME
        if nr == lib.HV_HC_SET_TIMER and args[0] != 0:
            args = (TIME,) + args[1:]
        if prints_time and nr == lib.HV_HC_CONSOLE_WRITE:
            args = args[:1] + (LENGTH,) + args[2:]
            result = LENGTH if kind == lib.HV_TRACE_COMPLETE else result
        seq.append((kind, nr, args, result))
    return collapse_repeats(seq)


def collapse_repeats(seq, longest=4):
    """Replace each run of a block repeated back to back by one copy of it."""
    out = list(seq)
    changed = True
    while changed:
        changed = False
        for k in range(1, longest + 1):
            i = 0
            while i + 2 * k <= len(out):
                if out[i:i + k] == out[i + k:i + 2 * k]:
                    del out[i + k:i + 2 * k]
                    changed = True
                else:
                    i += 1
    return out


def inject_count(records):
    return sum(1 for r in records if r[0] == lib.HV_TRACE_INJECT)


# Console lines that print a time or a count of loop rounds (bench-hypercall,
# compute: ns=T; timer-spin: spins=N) differ between engines by design.
TIMING_IN_CONSOLE = re.compile(rb"\b(ns|spins)=\d+")


def normalize_console(data):
    return TIMING_IN_CONSOLE.sub(rb"\1=#", data)


def _same_on_both_engines(name, cmdline):
    kvm = boot_traced(name, cmdline, engine="kvm")
    tcg = boot_traced(name, cmdline, engine="tcg")
    both = f"--- kvm\n{kvm.describe()}\n--- tcg\n{tcg.describe()}"
    assert kvm.state in ("shutdown", "crashed"), both
    assert (kvm.state, kvm.exit_code) == (tcg.state, tcg.exit_code), both
    assert normalize_console(kvm.console_bytes) == normalize_console(tcg.console_bytes), both
    verdict = parse_result(kvm.console_bytes)[0]
    if verdict is not None and kvm.state == "shutdown":
        assert kvm.exit_code == RESULT_CODES[verdict], both
    prints_time = TIMING_IN_CONSOLE.search(kvm.console_bytes + tcg.console_bytes) is not None
    a = hypercall_sequence(kvm.records, prints_time)
    b = hypercall_sequence(tcg.records, prints_time)
    assert a == b, "hypercall sequences differ; " + first_difference(a, b)
    assert inject_count(kvm.records) == inject_count(tcg.records), both


KVM_MISSING = kvm_missing_reason()


@pytest.mark.skipif(KVM_MISSING is not None, reason=f"KVM unavailable: {KVM_MISSING}")
@pytest.mark.parametrize("name, cmdline", CASES, ids=CASE_IDS)
def test_kvm_and_tcg_agree(name, cmdline):
    isolated(_same_on_both_engines, name, cmdline)


# ---- determinism: the same run twice, to the instruction -------------------------

def _repeats_exactly(name, cmdline):
    first = boot_traced(name, cmdline, deterministic=True)
    second = boot_traced(name, cmdline, deterministic=True)
    assert first.state in ("shutdown", "crashed"), first.describe()
    assert (first.state, first.exit_code) == (second.state, second.exit_code), (
        f"{first.describe()}\n---\n{second.describe()}")
    assert first.console_bytes == second.console_bytes
    a, b = same_partition_id(first.records), same_partition_id(second.records)
    assert a == b, "traces differ; " + first_difference(a, b)


PEER_CALLS = (lib.HV_HC_EVTCHN_ALLOC_UNBOUND, lib.HV_HC_EVTCHN_BIND_INTERDOMAIN)


def same_partition_id(records):
    """Two runs are two partitions: partition_id answers differ by design,
    and so do peer ids a guest derives from its own (hcall-fuzz): both are
    rewritten relative to the id partition_id answered."""
    own, out = None, []
    for r in records:
        kind, nr = r[0], r[2]
        if kind == lib.HV_TRACE_HYPERCALL and nr == lib.HV_HC_PARTITION_ID:
            own = r[4]
            r = r[:4] + (PARTITION_ID,) + r[5:]
        elif own is not None and nr in PEER_CALLS and kind in HYPERCALL_KINDS \
                and abs(r[3][0] - own) <= 2:
            r = r[:3] + ((f"<own id{r[3][0] - own:+d}>",) + tuple(r[3][1:]),) + r[4:]
        out.append(r)
    return out


@pytest.mark.parametrize("name, cmdline", CASES, ids=CASE_IDS)
def test_deterministic_runs_repeat_exactly(name, cmdline):
    isolated(_repeats_exactly, name, cmdline)


def _timer_cuts_spin_at_its_deadline(delta):
    run = boot_traced("timer-spin", f"delta={delta}", deterministic=True)
    assert (run.state, run.exit_code) == ("shutdown", 0), run.describe()
    arm = [r for r in run.records if r[0] == lib.HV_TRACE_HYPERCALL and r[2] == lib.HV_HC_SET_TIMER]
    assert len(arm) == 1, run.records
    deadline = arm[0][3][0]
    after = run.records[run.records.index(arm[0]) + 1:]
    # Nothing between arming and the upcall: the loop makes no exits, so the
    # engine had to stop it at the deadline, and at the deadline exactly.
    kind, _vcpu, vector, _args, _result, time_ns = after[0]
    assert kind == lib.HV_TRACE_INJECT, after[:3]
    assert vector == 0xf0
    assert time_ns == deadline, f"upcall at instruction {time_ns}, deadline {deadline}"
    spins = int(re.search(rb"spins=(\d+)", run.console_bytes).group(1))
    assert spins > 0 and (delta < 100 or spins > delta // 20), run.console_bytes


@pytest.mark.parametrize("delta", [1000, 123457])
def test_timer_interrupts_a_spin_at_the_exact_instruction(delta):
    isolated(_timer_cuts_spin_at_its_deadline, delta)


def _blocked_selftest_wakes_at_deadline():
    run = boot_traced("hcall-selftest", deterministic=True)
    assert (run.state, run.exit_code) == ("shutdown", 0), run.describe()
    # The first timer test: set_timer(d); block() -- the idle guest skips
    # ahead to d in virtual time and the next clock_read sees at least d.
    calls = [r for r in run.records if r[0] == lib.HV_TRACE_HYPERCALL]
    i = next(i for i, r in enumerate(calls)
             if r[2] == lib.HV_HC_SET_TIMER and r[3][0] > 1 and calls[i + 1][2] == lib.HV_HC_BLOCK)
    deadline = calls[i][3][0]
    woke = calls[i + 2]
    assert woke[2] == lib.HV_HC_CLOCK_READ and deadline <= woke[4] == woke[5], calls[i:i + 3]


def test_deterministic_block_skips_to_the_deadline():
    isolated(_blocked_selftest_wakes_at_deadline)


# ---- replay: Hypothesis-written hypercall lists (hv.testing.replay) ----------

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_replayed_hypercalls_match_the_dispatcher(program):
    isolated(run_program, program)


# ---- regressions: hv bugs the replay found (fixed) ----

def _block_with_timer_but_no_page():
    run = run_replay("calls=7:100000;4")
    assert run.state == "shutdown", run.describe()
    assert re.search(rb"^r1=(-1|0)$", run.console_bytes, re.M), run.describe()


def test_block_with_a_timer_but_no_event_page():
    isolated(_block_with_timer_but_no_page, timeout=5)


def _multicall_trace_pairs_parent_entries():
    run = run_replay("mc=2:@buf:5 calls=a:@mc:1")
    assert run.state == "shutdown", run.describe()
    kinds = [(r[0], r[2], r[4]) for r in run.records
             if r[0] in HYPERCALL_KINDS and r[2] in (lib.HV_HC_MULTICALL, lib.HV_HC_CONSOLE_WRITE)]
    # The entry goes to the parent and comes back; then the multicall itself
    # finishes with 0.  (The guest's own printf writes follow.)
    assert kinds[:3] == [(lib.HV_TRACE_TO_PARENT, lib.HV_HC_CONSOLE_WRITE, 0),
                         (lib.HV_TRACE_COMPLETE, lib.HV_HC_CONSOLE_WRITE, 5),
                         (lib.HV_TRACE_HYPERCALL, lib.HV_HC_MULTICALL, 0)], kinds[:4]


def test_multicall_with_a_parent_entry_is_traced_once():
    isolated(_multicall_trace_pairs_parent_entries)
