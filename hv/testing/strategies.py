"""Hypothesis strategies derived from the ABI: hypercall numbers (known and
unknown), argument words, guest pointers by kind, and whole hypercall
programs for the replay guest (hv.testing.replay).

Every number comes from hv.abi (the compiled ABI header); nothing is retyped.

    @given(nr=hypercall_numbers(), args=argument_words(5))
    @given(buf=guest_pointers(["valid", "straddling"], size=16))
    @given(program=programs())          # -> hv.testing.replay.run_program

Guest pointers are symbolic (Ref): a name the guest knows plus an offset,
resolved against the guest's symbols when the program runs.  Each carries
its kind, one of POINTER_KINDS:

  valid         inside a buffer of the guest's own RAM, aligned
  unaligned     inside such a buffer, off its alignment by 1..align-1
  unmapped      an address no page table maps, or past the end of RAM
  foreign       RAM that hv keeps for itself (the PVH start info)
  noncanonical  bits 63:47 not all equal
  straddling    across a page boundary: inside a buffer (still valid), or
                across the end of RAM or into non-canonical space (its tail
                faults)
"""
from dataclasses import dataclass, field

from hypothesis import strategies as st

from hv.abi import HYPERCALL_NAMES, lib

U64 = 1 << 64
PAGE = lib.HV_PAGE_SIZE
ENTRY_SIZE = 56                           # struct hv_multicall_entry
POINTER_KINDS = ("valid", "unaligned", "unmapped", "foreign", "noncanonical", "straddling")


# ---- numbers and words -------------------------------------------------------

def known_hypercalls():
    """Every hypercall number abi.h defines."""
    return st.sampled_from(sorted(HYPERCALL_NAMES))


#: Numbers just past, and far past, the defined ones; with a defined number in
#: the low bits (a dispatcher that truncates to 32 bits would take it).
UNKNOWN_EDGES = (lib.HV_HC_COUNT, lib.HV_HC_COUNT + 1, 31, 63, lib.HV_HYPERCALL_MAX,
                 lib.HV_HYPERCALL_MAX + 1, 255, 1000, 1 << 32, (1 << 32) | lib.HV_HC_VERSION,
                 1 << 63, U64 - 1)


def unknown_hypercalls():
    """Numbers abi.h does not define (each must get -HV_ENOSYS)."""
    return st.one_of(st.sampled_from(UNKNOWN_EDGES), st.integers(lib.HV_HC_COUNT, U64 - 1))


def hypercall_numbers():
    return st.one_of(known_hypercalls(), unknown_hypercalls())


# Values that hit edges: zero, small, a page and its neighbours, 2^32, the
# sign bit, all ones.
EDGES = st.sampled_from([0, 1, 2, 5, 31, 32, 63, 64, 255, 256, 511, 512, 4095, 4096, 4097,
                         1 << 32, 1 << 62, 1 << 63, U64 - 1])
ANY = st.one_of(EDGES, st.integers(0, U64 - 1))
JUNK = st.sampled_from([0, 0, 0, 1, 0xdeadbeef, U64 - 1])   # arguments a call ignores


def argument_words(n=None):
    """One 64-bit argument word (edges and anything), or a tuple of n."""
    return ANY if n is None else st.tuples(*[ANY] * n)


# ---- guest pointers ------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """name+off: an address the guest names (its own symbol, or a fixed
    address it documents); kind says what the generator meant it to be."""
    name: str
    off: int = 0
    kind: str = field(default=None, compare=False)

    def resolve(self, symbols):
        return (symbols[self.name] + self.off) % U64

    def cmdline(self):
        """@name, @name+hex, @name-hex: the replay guest's syntax."""
        return f"@{self.name}" + (f"+{self.off:x}" if self.off > 0 else
                                   f"-{-self.off:x}" if self.off < 0 else "")


def resolve(value, symbols):
    """A Ref resolved against symbols; a plain int as it is."""
    return value.resolve(symbols) if isinstance(value, Ref) else value


@dataclass(frozen=True)
class AddressSpace:
    """The names a guest offers for each kind of pointer.  valid: buffers of
    its own RAM and their sizes; the others: names of single addresses."""
    valid: dict
    foreign: tuple = ()
    unmapped: tuple = ()
    noncanonical: tuple = ()
    ram_end: str = None               # the name of the end of RAM


