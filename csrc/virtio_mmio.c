/*
 * virtio_mmio.c - the virtio-mmio register file of each device (virtio 1.x,
 * section 4.2.2, version 2 "modern" registers only).
 *
 * T:570 Why registers live in C: a driver touches them dozens of times per
 * device, and on TCG an MMIO access happens inside the emulator, where
 * Python cannot be called.  So the core answers every register access on
 * both engines, and the parent partition sees only what it must act on:
 * a kick (QueueNotify) on a queue's eventfd, and driver status changes on a
 * control eventfd.  The parent's backend then walks the queue in guest
 * memory, and signals completion with hv_virtio_interrupt(), which raises
 * the device's hv event.  On KVM a kick is an ioeventfd: no exit at all.
 *
 * T:577 A guest without an hv event page (a stock kernel) gets a device's
 * interrupt as a PC device's instead: slots below HV_VIRTIO_IRQ_SLOTS drive
 * IOAPIC pin HV_VIRTIO_IRQ_BASE + slot, a level-triggered line that is high
 * while InterruptStatus is non-zero (hv/acpi.py describes the pin in the
 * DSDT).  The driver's InterruptACK (or a reset) lowers it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core.h"

/* Register offsets and bits: hv/virtio_mmio.h (shared with the guest
 * library and Python). */
#define VERSION_1_BIT (1ull << VIRTIO_F_VERSION_1)

struct virtio_dev {
    pthread_mutex_t lock;
    struct hv_virtio_state s;
    int queue_fds[HV_VIRTIO_QUEUES_MAX];
    int control_fd;
    /* T:576 Reset against a backend that is still reading the old rings.
     * The backend claims the rings of one reset generation before it reads
     * them and releases them when it has dropped its view.  A reset while
     * they are held is "in progress": Status keeps reading the value it had
     * before the reset until the release, and a driver waits for Status to
     * read 0 before it sets the device up again (virtio 1.2, 2.4.1), so it
     * never writes new rings the backend still reads, and a completion of
     * an old request can only land in the old rings. */
    int rings_held;
    uint32_t status_before_reset;   /* what Status reads while s.reset_pending */
    int irq_line;                   /* the IOAPIC pin's level, last told to it */
};

static void signal_fd(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
        /* An eventfd only fails when its counter would overflow: the
         * backend has that many kicks pending already. */
    }
}

static struct virtio_dev *device(struct hv_partition *p, uint32_t slot)
{
    return slot < HV_VIRTIO_MMIO_SLOTS ? p->virtio[slot] : NULL;
}

int hv_virtio_add(struct hv_partition *p, uint32_t slot, uint32_t device_id,
                  uint64_t features, uint32_t nqueues, uint32_t queue_max,
                  const uint8_t *config, uint32_t config_len,
                  const int *queue_fds, int control_fd)
{
    if (slot >= HV_VIRTIO_MMIO_SLOTS || p->virtio[slot] || device_id == 0 ||
        nqueues == 0 || nqueues > HV_VIRTIO_QUEUES_MAX || queue_max == 0 ||
        queue_max > 32768 || (queue_max & (queue_max - 1)) ||
        config_len > HV_VIRTIO_CONFIG_MAX || !(features & VERSION_1_BIT))
        return -EINVAL;
    if (p->mem_size > HV_VIRTIO_MMIO_BASE)
        return -ERANGE;             /* RAM would cover the device window */
    if (p->vcpu)
        return -EBUSY;              /* devices are fixed before the guest runs */
    struct virtio_dev *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    pthread_mutex_init(&d->lock, NULL);
    d->s.device_id = device_id;
    d->s.vendor_id = VIRTIO_MMIO_VENDOR_HV;
    d->s.device_features = features;
    d->s.nqueues = nqueues;
    d->s.event = HV_VIRTIO_EVENT_BASE + slot;
    for (uint32_t q = 0; q < nqueues; q++) {
        d->s.queue[q].num_max = queue_max;
        d->queue_fds[q] = queue_fds[q];
    }
    d->s.config_len = config_len;
    memcpy(d->s.config, config, config_len);
    d->control_fd = control_fd;

    /* On KVM a QueueNotify write signals the queue's eventfd in the kernel. */
    uint64_t notify = HV_VIRTIO_MMIO_BASE + (uint64_t)slot * HV_VIRTIO_MMIO_SLOT + VIRTIO_MMIO_QUEUE_NOTIFY;
    if (p->engine->add_ioeventfd)
        for (uint32_t q = 0; q < nqueues; q++)
            p->engine->add_ioeventfd(p->engine_vm, notify, 4, q, queue_fds[q]);
    p->virtio[slot] = d;
    return 0;
}

