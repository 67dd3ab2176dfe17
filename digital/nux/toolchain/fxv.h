/*
 * fxv.h -- the PPU's FXV vector instructions for Debian's stock PowerPC
 * cross compiler (powerpc-linux-gnu-gcc), which does not know them: every
 * macro emits the 32-bit encoding with `.long`, and GCC substitutes the
 * general-purpose registers it chose for the scalar operands.
 *
 * Encoding [nux doc/guide/main.tex, src/fxv.tex; rtl pu_inst_pkg.sv]:
 * primary opcode 4 in bits 0-5 (IBM numbering, bit 0 = most significant),
 * VRT bits 6-10, VRA or RA bits 11-15, VRB or RB bits 16-20, 9-bit extended
 * opcode XO bits 21-29, condition C bits 30-31:
 *
 *     word = 4 << 26 | VRT << 21 | A << 16 | B << 11 | XO << 2 | C
 *
 * Vector registers are numbers 0..31 that must be compile-time constants
 * (GCC has no vector register class for them: the program, not the
 * compiler, decides which vector register holds what). Scalar operands are
 * C expressions.
 *
 * GPR substitution: an "r" or "b" operand prints as the bare register number
 * in GCC's default PowerPC assembler dialect (`.long ... | (9 << 16)`); do
 * not compile with -mregnames (it prints "%r9", which `.long` cannot use).
 * Base-address operands use the "b" constraint (any GPR but r0) because the
 * instructions read RA = 0 as the value 0, not as r0.
 *
 * All statements are `asm volatile`, so GCC keeps them in program order
 * relative to each other; memory and I/O instructions also clobber
 * "memory", so C reads and writes of the arrays they touch are ordered
 * with them. Vector accesses to the SRAM must be 128-byte aligned: declare
 * such arrays with FXV_ALIGNED.
 *
 * Element order: big-endian, byte i of a vector is byte i in memory. In
 * the chip's vector I/O the two vectors of a 256-column row are
 * interleaved [libnux vector_row.h; tests/hw test_cadc_static.cpp]: byte i of vector +0 ("even") is column
 * 2 i, byte i of vector +1 ("odd") is column 2 i + 1.
 */
#ifndef BSS2SIM_NUX_FXV_H
#define BSS2SIM_NUX_FXV_H

#include <stdint.h>

/* ---- sizes ------------------------------------------------------------- */

/** Bytes of one vector register: 8 slices of 16 bytes [libnux dls.tcc]. */
#define FXV_VECTOR_BYTES 128
/** Halfword (16-bit) elements of one vector. */
#define FXV_VECTOR_HALFWORDS 64
/** Vectors per synapse / CADC row of 256 columns (even and odd columns). */
#define FXV_ROW_VECTORS 2
/** Alignment for arrays that fxv_lax / fxv_stax access (128 bytes). */
#define FXV_ALIGNED __attribute__((aligned(FXV_VECTOR_BYTES)))

/* ---- conditions (field C) [nux fxv.tex "conditional"] ------------------- */

#define FXV_ALWAYS 0 /**< no condition: every element */
#define FXV_GT 1     /**< elements whose condition register field says > 0 */
#define FXV_LT 2     /**< ... < 0 */
#define FXV_EQ 3     /**< ... == 0 */

/* ---- vector I/O address map for fxv_inx / fxv_outx [libnux dls.tcc] ------
 * The address RA + RB counts 128-byte vectors, not bytes: row r of a
 * synapse or CADC block is base + 2 r (its even columns 0, 2, .., 254) and
 * base + 2 r + 1 (odd columns 1, 3, .., 255). */

