"""--initrd: the initial RAM disk is PVH module 0 (start_info.nr_modules,
modlist_paddr -> struct hv_pvh_modlist_entry), page-aligned at the top of RAM
below 4 GiB and above the kernel; bad ones get one line, nothing started."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv.abi import ffi, lib
from hv.loader import BOOT_GPA, LoadError, load_pvh
from test_cli import assert_one_line_error, hv
from test_loader import GOOD, LOAD_GPA, PF_R, PF_X, CODE, make_elf

MIB = 1 << 20
PAGE = lib.HV_PAGE_SIZE


def start_info(blob):
    info = ffi.new("struct hv_pvh_start_info *")
    ffi.memmove(info, blob, ffi.sizeof(info[0]))
    return info


def modlist(blob, info):
    at = info.modlist_paddr - BOOT_GPA
    entries = ffi.new("struct hv_pvh_modlist_entry[]", info.nr_modules)
    ffi.memmove(entries, blob[at:], ffi.sizeof(entries))
    return entries


def test_no_initrd_means_no_modules():
    boot = load_pvh(GOOD, 16 * MIB)
    info = start_info(boot.boot_blob)
    assert (info.nr_modules, info.modlist_paddr) == (0, 0)
    assert boot.modules == ()


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 3 * MIB), mem_mib=st.integers(4, 64), cmdline=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60))
def test_initrd_is_module_0_above_the_kernel(size, mem_mib, cmdline):
    data = bytes([size % 251]) * size
    mem = mem_mib * MIB
    kernel_end = LOAD_GPA + 0x3000
    try:
        boot = load_pvh(GOOD, mem, cmdline, initrd=data)
    except LoadError as e:
        assert "does not fit" in str(e) and size > mem - kernel_end - PAGE
        return
    info = start_info(boot.boot_blob)
    assert info.nr_modules == 1
    (entry,) = modlist(boot.boot_blob, info)
    (module,) = boot.modules
    assert (entry.paddr, entry.size, entry.cmdline_paddr) == (module.gpa, size, 0)
    assert bytes(module.data) == data
    assert entry.paddr % PAGE == 0
    assert kernel_end <= entry.paddr and entry.paddr + size <= mem
    assert mem - (entry.paddr + size) < PAGE        # at the top: room for the kernel to grow
    # The module list sits inside the boot page, before the command line.
    assert BOOT_GPA <= info.modlist_paddr < info.cmdline_paddr < BOOT_GPA + PAGE


def test_initrd_stays_below_4_gib():
    boot = load_pvh(GOOD, 6 << 30, initrd=b"x" * 5000)
    (module,) = boot.modules
    assert module.gpa + 5000 <= 1 << 32 and module.gpa >= (1 << 32) - 2 * PAGE


@pytest.mark.parametrize("initrd, mem, match", [
    (b"", 16 * MIB, "initrd is empty"),
    (b"x" * (15 * MIB), 16 * MIB, "does not fit in RAM between the kernel's end 0x103000"),
    (42, 16 * MIB, "initrd must be a path or bytes"),
    ("/nonexistent/initrd", 16 * MIB, "cannot read /nonexistent/initrd"),
])
def test_bad_initrd_is_one_line(initrd, mem, match):
    with pytest.raises(LoadError, match=match) as info:
        load_pvh(GOOD, mem, initrd=initrd)
    assert "\n" not in str(info.value)


def test_initrd_above_a_high_kernel_does_not_fit():
    high = make_elf(loads=[(15 * MIB, CODE, 0x3000, PF_R | PF_X)], entry=15 * MIB)
    with pytest.raises(LoadError, match="does not fit"):
        load_pvh(high, 16 * MIB, initrd=b"y" * (MIB - 0x2000))


def test_partition_copies_the_initrd_into_ram():
    from hv.partition import Partition
    data = bytes(range(256)) * 40
    part = Partition(GOOD, mem="16M", engine="tcg", initrd=data)
    try:
        (module,) = part.image.modules
        assert bytes(part.memory()[module.gpa:module.gpa + len(data)]) == data
    finally:
        part.destroy()


def test_cli_rejects_a_missing_initrd(tmp_path):
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(GOOD)
    assert_one_line_error(hv("run", "--initrd", tmp_path / "none.cpio", kernel),
                          contains="cannot read .*none.cpio")


def test_hv_up_takes_an_initrd_key(tmp_path):
    from hv.config import ConfigError, check_partition
    spec = check_partition({"kernel": "k.elf", "initrd": "rd.cpio"}, "x.toml", str(tmp_path), 0)
    assert spec["initrd"] == str(tmp_path / "rd.cpio")
    with pytest.raises(ConfigError, match="initrd must be a path"):
        check_partition({"kernel": "k.elf", "initrd": 3}, "x.toml", str(tmp_path), 0)
