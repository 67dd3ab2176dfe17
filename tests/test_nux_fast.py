"""The fast Nux engine (numba interpreter over predecoded rows) against the
plain-Python engine of :meth:`Nux.run` over :func:`reference.execute`, bit for
bit: GPRs, CR, XER, LR, CTR, PC, time base, vector registers, VCR,
accumulator, SRAM and external memory, the chip half behind the vector bus,
cycle and instruction counts, the vector unit and its FIFO; and the same
errors (type, message, pc, cycles) with the same state at the error.

Programs: hand-written ones for every instruction family, seeded random
straight-line programs drawn from the instruction table (with forward
branches), loops and function calls, vector I/O and external memory (the
fast engine's fall-back to Python), self-modifying code, and errors.
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from bss2sim.circuits import Chip
from bss2sim.digital.nux import fast, isa
from bss2sim.digital.nux.asm import assemble
from bss2sim.digital.nux.core import Nux
from bss2sim.digital.nux.memory import (IO_BUFFER_ENABLE, IO_CAUSAL_BASE, IO_EXTMEM_BASE,
                                        IO_NEURON_RESET, IO_RANDGEN_BASE, IO_WEIGHT_BASE)
from bss2sim.digital.nux.speedtests import SPEED_TESTS, program_text
from bss2sim.digital.nux.timing import NuxTiming

MASK32 = 0xFFFF_FFFF
DATA = 0x2000
"""Data area of the test programs (random bytes unless a test says otherwise)."""
EXTMEM = 0x4000_0000
"""The external memory's data view."""


# --- engines and comparison ------------------------------------------------------------------
def run_reference(nux, **kw):
    """The plain-Python engine (``engine="reference"`` once Nux.run dispatches)."""
    if "engine" in inspect.signature(Nux.run).parameters:
        return nux.run(engine="reference", **kw)
    return nux.run(**kw)


def snapshot(n: Nux) -> dict:
    """Everything a run can change, as plain values."""
    st = n.state
    for name in ("cr", "lr", "ctr", "xer", "pc", "time_base"):
        value = getattr(st, name)
        assert type(value) is int and 0 <= value, (name, value)
    assert all(type(g) is int and 0 <= g <= MASK32 for g in st.gpr)
    assert st.acc.dtype == np.dtype(">i4") and st.vr.dtype == np.uint8 and st.vcr.dtype == np.uint8
    snap = {
        "gpr": list(st.gpr), "cr": st.cr, "lr": st.lr, "ctr": st.ctr, "xer": st.xer, "pc": st.pc,
        "time_base": st.time_base, "waiting": st.waiting, "halted": st.halted,
        "vr": st.vr.tobytes(), "vcr": st.vcr.tobytes(), "acc": st.acc.tobytes(),
        "sram": bytes(n.memory.sram), "extmem": bytes(n.memory.extmem),
        "cycle": n.cycle, "instructions": n.instructions, "vector_free": n._vector_free,
        "fifo": list(n._fifo), "now": n.memory.now, "io_kind": n.memory.io_kind,
        "rng": repr(n.memory._rng.bit_generator.state),
    }
    if n.analog is not None:
        a = n.analog
        snap.update(reset=a.reset_cycle.tobytes(), conversions=a.conversions,
                    last_codes=a.last_codes.tobytes(), events=list(a._events),
                    weights=np.asarray(a.chip.config.weights).tobytes())
    return snap


def assert_same(ref: Nux, fst: Nux, where=""):
    a, b = snapshot(ref), snapshot(fst)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        detail = {k: (a[k], b[k]) for k in diff if k not in ("sram", "extmem", "vr", "weights")}
        raise AssertionError(f"{where}: fast engine differs in {diff}: {detail}")


def run_both(ref: Nux, fst: Nux, where="", **kw):
    """Run the reference engine on ``ref`` and the fast one on ``fst`` (loaded
    alike); the results or errors and the final states must be equal."""
    out = []
    for engine, nux in ((run_reference, ref), (fast.run_fast, fst)):
        try:
            out.append(("ok", engine(nux, **kw)))
        except Exception as e:          # compared below: type, message, attributes
            out.append(("error", e))
    (kr, r), (kf, f) = out
    assert kr == kf, f"{where}: reference {kr} {r!r}, fast {kf} {f!r}"
    if kr == "ok":
        assert r == f, f"{where}: {r} != {f}"
    else:
        assert type(r) is type(f) and str(r) == str(f), f"{where}: {r!r} != {f!r}"
        assert getattr(r, "pc", None) == getattr(f, "pc", None)
        assert getattr(r, "cycles", None) == getattr(f, "cycles", None)
    assert_same(ref, fst, where)
    return r, kr


def pair(program, chip=False, timing=None, setup=None):
    """Two PPUs with the same program and start state (``setup(nux)`` fills it)."""
    out = []
    for _ in range(2):
        n = Nux(Chip(0) if chip else None, timing=timing)
        n.load(program)
        if setup is not None:
            setup(n)
        out.append(n)
    return out