#define FXV_IO_SYNAPSE_WEIGHTS 0x00000000u /**< synapse weights, + 2 row + (0 even, 1 odd) */
#define FXV_IO_CONFIG_EVEN 0x00010000u     /**< synapse configuration, even */
#define FXV_IO_CONFIG_ODD 0x00020000u      /**< synapse configuration, odd */
#define FXV_IO_DECODER 0x00040000u         /**< synapse address labels */
#define FXV_IO_CADC_CAUSAL 0x00080000u     /**< CADC causal channels: a read converts */
#define FXV_IO_CORRELATION_RESET_CAUSAL 0x00090000u
#define FXV_IO_CADC_ACAUSAL 0x000c0000u    /**< CADC acausal channels */
#define FXV_IO_CORRELATION_RESET_ACAUSAL 0x000d0000u
#define FXV_IO_RANDGEN 0x000e0000u         /**< random generator */
#define FXV_IO_RAW 0x000f0000u             /**< raw access (libnux's dls_raw_base) */
/** Buffer-enable bit: OR-ed into the CADC base it reads the values of the
 *  last conversion instead of starting one. libnux reads a full CADC row as
 *  causal + 0 and then (causal | buffer enable) + 1 (the odd columns of
 *  the same conversion) [libnux correlation.h, test_speed_memory.cpp]. */
#define FXV_IO_BUFFER_ENABLE 0x00200000u
/** Neuron reset: 0x00c9_0000 plus the 256 rows x 2 vectors of the synapse
 *  block = 0x00c9_0200 [libnux dls.tcc]; + 0 resets the even neurons, + 1
 *  the odd ones, those whose bytes the write enables (libnux reset_neurons:
 *  fxvcmpb of a mask, then fxvoutx with condition GT; unmasked for all). */
#define FXV_IO_NEURON_RESET (0x00c90000u + 256u * FXV_ROW_VECTORS)
#define FXV_IO_EXTMEM 0x80000000u          /**< FPGA-attached memory, + n-th vector */
#define FXV_IO_EXTMEM_DRAM 0x81000000u     /**< DRAM behind the FPGA, + n-th vector */

/* ---- encoding ------------------------------------------------------------ */

#define FXV_PRIMARY_OPCODE 4u

/* A compile-time check: a negative array size stops compilation when a
 * vector register number, condition or immediate is out of range. */
#define FXV_CHECK_(x, limit) \
    ((unsigned)(sizeof(char[((x) >= 0 && (x) < (limit)) ? 1 : -1]) ? (unsigned)(x) : 0u))

/** The encoding with all five fields constant (the GPR fields are 0 here
 *  and OR-ed in by the assembler where an instruction takes GPRs). */
#define FXV_ENCODE(xo, vrt, a, b, c)                                         \
    ((FXV_PRIMARY_OPCODE << 26) | (FXV_CHECK_(vrt, 32) << 21) |              \
     (FXV_CHECK_(a, 32) << 16) | (FXV_CHECK_(b, 32) << 11) |                 \
     (((unsigned)(xo) & 0x1ffu) << 2) | FXV_CHECK_(c, 4))

/* Vector-only instruction: one constant word. */
#define FXV_OP_(xo, vrt, vra, vrb, c) \
    __asm__ volatile(".long %0" : : "i"(FXV_ENCODE(xo, vrt, vra, vrb, c)))

/* GPR RA (as base or value, never r0) and GPR RB (index). */
#define FXV_OP_RA_RB_(xo, vrt, ra, rb, c)                                    \
    __asm__ volatile(".long %0 | (%1 << 16) | (%2 << 11)"                    \
                     :                                                       \
                     : "i"(FXV_ENCODE(xo, vrt, 0, 0, c)),                    \
                       "b"((uint32_t)(uintptr_t)(ra)), "r"((uint32_t)(rb))   \
                     : "memory")

/* GPR RA only (splat). */
#define FXV_OP_RA_(xo, vrt, ra)                                              \
    __asm__ volatile(".long %0 | (%1 << 16)"                                 \
                     :                                                       \
                     : "i"(FXV_ENCODE(xo, vrt, 0, 0, 0)), "b"((uint32_t)(ra)))

/* ---- extended opcodes [nux fxv.tex; rtl pu_inst_pkg.sv Fxv_opcd] -------- */

