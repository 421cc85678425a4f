/*
 * smp-compute - the guest half of `tools/bench sched`'s SMP scaling: every
 * vCPU runs the same ring-3 compute loop at once.
 *
 * Command line: "n=N" (default 1000000) iterations per vCPU.  All vCPUs
 * start the loop together (a barrier) and the boot vCPU times from the
 * barrier to the last one done, on the partition clock:
 *
 *     smp-compute: cpus=2 n=N ns=T hashes=0x...,0x...   (vCPU i seeds FNV-1's basis + i)
 *     SUCCESS
 *
 * Throughput is cpus * n / T; one vCPU's run gives the baseline.  Ring 3
 * because ring-0 code is emulated on this machine's KVM and ring 3 runs
 * natively.  Each CPU has its own GDT and TSS (a busy TSS cannot be loaded
 * twice) and its own ring-0 stack for the way back, whose top word keeps
 * the kernel stack pointer to return to (loop.S).
 */
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "ring3.h"
#include "smp.h"
#include "test.h"
#include "traps.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define EXIT_VECTOR 3           /* int3 */
#define SEED        0xcbf29ce484222325ull

uint64_t smp_user_call(uint64_t n, uint64_t h, void *user_stack_top, uint64_t *rsp0_slot);
void smp_user_exit(void);

struct cpu_ring3 {
    uint64_t gdt[RING3_GDT_ENTRIES] __attribute__((aligned(16)));
    struct tss64 tss __attribute__((aligned(16)));
    uint8_t kernel_stack[8192] __attribute__((aligned(16)));
    uint8_t user_stack[8192] __attribute__((aligned(16)));
};

static struct cpu_ring3 cpu_ring3[HV_VCPUS_MAX];
static uint64_t n, hashes[HV_VCPUS_MAX];
static unsigned cpus;
static struct smp_barrier start, done;

static void ring3_this_cpu(unsigned id)
{
    struct cpu_ring3 *r = &cpu_ring3[id];
    r->tss.rsp[0] = (uint64_t)(r->kernel_stack + sizeof(r->kernel_stack) - 16);   /* slot above */
    r->tss.iomap_base = sizeof(r->tss);                                         /* no bitmap */
    ring3_load(r->gdt, &r->tss, sizeof(r->tss));
}

static void compute(unsigned id, void *arg)
{
    (void)arg;
    ring3_this_cpu(id);
    smp_barrier_wait(&start, cpus);
    struct cpu_ring3 *r = &cpu_ring3[id];
    hashes[id] = smp_user_call(n, SEED + id, r->user_stack + sizeof(r->user_stack),
                               (uint64_t *)r->tss.rsp[0]);
    smp_barrier_wait(&done, cpus);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv");
    cpus = smp_init();
    n = cmdline_uint("n", 1000000);
    ring3_user_pages(4);    /* the first 8 MiB (the image, its stacks), shared by all */
    idt_set_gate(EXIT_VECTOR, smp_user_exit);
    idt_set_dpl(EXIT_VECTOR, 3);

    for (unsigned id = 1; id < cpus; id++)
        GUEST_ASSERT_EQ(smp_start_cpu(id, compute, 0), 0);
    for (unsigned id = 1; id < cpus; id++)
        smp_wait_started(id);
    uint64_t t0 = hv_clock_read();
    compute(0, 0);
    uint64_t t1 = hv_clock_read();
    /* The host checks the hashes (ring 0 is far too slow here on KVM). */
    printf("smp-compute: cpus=%u n=%lu ns=%lu hashes=", cpus, n, t1 - t0);
    for (unsigned id = 0; id < cpus; id++)
        printf("%s0x%lx", id ? "," : "", hashes[id]);
    printf("\n");
    test_success();
}