def random_data(seed, size=0x2000):
    """Seeded data bytes with the edge values of the lane arithmetic mixed in."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    edges = np.array([0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x81], np.uint8)
    pick = rng.random(size) < 0.3
    data[pick] = rng.choice(edges, int(pick.sum()))
    return data


def fill_data(seed):
    def setup(n):
        n.write_memory(DATA, random_data(seed).tobytes())
    return setup


# --- hand-written programs: every instruction family -------------------------------------------
ALU_PROGRAM = """
    lis r3, 0x7fff
    ori r3, r3, 0xffff          # 0x7fffffff
    lis r4, 0x8000              # 0x80000000
    li r5, -1
    li r6, 7
    li r7, 0
    # XO-form add/subtract, every variant, with overflow and carries
    add r8, r3, r6
    add. r8, r3, r6
    addo r8, r3, r6
    addo. r8, r3, r6
    addc r9, r5, r6
    addco. r9, r3, r3
    adde r10, r5, r5
    addeo. r10, r3, r6
    addze r11, r5
    addzeo. r11, r3
    addme r11, r7
    addmeo. r11, r4
    subf r12, r6, r7
    subf. r12, r4, r3
    subfo r12, r3, r4
    subfo. r12, r6, r4
    subfc r13, r5, r6
    subfco. r13, r4, r3
    subfe r14, r6, r7
    subfeo. r14, r3, r4
    subfze r15, r6
    subfzeo. r15, r4
    subfme r15, r7
    subfmeo. r15, r4
    neg r16, r4
    nego. r16, r4
    nego r16, r6
    neg. r16, r7
    # D-form arithmetic
    addi r17, r3, 1
    addis r17, r4, -1
    addic r18, r5, 1
    addic. r18, r3, 1
    subfic r19, r6, -3
    subfic r19, r7, 0
    mulli r20, r4, -7
    # multiply, divide
    mullw r21, r3, r3
    mullwo. r21, r3, r6
    mullwo r21, r6, r6
    mulhw r22, r4, r5
    mulhw. r22, r3, r3
    mulhwu r22, r5, r5
    mulhwu. r22, r4, r6
    divw r23, r5, r6
    divw. r23, r3, r6
    divwo r23, r4, r5
    divwo. r23, r6, r7
    divwu r24, r5, r6
    divwuo. r24, r6, r7
    divwuo r24, r4, r6
    li r25, -100
    divw r23, r25, r6
    # logic
    and r8, r3, r5
    and. r8, r4, r3
    andc r8, r5, r6
    andc. r8, r6, r5
    or r9, r4, r6
    or. r9, r7, r7
    orc r9, r7, r6
    orc. r9, r4, r5
    xor r10, r3, r4
    xor. r10, r5, r5
    nand r10, r3, r5
    nand. r10, r5, r5
    nor r11, r7, r7
    nor. r11, r3, r4
    eqv r11, r3, r4
    eqv. r11, r5, r6
    andi. r12, r5, 0x8001
    andis. r12, r4, 0x8000
    ori r12, r7, 0xffff
    oris r12, r7, 0xffff
    xori r13, r5, 0x5555
    xoris r13, r5, 0xaaaa
    # shifts and extends
    li r26, 31
    li r27, 32
    li r28, 63
    slw r14, r5, r26
    slw. r14, r5, r27
    srw r14, r4, r26
    srw. r14, r5, r28
    sraw r15, r4, r26
    sraw. r15, r4, r27
    sraw r15, r3, r28
    sraw. r15, r6, r7
    srawi r16, r4, 4
    srawi. r16, r5, 31
    srawi r16, r6, 1
    srawi. r16, r25, 0
    extsb r17, r25
    extsb. r17, r6
    extsh r17, r4
    extsh. r17, r25
    cntlzw r18, r7
    cntlzw. r18, r6
    cntlzw r18, r5
    # rotates (mb > me wraps the mask)
    rlwinm r19, r5, 4, 8, 15
    rlwinm. r19, r4, 1, 31, 31
    rlwinm r19, r3, 0, 28, 3
    rlwnm r20, r3, r6, 0, 31
    rlwnm. r20, r4, r26, 16, 8
    rlwimi r21, r3, 8, 0, 7
    rlwimi. r21, r4, 31, 30, 1
    # compares into several CR fields
    cmpw cr1, r3, r4
    cmplw cr2, r3, r4
    cmpwi cr3, r25, -100
    cmplwi cr4, r5, 0xffff
    cmpw cr5, r7, r7
    cmplw cr6, r4, r3
    cmpwi cr7, r6, 8
    # CR logic, moves of CR fields
    crand 0, 5, 9
    cror 1, 4, 8
    crxor 2, 6, 10
    crnand 3, 12, 13
    crnor 20, 14, 15
    creqv 21, 1, 2
    crandc 22, 5, 6
    crorc 23, 7, 9
    mcrf cr7, cr1
    mcrf cr0, cr3
    mfcr r22
    mfocrf r23, 0x20
    mtcrf 0x5a, r5
    mtocrf 0x01, r7
    mtcr r3
    mfcr r24
    # SPRs (XER keeps SO, OV, CA and the byte count), the time base
    mtxer r5
    mfxer r25
    mtlr r3
    mflr r26
    mtctr r4
    mfctr r27
    mftb r28
    mftbu r29
    mfspr r30, 284
    mfspr r31, 285
    li r8, 0
    mtxer r8
    sync
    isync
    lwsync
    wait
