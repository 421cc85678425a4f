/*
 * virtio.h - virtio 1.x over MMIO, split virtqueues, polled completion.
 *
 * The driver half of the virtio spec (OASIS virtio v1.2): the MMIO transport
 * (4.2.2, register layout version 2 only), device initialization (3.1) and
 * split virtqueues (2.7).  Device drivers (virtio_blk.c, virtio_rng.c,
 * virtio_console.c, virtio_net.c) are built on the calls below:
 *
 *     virtio_find(VIRTIO_ID_BLOCK, 0, &dev)        find the device
 *     virtio_begin(&dev, wanted_features)          reset .. FEATURES_OK
 *     virtq_setup(&dev, 0, &vq)                    one call per queue
 *     virtio_driver_ok(&dev)                       the device goes live
 *     virtq_add(&vq, bufs, n_out, n_in, token)     post a buffer chain
 *     virtq_kick(&vq)                              notify, unless suppressed
 *     virtq_wait(&vq, &token, &len, timeout)       poll the used ring
 *
 * The same image runs under hv and under stock QEMU microvm: completion is
 * found by polling the used ring, which needs no interrupt controller.  Under
 * hv a queue may instead sleep in HV_HC_BLOCK until the device's event is
 * pending (virtq_use_event); polling stays the default.
 * Guest-virtual == guest-physical (start.S), so pointers are DMA addresses.
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Device IDs (5) --------------------------------------------------------- */
#define VIRTIO_ID_NET           1
#define VIRTIO_ID_BLOCK         2
#define VIRTIO_ID_CONSOLE       3
#define VIRTIO_ID_RNG           4

/* ---- MMIO registers (4.2.2), status bits (2.1), transport feature bits (6):
 * one definition for the guest, the core and Python. */
#include "hv/virtio_mmio.h"

#define VIRTIO_BIT(n)                   (1ull << (n))

/* ---- Split virtqueue layout (2.7) ------------------------------------------ */
#define VIRTQ_DESC_F_NEXT               1
#define VIRTQ_DESC_F_WRITE              2       /* device writes (else reads) */
#define VIRTQ_DESC_F_INDIRECT           4
#define VIRTQ_AVAIL_F_NO_INTERRUPT      1
#define VIRTQ_USED_F_NO_NOTIFY          1

#define VIRTQ_MAX               64      /* our queue size limit: a power of 2 */
#define VIRTQ_INDIRECT_MAX      4       /* buffers in one indirect table */

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_used_elem {
    uint32_t id;            /* head of the chain the device finished */
    uint32_t len;           /* bytes it wrote into the chain */
};

/*
 * The three rings with room for VIRTQ_MAX entries; the device is told the
 * size actually used (<= VIRTQ_MAX).  With VIRTIO_RING_F_EVENT_IDX the slot
 * after the last ring entry in use holds used_event (in avail) and
 * avail_event (in used), so those two live at ring[size], not at a fixed
 * field: the spare array element is their room when size == VIRTQ_MAX.
 * Alignments are those of 2.7 (16, 2 and 4 bytes).
 */
struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[VIRTQ_MAX + 1];       /* + used_event */
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[VIRTQ_MAX];
    uint16_t avail_event_room;          /* ring[size] as a u16, size == MAX */
};

struct virtio_dev;

/* One virtqueue: the shared rings, then driver-private bookkeeping. */
struct virtq {
    struct virtq_desc desc[VIRTQ_MAX] __attribute__((aligned(16)));
    struct virtq_desc indirect[VIRTQ_MAX][VIRTQ_INDIRECT_MAX] __attribute__((aligned(16)));
    struct virtq_avail avail __attribute__((aligned(2)));
    struct virtq_used used __attribute__((aligned(4)));

    struct virtio_dev *dev;
    unsigned index;             /* queue number on the device */
    uint16_t size;              /* entries in use: min(QueueNumMax, VIRTQ_MAX) */
    uint16_t free_head;         /* free descriptors, chained through .next */
    uint16_t num_free;
    uint16_t avail_idx;         /* our copy of avail.idx */
    uint16_t kicked_idx;        /* avail_idx at the last notification check */
    uint16_t last_used;         /* next used.ring entry to consume */
    bool event_idx;             /* VIRTIO_RING_F_EVENT_IDX negotiated */
    bool indirect_ok;           /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
    bool use_event;             /* sleep on the hv event instead of spinning */
    void *token[VIRTQ_MAX];     /* per chain head: what virtq_get returns */
    uint32_t in_len[VIRTQ_MAX]; /* per chain head: device-writable bytes */
};

