/*
 * hcall-fuzz - make many random hypercalls from inside the guest; check each
 * result is documented and that hv wrote nothing it was not asked to.
 *
 * Command line:
 *   seed=S     the generator's seed (default 1); the same seed makes the
 *              same calls, so on deterministic TCG a run replays exactly
 *   count=N    how many calls (default 100000)
 *   every=K    also print "at <i>: <digest>" after every K calls, and from
 *   from=F     call F on (default 0): where two runs' digests part, the call
 *              that differs (compare two engines, or two runs)
 *
 * Each call takes a number from 0..HV_HC_COUNT+3 (the unknown ones too) or
 * a large one through the bare trap, and arguments drawn from edge values
 * (0, 1, -1, page edges, sizes around HV_CONSOLE_WRITE_MAX), pointers of
 * every kind (a buffer, its last byte, unmapped, non-canonical, the end of
 * RAM, hv's own boot page) and raw 64-bit noise.  (Not the guest's own
 * code or hypercall page: an event page there would be the guest's doing.)
 * Never shutdown or a top-level block (they would end or park the run);
 * half the multicalls get entries from the same generator (no shutdown),
 * whose results are checked too.
 *
 * Checked per call: the result is >= 0 or a -HV_E* error hv/abi.h defines.
 * Checked every 4096 calls and at the end: the guest's canary pages, which
 * no call names, are intact.  Output: one line
 *     fuzz: seed S, N calls, digest D
 * where D hashes every result but the clock's value (so a seed's digest is
 * the same on every engine and every run), then SUCCESS.  A bad result is a FAILURE
 * naming the call's index, number and arguments.
 */
#include <stdbool.h>
#include "hv.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "virtio_cmdline.h"

#define CANARY_PAGES     4
#define CANARY_BYTE(i)   ((uint8_t)(0x5a ^ (i) * 37))
#define BAD_UNMAPPED     0x0000000200000000ull
#define BAD_NONCANONICAL 0x0000800000000000ull
#define BIG_NR           0x12345ull

/* Everything calls may name, between canaries no call names.  A call may
 * write at most HV_MULTICALL_MAX entries past a pointer it is given (the
 * multicall results), or one page (an event page), so two guard pages on
 * each side keep the canaries out of every legitimate write. */
static struct {
    uint8_t canary_before[CANARY_PAGES * HV_PAGE_SIZE];
    uint8_t guard_before[2 * HV_PAGE_SIZE];
    char buf[2 * HV_PAGE_SIZE];
    uint8_t evp[HV_PAGE_SIZE];
    struct hv_multicall_entry mc[2 * HV_MULTICALL_MAX];
    uint8_t guard_after[2 * HV_PAGE_SIZE];
    uint8_t canary_after[CANARY_PAGES * HV_PAGE_SIZE];
} arena __attribute__((aligned(HV_PAGE_SIZE)));

static uint64_t state;

