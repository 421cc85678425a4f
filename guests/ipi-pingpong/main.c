/*
 * ipi-pingpong - two vCPUs bounce an event between them (HV_HC_VCPU_SEND_EVENT).
 *
 * Command line: "rounds=N" (default 1000).  vCPU 0 sends the IPI event to
 * vCPU 1 and waits (hlt) for the answer; vCPU 1 answers each one.  The
 * upcall runs on the vCPU the event was sent to, and counts there.
 *
 *     ipi-pingpong: rounds=1000 ns=T
 *     SUCCESS
 *
 * T (partition clock) over the rounds is what `tools/bench sched` turns
 * into the switch cost.  "null=M" first times M null hypercalls
 * (HV_HC_VERSION) on vCPU 0, the baseline it is set against:
 *
 *     ipi-pingpong: null=M ns=T
 */
#include "events.h"
#include "hv.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "smp.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define VECTOR    0x40
#define IPI_EVENT 1             /* below HV_EVTCHN_FIRST and not hv's own */

static volatile uint64_t got[2], wrong_cpu;
static uint64_t rounds;

static void on_event(unsigned event)
{
    if (event == IPI_EVENT)
        got[smp_cpu_id()]++;
    else
        wrong_cpu++;
}

/* Wait with IF=0 between the look and the hlt: hlt with IF=1 takes an
 * upcall that is already pending at once (abi.h, "Events"). */
static void wait_for(unsigned cpu, uint64_t count)
{
    while (got[cpu] < count)
        wait_for_interrupt();
}

static void answer(unsigned id, void *arg)
{
    (void)id; (void)arg;
    for (uint64_t i = 1; i <= rounds; i++) {
        wait_for(1, i);
        smp_send_ipi(0, IPI_EVENT);
    }
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv (HV_HC_VCPU_SEND_EVENT)");
    if (smp_init() < 2)
        test_skip("needs 2 vCPUs (hv run --smp 2)");
    rounds = cmdline_uint("rounds", 1000);
    uint64_t nulls = cmdline_uint("null", 0);
    if (nulls) {
        uint64_t t0 = hv_clock_read();
        for (uint64_t i = 0; i < nulls; i++)
            hv_hypercall0(HV_HC_VERSION);
        printf("ipi-pingpong: null=%lu ns=%lu\n", nulls, hv_clock_read() - t0);
    }
    GUEST_ASSERT_EQ(hv_events_init(VECTOR, on_event), 0);
    GUEST_ASSERT_EQ(smp_start_cpu(1, answer, 0), 0);
    smp_wait_started(1);
    uint64_t t0 = hv_clock_read();
    for (uint64_t i = 1; i <= rounds; i++) {
        GUEST_ASSERT_EQ(smp_send_ipi(1, IPI_EVENT), 0);
        wait_for(0, i);
    }
    uint64_t t1 = hv_clock_read();
    printf("ipi-pingpong: rounds=%lu ns=%lu\n", rounds, t1 - t0);
    GUEST_ASSERT_EQ(got[0], rounds);
    GUEST_ASSERT_EQ(wrong_cpu, 0);
    test_success();
}
