/*
 * blk-durable - write numbered, checksummed blocks; flush every k; say so.
 *
 * Command line (all optional):
 *   blocks=N   blocks to write (default: as many as fit the disk)
 *   bsize=S    sectors per block (default 8, 1..64)
 *   k=K        FLUSH after every K block writes (default 4)
 *   run=R      a run id stored in every sector (default 1), so the host can
 *              tell this run's sectors from anything older
 *
 * Block n lives at sectors n*S .. n*S+S-1.  Every 512-byte sector holds
 *
 *     0   u32 magic "DURB" (0x42525544)     16  u32 sector index in block
 *     4   u32 run id                        20  u32 bsize
 *     8   u64 block number n (the seq)      24..503  filler(run, n, index)
 *   504   u64 FNV-1a 64 of bytes 0..503
 *
 * where filler byte j = (n * 7 + index * 13 + run + j) & 0xff.  After each
 * FLUSH completes the kernel prints `flushed <n>`: block n and every block
 * before it are durable.  At the end (last blocks flushed too):
 *     durable: <N> blocks of <S> sectors, flush every <K>
 * then SUCCESS.  SKIP without a block device or without FLUSH.
 */
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio_blk.h"
#include "virtio_cmdline.h"

#define MAGIC           0x42525544u
#define MAX_BSIZE       64

static struct virtio_blk blk;
static uint8_t buf[MAX_BSIZE * VIRTIO_BLK_SECTOR] __attribute__((aligned(16)));

static uint64_t fnv1a(const uint8_t *p, unsigned n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (unsigned i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void put32(uint8_t *p, uint32_t v)
{
    __builtin_memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    __builtin_memcpy(p, &v, 8);
}

static void fill_block(uint64_t n, uint32_t bsize, uint32_t run)
{
    for (uint32_t i = 0; i < bsize; i++) {
        uint8_t *s = &buf[i * VIRTIO_BLK_SECTOR];

        put32(s + 0, MAGIC);
        put32(s + 4, run);
        put64(s + 8, n);
        put32(s + 16, i);
        put32(s + 20, bsize);
        for (unsigned j = 24; j < 504; j++)
            s[j] = (uint8_t)(n * 7 + i * 13 + run + j);
        put64(s + 504, fnv1a(s, 504));
    }
}

static void check(int r, const char *what, uint64_t n)
{
    if (r < 0)
        test_failure("durable: %s at block %lu: %s", what, n, virtio_strerror(r));
}

int main(void)
{
    uint64_t bsize = cmdline_uint("bsize", 8), k = cmdline_uint("k", 4);
    uint32_t run = (uint32_t)cmdline_uint("run", 1);
    uint64_t blocks, fit;
    int r = virtio_blk_init(&blk, 0);

    if (r == -VIRTIO_ENODEV)
        test_skip("no virtio-blk device");
    check(r, "init", 0);
    if (bsize == 0 || bsize > MAX_BSIZE || k == 0)
        test_error("durable: bsize=%lu k=%lu: bsize 1..%u, k >= 1 please", bsize, k, MAX_BSIZE);
    if (virtio_blk_read_only(&blk))
        test_skip("durable: the disk is read-only");
    if (!virtio_has(&blk.dev, VIRTIO_BLK_F_FLUSH))
        test_skip("durable: the device has no FLUSH");
    fit = blk.capacity / bsize;
    blocks = cmdline_uint("blocks", fit);
    if (blocks == 0 || blocks > fit)
        test_error("durable: blocks=%lu: 1..%lu fit the disk", blocks, fit);
    printf("durable: %lu blocks of %lu sectors, flush every %lu, run %u\n", blocks, bsize, k,
           run);

    for (uint64_t n = 0; n < blocks; n++) {
        fill_block(n, (uint32_t)bsize, run);
        check(virtio_blk_write(&blk, n * bsize, buf, bsize), "write", n);
        if ((n + 1) % k == 0 || n + 1 == blocks) {
            check(virtio_blk_flush(&blk), "flush", n);
            printf("flushed %lu\n", n);
        }
    }
    printf("durable: %lu blocks of %lu sectors, flush every %lu\n", blocks, bsize, k);
    test_success();
}
