/*
 * virtio_blk.h - a virtio block device (virtio v1.2, 5.2), synchronous.
 *
 * Sectors are always 512 bytes in requests, whatever the device's
 * blk_size (5.2.6).  Each call posts one request per chunk (one header,
 * one data buffer, one status byte) and polls until the device is done.
 */
#ifndef GUEST_VIRTIO_BLK_H
#define GUEST_VIRTIO_BLK_H

#include "virtio.h"

#define VIRTIO_BLK_SECTOR       512
#define VIRTIO_BLK_ID_BYTES     20      /* GET_ID: the serial, not NUL-terminated */

/* Feature bits (5.2.3) */
#define VIRTIO_BLK_F_SIZE_MAX   1
#define VIRTIO_BLK_F_SEG_MAX    2
#define VIRTIO_BLK_F_RO         5
#define VIRTIO_BLK_F_BLK_SIZE   6
#define VIRTIO_BLK_F_FLUSH      9
#define VIRTIO_BLK_F_DISCARD    13

struct virtio_blk {
    struct virtio_dev dev;
    struct virtq vq;
    uint64_t capacity;              /* in 512-byte sectors */
    uint32_t chunk_sectors;         /* largest request we send */
    uint32_t blk_size;              /* the device's logical block (info only) */
    uint32_t max_discard_sectors;   /* 0: no discard */
};

int virtio_blk_init(struct virtio_blk *blk, unsigned nth);
int virtio_blk_read(struct virtio_blk *blk, uint64_t sector, void *buf, uint64_t count);
int virtio_blk_write(struct virtio_blk *blk, uint64_t sector, const void *buf, uint64_t count);
int virtio_blk_flush(struct virtio_blk *blk);                    /* -UNSUPP w/o F_FLUSH */
int virtio_blk_discard(struct virtio_blk *blk, uint64_t sector, uint64_t count);
/* The device ID string (serial), NUL-terminated in id[0..20]. */
int virtio_blk_get_id(struct virtio_blk *blk, char id[VIRTIO_BLK_ID_BYTES + 1]);

static inline bool virtio_blk_read_only(const struct virtio_blk *blk)
{
    return virtio_has(&blk->dev, VIRTIO_BLK_F_RO);
}

#endif
