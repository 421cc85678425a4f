/* virtio_blk.c - a virtio block device (virtio v1.2, 5.2). */
#include "virtio_blk.h"

/* Request types and status values (5.2.6) */
#define VIRTIO_BLK_T_IN         0
#define VIRTIO_BLK_T_OUT        1
#define VIRTIO_BLK_T_FLUSH      4
#define VIRTIO_BLK_T_GET_ID     8
#define VIRTIO_BLK_T_DISCARD    11
#define VIRTIO_BLK_S_OK         0
#define VIRTIO_BLK_S_IOERR      1
#define VIRTIO_BLK_S_UNSUPP     2

/* Config space offsets (5.2.4) */
#define CFG_CAPACITY            0       /* le64, 512-byte sectors */
#define CFG_SIZE_MAX            8       /* le32, bytes per buffer */
#define CFG_BLK_SIZE            20      /* le32 */
#define CFG_MAX_DISCARD_SECTORS 36      /* le32 */

#define CHUNK_SECTORS_MAX       128     /* 64 KiB per request: bounded polling */
#define STATUS_UNSET            0xff    /* not a status the device can write */

struct blk_discard_seg {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

int virtio_blk_init(struct virtio_blk *blk, unsigned nth)
{
    int r;

    if ((r = virtio_find(VIRTIO_ID_BLOCK, nth, &blk->dev)) < 0)
        return r;
    r = virtio_begin(&blk->dev, VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_RO) |
                                    VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) |
                                    VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
                                    VIRTIO_BIT(VIRTIO_BLK_F_DISCARD));
    if (r < 0)
        return r;
    if ((r = virtq_setup(&blk->dev, 0, &blk->vq)) < 0) {
        virtio_fail(&blk->dev);
        return r;
    }
    blk->capacity = virtio_config64(&blk->dev, CFG_CAPACITY);
    blk->chunk_sectors = CHUNK_SECTORS_MAX;
    if (virtio_has(&blk->dev, VIRTIO_BLK_F_SIZE_MAX)) {
        uint32_t size_max = virtio_config32(&blk->dev, CFG_SIZE_MAX) / VIRTIO_BLK_SECTOR;

        if (size_max > 0 && size_max < blk->chunk_sectors)
            blk->chunk_sectors = size_max;
    }
    blk->blk_size = virtio_has(&blk->dev, VIRTIO_BLK_F_BLK_SIZE)
                        ? virtio_config32(&blk->dev, CFG_BLK_SIZE) : VIRTIO_BLK_SECTOR;
    blk->max_discard_sectors = virtio_has(&blk->dev, VIRTIO_BLK_F_DISCARD)
                                   ? virtio_config32(&blk->dev, CFG_MAX_DISCARD_SECTORS) : 0;
    virtio_driver_ok(&blk->dev);
    return 0;
}

/* A status byte (5.2.6) as a result: 0 or a negative error. */
static int status_result(uint8_t status)
{
    switch (status) {
    case VIRTIO_BLK_S_OK:
        return 0;
    case VIRTIO_BLK_S_IOERR:
        return -VIRTIO_EIO;
    case VIRTIO_BLK_S_UNSUPP:
        return -VIRTIO_EUNSUPP;
    default:
        return -VIRTIO_EDEVICE;
    }
}

/*
 * T:388 One block request (5.2.6): a device-readable header, an optional
 * data buffer (readable for OUT/DISCARD, writable for IN/GET_ID), then one
 * device-writable status byte.  Three buffers, so with INDIRECT_DESC one
 * ring slot.  The status starts as a value the device never writes, so a
 * completion that forgot it is caught.
 */
static int blk_request(struct virtio_blk *blk, uint32_t type, uint64_t sector,
                       const void *data, uint32_t len, bool device_writes)
{
    struct virtio_blk_hdr hdr = { .type = type, .sector = sector };
    volatile uint8_t status = STATUS_UNSET;
    struct virtq_buf bufs[3];
    unsigned n = 0, n_out;
    void *token;
    uint32_t written;
    int r;

    bufs[n++] = (struct virtq_buf){ &hdr, sizeof(hdr) };
    if (len > 0 && !device_writes)
        bufs[n++] = (struct virtq_buf){ data, len };
    n_out = n;
    if (len > 0 && device_writes)
        bufs[n++] = (struct virtq_buf){ data, len };
    bufs[n++] = (struct virtq_buf){ (const void *)&status, 1 };

    if ((r = virtq_add(&blk->vq, bufs, n_out, n - n_out, &hdr)) < 0)
        return r;
    virtq_kick(&blk->vq);
    if ((r = virtq_wait(&blk->vq, &token, &written, VIRTIO_TIMEOUT_DEFAULT)) < 0)
        return r;
    if (token != &hdr || written < 1)
        return -VIRTIO_EDEVICE;
    return status_result(status);
}

