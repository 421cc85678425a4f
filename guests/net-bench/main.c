/*
 * net-bench - guest-to-guest round-trip latency and throughput over virtio-net.
 *
 *   role=server   answer a client: echo PING frames, acknowledge DATA frames,
 *                 stop after echoing END
 *   role=client   1. find the server (PING, resent until a PONG comes back);
 *                 2. latency: lat_count= PINGs of lat_size= bytes, one at a
 *                    time, each timed from just before the send to the PONG;
 *                 3. throughput: tput_count= DATA frames of tput_size= bytes,
 *                    at most window= unacknowledged, the server acknowledging
 *                    every ack_every= frames and the last one; timed from the
 *                    first send to the last acknowledgement;
 *                 4. END, echoed.
 *
 * Defaults: lat_count=200 lat_size=64 tput_count=2000 tput_size=1514
 * window=16 ack_every=4 warm=10 (untimed PINGs after the first PONG).
 * Sizes are whole Ethernet frames (header included, no FCS): 60..1514.
 * The window keeps the sender within the receiver's 16 receive buffers, so
 * no frame is lost on any transport; the server checks that DATA arrives
 * in order with nothing missing.
 *
 * Time: rdtsc, the same on hv (both engines) and QEMU; the host converts
 * cycles with its TSC rate.  Under hv the throughput phase is also timed
 * with HV_HC_CLOCK_READ (hv_ns=) to check that rate.  Client result lines:
 *
 *   net-bench: lat n=200 size=64 min=.. p50=.. p90=.. max=.. (tsc cycles)
 *   net-bench: tput frames=2000 size=1514 tsc=.. tsc_end=.. hv_ns=.. window=16
 *
 * Frames use EtherType 0x88b5 (IEEE 802 local experimental).  The data path
 * copies nothing in the guest: frames are built once, only the header
 * words change per frame, and received frames are looked at in place.
 */
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "x86.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "virtio_net.h"

#define ETHERTYPE       0x88b5
#define MAGIC           0x4e425648          /* "HVBN" */
#define K_PING          1
#define K_PONG          2
#define K_DATA          3
#define K_ACK           4
#define K_END           5
#define K_END_ACK       6
#define FRAME_MIN       60
#define TX_SLOTS        16                  /* 2 descriptors each without INDIRECT */
#define LAT_MAX         4096
#define RESEND_TICKS    (1000ull * 1000 * 1000)         /* TSC cycles: ~0.4 s (rx_wait times with the TSC) */
#define PEER_WAIT_TICKS (30ull * 1000 * 1000 * 1000)    /* ~10-30 s */
#define STALL_TICKS     (10ull * 1000 * 1000 * 1000)    /* ~3-10 s: no progress */
#define MAX_RESENDS     200

struct bench_hdr {
    uint32_t magic;
    uint32_t kind;
    uint32_t seq;
    uint32_t count;
} __attribute__((packed));

struct frame {
    uint8_t dst[ETH_ALEN];
    uint8_t src[ETH_ALEN];
    uint8_t type_be[2];
    struct bench_hdr h;
    uint8_t payload[ETH_FRAME_MAX - ETH_HLEN - sizeof(struct bench_hdr)];
} __attribute__((packed));

struct tx_slot {
    struct virtio_net_hdr vhdr;
    struct frame f;
    struct tx_slot *next_free;
};

