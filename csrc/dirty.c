/*
 * dirty.c - which pages of a partition's RAM were written: live migration's
 * pre-copy rounds (hv/migrate.py) send only those.
 *
 * T:914 Every write reaches RAM one of three ways, and each is seen:
 *   - the guest's own stores: the engine's log (KVM's memslot dirty log,
 *     engine_kvm.c) or, for an engine without one (TCG), the kernel's write
 *     protection of the RAM range (dirty_wp.c), which sees every writer;
 *   - hv's C core (hypercall copies, the event blocks, grant entries, the
 *     boot GDT and hypercall page): ram_written() after each, below;
 *   - the parent's Python devices (guestmem.py writes, blk preadv into guest
 *     buffers): they set the same bytes of the written map, after the write.
 * The written map has a byte per 4 KiB frame (a plain byte store marks it:
 * no read-modify-write, so writers on any thread never lose each other's
 * marks), always kept, costing a store per write whether or not a
 * migration runs.  A round takes the engine's log, then swaps the map's
 * words to zero; a writer marks after writing and the sender reads a page
 * after the swap, so a write is either in this round's set with its bytes
 * already in RAM, or marked again for the next round.  Nothing is lost;
 * a page can only be sent once too often.
 *
 * When neither the engine nor the kernel can log (no KVM manual-clear log
 * and no userfaultfd write protection), RAM is compared with a copy kept
 * from the last round (HV_DIRTY_COMPARE): exact, but a memcmp of all RAM
 * per round.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "core.h"
#include "dirty.h"

_Static_assert(DIRTY_PAGE == HV_PAGE_SIZE, "the log's pages are the partition's frames");

struct dirty_log {
    int       method;           /* HV_DIRTY_* */
    int       first;            /* the next collect also sends every non-zero page */
    uint64_t  words;            /* of the bitmap */
    uint64_t *bitmap;           /* one round's pages, bit n = frame n */
    struct wp_log *wp;          /* HV_DIRTY_WRITE_PROTECT */
    uint8_t  *shadow;           /* HV_DIRTY_COMPARE: RAM as the last round saw it */
    uint64_t  shadow_size;
};

/* The written map, in whole 64-bit words (collect swaps a word at a time). */
static uint64_t map_words(uint64_t nframes) { return (nframes + 7) / 8; }

uint8_t *dirty_map_alloc(uint64_t nframes)
{
    return calloc(map_words(nframes), 8);
}

void ram_written(struct hv_partition *p, uint64_t gpa, uint64_t len)
{
    if (len == 0 || gpa >= p->mem_size)
        return;
    uint64_t last = (len > p->mem_size - gpa ? p->mem_size - 1 : gpa + len - 1) / HV_PAGE_SIZE;
    for (uint64_t f = gpa / HV_PAGE_SIZE; f <= last; f++)
        __atomic_store_n(&p->written[f], 1, __ATOMIC_RELEASE);
}

void hv_ram_written(struct hv_partition *p, uint64_t gpa, uint64_t len) { ram_written(p, gpa, len); }
uint8_t *hv_partition_written_map(struct hv_partition *p) { return p->written; }

static void log_free(struct dirty_log *d)
{
    if (!d)
        return;
    wp_log_stop(d->wp);
    if (d->shadow)
        munmap(d->shadow, d->shadow_size);
    free(d->bitmap);
    free(d);
}

static void note(char *why, size_t len, const char *fmt, const char *what)
{
    if (why && len) {
        size_t used = strnlen(why, len);
        snprintf(why + used, len - used, fmt, used ? "; " : "", what);
    }
}