/* sector + count within the disk, without overflowing. */
static bool in_range(const struct virtio_blk *blk, uint64_t sector, uint64_t count)
{
    return sector <= blk->capacity && count <= blk->capacity - sector;
}

static int blk_rw(struct virtio_blk *blk, uint32_t type, uint64_t sector, const uint8_t *buf,
                  uint64_t count)
{
    if (!in_range(blk, sector, count))
        return -VIRTIO_ERANGE;
    while (count > 0) {
        uint32_t n = count < blk->chunk_sectors ? (uint32_t)count : blk->chunk_sectors;
        int r = blk_request(blk, type, sector, buf, n * VIRTIO_BLK_SECTOR,
                            type == VIRTIO_BLK_T_IN);

        if (r < 0)
            return r;
        sector += n;
        buf += (uint64_t)n * VIRTIO_BLK_SECTOR;
        count -= n;
    }
    return 0;
}

int virtio_blk_read(struct virtio_blk *blk, uint64_t sector, void *buf, uint64_t count)
{
    return blk_rw(blk, VIRTIO_BLK_T_IN, sector, buf, count);
}

int virtio_blk_write(struct virtio_blk *blk, uint64_t sector, const void *buf, uint64_t count)
{
    if (virtio_blk_read_only(blk))
        return -VIRTIO_EUNSUPP;
    return blk_rw(blk, VIRTIO_BLK_T_OUT, sector, buf, count);
}

int virtio_blk_flush(struct virtio_blk *blk)
{
    if (!virtio_has(&blk->dev, VIRTIO_BLK_F_FLUSH))
        return -VIRTIO_EUNSUPP;
    return blk_request(blk, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false);
}

int virtio_blk_get_id(struct virtio_blk *blk, char id[VIRTIO_BLK_ID_BYTES + 1])
{
    int r;

    __builtin_memset(id, 0, VIRTIO_BLK_ID_BYTES + 1);
    r = blk_request(blk, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES, true);
    id[VIRTIO_BLK_ID_BYTES] = '\0';
    return r;
}

/* One segment per request, at most max_discard_sectors each (5.2.6.2). */
int virtio_blk_discard(struct virtio_blk *blk, uint64_t sector, uint64_t count)
{
    if (blk->max_discard_sectors == 0 || virtio_blk_read_only(blk))
        return -VIRTIO_EUNSUPP;
    if (!in_range(blk, sector, count))
        return -VIRTIO_ERANGE;
    while (count > 0) {
        uint32_t n = count < blk->max_discard_sectors ? (uint32_t)count
                                                      : blk->max_discard_sectors;
        struct blk_discard_seg seg = { .sector = sector, .num_sectors = n };
        int r = blk_request(blk, VIRTIO_BLK_T_DISCARD, 0, &seg, sizeof(seg), false);

        if (r < 0)
            return r;
        sector += n;
        count -= n;
    }
    return 0;
}

/*
 * Asynchronous requests: the same three buffers as blk_request, the
 * request itself as the token, so a completion names its request whatever
 * order the device finishes them in (virtio allows any, 2.7.14).
 */
int virtio_blk_submit(struct virtio_blk *blk, struct virtio_blk_req *req, bool write,
                      uint64_t sector, void *buf, uint32_t count)
{
    struct virtq_buf bufs[3];

    if (count == 0 || count > blk->chunk_sectors || !in_range(blk, sector, count))
        return -VIRTIO_ERANGE;
    if (write && virtio_blk_read_only(blk))
        return -VIRTIO_EUNSUPP;
    req->hdr = (struct virtio_blk_hdr){ .type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN,
                                        .sector = sector };
    req->status = STATUS_UNSET;
    bufs[0] = (struct virtq_buf){ &req->hdr, sizeof(req->hdr) };
    bufs[1] = (struct virtq_buf){ buf, count * VIRTIO_BLK_SECTOR };
    bufs[2] = (struct virtq_buf){ (const void *)&req->status, 1 };
    return virtq_add(&blk->vq, bufs, write ? 2 : 1, write ? 1 : 2, req);
}

void virtio_blk_kick(struct virtio_blk *blk)
{
    virtq_kick(&blk->vq);
}

int virtio_blk_reap(struct virtio_blk *blk, struct virtio_blk_req **req)
{
    void *token;
    uint32_t written;
    int r = virtq_wait(&blk->vq, &token, &written, VIRTIO_TIMEOUT_DEFAULT);

    if (r < 0)
        return r;
    *req = token;
    if (written < 1)
        return -VIRTIO_EDEVICE;
    return status_result((*req)->status);
}
