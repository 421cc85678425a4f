/*
 * grant.c - grant tables and grant copy.
 *
 * T:835 A grant is an entry a partition writes in a table in its own RAM:
 * "peer D may read (or read and write) my frame F".  The table is the
 * granter's memory, so the granter can change an entry at any moment, and
 * every rule here follows from that:
 *
 *   - hv reads an entry exactly once per use (one 64-bit atomic load),
 *     checks that copy (type, peer id, read-only, and that the granter
 *     still owns the frame), and never reads the entry again;
 *   - it marks the entry in use with a compare-and-swap of the whole
 *     entry against that copy, so an entry changed between the check and
 *     the mark is not used;
 *   - the granter ends access with grant_end, which refuses (-HV_EBUSY)
 *     while a mark is set: a granter that asked hv knows when its frame is
 *     free again.  A granter that overwrites the entry instead only harms
 *     itself: the copy in flight already checked the frame is its own;
 *   - the granter is found by id through the partition table and held by
 *     a reference for the whole segment (its RAM cannot go away under the
 *     copy); a granter being destroyed is not found.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stddef.h>
#include "channels.h"

struct grant_state {
    pthread_mutex_t lock;          /* table_gpa and count change together */
    uint64_t table_gpa;
    uint32_t count;                /* 0 = no table */
};

int grant_create(struct hv_partition *p)
{
    struct grant_state *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    pthread_mutex_init(&g->lock, NULL);
    p->grant = g;
    return 0;
}

void grant_free(struct hv_partition *p)
{
    if (!p->grant)
        return;
    pthread_mutex_destroy(&p->grant->lock);
    free(p->grant);
    p->grant = NULL;
}

int64_t hc_grant_table_register(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t table = arg[0], count = arg[1];
    struct hv_partition *p = v->partition;
    (void)exit;
    if (count > HV_GRANT_REFS_MAX)
        return -HV_E2BIG;
    if (table % sizeof(struct hv_grant_entry))
        return -HV_EINVAL;
    if (count && !partition_frame_is_guest(p, table, count * sizeof(struct hv_grant_entry)))
        return -HV_EFAULT;
    pthread_mutex_lock(&p->grant->lock);
    p->grant->table_gpa = count ? table : 0;
    p->grant->count = (uint32_t)count;
    pthread_mutex_unlock(&p->grant->lock);
    return 0;
}

/* The entry `ref` of p's table in host memory, or NULL with *err set.
 * The table must still be p's own RAM at this moment (the parent may have
 * reserved frames since it was registered). */
static uint64_t *grant_entry(struct hv_partition *p, uint64_t ref, int64_t *err)
{
    pthread_mutex_lock(&p->grant->lock);
    uint64_t gpa = p->grant->table_gpa, count = p->grant->count;
    pthread_mutex_unlock(&p->grant->lock);
    if (!count) {
        *err = -HV_ENOENT;
        return NULL;
    }
    if (ref >= count) {
        *err = -HV_EINVAL;
        return NULL;
    }
    uint64_t at = gpa + ref * sizeof(struct hv_grant_entry);
    if (!partition_frame_is_guest(p, at, sizeof(struct hv_grant_entry))) {
        *err = -HV_EFAULT;
        return NULL;
    }
    return (uint64_t *)(p->ram + at);   /* 8-byte aligned: register checked */
}

/* An entry as one word: flags in bits 0..15, domid 16..31, frame 32..63
 * (struct hv_grant_entry on little-endian x86). */
#define ENTRY_FLAGS(e)  ((uint16_t)(e))
#define ENTRY_DOMID(e)  ((uint16_t)((e) >> 16))
#define ENTRY_FRAME(e)  ((uint32_t)((e) >> 32))

/* T:840 One segment of a grant copy: take the entry, check it, mark it,
 * copy, unmark.  The result is the segment's status. */
