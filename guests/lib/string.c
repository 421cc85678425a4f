/*
 * string.c - the memory functions GCC may call on its own even in a
 * freestanding build (to copy or zero structs), so they must exist.
 * REP STOSB/MOVSB: one instruction, where a loop would cost several per
 * byte of slow ring-0 code.
 */
#include <stddef.h>

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

void *memset(void *d, int c, size_t n)
{
    void *p = d;

    asm volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *p = d;

    asm volatile("rep movsb" : "+D"(p), "+S"(s), "+c"(n) : : "memory");
    return d;
}
