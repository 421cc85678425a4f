/*
 * net-ping - Ethernet ping-pong between two guests over virtio-net.
 *
 *   role=ping   send count= frames (default 16) of size= payload bytes
 *               (default 256, 16..1500) to the broadcast address, each
 *               carrying its sequence number; wait for each echo, check it,
 *               resend after a quiet interval (the peer may start later)
 *   role=pong   echo every ping frame back to its sender; stop after the
 *               echo of the last sequence number a ping frame announces
 *
 * Frames use EtherType 0x88b5 (IEEE 802 local experimental); the payload is
 * struct ping_hdr, then byte i = (seq + i) & 0xff.  The MAC comes from the
 * device's config space.  One info line, then the result line:
 *     net: 16 frames of 256 bytes echoed, 0 resent, 1234 tsc cycles (rdtsc)
 * SKIP without a network device; ERROR on a bad role or a silent peer.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "virtio_net.h"

#define ETHERTYPE_PING   0x88b5
#define PING_MAGIC       0x48565047     /* "GPVH" as bytes: 'G','P','V','H' */
#define KIND_PING        0
#define KIND_PONG        1
#define RESEND_TICKS     (300ull * 1000 * 1000)         /* ~0.1-0.3 s */
#define PEER_WAIT_TICKS  (30ull * 1000 * 1000 * 1000)   /* ~10-30 s */
#define MAX_RESENDS      100

struct ping_hdr {
    uint32_t magic;
    uint32_t seq;
    uint32_t kind;
    uint32_t count;                     /* frames in the whole run */
} __attribute__((packed));

struct frame {
    uint8_t dst[ETH_ALEN];
    uint8_t src[ETH_ALEN];
    uint8_t type_be[2];                 /* big-endian on the wire */
    struct ping_hdr ping;
    uint8_t payload[ETH_FRAME_MAX - ETH_HLEN - sizeof(struct ping_hdr)];
} __attribute__((packed));

static struct virtio_net net;
static struct frame tx, rx;

static void check(int r, const char *what)
{
    if (r < 0)
        test_failure("net: %s: %s", what, virtio_strerror(r));
}

static bool is_ping_frame(uint32_t len)
{
    return len >= ETH_HLEN + sizeof(struct ping_hdr) && rx.type_be[0] == ETHERTYPE_PING >> 8 &&
           rx.type_be[1] == (ETHERTYPE_PING & 0xff) && rx.ping.magic == PING_MAGIC;
}

static void build_ping(uint32_t seq, uint32_t count, uint32_t size)
{
    __builtin_memset(tx.dst, 0xff, ETH_ALEN);
    __builtin_memcpy(tx.src, net.mac, ETH_ALEN);
    tx.type_be[0] = ETHERTYPE_PING >> 8;
    tx.type_be[1] = ETHERTYPE_PING & 0xff;
    tx.ping = (struct ping_hdr){ PING_MAGIC, seq, KIND_PING, count };
    for (uint32_t i = 0; i < size; i++)
        tx.payload[i] = (uint8_t)(seq + i);
}

/* The echo of `seq`: from the peer to us, every payload byte intact. */
static void check_pong(uint32_t len, uint32_t seq, uint32_t size)
{
    if (len != ETH_HLEN + sizeof(struct ping_hdr) + size)
        test_failure("net: echo of %u is %u bytes, sent %u", seq, len,
                     (unsigned)(ETH_HLEN + sizeof(struct ping_hdr) + size));
    for (unsigned i = 0; i < ETH_ALEN; i++)
        if (rx.dst[i] != net.mac[i])
            test_failure("net: echo of %u not addressed to us", seq);
    for (uint32_t i = 0; i < size; i++)
        if (rx.payload[i] != (uint8_t)(seq + i))
            test_failure("net: echo of %u: payload byte %u is %02x, sent %02x", seq, i,
                         rx.payload[i], (uint8_t)(seq + i));
}

static __attribute__((noreturn)) void ping(uint32_t count, uint32_t size)
{
    uint32_t len, resent = 0;
    uint64_t t0 = virtio_now();

    for (uint32_t seq = 0; seq < count; seq++) {
        build_ping(seq, count, size);
        check(virtio_net_send(&net, &tx, ETH_HLEN + sizeof(struct ping_hdr) + size), "send");
        for (;;) {
            int r = virtio_net_recv(&net, &rx, sizeof(rx), &len, RESEND_TICKS);

            if (r == -VIRTIO_ETIMEOUT) {
                if (++resent > MAX_RESENDS)
                    test_error("net: no echo of frame %u from the peer", seq);
                check(virtio_net_send(&net, &tx, ETH_HLEN + sizeof(struct ping_hdr) + size),
                      "resend");
                continue;
            }
            check(r, "recv");
            /* Older echoes (of resent frames) and foreign frames pass by. */
            if (is_ping_frame(len) && rx.ping.kind == KIND_PONG && rx.ping.seq == seq)
                break;
        }
        check_pong(len, seq, size);
    }
    printf("net: %u frames of %u bytes echoed, %u resent, %lu %s\n", count, size, resent,
           virtio_now() - t0, virtio_now_unit());
    test_success();
}

static __attribute__((noreturn)) void pong(void)
{
    uint32_t len, echoed = 0;

    for (;;) {
        int r = virtio_net_recv(&net, &rx, sizeof(rx), &len, PEER_WAIT_TICKS);

        if (r == -VIRTIO_ETIMEOUT)
            test_error("net: pong: nothing from the peer (%u echoed)", echoed);
        check(r, "recv");
        if (!is_ping_frame(len) || rx.ping.kind != KIND_PING)
            continue;
        __builtin_memcpy(rx.dst, rx.src, ETH_ALEN);
        __builtin_memcpy(rx.src, net.mac, ETH_ALEN);
        rx.ping.kind = KIND_PONG;
        check(virtio_net_send(&net, &rx, len), "send");
        echoed++;
        if (rx.ping.seq + 1 >= rx.ping.count)
            break;
    }
    printf("net: pong echoed %u frames\n", echoed);
    test_success();
}

int main(void)
{
    uint64_t count = cmdline_uint("count", 16), size = cmdline_uint("size", 256);
    int r = virtio_net_init(&net, 0);

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-net device");
    check(r, "init");
    printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x%s, queue sizes %u/%u\n", net.mac[0],
           net.mac[1], net.mac[2], net.mac[3], net.mac[4], net.mac[5],
           net.mac_from_device ? "" : " (made up: no VIRTIO_NET_F_MAC)", net.rx.size,
           net.tx.size);
    if (cmdline_is("role", "pong"))
        pong();
    if (!cmdline_is("role", "ping"))
        test_error("net: role=ping or role=pong please");
    if (count == 0 || count > UINT32_MAX || size < 16 || size > sizeof(tx.payload))
        test_error("net: count=%lu size=%lu: count >= 1, size 16..%u please", count, size,
                   (unsigned)sizeof(tx.payload));
    ping((uint32_t)count, (uint32_t)size);
}
