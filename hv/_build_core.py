"""The one binding seam: cffi (API mode) compiles csrc/ into hv._core.

The declarations cffi sees are taken from the C headers themselves, never
retyped: the whole of csrc/include/hv/abi.h (so every HV_* value and shared
struct comes from the compiler), layout.h and virtio_mmio.h beside it, and
the marked part of csrc/hv.h.  There is
no logic here; the core's functions are called as they are.
"""
import os
import re

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
ABI_H = os.path.join(CSRC, "include", "hv", "abi.h")
# Constants the core and Python share beside the ABI (parsed whole, like abi.h).
SHARED_HEADERS = [os.path.join(CSRC, "include", "hv", name) for name in ("layout.h", "virtio_mmio.h")]
CORE_H = os.path.join(CSRC, "hv.h")

# C files of the core, in the order a reader meets them (see README).
CORE_SOURCES = [
    "partition.c", "partition_table.c", "memory.c", "pagewalk.c", "hypercall.c", "event.c", "kick.c", "timer.c", "wait.c",
    "evtchn.c", "grant.c", "smp.c",
    "vcpu.c", "sched.c", "sched_worker.c", "sched_test.c", "idt.c", "trace.c", "virtio_mmio.c", "net_frames.c",
    "platform.c", "uart16550.c", "lapic.c", "ioapic.c", "rtc_cmos.c", "checks.c", "coverage.c",
    "engine.c", "engine_host.c", "engine_kvm.c", "engine_tcg.c", "engine_tcg_io.c", "engine_tcg_exceptions.c", "engine_tcg_checks.c",
    "engine_tcg_state.c", "engine_tcg_debug.c", "engine_none.c", "debug.c",
    "snapshot.c", "platform_snapshot.c", "engine_kvm_snapshot.c", "engine_tcg_snapshot.c", "dirty.c",
    "dirty_wp.c",
]


def _strip_preprocessor(text):
    """Keep what cffi's cdef understands: declarations and literal #defines."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            if re.match(r"#define\s+(HV|VIRTIO)_\w+\s+\S", s):
                keep.append(s)
            continue
        keep.append(line)
    return "\n".join(keep)


def cdef_text():
    with open(ABI_H) as f:
        abi = f.read()
    with open(CORE_H) as f:
        core = f.read()
    core = core.split("cffi-begin", 1)[1].split("\n", 1)[1].split("/* ==== cffi-end")[0]
    shared = []
    for path in SHARED_HEADERS:
        with open(path) as f:
            shared.append(_strip_preprocessor(f.read()))
    return "\n".join([_strip_preprocessor(abi), *shared, _strip_preprocessor(core)])


def unicorn_paths():
    """Headers and library of the pinned `unicorn` wheel (see requirements)."""
    try:
        import unicorn
    except ImportError:
        return None
    base = os.path.dirname(unicorn.__file__)
    inc, lib = os.path.join(base, "include"), os.path.join(base, "lib")
    if os.path.exists(os.path.join(inc, "unicorn", "unicorn.h")):
        return inc, lib
    return None


_uc = unicorn_paths()
if _uc is None:
    raise SystemExit("hv needs the pinned `unicorn` wheel for its TCG engine: "
                     "pip install -r requirements.txt")
_defines = [("_GNU_SOURCE", "1")]
_include_dirs = [CSRC, os.path.join(CSRC, "include"), _uc[0]]
_library_dirs, _libraries = [_uc[1]], ["pthread", "rt"]
# libunicorn.so.2 has no unversioned symlink in the wheel: name it exactly.
# At run time it is found in the unicorn package installed beside hv
# ($ORIGIN is hv/, so ../unicorn/lib: a wheel built in pip's throw-away build
# environment works wherever it is installed), else where it was at build
# time (an in-place build in a source tree, whose unicorn is in the venv).
_link_args = ["-l:libunicorn.so.2", "-Wl,-rpath,$ORIGIN/../unicorn/lib", "-Wl,-rpath," + _uc[1]]
_warnings = ["-Wall", "-Wextra", "-Werror=implicit-function-declaration"]

# Instrumented builds of the same sources, as extensions of their own
# (hv._core_asan, hv._core_coverage) that hv.abi loads when HV_CORE names
# them; `python hv/_build_core.py VARIANT` builds one (make test-asan,
# make coverage).  (compile flags, link flags)
_SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-fno-omit-frame-pointer"]
VARIANTS = {
    "": (["-O2"], []),
    # UBSan made fatal: a report fails the run, it does not scroll past.
    "asan": (["-O1", "-g"] + _SANITIZE, _SANITIZE),
    # Atomic counters: vCPU and device threads run the same code at once.
    "coverage": (["-O0", "-g", "--coverage", "-fprofile-update=atomic", "-DHV_COVERAGE"],
                 ["--coverage"]),
}


def builder(variant=""):
    """The cffi builder of hv._core, or of an instrumented variant."""
    compile_flags, link_flags = VARIANTS[variant]
    b = FFI()
    b.cdef(cdef_text())
    b.set_source(
        "hv._core" + (f"_{variant}" if variant else ""),
        '#include "hv.h"\n',
        # Relative for setup.py (setuptools wants them so); a variant is
        # compiled by cffi inside build/VARIANT, so it names them whole.
        sources=[os.path.join(CSRC if variant else "csrc", s) for s in CORE_SOURCES],
        include_dirs=_include_dirs,
        define_macros=_defines,
        library_dirs=_library_dirs,
        libraries=_libraries,
        extra_compile_args=["-std=gnu11"] + compile_flags + _warnings,
        extra_link_args=_link_args + link_flags,
    )
    return b


ffibuilder = builder()


def build_variant(variant):
    """Build hv/_core_VARIANT*.so, its objects (and .gcno notes) under build/VARIANT."""
    import shutil
    so = builder(variant).compile(tmpdir=os.path.join(ROOT, "build", variant))
    shutil.copy(so, os.path.join(ROOT, "hv", os.path.basename(so)))
    return so


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1:
        print(build_variant(sys.argv[1]))
    else:
        ffibuilder.compile(verbose=True)
