/*
 * smp-selftest - the SMP hypercalls' error paths, and that an error
 * changes nothing (run with --smp 2 or more).
 *
 * Each bad call gets its documented -HV_E* (hv/abi.h), and afterwards the
 * vCPU it named is exactly as before: still down after a failed up, still
 * up after a failed down.  Then the good paths: up, up twice, a vCPU's own
 * id, a down from another vCPU, up again, events bound to a vCPU landing
 * in that vCPU's block only.
 *
 * "crash=1" instead: vCPU 1 triple-faults while vCPU 0 spins; the
 * partition must stop as crashed (the host's test checks it stops alone).
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

#define VECTOR       0x40
#define BOUND_EVENT  5
#define UNMAPPED     0x100000000ull     /* beyond the library's identity map */

static volatile uint64_t seen_id = ~0ull, spins, upcalls_on[2];
static volatile int release;

static long up(unsigned id, const struct hv_vcpu_context *ctx)
{
    return hv_hypercall2(HV_HC_VCPU_UP, id, (uint64_t)ctx);
}

static void on_event(unsigned event)
{
    (void)event;
    upcalls_on[smp_cpu_id()]++;
}

static void report_id(unsigned id, void *arg)
{
    (void)id; (void)arg;
    seen_id = (uint64_t)hv_hypercall0(HV_HC_VCPU_ID);
}

static void report_id_and_wait(unsigned id, void *arg)
{
    report_id(id, arg);
    while (!__atomic_load_n(&release, __ATOMIC_ACQUIRE))
        cpu_relax();
}

static void triple_fault(unsigned id, void *arg)
{
    (void)id; (void)arg;
    static const struct desc_ptr none = { 0, 0 };
    asm volatile("lidt %0; int3" : : "m"(none));
}

static void spin_forever(unsigned id, void *arg)
{
    (void)id; (void)arg;
    for (;;)
        __atomic_add_fetch(&spins, 1, __ATOMIC_RELAXED);
}

/* vCPU 1 is down once an up of it stops saying -HV_EBUSY (its worker
 * parks it after the down). */
static void start_when_down(unsigned id, smp_fn fn)
{
    long r;
    while ((r = smp_start_cpu(id, fn, 0)) == -HV_EBUSY)
        hv_hypercall0(HV_HC_YIELD);
    GUEST_ASSERT_EQ(r, 0);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv");
    unsigned n = smp_init();
    if (n < 2)
        test_skip("needs 2 vCPUs (hv run --smp 2)");
    if (cmdline_uint("crash", 0)) {
        GUEST_ASSERT_EQ(smp_start_cpu(1, triple_fault, 0), 0);
        for (;;)
            hv_hypercall0(HV_HC_YIELD);
    }
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    struct hv_vcpu_context bad_cr3 = { .rip = 0x1000, .rsp = 0x2000, .cr3 = cr3 + 8 };

    GUEST_ASSERT_EQ(hv_hypercall0(HV_HC_VCPU_ID), 0);
    GUEST_ASSERT_EQ(hv_hypercall0(HV_HC_VCPU_COUNT), n);
    GUEST_ASSERT(hv_hypercall1(HV_HC_FEATURES, 0) & HV_FEATURE_SMP);

    /* Before the event page exists. */
    GUEST_ASSERT_EQ(smp_send_ipi(0, 1), -HV_EPERM);

    /* Up: a bad id, an unreadable context, a bad CR3, the caller itself. */
    GUEST_ASSERT_EQ(up(n, &bad_cr3), -HV_EINVAL);
    GUEST_ASSERT_EQ(up(1, (const struct hv_vcpu_context *)UNMAPPED), -HV_EFAULT);
    GUEST_ASSERT_EQ(up(1, &bad_cr3), -HV_EINVAL);
    GUEST_ASSERT_EQ(up(0, &bad_cr3), -HV_EINVAL);     /* the context is checked first */
    /* ... and vCPU 1 is still down: a down of it says so. */
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_VCPU_DOWN, 1), -HV_EPERM);

    /* Down: a bad id, the last vCPU up. */
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_VCPU_DOWN, n), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_VCPU_DOWN, 0), -HV_EBUSY);

    /* Events: bad vCPU or event; bindings. */
    GUEST_ASSERT_EQ(hv_events_init(VECTOR, on_event), 0);
    GUEST_ASSERT_EQ(smp_send_ipi(n, 1), -HV_EINVAL);
    GUEST_ASSERT_EQ(smp_send_ipi(0, HV_EVENTS_MAX), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_BIND_VCPU, HV_EVENT_TIMER, 1), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_BIND_VCPU, HV_EVENTS_MAX, 0), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_BIND_VCPU, BOUND_EVENT, n), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVENT_BIND_VCPU, BOUND_EVENT, 1), 0);
    /* vCPU 1 is down: the event waits in its block, not in vCPU 0's. */
    GUEST_ASSERT_EQ(hv_event_raise(BOUND_EVENT), 0);
    GUEST_ASSERT(hv_event_block(1)->pending[0] & (1ull << BOUND_EVENT));
    GUEST_ASSERT_EQ(hv_event_block(0)->pending[0] & (1ull << BOUND_EVENT), 0);
    hv_event_block(1)->pending[0] = 0;

    /* TLB flush: a mask beyond HV_VCPUS_MAX; the caller alone. */
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_TLB_FLUSH, 1ull << HV_VCPUS_MAX, HV_TLB_FLUSH_ALL), -HV_EINVAL);
    GUEST_ASSERT_EQ(smp_tlb_flush(1), 0);

    /* Up for real: it reports its own id and goes down by itself. */
    GUEST_ASSERT_EQ(smp_start_cpu(1, report_id_and_wait, 0), 0);
    GUEST_ASSERT_EQ(smp_start_cpu(1, report_id, 0), -HV_EBUSY);   /* up twice */
    while (seen_id == ~0ull)
        cpu_relax();
    GUEST_ASSERT_EQ(seen_id, 1);
    __atomic_store_n(&release, 1, __ATOMIC_RELEASE);              /* it returns: down */

    /* Up again once it is parked; then down from here while it spins. */
    start_when_down(1, spin_forever);
    while (__atomic_load_n(&spins, __ATOMIC_RELAXED) < 1000)
        cpu_relax();
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_VCPU_DOWN, 1), 0);
    GUEST_ASSERT_EQ(hv_hypercall1(HV_HC_VCPU_DOWN, 1), -HV_EPERM);   /* going down already */
    seen_id = ~0ull;
    start_when_down(1, report_id);                    /* it stopped: it can start again */
    uint64_t frozen = spins;
    while (seen_id == ~0ull)
        cpu_relax();
    GUEST_ASSERT_EQ(spins, frozen);                   /* the spinner never ran again */

    /* An IPI is an upcall on the vCPU it names. */
    cli();
    GUEST_ASSERT_EQ(smp_send_ipi(0, 1), 0);
    wait_for_interrupt();
    GUEST_ASSERT_EQ(upcalls_on[0], 1);
    printf("smp-selftest: cpus=%u\n", n);
    test_success();
}
