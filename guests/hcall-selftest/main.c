/*
 * hcall-selftest - every hypercall in hv/abi.h, with its error paths.
 *
 * XTF style: a straight list of small tests, each asserting what abi.h
 * promises; the first broken promise ends the run with a FAILURE line
 * naming the file, line and values.  Not under hv: SKIP.
 */
#include <stdbool.h>
#include "events.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "x86.h"

/* Addresses hv must refuse to read: non-canonical, and beyond our 4 GiB map. */
#define BAD_NONCANONICAL 0x0000800000000000ull
#define BAD_UNMAPPED     0x0000000200000000ull

#define ABI_VERSION      ((HV_ABI_VERSION_MAJOR << 16) | HV_ABI_VERSION_MINOR)
#define EVENT_VECTOR     0xf0
#define MS               1000000ull    /* partition-clock nanoseconds */
#define ALL_FEATURES     (HV_FEATURE_EVENTS | HV_FEATURE_TIMER | \
                          HV_FEATURE_MULTICALL | HV_FEATURE_CLOCK | HV_FEATURE_CHANNELS)

long regs_probe(void *stub, const uint64_t in[14], uint64_t out[14]);   /* regs_probe.S */

/* ---- the event handler: remember which events arrived ---------------- */

static volatile uint64_t seen[HV_EVENT_WORDS];

static void on_event(unsigned event)
{
    seen[event / 64] |= 1ull << (event % 64);
}

static void forget_events(void)
{
    for (unsigned w = 0; w < HV_EVENT_WORDS; w++)
        seen[w] = 0;
}

static bool saw(unsigned event)
{
    return seen[event / 64] & (1ull << (event % 64));
}

static unsigned events_seen(void)
{
    unsigned n = 0;

    for (unsigned w = 0; w < HV_EVENT_WORDS; w++)
        for (uint64_t bits = seen[w]; bits != 0; bits &= bits - 1)
            n++;
    return n;
}

/* ---- discovery --------------------------------------------------------- */

static void test_cpuid(void)
{
    uint32_t r[4];

    cpuid(1, r);
    GUEST_ASSERT(r[2] & (1u << 31));                    /* "hypervisor present" */
    cpuid(HV_CPUID_BASE, r);
    GUEST_ASSERT(r[0] >= HV_CPUID_MAX_LEAF);
    cpuid(HV_CPUID_VERSION, r);
    GUEST_ASSERT_EQ(r[0], ABI_VERSION);
    /* The clock leaves a stock kernel reads instead of calibrating (both
     * engines): TSC = crystal * 2, base MHz from the same rate. */
    cpuid(0, r);
    GUEST_ASSERT(r[0] >= HV_CPUID_FREQ_LEAF);
    cpuid(HV_CPUID_TSC_LEAF, r);
    GUEST_ASSERT_EQ(r[0], 1);
    GUEST_ASSERT_EQ(r[1], 2);
    uint32_t crystal_mhz = r[2] / 1000000;
    GUEST_ASSERT(crystal_mhz > 0);
    cpuid(HV_CPUID_FREQ_LEAF, r);
    GUEST_ASSERT(r[0] >= 2 * crystal_mhz && r[0] <= 2 * crystal_mhz + 2);
    cpuid(HV_CPUID_TRANSPORT, r);
    GUEST_ASSERT_EQ(r[0], 1);                           /* one hypercall page */
    GUEST_ASSERT_EQ(r[1], HV_PORT_HYPERCALL);
    GUEST_ASSERT_EQ(r[2], HV_PORT_HYPERCALL_PAGE);
    GUEST_ASSERT_EQ(r[3], hv_hypercall1(HV_HC_FEATURES, 0));
}

static void test_version_features(void)
{
    GUEST_ASSERT_EQ(hv_hypercall0(HV_HC_VERSION), ABI_VERSION);
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_FEATURES, 0) & ALL_FEATURES, ALL_FEATURES);
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_FEATURES, 1), -HV_EINVAL);
}

/* Numbers without a hypercall: through the page, and through the bare trap. */
static void test_unknown_numbers(void)
{
    GUEST_ASSERT_EQ(hv_hypercall0(HV_HC_COUNT), -HV_ENOSYS);
    GUEST_ASSERT_EQ(hv_hypercall0(HV_HYPERCALL_MAX - 1), -HV_ENOSYS);
    GUEST_ASSERT_EQ(hv_hypercall_raw5(HV_HC_VERSION, 0, 0, 0, 0, 0), ABI_VERSION);
    GUEST_ASSERT_EQ(hv_hypercall_raw5(1000, 0, 0, 0, 0, 0), -HV_ENOSYS);
    /* the number is all of RAX, not just EAX or AL */
    GUEST_ASSERT_EQ(hv_hypercall_raw5((1ull << 32) | HV_HC_VERSION, 0, 0, 0, 0, 0), -HV_ENOSYS);
    GUEST_ASSERT_EQ(hv_hypercall_raw5(0x100 | HV_HC_VERSION, 0, 0, 0, 0, 0), -HV_ENOSYS);
}

