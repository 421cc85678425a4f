/*
 * pagewalk.c - the guest page-table walker and copy_{from,to}_guest.
 *
 * T:430 hv never trusts a guest pointer.  A hypercall argument is a guest
 * *virtual* address; hv translates it the way the CPU would (Intel SDM vol. 3,
 * ch. 4.5: 4-level paging, 1 GiB and 2 MiB pages, P/RW/US/NX checks) by reading
 * the guest's own page tables, and only then touches RAM the partition owns.
 */
#include <string.h>
#include "core.h"

#define PTE_P    (1ull << 0)
#define PTE_RW   (1ull << 1)
#define PTE_US   (1ull << 2)
#define PTE_PS   (1ull << 7)
#define PTE_NX   (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

#define CR0_WP   (1ull << 16)
#define CR0_PG   (1ull << 31)
#define CR4_PAE  (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

/* Read one 8-byte table entry from guest RAM, once (the guest may be
 * changing it on another vCPU; we act on the value we read). */
static int read_entry(const struct hv_partition *p, uint64_t gpa, uint64_t *entry)
{
    if (!partition_frame_is_guest(p, gpa, 8))
        return -1;
    *entry = __atomic_load_n((const uint64_t *)(p->ram + gpa), __ATOMIC_RELAXED);
    return 0;
}

int pagewalk(const struct hv_partition *p, uint64_t cr3, uint64_t gva,
             uint32_t access, uint32_t paging_flags, uint64_t *gpa,
             uint64_t *page_left)
{
    /* Bits 63:47 must all equal bit 47 (canonical form). */
    uint64_t top = gva >> 47;
    if (top != 0 && top != 0x1ffff)
        return -HV_EFAULT;

    uint64_t table = cr3 & PTE_ADDR;
    int writable = 1, user = 1, executable = 1;
    for (int level = 4; level >= 1; level--) {
        unsigned shift = 12 + 9 * (level - 1);
        uint64_t index = (gva >> shift) & 511, entry;
        if (read_entry(p, table + index * 8, &entry))
            return -HV_EFAULT;
        if (!(entry & PTE_P))
            return -HV_EFAULT;
        writable &= !!(entry & PTE_RW);
        user &= !!(entry & PTE_US);
        if ((paging_flags & PAGING_NXE) && (entry & PTE_NX))
            executable = 0;

        int leaf = level == 1 || ((entry & PTE_PS) && (level == 2 || level == 3));
        if ((entry & PTE_PS) && level == 4)
            return -HV_EFAULT;          /* reserved bit: the CPU would #PF */
        if (!leaf) {
            table = entry & PTE_ADDR;
            continue;
        }
        /* Permissions are the AND over every level (SDM 4.6.1). */
        if ((access & WALK_USER) && !user)
            return -HV_EFAULT;
        if ((access & WALK_WRITE) && !writable &&
            ((access & WALK_USER) || (paging_flags & PAGING_WP)))
            return -HV_EFAULT;
        if ((access & WALK_FETCH) && !executable)
            return -HV_EFAULT;
        uint64_t page_size = 1ull << shift;
        uint64_t offset = gva & (page_size - 1);
        *gpa = (entry & PTE_ADDR & ~(page_size - 1)) + offset;
        if (page_left)
            *page_left = page_size - offset;
        return 0;
    }
    return -HV_EFAULT;                  /* not reached */
}

int hv_test_walk(struct hv_partition *p, uint64_t cr3, uint64_t gva,
                 uint32_t access, uint32_t paging_flags, uint64_t *gpa)
{
    return pagewalk(p, cr3, gva, access, paging_flags, gpa, NULL);
}

/* The vCPU's paging mode, read once per copy. */
struct paging {
    int      enabled;
    uint64_t cr3;
    uint32_t flags;
    uint32_t user;
};

