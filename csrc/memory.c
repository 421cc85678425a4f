/*
 * memory.c - guest-physical memory: which frames a partition owns.
 *
 * T:420 Every 4 KiB frame of a partition's RAM has exactly one owner: the
 * partition, or hv itself (the boot area).  Anything hv does with guest
 * memory on the guest's behalf (copy_from_guest, the hypercall page, the
 * event page) first checks the whole range is RAM the partition owns.
 * Grant tables will add "owned by another, granted to us" here.
 */
#include <errno.h>
#include "core.h"

/* Is [gpa, gpa+len) inside RAM and owned by the partition?  Overflow-safe. */
int partition_frame_is_guest(const struct hv_partition *p, uint64_t gpa, uint64_t len)
{
    if (len == 0)
        return gpa <= p->mem_size;
    if (gpa >= p->mem_size || len > p->mem_size - gpa)
        return 0;
    for (uint64_t f = gpa / HV_PAGE_SIZE; f <= (gpa + len - 1) / HV_PAGE_SIZE; f++)
        if (p->frame_owner[f] != p->id)
            return 0;
    return 1;
}

int hv_partition_reserve(struct hv_partition *p, uint64_t gpa, uint64_t len)
{
    if (len == 0 || gpa >= p->mem_size || len > p->mem_size - gpa)
        return -EINVAL;
    for (uint32_t slot = 0; slot < HV_VIRTIO_MMIO_SLOTS; slot++)
        if (p->virtio[slot])
            return -EBUSY;  /* the parent's devices hold a copy of the
                               foreign ranges (guestmem.py): keep it true */
    for (uint64_t f = gpa / HV_PAGE_SIZE; f <= (gpa + len - 1) / HV_PAGE_SIZE; f++)
        p->frame_owner[f] = HV_OWNER_HV;
    return 0;
}

int64_t hv_partition_frame_owner(const struct hv_partition *p, uint64_t gpa)
{
    if (gpa >= p->mem_size)
        return -1;
    return p->frame_owner[gpa / HV_PAGE_SIZE];
}

int hv_partition_foreign_ranges(const struct hv_partition *p, uint64_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint64_t f = 0; f < p->nframes; f++) {
        if (p->frame_owner[f] == p->id)
            continue;
        uint64_t first = f;
        while (f + 1 < p->nframes && p->frame_owner[f + 1] != p->id)
            f++;
        if (n == max)
            return -E2BIG;
        out[2 * n] = first * HV_PAGE_SIZE;
        out[2 * n + 1] = (f + 1) * HV_PAGE_SIZE;
        n++;
    }
    return (int)n;
}
