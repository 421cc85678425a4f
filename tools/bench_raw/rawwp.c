/*
 * rawwp.c - the two ways to learn which pages a TCG guest wrote, measured
 * side by side (tools/bench migrate): mprotect + SIGSEGV against userfaultfd
 * asynchronous write protection + PAGEMAP_SCAN (what csrc/dirty_wp.c uses).
 *
 * Each round protects a 64 MiB private anonymous region (the way guest RAM
 * is mapped), writes one byte to each of PAGES pages, and times the writes
 * against the same writes unprotected.  Prints one line:
 *     pages=N plain_ns=.. mprotect_ns=.. uffd_ns=.. mprotect_reprotect_ns=.. uffd_scan_ns=..
 * (the *_ns of writes are per first write, the plain cost subtracted).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SIZE   (64ul << 20)
#define PAGE   4096ul
#define ROUNDS 5

/* The kernel's UAPI (6.7), spelled as csrc/dirty_wp.c does. */
#define WP_UNPOPULATED (1ull << 13)
#define WP_ASYNC       (1ull << 15)
struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

static uint8_t *ram;
static volatile uint8_t *written;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* mprotect tracking: the first write to a read-only page lands here. */
static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)sig; (void)ctx;
    uintptr_t page = ((uintptr_t)si->si_addr - (uintptr_t)ram) / PAGE;
    written[page] = 1;
    mprotect(ram + page * PAGE, PAGE, PROT_READ | PROT_WRITE);
}

static uint64_t write_pages(unsigned pages)
{
    uint64_t t = now_ns();
    for (unsigned i = 0; i < pages; i++)
        ram[(uint64_t)i * PAGE]++;
    return now_ns() - t;
}

static uint64_t min(uint64_t a, uint64_t b) { return a < b ? a : b; }

int main(int argc, char **argv)
{
    unsigned pages = argc > 1 ? (unsigned)atoi(argv[1]) : 4096;
    if (pages == 0 || pages > SIZE / PAGE)
        return 2;
    ram = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    written = calloc(SIZE / PAGE, 1);
    if (ram == MAP_FAILED || !written)
        return 1;
    memset(ram, 1, SIZE);                           /* every page present */
    uint64_t plain = UINT64_MAX, mp = UINT64_MAX, mp_protect = UINT64_MAX;
    uint64_t uf = UINT64_MAX, uf_scan = UINT64_MAX;
    for (int r = 0; r < ROUNDS; r++)
        plain = min(plain, write_pages(pages));

    struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };
    sigaction(SIGSEGV, &sa, NULL);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t = now_ns();
        if (mprotect(ram, SIZE, PROT_READ)) {
            perror("mprotect");
            return 1;
        }
        mp_protect = min(mp_protect, now_ns() - t);
        mp = min(mp, write_pages(pages));
    }
    mprotect(ram, SIZE, PROT_READ | PROT_WRITE);

    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = { .api = UFFD_API, .features = WP_ASYNC | WP_UNPOPULATED };
    struct uffdio_register reg = {
        .range = { .start = (uint64_t)(uintptr_t)ram, .len = SIZE }, .mode = UFFDIO_REGISTER_MODE_WP,
    };
    int pagemap = open("/proc/self/pagemap", O_RDONLY);
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg) ||
        pagemap < 0) {
        perror("userfaultfd write protection");
        return 1;
    }
    struct page_region regions[256];
    for (int r = 0; r < ROUNDS; r++) {
        struct pm_scan_arg a = {
            .size = sizeof(a), .flags = 3 /* WP_MATCHING | CHECK_WPASYNC */,
            .start = reg.range.start, .end = reg.range.start + SIZE,
            .vec = (uint64_t)(uintptr_t)regions, .vec_len = 256,
            .category_mask = 2, .return_mask = 2,       /* PAGE_IS_WRITTEN */
        };
        uint64_t t = now_ns();
        while (a.start < a.end) {       /* report the written pages, protect them again */
            if (ioctl(pagemap, PAGEMAP_SCAN, &a) < 0) {
                perror("PAGEMAP_SCAN");
                return 1;
            }
            a.start = a.walk_end;
        }
        uf_scan = min(uf_scan, now_ns() - t);
        uf = min(uf, write_pages(pages));
    }
    printf("pages=%u plain_ns=%.1f mprotect_ns=%.1f uffd_ns=%.1f mprotect_reprotect_ns=%lu "
           "uffd_scan_ns=%lu\n", pages, (double)plain / pages, (double)(mp - plain) / pages,
           (double)(uf - plain) / pages, (unsigned long)mp_protect, (unsigned long)uf_scan);
    return 0;
}