void virtio_free(struct hv_partition *p)
{
    for (uint32_t slot = 0; slot < HV_VIRTIO_MMIO_SLOTS; slot++) {
        struct virtio_dev *d = p->virtio[slot];
        if (!d)
            continue;
        pthread_mutex_destroy(&d->lock);
        free(d);
        p->virtio[slot] = NULL;
    }
}

int hv_virtio_state(struct hv_partition *p, uint32_t slot, struct hv_virtio_state *out)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return -ENOENT;
    pthread_mutex_lock(&d->lock);
    *out = d->s;
    pthread_mutex_unlock(&d->lock);
    return 0;
}

/* The device's IOAPIC line follows InterruptStatus (d->lock held; the
 * platform lock nests inside it, never the other way round). */
static void update_irq_line(struct hv_partition *p, uint32_t slot, struct virtio_dev *d)
{
    int level = d->s.interrupt_status != 0;
    if (slot >= HV_VIRTIO_IRQ_SLOTS || level == d->irq_line)
        return;
    d->irq_line = level;
    pthread_mutex_lock(&p->platform->lock);
    ioapic_set_line(p, HV_VIRTIO_IRQ_BASE + slot, level);
    pthread_mutex_unlock(&p->platform->lock);
}

int hv_virtio_interrupt(struct hv_partition *p, uint32_t slot, uint32_t bits)
{
    struct virtio_dev *d = device(p, slot);
    if (!d || bits == 0 || bits > 3)
        return -EINVAL;
    pthread_mutex_lock(&d->lock);
    d->s.interrupt_status |= bits;
    uint32_t event = d->s.event;
    pthread_mutex_unlock(&d->lock);
    int err = event_raise(p, event);
    if (err != -HV_EPERM)
        return err;
    /* No event page: the IOAPIC pin, for a guest that took it from ACPI;
     * one that uses neither polls its used rings. */
    pthread_mutex_lock(&d->lock);
    update_irq_line(p, slot, d);
    pthread_mutex_unlock(&d->lock);
    return 0;
}

int hv_virtio_set_config(struct hv_partition *p, uint32_t slot, const uint8_t *config, uint32_t len)
{
    struct virtio_dev *d = device(p, slot);
    if (!d || len > HV_VIRTIO_CONFIG_MAX)
        return -EINVAL;
    pthread_mutex_lock(&d->lock);
    memcpy(d->s.config, config, len);
    d->s.config_len = len;
    d->s.config_generation++;
    pthread_mutex_unlock(&d->lock);
    return hv_virtio_interrupt(p, slot, VIRTIO_MMIO_INT_CONFIG);
}

int hv_virtio_needs_reset(struct hv_partition *p, uint32_t slot)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return -ENOENT;
    pthread_mutex_lock(&d->lock);
    d->s.status |= VIRTIO_STATUS_NEEDS_RESET;
    pthread_mutex_unlock(&d->lock);
    return hv_virtio_interrupt(p, slot, VIRTIO_MMIO_INT_CONFIG);     /* spec 2.1.2: a config-change interrupt */
}

/* A saved device's guest-visible registers (snapshot restore, before the
 * vCPUs exist), onto the device just added in its slot by the same kind of
 * backend: the ids, queue count and offered features must be the ones it
 * offers now.  Everything is checked before anything changes (-EINVAL). */
