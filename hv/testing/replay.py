"""Run a generated hypercall program through a real guest on deterministic
TCG, check every result against two oracles, and replay it exactly.

guests/hcall-replay makes the hypercalls its command line lists and prints
each result.  run_program() builds that command line from a program (see
hv.testing.strategies.programs), computes what each call must return on

  - the C dispatcher (DispatcherOracle: hv's own code on the no-op engine,
    over a copy of the same image, with the guest's page tables), and
  - the Python reference model (hv.testing.model.AbiModel, or yours),

boots the guest, compares, then boots it a second time: on deterministic
TCG the console and the whole trace must repeat to the instruction.  A
failure names the command line and the one command that replays it:

    hv trace --deterministic --mem 16M --cmdline '...' guests/build/hcall-replay.elf

    @given(programs())
    def test_my_calls(program):
        isolated(run_program, program)       # a crash in the core is a failure, not the end
"""
import re
import shlex
import struct

from hv.abi import ffi, lib
from hv.testing.boot import boot_traced
from hv.testing.core import Core, documented_errors
from hv.testing.model import AbiModel, GuestMemory
from hv.testing.paths import guest_path
from hv.testing.results import parse_result
from hv.testing.strategies import Ref, resolve

REPLAY = "hcall-replay"
REPLAY_MEM = 16 << 20
ENTRY = struct.Struct("<Q5Qq")           # struct hv_multicall_entry
PAGE = lib.HV_PAGE_SIZE
# guests/hcall-replay/main.c: BAD_UNMAPPED, BAD_NONCANONICAL; @end is RAM's end.
FIXED_ADDRESSES = {"bad": 0x200000000, "nc": 0x800000000000, "end": REPLAY_MEM}
RESULT_LINE = re.compile(rb"^r(\d+)(?:\.(\d+))?=(-?\d+)$", re.M)
DOCUMENTED = documented_errors()


