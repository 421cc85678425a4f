"""The hv command, as a user runs it: `python -m hv ...` in a subprocess.

cli.py's promises: every error is ONE line on stderr starting "hv: error:",
nothing on stdout, exit status 2, and nothing started; a guest's shutdown
code becomes the exit status; a crash exits 125 with a register dump on
stderr.
"""
import os
import re
import struct
import subprocess
import sys

import pytest

from conftest import ROOT, engine_missing, guest, needs_kvm
from hv.testing.results import RESULT_CODES, parse_result

HELLO_LINE = "Hello from an hv guest!"




def _no_engine():
    from hv.partition import ENGINES
    usable = [n for n in ENGINES if n != "none" and engine_missing(n) is None]
    return None if usable else "no usable engine (KVM or TCG) on this host"


# Most tests run `hv run` as a user does, with the default engine (whatever
# hv picks here); the crash tests also name each engine.
needs_engine = pytest.mark.skipif(_no_engine() is not None, reason=str(_no_engine()))
ENGINE_ARGS = [
    pytest.param([], id="default-engine", marks=needs_engine),
    pytest.param(["--engine", "kvm"], id="kvm", marks=needs_kvm),
    pytest.param(["--engine", "tcg"], id="tcg",
                 marks=pytest.mark.skipif(engine_missing("tcg") is not None,
                                          reason=f"TCG unavailable: {engine_missing('tcg')}")),
]
EXIT_USAGE = 2
EXIT_CRASHED = 125


def hv_cmd(*args, timeout=60):
    """Run `python -m hv ARGS` from the repository root; CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "hv", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


hv = hv_cmd


def assert_one_line_error(proc, *, contains=None):
    """The CLI's error contract."""
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == EXIT_USAGE, detail
    assert proc.stdout == "", detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("hv: error: "), detail
    assert "Traceback" not in proc.stderr, detail
    if contains:
        assert re.search(contains, lines[0]), detail


# ---- booting ---------------------------------------------------------------

