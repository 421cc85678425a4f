"""End to end: real guest kernels on KVM through the Python API.

Each boot takes ~0.1 s here.  Guests run in this process on purpose: the
crash tests prove that a misbehaving guest cannot take the parent partition
(this pytest process) with it.  A case that is known to kill the parent runs
in a forked child (conftest.run_isolated), so it is reported, not fatal.

Guest kernels used (guests/<name>/):
  hello           one line, exit 0
  hcall-selftest  every hypercall; XTF result line
  cmdline-echo    prints "cmdline: [<command line>]"
  verdict         ends with the result the command line names
  crash           misbehaves as the command line says (triple-fault, halt,
                  exception, page-fault, bad-shutdown, spin, spin=MS)
"""
import re
import threading
import time

import pytest

from conftest import engine_missing, guest, needs_kvm, run_isolated
from hv.testing.boot import assert_passed, boot, boot_isolated
from hv.testing.paths import RESULT_H
from hv.testing.results import CODE_VERDICTS, RESULT_CODES, VERDICTS, parse_result, parse_result_codes

HELLO_LINE = "Hello from an hv guest!"




# The lifecycle tests run on KVM (the brief: end to end on KVM); the boot and
# crash tests run on every engine hv has, each skipped with its reason.
ENGINES = [
    pytest.param("kvm", marks=needs_kvm),
    pytest.param("tcg", marks=pytest.mark.skipif(engine_missing("tcg") is not None,
                                                 reason=f"TCG unavailable: {engine_missing('tcg')}")),
]
REGISTER_DUMP = re.compile(r"rip=[0-9a-f]{16}")


# ---- helpers ---------------------------------------------------------------

def make(name, cmdline="", mem="64M", engine="kvm"):
    """A fresh Partition with its own capture console (KVM unless told)."""
    from hv.console import CaptureConsole
    from hv.partition import Partition
    console = CaptureConsole()
    return (Partition(guest(name), mem=mem, cmdline=cmdline, engine=engine, console=console),
            console)


def wait_for_state(part, state, timeout=10.0):
    """Poll until part.state == state (pause() asks; the vCPU thread obeys)."""
    deadline = time.monotonic() + timeout
    while part.state != state:
        if time.monotonic() > deadline:
            pytest.fail(f"partition {part.id} did not reach {state!r} within {timeout}s "
                        f"(it is {part.state!r})")
        time.sleep(0.005)


@pytest.fixture
def spinning():
    """A started partition whose guest spins forever without an exit."""
    part, console = make("crash", "spin")
    part.start()
    wait_for_state(part, "running")
    # It is running once it has printed (the console write is a parent exit).
    deadline = time.monotonic() + 10
    while "spinning" not in console.text() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "crash: spinning" in console.text()
    yield part
    part.destroy()


# ---- the host-side parser, no KVM needed ------------------------------------

def test_result_codes_come_from_result_h():
    codes = parse_result_codes()
    assert set(VERDICTS) <= set(codes)
    with open(RESULT_H) as f:
        text = f.read()
    for word, code in codes.items():
        assert re.search(rf"#define\s+GUEST_RESULT_{word}\s+{code}\b", text)
    assert CODE_VERDICTS[codes["FAILURE"]] == "FAILURE"
    assert len(set(codes.values())) == len(codes), "two verdicts share a code"


@pytest.mark.parametrize("text, expected", [
    ("SUCCESS\n", ("SUCCESS", "")),
    ("SKIP: not running under hv\n", ("SKIP", "not running under hv")),
    ("a\r\nERROR: broken\r\n", ("ERROR", "broken")),
    ("FAILURE: x/main.c:3: a == b (1 != 2)\n", ("FAILURE", "x/main.c:3: a == b (1 != 2)")),
    ("FAILURE: early\nnoise\nSUCCESS\ntrailing output\n", ("SUCCESS", "")),
    ("SKIPPED\nSUCCESSFUL\n  ERROR: indented\nERRORS: 3\n", (None, None)),
    ("", (None, None)),
    (b"SUCCESS\n\xff", ("SUCCESS", "")),
])
def test_parse_result(text, expected):
    assert parse_result(text) == expected


