/*
 * The four functions GCC may call even in freestanding code (for struct
 * copies, array initialisers and loops it recognises): memcpy, memmove,
 * memset, memcmp. Byte loops: small and using only loads and stores that
 * are always aligned (the PPU model faults on misaligned accesses).
 *
 * Weak, so a program may define its own; compiled with
 * -fno-tree-loop-distribute-patterns so GCC does not turn these very loops
 * into calls to themselves. Unused ones are dropped by --gc-sections.
 */
#include <stddef.h>

__attribute__((weak)) void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

__attribute__((weak)) void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        d += n;
        s += n;
        while (n--)
            *--d = *--s;
    }
    return dst;
}

__attribute__((weak)) void *memset(void *dst, int value, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)value;
    return dst;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}
