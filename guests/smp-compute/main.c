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
#include "smp.h"
#include "test.h"
#include "traps.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define EXIT_VECTOR 3           /* int3 */
#define SEL_TSS     0x28
#define PTE_U       0x004
#define SEED        0xcbf29ce484222325ull

uint64_t smp_hash_loop(uint64_t n, uint64_t h);
uint64_t smp_user_call(uint64_t n, uint64_t h, void *user_stack_top, uint64_t *rsp0_slot);
void smp_user_exit(void);

struct __attribute__((packed)) tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};

struct cpu_ring3 {
    uint64_t gdt[7] __attribute__((aligned(16)));
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
    static const uint64_t segs[5] = {
        0, 0x00af9a000000ffffull, 0x00cf92000000ffffull,   /* as start.S */
        0x00cff2000000ffffull, 0x00affa000000ffffull,       /* user data 0x18, code 0x20 */
    };
    for (int i = 0; i < 5; i++)
        r->gdt[i] = segs[i];
    uint64_t base = (uint64_t)&r->tss, limit = 103;
    r->tss.rsp[0] = (uint64_t)(r->kernel_stack + sizeof(r->kernel_stack) - 16);   /* slot above */
    r->tss.iomap_base = sizeof(r->tss);
    r->gdt[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 |
                (limit >> 16 & 0xf) << 48 | (base >> 24 & 0xff) << 56;
    r->gdt[6] = base >> 32;
    struct desc_ptr gdtr = { .limit = sizeof(r->gdt) - 1, .base = (uint64_t)r->gdt };
    asm volatile("lgdt %0" : : "m"(gdtr));
    asm volatile("ltr %w0" : : "r"((uint16_t)SEL_TSS));
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
    /* The user bit on the first 8 MiB (the image, its stacks), shared by all. */
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);
    uint64_t *pd = (uint64_t *)(pdpt[0] & ~0xfffull);
    pml4[0] |= PTE_U;
    pdpt[0] |= PTE_U;
    for (int i = 0; i < 4; i++)
        pd[i] |= PTE_U;
    asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
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