def test_parse_result_reads_other_headers(tmp_path):
    header = tmp_path / "result.h"
    header.write_text("#ifndef GUEST_RESULT_H\n#define GUEST_RESULT_H\n"
                      "/* #define GUEST_RESULT_SUCCESS 99 in a comment */\n"
                      "#define GUEST_RESULT_SUCCESS 0x0\n#define GUEST_RESULT_SKIP 10\n"
                      "#define GUEST_RESULT_ERROR 11\n#define GUEST_RESULT_FAILURE 12\n#endif\n")
    assert parse_result_codes(str(header)) == {"SUCCESS": 0, "SKIP": 10, "ERROR": 11, "FAILURE": 12}
    header.write_text("#define GUEST_RESULT_SUCCESS 0\n")
    with pytest.raises(ValueError, match="SKIP"):
        parse_result_codes(str(header))


# ---- booting ---------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_hello(engine):
    run = boot("hello", engine=engine)
    assert run.state == "shutdown", run.describe()
    assert run.exit_code == 0
    assert run.console == HELLO_LINE + "\n"
    assert run.crash_report is None


@pytest.mark.parametrize("engine", ENGINES)
def test_hcall_selftest(engine):
    # In a forked child: the selftest drives every hypercall error path, and a
    # C-core crash there must fail this test, not end the suite.
    try:
        run = boot_isolated("hcall-selftest", engine=engine, timeout=120)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    assert_passed(run)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("verdict", VERDICTS)
def test_verdict_maps_to_result_h_code(verdict, engine):
    run = boot("verdict", cmdline=verdict.lower(), engine=engine)
    assert run.state == "shutdown", run.describe()
    assert run.verdict == verdict, run.describe()
    assert run.exit_code == RESULT_CODES[verdict], run.describe()
    if verdict != "SUCCESS":
        assert run.detail.startswith("verdict demo: "), run.describe()


@needs_kvm
@pytest.mark.parametrize("mode, expected", [
    ("assert", "verdict/main.c:51: two == 3"),
    ("assert-eq", "verdict/main.c:53: two + 1 == 4 (3 != 4)"),
])
def test_failure_message_shows_guest_assertion(mode, expected):
    run = boot("verdict", cmdline=mode)
    assert run.verdict == "FAILURE" and run.exit_code == RESULT_CODES["FAILURE"], run.describe()
    with pytest.raises(pytest.fail.Exception) as failed:
        assert_passed(run)
    message = str(failed.value)
    # The line number may move if the guest is edited; the shape may not.
    assert re.search(r"FAILURE: verdict/main\.c:\d+: " + re.escape(expected.split(": ", 1)[1]),
                     message), message


@needs_kvm
def test_skip_becomes_pytest_skip():
    run = boot("verdict", cmdline="skip")
    with pytest.raises(pytest.skip.Exception, match="skipped on purpose"):
        assert_passed(run)


@needs_kvm
def test_last_result_line_counts():
    run = boot("verdict", cmdline="noise")
    assert "FAILURE: (not a result" in run.console
    assert (run.verdict, run.exit_code) == ("SUCCESS", 0), run.describe()


@needs_kvm
def test_plain_kernel_exit_code():
    run = boot("verdict", cmdline="return=7")
    assert (run.state, run.exit_code, run.verdict) == ("shutdown", 7, None), run.describe()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cmdline", [
    "",
    "console=hvc0",
    "  leading and trailing blanks  ",
    "a=1 b=\"two words\" c='x' \\ tab\there",
    "ünïcödé ☃",
    "x" * 3000,
])
def test_cmdline_reaches_guest(cmdline, engine):
    run = boot("cmdline-echo", cmdline=cmdline, engine=engine)
    assert run.state == "shutdown" and run.exit_code == 0, run.describe()
    assert run.console == f"cmdline: [{cmdline}]\n"


