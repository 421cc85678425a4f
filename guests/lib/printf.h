/* printf.h - a small formatter over the console. */
#ifndef GUEST_PRINTF_H
#define GUEST_PRINTF_H

#include <stdarg.h>

/*
 * Conversions: %s %c %d %u %x %p %%, with an 'l' (or 'll') size modifier and
 * a field width, '0' to pad with zeros: "%08lx".
 */
__attribute__((format(printf, 1, 2))) void printf(const char *fmt, ...);
void vprintf(const char *fmt, va_list ap);

#endif