#: guests/hcall-replay's names (see its main.c).
REPLAY_SPACE = AddressSpace(valid={"buf": 2 * PAGE, "evp": PAGE, "mc": 2 * 64 * ENTRY_SIZE},
                            foreign=("si",), unmapped=("bad",), noncanonical=("nc",),
                            ram_end="end")


def guest_pointers(kinds=POINTER_KINDS, size=1, align=1, space=REPLAY_SPACE):
    """Refs of the given kinds for an object of `size` bytes that wants
    `align`-byte alignment, in `space`'s vocabulary."""
    def refs(kind, name, offsets):
        return st.sampled_from(offsets).map(lambda off: Ref(name, off, kind))

    options = []
    for kind in kinds:
        if kind == "valid":
            for name, length in space.valid.items():
                if length >= size:
                    options.append(st.integers(0, (length - size) // align).map(
                        lambda k, n=name: Ref(n, k * align, "valid")))
        elif kind == "unaligned" and align > 1:
            for name, length in space.valid.items():
                if length >= size + align:
                    options.append(st.tuples(st.integers(0, (length - size - align) // align),
                                             st.integers(1, align - 1)).map(
                        lambda kd, n=name: Ref(n, kd[0] * align + kd[1], "unaligned")))
        elif kind == "straddling" and size > 1:
            for name, length in space.valid.items():
                if length >= 2 * PAGE:
                    options.append(st.integers(1, size - 1).map(
                        lambda k, n=name: Ref(n, PAGE - k, "straddling")))
            for name in (space.ram_end,) * bool(space.ram_end) + space.noncanonical:
                options.append(st.integers(1, size - 1).map(   # its tail faults
                    lambda k, n=name: Ref(n, -k, "straddling")))
        elif kind == "unmapped":
            options += [refs(kind, n, [0, align * 8]) for n in space.unmapped]
            if space.ram_end:
                options.append(refs(kind, space.ram_end, [0, PAGE]))
        elif kind == "foreign":
            options += [refs(kind, n, [0, align]) for n in space.foreign]
        elif kind == "noncanonical":
            options += [refs(kind, n, [0, align, PAGE]) for n in space.noncanonical]
    if not options:
        raise ValueError(f"no pointers of kinds {kinds} for size {size} in this space")
    return st.one_of(options)


# ---- hypercall programs for the replay guest ----------------------------------

def _refs(name, *offsets):
    return st.sampled_from([Ref(name, o) for o in offsets])


# The named buffers come first and twice: st.one_of picks branches about
# evenly, and calls that succeed are the ones that change state.
BUFFERS = st.one_of(guest_pointers(["valid"], size=16), _refs("buf", 0, 0x100),
                    guest_pointers(["unaligned", "straddling"], size=16, align=8),
                    _refs("end", -4, -8, -0x1000, 0), guest_pointers(["unmapped", "foreign",
                                                                       "noncanonical"], size=4),
                    st.just(0), ANY)
LENGTHS = st.one_of(st.integers(0, 200), st.sampled_from([0, 1, 8, 4096, 4097, 1 << 32, U64 - 1]),
                    st.integers(0, 5000))
PAGES = st.one_of(_refs("evp", 0), _refs("evp", 0, 8), _refs("buf", 0, 0x1000),
                  _refs("end", 0, -0x1000), _refs("si", 0), _refs("bad", 0), _refs("nc", 0),
                  st.just(0), EDGES)
VECTORS = st.one_of(st.integers(32, 255), st.sampled_from([0, 5, 31, 32, 0xf0, 255, 256, U64 - 1]),
                    st.integers(0, 300))
EVENTS = st.one_of(st.integers(0, 511), st.sampled_from([0, 1, 63, 64, 511, 512, 1 << 32, U64 - 1]),
                   st.integers(0, 600))
# Deadlines are instruction counts on deterministic TCG: some fire during the
# run (the guest keeps IF=0, so the timer only sets a pending bit), some never.
DEADLINES = st.sampled_from([0, 1, 0x1000, 0x2000, 0x4000, 0x10000, 1 << 40, 1 << 62,
                             (1 << 62) + 1, U64 - 1])
ARRAYS = st.one_of(_refs("mc", 0), _refs("mc", 0, 56, 112, 8), _refs("end", -56, -112, -8, 0),
                   _refs("buf", 0), _refs("bad", 0), _refs("nc", 0), _refs("si", 0), st.just(0),
                   EDGES)
COUNTS = st.one_of(st.integers(0, 8), st.sampled_from([0, 1, 2, 3, 64, 65, 1 << 32, U64 - 1]),
                   st.integers(0, 70))


def call(nr, *args):
    """A strategy for one call (nr, 5 args): the given ones, then ignored junk."""
    return st.tuples(st.just(nr) if isinstance(nr, int) else nr,
                     st.tuples(*args, *[JUNK] * (5 - len(args))))


# shutdown with arguments hv must refuse (a valid one would end the run).
BAD_SHUTDOWN = st.one_of(
    call(lib.HV_HC_SHUTDOWN, st.sampled_from([2, 7, 0x7fff, U64 - 1]), st.integers(0, 255)),
    call(lib.HV_HC_SHUTDOWN, st.sampled_from([0, 1]), st.sampled_from([256, 1 << 32, U64 - 1])))

CONSOLE_WRITE = call(lib.HV_HC_CONSOLE_WRITE, BUFFERS, LENGTHS)
EVENT_REGISTER = st.one_of(call(lib.HV_HC_EVENT_REGISTER, PAGES, VECTORS),
                           call(lib.HV_HC_EVENT_REGISTER, _refs("evp", 0), st.integers(32, 255)))
EVENT_RAISE = st.one_of(call(lib.HV_HC_EVENT_RAISE, EVENTS),
                        call(lib.HV_HC_EVENT_RAISE, st.integers(0, 511)))
MULTICALL = call(lib.HV_HC_MULTICALL, ARRAYS, COUNTS)
# Every hypercall has its own strategy (the ones with state or pointers
# twice, see BUFFERS); any other number is unknown.
CALLS = st.one_of(
    call(lib.HV_HC_VERSION), call(lib.HV_HC_FEATURES, st.sampled_from([0, 0, 1, U64 - 1])),
    CONSOLE_WRITE, CONSOLE_WRITE, call(lib.HV_HC_YIELD), call(lib.HV_HC_BLOCK),
    call(lib.HV_HC_BLOCK), BAD_SHUTDOWN, call(lib.HV_HC_CLOCK_READ),
    call(lib.HV_HC_SET_TIMER, DEADLINES), EVENT_REGISTER, EVENT_REGISTER, EVENT_RAISE, EVENT_RAISE,
    MULTICALL, MULTICALL, MULTICALL, call(unknown_hypercalls(), ANY, ANY),
    call(st.integers(lib.HV_HC_COUNT, U64 - 1), ANY, ANY, ANY, ANY, ANY),
)
FINAL_SHUTDOWN = call(lib.HV_HC_SHUTDOWN, st.sampled_from([lib.HV_SHUTDOWN_POWEROFF,
                                                           lib.HV_SHUTDOWN_CRASH]),
                      st.integers(0, 255))
# Half the programs start with a good event_register (so raise, block and
# the timer act on a page).
REGISTER_FIRST = ((lib.HV_HC_EVENT_REGISTER, (Ref("evp"), 0xf0, 0, 0, 0)),)


def programs(calls=CALLS, max_calls=12, max_entries=6):
    """(calls, multicall entries, final shutdown or None) for
    hv.testing.replay.run_program: calls run in order; the entries are
    written to the guest's multicall array @mc first; one program in four
    ends with a valid shutdown.  Pass `calls` to mix in your own."""
    return st.tuples(
        st.builds(lambda first, rest: (REGISTER_FIRST if first else ()) + tuple(rest),
                  st.booleans(), st.lists(calls, max_size=max_calls)),
        st.lists(calls, max_size=max_entries),
        st.integers(0, 3).flatmap(lambda k: FINAL_SHUTDOWN if k == 0 else st.none()))
