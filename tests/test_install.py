"""hv installs like a real tool: a wheel built from the tracked files alone
(as a fresh clone has them), installed into a fresh virtual environment,
gives an `hv` command that boots hello from a directory outside the tree.

The wheel is built the way `pip install .` builds it, with build isolation:
pip makes a throw-away environment from pyproject.toml's build requirements
(setuptools, cffi, the pinned unicorn), so a missing requirement, a package
left out of the wheel or a core that only finds libunicorn where it was
built all fail here.  pip's cache serves the pinned wheels after the first
run (about 20 s in all; the registry is needed only when the cache is cold).
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT, guest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tree")


def tracked_files():
    """What a fresh clone of this tree would hold (including files not yet committed)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin directory, wheel path) of hv installed from a fresh copy of the tree."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for rel in tracked_files():
        os.makedirs(src / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), src / rel)
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv])
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", tmp / "wheels", src])
    (wheel,) = (tmp / "wheels").glob("hv-*.whl")
    run([*pip, "install", wheel])
    return venv / "bin", wheel


def test_wheel_holds_every_package(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {os.path.relpath(d, ROOT) for d, _, files in os.walk(os.path.join(ROOT, "hv"))
                if "__init__.py" in files}
    assert packages >= {"hv", "hv/devices", "hv/cli"}
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} is not in {wheel.name}"
    assert any(n.startswith("hv/_core") and n.endswith(".so") for n in names), names


def test_installed_hv_runs_hello_outside_the_tree(installed, tmp_path):
    bin_dir, _ = installed
    hv = str(bin_dir / "hv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = run([hv, "run", guest("hello")], cwd=tmp_path, env=env)
    assert proc.stdout == "Hello from an hv guest!\n"
    assert run([hv, "--version"], cwd=tmp_path, env=env).stdout.startswith("hv ")
    trace = run([hv, "trace", guest("hello")], cwd=tmp_path, env=env).stdout
    assert trace.splitlines()[-1].endswith("shutdown(reason=0, code=0) [parent]"), trace
    config = tmp_path / "up.toml"
    config.write_text(f'[[partition]]\nname = "h"\nkernel = "{guest("hello")}"\n')
    assert run([hv, "up", config], cwd=tmp_path, env=env).stdout == "[h] Hello from an hv guest!\n"
    assert "--wait" in run([hv, "console", "--help"], cwd=tmp_path, env=env).stdout
    facts = json.loads(run([hv, "info", "--json"], cwd=tmp_path, env=env).stdout)
    assert facts["engines"]["tcg"]["available"], facts
    # The core was loaded from the installed wheel, and libunicorn from the
    # unicorn package beside it, not from the tree or the build environment.
    maps = run([str(bin_dir / "python"), "-c",
                "import hv.abi; print(hv.abi.__file__); print(open('/proc/self/maps').read())"],
               cwd=tmp_path, env=env).stdout
    venv = os.path.dirname(str(bin_dir))
    assert maps.splitlines()[0].startswith(venv), maps.splitlines()[0]
    libs = {line.split()[-1] for line in maps.splitlines() if "libunicorn" in line}
    assert libs and all(lib.startswith(venv) for lib in libs), libs


def test_installed_hv_testing_reads_the_packaged_headers(installed, tmp_path):
    """hv.testing takes the ABI's errors and the result codes from abi.h and
    result.h; installed, it finds the copies the wheel carries."""
    bin_dir, _ = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = run([str(bin_dir / "python"), "-c",
               "import json; from hv.testing import RESULT_CODES; "
               "from hv.testing.core import documented_errors; from hv.testing.paths import ABI_H; "
               "print(json.dumps([ABI_H, RESULT_CODES, len(documented_errors())]))"],
              cwd=tmp_path, env=env).stdout
    abi_h, codes, documented = json.loads(out)
    assert abi_h.startswith(os.path.dirname(str(bin_dir))), abi_h
    assert codes == {"SUCCESS": 0, "SKIP": 3, "ERROR": 4, "FAILURE": 5}, codes
    assert documented > 0
