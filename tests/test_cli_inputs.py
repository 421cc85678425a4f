"""Regression tests for the inputs a new user got wrong answers to (issue 8,
section 4): console socket paths, disks (QEMU's locks, block devices, the
key=value form), MACs, console kinds, the command-line limit, and hv up's
config checks.  Each failed before its fix."""
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, engine_missing, guest

QEMU = shutil.which("qemu-system-x86_64")
needs_tcg = pytest.mark.skipif(engine_missing("tcg") is not None,
                               reason=f"TCG: {engine_missing('tcg')}")


def hv(*args, timeout=60, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "hv", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(proc, *needles):
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert proc.returncode == 2, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hv: error: "), detail
    for needle in needles:
        assert needle in lines[0], detail
    return lines[0]


def spinning(*args):
    """A `hv run ... crash.elf spin` that holds its devices until killed."""
    proc = subprocess.Popen([sys.executable, "-m", "hv", "run", "--engine", "tcg", *map(str, args),
                             "--cmdline", "spin", guest("crash")], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line.startswith(b"crash: spinning"):
        proc.kill()
        pytest.fail(f"the spinning guest did not start: {line!r} {proc.stderr.read()!r}")
    return proc


def stop(proc):
    """SIGTERM, as systemd or docker stop it: hv cleans up and exits 143."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("hv did not end within 30 s of SIGTERM")
    assert proc.returncode == 143 and err.decode().splitlines()[-1] == "hv: terminated", err


# ---- console sockets -------------------------------------------------------------

def test_vconsole_never_deletes_a_users_file(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    one_line_error(hv("run", "--vconsole", f"unix:{precious}", guest("hello")), str(precious),
                   "not a socket")
    assert precious.read_text() == "my notes\n"


def test_vconsole_never_deletes_a_file_even_when_the_kernel_is_bad(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    bad = tmp_path / "bad.elf"
    bad.write_text("not a kernel")
    one_line_error(hv("run", "--vconsole", f"unix:{precious}", bad))
    assert precious.read_text() == "my notes\n"


@needs_tcg
def test_vconsole_refuses_a_live_socket_and_leaves_it_working(tmp_path):
    path = tmp_path / "live.sock"
    first = spinning("--vconsole", f"unix:{path}")
    try:
        one_line_error(hv("run", "--vconsole", f"unix:{path}", guest("hello")), str(path), "in use")
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(path))           # the first hv still owns it
        client.close()
    finally:
        stop(first)
    assert not path.exists()                # the first hv removed its socket on SIGTERM


@needs_tcg
def test_vconsole_replaces_a_stale_socket(tmp_path):
    """What a SIGKILLed hv leaves (a socket nobody listens on) is reused."""
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    proc = hv("run", "--engine", "tcg", "--vconsole", f"unix:{path}", guest("hello"))
    assert proc.returncode == 0, proc.stderr
    assert not path.exists()


def test_vconsole_socket_in_a_missing_directory_names_the_path(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "x"
    line = one_line_error(hv("run", "--vconsole", f"unix:{path}", guest("hello")), str(path))
    assert "No such file or directory" in line


@pytest.mark.parametrize("where", ["tcp:localhost:4444", "tcp:127.0.0.1:5555", "telnet:x:1"])
def test_vconsole_unknown_kind_is_refused_not_a_file(where, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hv", "run", "--vconsole", where, guest("hello")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    one_line_error(proc, where)
    assert list(tmp_path.iterdir()) == []


@needs_tcg
def test_vconsole_file_with_a_colon_still_works(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hv", "run", "--engine", "tcg",
                           "--vconsole", "./tcp:out", guest("vcon-test")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert (tmp_path / "tcp:out").exists(), proc.stderr


@pytest.mark.parametrize("where", ["out.txt", "unix:./con.sock"])
def test_vconsole_output_is_not_created_for_a_bad_kernel(where, tmp_path):
    """A --vconsole file or socket is made only once the kernel is known
    good: a bad kernel leaves the directory as it was (the file was created,
    and the socket bound, before the kernel was read)."""
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"not an ELF")
    proc = subprocess.run([sys.executable, "-m", "hv", "run", "--engine", "tcg",
                           "--vconsole", where, str(bad)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    one_line_error(proc, "bad magic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.elf"]


# ---- disks ---------------------------------------------------------------------------

def image(path, size=1 << 20):
    path.write_bytes(b"\xee" * size)
    return path


def qemu_holding(path, readonly=False):
    """A paused QEMU with path attached as a virtio-blk drive (its locks taken)."""
    drive = f"file={path},format=raw,if=none,id=d0" + (",readonly=on" if readonly else "")
    proc = subprocess.Popen([QEMU, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-nographic",
                             "-S", "-monitor", "stdio", "-serial", "none",
                             "-kernel", guest("hello"), "-drive", drive,
                             "-device", "virtio-blk-device,drive=d0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # The monitor's prompt comes once the devices (and their locks) are set up.
    out = b""
    while b"(qemu)" not in out:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            pytest.fail(f"QEMU did not start: {proc.stderr.read()!r}")
        out += chunk
    return proc


def qemu_opens(path, readonly=False):
    """(QEMU could attach path, its stderr), trying for real."""
    drive = f"file={path},format=raw,if=none,id=d0" + (",readonly=on" if readonly else "")
    proc = subprocess.run([QEMU, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-nographic",
                           "-no-reboot", "-serial", "none", "-monitor", "none",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                           "-kernel", guest("hello"), "-drive", drive,
                           "-device", "virtio-blk-device,drive=d0"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return "lock" not in proc.stderr, proc.stderr


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("qemu_ro", [False, True], ids=["qemu-rw", "qemu-ro"])
def test_hv_refuses_an_image_qemu_is_using(qemu_ro, tmp_path):
    disk = image(tmp_path / "disk.img")
    qemu = qemu_holding(disk, readonly=qemu_ro)
    try:
        one_line_error(hv("run", "--disk", disk, guest("hello")), str(disk), "in use")
        ro = hv("run", "--disk", f"{disk},ro", guest("hello"))
        if qemu_ro:             # readers share
            assert ro.returncode == 0, ro.stderr
        else:                   # a writer shares with nobody
            one_line_error(ro, "in use")
    finally:
        qemu.kill()
        qemu.wait()
    assert hv("run", "--disk", disk, guest("hello")).returncode == 0


@needs_tcg
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("hv_ro", [False, True], ids=["hv-rw", "hv-ro"])
def test_qemu_refuses_an_image_hv_is_using(hv_ro, tmp_path):
    disk = image(tmp_path / "disk.img")
    holder = spinning("--disk", f"{disk},ro" if hv_ro else disk)
    try:
        ok, err = qemu_opens(disk)
        assert not ok and 'Failed to get' in err and "write" in err, err
        ok, err = qemu_opens(disk, readonly=True)
        assert ok == hv_ro, err             # readers share, a writer does not
    finally:
        stop(holder)
    assert qemu_opens(disk)[0]              # SIGTERM released hv's locks


def test_two_hv_writers_exclude_each_other_in_one_process(tmp_path):
    from hv.devices.blk import BlkDevice, DiskError
    disk = str(image(tmp_path / "disk.img"))
    first = BlkDevice(disk)
    try:
        with pytest.raises(DiskError, match="in use"):
            BlkDevice(disk)
        with pytest.raises(DiskError, match="in use"):
            BlkDevice(disk, readonly=True)
    finally:
        first.close()
    a, b = BlkDevice(disk, readonly=True), BlkDevice(disk, readonly=True)
    a.close()
    b.close()
    BlkDevice(disk).close()                 # every lock went with its fd


def test_block_device_is_sized_by_ioctl(tmp_path):
    """A block device's st_size is 0; the disk must still have its sectors."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop device")
    from hv.devices.blk import BlkDevice
    backing = image(tmp_path / "backing.img", 3 << 20)
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    loop = made.stdout.strip()
    try:
        assert os.stat(loop).st_size == 0
        disk = BlkDevice(loop, readonly=True)
        try:
            assert disk.sectors == (3 << 20) // 512
        finally:
            disk.close()
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


@needs_tcg
def test_disk_key_value_form_takes_a_comma_in_the_path(tmp_path):
    disk = image(tmp_path / "a,b.img")
    before = disk.read_bytes()
    proc = hv("run", "--engine", "tcg", "--disk", f"path={str(disk).replace(',', ',,')},readonly=on",
              guest("blk-test"))
    assert "blk: the device is read-only" in proc.stdout, proc.stdout + proc.stderr
    assert disk.read_bytes() == before
    proc = hv("run", "--engine", "tcg", "--disk", f"path={str(disk).replace(',', ',,')}",
              guest("blk-test"), "--cmdline", "sectors=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert disk.read_bytes() != before


@pytest.mark.parametrize("spec", ["path=", "path=x,readonly=yes", "path=x,ro", "path=x,bogus=1",
                                  "path=x,path=y"])
def test_disk_key_value_form_errors(spec):
    one_line_error(hv("run", "--disk", spec, guest("hello")), "--disk")


def read_only_path(tmp_path):
    """An image hv cannot open read-write: mode 0444 for a user; for root
    (who may write any file) one on a read-only bind mount (EROFS)."""
    disk = image(tmp_path / "disk.img")
    if os.geteuid() != 0:
        disk.chmod(0o444)
        return disk, None
    view = tmp_path / "ro"
    view.mkdir()
    for cmd in (["mount", "--bind", str(tmp_path), str(view)],
                ["mount", "-o", "remount,bind,ro", str(view)]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here")
    return view / "disk.img", view


def test_read_only_image_hints_at_ro(tmp_path):
    from hv.devices.blk import BlkDevice
    disk, mount = read_only_path(tmp_path)
    try:
        line = one_line_error(hv("run", "--disk", disk, guest("hello")), str(disk))
        assert "add ,ro" in line, line
        BlkDevice(str(disk), readonly=True).close()     # which works
    finally:
        if mount is not None:
            subprocess.run(["umount", str(mount)], check=True)


# ---- NICs, command line -----------------------------------------------------------------

def test_run_refuses_the_same_mac_twice():
    one_line_error(hv("run", "--net", "52:54:00:00:00:01", "--net", "52:54:00:00:00:01",
                      guest("hello")), "52:54:00:00:00:01", "twice")


def test_cmdline_near_the_limit_says_hv_adds_device_entries():
    from hv.loader import CmdlineTooLong, load_pvh
    # The longest command line that fits without devices...
    lo, hi = 0, 8192
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            load_pvh(guest("cmdline-echo"), 64 << 20, "x" * mid)
            lo = mid
        except CmdlineTooLong:
            hi = mid - 1
    # ...is too long once hv lists its devices on it: the error says so.
    line = one_line_error(hv("run", "--rng", "--cmdline", "x" * lo, guest("cmdline-echo")))
    assert "device entries hv adds" in line and "at most" in line, line


# ---- hv up -----------------------------------------------------------------------------------

PARTITION = """
[[partition]]
name = "{name}"
kernel = "{kernel}"
devices = [{devices}]
"""


def up_file(tmp_path, *partitions, extra=""):
    text = extra + "".join(PARTITION.format(name=n, kernel=guest(k), devices=d)
                           for n, k, d in partitions)
    path = tmp_path / "up.toml"
    path.write_text(text)
    return path


NIC1 = '{ type = "net", switch = "lan", mac = "52:54:00:00:00:01" }'
NIC2 = '{ type = "net", switch = "lna", mac = "52:54:00:00:00:02" }'


def test_up_refuses_a_switch_only_one_nic_names(tmp_path):
    config = up_file(tmp_path, ("ping", "net-ping", NIC1), ("pong", "net-ping", NIC2))
    one_line_error(hv("up", config), "switch 'lan'", "ping", str(config))


def test_up_accepts_a_declared_switch_with_one_nic(tmp_path):
    from hv.config import load
    config = up_file(tmp_path, ("ping", "hello", NIC1), extra='[[switch]]\nname = "lan"\n')
    assert load(str(config))[0]["devices"][0]["switch"] == "lan"


@pytest.mark.parametrize("device, needle", [
    ('{ type = "blk", path = "d.img", readonly = "no" }', "readonly must be true or false"),
    ('{ type = "blk", path = "d.img", readonly = 1 }', "readonly must be true or false"),
    ('{ type = "console", output = 5 }', "output must be text"),
    ('{ type = "console", socket = 5 }', "socket must be text"),
    ('{ type = "console", socket = "a", output = "b" }', "not both"),
    ('{ type = "net", switch = 3, mac = "52:54:00:00:00:01" }', "switch must be text"),
])
def test_up_device_values_have_their_types(device, needle, tmp_path):
    image(tmp_path / "d.img")
    config = up_file(tmp_path, ("box", "hello", device))
    one_line_error(hv("up", config), needle, "'box'", str(config))


@pytest.mark.parametrize("key, value, needle", [
    ("mem", '"lots"', "memory size"),
    ("engine", '"kvmm"', "unknown engine"),
])
def test_up_partition_errors_name_the_partition_and_file(key, value, needle, tmp_path):
    config = up_file(tmp_path, ("box", "hello", ""))
    config.write_text(config.read_text() + f"{key} = {value}\n")
    one_line_error(hv("up", config), needle, "'box'", str(config))


def test_up_refuses_one_console_socket_for_two_partitions(tmp_path):
    sock = '{ type = "console", socket = "shared.sock" }'.replace("shared.sock",
                                                               str(tmp_path / "shared.sock"))
    config = up_file(tmp_path, ("a", "hello", sock), ("b", "hello", sock))
    one_line_error(hv("up", config), "used twice", "'b'")
    assert not (tmp_path / "shared.sock").exists()


def test_up_refuses_one_named_console_for_two_partitions(tmp_path):
    sock = '{ type = "console", socket = "twice-named" }'
    config = up_file(tmp_path, ("a", "hello", sock), ("b", "hello", sock))
    one_line_error(hv("up", config), "used twice")


def test_up_bad_kernel_names_the_partition_and_file(tmp_path):
    bad = tmp_path / "bad.elf"
    bad.write_text("not a kernel")
    config = tmp_path / "up.toml"
    config.write_text(f'[[partition]]\nname = "good"\nkernel = "{guest("hello")}"\n'
                      f'[[partition]]\nname = "broken"\nkernel = "{bad}"\n')
    one_line_error(hv("up", config), "'broken'", str(config))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_console_socket_close_hangs_up_every_client(tmp_path):
    """A client that connects as the console closes still sees its end
    (one accepted after close() had looked at the clients waited forever),
    and no reader thread dies of the closed socket."""
    from hv.devices.vconsole import SocketConsole
    for i in range(30):
        path = str(tmp_path / f"c{i}.sock")
        sink = SocketConsole(path)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        sink.close()
        client.settimeout(20)
        try:
            assert client.recv(16) == b""
        except ConnectionResetError:
            pass            # still in the listen queue when it closed: refused, also an end
        client.close()
        assert not os.path.exists(path)


# ---- the scheduler's options -------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--workers", "0"], "--workers 0: 1..64"),
    (["--workers", "65"], "--workers 65: 1..64"),
    (["--weight", "70000"], "--weight 70000: 1..65535"),
    (["--cap", "101"], "--cap 101: a percent"),
    (["--deterministic", "--workers", "2"], "runs on one worker"),
    (["--deterministic", "--cap", "50"], "cannot have a cap"),
])
def test_run_scheduler_options_are_checked(args, needle):
    one_line_error(hv("run", *args, guest("hello")), needle)


@pytest.mark.skipif(engine_missing("tcg") is not None, reason="needs the tcg engine")
def test_run_verbose_reports_the_vcpus_time_waits_and_migrations():
    proc = hv("run", "-v", "--engine", "tcg", "--workers", "1", "--weight", "512", "--cap", "90",
              guest("hello"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"vcpu 0: \d+ exits, .* ran \d+\.\d+ ms in \d+ dispatches, "
                     r"waited \d+ times blocked and \d+ for the parent, \d+ migrations",
                     proc.stderr), proc.stderr


@pytest.mark.parametrize("value, ok", [("2", True), ("0", False), ('"two"', False)])
def test_up_workers_key(value, ok, tmp_path):
    config = up_file(tmp_path, ("box", "hello", ""), extra=f"workers = {value}\n")
    if ok:
        from hv.config import load
        assert load(str(config), with_workers=True)[1] == int(value)
    else:
        one_line_error(hv("up", config), "workers must be an integer 1..64", str(config))
