/*
 * channel-race - two partitions race each other over one channel, in the
 * spirit of XTF's advisory tests (XSA-224, 232, 255: revoke, close and
 * teardown while the other side is using the grant or the port).  Each
 * partition has its own vCPU thread, so the two really run at once.
 *
 *   channel=NAME,PEER_ID,SIDE,GREF   as `hv up` gives it (GREF unused)
 *   rounds=R   revocations in phase 1 (default 200)
 *
 * Side a grants one page (ref 0) and offers two ports (its first two,
 * HV_EVTCHN_FIRST and the next: side b binds both, retrying until they
 * are offered).  Ports are masked: each side polls its pending bits.
 *
 * 1. Revoke while copying.  a, R times: write generation g into every
 *    word of the page (only while it is not granted), grant it, then
 *    grant_end until that succeeds (-HV_EBUSY while b's copy holds it).
 *    b copies the whole page again and again: each copy is 0 (and then
 *    every word holds one generation: nothing was written under it),
 *    -HV_EPERM (revoked) or -HV_EAGAIN (the entry changed under the
 *    check); never anything else.  a ends the phase granted, and says so
 *    on the first port.
 * 2. Close while sending.  b sends on the first port as fast as it can;
 *    a, once it sees those sends, closes its end.  b's sends are 0 until
 *    the first -HV_ENOTCONN and -HV_ENOTCONN ever after; b's end is
 *    unbound, offered back to a; closing it then succeeds once.
 * 3. Destroyed while in use.  b tells a (second port) and goes on copying
 *    the page and sending on the second port; a shuts down, and the
 *    parent destroys it.  b's copies must turn to -HV_ENOENT and its
 *    sends to -HV_ENOTCONN, and stay so; a copy that still succeeded
 *    holds the last generation whole.
 *
 * Each side prints its counts (informational: they depend on timing) and
 * ends with SUCCESS; a broken rule is FAILURE, a peer that never comes
 * ERROR.
 */
#include "channels.h"
#include "events.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"

#define WAIT_NS         (60ull * 1000 * 1000 * 1000)

static uint64_t page[HV_PAGE_SIZE / 8] __attribute__((aligned(HV_PAGE_SIZE)));
static uint64_t copy[HV_PAGE_SIZE / 8] __attribute__((aligned(HV_PAGE_SIZE)));
static struct hv_grant_entry table[4] __attribute__((aligned(HV_PAGE_SIZE)));
static struct hv_grant_copy_seg seg;
static uint32_t peer, port1, port2;
static uint64_t deadline;

static void no_op(unsigned event) { (void)event; }


static void mask(uint32_t port)
{
    __atomic_fetch_or(&hv_event_page()->masked[port / 64], 1ull << (port % 64), __ATOMIC_SEQ_CST);
}

/* Take a port's pending bit: was it set? */
static bool take(uint32_t port)
{
    uint64_t bit = 1ull << (port % 64);
    return __atomic_fetch_and(&hv_event_page()->pending[port / 64], ~bit, __ATOMIC_SEQ_CST) & bit;
}

static void wait_for(uint32_t port, const char *what)
{
    while (!take(port)) {
        if (hv_clock_read() > deadline)
            test_error("race: the peer never %s", what);
        hv_hypercall0(HV_HC_YIELD);
    }
}

/* Every word of the copy is the same generation (one REPE CMPSQ). */
static bool whole(void)
{
    const void *a = copy, *b = copy + 1;
    uint64_t n = HV_PAGE_SIZE / 8 - 1;
    bool differ;
    asm volatile("repe cmpsq" : "=@ccnz"(differ), "+S"(a), "+D"(b), "+c"(n) : : "memory");
    return !differ && copy[0] != 0;
}

static long copy_page(void)
{
    seg = (struct hv_grant_copy_seg){ .buf = (uintptr_t)copy, .granter = peer, .ref = 0,
                                      .len = HV_PAGE_SIZE, .status = 1 };
    long r = grant_copy(&seg, 1);
    if (r)
        test_failure("race: grant_copy itself: %ld", r);
    if (seg.status == 0 && !whole())
        test_failure("race: a copy saw the page change under it (words %lx .. %lx)", copy[0],
                     copy[HV_PAGE_SIZE / 8 - 1]);
    return seg.status;
}

static void fill(uint64_t g)
{
    void *d = page;
    uint64_t n = HV_PAGE_SIZE / 8;
    asm volatile("rep stosq" : "+D"(d), "+c"(n) : "a"(g) : "memory");
}

