/* virtio_rng.c - a virtio entropy device (virtio v1.2, 5.4). */
#include "virtio_rng.h"

int virtio_rng_init(struct virtio_rng *rng, unsigned nth)
{
    int r;

    if ((r = virtio_find(VIRTIO_ID_RNG, nth, &rng->dev)) < 0)
        return r;
    if ((r = virtio_begin(&rng->dev, 0)) < 0)
        return r;
    if ((r = virtq_setup(&rng->dev, 0, &rng->vq)) < 0) {
        virtio_fail(&rng->dev);
        return r;
    }
    virtio_driver_ok(&rng->dev);
    return 0;
}

/*
 * The whole device protocol: post a device-writable buffer on
 * requestq; the used length says how many bytes it filled (5.4.6), which
 * may be fewer than asked, so repeat for the rest.  A completion with no
 * bytes at all is legal, but a device that only ever does that would spin
 * us forever: it counts as broken after a few in a row.
 */
int virtio_rng_read(struct virtio_rng *rng, void *buf, uint32_t len)
{
    uint8_t *p = buf;
    unsigned empty = 0;

    while (len > 0) {
        struct virtq_buf b = { p, len };
        void *token;
        uint32_t got;
        int r;

        if ((r = virtq_add(&rng->vq, &b, 0, 1, p)) < 0)
            return r;
        virtq_kick(&rng->vq);
        if ((r = virtq_wait(&rng->vq, &token, &got, VIRTIO_TIMEOUT_DEFAULT)) < 0)
            return r;
        if (token != p)
            return -VIRTIO_EDEVICE;
        if (got == 0 && ++empty > 16)
            return -VIRTIO_EDEVICE;
        p += got;
        len -= got;
    }
    return 0;
}