@needs_engine
def test_run_hello():
    proc = hv("run", guest("hello"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, HELLO_LINE + "\n", "")


@needs_engine
def test_run_relative_path():
    proc = hv("run", os.path.relpath(guest("hello"), ROOT))
    assert (proc.returncode, proc.stdout) == (0, HELLO_LINE + "\n"), proc.stderr


@needs_engine
def test_run_hcall_selftest():
    proc = hv("run", guest("hcall-selftest"))
    verdict, detail = parse_result(proc.stdout)
    assert verdict == "SUCCESS", f"guest {verdict}: {detail}\n{proc.stdout}{proc.stderr}"
    assert proc.returncode == RESULT_CODES["SUCCESS"] == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "SUCCESS"


@needs_engine
@pytest.mark.parametrize("verdict", ["SKIP", "ERROR", "FAILURE"])
def test_run_exit_status_is_result_code(verdict):
    proc = hv("run", guest("verdict"), "--cmdline", verdict.lower())
    assert parse_result(proc.stdout)[0] == verdict
    assert proc.returncode == RESULT_CODES[verdict], proc.stderr


@needs_engine
def test_run_plain_kernel_exit_status():
    proc = hv("run", guest("verdict"), "--cmdline", "return=42")
    assert (proc.returncode, proc.stdout) == (42, "returning 42\n"), proc.stderr


@needs_engine
def test_run_cmdline():
    proc = hv("run", guest("cmdline-echo"), "--cmdline", "root=/dev/hv0 quiet")
    assert (proc.returncode, proc.stdout) == (0, "cmdline: [root=/dev/hv0 quiet]\n"), proc.stderr


@needs_engine
@pytest.mark.parametrize("mem", ["2M", "64M", "64m", "256M", "1G", "2097152", "4096K"])
def test_run_good_mem(mem):
    proc = hv("run", guest("hello"), "--mem", mem)
    assert (proc.returncode, proc.stdout) == (0, HELLO_LINE + "\n"), proc.stderr


@needs_engine
def test_verbose_reports_on_stderr():
    proc = hv("run", guest("hello"), "-v")
    assert (proc.returncode, proc.stdout) == (0, HELLO_LINE + "\n")
    assert re.search(r"engine \w+", proc.stderr) and "shutdown" in proc.stderr, proc.stderr


# ---- bad kernels -------------------------------------------------------------

def _loaded_end(elf):
    """Where the last PT_LOAD segment's bytes end in an ELF64 file (not the
    file size: debug sections after them may make up most of it)."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    end = 0
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type == 1:                 # PT_LOAD
            end = max(end, p_offset + p_filesz)
    return end


def _bad_kernel(kind, tmp_path):
    data = open(guest("hello"), "rb").read()
    path = tmp_path / f"{kind}.elf"
    if kind == "truncated-header":
        path.write_bytes(data[:40])
    elif kind == "truncated-half":
        path.write_bytes(data[:_loaded_end(data) // 2])   # inside what must be loaded
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "flipped-magic":
        path.write_bytes(b"\x7fELG" + data[4:])
    elif kind == "elf32-class":
        path.write_bytes(data[:4] + b"\x01" + data[5:])
    elif kind == "text":
        path.write_text("#!/bin/sh\necho this is not a kernel\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "nonexistent":
        pass
    elif kind == "no-permission":
        path.write_bytes(data)
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as root: a mode-0 file is still readable")
    return path


BAD_KERNELS = ["truncated-header", "truncated-half", "empty", "flipped-magic", "elf32-class",
               "text", "directory", "nonexistent", "no-permission"]


@pytest.mark.parametrize("kind", BAD_KERNELS)
def test_bad_kernel(kind, tmp_path):
    assert_one_line_error(hv("run", _bad_kernel(kind, tmp_path)))


def test_device_as_kernel():
    assert_one_line_error(hv("run", "/dev/zero", timeout=30), contains="not a regular file")


def test_bad_kernel_with_console_file(tmp_path):
    """Nothing is started: the guest's console stays empty."""
    out = tmp_path / "console.txt"
    assert_one_line_error(hv("run", _bad_kernel("text", tmp_path), "--console", out))
    assert not out.exists() or out.read_bytes() == b""


# ---- bad options ---------------------------------------------------------------

def _host_ram_gib():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 30


@pytest.mark.parametrize("mem", ["0", "-1", "12345", "1T", "abc", "", "4K", "1.5M", "0x4000000",
                                 "64MM", "M", "huge"])
def test_bad_mem(mem):
    assert_one_line_error(hv("run", guest("hello"), f"--mem={mem}"))


def test_mem_larger_than_host():
    assert_one_line_error(hv("run", guest("hello"), "--mem", f"{_host_ram_gib() * 2 + 2}G"),
                          contains="host")


@pytest.mark.parametrize("mem", ["1M", "1020K"])
def test_mem_too_small(mem):
    """1 MiB is hv's minimum, but the kernel is linked at 1 MiB: it does not fit."""
    assert_one_line_error(hv("run", guest("hello"), "--mem", mem))


@pytest.mark.parametrize("engine", ["bogus", "", "KVM", " kvm", "kvm,tcg"])
def test_bad_engine(engine):
    assert_one_line_error(hv("run", guest("hello"), "--engine", engine), contains="engine")


def test_engine_none_is_not_a_run_engine():
    """'none' runs nothing (it exists for dispatcher tests): `hv run` must
    refuse it as bad input (exit 2, one line), not start a guest that
    'crashes' with ENOSYS (exit 125)."""
    assert_one_line_error(hv("run", guest("hello"), "--engine", "none"), contains="engine")


def test_cmdline_too_long():
    assert_one_line_error(hv("run", guest("cmdline-echo"), "--cmdline", "x" * 5000),
                          contains="cmdline")


@pytest.mark.parametrize("args", [
    ["run"],                                  # no kernel
    ["run", "k.elf", "--bogus-option"],
    ["frobnicate"],                           # unknown command
])
def test_usage_errors_are_one_line(args):
    """cli.py: 'Every error is one line on stderr'; argparse's usage block
    must not break that."""
    assert_one_line_error(hv(*args))


def test_console_file_unwritable(tmp_path):
    assert_one_line_error(hv("run", guest("hello"), "--console", tmp_path / "no" / "such" / "dir"),
                          contains="console")
    assert_one_line_error(hv("run", guest("hello"), "--console", tmp_path), contains="console")


@needs_engine
def test_console_write_failure_is_reported():
    """A console that fails mid-run (disk full) is one hv: line on stderr,
    not a Python traceback."""
    proc = hv("run", guest("hello"), "--console", "/dev/full")
    detail = f"exit {proc.returncode}\nstderr: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr, detail
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith(("hv:", " ")) for line in lines), detail
    assert proc.returncode not in (0, 1), detail


