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
                 which must equal what the C dispatcher (tests/coreharness.py,
                 the same code on the no-op engine) returns for the same
                 calls on a copy of the same image -- and a second run must
                 repeat the first exactly

Every boot runs in a forked child (conftest.run_isolated): a crash or hang of
the core fails the one test and the rest of the suite goes on.
"""
import glob
import os
import re
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GUEST_BUILD, guest, kvm_missing_reason, run_isolated
from coreharness import Core, documented_errors
from hv.abi import ffi, hypercall_args, lib
from resultline import RESULT_CODES, parse_result

# ---- booting with a trace ----------------------------------------------------


@dataclass
class Traced:
    """How one traced boot ended."""
    state: str
    exit_code: object
    console: bytes
    records: list          # hv.trace.Tracer.records: (kind, vcpu, nr, args, result, time_ns)
    crash_report: object

    def describe(self):
        text = self.console.decode(errors="replace")
        return (f"state={self.state} exit_code={self.exit_code}\nconsole (last 2000 bytes):\n"
                f"{text[-2000:]}" + (f"\ncrash report:\n{self.crash_report}"
                                     if self.crash_report else ""))


def boot_traced(name, cmdline="", engine="tcg", deterministic=False, mem="64M"):
    """Boot guests/build/<name>.elf with a Tracer and a capture console."""
    from hv.console import CaptureConsole
    from hv.partition import Partition
    from hv.trace import Tracer

    console, tracer = CaptureConsole(), Tracer()
    part = Partition(guest(name), mem=mem, cmdline=cmdline, engine=engine, console=console,
                     deterministic=deterministic, trace=tracer)
    try:
        state = part.run()
        assert tracer.dropped == 0, f"{tracer.dropped} trace records dropped"
        return Traced(state, part.exit_code, b"".join(console.chunks), list(tracer.records),
                      part.crash_report)
    finally:
        part.destroy()


def isolated(fn, *args, timeout=60):
    """run_isolated, but a failure in the child is an AssertionError here (so
    Hypothesis, which lets pytest's own outcome exceptions through, shrinks it)."""
    try:
        run_isolated(fn, *args, timeout=timeout)
    except pytest.fail.Exception as e:
        raise AssertionError(str(e)) from None


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
    "hcall-replay": ["", "mc=0;2:@buf:5;b;5:7:0 calls=0;2:@buf:3;2:@bad:4;8:@evp:f0;9:1ff;4;"
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
    for kind, _vcpu, nr, args, result, _time in records:
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


def first_difference(a, b, context=3):
    """Where two sequences part, with a few items either side, for messages."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, n - context)
    return (f"they differ at item {n} (lengths {len(a)} and {len(b)}):\n"
            f"  kvm: {a[lo:n + context]}\n  tcg: {b[lo:n + context]}")


def _same_on_both_engines(name, cmdline):
    kvm = boot_traced(name, cmdline, engine="kvm")
    tcg = boot_traced(name, cmdline, engine="tcg")
    both = f"--- kvm\n{kvm.describe()}\n--- tcg\n{tcg.describe()}"
    assert kvm.state in ("shutdown", "crashed"), both
    assert (kvm.state, kvm.exit_code) == (tcg.state, tcg.exit_code), both
    assert normalize_console(kvm.console) == normalize_console(tcg.console), both
    verdict = parse_result(kvm.console)[0]
    if verdict is not None and kvm.state == "shutdown":
        assert kvm.exit_code == RESULT_CODES[verdict], both
    prints_time = TIMING_IN_CONSOLE.search(kvm.console + tcg.console) is not None
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
    assert first.console == second.console
    assert first.records == second.records, "traces differ; " + first_difference(
        first.records, second.records)


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
    spins = int(re.search(rb"spins=(\d+)", run.console).group(1))
    assert spins > 0 and (delta < 100 or spins > delta // 20), run.console


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


# ---- replay: Hypothesis-written hypercall lists ------------------------------------

REPLAY = "hcall-replay"
REPLAY_MEM = 16 << 20
U64 = 1 << 64
ENTRY = struct.Struct("<Q5Qq")           # struct hv_multicall_entry
MC_FILL = 16                             # guests/hcall-replay/main.c
FIXED_ADDRESSES = {"bad": 0x200000000, "nc": 0x800000000000, "end": REPLAY_MEM}


@dataclass(frozen=True)
class Ref:
    """@name+off on the guest's command line: an address the guest names."""
    name: str
    off: int = 0

    def cmdline(self):
        return f"@{self.name}" + (f"+{self.off:x}" if self.off > 0 else
                                   f"-{-self.off:x}" if self.off < 0 else "")


def replay_symbols():
    """Addresses of the guest's buffers and page tables, from its ELF symbols;
    the start info and the fixed bad addresses from the loader and the guest."""
    from elftools.elf.elffile import ELFFile
    from hv.loader import load_pvh

    out = dict(FIXED_ADDRESSES)
    with open(guest(REPLAY), "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        for name in ("buf", "evp", "mc", "pml4"):
            syms = symtab.get_symbol_by_name(name)
            assert syms and len(syms) == 1, f"{REPLAY}.elf: no single symbol {name!r}"
            out[name] = syms[0]["st_value"]
    out["si"] = load_pvh(guest(REPLAY), REPLAY_MEM, "").start_info_gpa
    return out


def resolve(value, syms):
    return (syms[value.name] + value.off) % U64 if isinstance(value, Ref) else value


def field(value):
    return value.cmdline() if isinstance(value, Ref) else f"{value:x}"


def call_text(call):
    nr, args = call
    while args and args[-1] == 0:       # fields left out are 0
        args = args[:-1]
    return ":".join(field(v) for v in (nr,) + tuple(args))


# Values: the ABI's edges, and anything at all.
EDGES = st.sampled_from([0, 1, 2, 5, 31, 32, 63, 64, 255, 256, 511, 512, 4095, 4096, 4097,
                         1 << 32, 1 << 62, 1 << 63, U64 - 1])
ANY = st.one_of(EDGES, st.integers(0, U64 - 1))
JUNK = st.sampled_from([0, 0, 0, 1, 0xdeadbeef, U64 - 1])   # arguments a call ignores


def refs(name, *offsets):
    return st.sampled_from([Ref(name, o) for o in offsets])


# The named buffers come first and twice: st.one_of picks branches about
# evenly, and calls that succeed are the ones that change state.
BUFFERS = st.one_of(refs("buf", 0, 1, 0xff0, 0x1000, 0x1ff0), refs("buf", 0, 0x100),
                    refs("end", -4, -8, -0x1000, 0), refs("bad", 0), refs("nc", 0, -4),
                    refs("si", 0), refs("evp", 0), st.just(0), ANY)
LENGTHS = st.one_of(st.integers(0, 200), st.sampled_from([0, 1, 8, 4096, 4097, 1 << 32, U64 - 1]),
                    st.integers(0, 5000))
PAGES = st.one_of(refs("evp", 0), refs("evp", 0, 8), refs("buf", 0, 0x1000),
                  refs("end", 0, -0x1000), refs("si", 0), refs("bad", 0), refs("nc", 0),
                  st.just(0), EDGES)
VECTORS = st.one_of(st.integers(32, 255), st.sampled_from([0, 5, 31, 32, 0xf0, 255, 256, U64 - 1]),
                    st.integers(0, 300))
EVENTS = st.one_of(st.integers(0, 511), st.sampled_from([0, 1, 63, 64, 511, 512, 1 << 32, U64 - 1]),
                   st.integers(0, 600))
# Deadlines are instruction counts here: some fire during the run (the guest
# keeps IF=0, so the timer only sets a pending bit), some never do.
DEADLINES = st.sampled_from([0, 1, 0x1000, 0x2000, 0x4000, 0x10000, 1 << 40, 1 << 62,
                             (1 << 62) + 1, U64 - 1])
ARRAYS = st.one_of(refs("mc", 0), refs("mc", 0, 56, 112, 8), refs("end", -56, -112, -8, 0),
                   refs("buf", 0), refs("bad", 0), refs("nc", 0), refs("si", 0), st.just(0),
                   EDGES)
COUNTS = st.one_of(st.integers(0, 8), st.sampled_from([0, 1, 2, 3, 64, 65, 1 << 32, U64 - 1]),
                   st.integers(0, 70))
UNKNOWN_NRS = st.sampled_from([lib.HV_HC_COUNT, 12, 31, 63, 64, 65, 255, 1000, 1 << 32,
                               (1 << 32) | lib.HV_HC_VERSION, 1 << 63, U64 - 1])


def call(nr, *args):
    """A strategy for one call (nr, 5 args): the given ones, then ignored junk."""
    return st.tuples(st.just(nr) if isinstance(nr, int) else nr,
                     st.tuples(*args, *[JUNK] * (5 - len(args))))


# shutdown with arguments hv must refuse (a valid one would end the run).
BAD_SHUTDOWN = st.one_of(
    call(lib.HV_HC_SHUTDOWN, st.sampled_from([2, 7, 0x7fff, U64 - 1]), st.integers(0, 255)),
    call(lib.HV_HC_SHUTDOWN, st.sampled_from([0, 1]), st.sampled_from([256, 1 << 32, U64 - 1])))

CONSOLE_WRITE = call(lib.HV_HC_CONSOLE_WRITE, BUFFERS, LENGTHS)
EVENT_REGISTER = st.one_of(call(lib.HV_HC_EVENT_REGISTER, PAGES, VECTORS),
                           call(lib.HV_HC_EVENT_REGISTER, refs("evp", 0), st.integers(32, 255)))
EVENT_RAISE = st.one_of(call(lib.HV_HC_EVENT_RAISE, EVENTS),
                        call(lib.HV_HC_EVENT_RAISE, st.integers(0, 511)))
MULTICALL = call(lib.HV_HC_MULTICALL, ARRAYS, COUNTS)
# Every hypercall has its own strategy (the ones with state or pointers
# twice, see BUFFERS); any other number is unknown.
CALLS = st.one_of(
    call(lib.HV_HC_VERSION), call(lib.HV_HC_FEATURES, st.sampled_from([0, 0, 1, U64 - 1])),
    CONSOLE_WRITE, CONSOLE_WRITE, call(lib.HV_HC_YIELD), call(lib.HV_HC_BLOCK),
    call(lib.HV_HC_BLOCK), BAD_SHUTDOWN, call(lib.HV_HC_CLOCK_READ),
    call(lib.HV_HC_SET_TIMER, DEADLINES), EVENT_REGISTER, EVENT_REGISTER, EVENT_RAISE, EVENT_RAISE,
    MULTICALL, MULTICALL, MULTICALL, call(UNKNOWN_NRS, ANY, ANY),
    call(st.integers(lib.HV_HC_COUNT, U64 - 1), ANY, ANY, ANY, ANY, ANY),
)
FINAL_SHUTDOWN = call(lib.HV_HC_SHUTDOWN, st.sampled_from([lib.HV_SHUTDOWN_POWEROFF,
                                                           lib.HV_SHUTDOWN_CRASH]),
                      st.integers(0, 255))
# Half the programs start with a good event_register (so raise, block and
# the timer act on a page); one in four ends with a valid shutdown.
REGISTER_FIRST = ((lib.HV_HC_EVENT_REGISTER, (Ref("evp"), 0xf0, 0, 0, 0)),)
PROGRAMS = st.tuples(
    st.builds(lambda first, rest: (REGISTER_FIRST if first else ()) + tuple(rest),
              st.booleans(), st.lists(CALLS, max_size=12)),
    st.lists(CALLS, max_size=6),
    st.integers(0, 3).flatmap(lambda k: FINAL_SHUTDOWN if k == 0 else st.none()))


def tame(call_, syms, last=False):
    """Keep a generated call from ending the run or reaching memory whose
    contents change while the guest runs (stack, its own variables), which a
    copy of the image cannot mirror:
      - a valid shutdown, unless it is the last call, gets reason 7;
      - an event page or multicall array given as a plain number in RAM
        becomes @bad (the named buffers are where pointers into RAM go)."""
    nr, args = call_
    args = list(args)
    if nr == lib.HV_HC_SHUTDOWN and args[0] in (0, 1) and args[1] <= 255 and not last:
        args[0] = 7
    if nr in (lib.HV_HC_EVENT_REGISTER, lib.HV_HC_MULTICALL) and not isinstance(args[0], Ref) \
            and args[0] < REPLAY_MEM + HV_PAGE:
        args[0] = Ref("bad")
    return nr, tuple(args)


HV_PAGE = lib.HV_PAGE_SIZE


class Expected:
    """The replay on the C dispatcher: a Core (no-op engine) whose RAM holds
    the same image, boot page and reservations as the guest's, with the
    guest's own page tables in CR3 -- so every pointer translates and every
    frame is owned exactly as in the guest.  The parent's part (console
    bytes) is played here: a console_write completes with its length."""

    def __init__(self, syms, mc_entries):
        from hv.loader import load_pvh

        self.syms = syms
        image = load_pvh(guest(REPLAY), REPLAY_MEM, "")
        self.core = core = Core(mem_size=REPLAY_MEM)
        for gpa, length in image.reserved:
            lib.hv_partition_reserve(core.p, gpa, length)
        for seg in image.segments:
            core.ram[seg.gpa:seg.gpa + len(seg.data)] = seg.data
        core.ram[image.boot_gpa:image.boot_gpa + len(image.boot_blob)] = image.boot_blob
        core.set_paging(cr3=syms["pml4"], cr0=0x80010031)
        for i, (nr, args) in enumerate(mc_entries):   # what the guest does with mc=
            at = syms["mc"] + i * ENTRY.size
            core.ram[at:at + ENTRY.size] = ENTRY.pack(resolve(nr, syms),
                                                      *(resolve(a, syms) for a in args), 0)
        self.event_page = None              # what the dispatcher was told, as a model
        self.deadline = 0

    def block_is_safe(self):
        """Would block return now on the guest?  Only when the answer does not
        depend on time: no event page and no timer (-EPERM), or an event
        already pending in the page.  (The guest's timer may have fired,
        which only adds pending bits, or disarm itself -- it never does so
        here, where no timer fires.)  Otherwise it may sleep to a deadline,
        or for ever (see test_block_with_a_timer_but_no_event_page)."""
        if self.event_page is None:
            return self.deadline == 0
        words = self.core.ram[self.event_page:self.event_page + 8 * lib.HV_EVENT_WORDS]
        return any(words)

    def note(self, nr, args, result):
        if nr == lib.HV_HC_EVENT_REGISTER and result == 0:
            self.event_page = args[0]
        if nr == lib.HV_HC_SET_TIMER:
            self.deadline = args[0]

    def call(self, nr, args):
        """Returns (result or None if the run ends here, [entry (op, args, result)])."""
        core = self.core
        result, kind = core.call(nr, *args)
        while kind is not None:
            if kind == lib.HV_EXIT_SHUTDOWN:
                return None, []
            assert kind == lib.HV_EXIT_HYPERCALL and core.exit.nr == lib.HV_HC_CONSOLE_WRITE
            core.complete(core.exit.data_len)
            if nr != lib.HV_HC_MULTICALL:       # the completion was the result
                lib.hv_vcpu_get_regs(core.v, core.regs)
                result, kind = int(ffi.cast("int64_t", core.regs.rax)), None
            else:                               # the batch goes on
                result, kind = core.resume()
        entries = []
        if nr == lib.HV_HC_MULTICALL and result == 0:
            for j in range(args[1]):
                at = args[0] + j * ENTRY.size
                op, *eargs, eresult = ENTRY.unpack(core.ram[at:at + ENTRY.size])
                entries.append((op, tuple(eargs), eresult))
                self.note(op, eargs, eresult)
        self.note(nr, args, result)
        return result, entries


RESULT_LINE = re.compile(rb"^r(\d+)(?:\.(\d+))?=(-?\d+)$", re.M)
DOCUMENTED = documented_errors()


def check_documented(nr, result, in_multicall=False):
    """A result the ABI allows: >= 0, or an error abi.h lists for nr."""
    if nr >= lib.HV_HC_COUNT:
        assert result == -lib.HV_ENOSYS, (nr, result)
        return
    allowed = DOCUMENTED[nr] | ({-lib.HV_EOPNOTSUPP} if in_multicall else set())
    assert result >= 0 or result in allowed, (
        f"hypercall {nr} returned {result}, not one of the documented {sorted(allowed)}")


def _replay(program):
    calls, mc_entries, final = program
    syms = replay_symbols()
    mc_entries = [tame(c, syms) for c in mc_entries]
    expected = Expected(syms, mc_entries)
    program_calls, lines = [], []      # lines: (i, j or None, result, hypercall number)
    ended = None
    todo = [tame(c, syms) for c in calls] + ([tame(final, syms, last=True)] if final else [])
    for nr, args in todo:
        values = tuple(resolve(a, syms) for a in args)
        if nr == lib.HV_HC_BLOCK and not expected.block_is_safe():
            continue
        i = len(program_calls)
        program_calls.append((nr, args))
        result, entries = expected.call(nr, values)
        if result is None:
            ended = values              # a valid shutdown: the run stops here
            break
        lines.append((i, None, result, nr))
        for j, (op, _eargs, eresult) in enumerate(entries):
            lines.append((i, j, eresult, op))
    expected.core.close()

    cmdline = " ".join(part for part in (
        "mc=" + ";".join(call_text(c) for c in mc_entries) if mc_entries else "",
        "calls=" + ";".join(call_text(c) for c in program_calls) if program_calls else "")
        if part)
    first = boot_traced(REPLAY, cmdline, deterministic=True, mem=REPLAY_MEM)
    why = f"cmdline: {cmdline!r}\n{first.describe()}"

    # The end: SUCCESS, or the final shutdown as asked.
    if ended is None:
        assert (first.state, first.exit_code) == ("shutdown", 0), why
        assert first.console.endswith(b"\nSUCCESS\n") or first.console == b"SUCCESS\n", why
    else:
        state = "shutdown" if ended[0] == lib.HV_SHUTDOWN_POWEROFF else "crashed"
        assert (first.state, first.exit_code) == (state, ended[1]), why
        assert parse_result(first.console)[0] is None, why

    # (a) Each result as the dispatcher computed it, and one the ABI allows;
    # clock_read's is this engine's instruction count: only its order counts.
    got = [(int(i), int(j) if j else None, int(r))
           for i, j, r in RESULT_LINE.findall(first.console)]
    assert [g[:2] for g in got] == [e[:2] for e in lines], why
    clocks = []
    for (i, j, result), (_, _, want, nr) in zip(got, lines):
        check_documented(nr, result, in_multicall=j is not None)
        if nr == lib.HV_HC_CLOCK_READ:
            clocks.append(result)
        else:
            assert result == want, (f"r{i}{'' if j is None else f'.{j}'}={result}, "
                                    f"the dispatcher says {want}\n{why}")
    assert clocks == sorted(clocks) and all(c > 0 for c in clocks), why

    # (b) Exact replay.
    second = boot_traced(REPLAY, cmdline, deterministic=True, mem=REPLAY_MEM)
    assert (second.state, second.exit_code) == (first.state, first.exit_code), why
    assert second.console == first.console, why
    assert second.records == first.records, "traces differ; " + first_difference(
        first.records, second.records)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(PROGRAMS)
def test_replayed_hypercalls_match_the_dispatcher(program):
    isolated(_replay, program)


# ---- regressions: hv bugs the replay found (fixed) ----

def _block_with_timer_but_no_page():
    run = boot_traced(REPLAY, "calls=7:100000;4", deterministic=True, mem=REPLAY_MEM)
    assert run.state == "shutdown", run.describe()
    assert re.search(rb"^r1=(-1|0)$", run.console, re.M), run.describe()


def test_block_with_a_timer_but_no_event_page():
    isolated(_block_with_timer_but_no_page, timeout=5)


def _multicall_trace_pairs_parent_entries():
    run = boot_traced(REPLAY, "mc=2:@buf:5 calls=a:@mc:1", deterministic=True, mem=REPLAY_MEM)
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
