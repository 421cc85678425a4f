/*
 * timer-spin - the timer interrupts a guest that spins without a single exit.
 *
 * Registers the event page, arms the one-shot timer DELTA ns ahead, enables
 * interrupts and spins on a flag that only the event handler sets.  Between
 * the STI and the upcall there is no hypercall and no port I/O, so the only
 * way out of the loop is hv stopping the guest at its deadline and
 * injecting the event vector in the middle of the loop.  On deterministic
 * TCG the deadline is an instruction count, so the loop is cut at the same
 * instruction every run and the spin count repeats exactly
 * (tests/test_engines.py):
 *
 *     timer-spin: spins=N
 *     SUCCESS
 *
 * Command line: "delta=N" (decimal ns of partition clock, default 200000).
 */
#include <stdbool.h>
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "x86.h"

#define EVENT_VECTOR    0xf0
#define DEFAULT_DELTA   200000ull
#define SECOND          1000000000ull   /* partition-clock nanoseconds */
#define CHECK_EVERY     (1ul << 24)     /* spins between watchdog clock reads */

static volatile bool fired;

static void on_event(unsigned event)
{
    if (event == HV_EVENT_TIMER)
        fired = true;
}

/* "delta=N" anywhere in the command line; else the default. */
static uint64_t cmdline_delta(const char *s)
{
    for (; *s; s++) {
        if (s[0] == 'd' && s[1] == 'e' && s[2] == 'l' && s[3] == 't' && s[4] == 'a' &&
            s[5] == '=') {
            uint64_t n = 0;
            for (s += 6; *s >= '0' && *s <= '9'; s++)
                n = n * 10 + (uint64_t)(*s - '0');
            return n;
        }
    }
    return DEFAULT_DELTA;
}

int main(void)
{
    if (!hv_hypercalls_ready())
        test_skip("not running under hv");
    GUEST_ASSERT_EQ(hv_events_init(EVENT_VECTOR, on_event), 0);

    uint64_t deadline = hv_clock_read() + cmdline_delta(start_info_cmdline());
    unsigned long spins = 0;

    GUEST_ASSERT_EQ(hv_set_timer(deadline), 0);
    sti();
    while (!fired) {
        /* A watchdog far past the deadline, so a lost timer fails instead of
         * hanging; on a working hv the loop never gets here. */
        if (++spins % CHECK_EVERY == 0 && hv_clock_read() > deadline + SECOND)
            test_failure("the timer did not fire within 1 s of its deadline");
    }
    cli();
    GUEST_ASSERT(hv_clock_read() >= deadline);
    printf("timer-spin: spins=%lu\n", spins);
    test_success();
}
