/*
 * dirty.h - the pieces of dirty tracking (dirty.c) that live in files of
 * their own.
 */
#ifndef HV_DIRTY_H
#define HV_DIRTY_H

#include <stddef.h>
#include <stdint.h>

#define DIRTY_PAGE 4096u

/* dirty_wp.c: the kernel's asynchronous write protection of a host range
 * (userfaultfd + PAGEMAP_SCAN).  start: 0, or -errno and why. */
struct wp_log;
int  wp_log_start(struct wp_log **out, void *base, uint64_t size, char *why, size_t len);
/* OR the pages written since the last sync into bitmap (bit n = page n of
 * the range) and protect them again; probe_only: look at one page. */
int  wp_log_sync(struct wp_log *w, uint64_t *bitmap, int probe_only);
void wp_log_stop(struct wp_log *w);

#endif /* HV_DIRTY_H */