static struct virtio_net net;
static struct tx_slot slots[TX_SLOTS];
static struct tx_slot *free_slots;
static unsigned tx_busy;
static uint8_t peer[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static uint64_t rtt[LAT_MAX];

static void check(int r, const char *what)
{
    if (r < 0)
        test_failure("net-bench: %s: %s", what, virtio_strerror(r));
}

/* ---- transmit: up to TX_SLOTS frames in flight ------------------------------ */

static void tx_reclaim(void)
{
    void *token;
    uint32_t len;
    int r;

    while ((r = virtq_get(&net.tx, &token, &len)) > 0) {
        struct tx_slot *s = token;

        s->next_free = free_slots;
        free_slots = s;
        tx_busy--;
    }
    check(r, "tx completion");
}

static struct tx_slot *tx_slot(void)
{
    uint64_t t0 = rdtsc();          /* not virtio_now(): under hv, an exit */

    for (unsigned polls = 1; free_slots == NULL; polls++) {
        tx_reclaim();
        if (polls % 64 == 0 && rdtsc() - t0 > STALL_TICKS)
            test_failure("net-bench: the device never completed a transmit");
        asm volatile("pause");
    }
    struct tx_slot *s = free_slots;
    free_slots = s->next_free;
    return s;
}

/* Post a frame built in slot s; returns at once (the slot comes back later). */
static void tx_post(struct tx_slot *s, uint32_t len)
{
    struct virtq_buf bufs[2] = { { &s->vhdr, sizeof(s->vhdr) }, { &s->f, len } };

    check(virtq_add(&net.tx, bufs, 2, 0, s), "tx add");
    tx_busy++;
    virtq_kick(&net.tx);
}

static struct tx_slot *build(uint32_t kind, uint32_t seq, uint32_t count)
{
    struct tx_slot *s = tx_slot();

    __builtin_memcpy(s->f.dst, peer, ETH_ALEN);
    __builtin_memcpy(s->f.src, net.mac, ETH_ALEN);
    s->f.type_be[0] = ETHERTYPE >> 8;
    s->f.type_be[1] = ETHERTYPE & 0xff;
    s->f.h = (struct bench_hdr){ MAGIC, kind, seq, count };
    return s;
}

static void send(uint32_t kind, uint32_t seq, uint32_t count, uint32_t len)
{
    tx_post(build(kind, seq, count), len);
}

/* ---- receive: frames looked at in place, then the buffer goes back --------- */

static struct virtio_net_rx_buf *rx_wait(uint32_t *len, uint64_t timeout)
{
    void *token;
    uint32_t used;
    int r = virtq_wait(&net.rx, &token, &used, timeout);

    if (r == -VIRTIO_ETIMEOUT)
        return NULL;
    check(r, "rx");
    if (used < sizeof(struct virtio_net_hdr) + ETH_HLEN)
        test_failure("net-bench: a received frame of %u bytes", used);
    *len = used - (uint32_t)sizeof(struct virtio_net_hdr);
    return token;
}

/* Non-blocking: a frame if one is there. */
static struct virtio_net_rx_buf *rx_poll(uint32_t *len)
{
    void *token;
    uint32_t used;
    int r = virtq_get(&net.rx, &token, &used);

    check(r, "rx");
    if (r == 0)
        return NULL;
    if (used < sizeof(struct virtio_net_hdr) + ETH_HLEN)
        test_failure("net-bench: a received frame of %u bytes", used);
    *len = used - (uint32_t)sizeof(struct virtio_net_hdr);
    return token;
}

static void rx_put(struct virtio_net_rx_buf *b)
{
    struct virtq_buf vb = { b, sizeof(*b) };

    check(virtq_add(&net.rx, &vb, 0, 1, b), "rx repost");
    virtq_kick(&net.rx);
}

/* Our frame, or NULL (foreign frames are ignored). */
static struct frame *ours(struct virtio_net_rx_buf *b, uint32_t len)
{
    struct frame *f = (struct frame *)b->frame;

    if (len < ETH_HLEN + sizeof(struct bench_hdr) || f->type_be[0] != ETHERTYPE >> 8 ||
        f->type_be[1] != (ETHERTYPE & 0xff) || f->h.magic != MAGIC)
        return NULL;
    return f;
}

/* Send (kind, seq) until a frame of `reply` with that seq comes back. */
static void exchange(uint32_t kind, uint32_t seq, uint32_t reply, uint32_t len, uint64_t *resent)
{
    send(kind, seq, 0, len);
    for (;;) {
        uint32_t n;
        struct virtio_net_rx_buf *b = rx_wait(&n, RESEND_TICKS);

        tx_reclaim();
        if (b == NULL) {
            if (++*resent > MAX_RESENDS)
                test_error("net-bench: no answer to frame kind %u seq %u", kind, seq);
            send(kind, seq, 0, len);
            continue;
        }
        struct frame *f = ours(b, n);
        bool done = f && f->h.kind == reply && f->h.seq == seq;

        if (done)
            __builtin_memcpy(peer, f->src, ETH_ALEN);   /* unicast from now on */
        rx_put(b);
        if (done)
            return;
    }
}

static void shell_sort(uint64_t *a, unsigned n)
{
    for (unsigned gap = n / 2; gap > 0; gap /= 2)
        for (unsigned i = gap; i < n; i++)
            for (unsigned j = i; j >= gap && a[j - gap] > a[j]; j -= gap) {
                uint64_t t = a[j];

                a[j] = a[j - gap];
                a[j - gap] = t;
            }
}

static __attribute__((noreturn)) void client(void)
{
    uint64_t lat_count = cmdline_uint("lat_count", 200), lat_size = cmdline_uint("lat_size", 64);
    uint64_t tput_count = cmdline_uint("tput_count", 2000);
    uint64_t tput_size = cmdline_uint("tput_size", ETH_FRAME_MAX);
    uint64_t window = cmdline_uint("window", 16), ack_every = cmdline_uint("ack_every", 4);
    uint64_t warm = cmdline_uint("warm", 10), resent = 0, hv_ns = 0;

    if (lat_count > LAT_MAX || lat_size < FRAME_MIN || lat_size > ETH_FRAME_MAX ||
        tput_size < FRAME_MIN || tput_size > ETH_FRAME_MAX || tput_count > UINT32_MAX ||
        window == 0 || window > VIRTIO_NET_RX_BUFS || ack_every == 0 || ack_every > window)
        test_error("net-bench: lat_count<=%u, sizes %u..%u, 1<=ack_every<=window<=%u please",
                   LAT_MAX, FRAME_MIN, ETH_FRAME_MAX, VIRTIO_NET_RX_BUFS);

    /* 1. The server may start later: the first PING is resent until answered. */
    for (uint64_t i = 0; i <= warm; i++)
        exchange(K_PING, (uint32_t)i, K_PONG, (uint32_t)lat_size, &resent);

    /* 2. Latency, one frame at a time. */
    for (uint64_t i = 0; i < lat_count; i++) {
        uint64_t before = resent, t0 = rdtsc();

        exchange(K_PING, (uint32_t)(warm + 1 + i), K_PONG, (uint32_t)lat_size, &resent);
        rtt[i] = rdtsc() - t0;
        if (resent != before)
            test_error("net-bench: a latency frame was lost (resent)");
    }

    /* 3. Throughput, windowed. */
    uint64_t sent = 0, acked = 0, last_progress, t0, t1;

    if (hv_hypercalls_ready())
        hv_ns = hv_clock_read();
    t0 = last_progress = rdtsc();
    while (acked < tput_count) {
        uint32_t n;
        struct virtio_net_rx_buf *b;

        tx_reclaim();
        while (sent < tput_count && sent - acked < window && free_slots != NULL) {
            send(K_DATA, (uint32_t)sent, (uint32_t)tput_count, (uint32_t)tput_size);
            sent++;
        }
        while ((b = rx_poll(&n)) != NULL) {
            struct frame *f = ours(b, n);

            if (f && f->h.kind == K_ACK && f->h.seq + 1ull > acked) {
                acked = f->h.seq + 1ull;
                last_progress = rdtsc();
            }
            rx_put(b);
        }
        if (rdtsc() - last_progress > STALL_TICKS)
            test_failure("net-bench: throughput stalled: %lu sent, %lu acknowledged", sent,
                         acked);
        asm volatile("pause");
    }
    t1 = rdtsc();
    if (hv_hypercalls_ready())
        hv_ns = hv_clock_read() - hv_ns;

    /* 4. Done. */
    exchange(K_END, 0, K_END_ACK, FRAME_MIN, &resent);

    shell_sort(rtt, (unsigned)lat_count);
    if (lat_count)
        printf("net-bench: lat n=%lu size=%lu min=%lu p50=%lu p90=%lu max=%lu (tsc cycles)\n",
               lat_count, lat_size, rtt[0], rtt[lat_count / 2], rtt[lat_count * 9 / 10],
               rtt[lat_count - 1]);
    printf("net-bench: tput frames=%lu size=%lu tsc=%lu tsc_end=%lu hv_ns=%lu window=%lu "
           "ack_every=%lu resent=%lu\n", tput_count, tput_size, t1 - t0, t1, hv_ns, window,
           ack_every, resent);
    test_success();
}

/* Answer frame f (in a receive buffer) with `kind`, from a transmit slot. */
static void answer(struct frame *f, uint32_t kind, uint32_t seq, uint32_t len)
{
    __builtin_memcpy(peer, f->src, ETH_ALEN);
    send(kind, seq, 0, len);
}

static __attribute__((noreturn)) void server(void)
{
    uint64_t ack_every = cmdline_uint("ack_every", 4);
    uint64_t pings = 0, data = 0, acks = 0, expect = 0;

    for (;;) {
        uint32_t n;
        struct virtio_net_rx_buf *b = rx_wait(&n, PEER_WAIT_TICKS);

        tx_reclaim();
        if (b == NULL)
            test_error("net-bench: server: nothing from the client (%lu pings, %lu data)",
                       pings, data);
        struct frame *f = ours(b, n);

        if (f == NULL) {
            rx_put(b);
            continue;
        }
        switch (f->h.kind) {
        case K_PING:
            answer(f, K_PONG, f->h.seq, n);
            pings++;
            break;
        case K_DATA:
            if (f->h.seq != expect)
                test_failure("net-bench: DATA %u arrived, expected %lu", f->h.seq, expect);
            expect++;
            data++;
            if ((f->h.seq + 1) % ack_every == 0 || f->h.seq + 1 == f->h.count) {
                answer(f, K_ACK, f->h.seq, FRAME_MIN);
                acks++;
            }
            break;
        case K_END:
            answer(f, K_END_ACK, f->h.seq, FRAME_MIN);
            rx_put(b);
            while (tx_busy)                     /* let the last answer leave */
                tx_reclaim();
            printf("net-bench: server: %lu pings, %lu data frames, %lu acks\n", pings, data,
                   acks);
            test_success();
        }
        rx_put(b);
    }
}

int main(void)
{
    int r = virtio_net_init(&net, 0);

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-net device");
    check(r, "init");
    for (unsigned i = 0; i < TX_SLOTS; i++) {
        slots[i].next_free = free_slots;
        free_slots = &slots[i];
        for (unsigned j = 0; j < sizeof(slots[i].f.payload); j++)
            slots[i].f.payload[j] = (uint8_t)j;
    }
    printf("net-bench: mac %02x:%02x:%02x:%02x:%02x:%02x, queue sizes %u/%u, features %lx\n",
           net.mac[0], net.mac[1], net.mac[2], net.mac[3], net.mac[4], net.mac[5], net.rx.size,
           net.tx.size, net.dev.features);
    if (cmdline_is("role", "server"))
        server();
    if (cmdline_is("role", "client"))
        client();
    test_error("net-bench: role=client or role=server please");
}
