/*
 * virtio.c - the virtio-mmio transport and split virtqueues (driver side).
 *
 * Section numbers are those of the OASIS virtio v1.2 specification.
 */
#include "events.h"
#include "hv.h"
#include "printf.h"
#include "virtio.h"
#include "virtio_cmdline.h"
#include "x86.h"

/* ---- Registers ----------------------------------------------------------- */

static inline uint32_t rd32(const struct virtio_dev *dev, unsigned reg)
{
    return *(volatile uint32_t *)(dev->base + reg);
}

static inline void wr32(const struct virtio_dev *dev, unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(dev->base + reg) = v;
}

static void set_status(struct virtio_dev *dev, uint32_t bits)
{
    wr32(dev, VIRTIO_MMIO_STATUS, rd32(dev, VIRTIO_MMIO_STATUS) | bits);
}

const char *virtio_strerror(int err)
{
    static const char *const names[] = {
        [0] = "ok",
        [VIRTIO_ENODEV] = "no such device",
        [VIRTIO_EFEATURE] = "feature negotiation failed",
        [VIRTIO_EQUEUE] = "queue unavailable",
        [VIRTIO_EFULL] = "queue full",
        [VIRTIO_ETIMEOUT] = "timed out",
        [VIRTIO_EDEVICE] = "device broke the protocol",
        [VIRTIO_EIO] = "I/O error",
        [VIRTIO_EUNSUPP] = "unsupported request",
        [VIRTIO_ERANGE] = "out of range",
        [VIRTIO_ENEEDS_RESET] = "device needs a reset",
    };
    unsigned e = (unsigned)(err < 0 ? -err : err);

    return e < sizeof(names) / sizeof(names[0]) ? names[e] : "unknown error";
}

/* ---- Discovery ---------------------------------------------------------- */

/*
 * T:381 Finding devices.  QEMU microvm (acpi=off) and hv both list each
 * device on the command line as `virtio_mmio.device=<size>@<base>:<irq>`
 * (Linux's format, Documentation/admin-guide/kernel-parameters.txt); under
 * hv <irq> is the device's event.  Without such entries (QEMU with ACPI on),
 * probe the 32 slots of the window in hv/abi.h.  A slot counts if it says
 * "virt", version 2 and a non-zero device ID (4.2.2.1, 4.2.3.1.1).
 */