/* modulo halfword */
#define FXV_XO_MAHM 12
#define FXV_XO_MATACHM 44
#define FXV_XO_MULHM 76
#define FXV_XO_MULTACHM 108
#define FXV_XO_SUBHM 332
#define FXV_XO_ADDACTACHM 364
#define FXV_XO_ADDTACHM 428
#define FXV_XO_ADDACHM 396
#define FXV_XO_ADDHM 460
#define FXV_XO_CMPH 300 /* fxvcmph in the RTL, fxvcmphm in the guide */
#define FXV_XO_MTACH 15
#define FXV_XO_SPLATH 268
/* modulo byte */
#define FXV_XO_MABM 13
#define FXV_XO_MATACBM 45
#define FXV_XO_MULBM 77
#define FXV_XO_MULTACBM 109
#define FXV_XO_SUBBM 333
#define FXV_XO_ADDACTACB 365
#define FXV_XO_ADDTACB 429
#define FXV_XO_ADDACBM 397
#define FXV_XO_ADDBM 461
#define FXV_XO_CMPB 301
#define FXV_XO_MTACB 14
#define FXV_XO_SPLATB 269
/* fractional saturating halfword */
#define FXV_XO_MAHFS 28
#define FXV_XO_MTACHF 31
#define FXV_XO_MATACHFS 60
#define FXV_XO_MULHFS 92
#define FXV_XO_MULTACHFS 124
#define FXV_XO_SUBHFS 348
#define FXV_XO_ADDACTACHF 380
#define FXV_XO_ADDACHFS 412
#define FXV_XO_ADDHFS 476
/* fractional saturating byte */
#define FXV_XO_MABFS 29
#define FXV_XO_MTACBF 30
#define FXV_XO_MATACBFS 61
#define FXV_XO_MULBFS 93
#define FXV_XO_MULTACBFS 125
#define FXV_XO_SUBBFS 349
#define FXV_XO_ADDACTACBF 381
#define FXV_XO_ADDACBFS 413
#define FXV_XO_ADDBFS 477
/* permute */
#define FXV_XO_SEL 319
#define FXV_XO_SHH 316
#define FXV_XO_SHB 317
#define FXV_XO_PCKBU 239
#define FXV_XO_PCKBL 255
#define FXV_XO_UPCKBL 287
#define FXV_XO_UPCKBR 271
/* memory and I/O */
#define FXV_XO_LAX 492
#define FXV_XO_STAX 508
#define FXV_XO_INX 236
#define FXV_XO_OUTX 252

/* ---- memory and I/O -------------------------------------------------------
 * Effective address = base + offset (bytes for lax/stax, vectors for
 * inx/outx); base is a pointer or integer, offset an integer. */

/** VRT <- the 128 bytes at base + offset (SRAM, 128-byte aligned). */
#define fxv_lax(vrt, base, offset) FXV_OP_RA_RB_(FXV_XO_LAX, vrt, base, offset, 0)
/** the 128 bytes at base + offset <- VRT. */
#define fxv_stax(vrt, base, offset) FXV_OP_RA_RB_(FXV_XO_STAX, vrt, base, offset, 0)
/** VRT <- vector I/O location base + index (elements where cond holds). */
#define fxv_inx_c(vrt, base, index, cond) FXV_OP_RA_RB_(FXV_XO_INX, vrt, base, index, cond)
#define fxv_inx(vrt, base, index) fxv_inx_c(vrt, base, index, FXV_ALWAYS)
/** vector I/O location base + index <- VRT (masked by cond if not ALWAYS). */
#define fxv_outx_c(vrt, base, index, cond) FXV_OP_RA_RB_(FXV_XO_OUTX, vrt, base, index, cond)
#define fxv_outx(vrt, base, index) fxv_outx_c(vrt, base, index, FXV_ALWAYS)

/* ---- splat (GPR value into every element) ------------------------------- */

/** every byte of VRT <- value mod 2^8. */
#define fxv_splatb(vrt, value) FXV_OP_RA_(FXV_XO_SPLATB, vrt, value)
/** every halfword of VRT <- value mod 2^16. */
#define fxv_splath(vrt, value) FXV_OP_RA_(FXV_XO_SPLATH, vrt, value)

/* ---- three-vector instructions: VRT <- f(VRA, VRB), where cond holds ----- */

