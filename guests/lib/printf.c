/* printf.c - a small formatter over the console. */
#include <stdbool.h>
#include <stdint.h>
#include "console.h"
#include "printf.h"

/*
 * T:355 Output is collected in a line buffer and written with one console
 * call per line (or when the buffer fills): every console write is an exit,
 * and an exit costs about 10 us here, against ~1 us per instruction.
 */
static char line[128];
static unsigned used;

static void flush(void)
{
    console_write(line, used);
    used = 0;
}

static void put(char c)
{
    line[used++] = c;
    if (c == '\n' || used == sizeof(line))
        flush();
}

static void put_number(uint64_t v, unsigned base, bool negative, int width, char pad)
{
    char digits[20];   /* 2^64 has 20 decimal digits */
    int n = 0;

    do {
        digits[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    width -= n + negative;
    if (negative && pad == '0')
        put('-');
    while (width-- > 0)
        put(pad);
    if (negative && pad != '0')
        put('-');
    while (n > 0)
        put(digits[--n]);
}

void vprintf(const char *fmt, va_list ap)
{
    for (; *fmt != '\0'; fmt++) {
        if (*fmt != '%') {
            put(*fmt);
            continue;
        }
        char pad = ' ';
        int width = 0;
        bool is_long = false;

        if (*++fmt == '0')
            pad = '0';
        for (; *fmt >= '0' && *fmt <= '9'; fmt++)
            width = width * 10 + (*fmt - '0');
        for (; *fmt == 'l'; fmt++)
            is_long = true;

        switch (*fmt) {
        case 'd': {
            int64_t v = is_long ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_number(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0, width, pad);
            break;
        }
        case 'u':
            put_number(is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, false,
                       width, pad);
            break;
        case 'x':
            put_number(is_long ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, false,
                       width, pad);
            break;
        case 'p':
            put('0');
            put('x');
            put_number((uintptr_t)va_arg(ap, void *), 16, false, width, pad);
            break;
        case 'c':
            put((char)va_arg(ap, int));
            break;
        case 's':
            for (const char *s = va_arg(ap, const char *); *s != '\0'; s++)
                put(*s);
            break;
        case '%':
            put('%');
            break;
        case '\0':
            return;        /* a lone '%' at the end */
        default:           /* unknown: show it rather than guess */
            put('%');
            put(*fmt);
            break;
        }
    }
}

void printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}