/* One method, or -errno with the reason appended to why. */
static int start_method(struct hv_partition *p, struct dirty_log *d, int method,
                        int automatic, char *why, size_t len)
{
    char reason[200] = "";
    int err;
    switch (method) {
    case HV_DIRTY_ENGINE_LOG:
        if (!p->engine->dirty_log) {
            if (!automatic)     /* else as designed: such engines use write protection */
                note(why, len, "%sthe %s engine keeps no dirty log", p->engine->name);
            return -ENOTSUP;
        }
        err = p->engine->dirty_log(p->engine_vm, 1, reason, sizeof(reason));
        break;
    case HV_DIRTY_WRITE_PROTECT:
        err = wp_log_start(&d->wp, p->ram, p->mem_size, reason, sizeof(reason));
        break;
    case HV_DIRTY_COMPARE:
        /* The copy starts zeroed (and costs nothing until written), so the
         * first round finds every non-zero page by itself. */
        d->shadow_size = p->mem_size;
        d->shadow = mmap(NULL, d->shadow_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (d->shadow == MAP_FAILED) {
            d->shadow = NULL;
            return -ENOMEM;
        }
        return 0;
    default:
        return -EINVAL;
    }
    if (err)
        note(why, len, "%s%s", reason);
    return err;
}

int hv_dirty_start(struct hv_partition *p, int method, char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (p->dirty)
        return -EBUSY;          /* one migration at a time */
    struct dirty_log *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->words = (p->nframes + 63) / 64;
    d->bitmap = calloc(d->words, 8);
    if (!d->bitmap) {
        log_free(d);
        return -ENOMEM;
    }
    static const int best_first[] = { HV_DIRTY_ENGINE_LOG, HV_DIRTY_WRITE_PROTECT, HV_DIRTY_COMPARE };
    int err = -EINVAL;
    for (unsigned i = 0; i < sizeof(best_first) / sizeof(best_first[0]); i++) {
        int m = best_first[i];
        if (method != HV_DIRTY_AUTO && method != m)
            continue;
        err = start_method(p, d, m, method == HV_DIRTY_AUTO, why, why_len);
        if (err == 0) {
            d->method = m;
            break;
        }
    }
    if (err) {
        log_free(d);
        return err;
    }
    /* Marks made before now are covered by the first round's full scan. */
    memset(p->written, 0, map_words(p->nframes) * 8);
    d->first = 1;
    p->dirty = d;
    return d->method;
}

static int zero_page(const uint8_t *page)
{
    static const uint8_t zeros[HV_PAGE_SIZE];
    return memcmp(page, zeros, HV_PAGE_SIZE) == 0;
}

/* HV_DIRTY_COMPARE: the pages that differ from the copy, copied into it. */
static void compare_pages(struct hv_partition *p, struct dirty_log *d)
{
    for (uint64_t f = 0; f < p->nframes; f++) {
        uint8_t *now = p->ram + f * HV_PAGE_SIZE, *was = d->shadow + f * HV_PAGE_SIZE;
        if (memcmp(now, was, HV_PAGE_SIZE)) {
            memcpy(was, now, HV_PAGE_SIZE);
            d->bitmap[f / 64] |= 1ull << (f % 64);
        }
    }
}

int64_t hv_dirty_collect(struct hv_partition *p, uint64_t *out)
{
    struct dirty_log *d = p->dirty;
    if (!d)
        return -EINVAL;
    memset(d->bitmap, 0, d->words * 8);
    /* The guest's writes first, then hv's: each log is emptied before the
     * pages it names are read (by the caller, after this returns). */
    int err = 0;
    if (d->method == HV_DIRTY_ENGINE_LOG)
        err = p->engine->dirty_log_sync(p->engine_vm, d->bitmap);
    else if (d->method == HV_DIRTY_WRITE_PROTECT)
        err = wp_log_sync(d->wp, d->bitmap, 0);
    if (err)
        return err;
    uint64_t *map = (uint64_t *)p->written;
    for (uint64_t w = 0; w < map_words(p->nframes); w++) {
        if (!__atomic_load_n(&map[w], __ATOMIC_RELAXED))
            continue;
        uint64_t bytes = __atomic_exchange_n(&map[w], 0, __ATOMIC_ACQUIRE);
        for (unsigned b = 0; b < 8; b++)
            if (bytes >> (8 * b) & 0xff)
                d->bitmap[w / 8] |= 1ull << (w % 8 * 8 + b);
    }
    if (d->method == HV_DIRTY_COMPARE)
        compare_pages(p, d);
    int first = d->first;
    d->first = 0;
    int64_t n = 0;
    for (uint64_t f = 0; f < p->nframes; f++)
        if (d->bitmap[f / 64] >> (f % 64) & 1 ||
            (first && d->method != HV_DIRTY_COMPARE && !zero_page(p->ram + f * HV_PAGE_SIZE)))
            out[n++] = f;
    return n;
}

void hv_dirty_stop(struct hv_partition *p)
{
    struct dirty_log *d = p->dirty;
    if (!d)
        return;
    if (d->method == HV_DIRTY_ENGINE_LOG)
        p->engine->dirty_log(p->engine_vm, 0, NULL, 0);
    p->dirty = NULL;
    log_free(d);
}

int hv_dirty_method(const struct hv_partition *p) { return p->dirty ? p->dirty->method : 0; }
