"""tools/linux-fixture: bzImage payload extraction, the newc initramfs
writer and the module dependency order, on synthetic inputs (no network),
then the real fixture: Debian's vmlinux has the PVH note and hv's loader
takes it quickly; the root image holds its /sbin/init."""
import gzip
import lzma
import os
import resource
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linux_support import linux_fixture, load_fixture_tool

fx = load_fixture_tool()

FAKE_ELF = b"\x7fELF\x02\x01\x01" + bytes(57) + b"kernel text" * 50


def make_bzimage(payload, setup_sects=4, version=0x20f, extra_tail=b""):
    """A minimal bzImage: boot sector + setup sectors with the header fields
    the extractor reads, then protected-mode code holding the payload at
    payload_offset (Documentation/x86/boot.rst)."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1f1] = setup_sects if setup_sects != 4 else 0     # 0 means 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    offset = 0x3a0
    struct.pack_into("<II", setup, 0x248, offset, len(payload))
    return bytes(setup) + bytes(offset) + payload + extra_tail


@settings(max_examples=30, deadline=None)
@given(setup_sects=st.integers(1, 64), kind=st.sampled_from(["xz", "gzip"]),
       body=st.binary(max_size=2000))
def test_payload_is_found_and_decompressed(setup_sects, kind, body):
    elf = FAKE_ELF + body
    packed = lzma.compress(elf, format=lzma.FORMAT_XZ) if kind == "xz" else gzip.compress(elf)
    # The kernel appends its uncompressed size; padding follows the payload.
    image = make_bzimage(packed + struct.pack("<I", len(elf)) if kind == "gzip" else packed,
                         setup_sects, extra_tail=b"\xcc" * 100)
    assert fx.bzimage_payload(image)[0] == kind
    assert fx.vmlinux_from_bzimage(image) == elf


@pytest.mark.parametrize("image, message", [
    (b"MZ" + bytes(0x300), "not a bzImage"),
    (make_bzimage(b"\xfd7zXZ\x00", version=0x207), "no payload fields"),
    (make_bzimage(b"BZh91AY&SY"), "unknown payload compression"),
    (make_bzimage(b"\xfd7zXZ\x00" * 100)[:-50], "outside the file"),
    (make_bzimage(b""), "outside the file"),
])
def test_bad_bzimages_get_one_line(image, message):
    with pytest.raises(fx.FixtureError, match=message):
        fx.vmlinux_from_bzimage(image)


def test_payload_that_is_not_elf_is_refused():
    with pytest.raises(fx.FixtureError, match="not an ELF"):
        fx.vmlinux_from_bzimage(make_bzimage(gzip.compress(b"#!/bin/sh\n")))


def read_newc(archive):
    """An independent reader of the newc format, field by field, checking
    the 4-byte alignment the kernel's unpacker relies on."""
    entries, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        (ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, check) = fields
        name_at = pos + 110
        name = archive[name_at:name_at + namesize]
        assert name.endswith(b"\0") and b"\0" not in name[:-1]
        data_at = (name_at + namesize + 3) & ~3
        data = archive[data_at:data_at + size]
        pos = (data_at + size + 3) & ~3
        if name == b"TRAILER!!!\0":
            assert pos == len(archive)
            return entries
        assert (uid, gid, mtime, check) == (0, 0, 0, 0)
        entries.append((name[:-1].decode(), mode, data, (rmaj, rmin), ino, nlink))


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, blacklist_characters="/"),
                min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(files=st.dictionaries(names, st.binary(max_size=300), max_size=8))
def test_newc_round_trip(files):
    entries = [(n, fx.S_IFREG | 0o644, d, (0, 0)) for n, d in files.items()]
    back = read_newc(fx.cpio_newc(entries))
    assert [(n, m, d, r) for n, m, d, r, _, _ in back] == entries
    inodes = [ino for *_, ino, _ in back]
    assert len(set(inodes)) == len(inodes) and 0 not in inodes


def fake_module(modinfo_fields):
    """A 64-bit ELF with only what elf_section reads: section headers for
    (null, .modinfo, .shstrtab)."""
    modinfo = b"".join(f.encode() + b"\0" for f in modinfo_fields)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body = bytearray(64)
    body[:6] = b"\x7fELF\x02\x01"
    modinfo_at = len(body)
    body += modinfo
    shstrtab_at = len(body)
    body += shstrtab
    shoff = len(body)
    struct.pack_into("<Q", body, 0x28, shoff)
    struct.pack_into("<HHH", body, 0x3a, 64, 3, 2)

    def section(name, offset, size):
        header = bytearray(64)
        struct.pack_into("<I", header, 0, name)
        struct.pack_into("<QQ", header, 0x18, offset, size)
        return bytes(header)

    body += section(0, 0, 0) + section(1, modinfo_at, len(modinfo)) + \
        section(10, shstrtab_at, len(shstrtab))
    return bytes(body)


