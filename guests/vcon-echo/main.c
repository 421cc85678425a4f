/*
 * vcon-echo - virtio-console both ways: wait for one line of host input on
 * port 0's receiveq, send "echo: <line>\n" back on its transmitq.
 *
 *   wait=S   seconds to wait for input (default 20)
 *
 * Made for `hv console SOCKET`: the guest waits for the host side, so an
 * attaching client cannot miss its output.  The serial console gets
 * progress and the result line.  SKIP without a console device; ERROR if
 * no line arrives in time.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "virtio_console.h"

#define RECEIVEQ        0
#define TRANSMITQ       1
#define LINE_MAX        200

static struct virtio_console con;
static struct virtq rx;
static char in[64];
static char line[LINE_MAX];
static char out[LINE_MAX + 8];

int main(void)
{
    uint64_t wait_ticks = cmdline_uint("wait", 20) * 1000ull * 1000 * 1000;
    unsigned have = 0;
    uint64_t t0;
    int r;

    if ((r = virtio_find(VIRTIO_ID_CONSOLE, 0, &con.dev)) == -VIRTIO_ENODEV)
        test_skip("no virtio-console device");
    if (r < 0 || (r = virtio_begin(&con.dev, 0)) < 0 ||
        (r = virtq_setup(&con.dev, RECEIVEQ, &rx)) < 0 ||
        (r = virtq_setup(&con.dev, TRANSMITQ, &con.tx)) < 0)
        test_failure("vcon: init: %s", virtio_strerror(r));
    virtio_driver_ok(&con.dev);
    printf("vcon: waiting for a line of input\n");

    t0 = virtio_now();
    for (;;) {
        struct virtq_buf b = { in, sizeof(in) };
        void *token;
        uint32_t got;
        bool done = false;

        if ((r = virtq_add(&rx, &b, 0, 1, in)) < 0)
            test_failure("vcon: post a receive buffer: %s", virtio_strerror(r));
        virtq_kick(&rx);
        for (;;) {
            r = virtq_wait(&rx, &token, &got, wait_ticks);
            if (r == -VIRTIO_ETIMEOUT && virtio_now() - t0 < wait_ticks)
                continue;
            break;
        }
        if (r == -VIRTIO_ETIMEOUT)
            test_error("vcon: no input within the wait");
        if (r < 0 || token != in || got > sizeof(in))
            test_failure("vcon: receive: %s", r < 0 ? virtio_strerror(r) : "bad completion");
        for (uint32_t i = 0; i < got && !done; i++) {
            if (in[i] == '\n')
                done = true;
            else if (have < LINE_MAX - 1)
                line[have++] = in[i];
        }
        if (done)
            break;
    }
    line[have] = '\0';

    __builtin_memcpy(out, "echo: ", 6);
    __builtin_memcpy(out + 6, line, have);
    out[6 + have] = '\n';
    if ((r = virtio_console_write(&con, out, 6 + have + 1)) < 0)
        test_failure("vcon: write: %s", virtio_strerror(r));
    printf("vcon: echoed %u bytes\n", have);
    test_success();
}