static int vcpu_paging(struct hv_vcpu *v, struct paging *pg, int system)
{
    struct hv_sregs s;
    if (v->partition->engine->get_sregs(v->engine_vcpu, &s))
        return -HV_EFAULT;
    pg->enabled = !!(s.cr0 & CR0_PG);
    pg->cr3 = s.cr3;
    pg->flags = ((s.efer & EFER_NXE) ? PAGING_NXE : 0) | ((s.cr0 & CR0_WP) ? PAGING_WP : 0);
    /* The caller's privilege; the CPU's own accesses (IDT, TSS, the
     * interrupt stack) are supervisor accesses whatever the CPL. */
    pg->user = !system && (s.cs & 3) == 3 ? WALK_USER : 0;
    /* Only long mode's 4-level paging is walked; 32-bit, PAE-legacy and
     * 5-level guests get -HV_EFAULT for every pointer (documented). */
    if (pg->enabled && (!(s.efer & EFER_LMA) || !(s.cr4 & CR4_PAE) || (s.cr4 & CR4_LA57)))
        return -HV_EFAULT;
    return 0;
}

/* Translate the piece of [gva, gva+len) that lies in one page. */
static int translate(struct hv_vcpu *v, const struct paging *pg, uint64_t gva,
                     uint64_t len, uint32_t access, uint64_t *gpa, uint64_t *chunk)
{
    uint64_t left;
    if (pg->enabled) {
        if (pagewalk(v->partition, pg->cr3, gva, access | pg->user, pg->flags, gpa, &left))
            return -HV_EFAULT;
    } else {
        *gpa = gva;
        left = HV_PAGE_SIZE - (gva & (HV_PAGE_SIZE - 1));
    }
    *chunk = len < left ? len : left;
    return partition_frame_is_guest(v->partition, *gpa, *chunk) ? 0 : -HV_EFAULT;
}

/* Walk every page of the range; with buf, also copy (in or out). */
static int guest_range(struct hv_vcpu *v, uint64_t gva, uint64_t len,
                       uint32_t access, uint8_t *buf, int system)
{
    struct paging pg;
    if (gva + len < gva)
        return -HV_EFAULT;              /* wraps around */
    if (vcpu_paging(v, &pg, system))
        return -HV_EFAULT;
    while (len) {
        uint64_t gpa, chunk;
        if (translate(v, &pg, gva, len, access, &gpa, &chunk))
            return -HV_EFAULT;
        if (buf) {
            if (access & WALK_WRITE) {
                memcpy(v->partition->ram + gpa, buf, chunk);
                ram_written(v->partition, gpa, chunk);
            } else
                memcpy(buf, v->partition->ram + gpa, chunk);
            buf += chunk;
        }
        gva += chunk;
        len -= chunk;
    }
    return 0;
}

int guest_range_ok(struct hv_vcpu *v, uint64_t gva, uint64_t len, uint32_t access)
{
    return guest_range(v, gva, len, access, NULL, 0);
}

/* Both copies check the whole range before moving a byte, so a fault leaves
 * the destination untouched (no partial state change). */
static int copy_guest(struct hv_vcpu *v, uint64_t gva, void *buf, uint64_t len,
                      uint32_t access, int system)
{
    int err = guest_range(v, gva, len, access, NULL, system);
    return err ? err : guest_range(v, gva, len, access, buf, system);
}

int hv_copy_from_guest(struct hv_vcpu *v, void *dst, uint64_t gva, uint64_t len)
{
    return copy_guest(v, gva, dst, len, 0, 0);
}

int hv_copy_to_guest(struct hv_vcpu *v, uint64_t gva, const void *src, uint64_t len)
{
    return copy_guest(v, gva, (void *)src, len, WALK_WRITE, 0);
}

int copy_guest_system(struct hv_vcpu *v, uint64_t gva, void *buf, uint64_t len, int write)
{
    return copy_guest(v, gva, buf, len, write ? WALK_WRITE : 0, 1);
}