static int64_t copy_segment(struct hv_vcpu *v, const struct hv_grant_copy_seg *s)
{
    struct hv_partition *self = v->partition;
    int to_peer = s->flags & HV_GRANT_COPY_TO_PEER;
    if (s->flags & ~HV_GRANT_COPY_TO_PEER || (uint32_t)s->offset + s->len > HV_PAGE_SIZE)
        return -HV_EINVAL;
    /* Ids are checked for width before anything is looked up: an entry's
     * domid has 16 bits, so a caller whose id does not fit could only ever
     * match an entry meant for the partition its low bits alias.  The
     * segment's granter field is as wide as a partition id (32 bits). */
    if (self->id > UINT16_MAX)
        return -HV_EPERM;
    if (s->granter == self->id || !evtchn_permitted(self, s->granter))
        return -HV_EPERM;
    struct hv_partition *g = partition_get(s->granter);
    if (!g)
        return -HV_ENOENT;
    int64_t r = 0;
    uint64_t *slot = grant_entry(g, s->ref, &r);
    if (!slot) {
        if (r == -HV_EFAULT)
            r = -HV_ENOENT;            /* the granter's table is not usable: as if absent */
        goto out;
    }
    uint64_t e = __atomic_load_n(slot, __ATOMIC_ACQUIRE);   /* read once */
    uint16_t flags = ENTRY_FLAGS(e), mark = to_peer ? HV_GTF_WRITING : HV_GTF_READING;
    uint32_t frame = ENTRY_FRAME(e);
    if ((flags & HV_GTF_TYPE_MASK) != HV_GTF_PERMIT_ACCESS || ENTRY_DOMID(e) != self->id ||
        (to_peer && (flags & HV_GTF_READONLY))) {
        r = -HV_EPERM;
        goto out;
    }
    if (frame >= g->nframes || !partition_frame_is_guest(g, (uint64_t)frame * HV_PAGE_SIZE,
                                                         HV_PAGE_SIZE)) {
        r = -HV_EPERM;                 /* only frames the granter owns */
        goto out;
    }
    if (flags & (HV_GTF_READING | HV_GTF_WRITING) ||
        !__atomic_compare_exchange_n(slot, &e, e | mark, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        r = -HV_EAGAIN;                /* another copy holds it, or the granter just changed it */
        goto out;
    }
    uint64_t at = (uint64_t)frame * HV_PAGE_SIZE + s->offset;
    int bad = to_peer ? hv_copy_from_guest(v, g->ram + at, s->buf, s->len)
                      : hv_copy_to_guest(v, s->buf, g->ram + at, s->len);
    if (bad)
        r = -HV_EFAULT;
    else if (to_peer)
        ram_written(g, at, s->len);
    /* Unmark: only our bit, whatever the granter wrote meanwhile. */
    __atomic_fetch_and((uint16_t *)slot, (uint16_t)~mark, __ATOMIC_RELEASE);
    ram_written(g, (uint64_t)((uint8_t *)slot - g->ram), sizeof(*slot));   /* the mark and unmark */
out:
    partition_put(g);
    return r;
}

/* T:845 The batch: the whole array must be readable and writable first;
 * each segment is read once into a local copy, run, and its status
 * written back. */
int64_t hc_grant_copy(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t segs = arg[0], count = arg[1];
    (void)exit;
    if (count > HV_GRANT_COPY_MAX)
        return -HV_E2BIG;
    uint64_t bytes = count * sizeof(struct hv_grant_copy_seg);
    if (guest_range_ok(v, segs, bytes, 0) || guest_range_ok(v, segs, bytes, WALK_WRITE))
        return -HV_EFAULT;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t at = segs + i * sizeof(struct hv_grant_copy_seg);
        struct hv_grant_copy_seg s;
        if (hv_copy_from_guest(v, &s, at, sizeof(s)))
            return -HV_EFAULT;         /* unmapped by another vCPU meanwhile */
        int32_t status = (int32_t)copy_segment(v, &s);
        if (hv_copy_to_guest(v, at + offsetof(struct hv_grant_copy_seg, status),
                             &status, sizeof(status)))
            return -HV_EFAULT;
    }
    return 0;
}

/* T:848 Ending access: clear the entry unless a copy has it marked. */
int64_t hc_grant_end(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t ref = arg[0];
    (void)exit;
    int64_t err = 0;
    uint64_t *slot = grant_entry(v->partition, ref, &err);
    if (!slot)
        return err;
    uint64_t e = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    do {
        if (ENTRY_FLAGS(e) & (HV_GTF_READING | HV_GTF_WRITING))
            return -HV_EBUSY;
    } while (!__atomic_compare_exchange_n(slot, &e, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    ram_written(v->partition, (uint64_t)((uint8_t *)slot - v->partition->ram), sizeof(*slot));
    return 0;
}