static bool slot_matches(uintptr_t base, uint32_t device_id)
{
    struct virtio_dev probe = { .base = base };

    if (rd32(&probe, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC)
        return false;
    if (rd32(&probe, VIRTIO_MMIO_DEVICE_ID) != device_id)
        return false;
    if (rd32(&probe, VIRTIO_MMIO_VERSION) != VIRTIO_MMIO_VERSION_MODERN) {
        printf("virtio: device %u at %lx is legacy (QEMU: -global "
               "virtio-mmio.force-legacy=false); skipped\n", device_id, base);
        return false;
    }
    return true;
}

/* `512@0xfeb00e00:12` -> base and irq; false if it does not parse. */
static bool parse_entry(const char *s, size_t len, uintptr_t *base, unsigned *irq)
{
    uint64_t size, addr, n;
    size_t end;

    if (!cmdline_parse_uint(s, len, &size, &end) || end >= len || s[end] != '@')
        return false;
    s += end + 1;
    len -= end + 1;
    if (!cmdline_parse_uint(s, len, &addr, &end) || end >= len || s[end] != ':')
        return false;
    s += end + 1;
    len -= end + 1;
    if (!cmdline_parse_uint(s, len, &n, &end))
        return false;
    /* The registers we touch must fit the window, below the 4 GiB map. */
    if (size < VIRTIO_MMIO_CONFIG || addr + size > (1ull << 32) || addr + size < addr)
        return false;
    *base = (uintptr_t)addr;
    *irq = (unsigned)n;
    return true;
}

int virtio_find(uint32_t device_id, unsigned nth, struct virtio_dev *dev)
{
    const char *s;
    size_t len;
    unsigned entries = 0;
    uintptr_t base;
    unsigned irq;

    for (unsigned i = 0; (s = cmdline_value("virtio_mmio.device", i, &len)) != NULL; i++) {
        if (!parse_entry(s, len, &base, &irq)) {
            printf("virtio: ignoring a virtio_mmio.device= entry that does not parse\n");
            continue;
        }
        entries++;
        if (slot_matches(base, device_id) && nth-- == 0)
            goto found;
    }
    if (entries > 0)
        return -VIRTIO_ENODEV;  /* the list is complete: no probing */
    for (unsigned slot = 0; slot < HV_VIRTIO_MMIO_SLOTS; slot++) {
        base = HV_VIRTIO_MMIO_BASE + slot * HV_VIRTIO_MMIO_SLOT;
        irq = HV_VIRTIO_EVENT_BASE + slot;      /* hv's rule; QEMU's pins differ */
        if (slot_matches(base, device_id) && nth-- == 0)
            goto found;
    }
    return -VIRTIO_ENODEV;
found:
    *dev = (struct virtio_dev){ .base = base, .device_id = device_id, .irq = irq };
    return 0;
}

/* ---- Initialization (3.1.1) ---------------------------------------------- */

/*
 * A device may finish a reset later than the write of 0 (hv's backend first
 * retires the requests in flight).  Wait on the clock, not on a count of
 * reads: how many reads fit in the wait depends on the engine and on how
 * busy the host is.  The clock is read every 64 polls (under hv each read
 * is an exit).
 */
static bool reset_done(struct virtio_dev *dev)
{
    uint64_t start = 0;

    for (unsigned polls = 1; rd32(dev, VIRTIO_MMIO_STATUS) != 0; polls++) {
        if (polls % 64 == 0) {
            uint64_t now = virtio_now();
            if (start == 0)
                start = now;
            else if (now - start > VIRTIO_TIMEOUT_DEFAULT)
                return false;
        }
        asm volatile("pause");
    }
    return true;
}

/*
 * T:382 Device initialization, in the order 3.1.1 gives: reset (write 0,
 * then wait until Status reads 0, 4.2.2.1), ACKNOWLEDGE, DRIVER, read the
 * device's 64 feature bits in two 32-bit halves, write back the subset we
 * understand, set FEATURES_OK and read it back: a device that cannot work
 * with our subset clears it.  Queues and DRIVER_OK come after.
 */
int virtio_begin(struct virtio_dev *dev, uint64_t wanted)
{
    uint64_t offered;

    wr32(dev, VIRTIO_MMIO_STATUS, 0);
    if (!reset_done(dev))
        return -VIRTIO_EDEVICE;
    set_status(dev, VIRTIO_STATUS_ACKNOWLEDGE);
    set_status(dev, VIRTIO_STATUS_DRIVER);

    wr32(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    offered = (uint64_t)rd32(dev, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    wr32(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    offered |= rd32(dev, VIRTIO_MMIO_DEVICE_FEATURES);

    /* VERSION_1: the modern (little-endian, 1.x) interface; no legacy. */
    if (!(offered & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
        virtio_fail(dev);
        return -VIRTIO_EFEATURE;
    }
    wanted |= VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) |
              VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC);
    dev->features = offered & wanted;

    wr32(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr32(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(dev->features >> 32));
    wr32(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr32(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)dev->features);

    set_status(dev, VIRTIO_STATUS_FEATURES_OK);
    if (!(rd32(dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        virtio_fail(dev);
        return -VIRTIO_EFEATURE;
    }
    return 0;
}

void virtio_driver_ok(struct virtio_dev *dev)
{
    set_status(dev, VIRTIO_STATUS_DRIVER_OK);
}

void virtio_fail(struct virtio_dev *dev)
{
    set_status(dev, VIRTIO_STATUS_FAILED);
}

/*
 * 4.2.2.2: 8/16-bit fields are read at their width, 32/64-bit fields as
 * aligned 32-bit words; a 64-bit field is two words, so re-read while
 * ConfigGeneration changes under us (2.5.1).
 */
#define CONFIG_READ(type, name)                                                 \
    type name(struct virtio_dev *dev, unsigned off)                             \
    {                                                                           \
        uint32_t gen;                                                           \
        type v;                                                                 \
        do {                                                                    \
            gen = rd32(dev, VIRTIO_MMIO_CONFIG_GENERATION);                     \
            v = *(volatile type *)(dev->base + VIRTIO_MMIO_CONFIG + off);       \
        } while (gen != rd32(dev, VIRTIO_MMIO_CONFIG_GENERATION));              \
        return v;                                                               \
    }

CONFIG_READ(uint8_t, virtio_config8)
CONFIG_READ(uint16_t, virtio_config16)
CONFIG_READ(uint32_t, virtio_config32)

uint64_t virtio_config64(struct virtio_dev *dev, unsigned off)
{
    uint32_t gen, lo, hi;

    do {
        gen = rd32(dev, VIRTIO_MMIO_CONFIG_GENERATION);
        lo = rd32(dev, VIRTIO_MMIO_CONFIG + off);
        hi = rd32(dev, VIRTIO_MMIO_CONFIG + off + 4);
    } while (gen != rd32(dev, VIRTIO_MMIO_CONFIG_GENERATION));
    return (uint64_t)hi << 32 | lo;
}

/* ---- Queues ----------------------------------------------------------------- */

/* ring[size] of the other side's ring: the EVENT_IDX words (2.7.7, 2.7.10). */
static volatile uint16_t *used_event(struct virtq *vq)
{
    return &vq->avail.ring[vq->size];
}

static volatile uint16_t *avail_event(struct virtq *vq)
{
    return (volatile uint16_t *)&vq->used.ring[vq->size];
}

static void wr64_pair(struct virtio_dev *dev, unsigned low_reg, const void *p)
{
    uint64_t a = (uintptr_t)p;

    wr32(dev, low_reg, (uint32_t)a);
    wr32(dev, low_reg + 4, (uint32_t)(a >> 32));
}

/*
 * T:383 Queue set-up (4.2.3.2): select the queue, check it is not live,
 * size it to min(QueueNumMax, VIRTQ_MAX) rounded down to a power of two
 * (2.7: split rings are powers of two), tell the device the three ring
 * addresses, then QueueReady = 1.  Every descriptor starts on the free list.
 * We poll, so ask for no interrupts: NO_INTERRUPT without EVENT_IDX, or a
 * used_event the device will not reach for 65535 completions with it.
 */
int virtq_setup(struct virtio_dev *dev, unsigned index, struct virtq *vq)
{
    uint32_t max;
    uint16_t size = VIRTQ_MAX;

    wr32(dev, VIRTIO_MMIO_QUEUE_SEL, index);
    if (rd32(dev, VIRTIO_MMIO_QUEUE_READY) != 0)
        return -VIRTIO_EQUEUE;
    max = rd32(dev, VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max == 0)
        return -VIRTIO_EQUEUE;
    while (size > max)
        size >>= 1;

    __builtin_memset(vq, 0, sizeof(*vq));
    vq->dev = dev;
    vq->index = index;
    vq->size = size;
    vq->event_idx = virtio_has(dev, VIRTIO_RING_F_EVENT_IDX);
    vq->indirect_ok = virtio_has(dev, VIRTIO_RING_F_INDIRECT_DESC);
    for (uint16_t i = 0; i < size; i++)
        vq->desc[i].next = i + 1;
    vq->num_free = size;
    if (vq->event_idx)
        *used_event(vq) = 0xffff;
    else
        vq->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;

    wr32(dev, VIRTIO_MMIO_QUEUE_NUM, size);
    wr64_pair(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, vq->desc);
    wr64_pair(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, &vq->avail);
    wr64_pair(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, &vq->used);
    wr32(dev, VIRTIO_MMIO_QUEUE_READY, 1);
    return 0;
}

static uint16_t alloc_desc(struct virtq *vq)
{
    uint16_t i = vq->free_head;

    vq->free_head = vq->desc[i].next;
    vq->num_free--;
    return i;
}

static void fill_desc(struct virtq_desc *d, const struct virtq_buf *b, bool device_writes)
{
    d->addr = (uintptr_t)b->addr;
    d->len = b->len;
    d->flags = device_writes ? VIRTQ_DESC_F_WRITE : 0;
}

/*
 * T:384 Posting a buffer (2.7.13): fill descriptors, put the chain's head
 * in the next avail.ring slot, then publish it by advancing avail.idx.
 * The release store orders the descriptor and ring writes before the idx
 * write the device looks at (2.7.13.3.1).  A chain of several buffers uses
 * one descriptor pointing at a per-head indirect table when the device
 * accepts VIRTIO_RING_F_INDIRECT_DESC (2.7.5.3), so a request costs one ring
 * slot; the table's entries chain by index from 0 and never nest.
 */
int virtq_add(struct virtq *vq, const struct virtq_buf *bufs, unsigned n_out,
              unsigned n_in, void *token)
{
    unsigned n = n_out + n_in;
    bool indirect = vq->indirect_ok && n > 1 && n <= VIRTQ_INDIRECT_MAX;
    uint32_t in_len = 0;
    uint16_t head;

    if (n == 0 || token == NULL || vq->num_free < (indirect ? 1 : n))
        return -VIRTIO_EFULL;
    for (unsigned i = n_out; i < n; i++)
        in_len += bufs[i].len;

    head = alloc_desc(vq);
    if (indirect) {
        struct virtq_desc *table = vq->indirect[head];

        for (unsigned i = 0; i < n; i++) {
            fill_desc(&table[i], &bufs[i], i >= n_out);
            if (i + 1 < n) {
                table[i].flags |= VIRTQ_DESC_F_NEXT;
                table[i].next = (uint16_t)(i + 1);
            }
        }
        vq->desc[head].addr = (uintptr_t)table;
        vq->desc[head].len = n * sizeof(struct virtq_desc);
        vq->desc[head].flags = VIRTQ_DESC_F_INDIRECT;
    } else {
        uint16_t d = head;

        for (unsigned i = 0; i < n; i++) {
            fill_desc(&vq->desc[d], &bufs[i], i >= n_out);
            if (i + 1 < n) {
                uint16_t next = alloc_desc(vq);

                vq->desc[d].flags |= VIRTQ_DESC_F_NEXT;
                vq->desc[d].next = next;
                d = next;
            }
        }
    }
    vq->token[head] = token;
    vq->in_len[head] = in_len;
    vq->avail.ring[vq->avail_idx & (vq->size - 1)] = head;
    vq->avail_idx++;
    __atomic_store_n(&vq->avail.idx, vq->avail_idx, __ATOMIC_RELEASE);
    return 0;
}

/*
 * Notify only when the device asked (2.7.10, 2.7.13.4): with EVENT_IDX
 * when avail.idx stepped past avail_event since the last check, otherwise
 * unless used.flags says NO_NOTIFY.  The full fence keeps the idx store
 * ahead of those loads (x86 may reorder a store with a later load).
 */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

void virtq_kick(struct virtq *vq)
{
    bool notify;

    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (vq->event_idx)
        notify = need_event(*avail_event(vq), vq->avail_idx, vq->kicked_idx);
    else
        notify = !(__atomic_load_n(&vq->used.flags, __ATOMIC_RELAXED) & VIRTQ_USED_F_NO_NOTIFY);
    vq->kicked_idx = vq->avail_idx;
    if (notify)
        wr32(vq->dev, VIRTIO_MMIO_QUEUE_NOTIFY, vq->index);
}

/* Return a finished chain's descriptors to the free list. */
static void free_chain(struct virtq *vq, uint16_t head)
{
    uint16_t d = head;

    vq->num_free++;
    while (vq->desc[d].flags & VIRTQ_DESC_F_NEXT) {
        d = vq->desc[d].next;
        vq->num_free++;
    }
    vq->desc[d].next = vq->free_head;
    vq->free_head = head;
}

/*
 * T:386 Completion (2.7.14): the acquire load of used.idx orders it before
 * the reads of the used element it covers.  The element comes from device
 * memory, so it is checked before use: the id must be a head we posted and
 * still own, the length no more than the chain's writable bytes, and the
 * device can be at most `size` entries ahead.
 */
int virtq_get(struct virtq *vq, void **token, uint32_t *len)
{
    uint16_t used_idx = __atomic_load_n(&vq->used.idx, __ATOMIC_ACQUIRE);
    struct virtq_used_elem e;

    if (used_idx == vq->last_used)
        return 0;
    if ((uint16_t)(used_idx - vq->last_used) > vq->size)
        goto broken;
    e = vq->used.ring[vq->last_used & (vq->size - 1)];
    if (e.id >= vq->size || vq->token[e.id] == NULL || e.len > vq->in_len[e.id])
        goto broken;
    vq->last_used++;
    *token = vq->token[e.id];
    *len = e.len;
    vq->token[e.id] = NULL;
    free_chain(vq, (uint16_t)e.id);
    return 1;
broken:
    printf("virtio: queue %u: bad used entry (idx %u, ours %u)\n", vq->index, used_idx,
           vq->last_used);
    virtio_fail(vq->dev);
    return -VIRTIO_EDEVICE;
}

/* ---- Waiting ---------------------------------------------------------------- */

uint64_t virtio_now(void)
{
    return hv_hypercalls_ready() ? hv_clock_read() : rdtsc();
}

const char *virtio_now_unit(void)
{
    return hv_hypercalls_ready() ? "ns (hv clock)" : "tsc cycles (rdtsc)";
}

/*
 * Under hv the device interrupt is an hv event: the kernel registers its
 * event page (hv_events_init) and masks the device's event, so nothing is
 * injected; virtq_wait then sleeps in HV_HC_BLOCK, which looks only at the
 * pending bits.  Not under hv: stay with polling.
 */
bool virtq_use_event(struct virtq *vq)
{
    vq->use_event = hv_hypercalls_ready() && vq->dev->irq < HV_EVENTS_MAX;
    return vq->use_event;
}

/*
 * T:387 One sleep of the event path, race-free: ask for an interrupt at
 * the next completion (used_event = last_used, or clear NO_INTERRUPT), fence,
 * and sleep only if the used ring is still empty; HV_HC_BLOCK returns at
 * once when the event is already pending.  Then take the pending bit and
 * acknowledge InterruptStatus (4.2.2) so the device can signal again.
 * False if hv refuses to block (no event page): fall back to polling.
 */
static bool sleep_on_event(struct virtq *vq)
{
    struct hv_event_page *page = hv_event_page();
    unsigned ev = vq->dev->irq;
    uint32_t isr;

    if (vq->event_idx)
        *used_event(vq) = vq->last_used;
    else
        vq->avail.flags = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&vq->used.idx, __ATOMIC_ACQUIRE) == vq->last_used &&
        hv_block() < 0)
        return false;
    __atomic_fetch_and(&page->pending[ev / 64], ~(1ull << (ev % 64)), __ATOMIC_SEQ_CST);
    isr = rd32(vq->dev, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (isr != 0)
        wr32(vq->dev, VIRTIO_MMIO_INTERRUPT_ACK, isr);
    return true;
}

/*
 * Poll the used ring; check the clock only every 64 polls, and start it
 * only when the first 64 polls missed.  The clock is the TSC, under hv
 * too: hv's clock is a hypercall, an exit every 64 polls that a guest
 * under QEMU (rdtsc) does not pay -- on TCG every ~3 us of waiting.  A
 * timeout needs no more than the TSC (VIRTIO_TIMEOUT_DEFAULT is ~3-10 s in
 * either unit).  PAUSE tells the CPU (and a host) we spin.
 */
int virtq_wait(struct virtq *vq, void **token, uint32_t *len, uint64_t timeout)
{
    uint64_t start = 0;

    for (unsigned polls = 1;; polls++) {
        int r = virtq_get(vq, token, len);

        if (r != 0)
            return r < 0 ? r : 0;
        if (vq->use_event && !sleep_on_event(vq))
            vq->use_event = false;
        if (polls % 64 == 0) {
            /* A device that gave up on us (2.1.2) will not answer: stop. */
            if (rd32(vq->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
                return -VIRTIO_ENEEDS_RESET;
            uint64_t now = rdtsc();
            if (start == 0)
                start = now;
            else if (now - start > timeout)
                return -VIRTIO_ETIMEOUT;
        }
        asm volatile("pause");
    }
}