__attribute__((noreturn)) static void side_a(uint64_t rounds)
{
    GUEST_ASSERT_EQ(grant_table_register(table, 4), 0);     /* before b can bind and copy */
    GUEST_ASSERT_EQ(evtchn_alloc_unbound(peer), HV_EVTCHN_FIRST);
    GUEST_ASSERT_EQ(evtchn_alloc_unbound(peer), HV_EVTCHN_FIRST + 1);
    port1 = HV_EVTCHN_FIRST, port2 = HV_EVTCHN_FIRST + 1;
    mask(port1), mask(port2);
    wait_for(port1, "bound its ports");
    /* 1 */
    uint64_t busy = 0;
    for (uint64_t g = 1; g <= rounds; g++) {
        fill(g);
        grant_entry_set(&table[0], peer, page, 1);
        for (int i = 0; i < 20; i++)                /* give b a chance at it */
            hv_hypercall0(HV_HC_PARTITION_ID);
        long r;
        while ((r = grant_end(0)) == -HV_EBUSY)
            busy++;
        GUEST_ASSERT_EQ(r, 0);
        GUEST_ASSERT_EQ(table[0].flags, 0);
    }
    fill(rounds + 1);
    grant_entry_set(&table[0], peer, page, 1);
    take(port1);
    GUEST_ASSERT_EQ(evtchn_send(port1), 0);        /* phase 1 is over */
    printf("race a: %lu revocations, %lu refused busy\n", rounds, busy);
    /* 2 */
    wait_for(port1, "sent on the first port");
    GUEST_ASSERT_EQ(evtchn_close(port1), 0);
    /* 3 */
    wait_for(port2, "said it was copying");
    printf("race a: shutting down under the peer\n");
    test_success();
}

__attribute__((noreturn)) static void side_b(void)
{
    long r = -HV_EINVAL;
    while (r < 0) {
        r = evtchn_bind_interdomain(peer, HV_EVTCHN_FIRST + 1);
        if (r < 0 && r != -HV_EINVAL && r != -HV_ENOENT)
            test_failure("race: bind: %ld", r);
        if (hv_clock_read() > deadline)
            test_error("race: side a never offered its ports");
        hv_hypercall0(HV_HC_YIELD);
    }
    port2 = (uint32_t)r;
    long p = evtchn_bind_interdomain(peer, HV_EVTCHN_FIRST);
    GUEST_ASSERT(p >= HV_EVTCHN_FIRST);
    port1 = (uint32_t)p;
    mask(port1), mask(port2);
    GUEST_ASSERT_EQ(evtchn_send(port1), 0);        /* bound */
    /* 1 */
    uint64_t ok = 0, revoked = 0, again = 0;
    while (!take(port1)) {
        long s = copy_page();
        if (s == 0)
            ok++;
        else if (s == -HV_EPERM)
            revoked++;
        else if (s == -HV_EAGAIN)
            again++;
        else
            test_failure("race: a copy during revocations gave %ld", s);
        if (hv_clock_read() > deadline)
            test_error("race: phase 1 never ended");
    }
    printf("race b: copies %lu whole, %lu revoked, %lu changed under the check\n", ok, revoked,
           again);
    /* 2 */
    uint64_t sent = 0, refused = 0;
    for (;;) {
        r = evtchn_send(port1);
        if (r == -HV_ENOTCONN)
            break;
        GUEST_ASSERT_EQ(r, 0);
        sent++;
        if (hv_clock_read() > deadline)
            test_error("race: side a never closed its end");
    }
    for (refused = 0; refused < 100; refused++)
        GUEST_ASSERT_EQ(evtchn_send(port1), -HV_ENOTCONN);
    struct hv_evtchn_status st;
    GUEST_ASSERT_EQ(evtchn_status(port1, &st), 0);
    GUEST_ASSERT_EQ(st.state, HV_EVTCHN_UNBOUND);
    GUEST_ASSERT_EQ(st.peer, peer);
    GUEST_ASSERT_EQ(evtchn_close(port1), 0);
    GUEST_ASSERT_EQ(evtchn_close(port1), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_send(port1), -HV_EINVAL);
    printf("race b: %lu sends before the close, then -HV_ENOTCONN\n", sent);
    /* 3 */
    GUEST_ASSERT_EQ(evtchn_send(port2), 0);
    uint64_t copied = 0, sends = 0;
    bool copy_gone = false, port_gone = false;
    while (!(copy_gone && port_gone)) {
        long s = copy_page();
        if (copy_gone)
            GUEST_ASSERT_EQ(s, -HV_ENOENT);
        else if (s == -HV_ENOENT)
            copy_gone = true;
        else if (s == 0)
            copied++;
        else
            test_failure("race: a copy from a dying peer gave %ld", s);
        r = evtchn_send(port2);
        if (port_gone)
            GUEST_ASSERT_EQ(r, -HV_ENOTCONN);
        else if (r == -HV_ENOTCONN)
            port_gone = true;
        else if (r == 0)
            sends++;
        else
            test_failure("race: a send to a dying peer gave %ld", r);
        if (hv_clock_read() > deadline)
            test_error("race: side a never went away");
    }
    GUEST_ASSERT_EQ(evtchn_status(port2, &st), 0);
    GUEST_ASSERT_EQ(st.state, HV_EVTCHN_UNBOUND);
    GUEST_ASSERT_EQ(evtchn_bind_interdomain(peer, HV_EVTCHN_FIRST), -HV_ENOENT);
    printf("race b: after %lu copies and %lu sends the peer was gone\n", copied, sends);
    test_success();
}

int main(void)
{
    bool b;
    if (!cmdline_channel(&peer, &b, NULL))
        test_error("race: no channel=NAME,PEER,SIDE,GREF on the command line");
    GUEST_ASSERT_EQ(hv_events_init(0xf0, no_op), 0);
    deadline = hv_clock_read() + WAIT_NS;
    if (b)
        side_b();
    side_a(cmdline_uint("rounds", 200));
}
