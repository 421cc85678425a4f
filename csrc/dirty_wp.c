/*
 * dirty_wp.c - which pages of a host range were written, by write protection.
 *
 * T:915 For an engine without a dirty log of its own (TCG: Unicorn stores
 * straight into hv's RAM through its softmmu TLB), the kernel keeps the log:
 * the range is registered with userfaultfd in write-protect mode with
 * UFFD_FEATURE_WP_ASYNC (Linux 6.7), so the first write to a protected
 * page is resolved inside the kernel's fault handler -- no signal, no
 * thread reading the userfaultfd -- and the page table entry remembers it
 * was written.  PAGEMAP_SCAN on /proc/self/pagemap then reports the written
 * pages and write-protects them again in one walk (PM_SCAN_WP_MATCHING).
 * Because the kernel does the tracking, it sees every writer of the range
 * alike: Unicorn's translated code, hv's C core, Python's devices, and the
 * kernel itself (preadv from a disk image into guest buffers), which an
 * mprotect + SIGSEGV scheme cannot (such a syscall fails with EFAULT).
 * UFFD_FEATURE_WP_UNPOPULATED protects pages never touched too, so a first
 * write to fresh memory is seen.  A write to a tracked page costs one
 * in-kernel fault per page per round (~1.5 us here).
 *
 * The kernel's interfaces are spelled here (linux/userfaultfd.h and
 * linux/fs.h of older distributions predate them); the values are the
 * kernel's UAPI, checked against what UFFDIO_API reports at run time.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "dirty.h"

#define WP_UNPOPULATED   (1ull << 13)   /* UFFD_FEATURE_WP_UNPOPULATED (6.4) */
#define WP_ASYNC         (1ull << 15)   /* UFFD_FEATURE_WP_ASYNC (6.7) */

/* PAGEMAP_SCAN (linux/fs.h, 6.7). */
#define PAGE_IS_WRITTEN  (1ull << 1)
#define PM_SCAN_WP_MATCHING    (1ull << 0)  /* write-protect what matched */
#define PM_SCAN_CHECK_WPASYNC  (1ull << 1)  /* fail on a page not tracked so */
struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#define REGIONS 256     /* ranges of written pages per PAGEMAP_SCAN call */

struct wp_log {
    int uffd, pagemap;
    uint8_t *base;
    uint64_t size;
    struct page_region regions[REGIONS];
};

static int fail(char *why, size_t len, int err, const char *what)
{
    if (why && len)
        snprintf(why, len, "%s: %s", what, strerror(-err));
    return err;
}

static int open_uffd(char *why, size_t len)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && (errno == EPERM || errno == EACCES))
        /* vm.unprivileged_userfaultfd = 0 still allows user-mode-only
         * handling, and an asynchronous write-protect fault is resolved
         * before that distinction matters. */
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return fail(why, len, -errno, "userfaultfd");
    struct uffdio_api api = { .api = UFFD_API, .features = WP_ASYNC | WP_UNPOPULATED };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int err = -errno;
        close(fd);
        return fail(why, len, err, "userfaultfd without asynchronous write protection "
                    "(UFFD_FEATURE_WP_ASYNC needs Linux >= 6.7)");
    }
    return fd;
}

int wp_log_start(struct wp_log **out, void *base, uint64_t size, char *why, size_t len)
{
    struct wp_log *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->base = base;
    w->size = size;
    w->pagemap = -1;
    w->uffd = open_uffd(why, len);
    int err = w->uffd;
    if (err < 0)
        goto out;
    struct uffdio_register reg = {
        .range = { .start = (uint64_t)(uintptr_t)base, .len = size },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(w->uffd, UFFDIO_REGISTER, &reg) < 0) {
        err = fail(why, len, -errno, "userfaultfd cannot write-protect this memory");
        goto out;
    }
    w->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (w->pagemap < 0) {
        err = fail(why, len, -errno, "/proc/self/pagemap");
        goto out;
    }
    struct uffdio_writeprotect wp = { .range = reg.range, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
    if (ioctl(w->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
        err = fail(why, len, -errno, "UFFDIO_WRITEPROTECT");
        goto out;
    }
    /* One scan proves PAGEMAP_SCAN is there (6.7) before migration relies on it. */
    uint64_t probe = 0;
    err = wp_log_sync(w, &probe, 1);
    if (err) {
        fail(why, len, err, "PAGEMAP_SCAN (needs Linux >= 6.7)");
        goto out;
    }
    *out = w;
    return 0;
out:
    wp_log_stop(w);
    return err;
}

static void set_bits(uint64_t *bitmap, uint64_t first, uint64_t end)
{
    for (uint64_t f = first; f < end; f++)
        bitmap[f / 64] |= 1ull << (f % 64);
}

/* OR the pages written since the last sync into bitmap (bit n = page n of
 * the range) and protect them again.  probe_only: scan one page. */
int wp_log_sync(struct wp_log *w, uint64_t *bitmap, int probe_only)
{
    uint64_t base = (uint64_t)(uintptr_t)w->base;
    struct pm_scan_arg a = {
        .size = sizeof(a),
        .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        .start = base,
        .end = base + (probe_only ? DIRTY_PAGE : w->size),
        .vec = (uint64_t)(uintptr_t)w->regions,
        .vec_len = REGIONS,
        .category_mask = PAGE_IS_WRITTEN,
        .return_mask = PAGE_IS_WRITTEN,
    };
    for (;;) {
        long n = ioctl(w->pagemap, PAGEMAP_SCAN, &a);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (long i = 0; i < n; i++)
            set_bits(bitmap, (w->regions[i].start - base) / DIRTY_PAGE,
                     (w->regions[i].end - base) / DIRTY_PAGE);
        if (a.walk_end >= a.end)
            return 0;
        a.start = a.walk_end;       /* the vector filled up: go on from there */
    }
}

/* Unprotect and unregister: the range behaves as plain memory again. */
void wp_log_stop(struct wp_log *w)
{
    if (!w)
        return;
    if (w->uffd >= 0) {
        struct uffdio_range range = { .start = (uint64_t)(uintptr_t)w->base, .len = w->size };
        struct uffdio_writeprotect wp = { .range = range, .mode = 0 };
        ioctl(w->uffd, UFFDIO_WRITEPROTECT, &wp);
        ioctl(w->uffd, UFFDIO_UNREGISTER, &range);
        close(w->uffd);
    }
    if (w->pagemap >= 0)
        close(w->pagemap);
    free(w);
}
