"""The Linux fixture for tests: Debian's kernel and the initramfs, built by
tools/linux-fixture into build/linux/ (fetched with apt-get like any other
dependency).  A test that needs it calls linux_fixture(): the files are built
once if missing, and the test skips, saying why, only when the packages
cannot be fetched."""
import importlib.util
import json
import os
import subprocess
import sys
from importlib.machinery import SourceFileLoader

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "build", "linux")
FILES = ("vmlinux", "initramfs.cpio", "rootfs.ext4", "fixture.json")


def load_fixture_tool():
    """tools/linux-fixture imported as a module (it has no .py suffix)."""
    loader = SourceFileLoader("tool_linux_fixture", os.path.join(ROOT, "tools", "linux-fixture"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def fixture_built():
    """Every file is there, made by this version of tools/linux-fixture (a
    fixture an older one made lacks markers or files the tests now use)."""
    if not all(os.path.exists(os.path.join(FIXTURE_DIR, f)) for f in FILES):
        return False
    try:
        with open(os.path.join(FIXTURE_DIR, "fixture.json")) as f:
            made = json.load(f).get("fixture_format")
    except (OSError, ValueError):
        return False
    return made == load_fixture_tool().FIXTURE_FORMAT


_failure = None


def linux_fixture():
    """{'vmlinux': path, 'initramfs': path, 'rootfs': path (the ext4 image:
    copy it before booting from it), 'info': fixture.json as a dict}."""
    global _failure
    if not fixture_built() and _failure is None:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "linux-fixture"),
                            "--out", FIXTURE_DIR], capture_output=True, text=True, timeout=600)
        if r.returncode == 3:       # could not fetch: the one reason to skip
            _failure = r.stderr.strip()
        elif r.returncode:
            pytest.fail(f"tools/linux-fixture failed: {r.stderr.strip()}")
    if not fixture_built():
        pytest.skip(f"the Linux fixture cannot be fetched: {_failure}")
    with open(os.path.join(FIXTURE_DIR, "fixture.json")) as f:
        info = json.load(f)
    return {"vmlinux": os.path.join(FIXTURE_DIR, "vmlinux"),
            "initramfs": os.path.join(FIXTURE_DIR, "initramfs.cpio"),
            "rootfs": os.path.join(FIXTURE_DIR, "rootfs.ext4"), "info": info}


def host_tsc_khz():
    """The TSC rate hv's CPUID 0x15 reports (TSC = crystal * EBX / EAX):
    the host's, which QEMU's TCG RDTSC reads too."""
    from hv.abi import ffi, lib
    pp = ffi.new("struct hv_partition **")
    assert lib.hv_partition_create(lib.HV_ENGINE_NONE, 4 << 20, pp) == 0
    try:
        r = ffi.new("uint32_t[4]")
        assert lib.hv_test_cpuid(pp[0], 0x15, 0, r) == 1
        return r[2] * r[1] // r[0] // 1000
    finally:
        lib.hv_partition_destroy(pp[0])


def qemu_microvm_command(vmlinux, initramfs, mem, cmdline):
    """Stock QEMU's microvm on TCG with ACPI, the peer of an hv boot.
    Its hardware-reduced platform has no PIT (pit=on adds one) and its TCG
    CPU no CPUID 0x15, so Linux would calibrate the TSC against the PIT,
    which fails on a loaded host ("Marking TSC unstable") and stalls the
    boot: tsc_early_khz gives it the rate hv's CPUID names."""
    return ["qemu-system-x86_64", "-M", "microvm,acpi=on,pit=on", "-accel", "tcg", "-m", mem,
            "-nodefaults", "-nographic", "-no-reboot", "-serial", "stdio", "-kernel", vmlinux,
            "-initrd", initramfs, "-append", f"{cmdline} tsc_early_khz={host_tsc_khz()}"]