#define fxv_mahm_c(t, a, b, c) FXV_OP_(FXV_XO_MAHM, t, a, b, c)
#define fxv_mulhm_c(t, a, b, c) FXV_OP_(FXV_XO_MULHM, t, a, b, c)
#define fxv_subhm_c(t, a, b, c) FXV_OP_(FXV_XO_SUBHM, t, a, b, c)
#define fxv_addhm_c(t, a, b, c) FXV_OP_(FXV_XO_ADDHM, t, a, b, c)
#define fxv_mabm_c(t, a, b, c) FXV_OP_(FXV_XO_MABM, t, a, b, c)
#define fxv_mulbm_c(t, a, b, c) FXV_OP_(FXV_XO_MULBM, t, a, b, c)
#define fxv_subbm_c(t, a, b, c) FXV_OP_(FXV_XO_SUBBM, t, a, b, c)
#define fxv_addbm_c(t, a, b, c) FXV_OP_(FXV_XO_ADDBM, t, a, b, c)
#define fxv_mahfs_c(t, a, b, c) FXV_OP_(FXV_XO_MAHFS, t, a, b, c)
#define fxv_mulhfs_c(t, a, b, c) FXV_OP_(FXV_XO_MULHFS, t, a, b, c)
#define fxv_subhfs_c(t, a, b, c) FXV_OP_(FXV_XO_SUBHFS, t, a, b, c)
#define fxv_addhfs_c(t, a, b, c) FXV_OP_(FXV_XO_ADDHFS, t, a, b, c)
#define fxv_mabfs_c(t, a, b, c) FXV_OP_(FXV_XO_MABFS, t, a, b, c)
#define fxv_mulbfs_c(t, a, b, c) FXV_OP_(FXV_XO_MULBFS, t, a, b, c)
#define fxv_subbfs_c(t, a, b, c) FXV_OP_(FXV_XO_SUBBFS, t, a, b, c)
#define fxv_addbfs_c(t, a, b, c) FXV_OP_(FXV_XO_ADDBFS, t, a, b, c)
/** VRT <- VRB where cond holds, else VRA (bytewise). */
#define fxv_sel(t, a, b, c) FXV_OP_(FXV_XO_SEL, t, a, b, c)

#define fxv_mahm(t, a, b) fxv_mahm_c(t, a, b, FXV_ALWAYS)
#define fxv_mulhm(t, a, b) fxv_mulhm_c(t, a, b, FXV_ALWAYS)
#define fxv_subhm(t, a, b) fxv_subhm_c(t, a, b, FXV_ALWAYS)
#define fxv_addhm(t, a, b) fxv_addhm_c(t, a, b, FXV_ALWAYS)
#define fxv_mabm(t, a, b) fxv_mabm_c(t, a, b, FXV_ALWAYS)
#define fxv_mulbm(t, a, b) fxv_mulbm_c(t, a, b, FXV_ALWAYS)
#define fxv_subbm(t, a, b) fxv_subbm_c(t, a, b, FXV_ALWAYS)
#define fxv_addbm(t, a, b) fxv_addbm_c(t, a, b, FXV_ALWAYS)
#define fxv_mahfs(t, a, b) fxv_mahfs_c(t, a, b, FXV_ALWAYS)
#define fxv_mulhfs(t, a, b) fxv_mulhfs_c(t, a, b, FXV_ALWAYS)
#define fxv_subhfs(t, a, b) fxv_subhfs_c(t, a, b, FXV_ALWAYS)
#define fxv_addhfs(t, a, b) fxv_addhfs_c(t, a, b, FXV_ALWAYS)
#define fxv_mabfs(t, a, b) fxv_mabfs_c(t, a, b, FXV_ALWAYS)
#define fxv_mulbfs(t, a, b) fxv_mulbfs_c(t, a, b, FXV_ALWAYS)
#define fxv_subbfs(t, a, b) fxv_subbfs_c(t, a, b, FXV_ALWAYS)
#define fxv_addbfs(t, a, b) fxv_addbfs_c(t, a, b, FXV_ALWAYS)

/* ---- accumulator instructions ---------------------------------------------
 * ACC <- f(VRA, VRB[, ACC]) (VRT unused, encoded 0). */

