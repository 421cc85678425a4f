/*
 * virtio_console.h - a virtio console, port 0 transmit (virtio v1.2, 5.3).
 *
 * Without VIRTIO_CONSOLE_F_MULTIPORT the device has one port and two
 * queues: 0 receiveq, 1 transmitq (5.3.2).  Only transmit is driven here;
 * nothing is posted on receiveq, so input waits in the device.
 */
#ifndef GUEST_VIRTIO_CONSOLE_H
#define GUEST_VIRTIO_CONSOLE_H

#include "virtio.h"

struct virtio_console {
    struct virtio_dev dev;
    struct virtq tx;
};

int virtio_console_init(struct virtio_console *con, unsigned nth);
/* Send len bytes on port 0 and wait until the device has taken them. */
int virtio_console_write(struct virtio_console *con, const void *buf, uint32_t len);

#endif
