/* canary.h - what the isolation canary's files share. */
#ifndef CANARY_H
#define CANARY_H

#include <stdint.h>

/* devices.c: virtio buffers and rings at each of the n addresses. */
void scan_devices(const uint64_t *bad, unsigned n, uint64_t boot_page, uint64_t *probes);

#endif