int hv_virtio_restore(struct hv_partition *p, uint32_t slot, const struct hv_virtio_state *in)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return -ENOENT;
    if (p->vcpu)
        return -EBUSY;
    if (in->device_id != d->s.device_id || in->nqueues != d->s.nqueues ||
        in->device_features != d->s.device_features ||
        (in->driver_features & ~in->device_features) || (in->interrupt_status & ~3u))
        return -EINVAL;
    for (uint32_t q = 0; q < in->nqueues; q++) {
        const struct hv_virtio_queue *vq = &in->queue[q];
        if (vq->num > d->s.queue[q].num_max || (vq->num & (vq->num - 1)) || vq->ready > 1 ||
            (vq->ready && vq->num == 0))
            return -EINVAL;
    }
    pthread_mutex_lock(&d->lock);
    d->s.driver_features = in->driver_features;
    d->s.status = in->status;
    d->s.interrupt_status = in->interrupt_status;
    d->s.config_generation = in->config_generation;
    d->s.queue_sel = in->queue_sel;
    d->s.features_sel = in->features_sel;
    d->s.driver_features_sel = in->driver_features_sel;
    for (uint32_t q = 0; q < in->nqueues; q++) {
        struct hv_virtio_queue *vq = &d->s.queue[q];
        vq->num = in->queue[q].num;
        vq->ready = in->queue[q].ready;
        vq->desc = in->queue[q].desc;
        vq->avail = in->queue[q].avail;
        vq->used = in->queue[q].used;
    }
    update_irq_line(p, slot, d);
    int fd = d->control_fd;
    pthread_mutex_unlock(&d->lock);
    signal_fd(fd);                  /* the backend builds its view of the rings */
    return 0;
}

int hv_virtio_rings_claim(struct hv_partition *p, uint32_t slot, uint32_t resets)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return -ENOENT;
    pthread_mutex_lock(&d->lock);
    int current = d->s.resets == resets;
    if (current)
        d->rings_held = 1;
    pthread_mutex_unlock(&d->lock);
    return current ? 0 : -ESTALE;
}

int hv_virtio_rings_release(struct hv_partition *p, uint32_t slot)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return -ENOENT;
    pthread_mutex_lock(&d->lock);
    d->rings_held = 0;
    d->s.reset_pending = 0;     /* a reset in progress completes: Status reads its value */
    pthread_mutex_unlock(&d->lock);
    return 0;
}

uint32_t hv_virtio_resets(struct hv_partition *p, uint32_t slot)
{
    struct virtio_dev *d = device(p, slot);
    if (!d)
        return 0;
    pthread_mutex_lock(&d->lock);
    uint32_t resets = d->s.resets;
    pthread_mutex_unlock(&d->lock);
    return resets;
}

/* T:578 The device side's polling, without the GIL (cffi drops it for
 * the call).  After serving a queue the backend watches avail.idx for a
 * while with kicks suppressed (hv/devices/polling.py decides how long):
 * a driver that posts again soon then costs no kick and the device thread
 * no wake-up.  Bounded twice: by the caller's window and by
 * VIRTIO_POLL_MAX_NS here.  The thread may have other work (the partition's
 * other devices, a frame handed over by a peer): wake_fd, the thread's
 * epoll fd, is looked at every few microseconds and ends the watch when it
 * is readable.  Only a 16-bit word inside RAM is read; the ring's place
 * was checked when the backend built its view of it. */
#define VIRTIO_POLL_MAX_NS 1000000ull
#define VIRTIO_POLL_FD_EVERY_NS 4000ull

static uint64_t clock_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int fd_readable(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    return fd >= 0 && poll(&pfd, 1, 0) > 0;
}

static int watch(const volatile uint16_t *word, uint16_t seen, uint64_t deadline, int wake_fd)
{
    uint64_t next_fd_check = 0;
    for (;;) {
        for (int spin = 0; spin < 32; spin++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
                return HV_VIRTIO_POLL_POSTED;
            __builtin_ia32_pause();
        }
        uint64_t now = clock_ns(CLOCK_MONOTONIC);
        if (now >= deadline)
            return HV_VIRTIO_POLL_TIMEOUT;
        if (now >= next_fd_check) {
            if (fd_readable(wake_fd))
                return HV_VIRTIO_POLL_WOKEN;
            next_fd_check = now + VIRTIO_POLL_FD_EVERY_NS;
        }
    }
}

