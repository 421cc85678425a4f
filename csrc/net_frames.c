/*
 * net_frames.c - frames from one guest's transmit ring straight into
 * another guest's receive ring, in C (virtio 1.2, 2.7 and 5.1.6).
 *
 * T:688 The switch's common case -- a unicast frame between two NICs whose
 * addresses it has learned -- costs no Python object and no interpreter
 * time per frame: the sender's device thread calls hv_net_forward() once per
 * kick, and every frame is copied once from the sender's guest into a bounded
 * buffer on this stack (the guest cannot change it after its addresses were
 * looked at: XSA-155), then into the receiver's buffers, and both used rings
 * are updated.  The caller (hv/devices/net.py) holds both devices' locks and
 * has checked both rings' places in RAM when it built its SplitQueues; the
 * ring positions live there and are handed in and back in struct hv_vring.
 *
 * This is a fast path, not a second device: it handles only what it is sure
 * of and stops, consuming nothing, at the first chain it is not -- a frame
 * for another address, a chain that is malformed, foreign, writable, too
 * short or too long, an indirect table that is not small and plain, a
 * receive ring without a buffer, or one too small for the frame.  The
 * Python path (hv/devices/net_io.py) then takes that chain as it always
 * did, with every error rule of hv/devices/virtqueue.py.  Every index and
 * length read from a guest is bounded before it is used.
 */
#include <errno.h>
#include <string.h>
#include "core.h"

#define DESC_F_NEXT     1
#define DESC_F_WRITE    2
#define DESC_F_INDIRECT 4
#define DESC_SIZE       16
#define USED_ELEM_SIZE  8
#define INDIRECT_MAX    16          /* entries of an indirect table taken here */
#define BUFFERS_MAX     16          /* buffers of one chain taken here */

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

struct buffer {
    uint64_t gpa;
    uint32_t len;
};

/* A pointer to [gpa, gpa + len) of p's RAM if the partition owns all of it. */
static uint8_t *guest(struct hv_partition *p, uint64_t gpa, uint64_t len)
{
    return partition_frame_is_guest(p, gpa, len) ? p->ram + gpa : NULL;
}

static int read_u16(struct hv_partition *p, uint64_t gpa, uint16_t *out)
{
    uint8_t *at = gpa % 2 ? NULL : guest(p, gpa, 2);
    if (!at)
        return -1;
    *out = __atomic_load_n((uint16_t *)at, __ATOMIC_ACQUIRE);
    return 0;
}

static int write_u16(struct hv_partition *p, uint64_t gpa, uint16_t value)
{
    uint8_t *at = gpa % 2 ? NULL : guest(p, gpa, 2);
    if (!at)
        return -1;
    __atomic_store_n((uint16_t *)at, value, __ATOMIC_RELEASE);
    ram_written(p, gpa, 2);
    return 0;
}

/* The next chain's head if the driver has offered one (*avail_idx: the
 * index read, once); 0 with none; -1 if avail.idx is bogus (2.7.6). */
static int next_head(struct hv_partition *p, const struct hv_vring *q, uint16_t *avail_idx,
                     uint16_t *head)
{
    if (read_u16(p, q->avail + 2, avail_idx))
        return -1;
    uint16_t pending = (uint16_t)(*avail_idx - q->last_avail);
    uint16_t seen = (uint16_t)(q->seen_avail - q->last_avail);
    if (pending > q->size || pending < seen)
        return -1;
    if (pending == 0)
        return 0;
    if (read_u16(p, q->avail + 4 + 2 * (uint64_t)(q->last_avail % q->size), head) ||
        *head >= q->size)
        return -1;
    return 1;
}

/* The buffers of the chain at `head`, each descriptor read once; all
 * device-readable (want_write 0) or all device-writable (1), in RAM the
 * partition owns.  The count, or -1 for anything this path leaves alone. */
static int walk(struct hv_partition *p, const struct hv_vring *q, uint16_t head, int want_write,
                struct buffer *out)
{
    struct desc table[INDIRECT_MAX];
    uint32_t n = 0, i = head, count = q->size;
    const struct desc *from = NULL;         /* NULL: the ring's own table */
    for (uint32_t step = 0; step < count; step++) {
        struct desc d;
        if (i >= count)
            return -1;
        if (from) {
            d = from[i];
        } else {
            const uint8_t *at = guest(p, q->desc + (uint64_t)DESC_SIZE * i, DESC_SIZE);
            if (!at)
                return -1;
            memcpy(&d, at, DESC_SIZE);
        }
        if (d.flags & DESC_F_INDIRECT) {
            /* Last in the chain, not inside another table, a small
             * multiple of 16 bytes (2.7.5.3.1); its entries chain from 0. */
            if (from || !q->indirect || (d.flags & DESC_F_NEXT) || d.len == 0 ||
                d.len % DESC_SIZE || d.len > sizeof(table))
                return -1;
            const uint8_t *at = guest(p, d.addr, d.len);
            if (!at)
                return -1;
            memcpy(table, at, d.len);       /* once: the walk reads the copy */
            from = table;
            count = d.len / DESC_SIZE;
            i = 0;
            step = (uint32_t)-1;            /* a new walk of `count` entries */
            continue;
        }
        if (!(d.flags & DESC_F_WRITE) != !want_write || n == BUFFERS_MAX || d.len == 0 ||
            !guest(p, d.addr, d.len))
            return -1;
        out[n].gpa = d.addr;
        out[n].len = d.len;
        n++;
        if (!(d.flags & DESC_F_NEXT))
            return (int)n;
        i = d.next;
    }
    return -1;                              /* longer than its table: a loop */
}

