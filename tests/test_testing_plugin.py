"""The pytest plugin (hv.testing.plugin) from the outside: a pytest run in a
subprocess collects guest kernels as items, and each result line becomes
that item's outcome; and a user's test directory (examples/testing) that
uses hv.testing's strategies and the plugin passes."""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import GUEST_BUILD, ROOT


def pytest_run(cwd, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "hv.testing.plugin",
                           "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def outcomes(junit):
    """{test name: (outcome, message, text)} from a JUnit XML report."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        result = ("passed", "", "")
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                result = (tag, node.get("message", ""), node.text or "")
        out[case.get("name")] = result
    return out


def test_result_lines_become_outcomes(tmp_path):
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n"
        f"hv_kernels = {os.path.join(GUEST_BUILD, 'verdict.elf')}\n"
        "hv_kernel_cmdlines =\n    verdict: success\n    verdict: skip\n"
        "    verdict: error\n    verdict: failure\n    verdict: assert\n"
        "hv_engines = tcg kvm nosuch\n")
    junit = tmp_path / "report.xml"
    proc = pytest_run(tmp_path, f"--junitxml={junit}")
    assert proc.returncode == 1, proc.stdout + proc.stderr       # some items fail, as they must
    got = outcomes(junit)
    assert len(got) == 15, sorted(got)
    assert got["verdict[success-tcg]"][0] == "passed"
    assert got["verdict[skip-tcg]"][:2] == ("skipped", "guest SKIP: verdict demo: skipped on purpose")
    assert got["verdict[error-tcg]"][0] == "error"
    assert "guest ERROR: verdict demo: error 42" in got["verdict[error-tcg]"][2]
    assert got["verdict[failure-tcg]"][0] == "failure"
    kind, _message, text = got["verdict[assert-tcg]"]
    assert kind == "failure"
    # The guest's file:line in the report; the console and the trace beside it.
    assert "guest FAILURE at verdict/main.c:" in text and ": two == 3" in text, text
    assert "replay: python -m hv trace --engine tcg --deterministic --cmdline 'assert'" in text
    report = re.search(r"_ guest kernel verdict\[assert-tcg\] _+\n(.*?)\n_{3,} ", proc.stdout,
                       re.S).group(1)
    console = report.split("Captured guest console call")[1]
    assert console.split("\n")[1].startswith("FAILURE: verdict/main.c:"), report
    assert "console_write(buf=" in report.split("Captured hv trace call")[1], report
    # An engine the host lacks is skipped, saying why.
    assert got["verdict[success-nosuch]"][0] == "skipped"
    assert "nosuch engine unavailable: unknown engine" in got["verdict[success-nosuch]"][1]
    kvm = got["verdict[success-kvm]"]
    assert kvm[0] == "passed" or "kvm engine unavailable" in kvm[1], kvm


def test_kernels_on_the_command_line(tmp_path):
    proc = pytest_run(tmp_path, "-q", "--hv-kernels", os.path.join(GUEST_BUILD, "hello.elf"),
                      "--hv-engine", "tcg")
    # hello prints no result line: its shutdown code, 0, decides.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_a_users_test_directory_passes(tmp_path):
    junit = tmp_path / "report.xml"
    proc = pytest_run(os.path.join(ROOT, "examples", "testing"), f"--junitxml={junit}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = outcomes(junit)
    assert {"test_unknown_numbers_are_enosys", "test_console_write_agrees_with_the_model",
            "test_programs_on_a_real_guest", "hcall-selftest[tcg]"} <= set(got), sorted(got)
    assert all(o[0] in ("passed", "skipped") for o in got.values()), got