/* *waited_ns: how long the watch took; *stolen_ns: how much of that this
 * thread did not run (others wanted the CPU: polling then costs them). */
int hv_virtio_poll(struct hv_partition *p, uint64_t gpa, uint32_t seen, uint64_t timeout_ns,
                   int wake_fd, uint64_t *waited_ns, uint64_t *stolen_ns)
{
    *waited_ns = *stolen_ns = 0;
    if (gpa % 2 || gpa >= p->mem_size || p->mem_size - gpa < 2)
        return -EINVAL;
    const volatile uint16_t *word = (const volatile uint16_t *)(p->ram + gpa);
    uint64_t start = clock_ns(CLOCK_MONOTONIC), ran = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t deadline = start + (timeout_ns < VIRTIO_POLL_MAX_NS ? timeout_ns : VIRTIO_POLL_MAX_NS);
    int outcome = watch(word, (uint16_t)seen, deadline, wake_fd);
    uint64_t waited = clock_ns(CLOCK_MONOTONIC) - start;
    ran = clock_ns(CLOCK_THREAD_CPUTIME_ID) - ran;
    *waited_ns = waited;
    *stolen_ns = waited > ran ? waited - ran : 0;
    return outcome;
}

/* Reset (status 0): the driver starts over; the device forgets it all. */
static void reset_locked(struct virtio_dev *d)
{
    if (d->rings_held && !d->s.reset_pending) {
        d->s.reset_pending = 1;
        d->status_before_reset = d->s.status;
    }
    d->s.resets++;
    d->s.status = 0;
    d->s.driver_features = 0;
    d->s.interrupt_status = 0;
    d->s.queue_sel = d->s.features_sel = d->s.driver_features_sel = 0;
    for (uint32_t q = 0; q < d->s.nqueues; q++) {
        struct hv_virtio_queue *vq = &d->s.queue[q];
        vq->num = vq->ready = 0;
        vq->desc = vq->avail = vq->used = 0;
    }
}

static uint32_t half(uint64_t value, uint32_t sel)
{
    return sel == 0 ? (uint32_t)value : sel == 1 ? (uint32_t)(value >> 32) : 0;
}

static void set_half(uint64_t *field, int high, uint32_t value)
{
    *field = high ? (*field & 0xffffffffull) | ((uint64_t)value << 32)
                  : (*field & ~0xffffffffull) | value;
}

static uint64_t read_reg(struct virtio_dev *d, uint32_t off)
{
    struct hv_virtio_state *s = &d->s;
    struct hv_virtio_queue *vq = s->queue_sel < s->nqueues ? &s->queue[s->queue_sel] : NULL;
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:             return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:           return VIRTIO_MMIO_VERSION_MODERN;
    case VIRTIO_MMIO_DEVICE_ID:         return s->device_id;
    case VIRTIO_MMIO_VENDOR_ID:         return s->vendor_id;
    case VIRTIO_MMIO_DEVICE_FEATURES:   return half(s->device_features, s->features_sel);
    case VIRTIO_MMIO_QUEUE_NUM_MAX:     return vq ? vq->num_max : 0;    /* 0: no such queue */
    case VIRTIO_MMIO_QUEUE_READY:       return vq ? vq->ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:  return s->interrupt_status;
    case VIRTIO_MMIO_STATUS:            return s->reset_pending ? d->status_before_reset : s->status;
    case VIRTIO_MMIO_CONFIG_GENERATION: return s->config_generation;
    default:                    return 0;   /* write-only or reserved */
    }
}

