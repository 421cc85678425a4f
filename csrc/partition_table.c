/*
 * partition_table.c - every live partition by id, reference-counted.
 *
 * T:412 Work that crosses partitions (an IPI from the parent, later event
 * channels and grants) starts from a partition id the guest or the parent
 * named, and the partition behind it may be in the middle of being destroyed
 * on another thread.  So peers are never found through a pointer someone
 * kept: partition_get(id) looks the id up under the table lock and takes a
 * reference, and fails once destroy has begun.  The partition's memory goes
 * away only at the last partition_put(), so a peer holding a reference can
 * finish what it was doing (it sees p->dying and stops early).
 *
 * The table is open addressing with linear probing, keyed by id (ids are
 * never reused: next_partition_id only grows), with backward-shift deletion
 * so no tombstones build up over a long run of create/destroy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include "core.h"

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hv_partition **slots;     /* capacity entries, NULL = empty */
static uint32_t capacity;               /* 0 or a power of two, 2^capacity_bits */
static uint32_t capacity_bits;
static uint32_t count;

static uint32_t home_slot(uint32_t id)
{
    /* Fibonacci hashing: the top bits of id times 2^32/phi. */
    return (uint32_t)(id * 2654435761u) >> (32 - capacity_bits);
}

static int table_grow(void)
{
    uint32_t new_bits = capacity ? capacity_bits + 1 : 6;
    uint32_t new_capacity = 1u << new_bits;
    struct hv_partition **new_slots = calloc(new_capacity, sizeof(*new_slots));
    if (!new_slots)
        return -ENOMEM;
    struct hv_partition **old = slots;
    uint32_t old_capacity = capacity;
    slots = new_slots;
    capacity = new_capacity;
    capacity_bits = new_bits;
    for (uint32_t i = 0; i < old_capacity; i++) {
        if (!old[i])
            continue;
        uint32_t s = home_slot(old[i]->id);
        while (slots[s])
            s = (s + 1) & (capacity - 1);
        slots[s] = old[i];
    }
    free(old);
    return 0;
}

/* The slot holding id, or capacity if absent.  Under table_lock. */
static uint32_t find_slot(uint32_t id)
{
    if (!capacity)
        return 0;
    for (uint32_t s = home_slot(id); slots[s]; s = (s + 1) & (capacity - 1))
        if (slots[s]->id == id)
            return s;
    return capacity;
}

int partition_table_add(struct hv_partition *p)
{
    pthread_mutex_lock(&table_lock);
    int err = 0;
    if ((count + 1) * 2 > capacity)         /* keep the load factor below 1/2 */
        err = table_grow();
    if (!err) {
        uint32_t s = home_slot(p->id);
        while (slots[s])
            s = (s + 1) & (capacity - 1);
        slots[s] = p;
        count++;
        p->refs = 1;                        /* the creator's: hv_partition_destroy drops it */
    }
    pthread_mutex_unlock(&table_lock);
    return err;
}

void partition_table_remove(struct hv_partition *p)
{
    pthread_mutex_lock(&table_lock);
    uint32_t s = find_slot(p->id);
    if (s < capacity && slots[s] == p) {
        slots[s] = NULL;
        count--;
        /* Backward shift: move up any later entry of the probe run that
         * could not sit in its home slot because s was taken. */
        for (uint32_t next = (s + 1) & (capacity - 1); slots[next];
             next = (next + 1) & (capacity - 1)) {
            uint32_t home = home_slot(slots[next]->id);
            /* Does the gap s lie cyclically within [home, next)? */
            if (((next - home) & (capacity - 1)) >= ((next - s) & (capacity - 1))) {
                slots[s] = slots[next];
                slots[next] = NULL;
                s = next;
            }
        }
    }
    p->dying = 1;
    pthread_mutex_unlock(&table_lock);
}

struct hv_partition *partition_get(uint32_t id)
{
    pthread_mutex_lock(&table_lock);
    uint32_t s = find_slot(id);
    struct hv_partition *p = s < capacity ? slots[s] : NULL;
    if (p && !p->dying)
        p->refs++;
    else
        p = NULL;
    pthread_mutex_unlock(&table_lock);
    return p;
}

void partition_put(struct hv_partition *p)
{
    pthread_mutex_lock(&table_lock);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&table_lock);
    if (last)
        partition_free(p);
}

uint32_t partition_table_count(void)
{
    pthread_mutex_lock(&table_lock);
    uint32_t n = count;
    pthread_mutex_unlock(&table_lock);
    return n;
}

/* The public face: the parent finds partitions by id the same way. */
struct hv_partition *hv_partition_get(uint32_t id) { return partition_get(id); }
void hv_partition_put(struct hv_partition *p) { partition_put(p); }
uint32_t hv_partition_count(void) { return partition_table_count(); }
