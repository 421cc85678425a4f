"""The README's examples run as written.

Every ```sh block is run by bash (-e: each command must succeed) in a scratch
directory that looks like the top of a clone after `make setup`: guests/
and examples/ are the tree's, and .venv/bin/hv is this checkout's hv.  A
block preceded by a `<!-- test_readme: not run (why) -->` comment is skipped
(it sets up a machine, or needs two terminals); the reason is required.
A ``` block of `$ command` and its output is run and compared, with
addresses and numbers that depend on the build left out.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, engine_missing

README = os.path.join(ROOT, "README.md")
NOT_RUN = re.compile(r"<!-- test_readme: not run \((.+)\) -->\s*$")


def blocks():
    """(kind, first line number, text, skip reason) of each fenced block."""
    lines = open(README).read().split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        before = lines[i - 1] if i else ""
        skip = NOT_RUN.match(before)
        found.append((fence.group(1), i + 1, "\n".join(lines[i + 1:j]),
                      skip.group(1) if skip else None))
        i = j + 1
    return found


SH_BLOCKS = [b for b in blocks() if b[0] == "sh"]
TRANSCRIPTS = [b for b in blocks() if b[0] == "" and b[2].startswith("$ ")]


@pytest.fixture
def clone_top(tmp_path):
    """A directory laid out like the top of the tree after `make setup`."""
    for name in ("guests", "examples", "docs"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    hv = bin_dir / "hv"
    hv.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m hv \"$@\"\n")
    hv.chmod(0o755)
    os.symlink(sys.executable, bin_dir / "python")
    return tmp_path


def run_block(text, cwd):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(cwd)}     # named consoles stay in the scratch dir
    return subprocess.run(["bash", "-e", "-c", text], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, input="hello from the README\n")


def test_every_block_is_run_or_says_why_not():
    assert len(SH_BLOCKS) >= 4 and TRANSCRIPTS
    for kind, line, text, skip in SH_BLOCKS:
        assert skip is None or skip.strip(), f"README.md:{line}: a skipped block says why"
    assert "python -m hv" not in open(README).read(), "the README says .venv/bin/hv"


@pytest.mark.skipif(engine_missing("tcg") is not None, reason="needs an engine")
@pytest.mark.parametrize("line, text", [pytest.param(line, text, id=f"README.md:{line}")
                                        for _, line, text, skip in SH_BLOCKS if skip is None])
def test_sh_block_runs_as_written(line, text, clone_top):
    proc = run_block(text, clone_top)
    assert proc.returncode == 0, f"README.md:{line}\n{text}\n--- stdout\n{proc.stdout}" \
                                 f"\n--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr


def normalized(text):
    """Output without what depends on the build: hex addresses, counts."""
    text = re.sub(r"0x[0-9a-f]+", "0x_", text)
    return [re.sub(r"^\s*\d+ insn", "N insn", line) for line in text.strip().splitlines()]


@pytest.mark.skipif(engine_missing("tcg") is not None, reason="needs an engine")
@pytest.mark.parametrize("line, text", [pytest.param(line, text, id=f"README.md:{line}")
                                        for _, line, text, _ in TRANSCRIPTS])
def test_transcript_matches(line, text, clone_top):
    command, *expected = text.split("\n")
    proc = subprocess.run(["bash", "-c", command[2:]], cwd=clone_top, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert normalized(proc.stdout) == normalized("\n".join(expected)), \
        f"README.md:{line} shows\n" + "\n".join(expected) + f"\nbut hv prints\n{proc.stdout}"