#define fxv_matachm_c(a, b, c) FXV_OP_(FXV_XO_MATACHM, 0, a, b, c)
#define fxv_multachm_c(a, b, c) FXV_OP_(FXV_XO_MULTACHM, 0, a, b, c)
#define fxv_addtachm_c(a, b, c) FXV_OP_(FXV_XO_ADDTACHM, 0, a, b, c)
#define fxv_matacbm_c(a, b, c) FXV_OP_(FXV_XO_MATACBM, 0, a, b, c)
#define fxv_multacbm_c(a, b, c) FXV_OP_(FXV_XO_MULTACBM, 0, a, b, c)
#define fxv_addtacb_c(a, b, c) FXV_OP_(FXV_XO_ADDTACB, 0, a, b, c)
#define fxv_matachfs_c(a, b, c) FXV_OP_(FXV_XO_MATACHFS, 0, a, b, c)
#define fxv_multachfs_c(a, b, c) FXV_OP_(FXV_XO_MULTACHFS, 0, a, b, c)
#define fxv_matacbfs_c(a, b, c) FXV_OP_(FXV_XO_MATACBFS, 0, a, b, c)
#define fxv_multacbfs_c(a, b, c) FXV_OP_(FXV_XO_MULTACBFS, 0, a, b, c)
#define fxv_matachm(a, b) fxv_matachm_c(a, b, FXV_ALWAYS)
#define fxv_multachm(a, b) fxv_multachm_c(a, b, FXV_ALWAYS)
#define fxv_addtachm(a, b) fxv_addtachm_c(a, b, FXV_ALWAYS)
#define fxv_matacbm(a, b) fxv_matacbm_c(a, b, FXV_ALWAYS)
#define fxv_multacbm(a, b) fxv_multacbm_c(a, b, FXV_ALWAYS)
#define fxv_addtacb(a, b) fxv_addtacb_c(a, b, FXV_ALWAYS)
#define fxv_matachfs(a, b) fxv_matachfs_c(a, b, FXV_ALWAYS)
#define fxv_multachfs(a, b) fxv_multachfs_c(a, b, FXV_ALWAYS)
#define fxv_matacbfs(a, b) fxv_matacbfs_c(a, b, FXV_ALWAYS)
#define fxv_multacbfs(a, b) fxv_multacbfs_c(a, b, FXV_ALWAYS)

/* VRT <- f(VRA, ACC) (ACC unchanged). */
#define fxv_addachm_c(t, a, c) FXV_OP_(FXV_XO_ADDACHM, t, a, 0, c)
#define fxv_addacbm_c(t, a, c) FXV_OP_(FXV_XO_ADDACBM, t, a, 0, c)
#define fxv_addachfs_c(t, a, c) FXV_OP_(FXV_XO_ADDACHFS, t, a, 0, c)
#define fxv_addacbfs_c(t, a, c) FXV_OP_(FXV_XO_ADDACBFS, t, a, 0, c)
#define fxv_addachm(t, a) fxv_addachm_c(t, a, FXV_ALWAYS)
#define fxv_addacbm(t, a) fxv_addacbm_c(t, a, FXV_ALWAYS)
#define fxv_addachfs(t, a) fxv_addachfs_c(t, a, FXV_ALWAYS)
#define fxv_addacbfs(t, a) fxv_addacbfs_c(t, a, FXV_ALWAYS)

