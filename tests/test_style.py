"""Machine-checked style: the core builds warning-free, Python has no
unused names or undefined ones (ruff's pyflakes rules)."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def test_core_compiles_without_warnings():
    """csrc/ is plain C that builds clean with -Wall -Wextra (and never
    includes Python.h)."""
    import unicorn
    include = os.path.join(os.path.dirname(unicorn.__file__), "include")
    for source in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c"))):
        text = open(source).read()
        assert "Python.h" not in text, f"{source} includes Python.h"
        proc = subprocess.run(
            ["gcc", "-std=gnu11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror",
             "-fsyntax-only", "-I", os.path.join(ROOT, "csrc"),
             "-I", os.path.join(ROOT, "csrc", "include"), "-I", include, source],
            capture_output=True, text=True)
        assert proc.returncode == 0, f"{source}:\n{proc.stderr}"


def test_engines_reach_the_core_only_through_the_host_interface():
    """An engine includes engine.h (and its own headers), never core.h or
    another part of the core: what it may ask of the core is struct
    engine_host (engine.h), so the core's internals can change freely."""
    allowed = {"engine.h", "engine_tcg.h", "engine_kvm.h", "hv.h", "x86_insn.h"}   # x86_insn.h: opcodes only
    for path in sorted(glob.glob(os.path.join(ROOT, "csrc", "engine_*.[ch]"))):
        if os.path.basename(path) == "engine_host.c":
            continue                        # the core's side of the interface
        local = re.findall(r'^#include "([^"]+)"', open(path).read(), flags=re.M)
        assert set(local) <= allowed, f"{path} includes {sorted(set(local) - allowed)}"


@pytest.mark.skipif(shutil.which("ruff") is None and
                    subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                   capture_output=True).returncode != 0,
                    reason="ruff is not installed (pip install -r requirements-test.txt)")
def test_python_has_no_unused_or_undefined_names():
    paths = ["hv", "tests", "tools/bench", "tools/tour", "tools/gen_abi_doc", "tools/linux-fixture"]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--quiet",
                           *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
