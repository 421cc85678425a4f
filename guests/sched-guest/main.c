/*
 * sched-guest - the guest half of the scheduler benchmarks (tools/bench
 * sched) and tests: one kernel, three behaviours, chosen on the command line.
 *
 *   mode=spin   CPU-bound: count loop iterations into a word forever.  It
 *               prints "sched-guest: counter=0x<gpa>" first, so the parent
 *               can read guest progress from RAM (memory is identity-mapped).
 *   mode=idle   register events and block forever: an idle partition.
 *   mode=wake n=N period=P   (also the default: n=20, period=100000)
 *               N times: arm the timer P ns ahead, block, and when the
 *               upcall has run, note how late (partition clock) the guest
 *               got the CPU back.  Prints the median, the 99th percentile
 *               and the maximum, then SUCCESS:
 *
 *                   sched-guest: wake n=N p50 ns=A p99 ns=B max ns=C
 */
#include <stdbool.h>
#include <stdint.h>
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "x86.h"

#define EVENT_VECTOR 0xf0
#define MAX_SAMPLES  2048

static volatile uint64_t counter;
static volatile bool fired;
static uint64_t late[MAX_SAMPLES];

static void on_event(unsigned event)
{
    if (event == HV_EVENT_TIMER)
        fired = true;
}

/* The value of "key=N" in the command line, or fallback. */
static uint64_t arg(const char *key, uint64_t fallback)
{
    const char *s = start_info_cmdline();
    for (; *s; s++) {
        const char *k = key, *p = s;
        while (*k && *p == *k)
            k++, p++;
        if (*k == '\0' && *p == '=' && (s == start_info_cmdline() || s[-1] == ' ')) {
            uint64_t n = 0;
            for (p++; *p >= '0' && *p <= '9'; p++)
                n = n * 10 + (uint64_t)(*p - '0');
            return n;
        }
    }
    return fallback;
}

static bool mode_is(const char *name)
{
    const char *s = start_info_cmdline();
    for (; *s; s++) {
        const char *m = "mode=", *p = s;
        while (*m && *p == *m)
            m++, p++;
        if (*m)
            continue;
        const char *n = name;
        while (*n && *p == *n)
            n++, p++;
        return *n == '\0' && (*p == '\0' || *p == ' ');
    }
    return false;
}

static void sort(uint64_t *a, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && a[j - 1] > a[j]; j--) {
            uint64_t t = a[j];
            a[j] = a[j - 1];
            a[j - 1] = t;
        }
}

int main(void)
{
    if (!hv_hypercalls_ready())
        test_skip("not running under hv");
    if (mode_is("spin")) {
        printf("sched-guest: counter=0x%lx\n", (unsigned long)(uintptr_t)&counter);
        for (;;)
            counter++;
    }
    GUEST_ASSERT_EQ(hv_events_init(EVENT_VECTOR, on_event), 0);
    if (mode_is("idle")) {
        for (;;)
            hv_block();
    }
    if (!mode_is("wake") && start_info_cmdline()[0])
        test_error("mode=spin|idle|wake expected");
    unsigned n = (unsigned)arg("n", 20);
    uint64_t period = arg("period", 100000);
    if (n == 0 || n > MAX_SAMPLES)
        test_error("n must be 1..%u", MAX_SAMPLES);
    for (unsigned i = 0; i < n; i++) {
        fired = false;
        uint64_t deadline = hv_clock_read() + period;
        GUEST_ASSERT_EQ(hv_set_timer(deadline), 0);
        /* Check and block with interrupts off: an upcall between the check
         * and the block would consume the event and leave block nothing to
         * wait for.  block returns once an event is pending, IF or not; the
         * upcall is taken at the hypercall right after sti. */
        while (!fired) {
            hv_block();
            sti();
            hv_clock_read();
            cli();
        }
        uint64_t now = hv_clock_read();
        GUEST_ASSERT(now >= deadline);
        late[i] = now - deadline;
    }
    sort(late, n);
    printf("sched-guest: wake n=%u p50 ns=%lu p99 ns=%lu max ns=%lu\n", n, (unsigned long)late[n / 2],
           (unsigned long)late[(n * 99) / 100], (unsigned long)late[n - 1]);
    test_success();
}