def replay_symbols(kernel=REPLAY, mem=REPLAY_MEM):
    """Addresses of the guest's buffers and page tables, from its ELF symbols;
    the start info and the fixed bad addresses from the loader and the guest."""
    from elftools.elf.elffile import ELFFile
    from hv.loader import load_pvh

    out = dict(FIXED_ADDRESSES, end=mem)
    with open(guest_path(kernel), "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        for name in ("buf", "evp", "mc", "pml4"):
            syms = symtab.get_symbol_by_name(name)
            if not syms or len(syms) != 1:
                raise ValueError(f"{kernel}.elf: no single symbol {name!r}")
            out[name] = syms[0]["st_value"]
    out["si"] = load_pvh(guest_path(kernel), mem, "").start_info_gpa
    return out


def field(value):
    return value.cmdline() if isinstance(value, Ref) else f"{value:x}"


def call_text(call):
    nr, args = call
    while args and args[-1] == 0:       # fields left out are 0
        args = args[:-1]
    return ":".join(field(v) for v in (nr,) + tuple(args))


def tame(call_, last=False):
    """Keep a generated call from ending the run or reaching memory whose
    contents change while the guest runs (stack, its own variables), which a
    copy of the image cannot mirror:
      - a valid shutdown, unless it is the last call, gets reason 7;
      - an event page or multicall array given as a plain number in RAM
        becomes @bad (the named buffers are where pointers into RAM go)."""
    nr, args = call_
    args = list(args)
    if nr == lib.HV_HC_SHUTDOWN and args[0] in (0, 1) and args[1] <= 255 and not last:
        args[0] = 7
    if nr in (lib.HV_HC_EVENT_REGISTER, lib.HV_HC_MULTICALL) and not isinstance(args[0], Ref) \
            and args[0] < REPLAY_MEM + PAGE:
        args[0] = Ref("bad")
    return nr, tuple(args)


def _image_ram(syms, mc_entries, load_into):
    """The replay image, its boot page and the mc= entries, as the guest has them."""
    from hv.loader import load_pvh

    image = load_pvh(guest_path(REPLAY), REPLAY_MEM, "")
    ram = load_into(image)
    for seg in image.segments:
        ram[seg.gpa:seg.gpa + len(seg.data)] = seg.data
    ram[image.boot_gpa:image.boot_gpa + len(image.boot_blob)] = image.boot_blob
    for i, (nr, args) in enumerate(mc_entries):   # what the guest does with mc=
        at = syms["mc"] + i * ENTRY.size
        ram[at:at + ENTRY.size] = ENTRY.pack(resolve(nr, syms), *(resolve(a, syms) for a in args), 0)
    return image


class DispatcherOracle:
    """The replay on the C dispatcher: a Core (no-op engine) whose RAM holds
    the same image, boot page and reservations as the guest's, with the
    guest's own page tables in CR3 -- so every pointer translates and every
    frame is owned exactly as in the guest.  The parent's part (console
    bytes) is played here: a console_write completes with its length."""

    def __init__(self, syms, mc_entries):
        self.core = core = Core(mem_size=REPLAY_MEM)

        def into(image):
            for gpa, length in image.reserved:
                lib.hv_partition_reserve(core.p, gpa, length)
            return core.ram
        _image_ram(syms, mc_entries, into)
        core.set_paging(cr3=syms["pml4"], cr0=0x80010031)
        self.event_page = None              # what the dispatcher was told
        self.deadline = 0

    def block_is_safe(self):
        """Would block return now on the guest?  Only when the answer does not
        depend on time: no event page and no timer (-EPERM), or an event
        already pending in the page.  (The guest's timer may have fired,
        which only adds pending bits, or disarm itself -- it never does so
        here, where no timer fires.)  Otherwise it may sleep to a deadline,
        or for ever."""
        if self.event_page is None:
            return self.deadline == 0
        words = self.core.ram[self.event_page:self.event_page + 8 * lib.HV_EVENT_WORDS]
        return any(words)

    def _note(self, nr, args, result):
        if nr == lib.HV_HC_EVENT_REGISTER and result == 0:
            self.event_page = args[0]
        if nr == lib.HV_HC_SET_TIMER:
            self.deadline = args[0]

    def call(self, nr, args):
        """Returns (result or None if the run ends here, [entry (op, args, result)])."""
        core = self.core
        result, kind = core.call(nr, *args)
        while kind is not None:
            if kind == lib.HV_EXIT_SHUTDOWN:
                return None, []
            assert kind == lib.HV_EXIT_HYPERCALL and core.exit.nr == lib.HV_HC_CONSOLE_WRITE
            core.complete(core.exit.data_len)
            if nr != lib.HV_HC_MULTICALL:       # the completion was the result
                lib.hv_vcpu_get_regs(core.v, core.regs)
                result, kind = int(ffi.cast("int64_t", core.regs.rax)), None
            else:                               # the batch goes on
                result, kind = core.resume()
        entries = []
        if nr == lib.HV_HC_MULTICALL and result == 0:
            for j in range(args[1]):
                at = args[0] + j * ENTRY.size
                op, *eargs, eresult = ENTRY.unpack(core.ram[at:at + ENTRY.size])
                entries.append((op, tuple(eargs), eresult))
                self._note(op, eargs, eresult)
        self._note(nr, args, result)
        return result, entries

    def close(self):
        self.core.close()


class ModelOracle:
    """The same replay on the Python reference model (model_class, e.g. a
    subclass of AbiModel with your hypercalls)."""

    def __init__(self, syms, mc_entries, model_class=AbiModel):
        self.ram = bytearray(REPLAY_MEM)
        image = _image_ram(syms, mc_entries, lambda image: self.ram)
        self.model = model_class(GuestMemory(self.ram, image.reserved, cr3=syms["pml4"]))

    def call(self, nr, args):
        result = self.model.call(nr, *args)
        entries = []
        if nr == lib.HV_HC_MULTICALL and result == 0:
            for j in range(args[1]):
                at = args[0] + j * ENTRY.size
                op, *eargs, eresult = ENTRY.unpack(self.ram[at:at + ENTRY.size])
                entries.append((op, tuple(eargs), eresult))
        return result, entries

    def close(self):
        pass


def check_documented(nr, result, in_multicall=False):
    """A result the ABI allows: >= 0, or an error abi.h lists for nr."""
    if nr >= lib.HV_HC_COUNT:
        assert result == -lib.HV_ENOSYS, (nr, result)
        return
    allowed = DOCUMENTED[nr] | ({-lib.HV_EOPNOTSUPP} if in_multicall else set())
    assert result >= 0 or result in allowed, (
        f"hypercall {nr} returned {result}, not one of the documented {sorted(allowed)}")


def command_line(calls, mc_entries=()):
    """The replay guest's command line for these calls and mc= entries."""
    return " ".join(part for part in (
        "mc=" + ";".join(call_text(c) for c in mc_entries) if mc_entries else "",
        "calls=" + ";".join(call_text(c) for c in calls) if calls else "") if part)


def replay_command(cmdline):
    """The one shell command that replays a run, trace and all."""
    return (f"python -m hv trace --deterministic --mem {REPLAY_MEM >> 20}M --cmdline "
            f"{shlex.quote(cmdline)} {guest_path(REPLAY)}")


def run_replay(cmdline):
    """Boot the replay guest on deterministic TCG with this command line."""
    return boot_traced(REPLAY, cmdline, deterministic=True, mem=REPLAY_MEM)


def run_program(program, model_class=AbiModel):
    """Run one program (calls, mc entries, final shutdown or None) and check
    it; raises AssertionError naming the replay command on any difference."""
    calls, mc_entries, final = program
    syms = replay_symbols()
    mc_entries = [tame(c) for c in mc_entries]
    dispatcher = DispatcherOracle(syms, mc_entries)
    model = ModelOracle(syms, mc_entries, model_class)
    program_calls, lines = [], []      # lines: (i, j or None, result, hypercall number)
    ended = None
    todo = [tame(c) for c in calls] + ([tame(final, last=True)] if final else [])
    try:
        for nr, args in todo:
            values = tuple(resolve(a, syms) for a in args)
            if nr == lib.HV_HC_BLOCK and not dispatcher.block_is_safe():
                continue
            i = len(program_calls)
            program_calls.append((nr, args))
            result, entries = dispatcher.call(nr, values)
            m_result, m_entries = model.call(nr, values)
            cmdline = command_line(program_calls, mc_entries)
            # clock_read's result is the clock, which the model keeps its own way.
            clockless = [(nr, result, m_result)] + [
                (e[0], e[2], m[2]) for e, m in zip(entries, m_entries)]
            assert len(m_entries) == len(entries) and all(
                c == m for op, c, m in clockless if op != lib.HV_HC_CLOCK_READ), (
                f"call {i} ({call_text((nr, args))}): the model says {m_result} "
                f"{[e[2] for e in m_entries]}, the dispatcher {result} "
                f"{[e[2] for e in entries]}\ncmdline: {cmdline!r}")
            if result is None:
                ended = values              # a valid shutdown: the run stops here
                break
            lines.append((i, None, result, nr))
            for j, (op, _eargs, eresult) in enumerate(entries):
                lines.append((i, j, eresult, op))
    finally:
        dispatcher.close()
        model.close()

    cmdline = command_line(program_calls, mc_entries)
    first = run_replay(cmdline)
    why = f"cmdline: {cmdline!r}\nreplay: {replay_command(cmdline)}\n{first.describe()}"
    console = first.console_bytes

    # The end: SUCCESS, or the final shutdown as asked.
    if ended is None:
        assert (first.state, first.exit_code) == ("shutdown", 0), why
        assert console.endswith(b"\nSUCCESS\n") or console == b"SUCCESS\n", why
    else:
        state = "shutdown" if ended[0] == lib.HV_SHUTDOWN_POWEROFF else "crashed"
        assert (first.state, first.exit_code) == (state, ended[1]), why
        assert parse_result(console)[0] is None, why

    # (a) Each result as the oracles computed it, and one the ABI allows;
    # clock_read's is this engine's instruction count: only its order counts.
    got = [(int(i), int(j) if j else None, int(r)) for i, j, r in RESULT_LINE.findall(console)]
    assert [g[:2] for g in got] == [e[:2] for e in lines], why
    clocks = []
    for (i, j, result), (_, _, want, nr) in zip(got, lines):
        check_documented(nr, result, in_multicall=j is not None)
        if nr == lib.HV_HC_CLOCK_READ:
            clocks.append(result)
        else:
            assert result == want, (f"r{i}{'' if j is None else f'.{j}'}={result}, "
                                    f"the dispatcher says {want}\n{why}")
    assert clocks == sorted(clocks) and all(c > 0 for c in clocks), why

    # (b) Exact replay.
    second = run_replay(cmdline)
    assert (second.state, second.exit_code) == (first.state, first.exit_code), why
    assert second.console_bytes == console, why
    assert second.records == first.records, "traces differ; " + first_difference(
        first.records, second.records) + "\n" + why
    return first


def first_difference(a, b, context=3):
    """Where two sequences part, with a few items either side, for messages."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, n - context)
    return (f"they differ at item {n} (lengths {len(a)} and {len(b)}):\n"
            f"  first:  {a[lo:n + context]}\n  second: {b[lo:n + context]}")