# ---- crashes -----------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINE_ARGS)
@pytest.mark.parametrize("mode", ["triple-fault", "halt", "exception", "page-fault"])
def test_crash_exits_125_with_register_dump(mode, engine):
    proc = hv("run", guest("crash"), "--cmdline", mode, *engine)
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == EXIT_CRASHED, detail
    assert re.search(r"^hv: partition \d+ crashed: ", proc.stderr, re.M), detail
    assert re.search(r"rip=[0-9a-f]{16}", proc.stderr), detail
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("crash: "), detail       # the guest's own output
    if mode in ("exception", "page-fault"):
        vector = {"exception": "0x6", "page-fault": "0xe"}[mode]
        assert f"EXCEPTION vector={vector} " in proc.stdout, detail
        assert parse_result(proc.stdout)[0] == "FAILURE", detail


@needs_kvm
def test_crash_report_to_stderr_console_to_file(tmp_path):
    out = tmp_path / "console.txt"
    proc = hv("run", guest("crash"), "--cmdline", "exception", "--console", out,
              "--engine", "kvm")
    assert proc.returncode == EXIT_CRASHED
    assert proc.stdout == ""
    assert "EXCEPTION vector=0x6" in out.read_text()
    assert "rip=" in proc.stderr and "EXCEPTION" not in proc.stderr


# ---- info and --console ---------------------------------------------------------

def test_info():
    from hv.abi import lib
    from hv.partition import engine_status
    proc = hv("info")
    assert proc.returncode == 0, proc.stderr
    assert f"ABI version {lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}" in proc.stdout
    from hv.partition import ENGINES
    lines = proc.stdout.splitlines()
    assert any(line.startswith("engine kvm: ") for line in lines), proc.stdout
    for name in ENGINES:
        if name == "none":              # a test engine, not listed
            continue
        ok, why = engine_status(name)
        expected = f"engine {name}: available" if ok else f"engine {name}: unavailable: {why}"
        assert expected in lines, proc.stdout


def test_info_json():
    import json

    import hv
    from hv.abi import lib
    from hv.partition import choose_engine, engine_status
    proc = hv_cmd("info", "--json")
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["version"] == hv.__version__
    assert facts["abi"] == f"{lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}"
    for name, e in facts["engines"].items():
        assert (e["available"], e["reason"]) == engine_status(name)
    assert facts["auto"]["engine"] == choose_engine("auto")[0]


def test_version_and_exit_statuses_in_help():
    import hv
    proc = hv_cmd("--version")
    assert (proc.returncode, proc.stdout) == (0, f"hv {hv.__version__}\n")
    helptext = hv_cmd("--help").stdout
    for status in ("2", "74", "125", "130", "143"):
        assert f"  {status} " in helptext, helptext
    assert "--json" in helptext
    assert "exit statuses" in hv_cmd("run", "--help").stdout


@needs_engine
def test_console_file(tmp_path):
    out = tmp_path / "console.txt"
    proc = hv("run", guest("hello"), "--console", out)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert out.read_text() == HELLO_LINE + "\n"


@needs_engine
def test_console_file_selftest(tmp_path):
    out = tmp_path / "console.txt"
    proc = hv("run", guest("hcall-selftest"), "--console", out)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
    assert parse_result(out.read_text()) == ("SUCCESS", "")