/* Returns the fd to signal after the lock is dropped, or -1. */
static int write_reg(struct virtio_dev *d, uint32_t off, uint32_t value)
{
    struct hv_virtio_state *s = &d->s;
    struct hv_virtio_queue *vq = s->queue_sel < s->nqueues ? &s->queue[s->queue_sel] : NULL;
    /* Queue registers are frozen while the queue is ready (spec 4.2.2.2). */
    int queue_writable = vq && !vq->ready;
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL: s->features_sel = value; break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL: s->driver_features_sel = value; break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (s->driver_features_sel < 2 && !(s->status & VIRTIO_STATUS_FEATURES_OK))
            set_half(&s->driver_features, (int)s->driver_features_sel, value);
        break;
    case VIRTIO_MMIO_QUEUE_SEL:         s->queue_sel = value; break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (queue_writable)
            vq->num = value;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (vq && (value & 1) && !vq->ready)
            vq->ready = 1;
        else if (vq && !(value & 1))
            vq->ready = 0;
        return d->control_fd;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        return value < s->nqueues ? d->queue_fds[value] : -1;
    case VIRTIO_MMIO_INTERRUPT_ACK:     s->interrupt_status &= ~value; break;
    case VIRTIO_MMIO_STATUS:
        if (value == 0) {
            reset_locked(d);
        } else {
            /* FEATURES_OK only for a subset of what was offered, with
             * VERSION_1: the driver reads it back (spec 3.1.1). */
            if ((value & VIRTIO_STATUS_FEATURES_OK) && !(s->status & VIRTIO_STATUS_FEATURES_OK) &&
                ((s->driver_features & ~s->device_features) ||
                 !(s->driver_features & VERSION_1_BIT)))
                value &= ~VIRTIO_STATUS_FEATURES_OK;
            s->status = (s->status & VIRTIO_STATUS_NEEDS_RESET) | value;
        }
        return d->control_fd;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:    if (queue_writable) set_half(&vq->desc, 0, value); break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:   if (queue_writable) set_half(&vq->desc, 1, value); break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:  if (queue_writable) set_half(&vq->avail, 0, value); break;
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH: if (queue_writable) set_half(&vq->avail, 1, value); break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:  if (queue_writable) set_half(&vq->used, 0, value); break;
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: if (queue_writable) set_half(&vq->used, 1, value); break;
    default: break;             /* read-only or reserved: ignored */
    }
    return -1;
}

int hv_test_mmio(struct hv_partition *p, uint64_t addr, uint32_t size, int write, uint64_t *value)
{
    return virtio_mmio_access(p, addr, size, write, value);
}

/* T:575 Every guest access to the device window lands here (KVM's MMIO
 * exits, TCG's MMIO callbacks).  Returns 0 if handled; reads of empty slots
 * and bad widths see zeros, writes to them are dropped. */
int virtio_mmio_access(struct hv_partition *p, uint64_t addr, uint32_t size,
                       int write, uint64_t *value)
{
    if (addr < HV_VIRTIO_MMIO_BASE ||
        addr - HV_VIRTIO_MMIO_BASE >= (uint64_t)HV_VIRTIO_MMIO_SLOTS * HV_VIRTIO_MMIO_SLOT)
        return -1;
    uint32_t slot = (uint32_t)((addr - HV_VIRTIO_MMIO_BASE) / HV_VIRTIO_MMIO_SLOT);
    uint32_t off = (uint32_t)((addr - HV_VIRTIO_MMIO_BASE) % HV_VIRTIO_MMIO_SLOT);
    struct virtio_dev *d = p->virtio[slot];
    if (!write)
        *value = 0;
    if (!d || size == 0 || size > 8 || off + size > HV_VIRTIO_MMIO_SLOT)
        return 0;
    int fd = -1;
    pthread_mutex_lock(&d->lock);
    if (off >= VIRTIO_MMIO_CONFIG) {
        /* Config space: any width, bytes beyond config_len read as zero;
         * drivers do not write the config of the devices hv offers. */
        uint32_t at = off - VIRTIO_MMIO_CONFIG;
        if (!write)
            for (uint32_t i = 0; i < size && at + i < d->s.config_len; i++)
                *value |= (uint64_t)d->s.config[at + i] << (8 * i);
    } else if (size == 4 && off % 4 == 0) {
        if (write) {
            fd = write_reg(d, off, (uint32_t)*value);
            if (d->irq_line)
                update_irq_line(p, slot, d);    /* an ACK or a reset lowers it */
        } else
            *value = read_reg(d, off);
    }
    pthread_mutex_unlock(&d->lock);
    signal_fd(fd);
    return 0;
}