/* xorshift64*: small, fast, and the same on every engine. */
static uint64_t next(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

static uint64_t edge_value(void)
{
    static const uint64_t edges[] = {
        0, 1, 2, 7, 8, 31, 32, 63, 64, 255, 256, 511, 4095, 4096, 4097,
        HV_CONSOLE_WRITE_MAX - 1, HV_CONSOLE_WRITE_MAX, HV_CONSOLE_WRITE_MAX + 1,
        HV_MULTICALL_MAX, HV_MULTICALL_MAX + 1, HV_EVENTS_MAX - 1, HV_EVENTS_MAX,
        0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull, ~0ull - 4095,
    };
    return edges[next() % (sizeof(edges) / sizeof(edges[0]))];
}

static uint64_t pointer(void)
{
    switch (next() % 10) {
    case 0: return (uintptr_t)arena.buf;
    case 1: return (uintptr_t)arena.buf + sizeof(arena.buf) - 1 - next() % 16;
    case 2: return (uintptr_t)arena.evp;
    case 3: return (uintptr_t)arena.mc;
    case 4: return BAD_UNMAPPED + next() % 4096;
    case 5: return BAD_NONCANONICAL;
    case 6: return start_info_ram_end() - next() % 64;
    case 7: return (uintptr_t)start_info();      /* hv's page: refused */
    default: return (uintptr_t)arena.buf + (next() % sizeof(arena.buf));
    }
}

static uint64_t argument(void)
{
    switch (next() % 4) {
    case 0: return edge_value();
    case 1: return pointer();
    case 2: return next() % 1024;   /* small sizes, vectors, events */
    default: return next();
    }
}

/* A block inside a multicall (and a nested multicall) is refused by hv
 * with -HV_EOPNOTSUPP, so only a top-level block is left out.  The
 * partition id inside a multicall would land in the arena, which later
 * calls read: it differs between partitions, so one seed would not give
 * one digest. */
static bool forbidden(uint64_t nr, bool in_multicall)
{
    return nr == HV_HC_SHUTDOWN || (!in_multicall && nr == HV_HC_BLOCK) ||
           (in_multicall && nr == HV_HC_PARTITION_ID);
}

static uint64_t number(bool in_multicall)
{
    uint64_t nr;

    do {
        uint64_t r = next() % 64;
        nr = r < 60 ? r % (HV_HC_COUNT + 4) : r == 60 ? BIG_NR : HV_HYPERCALL_MAX + r % 4;
    } while (forbidden(nr, in_multicall));
    return nr;
}

/* Keep the checks meaningful: hv writes event bits into whatever page the
 * guest registers, at any time (the timer), so an event page inside the
 * buffers the checks read is moved to arena.evp; console writes stay short.
 * Keep the results repeatable: arena.mc holds multicall results (clock
 * reads among them) and arena.evp the timer's event bits, both values that
 * depend on *when*; a grant table or a grant-copy array there made later
 * results depend on them (grant_end of an entry whose "in use" flags were a
 * clock value's bits: two runs of one seed parted at call 31,578 of seed
 * 424242).  Those arrays in the arena go to arena.buf, which only the
 * generator writes. */
static bool in_arena(uint64_t p)
{
    return p >= (uintptr_t)&arena && p < (uintptr_t)&arena + sizeof(arena);
}

/* The partition's own id, asked once (not hashed).  A peer id that equals
 * it is refused differently (-HV_EINVAL) from any other unpermitted peer
 * (-HV_EPERM), so small peer ids are drawn around it: the results then do
 * not depend on how many partitions came before this one, and a failure
 * found inside the test suite replays in a fresh `hv run`. */
static uint64_t self_id;

static void tame(uint64_t nr, uint64_t *a)
{
    if ((nr == HV_HC_EVTCHN_ALLOC_UNBOUND || nr == HV_HC_EVTCHN_BIND_INTERDOMAIN) &&
        a[0] <= 0xffff)
        a[0] = self_id + a[0] % 3 - 1;
    if (nr == HV_HC_EVENT_REGISTER && in_arena(a[0]))
        a[0] = (uintptr_t)arena.evp;
    if ((nr == HV_HC_GRANT_TABLE_REGISTER || nr == HV_HC_GRANT_COPY) && in_arena(a[0])) {
        a[0] = (uintptr_t)arena.buf + a[0] % 8 * 8;     /* aligned: the table must be */
        if (nr == HV_HC_GRANT_TABLE_REGISTER && a[1] > sizeof(arena.buf) / 8 - 8)
            a[1] %= sizeof(arena.buf) / 8 - 8;          /* all of it inside buf */
    }
    if (nr == HV_HC_CONSOLE_WRITE)
        a[1] %= 24;
}

static bool documented(int64_t r)
{
    switch (-r) {
    case HV_EPERM: case HV_ENOENT: case HV_EIO: case HV_E2BIG: case HV_EAGAIN:
    case HV_ENOMEM: case HV_EFAULT: case HV_EBUSY: case HV_EEXIST: case HV_EINVAL:
    case HV_ENOSPC: case HV_ENOSYS: case HV_EOPNOTSUPP: case HV_ENOTCONN:
        return true;
    default:
        return r >= 0;
    }
}

static void fill_canaries(void)
{
    for (unsigned i = 0; i < sizeof(arena.canary_before); i++)
        arena.canary_before[i] = arena.canary_after[i] = CANARY_BYTE(i);
}

static void check_canaries(uint64_t at)
{
    for (unsigned i = 0; i < sizeof(arena.canary_before); i++)
        if (arena.canary_before[i] != CANARY_BYTE(i) || arena.canary_after[i] != CANARY_BYTE(i))
            test_failure("fuzz: after call %lu a canary byte %u changed", at, i);
}

int main(void)
{
    uint64_t seed = cmdline_uint("seed", 1), count = cmdline_uint("count", 100000);
    uint64_t every = cmdline_uint("every", 0), from = cmdline_uint("from", 0);
    uint64_t digest = 0xcbf29ce484222325ull;

    state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (unsigned i = 0; i < sizeof(arena.buf); i++)
        arena.buf[i] = (char)('A' + i % 16);
    fill_canaries();
    self_id = (uint64_t)hv_hypercall0(HV_HC_PARTITION_ID);

    for (uint64_t i = 0; i < count; i++) {
        uint64_t nr = number(false), a[5];

        for (unsigned k = 0; k < 5; k++)
            a[k] = argument();
        tame(nr, a);
        /* A multicall into the arena always gets fresh entries: stale ones
         * may hold what earlier results overwrote (even a shutdown's number). */
        bool filled = nr == HV_HC_MULTICALL &&
                      (in_arena(a[0]) || next() % 2);
        if (filled) {
            a[0] = (uintptr_t)arena.mc;
            a[1] = next() % (HV_MULTICALL_MAX + 2);
            /* Only the entries hv may read: ring-0 code is emulated on KVM
             * here, so every guest instruction counts. */
            for (uint64_t e = 0; e < a[1] && e < sizeof(arena.mc) / sizeof(arena.mc[0]); e++) {
                arena.mc[e].op = number(true);
                for (unsigned k = 0; k < 5; k++)
                    arena.mc[e].args[k] = argument();
                tame(arena.mc[e].op, arena.mc[e].args);
            }
        }
        int64_t r = nr < HV_HYPERCALL_MAX ? hv_hypercall5(nr, a[0], a[1], a[2], a[3], a[4])
                                          : hv_hypercall_raw5(nr, a[0], a[1], a[2], a[3], a[4]);
        if (!documented(r))
            test_failure("fuzz: seed %lu call %lu: nr %lu (%lx, %lx, %lx, %lx, %lx) = %ld, "
                         "not a documented result", seed, i, nr, a[0], a[1], a[2], a[3], a[4], r);
        /* The clock's value depends on when, the partition id on how many
         * partitions came before: leave them out, so one seed gives one
         * digest on every engine. */
        bool varies = nr == HV_HC_CLOCK_READ || nr == HV_HC_PARTITION_ID;
        digest = (digest ^ (uint64_t)(varies && r >= 0 ? 0 : r)) * 0x100000001b3ull;
        if (filled && r == 0)
            for (uint64_t e = 0; e < a[1] && e < sizeof(arena.mc) / sizeof(arena.mc[0]); e++)
                if (!documented(arena.mc[e].result))
                    test_failure("fuzz: seed %lu call %lu: multicall entry %lu nr %lu = %ld, "
                                 "not a documented result", seed, i, e, arena.mc[e].op, arena.mc[e].result);
        if (i % 4096 == 4095)
            check_canaries(i);
        if (every && i >= from && (i - from) % every == 0)
            printf("\nat %lu: nr %lu (%lx, %lx) = %ld, digest %lx\n", i, nr, a[0], a[1], r, digest);
    }
    check_canaries(count);
    printf("\nfuzz: seed %lu, %lu calls, digest %lx\n", seed, count, digest);
    test_success();
}