@pytest.mark.parametrize("engine_args", ENGINE_ARGS)
def test_ctrl_c_stops_a_spinning_guest(engine_args):
    """SIGINT ends `hv run` promptly with status 130, even while a TCG guest
    spins without a single exit."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", *engine_args,
                             "--cmdline", "spin", guest("crash")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"crash: spinning")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "hv: interrupted"


# ---- hv trace and --trace FILE: the defects of issue 8 ---------------------------------

TRACE_ENGINES = [p for p in ENGINE_ARGS if p.id != "default-engine"]


@pytest.mark.parametrize("engine", TRACE_ENGINES)
def test_trace_never_loses_the_last_event(engine, tmp_path):
    """The shutdown line was written after the process began to exit (lost
    in 8 of 10 runs): every run must end with it, on stdout and in a file."""
    for i in range(3):
        proc = hv_cmd("trace", *engine, guest("hello"))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1].endswith("shutdown(reason=0, code=0) [parent]"), \
            f"run {i}: {proc.stdout!r}"
        out = tmp_path / f"trace{i}.txt"
        proc = hv_cmd("run", *engine, "--trace", out, guest("hello"))
        assert proc.returncode == 0, proc.stderr
        assert out.read_text().splitlines()[-1].endswith("shutdown(reason=0, code=0) [parent]")


@needs_engine
@pytest.mark.parametrize("form", ["text", "chrome"])
def test_trace_into_head_ends_quietly(form, tmp_path):
    """`hv trace ... | head -1`: the reader leaves; no crash report, no
    BrokenPipeError, just the end (141, as for any filter).  The Chrome
    form is written after the run, and raised BrokenPipeError there."""
    err = tmp_path / "err.txt"
    head = "head -1" if form == "text" else "head -c 20"
    proc = subprocess.run(f"{sys.executable} -m hv trace --format {form} "
                          f"{guest('hcall-selftest')} 2>{err}"
                          f" | {head}; s=${{PIPESTATUS[0]}}; echo; echo \"status $s\"",
                          shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line]
    first = "hypercall page placed at" if form == "text" else '{"traceEvents"'
    assert len(lines) == 2 and first in lines[0], proc.stdout
    assert lines[1] == "status 141", proc.stdout
    text = err.read_text()
    assert "Traceback" not in text and "crashed" not in text and "BrokenPipe" not in text, text


@needs_engine
@pytest.mark.parametrize("how", ["run --trace", "trace >"])
def test_trace_to_a_full_disk_is_one_line_and_74(how):
    if how == "run --trace":
        proc = hv_cmd("run", "--trace", "/dev/full", guest("hello"))
    else:
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "hv", "trace", guest("hello")], cwd=ROOT,
                                  stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 74, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"^hv: cannot write the trace to \S+: No space left on device", proc.stderr,
                     re.M), proc.stderr


def test_trace_unknown_hypercall_name_is_refused():
    assert_one_line_error(hv_cmd("trace", "--hypercall", "shutdwn", guest("hello")),
                          contains="unknown hypercall 'shutdwn'.*shutdown")


@pytest.mark.parametrize("vcpu", ["1", "7", "-1"])
def test_trace_absent_vcpu_is_refused(vcpu):
    assert_one_line_error(hv_cmd("trace", "--vcpu", vcpu, guest("hello")), contains="--vcpu")


def test_trace_file_is_not_truncated_when_the_kernel_is_rejected(tmp_path):
    out = tmp_path / "trace.txt"
    out.write_text("yesterday's trace\n")
    bad = tmp_path / "bad.elf"
    bad.write_text("not a kernel")
    assert_one_line_error(hv_cmd("run", "--trace", out, bad))
    assert out.read_text() == "yesterday's trace\n"


# ---- structured output and logs ------------------------------------------------------------

@needs_engine
def test_run_json_report_tells_the_guests_2_from_hvs_2(tmp_path):
    import json
    guest_two = hv_cmd("run", "--json", guest("verdict"), "--cmdline", "return=2")
    report = json.loads(guest_two.stderr.splitlines()[-1])
    assert guest_two.returncode == 2
    assert (report["state"], report["exit_code"], report["exit_status"]) == ("shutdown", 2, 2)
    assert report["exits"] > 0 and report["hypercalls_slow"] > 0
    bad = hv_cmd("run", "--json", tmp_path / "missing.elf")
    assert bad.returncode == 2 and bad.stdout == ""
    (line,) = bad.stderr.splitlines()
    report = json.loads(line)
    assert set(report) == {"error", "exit_status"} and "missing.elf" in report["error"]


@needs_engine
def test_metrics_file_has_json_lines_ending_with_the_final_counters(tmp_path):
    import json
    out = tmp_path / "metrics.jsonl"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    proc = hv_cmd("run", "--metrics", out, "--metrics-interval", "0.05", "--disk", disk,
                  guest("blk-test"), "--cmdline", "sectors=8")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    last = lines[-1]
    assert last["state"] == "shutdown" and last["exit_code"] == 0
    assert last["devices"][0]["type"] == "blk" and last["devices"][0]["bytes_from_guest"] >= 8 * 512
    times = [line["time"] for line in lines]
    assert times == sorted(times)


@needs_engine
def test_verbose_levels_and_log_file(tmp_path):
    log = tmp_path / "hv.log"
    quiet = hv_cmd("run", "--log-file", log, guest("hello"))
    assert (quiet.returncode, quiet.stderr) == (0, "")       # nothing on stderr without -v
    text = log.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d .* INFO partition \d+: engine ", text, re.M), text
    assert re.search(r"INFO partition \d+: shutdown; vcpu 0: \d+ exits", text), text
    loud = hv_cmd("run", "-v", guest("hello"))
    assert re.search(r"^hv: partition \d+: engine ", loud.stderr, re.M), loud.stderr
    errors = hv_cmd("run", "--log-file", log, tmp_path / "missing.elf")
    assert_one_line_error(errors)
    assert "ERROR error: " in log.read_text()
