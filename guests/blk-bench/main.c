/*
 * blk-bench - virtio-blk throughput measured inside the guest.
 *
 * Four timed phases over a region of the disk, at each queue depth asked
 * for (requests kept in flight with the guest library's asynchronous calls):
 *
 *   seq_write   passes= times over the region, seq_size= bytes per request
 *   seq_read    the same, reading
 *   rand_read   rand_ops= requests of rand_size= bytes at random aligned offsets
 *   rand_write  rand_ops= more, at the same offsets
 *
 * plus one FLUSH after each write phase, timed apart.  At depth 1 the
 * phases have those names; at depth D they are seq_write_qdD and so on.
 * Every depth rewrites the same data, so the image ends the same.
 *
 * Command line: start= (first sector, default 2048), region= (bytes, default
 * 4M, at most 8M), passes= (default 1), seq_size= (default 64K, at most the
 * device's size_max), rand_ops= (default 256), rand_size= (default 4K),
 * seed= (default 1), depths= (comma-separated, each 1..32, default 1).
 * Sizes take K/M suffixes.  only=seq_read or only=rand_read runs that one
 * phase alone at each depth, writing nothing: the host stamps the region
 * with seed= and drops it from its page cache first (tools/bench's
 * cold-cache phases), and the reads are checked as usual.
 *
 * Time: the TSC, read with rdtsc around each phase, because it works the
 * same under hv (both engines) and under QEMU, which has no hv clock.  The
 * host converts cycles with its own TSC rate.  Under hv each phase is also
 * timed with HV_HC_CLOCK_READ (hv_ns=), so the host can check the TSC rate
 * the guest really sees; the absolute TSC at the end of each phase
 * (tsc_end=) lets the host check it against the arrival time of the lines.
 * One line per phase:
 *
 *   blk-bench: phase=seq_write ops=64 bytes=4194304 depth=1 tsc=123 tsc_end=456 hv_ns=789
 *
 * Data: sector s of the region holds, as 64-bit words, stamp(s, seed) at
 * word 0, ~stamp at word 63 and zeros elsewhere; the random writes use
 * seed + 1.  Buffers are stamped before the clock starts (ring-0 code is
 * slow on a software KVM), reads are checked after it stops (words 0 and
 * 63 of every sector), and the host checks the image file byte for byte.
 */
#include "events.h"
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_blk.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define SECTOR          VIRTIO_BLK_SECTOR
#define WORDS           (SECTOR / 8)
#define REGION_MAX      (8u << 20)
#define PAGE            4096
#define DEPTH_MAX       32
#define DEPTHS_MAX      8

static struct virtio_blk blk;
static uint64_t seq_buf[REGION_MAX / 8] __attribute__((aligned(PAGE)));   /* seq writes */
static uint64_t rand_buf[REGION_MAX / 8] __attribute__((aligned(PAGE)));  /* rand writes */
static uint64_t read_buf[REGION_MAX / 8] __attribute__((aligned(PAGE)));  /* all reads */
static uint64_t offsets[REGION_MAX / PAGE];     /* random offsets in bytes */
static struct virtio_blk_req reqs[DEPTH_MAX];   /* the requests in flight */
static uint64_t start, region, seq_size, rand_size;

/* Also in tools/bench (blk_stamp): what word 0 of sector s holds. */
static uint64_t stamp(uint64_t sector, uint64_t seed)
{
    return ((seed << 40) ^ sector) * 0x9e3779b97f4a7c15ull;
}

/* Also in tools/bench (blk_offsets): xorshift64*, seeded. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void check(int r, const char *what)
{
    if (r < 0)
        test_failure("blk-bench: %s: %s", what, virtio_strerror(r));
}

/* `bytes` at `buf` as sectors first..: stamped words 0 and 63, zeros between. */
static void stamp_sectors(uint64_t *buf, uint64_t first, uint64_t bytes, uint64_t seed)
{
    for (uint64_t i = 0; i < bytes / SECTOR; i++) {
        buf[i * WORDS] = stamp(first + i, seed);
        buf[i * WORDS + WORDS - 1] = ~stamp(first + i, seed);
    }
}

static void verify_sectors(const uint64_t *buf, uint64_t first, uint64_t bytes, uint64_t seed,
                           const char *phase)
{
    for (uint64_t i = 0; i < bytes / SECTOR; i++)
        if (buf[i * WORDS] != stamp(first + i, seed) ||
            buf[i * WORDS + WORDS - 1] != ~stamp(first + i, seed))
            test_failure("blk-bench: %s: sector %lu reads back wrong (%lx)", phase, first + i,
                         buf[i * WORDS]);
}

