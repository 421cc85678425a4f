/* console.h - bytes out: hv's console hypercall, or the serial port. */
#ifndef GUEST_CONSOLE_H
#define GUEST_CONSOLE_H

#include <stddef.h>

void console_write(const char *s, size_t len);

#endif