"""

MEMORY_PROGRAM = f"""
    li r1, {DATA + 0x400}
    li r2, {DATA + 0x800}
    li r3, 12
    lis r4, 0x8123
    ori r4, r4, 0x4567
    lwz r5, 0(r1)
    lwz r5, -4(r1)
    lbz r6, 3(r1)
    lhz r7, 2(r1)
    lha r8, 6(r1)
    lha r8, 0x40(r1)
    lwzx r5, r1, r3
    lbzx r6, r1, r3
    lhzx r7, r1, r3
    lhax r8, r2, r3
    lwzu r9, 8(r1)
    lbzu r9, 1(r1)
    lhzu r10, 1(r1)
    lhau r10, 2(r1)
    lwzux r11, r2, r3
    lbzux r11, r2, r3
    lhzux r12, r2, r3
    lhaux r12, r2, r3
    stw r4, 16(r2)
    stb r4, 21(r2)
    sth r4, 22(r2)
    stwx r4, r2, r3
    stbx r4, r1, r3
    sthx r4, r1, r3
    stwu r4, 32(r2)
    stbu r4, 1(r2)
    sthu r4, 1(r2)
    li r2, {DATA + 0x900}            # word-aligned again
    stwux r4, r2, r3
    stbux r4, r2, r3
    sthux r4, r1, r3
    stmw r20, 64(r1)
    lmw r24, 0(r1)
    lmw r13, 128(r2)
    stmw r1, 256(r2)
    li r13, {DATA}
    li r14, 128
    fxvlax v1, r13, r14
    fxvlax v2, 0, r13
    fxvstax v1, r13, r14
    fxvstax v2, r13, r0
    li r15, 0
    fxvlax v3, r15, r13
    lwz r16, 0(r13)
    wait
"""

BRANCH_PROGRAM = """
    .text
_start:
    li r1, 0x3800                 # stack
    li r3, 10
    bl fib                        # recursive calls with a stack
    mr r20, r3
    li r4, 5
    mtctr r4
    li r5, 0
1:  addi r5, r5, 3                # bdnz loop
    bdnz 1b
    li r6, 0
2:  addi r6, r6, 1                # compare-and-branch loop, taken and not taken
    cmpwi cr2, r6, 7
    blt cr2, 2b
    beq cr2, 3f
    li r7, 99                     # skipped
3:  li r8, 4
    mtctr r8
4:  bdz 5f                        # bdz falls through until CTR reaches 0
    addi r9, r9, 1
    b 4b
5:  lis r10, table@ha             # computed jump through CTR
    addi r10, r10, table@l
    mtctr r10
    bctrl
    mflr r11
    lis r12, leaf@ha
    addi r12, r12, leaf@l
    mtlr r12
    blrl                          # branch to the old LR, link the new one
    mtctr r12
    cmpwi r3, 55
    beqctrl                       # conditional call through CTR
    bnectr                        # not taken
    b 6f
6:  b 7f                          # a branch to the next instruction is not "taken"
7:  bc 4, 2, 8f                   # bne: BO = 4, BI = eq
    bc 16, 0, 8f                  # bdnz without a condition
8:  li r13, 3
    mtctr r13
9:  bc 0, 1, 9b                   # bdnzf gt: decrement and test both
    li r14, 2
    mtctr r14
10: bc 8, 2, 10b                  # bdnzt eq
    li r3, 1
    cmpwi r3, 0
    bgtl leaf                     # conditional link
    bcl 20, 31, 11f               # always, link (the PIC idiom)
11: mflr r15
    li r16, 0
    mtlr r16
    bla absolute                  # absolute target
    wait
fib:                              # r3 = fib(r3)
    cmpwi r3, 2
    blt 1f
    mflr r0
    stwu r1, -16(r1)
    stw r0, 20(r1)
    stw r31, 12(r1)
    addi r31, r3, -1
    mr r3, r31
    bl fib
    stw r3, 8(r1)
    addi r3, r31, -1
    bl fib
    lwz r4, 8(r1)
    add r3, r3, r4
    lwz r31, 12(r1)
    lwz r0, 20(r1)
    mtlr r0
    addi r1, r1, 16
1:  blr
leaf:
    addi r17, r17, 1
    blr
table:
    addi r18, r18, 7
    blr
    .org 0x1000
absolute:
    addi r19, r19, 1
    ba 0x1010
    .org 0x1010
    cmpwi r19, 1
    bca 12, 2, 0x1020             # beqa: taken
    addi r19, r19, 100
    .org 0x1020
    mflr r21
    bcla 20, 0, 0x1030            # always, absolute, with link
    .org 0x1030
    mtlr r21
    blr
