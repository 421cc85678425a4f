"""Conservation: create -> run -> destroy, over and over, returns what it took.

Each cycle builds a partition with a virtio-blk disk and a virtio-rng device,
runs blk-test to its result line (writes, flushes, reads back), and destroys
it.  After a few warm-up cycles (first-use caches: the engine's CPUID table,
Python's imports) the process is measured; after N more cycles it must be
back where it was:

  file descriptors   exactly the baseline (eventfds, the disk, KVM's fds)
  threads            exactly the baseline (vCPU and device threads joined)
  big mappings       exactly the baseline: none of the guest's RAM (an odd
                     24 MiB, so it is told from anything else) and none of
                     Unicorn's code buffers (anonymous, executable, tens
                     of MiB) stays mapped
  mappings           the baseline + glibc's malloc arenas: each new thread
                     may get one, up to 8 per CPU, two mappings each; they
                     are reused, not leaked (measured: +4 after 12 and 300
                     TCG cycles, +9 after 2,000)
  RSS                the baseline + 16 MiB + 2 KiB per cycle (allocator
                     slack, not state that grows with the number of cycles)

The cycles run in a forked child, so only the child's own threads and fds
are counted, not those of whatever the test process did before.
HV_CONSERVATION_CYCLES=N runs N cycles per engine (10,000 for the long
profile; docs/reliability.md has the figures); the default suite runs a few.
"""
import gc
import os

import pytest

from conftest import engine_missing, guest
from hv.testing import fork_call

DEFAULT_CYCLES = {"tcg": 12, "kvm": 6}
WARMUP = 3
GUEST_RAM = 24 << 20
CODE_BUFFER_MIN = 16 << 20      # csrc/engine_tcg.c: TCG_CODE_BUFFER, 64 MiB
MAPPINGS_SLACK = 2 * 8 * os.cpu_count() + 8
RSS_SLACK = 16 << 20
RSS_PER_CYCLE = 2 << 10


def usage():
    """(fds, threads, mappings, big mappings, rss bytes) of this process."""
    sizes, big = [], 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            sizes.append(end - start)
            code_buffer = "x" in fields[1] and len(fields) < 6 and end - start >= CODE_BUFFER_MIN
            big += end - start == GUEST_RAM or code_buffer
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return (len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")), len(sizes),
            big, rss)


def one_cycle(engine, image):
    from hv.console import CaptureConsole
    from hv.devices.blk import BlkDevice
    from hv.devices.rng import RngDevice
    from hv.partition import Partition
    from hv.testing import parse_result
    console = CaptureConsole()
    p = Partition(guest("blk-test"), mem=GUEST_RAM, engine=engine, cmdline="sectors=8 seed=5",
                  console=console, devices=[BlkDevice(image), RngDevice()])
    try:
        p.start()
        state = p.wait(60)
    finally:
        p.destroy()
    verdict = parse_result(console.text())[0]
    if state != "shutdown" or verdict != "SUCCESS":
        raise AssertionError(f"cycle ended {state}/{verdict}:\n{console.text()}")


def cycles(engine, image, n):
    for _ in range(WARMUP):
        one_cycle(engine, image)
    gc.collect()
    before = usage()
    for _ in range(n):
        one_cycle(engine, image)
    gc.collect()
    return before, usage()


@pytest.mark.parametrize("engine", ["tcg", "kvm"])
def test_create_run_destroy_returns_everything(engine, tmp_path):
    if engine_missing(engine):
        pytest.skip(f"{engine} unavailable: {engine_missing(engine)}")
    n = int(os.environ.get("HV_CONSERVATION_CYCLES", DEFAULT_CYCLES[engine]))
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    kind, value = fork_call(cycles, engine, str(image), n, timeout=max(120, n))
    assert kind == "ok", value
    (fds0, threads0, maps0, big0, rss0), (fds1, threads1, maps1, big1, rss1) = value
    print(f"\n{engine}: {n} cycles: fds {fds0}->{fds1}, threads {threads0}->{threads1}, "
          f"mappings {maps0}->{maps1} (guest RAM or code buffers: {big0}->{big1}), "
          f"RSS {rss0 >> 10}->{rss1 >> 10} KiB")
    assert fds1 == fds0, "file descriptors leaked"
    assert threads1 == threads0, "threads leaked"
    assert big1 == big0, "guest RAM or an engine's code buffer stayed mapped"
    assert maps1 <= maps0 + MAPPINGS_SLACK, "mappings leaked"
    assert rss1 <= rss0 + RSS_SLACK + RSS_PER_CYCLE * n, "memory grows with cycles"
