/*
 * virtio_net.h - a virtio network device: raw Ethernet frames (v1.2, 5.1).
 *
 * One receive and one transmit queue, no offloads, no mergeable receive
 * buffers: every frame travels behind a 12-byte struct virtio_net_hdr
 * (with VIRTIO_F_VERSION_1 the header always has num_buffers, 5.1.6).
 */
#ifndef GUEST_VIRTIO_NET_H
#define GUEST_VIRTIO_NET_H

#include "virtio.h"

#define VIRTIO_NET_F_MAC        5
#define ETH_ALEN                6
#define ETH_HLEN                14
#define ETH_FRAME_MAX           1514    /* header + 1500 bytes, no FCS */
#define VIRTIO_NET_RX_BUFS      16

struct virtio_net_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};

/* 5.1.6.3.1: without MRG_RXBUF or GUEST_TSO*, buffers of >= 1526 bytes. */
struct virtio_net_rx_buf {
    struct virtio_net_hdr hdr;
    uint8_t frame[ETH_FRAME_MAX + 10];  /* 12 + 1524 = 1536 bytes */
};

struct virtio_net {
    struct virtio_dev dev;
    struct virtq rx, tx;
    uint8_t mac[ETH_ALEN];
    bool mac_from_device;               /* VIRTIO_NET_F_MAC, else made up */
    struct virtio_net_rx_buf rx_bufs[VIRTIO_NET_RX_BUFS];
};

int virtio_net_init(struct virtio_net *net, unsigned nth);
/* Send one frame (ETH_HLEN..ETH_FRAME_MAX bytes); returns once it is sent. */
int virtio_net_send(struct virtio_net *net, const void *frame, uint32_t len);
/* Receive one frame into buf (cap bytes), its length in *len; or -ETIMEOUT. */
int virtio_net_recv(struct virtio_net *net, void *buf, uint32_t cap, uint32_t *len,
                    uint64_t timeout);

#endif
