/* start_info.h - what the loader told us: command line and memory map. */
#ifndef GUEST_START_INFO_H
#define GUEST_START_INFO_H

#include <stdint.h>
#include "hv/abi.h"

void start_info_init(const struct hv_pvh_start_info *si);
const struct hv_pvh_start_info *start_info(void);   /* NULL if the magic was wrong */
const char *start_info_cmdline(void);               /* "" if none */
const struct hv_pvh_memmap_entry *start_info_memmap(unsigned *count);
uint64_t start_info_ram_end(void);                  /* end of the highest RAM range */

#endif
