"""Builds hv's C core (csrc/) as hv._core; everything else is in pyproject.toml.

The binding is cffi in API mode (hv/_build_core.py): the C compiler, not a
hand-written table, supplies every ABI value to Python.  cffi_modules has no
pyproject.toml spelling yet, hence this file.
"""
from setuptools import setup

setup(cffi_modules=["hv/_build_core.py:ffibuilder"])
