/*
 * Start-up code for C programs on the simulated PPU (Nux), linked first by
 * nux.ld so that _start sits at address 0 (where the core starts).
 *
 *  1. r1 <- _stack_top (16 bytes below the mailbox); a zero back-chain word
 *     ends the chain of stack frames (PowerPC SVR4 ABI).
 *  2. clear .bss word by word (_bss_start.._bss_end, both 4-byte aligned
 *     by nux.ld).
 *  3. call the functions in .init_array (C __attribute__((constructor))).
 *  4. r3 <- main(0, 0); store r3 into the first mailbox word (_mailbox),
 *     then `sync` so the store is done before the core stops.
 *  5. Power ISA `wait` in a loop: the end of the program (the core model
 *     stops at `wait`; on the chip the PPU idles until it is reset).
 *
 * Registers are written as plain numbers (GNU as' default PowerPC syntax).
 * Only Base-category instructions that Nux implements are used.
 */

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    /* 1. stack */
    lis     1, _stack_top@ha
    addi    1, 1, _stack_top@l
    li      0, 0
    stw     0, 0(1)                 /* back chain of the outermost frame = 0 */

    /* 2. .bss = 0 */
    lis     3, _bss_start@ha
    addi    3, 3, _bss_start@l
    lis     4, _bss_end@ha
    addi    4, 4, _bss_end@l
    b       2f
1:  stw     0, 0(3)
    addi    3, 3, 4
2:  cmplw   3, 4
    blt     1b

    /* 3. constructors (usually none) */
    lis     30, __init_array_start@ha
    addi    30, 30, __init_array_start@l
    lis     31, __init_array_end@ha
    addi    31, 31, __init_array_end@l
    b       4f
3:  lwz     5, 0(30)
    mtctr   5
    bctrl
    addi    30, 30, 4
4:  cmplw   30, 31
    blt     3b

    /* 4. main(argc = 0, argv = 0); its int result into the mailbox */
    li      3, 0
    li      4, 0
    bl      main
    lis     4, _mailbox@ha
    stw     3, _mailbox@l(4)
    sync

    /* 5. stop: `wait` (X-form, primary opcode 31, XO 62, WC = 0), written
       as its encoding because GNU as accepts the mnemonic only for some
       -mcpu choices. */
5:  .long   0x7c00007c
    b       5b
    .size _start, . - _start

    /* No executable stack needed (keeps the linker quiet). */
    .section .note.GNU-stack, "", @progbits