/* ACC <- f(VRA, ACC) and ACC <- VRA (move to accumulator). */
#define fxv_addactachm_c(a, c) FXV_OP_(FXV_XO_ADDACTACHM, 0, a, 0, c)
#define fxv_addactacb_c(a, c) FXV_OP_(FXV_XO_ADDACTACB, 0, a, 0, c)
#define fxv_addactachf_c(a, c) FXV_OP_(FXV_XO_ADDACTACHF, 0, a, 0, c)
#define fxv_addactacbf_c(a, c) FXV_OP_(FXV_XO_ADDACTACBF, 0, a, 0, c)
#define fxv_mtach_c(a, c) FXV_OP_(FXV_XO_MTACH, 0, a, 0, c)
#define fxv_mtacb_c(a, c) FXV_OP_(FXV_XO_MTACB, 0, a, 0, c)
#define fxv_mtachf_c(a, c) FXV_OP_(FXV_XO_MTACHF, 0, a, 0, c)
#define fxv_mtacbf_c(a, c) FXV_OP_(FXV_XO_MTACBF, 0, a, 0, c)
#define fxv_addactachm(a) fxv_addactachm_c(a, FXV_ALWAYS)
#define fxv_addactacb(a) fxv_addactacb_c(a, FXV_ALWAYS)
#define fxv_addactachf(a) fxv_addactachf_c(a, FXV_ALWAYS)
#define fxv_addactacbf(a) fxv_addactacbf_c(a, FXV_ALWAYS)
#define fxv_mtach(a) fxv_mtach_c(a, FXV_ALWAYS)
#define fxv_mtacb(a) fxv_mtacb_c(a, FXV_ALWAYS)
#define fxv_mtachf(a) fxv_mtachf_c(a, FXV_ALWAYS)
#define fxv_mtacbf(a) fxv_mtacbf_c(a, FXV_ALWAYS)

/* ---- compare: VCR <- sign of each element of VRA (eq/gt/lt 0) ----------- */

#define fxv_cmpb(a) FXV_OP_(FXV_XO_CMPB, 0, a, 0, 0)
#define fxv_cmph(a) FXV_OP_(FXV_XO_CMPH, 0, a, 0, 0)
#define fxv_cmphm(a) fxv_cmph(a)

/* ---- permute ----------------------------------------------------------------
 * Shifts: VRT <- VRA shifted left by the constant n (0..31, the VRB field).
 * Pack / unpack: the C field is the shift operand of the guide's pseudo-code
 * (0..3). */

#define fxv_shb(t, a, n) FXV_OP_(FXV_XO_SHB, t, a, n, 0)
#define fxv_shh(t, a, n) FXV_OP_(FXV_XO_SHH, t, a, n, 0)
#define fxv_pckbu(t, a, b, c) FXV_OP_(FXV_XO_PCKBU, t, a, b, c)
#define fxv_pckbl(t, a, b, c) FXV_OP_(FXV_XO_PCKBL, t, a, b, c)
#define fxv_upckbl(t, a, b, c) FXV_OP_(FXV_XO_UPCKBL, t, a, b, c)
#define fxv_upckbr(t, a, b, c) FXV_OP_(FXV_XO_UPCKBR, t, a, b, c)

/* ---- scalar helpers ------------------------------------------------------- */

/** Power ISA `sync`: waits until the vector unit and all memory accesses
 *  are done (the group's timing measurements end with it). */
static inline void nux_sync(void) { __asm__ volatile("sync" : : : "memory"); }

/** Lower 32 bits of the time base (PPU cycles, 4 ns at 250 MHz):
 *  `mfspr rX, 284` as the chip group's libnux reads it. */
static inline uint32_t nux_mftb(void)
{
    uint32_t t;
    __asm__ volatile("mfspr %0, 284" : "=r"(t));
    return t;
}

/** Upper 32 bits of the time base (`mfspr rX, 285`). */
static inline uint32_t nux_mftbu(void)
{
    uint32_t t;
    __asm__ volatile("mfspr %0, 285" : "=r"(t));
    return t;
}

/** Busy-wait for at least `cycles` PPU cycles (4 ns each) on the time base. */
static inline void nux_sleep_cycles(uint32_t cycles)
{
    uint32_t start = nux_mftb();
    while ((uint32_t)(nux_mftb() - start) < cycles) {
    }
}

/** The mailbox at the top of the SRAM (nux.ld; 4 KiB). start.S writes
 *  main's return value into word 0; the rest is free for results. */
extern volatile uint32_t _mailbox[];

#ifndef FXV_NO_SHORT_NAMES
/* The short names the issue asks for (define FXV_NO_SHORT_NAMES to avoid
 * clashes, e.g. with POSIX sync()). */
static inline void sync(void) { nux_sync(); }
static inline uint32_t mftb(void) { return nux_mftb(); }
#endif

#endif /* BSS2SIM_NUX_FXV_H */
