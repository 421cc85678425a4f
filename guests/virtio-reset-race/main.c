/*
 * virtio-reset-race - reset a virtio-blk device while a request is in flight,
 * set it up again at the same ring addresses, and check the new rings work.
 *
 * Each round posts a read (in flight: not waited for), resets the device and
 * initializes it again with the library (virtio_begin waits until Status
 * reads 0, as 2.4.1 requires of a driver), then reads one sector through the
 * new rings and checks its bytes.  The device must never answer a valid
 * sequence with DEVICE_NEEDS_RESET, and a completion of the old request must
 * not land in the new rings (the read must come back whole and in order).
 *
 * Command line:
 *   rounds=N   reset/setup rounds (default 300)
 *
 * The host fills sector s of the disk with bytes (s * 7 + i) & 0xff.
 * SKIP without a block device; FAILURE at the first bad round.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_blk.h"
#include "virtio_cmdline.h"

#define INFLIGHT_SECTORS 64     /* 32 KiB: keeps the device busy a while */

static struct virtio_blk blk;
static uint8_t inflight_buf[INFLIGHT_SECTORS * VIRTIO_BLK_SECTOR] __attribute__((aligned(16)));
static uint8_t check_buf[VIRTIO_BLK_SECTOR] __attribute__((aligned(16)));
static struct {
    uint32_t type, reserved;
    uint64_t sector;
} inflight_hdr;
static volatile uint8_t inflight_status;

/* Post a read and kick, but do not wait for it: it is in flight at the reset. */
static void post_inflight_read(void)
{
    struct virtq_buf bufs[3] = {
        { &inflight_hdr, sizeof(inflight_hdr) },
        { inflight_buf, sizeof(inflight_buf) },
        { (const void *)&inflight_status, 1 },
    };

    inflight_hdr.type = 0;      /* VIRTIO_BLK_T_IN */
    inflight_hdr.sector = 0;
    inflight_status = 0xff;
    GUEST_ASSERT_EQ(virtq_add(&blk.vq, bufs, 1, 2, &inflight_hdr), 0);
    virtq_kick(&blk.vq);
}

static void setup_or_fail(unsigned round)
{
    int r = virtio_blk_init(&blk, 0);

    if (r < 0)
        test_failure("round %u: set-up: %s", round, virtio_strerror(r));
}

int main(void)
{
    uint64_t rounds = cmdline_uint("rounds", 300);
    struct virtio_dev probe;

    if (virtio_find(VIRTIO_ID_BLOCK, 0, &probe) < 0)
        test_skip("no virtio-blk device");
    setup_or_fail(0);
    if (blk.capacity < INFLIGHT_SECTORS)
        test_error("the disk needs at least %u sectors", INFLIGHT_SECTORS);

    for (unsigned round = 1; round <= rounds; round++) {
        uint64_t sector = round % blk.capacity;

        post_inflight_read();
        setup_or_fail(round);           /* reset with the read in flight */
        int r = virtio_blk_read(&blk, sector, check_buf, 1);
        if (r < 0)
            test_failure("round %u: read after reset: %s (status %x)", round,
                         virtio_strerror(r),
                         *(volatile uint32_t *)(blk.dev.base + VIRTIO_MMIO_STATUS));
        for (unsigned i = 0; i < VIRTIO_BLK_SECTOR; i++)
            if (check_buf[i] != (uint8_t)(sector * 7 + i))
                test_failure("round %u: sector %lu byte %u is %#x, not %#x", round,
                             sector, i, check_buf[i], (uint8_t)(sector * 7 + i));
    }
    printf("virtio-reset-race: %lu rounds, each a reset with a request in flight\n", rounds);
    test_success();
}
