/*
 * devices.c - the canary's device probes: the parent partition's virtio
 * backends given buffers and rings that are not this guest's RAM.
 *
 * virtio-console's transmit queue reads a buffer and writes it to the
 * console (which the test scans); virtio-rng's request queue writes one.
 * For every address of the probe list, on a freshly reset device, one
 * chain with a 16-byte buffer there, and once the descriptor table itself
 * in hv's boot page: the device must refuse the ring (DEVICE_NEEDS_RESET,
 * virtio 1.2 2.1.2) and complete nothing.  A good write at the end shows
 * the device works again after a reset.
 */
#include "canary.h"
#include "hypercall.h"
#include "printf.h"
#include "test.h"
#include "virtio_console.h"
#include "virtio_rng.h"

#define WAIT_NS (10ull * 1000 * 1000 * 1000)

static struct virtio_console con;
static struct virtio_rng rng;

static uint32_t rd32(struct virtio_dev *d, unsigned reg)
{
    return *(volatile uint32_t *)(d->base + reg);
}

static void wr32(struct virtio_dev *d, unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(d->base + reg) = v;
}

/* The device must halt on the chain: DEVICE_NEEDS_RESET, no used entry. */
static void expect_refused(struct virtio_dev *d, struct virtq *vq, const char *what, uint64_t at)
{
    uint64_t t0 = virtio_now();
    while (!(rd32(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) {
        if (virtio_now() - t0 > WAIT_NS)
            test_failure("canary: %s at 0x%lx: the device never refused it", what, at);
        hv_hypercall0(HV_HC_YIELD);
    }
    if (__atomic_load_n(&vq->used.idx, __ATOMIC_ACQUIRE) != 0)
        test_failure("canary: %s at 0x%lx: the device completed it", what, at);
}

/* After a reset, the queue set up again by hand with its descriptor
 * table at `table` (as virtio-bad does), one chain published, notified. */
static void ring_at(struct virtio_dev *d, struct virtq *vq, uint64_t table)
{
    if (virtio_begin(d, d->features) < 0)
        test_error("canary: a device refused its features again");
    wr32(d, VIRTIO_MMIO_QUEUE_SEL, vq->index);
    wr32(d, VIRTIO_MMIO_QUEUE_NUM, vq->size);
    wr32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)table);
    wr32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(table >> 32));
    wr32(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)&vq->avail);
    wr32(d, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
    wr32(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)&vq->used);
    wr32(d, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
    wr32(d, VIRTIO_MMIO_QUEUE_READY, 1);
    virtio_driver_ok(d);
    vq->avail.ring[0] = 0;
    __atomic_store_n(&vq->avail.idx, 1, __ATOMIC_RELEASE);
    wr32(d, VIRTIO_MMIO_QUEUE_NOTIFY, vq->index);
}

/* One chain with a 16-byte buffer at `at` (device-readable or -writable),
 * or (ring) the descriptor table in hv's boot page: refused either way. */
static void probe(struct virtio_dev *d, struct virtq *vq, bool device_writes, uint64_t at,
                  bool ring, const char *what)
{
    struct virtq_buf b = { (const void *)(uintptr_t)at, 16 };
    if (ring) {
        ring_at(d, vq, at);
    } else {
        if (virtq_add(vq, &b, device_writes ? 0 : 1, device_writes ? 1 : 0, vq) < 0)
            test_error("canary: %s: no free descriptor", what);
        virtq_kick(vq);
    }
    expect_refused(d, vq, what, at);
}

void scan_devices(const uint64_t *bad, unsigned n, uint64_t boot_page, uint64_t *probes)
{
    for (unsigned i = 0; i <= n; i++) {
        bool ring = i == n;             /* last: the ring itself in hv's page */
        uint64_t at = ring ? boot_page : bad[i];
        int r = virtio_console_init(&con, 0);
        if (r < 0)
            test_error("canary: virtio-console: %s", virtio_strerror(r));
        probe(&con.dev, &con.tx, false, at, ring, ring ? "console ring" : "console buffer");
        if ((r = virtio_rng_init(&rng, 0)) < 0)
            test_error("canary: virtio-rng: %s", virtio_strerror(r));
        probe(&rng.dev, &rng.vq, true, at, ring, ring ? "rng ring" : "rng buffer");
        *probes += 2;
    }
    static const char done[] = "canary: devices refused every foreign buffer and ring\n";
    int r = virtio_console_init(&con, 0);
    if (r < 0 || (r = virtio_console_write(&con, done, sizeof(done) - 1)) < 0)
        test_failure("canary: virtio-console after the probes: %s", virtio_strerror(r));
}