/* ---- console ----------------------------------------------------------- */

static void test_console_write(void)
{
    static const char msg[] = "console_write: ok\n";
    uint64_t ram_end = start_info_ram_end();

    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, (uintptr_t)msg, sizeof(msg) - 1),
                    sizeof(msg) - 1);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, (uintptr_t)msg, 0), 0);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, (uintptr_t)msg, HV_CONSOLE_WRITE_MAX + 1),
                    -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, BAD_NONCANONICAL, 4), -HV_EFAULT);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, BAD_UNMAPPED, 4), -HV_EFAULT);
    /* starts in RAM, ends past it: the whole range is checked */
    GUEST_ASSERT(ram_end > 0 && ram_end < (4ull << 30));
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_CONSOLE_WRITE, ram_end - 4, 8), -HV_EFAULT);
}

/* ---- yield, clock ------------------------------------------------------ */

static void test_yield_clock(void)
{
    GUEST_ASSERT_EQ(hv_hypercall0(HV_HC_YIELD), 0);

    int64_t t0 = (int64_t)hv_clock_read();
    int64_t t1 = (int64_t)hv_clock_read();

    GUEST_ASSERT(t0 > 0);
    GUEST_ASSERT(t1 >= t0);
}

/*
 * ---- registers ---------------------------------------------------------
 * hv keeps every register but RAX, on success and on an error return.
 */
static void check_registers(unsigned nr, uint64_t a0, uint64_t a1, long want)
{
    static const char *const names[14] = {
        "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8",
        "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    };
    uint64_t in[14], out[14];

    for (unsigned i = 0; i < 14; i++)
        in[i] = 0x0123456789abcdefull ^ (0x1111111111111111ull * (i + 1));
    in[4] = a0;     /* RDI */
    in[3] = a1;     /* RSI */

    GUEST_ASSERT_EQ(regs_probe(hv_stub(nr), in, out), want);
    for (unsigned i = 0; i < 14; i++)
        if (out[i] != in[i])
            test_failure("hypercall %u changed %s: %lx -> %lx", nr, names[i], in[i], out[i]);
}

static void test_registers_preserved(void)
{
    static const char msg[] = "x";

    check_registers(HV_HC_VERSION, 0, 0, ABI_VERSION);
    check_registers(HV_HC_CONSOLE_WRITE, (uintptr_t)msg, 0, 0);
    check_registers(HV_HC_CONSOLE_WRITE, BAD_UNMAPPED, 4, -HV_EFAULT);
    check_registers(HV_HC_COUNT, 0, 0, -HV_ENOSYS);
}

/* ---- events ------------------------------------------------------------ */

static void test_events_unregistered(void)
{
    GUEST_ASSERT_EQ(hv_event_raise(1), -HV_EPERM);
    GUEST_ASSERT_EQ(hv_block(), -HV_EPERM);     /* no page, no timer: forever */
}

static void test_event_register(void)
{
    uint64_t page = (uintptr_t)hv_event_page();
    uint64_t beyond_ram = (start_info_ram_end() + HV_PAGE_SIZE - 1) & ~(uint64_t)(HV_PAGE_SIZE - 1);

    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_REGISTER, page, 5), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_REGISTER, page, HV_VECTOR_MIN - 1), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_REGISTER, page, 256), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_REGISTER, page + 8, EVENT_VECTOR), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_REGISTER, beyond_ram, EVENT_VECTOR), -HV_EFAULT);
    GUEST_ASSERT_EQ(hv_events_init(EVENT_VECTOR, on_event), 0);
}

/* With IF=1 the upcall comes as soon as the raise returns. */
static void test_event_raise(void)
{
    GUEST_ASSERT_EQ(hv_event_raise(HV_EVENTS_MAX), -HV_EINVAL);

    forget_events();
    sti();
    GUEST_ASSERT_EQ(hv_event_raise(5), 0);
    GUEST_ASSERT_EQ(hv_event_raise(HV_EVENTS_MAX - 1), 0);
    cli();
    GUEST_ASSERT(saw(5));
    GUEST_ASSERT(saw(HV_EVENTS_MAX - 1));
    GUEST_ASSERT_EQ(events_seen(), 2);
}

/* A masked event is left pending without an upcall. */
static void test_event_mask(void)
{
    struct hv_event_page *ep = hv_event_page();

    forget_events();
    ep->masked[0] = 1ull << 6;
    sti();
    GUEST_ASSERT_EQ(hv_event_raise(6), 0);
    cli();
    GUEST_ASSERT_EQ(events_seen(), 0);
    GUEST_ASSERT_EQ(ep->upcall_pending, 0);
    GUEST_ASSERT_EQ(__atomic_exchange_n(&ep->pending[0], 0, __ATOMIC_SEQ_CST), 1ull << 6);
    ep->masked[0] = 0;
}

/*
 * Sleep until the timer fires.  BLOCK with IF=0, then STI; HLT to take the
 * upcall, is the race-free pattern: BLOCK looks at the pending bits, not IF.
 */
