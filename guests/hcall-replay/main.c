/*
 * hcall-replay - make the hypercalls the command line lists; print each result.
 *
 * The guest half of the property tests in tests/test_engines.py: Hypothesis
 * writes a list of calls, this kernel makes them one after another (on
 * deterministic TCG), and the test checks every result against the C
 * dispatcher run on the same calls, then replays the run to see that it
 * repeats byte for byte.
 *
 *   calls=NR:A0:A1:A2:A3:A4;NR:...   the calls, in order (at most MAX_CALLS)
 *   mc=NR:A0:A1:A2:A3:A4;...         entries written to @mc before the first
 *                                    call (at most MC_FILL; the rest are 0)
 *
 * NR and every argument is a hex number of at most 16 digits, or a named
 * address with an optional hex offset: @name, @name+OFF, @name-OFF.
 * Fields left out are 0.  The names:
 *
 *   @buf  BUF_SIZE bytes of 'A'..'P', page aligned (console_write source)
 *   @evp  a page-aligned zeroed page (event_register)
 *   @mc   struct hv_multicall_entry[MC_SLOTS]
 *   @bad  BAD_UNMAPPED, past start.S's 4 GiB identity map
 *   @nc   BAD_NONCANONICAL, not a canonical address
 *   @end  the end of RAM, from the PVH memory map
 *   @si   the PVH start info: a page hv keeps for itself
 *
 * Numbers below HV_HYPERCALL_MAX go through the hypercall page; larger ones
 * have no stub and go through the bare trap.  Interrupts stay off: events
 * collect in the page and are never delivered.
 *
 * Output, after the calls' own console bytes: one line per call,
 * "r<i>=<result>" (decimal); after a multicall that returned 0, one line per
 * entry of its array, "r<i>.<j>=<result>"; then SUCCESS.  Each result line
 * starts a line of its own even when a call printed bytes without a final
 * newline.  A malformed command line is an
 * ERROR naming where.
 */
#include <stdbool.h>
#include <stddef.h>
#include "hv.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"

#define MAX_CALLS        64
#define MC_FILL          16                 /* entries mc= may give */
#define MC_SLOTS         (2 * HV_MULTICALL_MAX)  /* a full batch from any of the first MAX */
#define BUF_SIZE         (2 * HV_PAGE_SIZE)
#define BAD_UNMAPPED     0x0000000200000000ull
#define BAD_NONCANONICAL 0x0000800000000000ull

#define L16 "ABCDEFGHIJKLMNOP"
#define L64 L16 L16 L16 L16
#define L256 L64 L64 L64 L64
#define L1K L256 L256 L256 L256
#define L4K L1K L1K L1K L1K

/* Static contents, so the test's copy of the image holds the same bytes.
 * One byte longer than BUF_SIZE for the literal's NUL, which is not part of it. */
static char buf[BUF_SIZE + 1] __attribute__((aligned(HV_PAGE_SIZE))) = L4K L4K;
static uint8_t evp[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));
static struct hv_multicall_entry mc[MC_SLOTS] __attribute__((aligned(HV_PAGE_SIZE)));

struct call {
    uint64_t nr;
    uint64_t arg[5];
};

static struct call calls[MAX_CALLS];
static unsigned ncalls;
static bool at_line_start = true;     /* the console's last byte was '\n' (or none) */

/* ---- parsing ----------------------------------------------------------- */

static const char *cmd_start;

static __attribute__((noreturn)) void bad_cmdline(const char *at, const char *why)
{
    test_error("cmdline column %ld: %s", (long)(at - cmd_start), why);
}

static bool starts(const char *s, const char *prefix)
{
    while (*prefix && *s == *prefix) {
        s++;
        prefix++;
    }
    return *prefix == '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A hex number of 1..16 digits; *s moves past it. */
static uint64_t parse_hex(const char **s)
{
    const char *p = *s;
    uint64_t v = 0;
    unsigned n = 0;

    for (; hex_digit(*p) >= 0; p++, n++) {
        if (n == 16)
            bad_cmdline(p, "more than 16 hex digits");
        v = (v << 4) | (uint64_t)hex_digit(*p);
    }
    if (n == 0)
        bad_cmdline(p, "a hex number or @name expected");
    *s = p;
    return v;
}

/* The named addresses, in the order name_value() knows them. */
static const char *const names[] = { "buf", "evp", "mc", "bad", "nc", "end", "si" };

static uint64_t name_value(unsigned i)
{
    switch (i) {
    case 0: return (uintptr_t)buf;
    case 1: return (uintptr_t)evp;
    case 2: return (uintptr_t)mc;
    case 3: return BAD_UNMAPPED;
    case 4: return BAD_NONCANONICAL;
    case 5: return start_info_ram_end();
    default: return (uintptr_t)start_info();
    }
}

/* One field: hex, or @name[+-hex].  Names are matched whole. */
static uint64_t parse_field(const char **s)
{
    const char *p = *s;

    if (*p != '@')
        return parse_hex(s);
    p++;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *n = names[i];
        const char *q = p;

        while (*n && *q == *n) {
            n++;
            q++;
        }
        if (*n || (*q >= 'a' && *q <= 'z'))
            continue;
        uint64_t v = name_value(i);
        if (*q == '+' || *q == '-') {
            bool minus = *q == '-';
            q++;
            uint64_t off = parse_hex(&q);
            v = minus ? v - off : v + off;
        }
        *s = q;
        return v;
    }
    bad_cmdline(p, "unknown @name");
}

