"""Builds hv's C core (csrc/) as hv._core, and the compiled copy of the
device data path; the rest of the metadata is in pyproject.toml.

The binding is cffi in API mode (hv/_build_core.py): the C compiler, not a
hand-written table, supplies every ABI value to Python.  cffi_modules has no
pyproject.toml spelling, hence this file.

The device data path (hv/devices/datapath.py) is Python in Cython's
pure-Python mode: Cython compiles each of those files into
hv.devices._<name>_compiled, and the file itself stays the pure path.
"""
import os
import re
import shutil

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

# One source each, compiled beside itself (hv/devices/datapath.py).
DATAPATH_MODULES = ["guestmem", "virtqueue", "blk_io", "net_io"]

# hv.testing reads the ABI's doc blocks and the guests' result codes from the
# headers themselves; an installed wheel has no source tree, so the build
# copies the two headers into the package (the tree stays their one source).
TESTING_HEADERS = {"csrc/include/hv/abi.h": "abi.h", "guests/lib/result.h": "result.h"}


class BuildPyWithHeaders(build_py):
    def run(self):
        super().run()
        data = os.path.join(self.build_lib, "hv", "testing", "data")
        os.makedirs(data, exist_ok=True)
        for source, name in TESTING_HEADERS.items():
            shutil.copyfile(source, os.path.join(data, name))

with open("hv/__init__.py") as f:
    VERSION = re.search(r'^__version__ = "(.+)"$', f.read(), re.M).group(1)

setup(
    version=VERSION,
    # Every package under hv/ (hv.cli, hv.devices, whatever comes next) is
    # found, not listed, so a new subpackage cannot be left out of the wheel.
    packages=find_packages(include=["hv", "hv.*"]),
    cffi_modules=["hv/_build_core.py:ffibuilder"],
    ext_modules=cythonize(
        [Extension(f"hv.devices._{name}_compiled", [f"hv/devices/{name}.py"],
                   extra_compile_args=["-O2"]) for name in DATAPATH_MODULES],
        build_dir="build/cython", quiet=True,
        compiler_directives={"language_level": 3}),
    cmdclass={"build_py": BuildPyWithHeaders},
)
