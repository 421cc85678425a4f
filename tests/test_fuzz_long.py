"""Hypercall fuzzing by the million: from inside guests on both engines, and
straight into the C dispatcher.

HV_FUZZ=long runs the long profile (>= 10^6 calls per target; about 10 min
in all here, KVM's emulated ring 0 being most of it); without it the same
tests run a short smoke version.  HV_FUZZ_SEED=S fixes the seed; otherwise
one is drawn and printed.  Every failure message says how to replay it:

  inside a guest   guests/hcall-fuzz draws its calls from seed= itself, so
                   `hv run --engine tcg --deterministic guests/build/hcall-fuzz.elf
                   --cmdline "seed=S count=N"` repeats the run exactly (the
                   test checks that: two deterministic runs, one digest);
  the dispatcher   the same seed replays through tests/test_dispatch.py's
                   check_one_call (call index I of seed S: see replay_dispatch).

The guest's digest hashes every result but the clock's value, so one seed
gives one digest on both engines (checked too).  Each call's result must be documented (abi.h's error list for that number,
checked by the guest against every -HV_E*, by the dispatcher run against the
number's own list), an error must change no hv state (dispatcher), and the
guest's canary pages must stay untouched (guest).
"""
import os
import random
import re
import time

import pytest

from conftest import engine_missing, guest
from test_dispatch import MEM, check_one_call

LONG = os.environ.get("HV_FUZZ") == "long"
GUEST_CALLS = {"tcg": 1_000_000, "kvm": 1_000_000} if LONG else {"tcg": 20_000, "kvm": 2_000}
DISPATCH_CALLS = 1_000_000 if LONG else 5_000
SEED = int(os.environ.get("HV_FUZZ_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 31)


def fuzz_in_guest(engine, seed, count, deterministic=False):
    from hv.testing import boot
    run = boot("hcall-fuzz", cmdline=f"seed={seed} count={count}", mem="16M", engine=engine,
               deterministic=deterministic, timeout=3600)
    replay = (f"replay: hv run --engine tcg --deterministic {guest('hcall-fuzz')} "
              f"--cmdline 'seed={seed} count={count}'")
    assert run.state == "shutdown" and run.verdict == "SUCCESS", \
        f"seed {seed}: {run.describe()}\n{replay}"
    m = re.search(r"fuzz: seed \d+, (\d+) calls, digest ([0-9a-f]+)", run.console)
    assert m and int(m.group(1)) == count, run.describe()
    return m.group(2)


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_random_hypercalls_from_inside_a_guest(engine):
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    count = GUEST_CALLS[engine]
    t0 = time.monotonic()
    digest = fuzz_in_guest(engine, SEED, count)
    print(f"\nhcall-fuzz {engine}: seed {SEED}, {count} calls, digest {digest}, "
          f"{time.monotonic() - t0:.1f} s")


def test_guest_fuzz_replays_exactly_on_deterministic_tcg():
    """What makes a failure replayable: the same seed, the same calls, the
    same results, the same digest."""
    count = GUEST_CALLS["tcg"] // 4
    first = fuzz_in_guest("tcg", SEED, count, deterministic=True)
    assert fuzz_in_guest("tcg", SEED, count, deterministic=True) == first


def test_guest_fuzz_repeats_in_real_time():
    """Results must not depend on *when* a call is made: three real-time
    (not deterministic) TCG runs of one seed give one digest.  Seed 424242
    parted at call 31,578 (a grant table the guest registered over the
    multicall results, one of them a clock value: grant_end of an entry
    whose in-use flags were the clock's bits); the guest now keeps such
    arrays out of the memory time-dependent results land in."""
    digests = {fuzz_in_guest("tcg", 424242, 32_000) for _ in range(3)}
    assert len(digests) == 1, digests


def test_guest_fuzz_gives_the_same_results_on_both_engines():
    """The calls' results (all but the clock's value) hash to one digest on
    KVM and TCG: hv's guest-visible behaviour does not depend on the engine."""
    for engine in ("tcg", "kvm"):
        if engine_missing(engine):
            pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    count = GUEST_CALLS["kvm"]
    assert fuzz_in_guest("tcg", SEED, count) == fuzz_in_guest("kvm", SEED, count), f"seed {SEED}"


def dispatch_calls(seed, count):
    """The seed's calls, as check_one_call takes them: (nr, [5 args])."""
    rng = random.Random(seed)
    edges = [0, 1, 5, 31, 32, 255, 256, 4095, 4096, 0x5000, MEM - 8, MEM - 4096, MEM,
             MEM + 4096, 1 << 47, 0xFFFF800000000000, (1 << 64) - 1]
    for _ in range(count):
        r = rng.random()
        nr = rng.randrange(16) if r < 0.9 else rng.randrange(200) if r < 0.97 else rng.getrandbits(64)
        args = [rng.choice(edges) if rng.random() < 0.5 else
                rng.randrange(MEM + 8192) if rng.random() < 0.5 else rng.getrandbits(64)
                for _ in range(5)]
        yield nr, args


def replay_dispatch(seed, index):
    """Call `index` of `seed`, alone, through the dispatcher (for a report)."""
    for i, (nr, args) in enumerate(dispatch_calls(seed, index + 1)):
        if i == index:
            check_one_call(nr, args)


def test_random_hypercalls_into_the_dispatcher():
    from hv.testing import run_isolated
    t0 = time.monotonic()

    def run():
        for i, (nr, args) in enumerate(dispatch_calls(SEED, DISPATCH_CALLS)):
            try:
                check_one_call(nr, args)
            except AssertionError as e:
                raise AssertionError(f"seed {SEED} call {i}: nr {nr} args {args}: {e}\n"
                                     f"replay: replay_dispatch({SEED}, {i})") from None
        return DISPATCH_CALLS

    assert run_isolated(run, timeout=7200) == DISPATCH_CALLS
    print(f"\ndispatcher: seed {SEED}, {DISPATCH_CALLS} calls, {time.monotonic() - t0:.1f} s")