/* NR:A0:..:A4;NR:... up to a blank or the end; returns the count. */
static unsigned parse_list(const char **s, struct call *out, unsigned max)
{
    const char *p = *s;
    unsigned n = 0;

    while (*p && *p != ' ') {
        if (n == max)
            bad_cmdline(p, "too many entries");
        struct call *c = &out[n++];

        c->nr = parse_field(&p);
        for (unsigned a = 0; a < 5 && *p == ':'; a++) {
            p++;
            c->arg[a] = parse_field(&p);
        }
        if (*p == ';')
            p++;
        else if (*p && *p != ' ')
            bad_cmdline(p, "':', ';' or a blank expected");
    }
    *s = p;
    return n;
}

static void parse_cmdline(const char *s)
{
    static struct call fill[MC_FILL];

    cmd_start = s;
    while (*s) {
        if (*s == ' ') {
            s++;
        } else if (starts(s, "calls=")) {
            s += 6;
            ncalls = parse_list(&s, calls, MAX_CALLS);
        } else if (starts(s, "mc=")) {
            s += 3;
            unsigned n = parse_list(&s, fill, MC_FILL);
            for (unsigned i = 0; i < n; i++) {
                mc[i].op = fill[i].nr;
                for (unsigned a = 0; a < 5; a++)
                    mc[i].args[a] = fill[i].arg[a];
            }
        } else {
            bad_cmdline(s, "calls= or mc= expected");
        }
    }
}

/* ---- calling and reporting ---------------------------------------------- */

static long make_call(const struct call *c)
{
    if (c->nr < HV_HYPERCALL_MAX)
        return hv_hypercall5(c->nr, c->arg[0], c->arg[1], c->arg[2], c->arg[3], c->arg[4]);
    return hv_hypercall_raw5(c->nr, c->arg[0], c->arg[1], c->arg[2], c->arg[3], c->arg[4]);
}

/* hv printed bytes from `addr` (result = how many): remember whether they
 * ended a line.  hv accepted the range, so it is mapped RAM we can read. */
static void note_output(uint64_t op, uint64_t addr, int64_t result)
{
    if (op == HV_HC_CONSOLE_WRITE && result > 0)
        at_line_start = ((const volatile char *)(uintptr_t)addr)[result - 1] == '\n';
}

static void start_line(void)
{
    if (!at_line_start)
        printf("\n");
    at_line_start = true;
}

/* A multicall that returned 0 ran every entry of an array hv could read and
 * write: its entries are mapped RAM, results in place. */
static const struct hv_multicall_entry *ran_entries(const struct call *c, long result)
{
    if (c->nr != HV_HC_MULTICALL || result != 0)
        return NULL;
    return (const struct hv_multicall_entry *)(uintptr_t)c->arg[0];
}

/* Replay: each call, then its result line (and its entries' results). */
int main(void)
{
    if (!hv_hypercalls_ready())
        test_skip("not running under hv");
    parse_cmdline(start_info_cmdline());

    for (unsigned i = 0; i < ncalls; i++) {
        const struct call *c = &calls[i];
        long result = make_call(c);
        const volatile struct hv_multicall_entry *entries = ran_entries(c, result);

        note_output(c->nr, c->arg[0], result);
        for (uint64_t j = 0; entries && j < c->arg[1]; j++)
            note_output(entries[j].op, entries[j].args[0], entries[j].result);
        start_line();
        printf("r%u=%ld\n", i, result);
        for (uint64_t j = 0; entries && j < c->arg[1]; j++)
            printf("r%u.%lu=%ld\n", i, j, entries[j].result);
    }
    start_line();
    test_success();
}
