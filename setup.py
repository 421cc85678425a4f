"""Builds hv's C core (csrc/) as hv._core; the rest of the metadata is in
pyproject.toml.

The binding is cffi in API mode (hv/_build_core.py): the C compiler, not a
hand-written table, supplies every ABI value to Python.  cffi_modules has no
pyproject.toml spelling, hence this file.
"""
import re

from setuptools import find_packages, setup

with open("hv/__init__.py") as f:
    VERSION = re.search(r'^__version__ = "(.+)"$', f.read(), re.M).group(1)

setup(
    version=VERSION,
    # Every package under hv/ (hv.cli, hv.devices, whatever comes next) is
    # found, not listed, so a new subpackage cannot be left out of the wheel.
    packages=find_packages(include=["hv", "hv.*"]),
    cffi_modules=["hv/_build_core.py:ffibuilder"],
)
