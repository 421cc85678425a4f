/*
 * rng-test - two reads from virtio-rng: not all zero, and not equal.
 *
 *   bytes=N   bytes per read (default 256, max 4096)
 *
 * SKIP without an entropy device.  With 256 random bytes a false FAILURE
 * needs a 2^-2048 coincidence.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_cmdline.h"
#include "virtio_rng.h"

#define MAX_BYTES 4096

static struct virtio_rng rng;
static uint8_t a[MAX_BYTES], b[MAX_BYTES];

static bool all_zero(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

int main(void)
{
    uint64_t n = cmdline_uint("bytes", 256);
    int r = virtio_rng_init(&rng, 0);
    bool same = true;

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-rng device");
    if (r < 0)
        test_failure("rng: init: %s", virtio_strerror(r));
    if (n == 0 || n > MAX_BYTES)
        test_error("rng: bytes=%lu: 1..%u please", n, MAX_BYTES);

    if ((r = virtio_rng_read(&rng, a, (uint32_t)n)) < 0 ||
        (r = virtio_rng_read(&rng, b, (uint32_t)n)) < 0)
        test_failure("rng: read: %s", virtio_strerror(r));
    for (uint32_t i = 0; i < n; i++)
        same = same && a[i] == b[i];

    printf("rng: %lu bytes twice; first: %02x%02x%02x%02x%02x%02x%02x%02x\n", n, a[0], a[1],
           a[2], a[3], a[4], a[5], a[6], a[7]);
    if (all_zero(a, (uint32_t)n) || all_zero(b, (uint32_t)n))
        test_failure("rng: a read returned only zero bytes");
    if (same)
        test_failure("rng: two reads returned the same bytes");
    test_success();
}
