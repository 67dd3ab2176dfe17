/*
 * The PPU's part of a VMM read-out, in C with the FXV header: what the chip
 * group's VMM program does for `baseline_read` and `read` [grenade
 * src/grenade/vx/ppu/start.cpp, as summarised in digital-facts.md], plus a
 * ReLU as older documentation has it on the PPU.
 *
 *  1. reset all neurons (unmasked fxvoutx of zero to the neuron-reset
 *     address, even and odd neurons), then wait BASELINE_WAIT_CYCLES;
 *  2. baseline: read both vectors of the CADC row (causal + 0, the even
 *     columns, converts; (causal | buffer enable) + 1 gives the odd columns
 *     of that conversion), convert the 8-bit codes to int8 by
 *     subtracting 128 (modulo), keep them;
 *  3. read again after READ_WAIT_CYCLES, convert, and store
 *     saturating_subtract(read, baseline) -- fxvsubbfs -- into `result`;
 *  4. activation: ReLU of the result (fxvcmpb, then fxvsel with zero
 *     where the element is not > 0) into `activation`;
 *  5. return a checksum: the sum of the signed result bytes plus 1000 times
 *     the number of positive activations.
 *
 * The raw codes of both reads are kept in `raw_baseline` and `raw_read` so a
 * test can recompute every step from them.
 */
#include <stdint.h>

#include "fxv.h"

#ifndef BASELINE_WAIT_CYCLES
#define BASELINE_WAIT_CYCLES 1250 /* 5 us at 250 MHz, as grenade's baseline_read */
#endif
#ifndef READ_WAIT_CYCLES
#define READ_WAIT_CYCLES 250 /* 1 us: an arbitrary gap for the example */
#endif

/* Vector register use (the program's choice). */
enum {
    V_ZERO = 0,
    V_OFFSET = 1, /* 128 in every byte */
    V_BASE0 = 2,  /* baseline, even and odd columns */
    V_BASE1 = 3,
    V_READ0 = 4,
    V_READ1 = 5,
    V_DIFF0 = 6,
    V_DIFF1 = 7,
    V_ACT0 = 8,
    V_ACT1 = 9,
};

uint8_t raw_baseline[2][FXV_VECTOR_BYTES] FXV_ALIGNED;
uint8_t raw_read[2][FXV_VECTOR_BYTES] FXV_ALIGNED;
int8_t result[2][FXV_VECTOR_BYTES] FXV_ALIGNED;
int8_t activation[2][FXV_VECTOR_BYTES] FXV_ALIGNED;
volatile uint32_t cycles_read; /* time base difference of step 3's read (PPU cycles) */

static void reset_neurons(void)
{
    fxv_splatb(V_ZERO, 0);
    fxv_outx(V_ZERO, FXV_IO_NEURON_RESET, 0);
    fxv_outx(V_ZERO, FXV_IO_NEURON_RESET, 1);
    nux_sync();
}

/* Both vectors of the CADC row into (v0, v1); the odd columns from the
 * conversion the first read started. */
#define READ_CADC_ROW(v0, v1)                                                \
    do {                                                                     \
        fxv_inx(v0, FXV_IO_CADC_CAUSAL, 0);                                  \
        fxv_inx(v1, FXV_IO_CADC_CAUSAL | FXV_IO_BUFFER_ENABLE, 1);           \
    } while (0)

int main(void)
{
    reset_neurons();
    nux_sleep_cycles(BASELINE_WAIT_CYCLES);

    fxv_splatb(V_OFFSET, 128);
    READ_CADC_ROW(V_BASE0, V_BASE1);
    fxv_stax(V_BASE0, raw_baseline[0], 0);
    fxv_stax(V_BASE1, raw_baseline[1], 0);
    fxv_subbm(V_BASE0, V_BASE0, V_OFFSET); /* code - 128 as int8 */
    fxv_subbm(V_BASE1, V_BASE1, V_OFFSET);

    nux_sleep_cycles(READ_WAIT_CYCLES);
    uint32_t t0 = mftb();
    READ_CADC_ROW(V_READ0, V_READ1);
    sync();
    cycles_read = mftb() - t0;
    fxv_stax(V_READ0, raw_read[0], 0);
    fxv_stax(V_READ1, raw_read[1], 0);
    fxv_subbm(V_READ0, V_READ0, V_OFFSET);
    fxv_subbm(V_READ1, V_READ1, V_OFFSET);

    fxv_subbfs(V_DIFF0, V_READ0, V_BASE0); /* saturating read - baseline */
    fxv_subbfs(V_DIFF1, V_READ1, V_BASE1);
    fxv_stax(V_DIFF0, result[0], 0);
    fxv_stax(V_DIFF1, result[1], 0);

    /* ReLU: keep an element where it is > 0, else take zero. */
    fxv_cmpb(V_DIFF0);
    fxv_sel(V_ACT0, V_ZERO, V_DIFF0, FXV_GT);
    fxv_cmpb(V_DIFF1);
    fxv_sel(V_ACT1, V_ZERO, V_DIFF1, FXV_GT);
    fxv_stax(V_ACT0, activation[0], 0);
    fxv_stax(V_ACT1, activation[1], 0);
    sync();

    int32_t checksum = 0;
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < FXV_VECTOR_BYTES; i++) {
            checksum += result[h][i];
            checksum += activation[h][i] > 0 ? 1000 : 0;
        }
    return checksum;
}
