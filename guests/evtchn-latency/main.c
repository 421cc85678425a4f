/*
 * evtchn-latency - event-channel round trips between two partitions
 * (tools/bench channel): side a sends on its port; side b's upcall handler
 * sends back at once; side a's handler takes the time.  Both sides sleep
 * in HV_HC_BLOCK between events, as a driver waiting for its peer does.
 *
 *   channel=NAME,PEER_ID,SIDE,GREF   as `hv up` gives it (GREF unused)
 *   n=N      timed round trips (default 1000, at most MAX_SAMPLES)
 *   warm=W   untimed ones first (default 20)
 *
 * Rendezvous without shared memory: a partition's first port is
 * HV_EVTCHN_FIRST (the table hands out the lowest free one), so side b
 * binds (a, HV_EVTCHN_FIRST), retrying until a has offered it.
 *
 * Side a prints, in guest TSC cycles and in ns (the TSC rate measured
 * against the partition clock over the run), then SUCCESS:
 *   evtchn-latency: n=N rtt p50 ns=.. p99 ns=.. max ns=.. null ns=..
 * null: one null hypercall (partition_id) round trip, same guest, same run.
 * Side b ends with SUCCESS once a has closed its end.
 */
#include "channels.h"
#include "events.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define VECTOR          0xf0
#define MAX_SAMPLES     4096
#define NULL_CALLS      1000
#define BIND_TRIES      100000

static uint32_t port;
static volatile bool got, peer_gone;
static volatile uint64_t got_tsc;
static bool side_b;
static uint64_t rtt[MAX_SAMPLES];

/* T:880 The handler: side b answers from inside it; side a notes the time. */
static void on_event(unsigned event)
{
    if (event != port)
        return;
    if (side_b) {
        if (evtchn_send(port) == -HV_ENOTCONN)
            peer_gone = true;          /* a closed its end (its close raised this) */
    } else {
        got_tsc = rdtsc();
        got = true;
    }
}

/* Sleep until the handler has run (see sched-guest: check and block with
 * interrupts off, take the upcall at the hypercall after sti). */
static void wait_event(volatile bool *flag)
{
    while (!*flag) {
        hv_block();
        sti();
        hv_hypercall0(HV_HC_PARTITION_ID);
        cli();
    }
}


static void sort(uint64_t *x, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j && x[j - 1] > x[j]; j--) {
            uint64_t t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
}

__attribute__((noreturn)) static void run_b(uint32_t peer)
{
    long r = -HV_EINVAL;
    for (unsigned i = 0; i < BIND_TRIES && r < 0; i++) {
        r = evtchn_bind_interdomain(peer, HV_EVTCHN_FIRST);
        if (r < 0 && r != -HV_EINVAL && r != -HV_ENOENT)
            test_failure("evtchn_bind_interdomain: %ld", r);
        if (r < 0)
            hv_hypercall0(HV_HC_YIELD);
    }
    if (r < 0)
        test_error("side a never offered port %u", HV_EVTCHN_FIRST);
    port = (uint32_t)r;
    GUEST_ASSERT_EQ(evtchn_send(port), 0);         /* "here": a waits for it */
    wait_event(&peer_gone);
    test_success();
}

__attribute__((noreturn)) static void run_a(uint32_t peer, unsigned n, unsigned warm)
{
    long r = evtchn_alloc_unbound(peer);
    GUEST_ASSERT_EQ(r, HV_EVTCHN_FIRST);
    port = (uint32_t)r;
    wait_event(&got);                              /* b has bound and said so */
    uint64_t c0 = hv_clock_read(), t0 = rdtsc();
    for (unsigned i = 0; i < NULL_CALLS; i++)
        hv_hypercall0(HV_HC_PARTITION_ID);
    uint64_t null_tsc = (rdtsc() - t0) / NULL_CALLS;
    for (unsigned i = 0; i < warm + n; i++) {
        got = false;
        uint64_t sent = rdtsc();
        GUEST_ASSERT_EQ(evtchn_send(port), 0);
        wait_event(&got);
        if (i >= warm)
            rtt[i - warm] = got_tsc - sent;
    }
    uint64_t ns = hv_clock_read() - c0, tsc = rdtsc() - t0;
    GUEST_ASSERT_EQ(evtchn_close(port), 0);
    sort(rtt, n);
#define NS(c) ((c) * ns / tsc)
    printf("evtchn-latency: n=%u rtt p50 ns=%lu p99 ns=%lu max ns=%lu null ns=%lu\n", n,
           NS(rtt[n / 2]), NS(rtt[(n * 99) / 100]), NS(rtt[n - 1]), NS(null_tsc));
    test_success();
}

int main(void)
{
    uint32_t peer;
    if (!cmdline_channel(&peer, &side_b, NULL))
        test_error("evtchn-latency: no channel=NAME,PEER,SIDE,GREF on the command line");
    unsigned n = (unsigned)cmdline_uint("n", 1000), warm = (unsigned)cmdline_uint("warm", 20);
    if (n == 0 || n > MAX_SAMPLES)
        test_error("n=%u is not 1..%u", n, MAX_SAMPLES);
    GUEST_ASSERT_EQ(hv_events_init(VECTOR, on_event), 0);
    cli();
    if (side_b)
        run_b(peer);
    run_a(peer, n, warm);
}
