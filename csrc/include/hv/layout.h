/*
 * hv/layout.h - hv's own guest-physical layout and size limits, defined once.
 *
 * Not guest ABI: a guest learns where its boot data is from EBX and the
 * memory map (abi.h).  The core (partition.c, vcpu.c) and the parent
 * (hv/loader.py, through cffi) both take these values from here.
 * Literal values only: cffi's cdef parses this file.
 */
#ifndef HV_LAYOUT_H
#define HV_LAYOUT_H

/* [0, HV_RESERVED_END) is hv's: no partition owns those frames.  Page 0
 * holds only the PVH entry's boot GDT, so a guest null-pointer access reads
 * no boot data; the boot page holds start_info, the memory map and the
 * command line, all of it within that one page; the ACPI page holds the
 * ACPI tables (hv/acpi.py), start_info.rsdp_paddr pointing at its RSDP. */
#define HV_BOOT_GDT_GPA       0x500
#define HV_BOOT_PAGE_GPA      0x1000
#define HV_ACPI_GPA           0x2000
#define HV_RESERVED_END       0x3000

/* Guest RAM: whole pages, at least 1 MiB (the reserved pages and a small
 * kernel), at most 64 TiB (1 << 46: what a 47-bit host user address space
 * can map once, with room to spare). */
#define HV_MEM_MIN            0x100000
#define HV_MEM_MAX            0x400000000000

#endif
