/*
 * smp-snap - an SMP guest whose result depends on every vCPU's state, for
 * the SMP snapshot, restore and migration tests (tests/test_snapshot_smp.py).
 *
 * Every vCPU runs ROUNDS rounds.  A round rewrites a 4 KiB stretch of the
 * vCPU's own 64 KiB buffer from its own generator and folds it into its
 * checksum (kept in registers), sleeps about PAUSE ns on its own timer
 * (an upcall on that vCPU), then passes a token around a ring: it writes
 * the next vCPU's token and sends it an IPI, and waits (hlt) for its own
 * token from the vCPU before it.  The wait sleeps until an interrupt, so
 * an IPI lost anywhere stops the ring for good.  vCPU 0 flushes every
 * vCPU's TLB each 8 rounds.  Half way, the last vCPU writes its state to
 * memory and goes down, and vCPU 0 brings it up again to carry on (a
 * snapshot can catch it down, or on its way down).  At the end the others
 * go down and vCPU 0 prints, for each vCPU,
 *
 *     smp-snap: cpu=I rounds=N token=N checksum=0x...
 *     SUCCESS
 *
 * None of it depends on how the vCPUs interleave, only on their
 * registers, memory, timers, IPIs and up/down state: a restore that loses
 * any of them changes a line, fails an assertion, or hangs.  Each vCPU's
 * partition clock must never run backwards.
 *
 * Command line: "rounds=N" (default 40), "pause=N" (ns, default 1000000),
 * "park=N" (ns the last vCPU stays down half way, default 0).
 */
#include "events.h"
#include "hypercall.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "smp.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define VECTOR        0x40
#define IPI_EVENT     1                 /* below HV_EVTCHN_FIRST and not hv's own */
#define BUFFER_WORDS  (1u << 13)        /* 64 KiB per vCPU */
#define STRETCH_WORDS 512               /* 4 KiB rewritten per round */

/* What a vCPU carries from round to round; in memory only while it is
 * down half way (the rest of the time it lives in registers and stack). */
struct carry {
    uint64_t rng, checksum, round, last_clock;
};

static uint64_t buffers[HV_VCPUS_MAX][BUFFER_WORDS];
static volatile uint64_t token[HV_VCPUS_MAX];      /* rounds the vCPU before has passed on */
static volatile int timer_fired[HV_VCPUS_MAX];
static volatile uint64_t wrong_event;
static struct carry parked_state;
static volatile int parked, done[HV_VCPUS_MAX];
static uint64_t results[HV_VCPUS_MAX];
static uint64_t rounds, pause, park;
static unsigned cpus;

static void on_event(unsigned event)
{
    if (event == HV_EVENT_TIMER)
        timer_fired[smp_cpu_id()] = 1;
    else if (event != IPI_EVENT)
        wrong_event++;
}

/* Interrupts are off between each look and the hlt (wait_for_interrupt),
 * so an upcall that sets what we wait for cannot slip in between. */
static void sleep_ns(unsigned me, uint64_t ns)
{
    timer_fired[me] = 0;
    GUEST_ASSERT_EQ(hv_set_timer(hv_clock_read() + ns), 0);
    while (!timer_fired[me])
        wait_for_interrupt();
}

static void pass_token(unsigned me, uint64_t round)
{
    unsigned next = (me + 1) % cpus;
    __atomic_store_n(&token[next], round + 1, __ATOMIC_RELEASE);
    GUEST_ASSERT_EQ(smp_send_ipi(next, IPI_EVENT), 0);
    while (__atomic_load_n(&token[me], __ATOMIC_ACQUIRE) < round + 1)
        wait_for_interrupt();
}

static void bring_back_last(void);

static void run_rounds(unsigned me, struct carry *c)
{
    uint64_t *buffer = buffers[me];
    for (; c->round < rounds; c->round++) {
        uint64_t *stretch = &buffer[(c->round * STRETCH_WORDS) % BUFFER_WORDS];
        for (unsigned i = 0; i < STRETCH_WORDS; i++) {
            c->rng = c->rng * 6364136223846793005ull + 1442695040888963407ull;
            stretch[i] ^= c->rng;
        }
        for (unsigned i = 0; i < STRETCH_WORDS; i++)
            c->checksum = (c->checksum ^ stretch[i]) * 0x100000001b3ull;
        uint64_t now = hv_clock_read();
        GUEST_ASSERT(now >= c->last_clock);     /* time never runs backwards */
        c->last_clock = now;
        if (pause)
            sleep_ns(me, pause);
        if (me == 0 && c->round % 8 == 7)
            GUEST_ASSERT_EQ(smp_tlb_flush((1ull << cpus) - 1), 0);
        if (me == 0 && c->round == rounds / 2 + 1)
            bring_back_last();
        pass_token(me, c->round);
        if (me == cpus - 1 && c->round == rounds / 2 && !parked) {
            c->round++;                         /* this round is done */
            parked_state = *c;
            __atomic_store_n(&parked, 1, __ATOMIC_RELEASE);
            return;                             /* smp_secondary_main takes it down */
        }
    }
    /* The whole buffer, once more: pages written before a restore count too. */
    for (unsigned i = 0; i < BUFFER_WORDS; i++)
        c->checksum = (c->checksum ^ buffer[i]) * 0x100000001b3ull;
    results[me] = c->checksum;
    __atomic_store_n(&done[me], 1, __ATOMIC_RELEASE);
}

static void cpu_main(unsigned id, void *arg)
{
    (void)arg;
    struct carry c = { .rng = 0x9e3779b97f4a7c15ull * (id + 1) };
    run_rounds(id, &c);
}

static void resume_last(unsigned id, void *arg)
{
    (void)arg;
    struct carry c = parked_state;
    run_rounds(id, &c);
}

/* The last vCPU parks half way; bring it up again where it stopped.  It
 * may still be on its way down (-HV_EBUSY). */
static void bring_back_last(void)
{
    while (!__atomic_load_n(&parked, __ATOMIC_ACQUIRE))
        hv_hypercall0(HV_HC_YIELD);
    if (park)
        sleep_ns(0, park);
    long r;
    while ((r = smp_start_cpu(cpus - 1, resume_last, 0)) == -HV_EBUSY)
        hv_hypercall0(HV_HC_YIELD);
    GUEST_ASSERT_EQ(r, 0);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv (HV_HC_VCPU_UP)");
    cpus = smp_init();
    if (cpus < 2)
        test_skip("needs 2 vCPUs or more (hv run --smp N)");
    rounds = cmdline_uint("rounds", 40);
    pause = cmdline_uint("pause", 1000000);
    park = cmdline_uint("park", 0);
    if (rounds < 4)
        test_error("rounds=%lu: at least 4", rounds);
    GUEST_ASSERT_EQ(hv_events_init(VECTOR, on_event), 0);
    for (unsigned id = 1; id < cpus; id++) {
        long r = smp_start_cpu(id, cpu_main, 0);
        if (r)
            test_error("vcpu_up(%u) = %ld", id, r);
    }
    cpu_main(0, 0);
    for (unsigned id = 1; id < cpus; id++)
        while (!__atomic_load_n(&done[id], __ATOMIC_ACQUIRE))
            hv_hypercall0(HV_HC_YIELD);
    for (unsigned id = 0; id < cpus; id++)
        printf("smp-snap: cpu=%u rounds=%lu token=%lu checksum=0x%lx\n", id, rounds,
               token[id], results[id]);
    GUEST_ASSERT_EQ(wrong_event, 0);
    test_success();
}