/* First touch of a page costs an exit on KVM: pay it before the clock runs. */
static void touch(uint64_t *buf, uint64_t bytes)
{
    for (uint64_t off = 0; off < bytes; off += PAGE)
        ((volatile uint64_t *)buf)[off / 8] = 0;
}

struct clock {
    uint64_t tsc, hv_ns;
};

static struct clock clock_start(void)
{
    struct clock c = { 0, 0 };

    if (hv_hypercalls_ready())
        c.hv_ns = hv_clock_read();
    c.tsc = rdtsc();
    return c;
}

static void report(const char *phase, unsigned depth, struct clock c, uint64_t ops,
                   uint64_t bytes)
{
    uint64_t tsc = rdtsc();
    uint64_t hv_ns = hv_hypercalls_ready() ? hv_clock_read() - c.hv_ns : 0;

    printf("blk-bench: phase=%s", phase);
    if (depth > 1)
        printf("_qd%u", depth);
    printf(" ops=%lu bytes=%lu depth=%u tsc=%lu tsc_end=%lu hv_ns=%lu\n", ops, bytes, depth,
           tsc - c.tsc, tsc, hv_ns);
}

/* Request i of a phase: where on the disk, and which buffer. */
struct op {
    uint64_t sector;
    void *buf;
};

static struct op seq_op(uint64_t i, uint64_t *buf)
{
    uint64_t off = i * seq_size % region;

    return (struct op){ start + off / SECTOR, &buf[off / 8] };
}

static struct op seq_write_op(uint64_t i) { return seq_op(i, seq_buf); }
static struct op seq_read_op(uint64_t i) { return seq_op(i, read_buf); }

static struct op rand_op(uint64_t i, uint64_t *buf)
{
    return (struct op){ start + offsets[i] / SECTOR, &buf[i * rand_size / 8] };
}

static struct op rand_write_op(uint64_t i) { return rand_op(i, rand_buf); }
static struct op rand_read_op(uint64_t i) { return rand_op(i, read_buf); }

/*
 * T:391 One timed phase at queue depth `depth`: keep up to `depth` requests
 * posted, kick once per refill, take each completion as the device gives
 * it (any order) and post the next request in its place.
 */
static void run_phase(const char *phase, unsigned depth, bool write, uint64_t ops,
                      uint32_t sectors, struct op (*op_of)(uint64_t))
{
    struct virtio_blk_req *free_reqs[DEPTH_MAX];
    unsigned n_free = 0;
    uint64_t posted = 0, done = 0;
    struct clock c;

    for (unsigned i = 0; i < depth; i++)
        free_reqs[n_free++] = &reqs[i];
    c = clock_start();
    while (done < ops) {
        while (posted < ops && n_free > 0) {
            struct op op = op_of(posted);

            check(virtio_blk_submit(&blk, free_reqs[--n_free], write, op.sector, op.buf,
                                    sectors), phase);
            posted++;
        }
        virtio_blk_kick(&blk);
        struct virtio_blk_req *req;

        check(virtio_blk_reap(&blk, &req), phase);
        free_reqs[n_free++] = req;
        done++;
    }
    report(phase, depth, c, ops, ops * sectors * SECTOR);
}

static void flush(void)
{
    struct clock c = clock_start();

    check(virtio_blk_flush(&blk), "flush");
    report("flush", 1, c, 1, 0);
}

/* depths=1,4,16,32 into depths[]; how many. */
static unsigned parse_depths(unsigned *depths)
{
    size_t len, at = 0, end;
    const char *v = cmdline_value("depths", 0, &len);
    unsigned n = 0;
    uint64_t d;

    if (v == NULL) {
        depths[0] = 1;
        return 1;
    }
    while (at < len) {
        if (n == DEPTHS_MAX || !cmdline_parse_uint(v + at, len - at, &d, &end) || d == 0 ||
            d > DEPTH_MAX)
            test_error("blk-bench: depths=%.*s: want up to %u depths, each 1..%u", (int)len, v,
                       DEPTHS_MAX, DEPTH_MAX);
        depths[n++] = (unsigned)d;
        at += end;
        if (at < len && v[at] == ',')
            at++;
        else if (at < len)
            test_error("blk-bench: depths=%.*s: not a comma-separated list", (int)len, v);
    }
    return n;
}