static void test_timer(void)
{
    uint64_t deadline = hv_clock_read() + 1 * MS;

    forget_events();
    GUEST_ASSERT_EQ(hv_set_timer(deadline), 0);
    GUEST_ASSERT_EQ(hv_block(), 0);
    GUEST_ASSERT(hv_clock_read() >= deadline);
    wait_for_interrupt();
    GUEST_ASSERT(saw(HV_EVENT_TIMER));

    /* a deadline in the past fires at once */
    forget_events();
    GUEST_ASSERT_EQ(hv_set_timer(1), 0);
    GUEST_ASSERT_EQ(hv_block(), 0);
    wait_for_interrupt();
    GUEST_ASSERT(saw(HV_EVENT_TIMER));
}

/* A cancelled timer stays silent, even well past its deadline. */
static void test_timer_cancel(void)
{
    uint64_t deadline = hv_clock_read() + 1 * MS;

    forget_events();
    GUEST_ASSERT_EQ(hv_set_timer(deadline), 0);
    GUEST_ASSERT_EQ(hv_set_timer(0), 0);
    while (hv_clock_read() < deadline + 2 * MS)
        hv_hypercall0(HV_HC_YIELD);
    GUEST_ASSERT_EQ(hv_event_page()->pending[0], 0);

    GUEST_ASSERT_EQ(hv_event_raise(9), 0);
    GUEST_ASSERT_EQ(hv_block(), 0);
    wait_for_interrupt();
    GUEST_ASSERT(saw(9));
    GUEST_ASSERT(!saw(HV_EVENT_TIMER));
    GUEST_ASSERT_EQ(events_seen(), 1);
}

/* BLOCK with an event already pending returns at once, not at the timer. */
static void test_block_pending(void)
{
    uint64_t safety = hv_clock_read() + 1000 * MS;

    forget_events();
    GUEST_ASSERT_EQ(hv_set_timer(safety), 0);   /* so a broken BLOCK cannot hang */
    GUEST_ASSERT_EQ(hv_event_raise(7), 0);
    GUEST_ASSERT_EQ(hv_block(), 0);
    GUEST_ASSERT(hv_clock_read() < safety);
    GUEST_ASSERT_EQ(hv_set_timer(0), 0);
    wait_for_interrupt();
    GUEST_ASSERT(saw(7));
    GUEST_ASSERT(!saw(HV_EVENT_TIMER));
}

/* ---- multicall --------------------------------------------------------- */

static void test_multicall(void)
{
    static const char msg[] = "multicall: ok\n";
    static struct hv_multicall_entry calls[5];
    static const long want[5] = {
        ABI_VERSION,
        sizeof(msg) - 1,
        -HV_ENOSYS,
        -HV_EOPNOTSUPP,     /* no multicall inside a multicall */
        -HV_EFAULT,
    };

    calls[0] = (struct hv_multicall_entry){ .op = HV_HC_VERSION };
    calls[1] = (struct hv_multicall_entry){ .op = HV_HC_CONSOLE_WRITE,
                                            .args = { (uintptr_t)msg, sizeof(msg) - 1 } };
    calls[2] = (struct hv_multicall_entry){ .op = HV_HC_COUNT };
    calls[3] = (struct hv_multicall_entry){ .op = HV_HC_MULTICALL,
                                            .args = { (uintptr_t)calls, 1 } };
    calls[4] = (struct hv_multicall_entry){ .op = HV_HC_CONSOLE_WRITE,
                                            .args = { BAD_UNMAPPED, 4 } };
    for (unsigned i = 0; i < 5; i++)
        calls[i].result = 0x5a5a5a5a;       /* hv must overwrite every one */

    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_MULTICALL, (uintptr_t)calls, 5), 0);
    for (unsigned i = 0; i < 5; i++)
        GUEST_ASSERT_EQ(calls[i].result, want[i]);

    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_MULTICALL, (uintptr_t)calls, HV_MULTICALL_MAX + 1),
                    -HV_E2BIG);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_MULTICALL, BAD_UNMAPPED, 1), -HV_EFAULT);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_MULTICALL, BAD_NONCANONICAL, 1), -HV_EFAULT);
}

/* ---- shutdown: bad arguments are refused and the guest runs on --------- */

static void test_shutdown_refused(void)
{
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_SHUTDOWN, 7, 0), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_SHUTDOWN, HV_SHUTDOWN_POWEROFF, 256), -HV_EINVAL);
}

/* T:390 The self-test: the hv ABI, one promise at a time. */
int main(void)
{
    if (!hv_detected())
        test_skip("not running under hv");
    if (!hv_hypercalls_ready())
        test_error("hv found, but the hypercall page holds no stubs");

    test_registers_preserved();     /* first: the wrappers below rely on it */
    test_cpuid();
    test_version_features();
    test_unknown_numbers();
    test_console_write();
    test_yield_clock();
    test_events_unregistered();
    test_event_register();
    test_event_raise();
    test_event_mask();
    test_timer();
    test_timer_cancel();
    test_block_pending();
    test_multicall();
    test_shutdown_refused();
    test_success();
}
