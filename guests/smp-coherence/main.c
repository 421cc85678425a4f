/*
 * smp-coherence - what two vCPUs sharing memory must see of each other:
 * code one writes and the other runs, and stores in order.
 *
 * Command line: "rounds=N" (default 500).  Each round, for two vCPUs:
 *   - cross-modifying code: one vCPU rewrites a small function (mov $k,
 *     %eax; ret) and publishes k; the other waits for k, serialises with
 *     CPUID (the SDM's cross-modifying-code protocol, Vol. 3A 10.1.3) and
 *     calls it: it must return k, not a copy translated in an earlier
 *     round.  The roles swap every round, so each vCPU has run the old
 *     code (on TCG: has a translation of it) when the other rewrites it;
 *   - store buffering (Dekker): x = 1; mfence; read y  against
 *     y = 1; mfence; read x -- never both 0;
 *   - message passing: data then flag (release); whoever sees the flag
 *     sees the data.
 *
 *     smp-coherence: rounds=500 smc=500 dekker=500 mp=500
 *     SUCCESS
 */
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "smp.h"
#include "test.h"
#include "virtio_cmdline.h"

static uint8_t code[64] __attribute__((aligned(64)));   /* written at run time, executed */
static volatile uint64_t published, x, y, data, flag;
static volatile uint64_t r[2], smc_ok[2], dekker_ok, mp_ok, failures;
static uint64_t rounds;
static struct smp_barrier round_start, round_end;

static void write_code(uint32_t k)
{
    code[0] = 0xb8;                             /* mov $k, %eax */
    __builtin_memcpy(&code[1], &k, 4);
    code[5] = 0xc3;                             /* ret */
}

static uint32_t run_code(void)
{
    uint32_t a = 0, b, c = 0, d;
    asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");   /* serialise */
    return ((uint32_t (*)(void))(uintptr_t)code)();
}

static void one_round(unsigned me, uint64_t k)
{
    unsigned writer = k % 2;
    smp_barrier_wait(&round_start, 2);
    /* Cross-modifying code. */
    if (me == writer) {
        write_code((uint32_t)k);
        __atomic_store_n(&published, k, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&published, __ATOMIC_ACQUIRE) != k)
            cpu_relax();
        if (run_code() == (uint32_t)k)
            smc_ok[me]++;
        else
            failures++;
    }
    /* Store buffering. */
    volatile uint64_t *mine = me ? &y : &x, *theirs = me ? &x : &y;
    *mine = 1;
    asm volatile("mfence" : : : "memory");
    r[me] = *theirs;
    /* Message passing: the writer sends, the other receives. */
    if (me == writer) {
        data = k;
        __atomic_store_n(&flag, k, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&flag, __ATOMIC_ACQUIRE) != k)
            cpu_relax();
        if (data == k)
            mp_ok++;
        else
            failures++;
    }
    smp_barrier_wait(&round_end, 2);
    if (me == 0) {
        if (r[0] || r[1])
            dekker_ok++;
        else
            failures++;
        x = y = 0;
    }
}

static void second(unsigned id, void *arg)
{
    (void)arg;
    for (uint64_t k = 1; k <= rounds; k++)
        one_round(id, k);
}

int main(void)
{
    if (!hv_detected())
        test_skip("needs hv");
    if (smp_init() < 2)
        test_skip("needs 2 vCPUs (hv run --smp 2)");
    rounds = cmdline_uint("rounds", 500);
    write_code(0);
    GUEST_ASSERT_EQ(run_code(), 0);             /* both vCPUs have run it before round 1 */
    GUEST_ASSERT_EQ(smp_start_cpu(1, second, 0), 0);
    for (uint64_t k = 1; k <= rounds; k++) {
        if (k == 1)
            smp_wait_started(1);
        one_round(0, k);
    }
    printf("smp-coherence: rounds=%lu smc=%lu dekker=%lu mp=%lu\n", rounds,
           smc_ok[0] + smc_ok[1], dekker_ok, mp_ok);
    GUEST_ASSERT_EQ(failures, 0);
    GUEST_ASSERT_EQ(smc_ok[0] + smc_ok[1], rounds);
    GUEST_ASSERT_EQ(dekker_ok, rounds);
    GUEST_ASSERT_EQ(mp_ok, rounds);
    test_success();
}