int main(void)
{
    uint64_t passes = cmdline_uint("passes", 1), rand_ops = cmdline_uint("rand_ops", 256);
    uint64_t seed = cmdline_uint("seed", 1), region_sectors, seq_ops;
    unsigned depths[DEPTHS_MAX], n_depths = parse_depths(depths);
    int r = virtio_blk_init(&blk, 0);
    size_t only_len;
    bool only_seq_read = cmdline_is("only", "seq_read");
    bool only_rand_read = cmdline_is("only", "rand_read");

    if (cmdline_value("only", 0, &only_len) && !only_seq_read && !only_rand_read)
        test_error("blk-bench: only= takes seq_read or rand_read");

    start = cmdline_uint("start", 2048);
    region = cmdline_uint("region", 4u << 20);
    seq_size = cmdline_uint("seq_size", 64u << 10);
    rand_size = cmdline_uint("rand_size", 4096);
    region_sectors = region / SECTOR;
    seq_ops = passes * (region / seq_size);
    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-blk device");
    check(r, "init");
    if (virtio_blk_read_only(&blk))
        test_skip("blk-bench: the device is read-only");
    if (region == 0 || region > REGION_MAX || seq_size == 0 || seq_size % SECTOR ||
        region % seq_size || seq_size > (uint64_t)blk.chunk_sectors * SECTOR ||
        rand_size == 0 || rand_size % SECTOR || region % rand_size ||
        rand_size > (uint64_t)blk.chunk_sectors * SECTOR ||
        rand_ops * rand_size > REGION_MAX || rand_ops > REGION_MAX / PAGE || passes == 0)
        test_error("blk-bench: region=%lu seq_size=%lu (<= %u) rand_size=%lu rand_ops=%lu "
                   "passes=%lu do not fit", region, seq_size, blk.chunk_sectors * SECTOR,
                   rand_size, rand_ops, passes);
    if (start > blk.capacity || region_sectors > blk.capacity - start)
        test_error("blk-bench: sectors %lu..%lu do not fit a disk of %lu", start,
                   start + region_sectors, blk.capacity);
    for (unsigned i = 0; i < n_depths; i++)
        if (depths[i] > blk.vq.size)
            test_error("blk-bench: depth %u is more than the queue's %u", depths[i], blk.vq.size);
    printf("blk-bench: region %lu bytes at sector %lu, %lu x %lu sequential, %lu x %lu "
           "random, %u depths, queue size %u, features %lx\n", region, start, seq_ops, seq_size,
           rand_ops, rand_size, n_depths, blk.vq.size, blk.dev.features);

    /* Untimed set-up: pages touched, write buffers stamped, offsets drawn. */
    touch(seq_buf, region);
    touch(read_buf, region);
    touch(rand_buf, rand_ops * rand_size);
    stamp_sectors(seq_buf, start, region, seed);
    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (uint64_t i = 0; i < rand_ops; i++) {
        offsets[i] = rng_next() % (region / rand_size) * rand_size;
        stamp_sectors(&rand_buf[i * rand_size / 8], start + offsets[i] / SECTOR, rand_size,
                      seed + 1);
    }

    for (unsigned d = 0; d < n_depths; d++) {
        unsigned depth = depths[d];
        uint32_t seq_sectors = (uint32_t)(seq_size / SECTOR);
        uint32_t rand_sectors = (uint32_t)(rand_size / SECTOR);

        if (only_seq_read) {
            run_phase("seq_read", depth, false, seq_ops, seq_sectors, seq_read_op);
            verify_sectors(read_buf, start, region, seed, "seq_read");
            continue;
        }
        if (only_rand_read) {
            run_phase("rand_read", depth, false, rand_ops, rand_sectors, rand_read_op);
            for (uint64_t i = 0; i < rand_ops; i++)
                verify_sectors(&read_buf[i * rand_size / 8], start + offsets[i] / SECTOR,
                               rand_size, seed, "rand_read");
            continue;
        }
        run_phase("seq_write", depth, true, seq_ops, seq_sectors, seq_write_op);
        flush();
        run_phase("seq_read", depth, false, seq_ops, seq_sectors, seq_read_op);
        verify_sectors(read_buf, start, region, seed, "seq_read");
        run_phase("rand_read", depth, false, rand_ops, rand_sectors, rand_read_op);
        for (uint64_t i = 0; i < rand_ops; i++)
            verify_sectors(&read_buf[i * rand_size / 8], start + offsets[i] / SECTOR, rand_size,
                           seed, "rand_read");
        run_phase("rand_write", depth, true, rand_ops, rand_sectors, rand_write_op);
        flush();
    }
    test_success();
}
