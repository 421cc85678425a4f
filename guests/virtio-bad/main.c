/*
 * virtio-bad - a guest that breaks its own virtio-blk device on purpose.
 *
 * The transport is set up with the guest library (discovery, features,
 * queue), then the ring or the request is written by hand.  Command line:
 *
 *   mode=M     what to break (required):
 *     broken rings -- the device must set DEVICE_NEEDS_RESET (64) in Status
 *     and write nothing to the used ring:
 *       loop        a descriptor chain that loops (0 -> 1 -> 0)
 *       oob-addr    a descriptor whose buffer lies beyond guest RAM
 *       next-oob    a NEXT link to a descriptor outside the table
 *       avail-jump  avail.idx jumps by more than the queue size
 *       ring-reserved  the descriptor table in hv's boot page (the start
 *                   info page: RAM, but not the guest's frame)
 *     bad requests -- the request completes (IOERR, or with no status byte
 *     a used length of 0) and the device goes on working:
 *       sector-end       read 1 sector at sector == capacity
 *       sector-overflow  read at sector 2^64-1 (sector + count wraps), and
 *                        write at 2^55 (sector * 512 wraps to 0 mod 2^64)
 *       no-status        a chain with only the readable header
 *       ro-write         (read-only disk) the driver refuses writes; a raw
 *                        OUT and DISCARD request get IOERR from the device
 *       buf-reserved     a read into and a write from hv's boot page: IOERR,
 *                        and the page is unchanged
 *   rekick=1   broken rings only: after DEVICE_NEEDS_RESET, repair the ring
 *              (one valid request at ring[0]) and kick again without a reset:
 *              the device must not serve it (it is halted until reset)
 *
 * Every mode then checks that the second device (virtio-rng) still works,
 * that a reset brings the block device back (a good read), and ends with
 * SUCCESS.  SKIP without a block device; ERROR without rng or a mode.
 */
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "virtio_blk.h"
#include "virtio_cmdline.h"
#include "virtio_rng.h"

#define T_IN            0
#define T_OUT           1
#define T_DISCARD       11
#define S_OK            0
#define S_IOERR         1
#define STATUS_UNSET    0xff
#define FAR_AWAY        (1ull << 40)            /* far beyond any guest RAM hv gives */
#define WAIT_TICKS      (5ull * 1000 * 1000 * 1000)
#define QUIET_TICKS     (300ull * 1000 * 1000)  /* ~0.1-0.3 s */

