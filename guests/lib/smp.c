/* smp.c - secondary CPUs, per-CPU data, spinlocks, IPIs, a barrier (smp.h). */
#include "smp.h"
#include "hypercall.h"
#include "test.h"
#include "traps.h"

#define MSR_GS_BASE   0xc0000101
#define SMP_STACK     16384
#define SPINS_BEFORE_YIELD 4096

struct smp_cpu smp_cpus[HV_VCPUS_MAX];
int smp_active;
static unsigned cpu_count = 1;
static uint8_t stacks[HV_VCPUS_MAX][SMP_STACK] __attribute__((aligned(16)));

void smp_secondary_entry(void);                 /* smp_entry.S */
void smp_secondary_main(struct smp_cpu *c);     /* called from there only */

/* GS holds the null selector, so an IRETQ to ring 3 leaves it alone (it
 * nulls a ring-0 data selector, and QEMU its base too); in 64-bit mode the
 * base comes from the MSR whatever the selector. */
static void set_gs_base(struct smp_cpu *c)
{
    uint64_t v = (uint64_t)c;
    asm volatile("mov %0, %%gs" : : "r"(0) : "memory");
    asm volatile("wrmsr" : : "c"(MSR_GS_BASE), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

unsigned smp_init(void)
{
    struct smp_cpu *c = &smp_cpus[0];
    c->self = c;
    c->id = 0;
    c->started = 1;
    set_gs_base(c);
    smp_active = 1;
    long n = hv_hypercall0(HV_HC_VCPU_COUNT);
    cpu_count = n > 0 ? (unsigned)n : 1;
    return cpu_count;
}

unsigned smp_cpu_count(void)
{
    return cpu_count;
}

/* T:397 A secondary CPU's context: the library's entry, its own stack,
 * the boot CPU's page tables, and its struct smp_cpu in RDI. */
long smp_start_cpu(unsigned id, smp_fn fn, void *arg)
{
    if (id >= HV_VCPUS_MAX)
        return -HV_EINVAL;
    struct smp_cpu *c = &smp_cpus[id];
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    c->self = c;
    c->id = id;
    c->fn = fn;
    c->arg = arg;
    __atomic_store_n(&c->started, 0, __ATOMIC_RELEASE);
    struct hv_vcpu_context ctx = {
        .rip = (uint64_t)smp_secondary_entry,
        .rsp = (uint64_t)(stacks[id] + SMP_STACK),
        .cr3 = cr3,
        .arg = (uint64_t)c,
    };
    return hv_hypercall2(HV_HC_VCPU_UP, id, (uint64_t)&ctx);
}

void smp_secondary_main(struct smp_cpu *c)
{
    traps_load();
    set_gs_base(c);
    __atomic_store_n(&c->started, 1, __ATOMIC_RELEASE);
    c->fn(c->id, c->arg);
    long r = smp_cpu_down();
    test_error("vCPU %u: vcpu_down = %ld (the boot CPU went down first?)", c->id, r);
}

void smp_wait_started(unsigned id)
{
    while (!__atomic_load_n(&smp_cpus[id].started, __ATOMIC_ACQUIRE))
        cpu_relax();
}

long smp_cpu_down(void)
{
    return hv_hypercall1(HV_HC_VCPU_DOWN, smp_cpu_id());
}

long smp_send_ipi(unsigned cpu, unsigned event)
{
    return hv_hypercall2(HV_HC_VCPU_SEND_EVENT, cpu, event);
}

long smp_tlb_flush(uint64_t mask)
{
    return hv_hypercall2(HV_HC_TLB_FLUSH, mask, HV_TLB_FLUSH_ALL);
}

void spin_lock(spinlock_t *l)
{
    unsigned spins = 0;
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED)) {
            cpu_relax();
            if (++spins % SPINS_BEFORE_YIELD == 0)
                hv_hypercall0(HV_HC_YIELD);
        }
    }
}

/* Sense by generation: the last to arrive resets the count and moves the
 * generation on, which lets everyone else out. */
void smp_barrier_wait(struct smp_barrier *b, unsigned n)
{
    uint32_t gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&b->generation, 1, __ATOMIC_RELEASE);
        return;
    }
    unsigned spins = 0;
    while (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == gen) {
        cpu_relax();
        if (++spins % SPINS_BEFORE_YIELD == 0)
            hv_hypercall0(HV_HC_YIELD);
    }
}
