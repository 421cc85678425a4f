/* virtio_net.c - a virtio network device: raw Ethernet frames (v1.2, 5.1). */
#include "virtio_net.h"

#define NET_RECEIVEQ            0       /* 5.1.2: receiveq1, transmitq1 */
#define NET_TRANSMITQ           1
#define CFG_MAC                 0       /* u8 mac[6] (5.1.4) */

static int post_rx(struct virtio_net *net, struct virtio_net_rx_buf *b)
{
    struct virtq_buf vb = { b, sizeof(*b) };

    return virtq_add(&net->rx, &vb, 0, 1, b);
}

/*
 * Fill receiveq before DRIVER_OK (5.1.5: the device drops frames while it
 * has no buffers, and may start delivering as soon as it is live).
 */
int virtio_net_init(struct virtio_net *net, unsigned nth)
{
    int r;

    if ((r = virtio_find(VIRTIO_ID_NET, nth, &net->dev)) < 0)
        return r;
    if ((r = virtio_begin(&net->dev, VIRTIO_BIT(VIRTIO_NET_F_MAC))) < 0)
        return r;
    if ((r = virtq_setup(&net->dev, NET_RECEIVEQ, &net->rx)) < 0 ||
        (r = virtq_setup(&net->dev, NET_TRANSMITQ, &net->tx)) < 0) {
        virtio_fail(&net->dev);
        return r;
    }
    net->mac_from_device = virtio_has(&net->dev, VIRTIO_NET_F_MAC);
    for (unsigned i = 0; i < ETH_ALEN; i++)
        net->mac[i] = net->mac_from_device ? virtio_config8(&net->dev, CFG_MAC + i)
                                           : (uint8_t[]){ 0x02, 0, 0, 0, 0, 1 }[i];
    for (unsigned i = 0; i < VIRTIO_NET_RX_BUFS && i < net->rx.size; i++)
        if ((r = post_rx(net, &net->rx_bufs[i])) < 0)
            return r;
    virtio_driver_ok(&net->dev);
    virtq_kick(&net->rx);
    return 0;
}

/*
 * T:389 Transmit (5.1.6.2): a zeroed header (no checksum offload, no GSO;
 * num_buffers is 0 on transmit) and the frame as two device-readable
 * buffers, one ring slot with INDIRECT_DESC; wait until the device has
 * consumed them, so the caller may reuse its frame.
 */
int virtio_net_send(struct virtio_net *net, const void *frame, uint32_t len)
{
    struct virtio_net_hdr hdr = { 0 };
    struct virtq_buf bufs[2] = { { &hdr, sizeof(hdr) }, { frame, len } };
    void *token;
    uint32_t written;
    int r;

    if (len < ETH_HLEN || len > ETH_FRAME_MAX)
        return -VIRTIO_ERANGE;
    if ((r = virtq_add(&net->tx, bufs, 2, 0, &hdr)) < 0)
        return r;
    virtq_kick(&net->tx);
    if ((r = virtq_wait(&net->tx, &token, &written, VIRTIO_TIMEOUT_DEFAULT)) < 0)
        return r;
    return token == &hdr ? 0 : -VIRTIO_EDEVICE;
}

/*
 * Receive (5.1.6.4): the used length covers header + frame.  Copy
 * the frame out and give the buffer straight back to the device.
 */
int virtio_net_recv(struct virtio_net *net, void *buf, uint32_t cap, uint32_t *len,
                    uint64_t timeout)
{
    struct virtio_net_rx_buf *b;
    void *token;
    uint32_t used;
    int r;

    if ((r = virtq_wait(&net->rx, &token, &used, timeout)) < 0)
        return r;
    b = token;
    if (used < sizeof(b->hdr) + ETH_HLEN)
        r = -VIRTIO_EDEVICE;
    else if (used - sizeof(b->hdr) > cap)
        r = -VIRTIO_ERANGE;
    else {
        *len = used - (uint32_t)sizeof(b->hdr);
        __builtin_memcpy(buf, b->frame, *len);
    }
    int r2 = post_rx(net, b);

    virtq_kick(&net->rx);
    return r < 0 ? r : r2;
}
