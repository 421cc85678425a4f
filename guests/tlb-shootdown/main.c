/*
 * tlb-shootdown - one vCPU unmaps a page another has been reading; after
 * HV_HC_TLB_FLUSH the other's next read faults.
 *
 * Both vCPUs share page tables.  WINDOW (4 GiB, beyond the library's
 * identity map) is mapped here with a 4 KiB page onto `target`.  vCPU 1
 * reads it, so its TLB holds the translation, and waits; vCPU 0
 * clears the entry (no local invlpg on vCPU 1's behalf), flushes vCPU 1
 * with the hypercall and lets it look again: the read must raise #PF with
 * CR2 = WINDOW.  A TLB that kept the old translation would read the page.
 *
 *     tlb-shootdown: before=0x5eed fault=14 cr2=0x100000000
 *     SUCCESS
 *
 * "flush=0" leaves the hypercall out and reports what the read saw
 * (fault=none: the stale translation was used), then SUCCESS: the host's
 * test shows that on TCG the flush is what makes the fault happen.
 */
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "probe.h"
#include "smp.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define WINDOW 0x100000000ull   /* PDPT entry 4: unmapped by the library */
#define MAGIC  0x5eed

static uint64_t pd[512] __attribute__((aligned(4096)));
static uint64_t pt[512] __attribute__((aligned(4096)));
static volatile uint64_t target[512] __attribute__((aligned(4096)));
static volatile int step;               /* 1: vCPU 1 has read; 2: flushed; 3: probed */
static volatile uint64_t before;
static struct probe result;

static void read_window(void)
{
    before = *(volatile uint64_t *)WINDOW;
}

static void reader(unsigned id, void *arg)
{
    (void)id; (void)arg;
    read_window();                      /* the translation is cached now */
    __atomic_store_n(&step, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&step, __ATOMIC_ACQUIRE) != 2)
        cpu_relax();                    /* not reading: vCPU 0 unmaps it now */
    probe_ring0(read_window, &result);
    __atomic_store_n(&step, 3, __ATOMIC_RELEASE);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv (HV_HC_TLB_FLUSH)");
    if (smp_init() < 2)
        test_skip("needs 2 vCPUs (hv run --smp 2)");
    int flush = cmdline_uint("flush", 1) != 0;
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);
    target[0] = MAGIC;
    pt[0] = (uint64_t)target | PTE_P | PTE_W;
    pd[0] = (uint64_t)pt | PTE_P | PTE_W;
    pdpt[WINDOW >> 30] = (uint64_t)pd | PTE_P | PTE_W;

    GUEST_ASSERT_EQ(smp_start_cpu(1, reader, 0), 0);
    while (__atomic_load_n(&step, __ATOMIC_ACQUIRE) != 1)
        cpu_relax();
    GUEST_ASSERT_EQ(before, MAGIC);
    __atomic_store_n(&pt[0], 0, __ATOMIC_SEQ_CST);     /* unmapped */
    if (flush)
        GUEST_ASSERT_EQ(smp_tlb_flush(1u << 1), 0);
    __atomic_store_n(&step, 2, __ATOMIC_RELEASE);
    while (__atomic_load_n(&step, __ATOMIC_ACQUIRE) != 3)
        cpu_relax();
    if (result.vector == PROBE_NO_FAULT)
        printf("tlb-shootdown: before=0x%lx fault=none read=0x%lx\n", before, before);
    else
        printf("tlb-shootdown: before=0x%lx fault=%lu cr2=0x%lx\n", before, result.vector, result.cr2);
    if (!flush)
        test_success();                 /* flush=0: an observation, for the host's test */
    GUEST_ASSERT_EQ(result.vector, X86_PF);
    GUEST_ASSERT_EQ(result.cr2, WINDOW);
    GUEST_ASSERT_EQ(result.error & PF_P, 0);            /* not present */
    test_success();
}
