"""Builds hv: the Python parent partition plus the C core (csrc/) as hv._core.

The binding is cffi in API mode (hv/_build_core.py): the C compiler, not a
hand-written table, supplies every ABI value to Python.
"""
from setuptools import setup

setup(
    name="hv",
    version="0.1.0",
    description="A paravirtualizing microkernel-style hypervisor: Python parent partition, C core",
    packages=["hv"],
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["hv/_build_core.py:ffibuilder"],
    install_requires=["cffi>=1.15", "unicorn==2.1.4"],
    entry_points={"console_scripts": ["hv = hv.cli:main"]},
)
