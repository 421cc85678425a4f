/*
 * virtio_cmdline.h - `key=value` words of the kernel command line.
 *
 * Used by virtio.c for QEMU/hv's `virtio_mmio.device=512@0xfeb00e00:12`
 * entries and by the virtio test kernels for their parameters.  (Generic:
 * it would sit well in start_info.c; it lives here to keep file ownership.)
 */
#ifndef GUEST_VIRTIO_CMDLINE_H
#define GUEST_VIRTIO_CMDLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The value of the `nth` word `key=value` (0-based), its length in *len;
 * NULL if there is no such word.  A bare `key` has the value "".
 */
const char *cmdline_value(const char *key, unsigned nth, size_t *len);

/* The first `key=N` as a number (decimal or 0x hex), else `fallback`. */
uint64_t cmdline_uint(const char *key, uint64_t fallback);

/* Is the first `key=` value exactly `word`? */
bool cmdline_is(const char *key, const char *word);

/*
 * Parse a number at s[0..len): decimal or 0x hex, then an optional K/M/G
 * suffix (Linux's memparse, as virtio_mmio.device= sizes use).  Sets *end
 * past it; false if no digits or on overflow.
 */
bool cmdline_parse_uint(const char *s, size_t len, uint64_t *v, size_t *end);

/*
 * The first `channel=NAME,PEER_ID,SIDE,GREF` the parent added (hv up, the
 * management API): the peer's id, whether this is side b, and, if gref is
 * not NULL, the grant reference (then required).  False if malformed.
 */
bool cmdline_channel(uint32_t *peer, bool *side_b, uint32_t *gref);

#endif
