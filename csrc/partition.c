/*
 * partition.c - create and destroy partitions.
 *
 * T:410 A partition is guest RAM (one anonymous mmap, zero-filled by the
 * host), a frame ownership table, the engine's VM over that same RAM, and the
 * guest-visible hv state (hypercall page, event page, vector).  Nothing here
 * runs the guest; vcpu.c does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "channels.h"

/* T:411 Guest RAM outlives whichever of its holders lets go last: the
 * partition (at its last reference, which a peer in the middle of a grant
 * copy may hold after destroy) and the parent (whose memoryviews over RAM
 * may live on after destroy).  Neither may unmap it under the other. */
struct hv_ram_hold {
    int      refs;
    uint8_t *ram;
    uint64_t size;
    uint8_t *written;           /* dirty.c's written map: devices set it after writing RAM */
};

static uint32_t next_partition_id = 1;      /* 0 is HV_OWNER_HV */

int hv_engine_probe(int engine, char *why, size_t why_len)
{
    const struct engine_ops *ops = engine_lookup(engine);
    if (!ops) {
        if (why && why_len)
            why[0] = '\0';
        return -EINVAL;
    }
    return ops->probe(why, why_len);
}

/* RAM is anonymous memory (fd < 0) or a snapshot's memory file mapped
 * copy-on-write (snapshot.c). */
int partition_create(int engine, uint64_t mem_size, int fd, struct hv_partition **out)
{
    const struct engine_ops *ops = engine_lookup(engine);
    if (!ops)
        return -EINVAL;
    /* Page-granular, within hv/layout.h's limits. */
    if (mem_size < HV_MEM_MIN || mem_size % HV_PAGE_SIZE || mem_size > HV_MEM_MAX)
        return -EINVAL;

    struct hv_partition *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->engine = ops;
    p->nvcpus = 1;
    pthread_mutex_init(&p->vcpu_lock, NULL);
    p->mem_size = mem_size;
    p->nframes = mem_size / HV_PAGE_SIZE;
    p->id = __atomic_fetch_add(&next_partition_id, 1, __ATOMIC_RELAXED);
    clock_gettime(CLOCK_MONOTONIC, &p->epoch);

    int err = -ENOMEM;
    /* MAP_NORESERVE: untouched guest RAM costs nothing on the host. */
    p->ram = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_NORESERVE | (fd < 0 ? MAP_ANONYMOUS : 0), fd, 0);
    if (p->ram == MAP_FAILED) {
        p->ram = NULL;
        goto fail;
    }
    p->ram_hold = malloc(sizeof(*p->ram_hold));
    if (!p->ram_hold)
        goto fail;
    *p->ram_hold = (struct hv_ram_hold){ .refs = 1, .ram = p->ram, .size = mem_size };
    p->written = p->ram_hold->written = dirty_map_alloc(p->nframes);
    p->frame_owner = malloc(p->nframes * sizeof(*p->frame_owner));
    if (!p->written || !p->frame_owner || platform_create(p) || evtchn_create(p) || grant_create(p))
        goto fail;
    for (uint64_t i = 0; i < p->nframes; i++)
        p->frame_owner[i] = p->id;

    err = ops->vm_create(&p->engine_vm);
    if (err)
        goto fail;
    err = ops->map_ram(p->engine_vm, 0, p->ram, mem_size);
    if (err)
        goto fail;
    err = partition_table_add(p);
    if (err)
        goto fail;
    *out = p;
    return 0;

fail:
    partition_free(p);
    return err;
}

int hv_partition_create(int engine, uint64_t mem_size, struct hv_partition **out)
{
    return partition_create(engine, mem_size, -1, out);
}

/* Destroy unpublishes the id at once; the memory goes with the last
 * reference (partition_table.c). */
void hv_partition_destroy(struct hv_partition *p)
{
    if (!p)
        return;
    evtchn_teardown(p);         /* while peers can still find p: both ends close */
    partition_table_remove(p);
    partition_put(p);
}

void partition_free(struct hv_partition *p)
{
    for (uint32_t i = 0; i < HV_VCPUS_MAX; i++)
        if (p->vcpus[i])
            hv_vcpu_destroy(p->vcpus[i]);
    hv_dirty_stop(p);
    virtio_free(p);
    platform_free(p);
    if (p->engine_vm)
        p->engine->vm_destroy(p->engine_vm);
    if (p->ram_hold)
        hv_ram_release(p->ram_hold);
    else if (p->ram)
        munmap(p->ram, p->mem_size);
    trace_free(p);
    free(p->frame_owner);
    evtchn_free(p);
    grant_free(p);
    pthread_mutex_destroy(&p->vcpu_lock);
    free(p);
}

uint32_t hv_partition_id(const struct hv_partition *p) { return p->id; }
uint64_t hv_partition_mem_size(const struct hv_partition *p) { return p->mem_size; }
uint8_t *hv_partition_ram(struct hv_partition *p) { return p->ram; }

struct hv_ram_hold *hv_partition_hold_ram(struct hv_partition *p)
{
    __atomic_add_fetch(&p->ram_hold->refs, 1, __ATOMIC_RELAXED);
    return p->ram_hold;
}

void hv_ram_release(struct hv_ram_hold *h)
{
    if (__atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        munmap(h->ram, h->size);
        free(h->written);
        free(h);
    }
}

int hv_partition_set_route(struct hv_partition *p, uint64_t nr, int route)
{
    if (nr >= HV_HC_COUNT || (route != HV_ROUTE_CORE && route != HV_ROUTE_PARENT))
        return -EINVAL;
    p->route[nr] = (uint8_t)route;
    return 0;
}

/* T:413 SMP: how many vCPUs the partition has, fixed before the first is
 * created.  vCPU 0 boots; the guest brings the others up (smp.c). */
int hv_partition_set_vcpus(struct hv_partition *p, uint32_t n)
{
    if (n < 1 || n > HV_VCPUS_MAX)
        return -EINVAL;
    for (uint32_t i = 0; i < HV_VCPUS_MAX; i++)
        if (p->vcpus[i])
            return -EBUSY;
    p->nvcpus = n;
    return 0;
}

uint32_t hv_partition_vcpus(const struct hv_partition *p) { return p->nvcpus; }

int hv_partition_set_deterministic(struct hv_partition *p)
{
    if (!p->engine->count_instructions)
        return -EOPNOTSUPP;     /* KVM cannot count guest instructions */
    if (p->vcpu)
        return -EBUSY;
    p->deterministic = 1;
    return 0;
}

int hv_partition_trace_instructions(struct hv_partition *p, uint64_t start, uint64_t end)
{
    if (!p->engine->trace_code)
        return -EOPNOTSUPP;     /* KVM runs guest code without us seeing it */
    if (!p->trace.ring || start > end)
        return -EINVAL;
    if (p->vcpu)
        return -EBUSY;
    p->insn_trace_start = start;
    p->insn_trace_end = end;
    return 0;
}

uint64_t partition_clock_ns(const struct hv_partition *p)
{
    if (p->deterministic)
        return p->g.instructions;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)(now.tv_sec - p->epoch.tv_sec) * 1000000000ull
           + (uint64_t)(now.tv_nsec - p->epoch.tv_nsec);
}
