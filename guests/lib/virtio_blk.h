/*
 * virtio_blk.h - a virtio block device (virtio v1.2, 5.2).
 *
 * Sectors are always 512 bytes in requests, whatever the device's
 * blk_size (5.2.6).  The synchronous calls post one request per chunk (one
 * header, one data buffer, one status byte) and poll until the device is
 * done.  The asynchronous ones (virtio_blk_submit/kick/reap) keep several
 * requests in flight, for queue depths above 1.
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

/* A request header (5.2.6): what the device reads first. */
struct virtio_blk_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/*
 * One asynchronous request.  Its header and status byte are the device's
 * to read and write until the request is reaped: keep it in place.
 */
struct virtio_blk_req {
    struct virtio_blk_hdr hdr;
    volatile uint8_t status;
};

int virtio_blk_init(struct virtio_blk *blk, unsigned nth);
int virtio_blk_read(struct virtio_blk *blk, uint64_t sector, void *buf, uint64_t count);
int virtio_blk_write(struct virtio_blk *blk, uint64_t sector, const void *buf, uint64_t count);
int virtio_blk_flush(struct virtio_blk *blk);                    /* -UNSUPP w/o F_FLUSH */
int virtio_blk_discard(struct virtio_blk *blk, uint64_t sector, uint64_t count);
/*
 * Post a read or write of `count` sectors (at most chunk_sectors) without
 * waiting and without a kick: 0, or a negative error (-VIRTIO_EFULL when
 * the queue holds no room).  virtio_blk_kick() tells the device about all
 * that were posted; virtio_blk_reap() waits for any one of them to finish,
 * in the order the device completes them, and gives its result
 * (0, -VIRTIO_EIO, ...) and the request.
 */
int virtio_blk_submit(struct virtio_blk *blk, struct virtio_blk_req *req, bool write,
                      uint64_t sector, void *buf, uint32_t count);
void virtio_blk_kick(struct virtio_blk *blk);
int virtio_blk_reap(struct virtio_blk *blk, struct virtio_blk_req **req);

/* The device ID string (serial), NUL-terminated in id[0..20]. */
int virtio_blk_get_id(struct virtio_blk *blk, char id[VIRTIO_BLK_ID_BYTES + 1]);

static inline bool virtio_blk_read_only(const struct virtio_blk *blk)
{
    return virtio_has(&blk->dev, VIRTIO_BLK_F_RO);
}

#endif
