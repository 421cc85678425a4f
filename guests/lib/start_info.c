/* start_info.c - what the loader told us: command line and memory map. */
#include <stddef.h>
#include "start_info.h"

static const struct hv_pvh_start_info *info;

/*
 * T:320 The PVH start info (Xen's hvm_start_info) is only remembered here;
 * it is read on demand.  Physical addresses in it are usable as pointers
 * because the kernel is identity mapped.
 */
void start_info_init(const struct hv_pvh_start_info *si)
{
    info = si->magic == HV_PVH_START_MAGIC ? si : NULL;
}

const struct hv_pvh_start_info *start_info(void)
{
    return info;
}

const char *start_info_cmdline(void)
{
    if (info == NULL || info->cmdline_paddr == 0)
        return "";
    return (const char *)(uintptr_t)info->cmdline_paddr;
}

/* The memory map exists from version 1 of the structure on. */
const struct hv_pvh_memmap_entry *start_info_memmap(unsigned *count)
{
    if (info == NULL || info->version < 1 || info->memmap_paddr == 0) {
        *count = 0;
        return NULL;
    }
    *count = info->memmap_entries;
    return (const struct hv_pvh_memmap_entry *)(uintptr_t)info->memmap_paddr;
}

uint64_t start_info_ram_end(void)
{
    unsigned n;
    const struct hv_pvh_memmap_entry *map = start_info_memmap(&n);
    uint64_t end = 0;

    for (unsigned i = 0; i < n; i++)
        if (map[i].type == HV_E820_RAM && map[i].addr + map[i].size > end)
            end = map[i].addr + map[i].size;
    return end;
}