/* used.ring[used_idx % size] = (head, len), then used.idx + 1 (2.7.8.2). */
static int push(struct hv_partition *p, struct hv_vring *q, uint16_t head, uint32_t len)
{
    uint64_t slot = q->used + 4 + (uint64_t)USED_ELEM_SIZE * (q->used_idx % q->size);
    uint8_t *at = guest(p, slot, USED_ELEM_SIZE);
    if (!at)
        return -1;
    uint32_t elem[2] = { head, len };
    memcpy(at, elem, sizeof(elem));
    ram_written(p, slot, USED_ELEM_SIZE);
    if (write_u16(p, q->used + 2, (uint16_t)(q->used_idx + 1)))   /* after the element */
        return -1;
    q->used_idx = (uint16_t)(q->used_idx + 1);
    return 0;
}

/* Scatter len bytes into the buffers from `offset` bytes in; fits (checked). */
static void scatter(struct hv_partition *p, const struct buffer *b, int n, uint64_t offset,
                    const uint8_t *data, uint64_t len)
{
    for (int k = 0; k < n && len; k++) {
        if (offset >= b[k].len) {
            offset -= b[k].len;
            continue;
        }
        uint64_t take = b[k].len - offset < len ? b[k].len - offset : len;
        memcpy(p->ram + b[k].gpa + offset, data, take);
        ram_written(p, b[k].gpa + offset, take);
        data += take;
        len -= take;
        offset = 0;
    }
}

/* One frame, or why not: 1 moved, 0 stop (nothing consumed on either side). */
static int forward_one(struct hv_partition *src, struct hv_vring *tx, struct hv_partition *dst,
                       struct hv_vring *rx, const uint8_t *dst_mac, const uint8_t *src_mac,
                       uint64_t *bytes)
{
    uint8_t frame[HV_NET_HDR_SIZE + HV_NET_FRAME_MAX];
    struct buffer bufs[BUFFERS_MAX];
    uint16_t tx_avail, rx_avail, tx_head, rx_head;

    if (next_head(src, tx, &tx_avail, &tx_head) != 1)
        return 0;
    int n = walk(src, tx, tx_head, 0, bufs);
    if (n < 0)
        return 0;
    uint64_t len = 0;
    for (int k = 0; k < n; k++) {
        if (bufs[k].len > sizeof(frame) - len)
            return 0;                       /* too long for a frame: the switch drops it */
        memcpy(frame + len, src->ram + bufs[k].gpa, bufs[k].len);    /* the one copy */
        len += bufs[k].len;
    }
    if (len < HV_NET_HDR_SIZE + HV_NET_FRAME_MIN ||
        memcmp(frame + HV_NET_HDR_SIZE, dst_mac, 6) || memcmp(frame + HV_NET_HDR_SIZE + 6, src_mac, 6))
        return 0;                           /* not this flow: the switch decides */
    uint64_t flen = len - HV_NET_HDR_SIZE;

    if (next_head(dst, rx, &rx_avail, &rx_head) != 1)
        return 0;                           /* no buffer: the frame waits in the backlog */
    n = walk(dst, rx, rx_head, 1, bufs);
    if (n < 0)
        return 0;
    uint64_t room = 0;
    for (int k = 0; k < n; k++)
        room += bufs[k].len;
    if (room < HV_NET_HDR_SIZE + flen)
        return 0;                           /* too small: the Python path drops it */

    /* No offloads, one buffer (5.1.6.4): num_buffers = 1, the rest 0. */
    static const uint8_t header[HV_NET_HDR_SIZE] = { [10] = 1 };
    scatter(dst, bufs, n, 0, header, HV_NET_HDR_SIZE);
    scatter(dst, bufs, n, HV_NET_HDR_SIZE, frame + HV_NET_HDR_SIZE, flen);
    if (push(dst, rx, rx_head, (uint32_t)(HV_NET_HDR_SIZE + flen)))
        return 0;
    rx->seen_avail = rx_avail;
    rx->last_avail = (uint16_t)(rx->last_avail + 1);
    if (push(src, tx, tx_head, 0))
        return -1;                          /* checked when the queue was built: cannot be */
    tx->seen_avail = tx_avail;
    tx->last_avail = (uint16_t)(tx->last_avail + 1);
    *bytes += flen;
    return 1;
}

int hv_net_forward(struct hv_partition *src, struct hv_vring *tx, struct hv_partition *dst,
                   struct hv_vring *rx, const uint8_t *dst_mac, const uint8_t *src_mac,
                   uint32_t max_frames, uint64_t *bytes)
{
    *bytes = 0;
    if (!src || !dst || !tx->size || tx->size & (tx->size - 1) || !rx->size ||
        rx->size & (rx->size - 1))
        return -EINVAL;
    uint32_t moved = 0;
    while (moved < max_frames) {
        int r = forward_one(src, tx, dst, rx, dst_mac, src_mac, bytes);
        if (r < 0)
            return moved ? (int)moved : -EFAULT;
        if (r == 0)
            break;
        moved++;
    }
    return (int)moved;
}
