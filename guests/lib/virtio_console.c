/* virtio_console.c - a virtio console, port 0 transmit (virtio v1.2, 5.3). */
#include "virtio_console.h"

#define CONSOLE_TRANSMITQ       1       /* port 0's transmitq (5.3.2) */

int virtio_console_init(struct virtio_console *con, unsigned nth)
{
    int r;

    if ((r = virtio_find(VIRTIO_ID_CONSOLE, nth, &con->dev)) < 0)
        return r;
    if ((r = virtio_begin(&con->dev, 0)) < 0)     /* no MULTIPORT: port 0 only */
        return r;
    if ((r = virtq_setup(&con->dev, CONSOLE_TRANSMITQ, &con->tx)) < 0) {
        virtio_fail(&con->dev);
        return r;
    }
    virtio_driver_ok(&con->dev);
    return 0;
}

/*
 * Output is one device-readable buffer on transmitq (5.3.6.2); the device
 * writes nothing back, so the used length is 0.  Waiting for the used
 * entry means the bytes have left the guest's buffer, which the caller may
 * then reuse.
 */
int virtio_console_write(struct virtio_console *con, const void *buf, uint32_t len)
{
    struct virtq_buf b = { buf, len };
    void *token;
    uint32_t written;
    int r;

    if (len == 0)
        return 0;
    if ((r = virtq_add(&con->tx, &b, 1, 0, (void *)buf)) < 0)
        return r;
    virtq_kick(&con->tx);
    if ((r = virtq_wait(&con->tx, &token, &written, VIRTIO_TIMEOUT_DEFAULT)) < 0)
        return r;
    return token == buf ? 0 : -VIRTIO_EDEVICE;
}
