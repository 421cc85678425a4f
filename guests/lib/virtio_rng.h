/* virtio_rng.h - a virtio entropy device (virtio v1.2, 5.4). */
#ifndef GUEST_VIRTIO_RNG_H
#define GUEST_VIRTIO_RNG_H

#include "virtio.h"

struct virtio_rng {
    struct virtio_dev dev;
    struct virtq vq;
};

int virtio_rng_init(struct virtio_rng *rng, unsigned nth);
/* Fill buf with len random bytes (the device may hand them out piecemeal). */
int virtio_rng_read(struct virtio_rng *rng, void *buf, uint32_t len);

#endif