/* One buffer of a chain: device-readable ("out") or device-writable ("in"). */
struct virtq_buf {
    const void *addr;
    uint32_t len;
};

/* A virtio-mmio device found on the command line or by probing. */
struct virtio_dev {
    uintptr_t base;             /* the slot's MMIO registers */
    uint32_t device_id;
    unsigned irq;               /* hv event (or QEMU IOAPIC pin) from the cmdline */
    uint64_t features;          /* negotiated */
};

/* Errors (negative), so callers can report them by name. */
#define VIRTIO_ENODEV   1       /* no such device */
#define VIRTIO_EFEATURE 2       /* device lacks a required feature / refused ours */
#define VIRTIO_EQUEUE   3       /* queue missing, in use or too small */
#define VIRTIO_EFULL    4       /* not enough free descriptors */
#define VIRTIO_ETIMEOUT 5       /* the device did not answer in time */
#define VIRTIO_EDEVICE  6       /* the device broke the protocol */
#define VIRTIO_EIO      7       /* the device reported an I/O error */
#define VIRTIO_EUNSUPP  8       /* the device does not support the request */
#define VIRTIO_ERANGE   9       /* request outside the device (e.g. sectors) */
#define VIRTIO_ENEEDS_RESET 10  /* the device set DEVICE_NEEDS_RESET (2.1.2) */

const char *virtio_strerror(int err);

/* Find the `nth` (0-based) device with `device_id`: 0, or -VIRTIO_ENODEV. */
int virtio_find(uint32_t device_id, unsigned nth, struct virtio_dev *dev);

/*
 * Reset, ACKNOWLEDGE|DRIVER, negotiate (device features & `wanted`, with
 * VERSION_1 required and EVENT_IDX/INDIRECT_DESC added when offered), then
 * FEATURES_OK and check it stuck.  0, or a negative error (status FAILED).
 */
int virtio_begin(struct virtio_dev *dev, uint64_t wanted);
int virtq_setup(struct virtio_dev *dev, unsigned index, struct virtq *vq);
void virtio_driver_ok(struct virtio_dev *dev);
void virtio_fail(struct virtio_dev *dev);       /* set FAILED: give up on it */

static inline bool virtio_has(const struct virtio_dev *dev, unsigned bit)
{
    return (dev->features & VIRTIO_BIT(bit)) != 0;
}

/* Device-specific config space (4.2.2.2: natural widths, generation-checked). */
uint8_t virtio_config8(struct virtio_dev *dev, unsigned off);
uint16_t virtio_config16(struct virtio_dev *dev, unsigned off);
uint32_t virtio_config32(struct virtio_dev *dev, unsigned off);
uint64_t virtio_config64(struct virtio_dev *dev, unsigned off);

/*
 * Post `n_out` device-readable then `n_in` device-writable buffers as one
 * chain (indirect when negotiated and n > 1).  `token` (non-NULL) comes back
 * from virtq_get/virtq_wait.  0, or -VIRTIO_EFULL.
 */
int virtq_add(struct virtq *vq, const struct virtq_buf *bufs, unsigned n_out,
              unsigned n_in, void *token);
void virtq_kick(struct virtq *vq);

/*
 * Take one finished chain: 1 with its token and the bytes the device wrote
 * into it (*len), 0 if none is ready, or -VIRTIO_EDEVICE if the used ring
 * names no chain we posted or claims more bytes than the chain could hold.
 */
int virtq_get(struct virtq *vq, void **token, uint32_t *len);

/* virtq_get until a chain is done (0) or `timeout` TSC cycles pass. */
int virtq_wait(struct virtq *vq, void **token, uint32_t *len, uint64_t timeout);

/* Under hv: sleep on the device's event between polls (see virtio.c). */
bool virtq_use_event(struct virtq *vq);

/*
 * Time for timeouts and reports: hv's partition clock in ns under hv, else
 * the TSC in cycles (QEMU gives no portable TSC rate; a few GHz here).
 */
uint64_t virtio_now(void);
const char *virtio_now_unit(void);              /* "ns (hv clock)" / "tsc cycles" */
#define VIRTIO_TIMEOUT_DEFAULT  (10ull * 1000 * 1000 * 1000)   /* ~3-10 s */

#endif
