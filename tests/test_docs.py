"""Generated documents are fresh and complete: docs/abi.md (tools/gen_abi_doc)
and docs/tour.md (tools/tour).

The generators are also checked against the compiler: every value and struct
layout gen_abi_doc reads from abi.h must equal what cffi's compile of the same
header says, so the document cannot drift from the ABI the code uses.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap
from importlib.machinery import SourceFileLoader

import pytest

from hv.abi import ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABI_H = os.path.join(ROOT, "csrc", "include", "hv", "abi.h")


def load_tool(name):
    """Import an extensionless script from tools/ as a module."""
    loader = SourceFileLoader(f"tool_{name}", os.path.join(ROOT, "tools", name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


gen_abi_doc = load_tool("gen_abi_doc")
tour = load_tool("tour")


def run_tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args],
                          capture_output=True, text=True, timeout=60)


def parsed_abi():
    with open(ABI_H) as f:
        return gen_abi_doc.parse(f.read())


def hypercalls(parsed):
    return {hc["define"]: hc for s in parsed["sections"] for hc in s["hypercalls"]}


# ---- docs/abi.md -------------------------------------------------------------
def test_abi_doc_is_fresh():
    r = run_tool("gen_abi_doc", "--check")
    assert r.returncode == 0, r.stderr + "(run tools/gen_abi_doc and commit docs/abi.md)"


def test_every_compiled_hypercall_has_a_doc_entry():
    documented = hypercalls(parsed_abi())
    with open(os.path.join(ROOT, "docs", "abi.md")) as f:
        doc = f.read()
    compiled = {n for n in dir(lib) if n.startswith("HV_HC_")} - gen_abi_doc.HC_NOT_CALLS
    assert compiled, "no HV_HC_* in hv._core.lib"
    assert compiled == set(documented)
    for name in sorted(compiled):
        assert documented[name]["number"] == getattr(lib, name), name
        assert f"### {name}\n" in doc, f"{name} has no section in docs/abi.md"
    assert max(getattr(lib, n) for n in compiled) < lib.HV_HC_COUNT


def test_documented_values_are_the_compiled_values():
    for name, value in parsed_abi()["defines"].items():
        assert getattr(lib, name) == value, name


def test_documented_struct_layouts_are_the_compilers():
    structs = [item for s in parsed_abi()["sections"] for item in s["items"] if item[0] == "struct"]
    assert {name for _, name, _ in structs} >= {"hv_pvh_start_info", "hv_pvh_memmap_entry"}
    for _, name, layout in structs:
        ctype = f"struct {name}"
        assert layout["size"] == ffi.sizeof(ctype), ctype
        for field in layout["fields"]:
            assert field["offset"] == ffi.offsetof(ctype, field["name"]), (ctype, field["name"])


def test_abi_doc_has_banner_and_prose_sections():
    with open(os.path.join(ROOT, "docs", "abi.md")) as f:
        doc = f.read()
    assert gen_abi_doc.BANNER in doc.split("\n", 3)[2]
    assert "Calling convention" in doc and "HV_CPUID_BASE" in doc


# A minimal header in the documented format, to break one rule at a time.
GOOD_HEADER = textwrap.dedent("""\
    /* intro */
    /* ---- Transport ----
     * call page + 32 * N     arguments in RDI, RSI
     */
    /* ---- Hypercalls ---- */
    /* HC ping: Answer.
     *   args:    x: a number
     *   returns: x
     *   errors:  -HV_EINVAL x is odd
     */
    #define HV_HC_PING 0

    /* HC pong: Answer back.
     *   args:    none
     *   returns: 0
     *   errors:  none
     */
    #define HV_HC_PONG 1
    #define HV_HC_COUNT 2
    """)


def gen_from(tmp_path, header, *args):
    h = tmp_path / "abi.h"
    h.write_text(header)
    return run_tool("gen_abi_doc", "--header", str(h), "--output", str(tmp_path / "abi.md"), *args)


def test_generator_accepts_the_minimal_header(tmp_path):
    r = gen_from(tmp_path, GOOD_HEADER)
    assert r.returncode == 0, r.stderr
    doc = (tmp_path / "abi.md").read_text()
    assert "`x` (RDI): a number" in doc and "`-HV_EINVAL`: x is odd" in doc
    assert gen_from(tmp_path, GOOD_HEADER, "--check").returncode == 0
    (tmp_path / "abi.md").write_text(doc.replace("Answer back", "Answer"))
    r = gen_from(tmp_path, GOOD_HEADER, "--check")
    assert r.returncode == 1 and "stale" in r.stderr


@pytest.mark.parametrize("edit,message", [
    (lambda h: h.replace("/* HC pong: Answer back.", "/* pong: Answer back."), "HV_HC_PONG has no doc block"),
    (lambda h: h.replace("#define HV_HC_PONG 1", "#define HV_HC_PONG 0"), "reuses number 0"),
    (lambda h: h.replace("#define HV_HC_PONG 1", "#define HV_HC_PANG 1"), "follows the doc block"),
    (lambda h: h.replace("#define HV_HC_PONG 1\n", ""), "not followed by its #define"),
    (lambda h: h.replace(" *   errors:  none\n", ""), "lacks 'errors:'"),
    (lambda h: h.replace("#define HV_HC_COUNT 2", "#define HV_HC_COUNT 1"), "HV_HC_COUNT 1"),
    (lambda h: h.replace("#define HV_HC_COUNT 2", "#define HV_HC_COUNT 2\n#define HV_HC_PING 3"),
     "defined twice"),
])
def test_generator_fails_loudly_on_a_broken_header(tmp_path, edit, message):
    broken = edit(GOOD_HEADER)
    assert broken != GOOD_HEADER
    r = gen_from(tmp_path, broken)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "abi.h:" in r.stderr
    assert not (tmp_path / "abi.md").exists()


# ---- docs/tour.md ------------------------------------------------------------
def test_tour_tags_are_unique():
    dups = tour.duplicates(tour.collect(ROOT))
    assert not dups, "tour numbers used twice: " + "; ".join(dups)


def test_tour_doc_is_fresh():
    r = run_tool("tour", "--check")
    assert r.returncode == 0, r.stderr + "(run tools/tour)"


def test_tour_extracts_c_python_and_docstring_tags(tmp_path):
    (tmp_path / "csrc").mkdir()
    (tmp_path / "hv").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "csrc" / "a.c").write_text(
        "int x;\n/*\n * Preamble.\n *\n * T:20 Second stop,\n * two lines.\n */\n/* T:10 First. */\n")
    (tmp_path / "hv" / "b.py").write_text(
        '"""Module.\n\nT:30 A docstring stop\nthat wraps.\n\nNot part of it.\n"""\n'
        "s = '# T:99 in a string, not a tag'\n"
        "def f():\n    # T:40 Python stop\n    # continued here.\n    return 1  # not continued\n")
    (tmp_path / "tools" / "script").write_text("#!/usr/bin/env python3\n# T:50 A tool.\n")
    tags = tour.collect(str(tmp_path))
    assert [(n, p, line, text) for n, p, line, text in tags] == [
        (10, "csrc/a.c", 8, "First."),
        (20, "csrc/a.c", 5, "Second stop, two lines."),
        (30, "hv/b.py", 3, "A docstring stop that wraps."),
        (40, "hv/b.py", 10, "Python stop continued here."),
        (50, "tools/script", 2, "A tool."),
    ]
    r = run_tool("tour", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = (tmp_path / "docs" / "tour.md").read_text()
    assert doc.index("T:10") < doc.index("T:20") < doc.index("T:50")
    assert "`hv/b.py`" in doc
    assert run_tool("tour", "--root", str(tmp_path), "--check").returncode == 0

    (tmp_path / "hv" / "c.py").write_text("# T:40 The same number again.\n")
    r = run_tool("tour", "--root", str(tmp_path), "--check")
    assert r.returncode == 1 and "T:40" in r.stderr and "hv/c.py:1" in r.stderr
    (tmp_path / "hv" / "c.py").write_text("# T:41 A new stop.\n")
    r = run_tool("tour", "--root", str(tmp_path), "--check")
    assert r.returncode == 1 and "stale" in r.stderr
