"""The isolation canary (docs/channels.md): three partitions fill their RAM
with canaries the parent chose at random, then each reaches for memory
that is not its own through every hypercall that reads or copies memory
(guests/isolation-canary: grant copy on every ref of every table, with
grants meant for others, hv's frames, frames past RAM, bad buffers;
console writes, event-channel outputs and multicall at hv's pages, past
RAM, in the MMIO window, above 4 GiB; virtio-console and virtio-rng
buffers there and a ring in hv's boot page).  The guests check each answer and
each buffer; then this side searches every partition's whole RAM,
console output and virtio-console output for the other partitions'
canaries: zero foreign bytes.

The parent permits A-B and B-C, never A-C.  Run through the Python API
(hv.partition.Partition, hv_channel_permit as `hv up` calls it), so that
the RAM can be read after the guests have ended and before it is freed.
"""
import secrets
import string

import pytest

from conftest import engine_missing, guest
from hv.abi import lib
from hv.console import CaptureConsole
from hv.devices.rng import RngDevice
from hv.devices.vconsole import ConsoleDevice
from hv.partition import SHUTDOWN, Partition
from hv.testing.results import parse_result

WINDOW = 6                      # bytes of a canary that identify it
PERMITTED = [(0, 1), (1, 2)]
MEM = 4 << 20


def windows(canary):
    """Every WINDOW-byte run a canary repeated end to end can show, at any alignment."""
    twice = canary * 2
    return {twice[r:r + WINDOW] for r in range(len(canary))}


def pick_canaries(n, rng=secrets.SystemRandom()):
    """n random 8-byte canaries, letters and digits (a leak into a console
    shows verbatim), no window shared between two of them."""
    alphabet = (string.ascii_letters + string.digits).encode()
    while True:
        out = [bytes(rng.choice(alphabet) for _ in range(8)) for _ in range(n)]
        sets = [windows(c) for c in out]
        if all(not (sets[i] & sets[j]) for i in range(n) for j in range(i)):
            return out


def foreign_windows(data, canary):
    """How many places data shows a run of canary (overlapping runs count once each)."""
    return sum(data.count(w) for w in windows(canary))


def test_the_scan_finds_a_planted_canary():
    """The search itself: a few foreign bytes anywhere, at any alignment, are found."""
    a, b = pick_canaries(2)
    ram = bytearray(a * 4096)
    assert foreign_windows(ram, b) == 0 and foreign_windows(ram, a) > 0
    for at in (0, 1, 4093, len(ram) - WINDOW):
        leaked = bytearray(ram)
        leaked[at:at + WINDOW] = (b * 2)[at % 8:at % 8 + WINDOW]
        # >= 1, not == 1: a byte of `a` beside the planted run may extend
        # it into a second window of b (one letter of 62 alike: ~1 run in 8).
        assert foreign_windows(leaked, b) >= 1


def run_three(engine):
    canaries = pick_canaries(3)
    consoles = [CaptureConsole() for _ in range(3)]
    device_out = [CaptureConsole() for _ in range(3)]      # what virtio-console wrote
    parts = []
    try:
        for i in range(3):
            devices = [ConsoleDevice(device_out[i]), RngDevice()]
            parts.append(Partition(guest("isolation-canary"), mem=MEM, engine=engine,
                                   console=consoles[i], name=f"canary{i}", devices=devices))
        ids = [p.id for p in parts]
        permitted = {i: [] for i in range(3)}
        for a, b in PERMITTED:
            assert lib.hv_channel_permit(parts[a].core(), parts[b].core()) == 0
            permitted[a].append(ids[b])
            permitted[b].append(ids[a])
        for i, p in enumerate(parts):
            p.append_cmdline(f"canary={canaries[i].decode()} ids={','.join(map(str, ids))} "
                             f"permitted={','.join(map(str, permitted[i]))}")
        for p in parts:
            p.start()
        for p in parts:
            p.wait(timeout=240)
        outputs = [b"".join(c.chunks) for c in consoles]
        for p, out in zip(parts, outputs):
            assert p.state == SHUTDOWN and parse_result(out)[0] == "SUCCESS", \
                f"{p.name}: {p.state} {p.crash_report or ''}\n{out.decode(errors='replace')}"
        # The guests' own checks passed; now every byte each one holds.
        leaks = {}
        for i, p in enumerate(parts):
            ram = bytes(p.memory())
            own = ram.count(canaries[i])
            assert own * 8 > MEM // 2, f"{p.name} did not fill its RAM ({own} canaries)"
            for j in range(3):
                if j != i:
                    leaks[(i, j, "ram")] = foreign_windows(ram, canaries[j])
                    leaks[(i, j, "console")] = foreign_windows(outputs[i], canaries[j])
                    leaks[(i, j, "virtio-console")] = foreign_windows(
                        b"".join(device_out[i].chunks), canaries[j])
        return leaks, outputs, [b"".join(d.chunks) for d in device_out]
    finally:
        for p in parts:
            p.destroy()


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_no_partition_reaches_another(engine):
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    leaks, outputs, device_outputs = run_three(engine)
    assert all(n == 0 for n in leaks.values()), {k: n for k, n in leaks.items() if n}
    assert len(leaks) == 18
    for out, dev in zip(outputs, device_outputs):
        assert b"probes, every one refused as documented" in out
        assert dev == b"canary: devices refused every foreign buffer and ring\n", dev
