/*
 * checks.c - sizes that bound copies and indexes, checked by the compiler.
 *
 * Each relation below is one that code elsewhere relies on; it used to be
 * held by a comment.  A change that breaks one stops the build here, with
 * the name of the code that would overflow.  (Checks about one file's own
 * tables stay in that file, e.g. the boot GDT in vcpu.c.)
 */
#include "core.h"

/* hc_console_write (hypercall.c) copies up to HV_CONSOLE_WRITE_MAX guest
 * bytes into the exit record's data[]. */
_Static_assert(sizeof(((struct hv_exit *)0)->data) >= HV_CONSOLE_WRITE_MAX,
               "hv_exit.data holds a whole console write");
_Static_assert(HV_CONSOLE_WRITE_MAX <= UINT32_MAX, "data_len is 32 bits");

/* The event page's bitmaps (event.c, the guest library) index words by
 * event / 64 for every event below HV_EVENTS_MAX. */
_Static_assert(HV_EVENT_WORDS * 64 == HV_EVENTS_MAX, "one pending bit per event");
_Static_assert(sizeof(struct hv_event_page) <= HV_PAGE_SIZE, "the event page is one page");

/* hypercall_page_place (hypercall.c) writes HV_HYPERCALL_MAX stubs of
 * HV_HYPERCALL_STUB_SIZE bytes into one page; every number has a stub. */
_Static_assert(HV_HYPERCALL_MAX * HV_HYPERCALL_STUB_SIZE <= HV_PAGE_SIZE,
               "the hypercall stubs fit one page");
_Static_assert(HV_HC_COUNT <= HV_HYPERCALL_MAX, "every hypercall number has a stub");
_Static_assert(HV_HYPERCALL_STUB_SIZE >= 8, "a stub is mov, out, ret: 8 bytes");
_Static_assert(HV_HC_COUNT <= sizeof(((struct hv_partition *)0)->route),
               "route[] has an entry per hypercall number");

/* Virtio: every slot's event is a valid event; config space fits the slot
 * (virtio_mmio_access reads config[off - VIRTIO_MMIO_CONFIG]). */
_Static_assert(HV_VIRTIO_EVENT_BASE + HV_VIRTIO_MMIO_SLOTS <= HV_EVENTS_MAX,
               "each device slot has an event");
_Static_assert(VIRTIO_MMIO_CONFIG + HV_VIRTIO_CONFIG_MAX <= HV_VIRTIO_MMIO_SLOT,
               "config space lies inside the device's slot");

/* The boot layout (hv/layout.h; hv/loader.py takes it through cffi). */
_Static_assert(HV_BOOT_PAGE_GPA % HV_PAGE_SIZE == 0 && HV_RESERVED_END % HV_PAGE_SIZE == 0,
               "hv's frames are whole pages");
_Static_assert(HV_ACPI_GPA == HV_BOOT_PAGE_GPA + HV_PAGE_SIZE &&
               HV_ACPI_GPA + HV_PAGE_SIZE == HV_RESERVED_END, "boot page, then the ACPI page");
_Static_assert(HV_BOOT_PAGE_GPA + HV_PAGE_SIZE <= HV_RESERVED_END,
               "the boot page is inside hv's reserved frames");
_Static_assert(HV_RESERVED_END <= HV_MEM_MIN, "the smallest RAM holds hv's frames");
_Static_assert(HV_MEM_MIN % HV_PAGE_SIZE == 0 && HV_MEM_MAX % HV_PAGE_SIZE == 0,
               "RAM limits are whole pages");
_Static_assert(HV_MEM_MAX <= (1ull << 47), "RAM fits a 47-bit host address space");
