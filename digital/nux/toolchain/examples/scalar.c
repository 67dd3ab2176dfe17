/*
 * A scalar-only C program for the PPU: loops, calls (recursive and through
 * a function pointer), arrays, structs, multiplication and division (32-bit
 * and 64-bit through libgcc), a switch with a jump table, signed and
 * unsigned bytes and halfwords, bit operations. No vector instructions.
 *
 * Each case writes one 32-bit word of `results`; main returns the sum of
 * the words (mod 2^32). The test recomputes every case in Python.
 */
#include <stddef.h>
#include <stdint.h>

#define N_RESULTS 16

uint32_t results[N_RESULTS];

/* Inputs through volatile words so that GCC cannot fold the cases at
 * compile time (the divisions and 64-bit helpers must really run). */
volatile uint32_t input_u = 0xfffffff0u;
volatile int32_t input_s = -1000003;
volatile uint64_t input_big = 0x0123456789abcdefull;

/* Initialised data (.data), constants (.rodata) and zeroed data (.bss). */
int32_t table[8] = {3, -1, 4, -1, 5, -9, 2, -6};
static const uint16_t primes[10] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29};
static int16_t squares[32];

struct point {
    int16_t x;
    int8_t tag;
    int32_t y;
};

__attribute__((noipa)) static uint32_t fib(uint32_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

__attribute__((noipa)) static int32_t classify(int32_t k, int32_t v)
{
    /* dense cases with different computations: GCC emits a jump table
       (.rodata words + bctr), not a lookup table of constants */
    switch (k) {
    case 0: return v + 11;
    case 1: return v * v;
    case 2: return v ^ 0x5a5a;
    case 3: return v << 3;
    case 4: return v - 101;
    case 5: return v / 3;
    case 6: return ~v;
    case 7: return v & 0xf0f;
    default: return -1;
    }
}

static int32_t twice(int32_t v) { return 2 * v; }
static int32_t negate(int32_t v) { return -v; }

__attribute__((noipa)) static int32_t apply(int32_t (*f)(int32_t), int32_t v) { return f(v); }

__attribute__((noipa)) static struct point mirror(struct point p)
{
    struct point q = p; /* struct copy */
    q.x = (int16_t)-p.x;
    q.tag = (int8_t)(p.tag - 100);
    q.y = p.y * 3;
    return q;
}

__attribute__((noipa)) static uint32_t udiv(uint32_t a, uint32_t b) { return a / b; }
__attribute__((noipa)) static int32_t sdiv(int32_t a, int32_t b) { return a / b; }
__attribute__((noipa)) static int32_t smod(int32_t a, int32_t b) { return a % b; }

int main(void)
{
    /* 0: sum of squares 0..31 through a .bss array of halfwords */
    int32_t s = 0;
    for (int i = 0; i < 32; i++)
        squares[i] = (int16_t)(i * i);
    for (int i = 0; i < 32; i++)
        s += squares[i];
    results[0] = (uint32_t)s;

    /* 1: recursion */
    results[1] = fib(15);

    /* 2: switch over 0..8 (jump table and default) */
    int32_t c = 0;
    for (int32_t k = 0; k <= 8; k++)
        c = c * 3 + classify(k, 1000 + k);
    results[2] = (uint32_t)c;

    /* 3, 4, 5: 32-bit division and remainder, unsigned and signed */
    results[3] = udiv(input_u, 7u);
    results[4] = (uint32_t)sdiv(input_s, 17);
    results[5] = (uint32_t)smod(input_s, 17);

    /* 6: multiplication, low and high word (mulhwu) */
    uint64_t p = (uint64_t)(input_u ^ 0x6543210fu) * 0x12345679u;
    results[6] = (uint32_t)(p >> 32) ^ (uint32_t)p;

    /* 7: 64-bit division and shifts (libgcc __udivdi3) */
    uint64_t big = input_big;
    results[7] = (uint32_t)(big / 1000003u) + (uint32_t)(big >> 40);

    /* 8: initialised .data array, signed values */
    int32_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t * 5 + table[i];
    results[8] = (uint32_t)t;

    /* 9: .rodata array of halfwords */
    uint32_t q = 1;
    for (int i = 0; i < 10; i++)
        q = q * primes[i] + 1;
    results[9] = q;

    /* 10: function pointers */
    results[10] = (uint32_t)(apply(twice, 21) + apply(negate, 5) * 100);

    /* 11: struct passing and return with byte and halfword fields */
    struct point a = {1234, -7, -56789};
    struct point b = mirror(a);
    results[11] = (uint32_t)(b.x * 7 + b.tag * 11 + b.y);

    /* 12: bit operations: shifts, rotations, count of ones by a loop */
    uint32_t x = input_u ^ 0x21524110u, ones = 0; /* 0xdeadbee0 */
    for (uint32_t v = x; v; v &= v - 1)
        ones++;
    uint32_t rot = (x << 13) | (x >> 19);
    results[12] = rot ^ (ones << 24) ^ (uint32_t)((int32_t)x >> 7);

    /* 13: signed bytes: sign extension and saturation by hand */
    int8_t bytes[6] = {-128, -3, 0, 5, 100, 127};
    int32_t acc = 0;
    for (int i = 0; i < 6; i++) {
        int32_t v = bytes[i] * 2;
        acc = acc * 7 + (v > 127 ? 127 : v < -128 ? -128 : v);
    }
    results[13] = (uint32_t)acc;

    /* 14: a while loop with a data-dependent exit (Collatz steps of 27) */
    uint32_t n = 27, steps = 0;
    while (n != 1) {
        n = (n & 1) ? 3 * n + 1 : n / 2;
        steps++;
    }
    results[14] = steps;

    /* 15: unsigned compare and conditional values */
    uint32_t m = 0;
    for (uint32_t i = 0; i < 20; i++)
        m += (i * 2654435761u > 0x80000000u) ? i : 0;
    results[15] = m;

    uint32_t sum = 0;
    for (int i = 0; i < N_RESULTS; i++)
        sum += results[i];
    return (int)sum;
}