def test_modinfo_depends_are_read_from_the_elf_section():
    ko = fake_module(["license=GPL", "depends=jbd2,mbcache,crc16", "name=ext4"])
    assert fx.module_depends(ko) == ["jbd2", "mbcache", "crc16"]
    assert fx.module_depends(fake_module(["depends=", "name=crc16"])) == []
    with pytest.raises(fx.FixtureError, match="64-bit"):
        fx.module_depends(b"not an elf")


deps_graphs = st.dictionaries(st.sampled_from("abcdefgh"), st.sets(st.sampled_from("abcdefgh")),
                              min_size=1)


@settings(max_examples=60, deadline=None)
@given(graph=deps_graphs)
def test_modules_load_after_their_dependencies(graph):
    """Any acyclic dependency graph: every module once, after what it needs;
    a cycle or a missing module: one error."""
    available = {name: fake_module([f"depends={','.join(sorted(deps))}"])
                 for name, deps in graph.items()}
    try:
        order = [name for name, _ in fx.modules_in_load_order(sorted(graph), available)]
    except fx.FixtureError as e:
        assert "cycle" in str(e) or "no module" in str(e)
        return
    assert sorted(order) == sorted(set(order)) and set(graph) <= set(order)
    for i, name in enumerate(order):
        assert set(graph[name]) <= set(order[:i])


def test_module_names_use_underscores():
    assert fx.module_name("lib/modules/6.1.0-57-amd64/kernel/arch/x86/crypto/crc32c-intel.ko") \
        == "crc32c_intel"


def test_initramfs_holds_the_modules_and_loads_them_in_order():
    modules = [("virtio", b"ko 1"), ("virtio_blk", b"ko 2")]
    back = {name: data for name, _, data, _, _, _ in read_newc(fx.initramfs(b"bb", modules))}
    assert back["lib/modules/virtio.ko"] == b"ko 1" and back["lib/modules/virtio_blk.ko"] == b"ko 2"
    assert b"for module in virtio virtio_blk; do" in back["init"]
    assert b"switch_root /newroot /sbin/init" in back["init"]


def test_initramfs_holds_init_busybox_and_console():
    back = {name: (mode, data, rdev) for name, mode, data, rdev, _, _ in
            read_newc(fx.initramfs(b"\x7fELF fake busybox"))}
    assert back["init"][0] == fx.S_IFREG | 0o755
    assert fx.MARKER_INIT in back["init"][1].decode()
    assert b"poweroff -f" in back["init"][1]
    assert back["dev/console"] == (fx.S_IFCHR | 0o600, b"", (5, 1))
    assert back["bin/sh"] == (fx.S_IFLNK | 0o777, b"busybox", (0, 0))
    assert back["bin/busybox"][1] == b"\x7fELF fake busybox"


# ---- the real fixture ----------------------------------------------------------

def test_vmlinux_has_the_pvh_note_and_loads_quickly():
    from hv.abi import lib
    from hv.loader import load_pvh
    files = linux_fixture()
    # Debian's bzImage payload is a full ELF; the PVH entry is in its notes.
    with open(files["vmlinux"], "rb") as f:
        assert f.read(4) == b"\x7fELF"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    image = load_pvh(files["vmlinux"], 512 << 20, "console=ttyS0")
    cpu = time.process_time() - t0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert 0x1000000 <= image.entry < 0x4000000, hex(image.entry)
    assert sum(len(s.data) for s in image.segments) > 40 << 20
    # A 65 MB ELF must not be copied around: one read, segment views into it.
    size = os.path.getsize(files["vmlinux"])
    assert grown_kib * 1024 < 1.3 * size, f"loader grew RSS by {grown_kib} KiB for a {size} B file"
    assert cpu < 5, f"loader took {cpu:.2f} s of CPU"
    assert lib.HV_PVH_NOTE_ENTRY == 18


def test_root_image_holds_busybox_and_its_init():
    import shutil
    import subprocess
    files = linux_fixture()
    debugfs = shutil.which("debugfs", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if debugfs is None:
        pytest.skip("debugfs (e2fsprogs) is not installed")
    r = subprocess.run([debugfs, "-R", "cat /sbin/init", files["rootfs"]], capture_output=True)
    assert fx.MARKER_ROOT.encode() in r.stdout and b"poweroff -f" in r.stdout
    r = subprocess.run([debugfs, "-R", "stat /bin/busybox", files["rootfs"]], capture_output=True,
                       text=True)
    assert "Mode:  0755" in r.stdout and "User:     0" in r.stdout, r.stdout