@needs_kvm
def test_cmdline_too_long_starts_nothing():
    from hv.loader import LoadError
    from hv.partition import Partition
    with pytest.raises(LoadError, match="cmdline"):
        Partition(guest("cmdline-echo"), cmdline="x" * 5000, engine="kvm")


# ---- crashing guests: the partition stops, the parent lives on ---------------

CRASH_CAUSE = {
    # kvm-pvm (the software KVM here) reports a triple fault as
    # KVM_EXIT_INTERNAL_ERROR ("emulation failure"), which hv honestly calls
    # an engine failure; a hardware KVM gives KVM_EXIT_SHUTDOWN.
    "triple-fault": r"triple fault|engine could not continue",
    "halt": r"halted with interrupts disabled",
    "exception": r"guest reported a crash \(code 5\)",
    "page-fault": r"guest reported a crash \(code 5\)",
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", list(CRASH_CAUSE))
def test_crash_is_contained(mode, engine):
    run = boot("crash", cmdline=mode, engine=engine)
    assert run.state == "crashed", run.describe()
    assert run.crash_report, run.describe()
    assert re.search(CRASH_CAUSE[mode], run.crash_report), run.describe()
    assert REGISTER_DUMP.search(run.crash_report), run.describe()
    for reg in ("rax", "rsp", "rflags", "cr3", "cs"):
        assert f"{reg}=" in run.crash_report
    if mode in ("exception", "page-fault"):
        vector = {"exception": "0x6", "page-fault": "0xe"}[mode]
        assert f"EXCEPTION vector={vector} " in run.console, run.describe()
        assert run.verdict == "FAILURE" and run.exit_code == RESULT_CODES["FAILURE"]
        # The guest's rip for the fault is printed, and is inside the kernel.
        rip = int(re.search(r"EXCEPTION .* rip=0x([0-9a-f]+)", run.console).group(1), 16)
        assert 0x100000 <= rip < 0x200000
    # The parent is alive and boots another guest.
    again = boot("hello", engine=engine)
    assert (again.state, again.exit_code, again.console) == ("shutdown", 0, HELLO_LINE + "\n")


@needs_kvm
def test_crashed_partition_rejects_run_and_destroys():
    from hv.partition import StateError
    part, _ = make("crash", "halt")
    assert part.run() == "crashed"
    report = part.crash_report
    with pytest.raises(StateError):
        part.run()
    with pytest.raises(StateError):
        part.start()
    assert (part.state, part.crash_report) == ("crashed", report)
    part.destroy()
    part.destroy()
    assert part.state == "destroyed"


@needs_kvm
def test_refused_shutdown_arguments():
    """HV_HC_SHUTDOWN with an unknown reason or a code > 255 is -HV_EINVAL
    and the guest keeps running (crash/main.c bad-shutdown)."""
    assert_passed(boot("crash", cmdline="bad-shutdown"))


@needs_kvm
def test_many_crashes_in_one_process():
    for mode in ("halt", "exception", "triple-fault") * 3:
        assert boot("crash", cmdline=mode).state == "crashed", mode
    assert boot("hello").exit_code == 0


# ---- several partitions -----------------------------------------------------

@needs_kvm
def test_two_partitions_one_after_another():
    a, ca = make("hello")
    b, cb = make("cmdline-echo", "second")
    try:
        assert a.id != b.id
        assert a.run() == "shutdown"
        assert b.run() == "shutdown"
        assert ca.text() == HELLO_LINE + "\n"
        assert cb.text() == "cmdline: [second]\n"
    finally:
        a.destroy()
        b.destroy()


@needs_kvm
def test_partitions_run_concurrently():
    guests = [("hello", ""), ("hcall-selftest", ""), ("cmdline-echo", "third"),
              ("verdict", "skip"), ("crash", "spin=150"), ("crash", "exception")]
    parts = [make(name, cmdline) for name, cmdline in guests]
    try:
        for part, _ in parts:
            part.start()
        states = [part.wait(30) for part, _ in parts]
        assert states == ["shutdown"] * 5 + ["crashed"], states
        texts = [console.text() for _, console in parts]
        assert texts[0] == HELLO_LINE + "\n"
        assert parse_result(texts[1]) == ("SUCCESS", "")
        assert texts[2] == "cmdline: [third]\n"
        assert parse_result(texts[3])[0] == "SKIP" and parts[3][0].exit_code == 3
        assert texts[4] == "SUCCESS\n"
        assert "EXCEPTION vector=0x6" in texts[5]
        # Nothing leaked between consoles.
        assert sum(HELLO_LINE in t for t in texts) == 1
        assert len({part.id for part, _ in parts}) == len(parts)
    finally:
        for part, _ in parts:
            part.destroy()


@needs_kvm
def test_crash_next_to_a_running_partition():
    """One guest crashing does not disturb another one that is running."""
    spin, spin_console = make("crash", "spin")
    try:
        spin.start()
        wait_for_state(spin, "running")
        for mode in ("halt", "exception", "triple-fault"):
            assert boot("crash", cmdline=mode).state == "crashed"
        assert spin.state == "running"
        spin.pause()
        wait_for_state(spin, "paused")
        spin.resume()
        wait_for_state(spin, "running")
    finally:
        spin.destroy()
    assert spin.state == "destroyed"
    assert spin_console.text() == "crash: spinning\n"


# ---- pause / resume / destroy -------------------------------------------------

@needs_kvm
def test_pause_resume_destroy(spinning):
    part = spinning
    part.pause()
    wait_for_state(part, "paused")
    time.sleep(0.05)
    assert part.state == "paused"
    part.resume()
    wait_for_state(part, "running")
    time.sleep(0.05)
    assert part.state == "running"
    part.destroy()
    assert part.state == "destroyed"
    assert part.finished and part._vcpu is None     # it runs nowhere
    part.destroy()                      # idempotent
    assert part.state == "destroyed"
    assert part.wait(1) == "destroyed"


@needs_kvm
def test_paused_guest_makes_no_progress_then_finishes():
    """spin=MS finishes when the partition clock passes MS: pause it first,
    then resume, and it still ends with SUCCESS."""
    part, console = make("crash", "spin=200")
    try:
        part.start()
        part.pause()
        wait_for_state(part, "paused")
        time.sleep(0.3)                 # past the guest's deadline
        assert part.state == "paused" and console.text() == ""
        part.resume()
        assert part.wait(30) == "shutdown"
        assert (part.exit_code, console.text()) == (0, "SUCCESS\n")
    finally:
        part.destroy()


@needs_kvm
def test_pause_returns_paused(spinning):
    """pause() returns once the partition is paused, so resume() may follow at
    once.  (A management call that returns while the guest still runs leaves
    the caller to poll, and pause(); resume() raises StateError.)"""
    from hv.partition import StateError
    part = spinning
    part.pause()
    assert part.state == "paused"
    try:
        part.resume()
    except StateError as e:
        pytest.fail(f"resume() right after pause() raised StateError: {e}")
    wait_for_state(part, "running")


@needs_kvm
def test_destroy_running(spinning):
    part = spinning
    t0 = time.monotonic()
    part.destroy()
    assert time.monotonic() - t0 < 5
    assert part.state == "destroyed"
    assert part.finished and part._vcpu is None     # it runs nowhere
    part.destroy()
    assert part.state == "destroyed"


@needs_kvm
def test_destroy_paused(spinning):
    part = spinning
    part.pause()
    wait_for_state(part, "paused")
    part.destroy()
    assert part.state == "destroyed"
    assert part.finished and part._vcpu is None     # it runs nowhere
    part.destroy()
    assert part.state == "destroyed"


@needs_kvm
@pytest.mark.parametrize("how", ["never-run", "shutdown", "crashed"])
def test_destroy_stopped_is_idempotent(how):
    part, _ = make(*{"never-run": ("hello", ""), "shutdown": ("hello", ""),
                     "crashed": ("crash", "halt")}[how])
    if how != "never-run":
        assert part.run() == how
    part.destroy()
    part.destroy()
    assert part.state == "destroyed"


@needs_kvm
def test_context_manager_destroys():
    from hv.partition import Partition
    from hv.console import CaptureConsole
    with Partition(guest("hello"), engine="kvm", console=CaptureConsole()) as part:
        assert part.run() == "shutdown"
    assert part.state == "destroyed"


def _destroy_while_run_on_own_thread():
    # run() on a thread the caller made (not start()), destroy() from another.
    part, _ = make("crash", "spin")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("state", part.run()), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while part.state != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    part.destroy()
    t.join(10)
    assert not t.is_alive(), "run() did not return after destroy()"
    assert part.state == "destroyed"


@needs_kvm
def test_destroy_while_run_on_callers_thread():
    """destroy() must stop a guest whose run() the caller drives on its own
    thread, not free the partition under the running vCPU."""
    run_isolated(_destroy_while_run_on_own_thread, timeout=60)


def _memory_view_after_destroy():
    part, _ = make("hello")
    view = part.memory()
    part.run()
    part.destroy()
    try:
        view[0x100000]
    except (ValueError, TypeError, IndexError):
        pass                # a released view: fine


@needs_kvm
def test_memory_view_after_destroy_does_not_crash_parent():
    """A memory() view kept past destroy() must not read unmapped guest RAM
    (SIGSEGV of the parent partition)."""
    run_isolated(_memory_view_after_destroy, timeout=60)


@needs_kvm
def test_console_failure_ends_partition():
    """A console backend that fails (disk full) must not leave the partition
    'running' with its vCPU thread gone: it ends in a final state."""
    from hv.console import CaptureConsole
    from hv.partition import Partition

    class FullDisk(CaptureConsole):
        def write(self, data):
            raise OSError(28, "No space left on device")

    part = Partition(guest("hello"), engine="kvm", console=FullDisk())
    try:
        part.start()
        state = part.wait(10)
        assert part.finished and part._vcpu is None     # it runs nowhere
        assert state in ("crashed", "shutdown"), f"partition left in state {state!r}"
    finally:
        part.destroy()
    assert boot("hello").exit_code == 0


# ---- operations in the wrong state --------------------------------------------

def _bring_to(state):
    """A partition in `state`; returns (part, cleanup)."""
    if state in ("running", "paused"):
        part, _ = make("crash", "spin")
        part.start()
        wait_for_state(part, "running")
        if state == "paused":
            part.pause()
            wait_for_state(part, "paused")
        return part
    part, _ = make(*{"created": ("hello", ""), "shutdown": ("hello", ""),
                     "crashed": ("crash", "halt"), "destroyed": ("hello", "")}[state])
    if state in ("shutdown", "crashed"):
        assert part.run() == state
    if state == "destroyed":
        part.destroy()
    return part


WRONG = [
    ("created", "pause"), ("created", "resume"),
    ("running", "run"), ("running", "start"), ("running", "resume"),
    ("paused", "run"), ("paused", "start"), ("paused", "pause"),
    ("shutdown", "run"), ("shutdown", "start"), ("shutdown", "pause"), ("shutdown", "resume"),
    ("crashed", "run"), ("crashed", "start"), ("crashed", "pause"), ("crashed", "resume"),
    ("destroyed", "run"), ("destroyed", "start"), ("destroyed", "pause"),
    ("destroyed", "resume"),
]


@needs_kvm
@pytest.mark.parametrize("state, op", WRONG, ids=[f"{s}-{o}" for s, o in WRONG])
def test_wrong_state_raises_state_error(state, op):
    from hv.partition import StateError
    part = _bring_to(state)
    try:
        assert part.state == state
        with pytest.raises(StateError, match=state):
            getattr(part, op)()
        time.sleep(0.02)
        assert part.state == state, f"{op}() in state {state} changed it to {part.state}"
    finally:
        part.destroy()


@needs_kvm
@pytest.mark.parametrize("op", ["memory", "serve"])
def test_destroyed_partition_raises_state_error(op):
    from hv.partition import StateError
    part = _bring_to("destroyed")
    args = {"memory": (), "serve": (2, lambda args: 0)}[op]
    with pytest.raises(StateError):
        getattr(part, op)(*args)