"""

VECTOR_PROGRAM = f"""
    li r1, {DATA}
    li r2, 128
    li r3, 256
    li r4, 384
    fxvlax v1, r1, r0
    fxvlax v2, r1, r2
    fxvlax v3, r1, r3
    fxvlax v4, r1, r4
    fxvlax v5, 0, r1
    li r5, 0x0102
    li r6, -128
    fxvsplath v6, r5
    fxvsplatb v7, r6
    fxvsplatb v8, r0
    fxvmtach v1
    fxvmtacb v2, 1
    fxvmtachf v3, 2
    fxvmtacbf v4
    # compares set the VCR, then each condition C = 0..3
    fxvcmpb v1
    fxvaddbm v9, v1, v2
    fxvaddbm v9, v2, v3, 1
    fxvaddhm v10, v1, v2, 2
    fxvaddhm v10, v3, v4, 3
    fxvcmph v2
    fxvsubbm v11, v1, v2, 1
    fxvsubhm v11, v3, v1
    fxvmulbm v12, v1, v2
    fxvmulhm v12, v2, v3, 3
    fxvmabm v13, v1, v2
    fxvmahm v13, v3, v4, 2
    fxvmatacbm v1, v2
    fxvmatachm v2, v3, 1
    fxvmultacbm v3, v4
    fxvmultachm v4, v1, 2
    fxvaddactacbm v5
    fxvaddactachm v1, 3
    fxvaddtacb v2, v3
    fxvaddtach v3, v4, 1
    fxvaddacbm v14, v1
    fxvaddachm v14, v2, 2
    fxvcmpb v7
    # saturating fractional forms, with -1 x -1 and large accumulators
    fxvmabfs v15, v7, v7
    fxvmahfs v15, v1, v2, 1
    fxvmatacbfs v7, v7
    fxvmatachfs v1, v2
    fxvmulbfs v16, v7, v7
    fxvmulhfs v16, v3, v4, 3
    fxvmultacbfs v1, v2
    fxvmultachfs v3, v3
    fxvsubbfs v17, v7, v1
    fxvsubhfs v17, v1, v2, 2
    fxvaddactacbf v4
    fxvaddactachf v5, 1
    fxvaddacbfs v18, v1
    fxvaddachfs v18, v2, 3
    fxvaddbfs v19, v1, v7
    fxvaddhfs v19, v2, v3
    fxvcmph v19
    # shifts, select, pack/unpack (C is the size parameter there)
    fxvshb v20, v1, 3
    fxvshb v20, v2, -5
    fxvshh v21, v3, 15
    fxvshh v21, v4, -16
    fxvshb v22, v1, -16
    fxvsel v23, v1, v2
    fxvsel v23, v3, v4, 1
    fxvsel v24, v1, v2, 2
    fxvsel v24, v2, v1, 3
    fxvpckbu v25, v1, v2
    fxvpckbu v25, v2, v3, 3
    fxvpckbl v26, v1, v2, 1
    fxvpckbl v26, v3, v4, 2
    fxvupckbl v27, v1, v2
    fxvupckbl v27, v3, v4, 3
    fxvupckbr v28, v1, v2, 2
    fxvupckbr v28, v3, v4, 1
    fxvpckbl v1, v1, v1, 3        # destination = sources
    fxvupckbr v2, v2, v2, 2
    # the vector FIFO fills: long loads back to back, then sync
    fxvstax v9, r1, r2
    fxvstax v10, r1, r3
    fxvlax v29, r1, r2
    fxvlax v30, r1, r3
    fxvlax v31, r1, r4
    fxvstax v31, r1, r0
    addi r7, r7, 1
    mftb r8
    sync
    mftb r9
    fxvaddbm v0, v29, v30
    wait
