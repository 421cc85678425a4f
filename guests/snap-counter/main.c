/*
 * snap-counter - a guest whose result depends on every byte of its state,
 * for snapshot, restore and migration tests (tests/test_snapshot.py).
 *
 * It runs ROUNDS rounds.  Each round rewrites a stretch of a 256 KiB buffer
 * from a pseudo-random generator, folds the whole stretch into a running
 * checksum, bumps a counter, and sleeps for about PAUSE ns of partition
 * clock (timer event + block), so a run lasts long enough, on either
 * engine, for a test to save it mid-way.  Registers, the stack, the buffer,
 * the timer and the clock all feed the result: a restore that loses any of
 * them changes the last line or fails an assertion.  The partition clock
 * must never run backwards, even across a restore.
 *
 *     snap-counter: rounds=N counter=N checksum=0x...
 *     SUCCESS
 *
 * Command line: "rounds=N" (default 100), "pause=N" (ns, default 1000000),
 * "ports=1": first two writes to a port the parent answers, in one block
 * (on TCG the second waits in the engine's queue of port writes).
 */
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "x86.h"

#define EVENT_VECTOR   0xf0
#define BUFFER_BYTES   (1u << 18)
#define STRETCH_WORDS  512              /* 4 KiB rewritten per round */

static uint64_t buffer[BUFFER_BYTES / 8];
static void on_event(unsigned event)
{
    (void)event;                /* nothing unmasked arrives */
}

/* "key=N" anywhere in the command line; else fallback. */
static uint64_t cmdline_number(const char *s, const char *key, uint64_t fallback)
{
    for (; *s; s++) {
        const char *k = key, *p = s;
        while (*k && *p == *k) {
            k++;
            p++;
        }
        if (!*k && *p == '=') {
            uint64_t n = 0;
            for (p++; *p >= '0' && *p <= '9'; p++)
                n = n * 10 + (uint64_t)(*p - '0');
            return n;
        }
    }
    return fallback;
}

/* Sleep until the timer fires, by polling: the timer event is masked, so
 * it never becomes an upcall, and block returns on any pending event,
 * masked or not.  No interrupt can fall between the check and the block
 * (an upcall consuming the event there would leave the block waiting for
 * nothing), and the guest's result does not depend on interrupt delivery
 * at all -- only on its memory, registers, timer and clock. */
static void sleep_ns(uint64_t ns)
{
    struct hv_event_page *page = hv_event_page();
    const uint64_t timer = 1ull << HV_EVENT_TIMER;
    GUEST_ASSERT_EQ(hv_set_timer(hv_clock_read() + ns), 0);
    while (!(__atomic_load_n(&page->pending[0], __ATOMIC_SEQ_CST) & timer))
        hv_block();
    __atomic_fetch_and(&page->pending[0], ~timer, __ATOMIC_SEQ_CST);
}

int main(void)
{
    if (!hv_hypercalls_ready())
        test_skip("not running under hv");
    GUEST_ASSERT_EQ(hv_events_init(EVENT_VECTOR, on_event), 0);
    hv_event_page()->masked[0] |= 1ull << HV_EVENT_TIMER;
    const char *cmdline = start_info_cmdline();
    uint64_t rounds = cmdline_number(cmdline, "rounds", 100);
    uint64_t pause = cmdline_number(cmdline, "pause", 1000000);
    if (cmdline_number(cmdline, "ports", 0))
        asm volatile("outb %%al, $0x80\n\toutb %%al, $0x80" : : "a"(0));

    uint64_t rng = 0x9e3779b97f4a7c15ull, checksum = 0, counter = 0, last_clock = 0;
    sti();
    for (uint64_t round = 0; round < rounds; round++) {
        uint64_t *stretch = &buffer[(round * STRETCH_WORDS) % (BUFFER_BYTES / 8)];
        for (unsigned i = 0; i < STRETCH_WORDS; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            stretch[i] ^= rng;
        }
        for (unsigned i = 0; i < STRETCH_WORDS; i++)
            checksum = (checksum ^ stretch[i]) * 0x100000001b3ull;
        counter++;
        uint64_t now = hv_clock_read();
        GUEST_ASSERT(now >= last_clock);    /* time never runs backwards */
        last_clock = now;
        if (pause)
            sleep_ns(pause);
    }
    cli();
    /* The whole buffer, once more: pages written before a restore count too. */
    for (unsigned i = 0; i < BUFFER_BYTES / 8; i++)
        checksum = (checksum ^ buffer[i]) * 0x100000001b3ull;
    printf("snap-counter: rounds=%lu counter=%lu checksum=0x%lx\n",
           (unsigned long)rounds, (unsigned long)counter, (unsigned long)checksum);
    test_success();
}
