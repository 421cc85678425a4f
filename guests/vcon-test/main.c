/*
 * vcon-test - one line out through virtio-console port 0.
 *
 * Writes "vcon: hello from vcon-test\n" to the device; the host checks it
 * arrived on the device's backend (QEMU: the virtconsole's chardev).  The
 * serial console gets only the progress and the result line.  SKIP without
 * a console device.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_console.h"

static struct virtio_console con;

int main(void)
{
    static const char line[] = "vcon: hello from vcon-test\n";
    int r = virtio_console_init(&con, 0);

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-console device");
    if (r < 0)
        test_failure("vcon: init: %s", virtio_strerror(r));
    if ((r = virtio_console_write(&con, line, sizeof(line) - 1)) < 0)
        test_failure("vcon: write: %s", virtio_strerror(r));
    printf("vcon: wrote %u bytes to port 0\n", (unsigned)(sizeof(line) - 1));
    test_success();
}