"""

HAND_PROGRAMS = {"alu": ALU_PROGRAM, "memory": MEMORY_PROGRAM, "branch": BRANCH_PROGRAM,
                 "vector": VECTOR_PROGRAM}


@pytest.mark.parametrize("name", sorted(HAND_PROGRAMS))
def test_hand_written_programs(name):
    ref, fst = pair(assemble(HAND_PROGRAMS[name]), setup=fill_data(1))
    result, kind = run_both(ref, fst, where=name, max_cycles=1_000_000)
    assert kind == "ok" and result.stop == "wait"


def test_hand_written_programs_cover_every_family():
    """The hand-written programs and the random generator together use every
    instruction of the table; the hand-written ones every family."""
    used = set()
    for text in HAND_PROGRAMS.values():
        for seg in assemble(text).segments:
            for i in range(0, len(seg.data) - 3, 4):
                try:
                    used.add(isa.decode(int.from_bytes(seg.data[i:i + 4], "big")).instruction)
                except isa.IllegalInstruction:
                    pass
    io = {"fxv_inx", "fxv_outx"}   # covered by the vector I/O tests
    assert {i.family for i in isa.INSTRUCTIONS} - {i.family for i in used} == io
    assert set(isa.INSTRUCTIONS) - used - set(RANDOM_POOL) - {
        i for i in isa.INSTRUCTIONS if i.family in io} == set()


@pytest.mark.parametrize("name", ["alu", "branch", "vector"])
def test_other_timing(name):
    """A cycle model with every constant different (and a short FIFO)."""
    names = [f.name for f in dataclasses.fields(NuxTiming)]
    primes = [p for p in range(2, 200) if all(p % q for q in range(2, p))]
    assert len(primes) >= len(names)
    values = dict(zip(names, primes))
    values["vector_fifo_depth"] = 2
    timing = NuxTiming(**values)
    ref, fst = pair(assemble(HAND_PROGRAMS[name]), timing=timing, setup=fill_data(2))
    run_both(ref, fst, where=name, max_cycles=10_000_000)


def test_cost_tables_follow_the_core():
    """The interpreter's cycle costs per unit are the ones Nux._cost and
    Nux._vector_latency charge, for every instruction: SRAM and external
    scalar accesses, taken branches, vector latencies (vector I/O: the
    external memory's, the only I/O done in numba)."""
    from bss2sim.digital.nux.core import VECTOR_UNITS
    names = [f.name for f in dataclasses.fields(NuxTiming)]
    timing = NuxTiming(**{name: 2 + 3 * k for k, name in enumerate(names)})
    n = Nux(timing=timing)
    costs = fast._cost_tables(timing)
    for ins in isa.INSTRUCTIONS:
        u = fast.UNIT_IDS[ins.unit]
        d = isa.Decoded(ins, {})
        if ins.unit in VECTOR_UNITS:
            n.memory.io_kind = {"vector_in": "extmem_in", "vector_out": "extmem_out"}.get(ins.unit)
            assert costs[fast.COST_VECTOR, u] == n._vector_latency(ins.unit), ins
            continue
        for external, row in ((False, fast.COST_SCALAR), (True, fast.COST_EXTERNAL)):
            n._external = external
            assert costs[row, u] == n._cost(d, 0, False), (ins, external)
        n._external = False
        assert costs[fast.COST_TAKEN, u] == n._cost(d, 0, ins.unit == "branch"), ins


def test_predecode_covers_the_table():
    """Every instruction of the table has an operation of the interpreter
    (none is left to Python as a whole); words that are no instruction
    predecode as illegal."""
    rng = np.random.default_rng(3)
    for ins in isa.INSTRUCTIONS:
        word = random_word(rng, ins)
        assert word is not None, ins
        assert fast.predecode([word])[0, fast.C_OP] > fast.OP_PYTHON, ins
    rows = fast.predecode([0, 0xFFFF_FFFF, 0x7C00_0001])
    assert list(rows[:, fast.C_OP]) == [fast.OP_ILLEGAL] * 3


# --- random straight-line programs --------------------------------------------------------------
# Register roles: r1, r2 scalar data pointers, r3 the vector data pointer
# (r2 and r3 into the external memory's data view in some programs), r4, r5
# index registers (multiples of 128, r4 >= 0), r6 a vector I/O address of the
# external memory (0x8000_0000 + n); r0 and r7..r31 are free. Random
# instructions write only free registers (update forms move r1/r2 a little).
FREE = [0] + list(range(7, 32))
SCALAR_PTR = (1, 2)
INDEX = (4, 5)
IO_PTR = 6
_EXCLUDED_FAMILIES = {"bcreg", "wait"}
RANDOM_POOL = [ins for ins in isa.INSTRUCTIONS if ins.family not in _EXCLUDED_FAMILIES
               and not (ins.family in ("b", "bc") and ins.aa)]
_DEST_RT = {"addi", "addic", "subfic", "mulli", "arith", "mul", "div", "load", "mfspr", "mfcr",
            "mfocrf", "lmw"}
_DEST_RA = {"logic_imm", "logic", "shift", "unary", "rotate"}


def random_word(rng, ins, address=0, end=None):
    """A random valid encoding of ``ins`` obeying the register roles, or None."""
    for _ in range(50):
        f = {}
        for op in ins.operands:
            lo, hi, step = op.value_range()
            f[op.name] = int(rng.integers(lo // step, hi // step + 1)) * step
        fam = ins.family
        if fam in _DEST_RT:
            f["rt"] = int(rng.choice(FREE))
        if fam in _DEST_RA:
            f["ra"] = int(rng.choice(FREE))
        if fam in ("load", "store", "lmw", "stmw"):
            f["ra"] = int(rng.choice(SCALAR_PTR))
            update = ins.params.get("update", False)
            if "d" in f:
                # Aligned to the word (update forms move the pointer only a
                # little and keep it aligned), bytes and halfwords anywhere in it.
                span = 64 if update else 512
                f["d"] = int(rng.integers(-span // 4, span // 4)) * 4
                size = ins.params.get("size", 4)
                if not update:
                    f["d"] += int(rng.integers(0, 4 // size)) * size
            if "rb" in f:
                f["rb"] = int(rng.choice(INDEX))
            if fam == "lmw":
                f["rt"] = int(rng.integers(24, 32))
        if fam in ("fxv_lax", "fxv_stax"):
            f["ra"], f["rb"] = 3, int(rng.choice(INDEX))
        if fam in ("fxv_inx", "fxv_outx"):
            f["ra"], f["rb"] = IO_PTR, INDEX[0]
        if fam in ("mfocrf", "mtcrf") and ins.validate is not None:
            f["fxm"] = 1 << int(rng.integers(0, 8))
        if fam == "mfspr":
            f["spr"] = int(rng.choice(sorted(isa.READ_SPRS)))
        if fam == "mtspr":
            f["spr"] = int(rng.choice(sorted(isa.WRITE_SPRS)))
        if fam == "cmp":
            f["l"] = 0
        if fam in ("b", "bc"):
            # Forward only (the program cannot loop), at most to its end.
            key = "li" if fam == "b" else "bd"
            top = 4 if end is None else max(1, min(4, (end - address) // 4))
            f[key] = 4 * int(rng.integers(1, top + 1))
        try:
            return isa.encode(ins.mnemonic, **f)
        except ValueError:
            continue
    return None


def random_program(seed, length):
    """Words of a random straight-line program (ending in waits) and its start state."""
    rng = np.random.default_rng(seed)
    words = []
    end = 4 * length
    while len(words) < length:
        ins = RANDOM_POOL[int(rng.integers(len(RANDOM_POOL)))]
        w = random_word(rng, ins, 4 * len(words), end)
        if w is not None:
            words.append(w)
    words += [isa.encode("wait")] * 8
    code = b"".join(w.to_bytes(4, "big") for w in words)

    special = [0, 1, 0x7FFF_FFFF, 0x8000_0000, MASK32, 31, 32, 63]
    gpr = [int(rng.choice(special)) if rng.random() < 0.3 else int(rng.integers(0, 1 << 32))
           for _ in range(32)]
    gpr[1], gpr[2], gpr[3] = DATA + 0x800, DATA + 0xC00, DATA + 0x400
    if seed % 2:
        gpr[2] = EXTMEM + 0xC00
    if seed % 3 == 0:
        gpr[3] = EXTMEM + 0x400
    gpr[4], gpr[5] = 128 * int(rng.integers(0, 4)), (-128 * int(rng.integers(0, 4))) & MASK32
    gpr[IO_PTR] = IO_EXTMEM_BASE + int(rng.integers(0, 100))
    regs = {name: int(rng.integers(0, 1 << 32)) for name in ("cr", "lr", "ctr", "xer")}
    vr = random_data(seed + 1, 32 * 128).reshape(32, 128)
    vcr = rng.integers(0, 8, 128).astype(np.uint8)
    acc = random_data(seed + 2, 256).view(">i4").copy()
    data = random_data(seed + 3)
    external = random_data(seed + 4, 0x10000)     # what the I/O vectors reach (< 484 x 128)
    start_cycle = int(rng.integers(0, 1 << 40))

    def setup(n):
        n.write_memory(0, code)
        n.write_memory(DATA, data.tobytes())
        n.write_memory(EXTMEM, external.tobytes())
        st = n.state
        st.gpr = list(gpr)
        for name, value in regs.items():
            setattr(st, name, value)
        st.pc = 0
        st.vr = vr.copy()
        st.vcr = vcr.copy()
        st.acc = acc.copy()
        n.cycle = start_cycle           # the time base does not start at 0
    return setup


@pytest.mark.parametrize("chunk", range(6))
def test_random_straight_line_programs(chunk):
    """Seeded random programs from the table: same state, cycles and errors."""
    programs = 60
    empty = assemble("wait")
    for seed in range(chunk * programs, (chunk + 1) * programs):
        ref, fst = pair(empty, setup=random_program(seed, length=60 + seed % 140))
        run_both(ref, fst, where=f"random program seed {seed}", max_cycles=1_000_000)


# --- loops, calls, repeated runs ----------------------------------------------------------------
def test_benchmark_loop_and_repeated_runs():
    """The benchmark's loop (as `bss2sim bench` runs it), then the same PPUs run
    it again from its entry: the second run starts on the first's cycle count,
    vector unit and FIFO."""
    program = assemble(fast.BENCHMARK_BODY.format(hi=0, lo=300))
    ref, fst = pair(program, setup=fill_data(4))
    for k in range(3):
        run_both(ref, fst, where=f"run {k}", max_cycles=1_000_000)
        for n in (ref, fst):
            n.state.pc = program.entry


def test_engines_can_alternate():
    """Fast and reference runs on one PPU give what reference runs alone give
    (the fast engine leaves the core's bookkeeping as the core would)."""
    program = assemble(HAND_PROGRAMS["vector"])
    ref, mixed = pair(program, setup=fill_data(5))
    for k, engine in enumerate((fast.run_fast, run_reference, fast.run_fast, fast.run_fast)):
        r = run_reference(ref, max_cycles=100_000)
        m = engine(mixed, max_cycles=100_000)
        assert r == m
        assert_same(ref, mixed, f"run {k}")
        for n in (ref, mixed):
            n.state.pc = program.entry


def test_program_and_data_changed_between_runs():
    """A new program written over the old one, and bytes poked straight into
    the SRAM, are seen by the next fast run."""
    first = assemble("li r3, 1\n li r4, 2\n add r5, r3, r4\n wait")
    second = assemble("li r3, 10\n lwz r4, 0x100(0)\n mullw r5, r3, r4\n wait")
    ref, fst = pair(first)
    run_both(ref, fst, max_cycles=1000)
    for n in (ref, fst):
        n.load(second)
        n.memory.sram[0x100:0x104] = (7).to_bytes(4, "big")
    run_both(ref, fst, max_cycles=1000)
    assert fst.state.gpr[5] == 70


SELF_MODIFYING = f"""
    li r3, 0
    li r5, 3
    mtctr r5
    lis r6, {isa.encode('addi', rt=3, ra=3, si=100) >> 16}
    ori r6, r6, {isa.encode('addi', rt=3, ra=3, si=100) & 0xFFFF}
    lis r7, {isa.encode('addi', rt=4, ra=4, si=5) >> 16}
    ori r7, r7, {isa.encode('addi', rt=4, ra=4, si=5) & 0xFFFF}
    stw r7, ahead@l(0)            # patch an instruction before it first runs
loop:
target:
    addi r3, r3, 1                # patched after its first run
    stw r6, target@l(0)
ahead:
    nop
    bdnz loop
    li r8, 0x2000
    fxvlax v1, 0, r8
    li r9, 0x0200
    fxvstax v1, 0, r9             # a vector store over code that does not run again
    wait
"""


def test_self_modifying_code():
    program = assemble(SELF_MODIFYING)

    def setup(n):
        # Nux.load leaves the program's addresses in code_writes, and Nux.run
        # only drops stale decodes when that set grows: clear it so the
        # reference engine re-decodes the patched instruction.
        n.memory.code_writes.clear()
    ref, fst = pair(program, setup=setup)
    run_both(ref, fst, max_cycles=10_000)
    assert fst.state.gpr[3] == 1 + 2 * 100 and fst.state.gpr[4] == 15
    # Without the workaround the fast engine still runs the patched code.
    plain = Nux()
    plain.load(program)
    fast.run_fast(plain, max_cycles=10_000)
    assert plain.state.gpr[3] == 201


# --- vector I/O and external memory: the fall-back to Python -------------------------------------
IO_PROGRAM = f"""
    lis r10, {IO_EXTMEM_BASE >> 16}       # vector I/O: external memory vectors
    lis r11, {IO_WEIGHT_BASE >> 16}
    lis r12, {IO_CAUSAL_BASE >> 16}
    ori r12, r12, {IO_CAUSAL_BASE & 0xFFFF}
    lis r13, {(IO_CAUSAL_BASE | IO_BUFFER_ENABLE) >> 16}
    ori r13, r13, {(IO_CAUSAL_BASE | IO_BUFFER_ENABLE) & 0xFFFF}
    lis r14, {IO_NEURON_RESET >> 16}
    ori r14, r14, {IO_NEURON_RESET & 0xFFFF}
    lis r15, {IO_RANDGEN_BASE >> 16}
    ori r15, r15, {IO_RANDGEN_BASE & 0xFFFF}
    lis r16, 0x4000                        # scalar view of the external memory
    li r1, {DATA}
    li r21, 1                              # the second vector of a row
    li r2, 128
    li r3, 5
    fxvlax v1, 0, r1
    fxvlax v2, r1, r2
    fxvcmpb v1
    # synapse weights: write two row halves (one predicated), read them back
    fxvoutx v1, r11, r0
    fxvoutx v2, r11, r21, 1
    li r4, 7
    fxvoutx v2, r11, r4
    fxvinx v3, r11, r0
    fxvinx v4, r11, r4, 2
    fxvaddbm v5, v3, v4
    # external memory over the vector bus and over the data view
    fxvoutx v5, r10, r3
    fxvinx v6, r10, r3
    fxvoutx v1, r10, r0, 3
    fxvstax v2, r16, r2
    fxvlax v7, r16, r2
    stw r3, 8(r16)
    lwz r17, 8(r16)
    lbz r18, 9(r16)
    sth r2, 12(r16)
    lha r19, 12(r16)
    stmw r28, 64(r16)
    lmw r24, 64(r16)
    # CADC: a conversion, its buffered second half, a predicated read
    li r5, 10
    mtctr r5
1:  addi r6, r6, 1
    bdnz 1b
    fxvinx v8, r12, r0
    fxvinx v9, r13, r21
    fxvinx v10, r12, r21, 1
    fxvsubbm v11, v8, v10
    fxvoutx v11, r14, r0, 2                # reset the columns where the compare said so
    fxvoutx v11, r14, r21
    fxvinx v12, r15, r0                    # random generator
    fxvinx v13, r15, r21
    sync
    mftb r20
    wait
"""


def add_events(n):
    rng = np.random.default_rng(6)
    drivers = rng.integers(0, 64, 20)
    values = rng.integers(1, 32, 20)
    cycles = np.sort(rng.integers(0, 40, 20))
    n.analog.add_events(drivers, values, cycles)
    n.write_memory(DATA, random_data(6).tobytes())
    n.write_memory(EXTMEM, random_data(10, 0x4000).tobytes())


def test_vector_io_and_external_memory():
    """Every vector I/O target and external-memory access runs in Python
    between stretches of the interpreter; the chip half sees the same
    accesses at the same times."""
    ref, fst = pair(assemble(IO_PROGRAM), chip=True, setup=add_events)
    result, kind = run_both(ref, fst, where="io", max_cycles=100_000)
    assert kind == "ok"
    assert fst.analog.conversions == 2


def test_speed_test_programs():
    """The chip group's speed-test programs (vector I/O timing through the FIFO)."""
    for test in SPEED_TESTS:
        ref, fst = pair(assemble(program_text(test)), chip=True)
        run_both(ref, fst, where=test.name, max_cycles=100_000)


def test_io_inside_a_loop():
    """Python steps (random generator reads) between numba stretches with
    external-memory I/O, in a loop: the FIFO, the vector unit and the memory's
    record of the last I/O cross between the engines many times."""
    text = f"""
        lis r10, {IO_EXTMEM_BASE >> 16}
        lis r15, {IO_RANDGEN_BASE >> 16}
        ori r15, r15, {IO_RANDGEN_BASE & 0xFFFF}
        lis r16, 0x4000
        li r1, {DATA}
        li r2, 0
        li r3, 0
        li r5, 12
        mtctr r5
    loop:
        fxvlax v1, r1, r2
        fxvinx v5, r15, r0
        fxvaddbm v2, v2, v1
        fxvoutx v2, r10, r3
        fxvinx v3, r10, r3, 1
        fxvmulbm v4, v3, v5
        fxvstax v4, r16, r2
        lwzx r6, r16, r2
        fxvinx v6, r15, r0, 2
        addi r2, r2, 128
        addi r3, r3, 1
        bdnz loop
        fxvcmpb v4
        fxvoutx v4, r10, r3, 2
        wait
    """
    def setup(n):
        fill_data(7)(n)
        n.write_memory(EXTMEM, random_data(11, 0x4000).tobytes())
    ref, fst = pair(assemble(text), setup=setup)
    run_both(ref, fst, max_cycles=100_000)


def test_external_memory_timing():
    """Scalar accesses to the external memory cost their own cycles (read back
    with the time base between them, no vector unit to hide them)."""
    text = """
        lis r16, 0x4000
        mftb r3
        lwz r4, 0(r16)
        mftb r5
        stw r4, 4(r16)
        mftb r6
        lbzu r7, 9(r16)
        sthx r4, r16, r16
        mftb r8
        lmw r26, 64(r16)
        mftb r9
        stmw r27, 128(r16)
        mftb r10
        wait
    """
    def setup(n):
        n.write_memory(EXTMEM, random_data(12, 0x1000).tobytes())
    ref, fst = pair(assemble(text), setup=setup)
    run_both(ref, fst, max_cycles=10_000)
    g = fst.state.gpr
    t = fst.timing
    assert g[5] - g[3] == t.alu + t.bus_load + t.external_extra     # mftb + the load


# --- errors ------------------------------------------------------------------------------------
ERROR_PROGRAMS = {
    "illegal": "li r3, 1\n addi r3, r3, 1\n .long 0\n wait",
    "illegal reserved bits": "li r3, 1\n .long 0x7c000001\n wait",
    "misaligned load": f"li r3, {DATA + 1}\n fxvaddbm v1, v2, v3\n lwz r4, 0(r3)\n wait",
    "misaligned store": f"li r3, {DATA + 2}\n stw r4, 0(r3)\n wait",
    "misaligned vector": f"li r3, {DATA + 4}\n fxvlax v1, 0, r3\n wait",
    "out of map load": "lis r3, 0x1000\n lwz r4, 0(r3)\n wait",
    "out of map store": "lis r3, 0x5000\n stb r4, 3(r3)\n wait",
    "store across the SRAM end": "li r3, 0x3ff0\n li r24, 5\n stmw r24, 0(r3)\n wait",
    "load across the SRAM end": "li r3, 0x3ff8\n lmw r29, 0(r3)\n wait",
    "vector I/O without a chip": f"lis r3, {IO_CAUSAL_BASE >> 16}\n fxvinx v1, r3, r0\n wait",
    "vector past the external memory": "lis r3, 0x8000\n ori r3, r3, 1024\n fxvinx v1, r3, r0\n wait",
    "vector out past the external memory": "lis r3, 0x8000\n li r4, 1030\n fxvoutx v1, r3, r4, 1",
    "external load past its end": "lis r3, 0x4001\n ori r3, r3, 0xfffc\n lwz r4, 4(r3)\n wait",
    "external load across its end": "lis r3, 0x4001\n ori r3, r3, 0xfff0\n lmw r24, 0(r3)\n wait",
    "external misaligned": "lis r3, 0x4000\n lhz r4, 1(r3)\n wait",
    "external vector misaligned": "lis r3, 0x4000\n li r4, 64\n fxvstax v1, r3, r4\n wait",
    "no vector I/O there": "lis r3, 0x0100\n fxvoutx v1, r3, r0\n wait",
    "fetch outside the SRAM": "lis r3, 0x4000\n mtctr r3\n bctr",
    "fetch past the SRAM end": ".org 0x3ffc\n nop",
    "cycle budget": "1: addi r3, r3, 1\n fxvlax v1, 0, r4\n b 1b",
    "instruction budget": "1: addi r3, r3, 1\n b 1b",
}


@pytest.mark.parametrize("name", sorted(ERROR_PROGRAMS))
def test_errors(name):
    """Same exception (type, message, pc, cycles) and the same state at it."""
    text = ERROR_PROGRAMS[name]
    program = assemble(text)
    kw = {"max_cycles": 5_000}
    if name == "instruction budget":
        kw["max_instructions"] = 777
    if name == "fetch past the SRAM end":
        ref, fst = pair(program)
        for n in (ref, fst):
            n.state.pc = 0x3FFC
    else:
        ref, fst = pair(program)
    _, kind = run_both(ref, fst, where=name, **kw)
    assert kind == "error"


def test_budget_edges():
    """A budget that is just enough, and one instruction / cycle short."""
    program = assemble("li r3, 4\n mtctr r3\n1: fxvaddbm v1, v1, v2\n bdnz 1b\n sync\n wait")
    ref, fst = pair(program)
    result, _ = run_both(ref, fst, max_cycles=1000)
    for kw in ({"max_instructions": result.instructions},
               {"max_instructions": result.instructions - 1},
               {"max_cycles": result.cycles}, {"max_cycles": result.cycles - 2},
               {"max_cycles": 1}):
        ref, fst = pair(program)
        run_both(ref, fst, where=str(kw), **{"max_cycles": 1000, **kw})


def test_argument_errors():
    n = Nux()
    n.load(assemble("wait"))
    for kw in ({"max_cycles": 0}, {"max_cycles": 1.5}, {"max_instructions": 0},
               {"max_cycles": 10, "max_instructions": -3}):
        with pytest.raises(Exception) as ref_err:
            run_reference(n, **kw)
        with pytest.raises(Exception) as fast_err:
            fast.run_fast(n, **kw)
        assert type(ref_err.value) is type(fast_err.value)
        assert str(ref_err.value) == str(fast_err.value)


def test_state_arrays_of_other_types_are_taken():
    """State set from lists or native-endian arrays runs the same."""
    program = assemble(HAND_PROGRAMS["vector"])

    def setup(n):
        fill_data(8)(n)
        n.state.vr = random_data(9, 32 * 128).reshape(32, 128).tolist()
        n.state.acc = np.arange(64, dtype=np.int32) * -1000
        n.state.vcr = list(range(128))
    ref, fst = pair(program, setup=setup)
    ref.state.vr = np.array(ref.state.vr, np.uint8)
    ref.state.acc = ref.state.acc.astype(">i4")
    ref.state.vcr = np.array(ref.state.vcr, np.uint8)
    run_both(ref, fst, max_cycles=100_000)


def test_benchmark_figure():
    """The benchmark runs and reports its figure (printed, never asserted on:
    timings are not test results)."""
    out = fast.benchmark(n_instructions=200_000, repeats=1, reference_instructions=2000)
    print(f"Nux fast engine: {out['instructions_per_second'] / 1e6:.1f} M instructions/s "
          f"({out['speedup']:.0f}x the reference engine)")
    assert out["instructions"] > 100_000 and out["wall_time_s"] > 0
