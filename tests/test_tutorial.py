"""docs/tutorial.md, run as written: its tagged code blocks, in order, in a
scratch copy of the tree.

A fenced block's info string carries what to do with it, after the
language (renderers show the language and ignore the rest):

  {file=PATH}                      write the block as PATH
  {insert=PATH before="TEXT"}      insert it before the first line holding TEXT
  {insert=PATH after="TEXT"}       ... or after it
  {edit=PATH}                      a diff block: ' '/'-' lines are replaced by ' '/'+' lines
  {run}  {run status=N}            run it with bash -e in the tree's top; exit status N (0)
  {output}                         each of its lines appears in the last run's output

Untagged blocks are prose.  `python` in a run block is this test's Python
(the shared venv), through a PATH entry.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

TUTORIAL = os.path.join(ROOT, "docs", "tutorial.md")
FENCE = re.compile(r"^```(\w*)[ \t]*(\{[^}]*\})?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(text):
    """(language, {directive: value}, body) for every fenced block, in order."""
    out = []
    for lang, tags, body in FENCE.findall(text):
        directives = {}
        for word in shlex.split(tags[1:-1]) if tags else []:
            key, _, value = word.partition("=")
            directives[key] = value
        out.append((lang, directives, body))
    return out


def apply_edit(path, body):
    old, new = [], []
    for line in body.splitlines(keepends=True):
        mark, rest = line[:1], line[1:]
        if mark in " -":
            old.append(rest)
        if mark in " +":
            new.append(rest)
    text = open(path).read()
    old_text = "".join(old)
    assert text.count(old_text) == 1, f"{path}: the edit's old text is not there once:\n{old_text}"
    with open(path, "w") as f:
        f.write(text.replace(old_text, "".join(new)))


def insert(path, body, before=None, after=None):
    lines = open(path).read().splitlines(keepends=True)
    mark = before or after
    at = next((i for i, line in enumerate(lines) if mark in line), None)
    assert at is not None, f"{path}: no line holds {mark!r}"
    lines[at if before else at + 1:at if before else at + 1] = [body]
    with open(path, "w") as f:
        f.writelines(lines)


def scratch_copy(dest):
    """The tracked files, plus what the README's build made: the core, the
    compiled data path and the guests (make rebuilds only what a step changes)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = os.path.join(ROOT, name)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, name))
    shutil.copytree(os.path.join(ROOT, "guests", "build"), os.path.join(dest, "guests", "build"),
                    symlinks=True)
    for name in os.listdir(os.path.join(ROOT, "hv")):
        if name.startswith("_core") and name.endswith(".so"):
            shutil.copy2(os.path.join(ROOT, "hv", name), os.path.join(dest, "hv", name))
    devices = os.path.join(ROOT, "hv", "devices")     # the compiled data path
    for name in os.listdir(devices):
        if name.endswith(".so"):
            shutil.copy2(os.path.join(devices, name), os.path.join(dest, "hv", "devices", name))


def test_blocks_are_recognised():
    found = blocks(open(TUTORIAL).read())
    kinds = [next(iter(d), None) for _, d, _ in found]
    assert kinds.count("run") >= 5 and kinds.count("output") == kinds.count("run")
    assert {"file", "insert", "edit"} <= set(kinds)


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed (apt-get install gdb)")
def test_the_tutorial_runs_as_written(tmp_path):
    tree = tmp_path / "hv"
    scratch_copy(tree)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: the venv is found from the interpreter's own path.
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    output = None
    for i, (lang, d, body) in enumerate(blocks(open(TUTORIAL).read())):
        where = f"docs/tutorial.md block {i + 1} ({lang} {d})"
        if "file" in d:
            path = tree / d["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif "insert" in d:
            insert(tree / d["insert"], body, before=d.get("before"), after=d.get("after"))
        elif "edit" in d:
            apply_edit(tree / d["edit"], body)
        elif "run" in d:
            proc = subprocess.run(["bash", "-e", "-c", body], cwd=tree, env=env,
                                  capture_output=True, text=True, timeout=600)
            output = proc.stdout + proc.stderr
            assert proc.returncode == int(d.get("status") or 0), f"{where}:\n{output}"
        elif "output" in d:
            assert output is not None, f"{where}: no run block before it"
            for line in filter(None, (x.strip() for x in body.splitlines())):
                assert line in output, f"{where}: {line!r} not in the output:\n{output}"
    assert (tree / "trace.png").stat().st_size > 10_000
