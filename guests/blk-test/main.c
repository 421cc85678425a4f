/*
 * blk-test - write a pattern through virtio-blk, flush, read it back.
 *
 * Command line (all optional):
 *   sectors=N   how many 512-byte sectors to write (default 64, max 256)
 *   start=S     the first sector (default 0)
 *   seed=X      pattern seed (default 7)
 *   wait=event  under hv, sleep on the device's event instead of polling
 *
 * The pattern stays on the disk for the host to check in the image file:
 *
 *     byte i (0..511) of sector s  =  (s * 31 + i + seed) & 0xff
 *
 * where s is the absolute sector number.  Also: GET_ID (prints the serial),
 * DISCARD of the 8 sectors after the pattern when the device offers it,
 * and one timing line before the result:
 *     blk: write 32768 bytes 123 <unit>, flush 4 <unit>, read 32768 bytes 99 <unit>
 * <unit> is "ns (hv clock)" under hv, "tsc cycles (rdtsc)" elsewhere.
 * SKIP without a block device; FAILURE if the device misbehaves.
 */
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_blk.h"
#include "virtio_cmdline.h"

#define MAX_SECTORS     256
#define DISCARD_SECTORS 8
#define EVENT_VECTOR    0x40            /* any free vector >= HV_VECTOR_MIN */

static struct virtio_blk blk;
static uint64_t wbuf[MAX_SECTORS * VIRTIO_BLK_SECTOR / 8];
static uint64_t rbuf[MAX_SECTORS * VIRTIO_BLK_SECTOR / 8];

/* Per-byte add without carries between bytes (SWAR): 8 pattern bytes a step. */
static uint64_t bytes_add(uint64_t x, uint64_t y)
{
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7full;

    return ((x & low7) + (y & low7)) ^ ((x ^ y) & ~low7);
}

/* The 64 words of sector s: bytes b, b+1, ..., b+511 (mod 256). */
static void fill_sector(uint64_t *w, uint64_t s, uint64_t seed)
{
    uint64_t b = (s * 31 + seed) & 0xff;
    uint64_t word = bytes_add(b * 0x0101010101010101ull, 0x0706050403020100ull);

    for (unsigned i = 0; i < VIRTIO_BLK_SECTOR / 8; i++) {
        w[i] = word;
        word = bytes_add(word, 0x0808080808080808ull);
    }
}

static void check(int r, const char *what)
{
    if (r < 0)
        test_failure("blk: %s: %s", what, virtio_strerror(r));
}

static void no_handler(unsigned event)
{
    (void)event;
}

/* Under hv: register the event page, mask the device's event (no upcalls). */
static void wait_on_event(void)
{
    if (!hv_hypercalls_ready()) {
        printf("blk: wait=event needs hv; polling\n");
        return;
    }
    if (hv_events_init(EVENT_VECTOR, no_handler) < 0)
        test_error("blk: cannot register the event page");
    hv_event_page()->masked[blk.dev.irq / 64] |= 1ull << (blk.dev.irq % 64);
    if (virtq_use_event(&blk.vq))
        printf("blk: waiting on hv event %u\n", blk.dev.irq);
}

int main(void)
{
    uint64_t n = cmdline_uint("sectors", 64), start = cmdline_uint("start", 0);
    uint64_t seed = cmdline_uint("seed", 7);
    uint64_t bytes = n * VIRTIO_BLK_SECTOR, t0, t_write, t_flush, t_read;
    char id[VIRTIO_BLK_ID_BYTES + 1];
    int r = virtio_blk_init(&blk, 0);

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-blk device");
    check(r, "init");
    printf("blk: %lu sectors, blk_size %u, features %lx, queue size %u, event %u\n",
           blk.capacity, blk.blk_size, blk.dev.features, blk.vq.size, blk.dev.irq);
    if (n == 0 || n > MAX_SECTORS)
        test_error("blk: sectors=%lu: 1..%u please", n, MAX_SECTORS);
    if (start > blk.capacity || n > blk.capacity - start)
        test_error("blk: sectors %lu..%lu do not fit the disk", start, start + n);
    if (virtio_blk_read_only(&blk))
        test_skip("blk: the device is read-only");
    if (cmdline_is("wait", "event"))
        wait_on_event();

    r = virtio_blk_get_id(&blk, id);
    if (r == -VIRTIO_EUNSUPP)
        printf("blk: GET_ID unsupported\n");
    else
        check(r, "get-id");
    if (r == 0)
        printf("blk: id \"%s\"\n", id);

    for (uint64_t s = 0; s < n; s++)
        fill_sector(&wbuf[s * VIRTIO_BLK_SECTOR / 8], start + s, seed);

    t0 = virtio_now();
    check(virtio_blk_write(&blk, start, wbuf, n), "write");
    t_write = virtio_now() - t0;
    t0 = virtio_now();
    r = virtio_blk_flush(&blk);
    if (r != -VIRTIO_EUNSUPP)
        check(r, "flush");
    t_flush = virtio_now() - t0;
    t0 = virtio_now();
    check(virtio_blk_read(&blk, start, rbuf, n), "read");
    t_read = virtio_now() - t0;

    for (uint64_t i = 0; i < n * VIRTIO_BLK_SECTOR / 8; i++) {
        if (rbuf[i] == wbuf[i])
            continue;
        unsigned k = (unsigned)__builtin_ctzll(rbuf[i] ^ wbuf[i]) / 8;
        uint64_t off = i * 8 + k;

        test_failure("blk: sector %lu byte %lu: read %02lx, wrote %02lx",
                     start + off / VIRTIO_BLK_SECTOR, off % VIRTIO_BLK_SECTOR,
                     (rbuf[i] >> (8 * k)) & 0xff, (wbuf[i] >> (8 * k)) & 0xff);
    }

    /* Past the pattern, so the host still finds every pattern byte. */
    if (start + n + DISCARD_SECTORS <= blk.capacity) {
        r = virtio_blk_discard(&blk, start + n, DISCARD_SECTORS);
        if (r == -VIRTIO_EUNSUPP)
            printf("blk: discard unsupported\n");
        else
            check(r, "discard");
    }
    /* A request past the end never reaches the device. */
    GUEST_ASSERT_EQ(virtio_blk_read(&blk, blk.capacity, rbuf, 1), -VIRTIO_ERANGE);

    printf("blk: write %lu bytes %lu %s, flush %lu, read %lu bytes %lu\n", bytes, t_write,
           virtio_now_unit(), t_flush, bytes, t_read);
    test_success();
}
