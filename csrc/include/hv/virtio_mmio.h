/*
 * hv/virtio_mmio.h - the virtio-mmio register map (OASIS virtio v1.2,
 * section 4.2.2, "MMIO Device Register Layout", version 2), defined once.
 *
 * The core's register file (csrc/virtio_mmio.c), the guest library
 * (guests/lib/virtio.h) and Python (hv/devices, tests/models, through cffi)
 * all take the offsets and bits from here.  Spec names, literal values only
 * (cffi's cdef parses this file).
 */
#ifndef HV_VIRTIO_MMIO_H
#define HV_VIRTIO_MMIO_H

/* ---- Registers: offsets in a device's slot -------------------------------- */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000   /* "virt" */
#define VIRTIO_MMIO_VERSION             0x004
#define VIRTIO_MMIO_DEVICE_ID           0x008
#define VIRTIO_MMIO_VENDOR_ID           0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL           0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034
#define VIRTIO_MMIO_QUEUE_NUM           0x038
#define VIRTIO_MMIO_QUEUE_READY         0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064
#define VIRTIO_MMIO_STATUS              0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW    0x090   /* the available ring */
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH   0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW    0x0a0   /* the used ring */
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH   0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc
#define VIRTIO_MMIO_CONFIG              0x100   /* device-specific space */

#define VIRTIO_MMIO_MAGIC               0x74726976  /* "virt" */
#define VIRTIO_MMIO_VERSION_MODERN      2       /* 1 is the legacy layout */
#define VIRTIO_MMIO_VENDOR_HV           0x7668  /* "hv" */

/* InterruptStatus bits */
#define VIRTIO_MMIO_INT_VRING           1       /* a used buffer was added */
#define VIRTIO_MMIO_INT_CONFIG          2       /* the config space changed */

/* ---- Device status bits (2.1) --------------------------------------------- */
#define VIRTIO_STATUS_ACKNOWLEDGE       1
#define VIRTIO_STATUS_DRIVER            2
#define VIRTIO_STATUS_DRIVER_OK         4
#define VIRTIO_STATUS_FEATURES_OK       8
#define VIRTIO_STATUS_NEEDS_RESET       64
#define VIRTIO_STATUS_FAILED            128

/* ---- Transport feature bits, as bit numbers (6) ---------------------------- */
#define VIRTIO_RING_F_INDIRECT_DESC     28
#define VIRTIO_RING_F_EVENT_IDX         29
#define VIRTIO_F_VERSION_1              32

#endif