struct blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct discard_seg {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

static struct virtio_blk blk;
static struct virtio_rng rng;
static struct blk_req_hdr hdr;
static uint8_t data[2 * VIRTIO_BLK_SECTOR] __attribute__((aligned(16)));
static volatile uint8_t status;

static uint32_t rd32(unsigned reg)
{
    return *(volatile uint32_t *)(blk.dev.base + reg);
}

static void wr32(unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(blk.dev.base + reg) = v;
}

/* hv's own page (the loader's boot area holds start_info): RAM, not ours. */
static uint8_t *hv_page(void)
{
    return (uint8_t *)((uintptr_t)start_info() & ~(uintptr_t)0xfff);
}

static void notify(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *(volatile uint32_t *)(blk.dev.base + VIRTIO_MMIO_QUEUE_NOTIFY) = 0;
}

static uint16_t used_idx(void)
{
    return __atomic_load_n(&blk.vq.used.idx, __ATOMIC_ACQUIRE);
}

static void publish(uint16_t head, uint16_t new_idx)
{
    struct virtq *vq = &blk.vq;

    vq->avail.ring[vq->avail_idx & (vq->size - 1)] = head;
    __atomic_store_n(&vq->avail.idx, new_idx, __ATOMIC_RELEASE);
    notify();
}

static void set_desc(unsigned i, const void *addr, uint32_t len, uint16_t flags, uint16_t next)
{
    blk.vq.desc[i] = (struct virtq_desc){ (uintptr_t)addr, len, flags, next };
}

/* A valid 3-descriptor read of sector 0 at desc[0..2], by hand. */
static void valid_read_chain(void)
{
    hdr = (struct blk_req_hdr){ .type = T_IN, .sector = 0 };
    status = STATUS_UNSET;
    set_desc(0, &hdr, sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
    set_desc(1, data, VIRTIO_BLK_SECTOR, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    set_desc(2, (const void *)&status, 1, VIRTQ_DESC_F_WRITE, 0);
}

static bool wait_needs_reset(void)
{
    uint64_t t0 = virtio_now();

    for (unsigned polls = 1;; polls++) {
        if (rd32(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
            return true;
        if (polls % 64 == 0 && virtio_now() - t0 > WAIT_TICKS)
            return false;
        asm volatile("pause");
    }
}

static void check_rng(void)
{
    static uint8_t buf[64];
    unsigned nonzero = 0;
    int r = virtio_rng_read(&rng, buf, sizeof(buf));

    if (r < 0)
        test_failure("bad: rng after the blk error: %s", virtio_strerror(r));
    for (unsigned i = 0; i < sizeof(buf); i++)
        nonzero += buf[i] != 0;
    if (nonzero == 0)
        test_failure("bad: rng returned only zeros");
    printf("bad: rng still works\n");
}

/* The block device answers a good read (after a reset, if it needed one). */
static void check_blk_works(const char *when)
{
    int r = virtio_blk_read(&blk, 0, data, 1);

    if (r < 0)
        test_failure("bad: blk read %s: %s", when, virtio_strerror(r));
    if (rd32(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
        test_failure("bad: NEEDS_RESET set %s", when);
    printf("bad: blk read works %s\n", when);
}

/* ---- broken rings ---------------------------------------------------------- */
static void broken_ring(const char *mode)
{
    struct virtq *vq = &blk.vq;
    uint16_t before = used_idx();

    if (cmdline_is("mode", "loop")) {
        hdr = (struct blk_req_hdr){ .type = T_IN, .sector = 0 };
        set_desc(0, &hdr, sizeof(hdr), VIRTQ_DESC_F_NEXT, 1);
        set_desc(1, data, VIRTIO_BLK_SECTOR, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
        publish(0, (uint16_t)(vq->avail_idx + 1));
    } else if (cmdline_is("mode", "oob-addr")) {
        valid_read_chain();
        set_desc(1, (const void *)FAR_AWAY, VIRTIO_BLK_SECTOR,
                 VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
        publish(0, (uint16_t)(vq->avail_idx + 1));
    } else if (cmdline_is("mode", "next-oob")) {
        valid_read_chain();
        blk.vq.desc[1].next = vq->size + 3;
        publish(0, (uint16_t)(vq->avail_idx + 1));
    } else if (cmdline_is("mode", "avail-jump")) {
        valid_read_chain();
        publish(0, (uint16_t)(vq->avail_idx + vq->size + 1));
    } else if (cmdline_is("mode", "ring-reserved")) {
        /* Set the device up again by hand, the descriptor table in hv's page. */
        if (virtio_begin(&blk.dev, blk.dev.features) < 0)
            test_failure("bad: ring-reserved: re-negotiation failed");
        wr32(VIRTIO_MMIO_QUEUE_SEL, 0);
        wr32(VIRTIO_MMIO_QUEUE_NUM, vq->size);
        wr32(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)(uintptr_t)hv_page());
        wr32(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        wr32(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)&vq->avail);
        wr32(VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
        wr32(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)&vq->used);
        wr32(VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
        wr32(VIRTIO_MMIO_QUEUE_READY, 1);
        virtio_driver_ok(&blk.dev);
    } else {
        test_error("bad: unknown mode=%s", mode);
    }
    if (!wait_needs_reset())
        test_failure("bad: %s: Status never showed DEVICE_NEEDS_RESET (status %x)", mode,
                     rd32(VIRTIO_MMIO_STATUS));
    printf("bad: %s: device status %x (DEVICE_NEEDS_RESET)\n", mode, rd32(VIRTIO_MMIO_STATUS));
    if (used_idx() != before)
        test_failure("bad: %s: the device wrote used.idx %u (was %u)", mode, used_idx(), before);

    check_rng();

    if (cmdline_uint("rekick", 0)) {
        /* Repair the ring: one valid request at ring[0], avail.idx = 1. */
        uint64_t t0;

        valid_read_chain();
        vq->avail.ring[0] = 0;
        __atomic_store_n(&vq->avail.idx, (uint16_t)(vq->avail_idx + 1), __ATOMIC_RELEASE);
        notify();
        for (t0 = virtio_now(); virtio_now() - t0 < QUIET_TICKS;)
            asm volatile("pause");
        if (used_idx() != before || status != STATUS_UNSET)
            test_failure("bad: %s: a kick after DEVICE_NEEDS_RESET, without a reset, was "
                         "served (used.idx %u, was %u; status %u)", mode, used_idx(), before,
                         status);
        if (!(rd32(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET))
            test_failure("bad: %s: DEVICE_NEEDS_RESET cleared without a reset", mode);
        printf("bad: %s: a repaired ring is not served before a reset\n", mode);
    }

    /* The driver's way out: reset and set the device up again. */
    int r = virtio_blk_init(&blk, 0);
    if (r < 0)
        test_failure("bad: re-init after reset: %s", virtio_strerror(r));
    check_blk_works("after a reset");
}

/* ---- bad requests ---------------------------------------------------------- */

/* One request by hand through the library's ring: header, data, status. */
static int raw_request(uint32_t type, uint64_t sector, void *buf, uint32_t len, bool dev_writes,
                       bool with_status, uint32_t *used_len)
{
    struct virtq_buf bufs[3];
    unsigned n = 0, n_out;
    void *token;
    int r;

    hdr = (struct blk_req_hdr){ .type = type, .sector = sector };
    status = STATUS_UNSET;
    bufs[n++] = (struct virtq_buf){ &hdr, sizeof(hdr) };
    if (len > 0 && !dev_writes)
        bufs[n++] = (struct virtq_buf){ buf, len };
    n_out = n;
    if (len > 0 && dev_writes)
        bufs[n++] = (struct virtq_buf){ buf, len };
    if (with_status)
        bufs[n++] = (struct virtq_buf){ (const void *)&status, 1 };
    if ((r = virtq_add(&blk.vq, bufs, n_out, n - n_out, &hdr)) < 0)
        return r;
    virtq_kick(&blk.vq);
    if ((r = virtq_wait(&blk.vq, &token, used_len, WAIT_TICKS)) < 0)
        return r;
    if (token != &hdr)
        return -VIRTIO_EDEVICE;
    return 0;
}

static void expect_ioerr(const char *what, uint32_t type, uint64_t sector, uint32_t len,
                         bool dev_writes)
{
    uint32_t used_len = 0;
    int r = raw_request(type, sector, data, len, dev_writes, true, &used_len);

    if (r < 0)
        test_failure("bad: %s: no completion: %s", what, virtio_strerror(r));
    if (used_len < 1 || status != S_IOERR)
        test_failure("bad: %s: status %u, used length %u; want IOERR (%u)", what, status,
                     used_len, S_IOERR);
    if (rd32(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
        test_failure("bad: %s: a bad request must not need a reset", what);
    printf("bad: %s: IOERR\n", what);
}

static void bad_request(const char *mode)
{
    if (cmdline_is("mode", "sector-end")) {
        expect_ioerr("read at sector == capacity", T_IN, blk.capacity, VIRTIO_BLK_SECTOR, true);
        expect_ioerr("read across the end", T_IN, blk.capacity - 1, 2 * VIRTIO_BLK_SECTOR,
                     true);
    } else if (cmdline_is("mode", "sector-overflow")) {
        for (unsigned i = 0; i < sizeof(data); i++)
            data[i] = 0xa5;
        expect_ioerr("read at sector 2^64-1 (wraps)", T_IN, ~0ull, 2 * VIRTIO_BLK_SECTOR, true);
        expect_ioerr("write at sector 2^55 (x512 wraps to 0)", T_OUT, 1ull << 55,
                     VIRTIO_BLK_SECTOR, false);
        expect_ioerr("write at sector 2^64-1", T_OUT, ~0ull, VIRTIO_BLK_SECTOR, false);
    } else if (cmdline_is("mode", "no-status")) {
        uint32_t used_len = 12345;
        int r = raw_request(T_IN, 0, data, 0, true, false, &used_len);

        if (r < 0)
            test_failure("bad: no-status: no completion: %s", virtio_strerror(r));
        if (used_len != 0)
            test_failure("bad: no-status: used length %u, want 0", used_len);
        if (rd32(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
            test_failure("bad: no-status: a bad request must not need a reset");
        printf("bad: request without a status byte: completed with length 0\n");
    } else if (cmdline_is("mode", "buf-reserved")) {
        static uint8_t before[VIRTIO_BLK_SECTOR];
        uint8_t *page = hv_page();
        uint32_t used_len = 0;
        int r;

        __builtin_memcpy(before, page, sizeof(before));
        r = raw_request(T_IN, 0, page, VIRTIO_BLK_SECTOR, true, true, &used_len);
        if (r < 0 || status != S_IOERR)
            test_failure("bad: read into hv's page: r=%d status %u, want IOERR", r, status);
        printf("bad: read into hv's page: IOERR\n");
        r = raw_request(T_OUT, 0, page, VIRTIO_BLK_SECTOR, false, true, &used_len);
        if (r < 0 || status != S_IOERR)
            test_failure("bad: write from hv's page: r=%d status %u, want IOERR", r, status);
        printf("bad: write from hv's page: IOERR\n");
        for (unsigned i = 0; i < sizeof(before); i++)
            if (page[i] != before[i])
                test_failure("bad: hv's page changed at byte %u", i);
    } else if (cmdline_is("mode", "ro-write")) {
        struct discard_seg seg = { .sector = 0, .num_sectors = 1 };
        uint32_t used_len = 0;
        int r;

        if (!virtio_blk_read_only(&blk))
            test_error("bad: ro-write needs a read-only disk");
        for (unsigned i = 0; i < sizeof(data); i++)
            data[i] = 0x5a;
        r = virtio_blk_write(&blk, 0, data, 1);
        if (r != -VIRTIO_EUNSUPP)
            test_failure("bad: driver write on a read-only disk: %d, want UNSUPP", r);
        printf("bad: driver reports write: %s\n", virtio_strerror(r));
        expect_ioerr("raw OUT on a read-only disk", T_OUT, 0, VIRTIO_BLK_SECTOR, false);
        r = raw_request(T_DISCARD, 0, &seg, sizeof(seg), false, true, &used_len);
        if (r < 0 || status != S_IOERR)
            test_failure("bad: raw DISCARD on a read-only disk: r=%d status %u", r, status);
        printf("bad: raw DISCARD on a read-only disk: IOERR\n");
    } else {
        test_error("bad: unknown mode=%s", mode);
    }
    check_rng();
    check_blk_works("after the bad request");
}

int main(void)
{
    size_t len;
    const char *m = cmdline_value("mode", 0, &len);
    char mode[32];
    int r;

    if (m == NULL || len == 0 || len >= sizeof(mode))
        test_error("bad: mode= please");
    __builtin_memcpy(mode, m, len);
    mode[len] = '\0';

    r = virtio_blk_init(&blk, 0);
    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-blk device");
    if (r < 0)
        test_failure("bad: blk init: %s", virtio_strerror(r));
    if ((r = virtio_rng_init(&rng, 0)) < 0)
        test_error("bad: rng init: %s", virtio_strerror(r));
    printf("bad: mode %s, %lu sectors, queue size %u, features %lx\n", mode, blk.capacity,
           blk.vq.size, blk.dev.features);

    if (cmdline_is("mode", "loop") || cmdline_is("mode", "oob-addr") ||
        cmdline_is("mode", "next-oob") || cmdline_is("mode", "avail-jump") ||
        cmdline_is("mode", "ring-reserved"))
        broken_ring(mode);
    else
        bad_request(mode);
    test_success();
}
