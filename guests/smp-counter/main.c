/*
 * smp-counter - every vCPU adds to shared words at once; the totals must
 * be exact.
 *
 * Command line: "n=N" (default 20000) additions per vCPU, each made twice:
 * once with `lock xadd` on one word, once as a plain load-add-store under
 * the library's spinlock.  The vCPUs start together (a barrier), so on KVM
 * they run in parallel and on TCG they are interleaved by the scheduler's
 * slices; a lost update on either engine makes a total short.
 *
 *     smp-counter: cpus=4 n=20000 xadd=80000 locked=80000
 *     SUCCESS
 */
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "smp.h"
#include "test.h"
#include "virtio_cmdline.h"

static uint64_t n;
static unsigned cpus;
static volatile uint64_t xadd_total, locked_total;
static spinlock_t lock;
static struct smp_barrier start, done;

static void add_all(unsigned id, void *arg)
{
    (void)id; (void)arg;
    smp_barrier_wait(&start, cpus);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t one = 1;
        asm volatile("lock xaddq %0, %1" : "+r"(one), "+m"(xadd_total) : : "memory");
        spin_lock(&lock);
        locked_total = locked_total + 1;        /* plain: only the lock makes it safe */
        spin_unlock(&lock);
    }
    smp_barrier_wait(&done, cpus);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv (HV_HC_VCPU_UP)");
    cpus = smp_init();
    n = cmdline_uint("n", 20000);
    for (unsigned id = 1; id < cpus; id++) {
        long r = smp_start_cpu(id, add_all, 0);
        if (r)
            test_error("vcpu_up(%u) = %ld", id, r);
    }
    add_all(0, 0);
    printf("smp-counter: cpus=%u n=%lu xadd=%lu locked=%lu\n", cpus, n, xadd_total, locked_total);
    GUEST_ASSERT_EQ(xadd_total, n * cpus);
    GUEST_ASSERT_EQ(locked_total, n * cpus);
    test_success();
}
