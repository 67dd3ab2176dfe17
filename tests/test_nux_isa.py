"""The Nux instruction table, decoder/encoder and reference semantics.

Every instruction is executed by ``reference.execute`` and compared with the
independent formulas of ``nux_reference_ops`` on seeded random operands and
edge cases; small programs run through ``reference.step`` over ``FlatMemory``.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

import nux_reference_ops as R
from bss2sim.digital.nux import isa
from bss2sim.digital.nux.asm import assemble
from bss2sim.digital.nux.isa import (INSTRUCTIONS, IllegalInstruction, decode, disassemble,
                                     encode)
from bss2sim.digital.nux.reference import (VCR_EQ, VCR_GT, VCR_LT, XER_CA, XER_OV, XER_SO,
                                           FlatMemory, MemoryFault, NuxState, execute, step)

M32 = 0xFFFF_FFFF
EDGE32 = [0, 1, 2, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF, 0xFFFF_FFFE, 0xFFFF,
          0x10000, 0x7FFF, 0x8000]

# Families whose semantics the tests below check, each over all its instructions.
TESTED_FAMILIES = {
    "arith", "mul", "div", "addi", "addic", "subfic", "mulli", "logic_imm", "logic", "shift",
    "unary", "rotate", "cmp", "load", "store", "lmw", "stmw", "b", "bc", "bcreg", "crlogic",
    "mcrf", "mfcr", "mfocrf", "mtcrf", "mfspr", "mtspr", "nop", "wait", "fxv_arith", "fxv_cmp",
    "fxv_splat", "fxv_shift", "fxv_sel", "fxv_pack", "fxv_lax", "fxv_stax", "fxv_inx",
    "fxv_outx",
}


def family(name):
    return [ins for ins in INSTRUCTIONS if ins.family == name]


def value32(rng):
    return rng.choice(EDGE32) if rng.random() < 0.3 else rng.getrandbits(32)


def run(st, mem, mnemonic, **operands):
    """Execute one instruction at st.pc."""
    d = decode(encode(mnemonic, **operands))
    execute(st, mem, d)
    return d


def regs(rng, n, exclude=()):
    """n distinct GPR numbers (not in exclude)."""
    pool = [r for r in range(32) if r not in exclude]
    return rng.sample(pool, n)


# --- table ------------------------------------------------------------------------------------------
def test_table_is_consistent():
    names = [i.mnemonic for i in INSTRUCTIONS]
    assert len(names) == len(set(names))
    assert all(i.unit in isa.UNITS for i in INSTRUCTIONS)
    fxv = [i for i in INSTRUCTIONS if i.form == "FXV"]
    assert len(fxv) == 53                      # every FXV instruction of the guide
    assert {i.family for i in INSTRUCTIONS} <= TESTED_FAMILIES
    # variants generated: add has 4, b has 4, bc has 4, every logical op has a record form
    for base, variants in (("add", ("add", "add.", "addo", "addo.")), ("b", ("b", "bl", "ba", "bla")),
                           ("bc", ("bc", "bcl", "bca", "bcla")), ("divwu", ("divwuo.",)),
                           ("and", ("and.",)), ("rlwinm", ("rlwinm.",))):
        assert all(v in isa.BY_MNEMONIC for v in variants), base
    assert "mulhwo" not in isa.BY_MNEMONIC     # mulhw has no OE
    assert isa.lookup("fxvaddtachm") is isa.lookup("fxvaddtach")   # the guide's spelling


def test_units_of_some_instructions():
    unit = {i.mnemonic: i.unit for i in INSTRUCTIONS}
    assert unit["add"] == "alu" and unit["mullw"] == "mul" and unit["divw"] == "div"
    assert unit["lwz"] == "load" and unit["stmw"] == "store" and unit["bclrl"] == "branch"
    assert unit["crxor"] == "cr" and unit["mfspr"] == "spr" and unit["isync"] == "sync"
    assert unit["wait"] == "wait" and unit["fxvmahm"] == "vector_mul"
    assert unit["fxvaddbfs"] == "vector_alu" and unit["fxvsel"] == "vector_permute"
    assert unit["fxvlax"] == "vector_load" and unit["fxvstax"] == "vector_store"
    assert unit["fxvinx"] == "vector_in" and unit["fxvoutx"] == "vector_out"


# Words assembled by the chip group's toolchain for its RTL test programs, and
# standard PowerPC encodings: (word, address, text).
KNOWN = [
    (0x4E800020, 0, "blr"), (0x60000000, 0, "nop"), (0x7C0802A6, 0, "mflr r0"),
    (0x9421FFF0, 0, "stwu r1,-16(r1)"), (0x81210008, 0, "lwz r9,8(r1)"),
    (0x7C00007C, 0, "wait"), (0x7C8903A6, 0, "mtctr r4"), (0x3861FFF0, 0, "addi r3,r1,-16"),
    (0x3463FFFF, 0, "addic. r3,r3,-1"), (0x4082FF8C, 0xA0, "bne cr0,0x2c"),
    (0x4200FFFC, 0x10, "bdnz 0xc"), (0x7DEFFA14, 0, "add r15,r15,r31"),
    (0x102007B0, 0, "fxvlax v1,0,r0"), (0x100017F0, 0, "fxvstax v0,0,r2"),
    (0x10011030, 0, "fxvmahm v0,v1,v2,0"), (0x10011031, 0, "fxvmahm v0,v1,v2,1"),
    (0x10011832, 0, "fxvmahm v0,v1,v3,2"), (0x100104B0, 0, "fxvcmph v1"),
    (0x1000003C, 0, "fxvmtach v0,0"), (0x10211530, 0, "fxvsubhm v1,v1,v2,0"),
    (0x107D0130, 0, "fxvmulhm v3,v29,v0,0"), (0x7C6802A6, 0, "mflr r3"),
    (0x7C7C42A6, 0, "mfspr r3,284"), (0x7C6C42A6, 0, "mftb r3"),
]


@pytest.mark.parametrize("word,address,text", KNOWN)
def test_known_encodings(word, address, text):
    assert disassemble(word, address) == text
    assert assemble(text, origin=address).segments[0].data == word.to_bytes(4, "big")


def test_encode_by_name():
    assert encode("addi", rt=3, ra=1, si=-16) == 0x3861FFF0
    assert encode("lwz", rt=9, d=8, ra=1) == 0x81210008
    assert encode("fxvaddbm", vrt=1, vra=2, vrb=3) == encode("fxvaddbm", vrt=1, vra=2, vrb=3, c=0)
    assert disassemble(encode("fxvaddbm", vrt=1, vra=2, vrb=3)) == "fxvaddbm v1,v2,v3,0"
    assert disassemble(encode("bc", bo=4, bi=2, bd=0x20), 0x100) == "bne cr0,0x120"
    d = decode(encode("lwz", rt=9, d=-8, ra=1))
    assert d.fields == {"rt": 9, "d": -8, "ra": 1} and d.instruction.mnemonic == "lwz"
    d = decode(encode("mfspr", rt=3, spr=285))
    assert d.fields["spr"] == 285
    d = decode(encode("b", li=-0x200_0000))
    assert d.fields["li"] == -0x200_0000


@pytest.mark.parametrize("call,match", [
    (lambda: encode("addi", rt=3, ra=1, si=40000), r"operand si = 40000 is out of range -32768..32767"),
    (lambda: encode("addi", rt=32, ra=1, si=0), r"operand rt = 32 is out of range 0..31"),
    (lambda: encode("bc", bo=12, bi=0, bd=6), r"operand bd = 6 is out of range .* in steps of 4"),
    (lambda: encode("b", li=1 << 25), r"operand li"),
    (lambda: encode("frob", rt=1), r"unknown mnemonic 'frob'"),
    (lambda: encode("addi", rt=1, ra=1), r"missing operand si"),
    (lambda: encode("addi", rt=1, ra=1, si=0, rb=2), r"has no operand\(s\) rb"),
    (lambda: encode("lwzu", rt=3, d=0, ra=0), r"RA=0 is invalid"),
    (lambda: encode("lwzu", rt=3, d=0, ra=3), r"RA=RT is invalid"),
    (lambda: encode("stwu", rs=3, d=0, ra=0), r"RA=0 is invalid"),
    (lambda: encode("lmw", rt=20, d=0, ra=25), r"loaded range"),
    (lambda: encode("cmp", bf=0, l=1, ra=1, rb=2), r"L=1"),
    (lambda: encode("bcctr", bo=16, bi=0), r"CTR decrement"),
    (lambda: encode("mfspr", rt=1, spr=272), r"SPR 272 is not implemented"),
    (lambda: encode("mtspr", spr=268, rs=1), r"SPR 268 is not writable"),
    (lambda: encode("mtocrf", fxm=3, rs=1), r"exactly one CR field"),
    (lambda: encode("fxvshh", vrt=1, vra=2, sh=16), r"operand sh = 16 is out of range -16..15"),
    (lambda: encode("fxvaddbm", vrt=1, vra=2, vrb=3, c=4), r"operand c = 4 is out of range 0..3"),
])
def test_encode_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_illegal_instruction_message_and_attributes():
    with pytest.raises(IllegalInstruction) as e:
        decode(0x7C0001AC, 0x104)
    assert str(e.value).startswith("illegal instruction 0x7c0001ac at 0x00000104")
    assert e.value.word == 0x7C0001AC and e.value.address == 0x104
    # reserved bit (bit 31 of lwzx), invalid forms, unknown primary opcodes, unused fields
    lwzu_r3_r3 = (33 << 26) | (3 << 21) | (3 << 16)
    lmw_r29_r29 = (46 << 26) | (29 << 21) | (29 << 16)
    for word in (encode("lwzx", rt=1, ra=2, rb=3) | 1, lwzu_r3_r3, lmw_r29_r29, 0x00000000,
                 0xFC000000,
                 encode("mulhw", rt=1, ra=2, rb=3) | (1 << 10),   # mulhw has no OE bit
                 encode("fxvcmpb", vra=3) | (1 << 21),            # VRT of fxvcmpb is reserved
                 encode("fxvlax", vrt=1, ra=0, rb=2) | 1,         # C of fxvlax is reserved
                 encode("mfcr", rt=3) | (0x80 << 12),             # FXM bits of mfcr
                 encode("bclr", bo=20, bi=0) | (1 << 11)):        # BH hint must be 0
        with pytest.raises(IllegalInstruction):
            decode(word)
        assert disassemble(word).startswith(".long 0x")


def test_decoder_fuzz():
    """200k random words: each decodes and re-encodes to itself, or is illegal."""
    rng = random.Random(20240601)
    legal = 0
    for k in range(200_000):
        word = rng.getrandbits(32)
        try:
            ins, fields = decode(word)
        except IllegalInstruction as e:
            assert e.word == word
            continue
        legal += 1
        assert encode(ins.mnemonic, **fields) == word, (hex(word), ins.mnemonic, fields)
        if k % 16 == 0:
            text = disassemble(word, 0x1000)
            assert text and not text.startswith(".long")
    assert 20_000 < legal < 180_000


def random_operands(ins, rng):
    values = {}
    for op in ins.operands:
        lo, hi, step_ = op.value_range()
        values[op.name] = rng.randrange(lo // step_, hi // step_ + 1) * step_
    return values


def encodable(ins, rng):
    """Random operands that form a valid instruction (retry invalid forms)."""
    for _ in range(200):
        v = random_operands(ins, rng)
        if ins.family == "mfspr" or ins.family == "mtspr":
            v["spr"] = rng.choice(sorted(isa.READ_SPRS if ins.family == "mfspr" else isa.WRITE_SPRS))
        if ins.mnemonic in ("mfocrf", "mtocrf"):
            v["fxm"] = 1 << rng.randrange(8)
        try:
            return v, encode(ins.mnemonic, **v)
        except ValueError:
            continue
    raise AssertionError(f"no valid operands found for {ins.mnemonic}")


def test_every_entry_encodes_decodes_disassembles():
    rng = random.Random(7)
    for ins in INSTRUCTIONS:
        for _ in range(8):
            values, word = encodable(ins, rng)
            d = decode(word)
            assert d.instruction is ins
            assert d.fields == values
            assert disassemble(word, 0x2000)


# --- scalar semantics ----------------------------------------------------------------------------
def fresh(rng):
    st = NuxState()
    st.gpr = [rng.getrandbits(32) for _ in range(32)]
    st.cr = rng.getrandbits(32)
    st.xer = rng.choice([0, XER_SO, XER_CA, XER_OV, XER_SO | XER_CA | XER_OV])
    st.pc = 0x100
    return st


def check_flags(st, before_xer, before_cr, ins, result, ca, ov):
    """XER and CR0 after an XO-form instruction."""
    so = bool(before_xer & XER_SO) or (ins.oe and ov)
    exp_xer = before_xer
    if ca is not None:
        exp_xer = (exp_xer | XER_CA) if ca else (exp_xer & ~XER_CA)
    if ins.oe:
        exp_xer = (exp_xer | XER_OV | XER_SO) if ov else (exp_xer & ~XER_OV)
    assert st.xer == exp_xer & M32, ins.mnemonic
    if ins.rc:
        assert st.cr >> 28 == R.cr0_bits(result, so), ins.mnemonic
        assert st.cr & 0x0FFF_FFFF == before_cr & 0x0FFF_FFFF
    else:
        assert st.cr == before_cr


def test_xo_add_subtract_family():
    rng = random.Random(1)
    mem = FlatMemory()
    for ins in family("arith"):
        uses_rb = "rb" in ins.operand_names
        for k in range(150):
            st = fresh(rng)
            rt, ra, rb = regs(rng, 3) if k % 10 else (5, 5, 6)   # some RT = RA aliasing
            st.gpr[ra] = value32(rng)
            if uses_rb:
                st.gpr[rb] = value32(rng)
            a, b = st.gpr[ra], st.gpr[rb] if uses_rb else 0
            ca_in = 1 if st.xer & XER_CA else 0
            xer, cr = st.xer, st.cr
            ops = dict(rt=rt, ra=ra, rb=rb) if uses_rb else dict(rt=rt, ra=ra)
            run(st, mem, ins.mnemonic, **ops)
            result, ca, ov = R.arith(ins.params["op"], a, b, ca_in)
            assert st.gpr[rt] == result, (ins.mnemonic, hex(a), hex(b), ca_in)
            check_flags(st, xer, cr, ins, result, ca, ov)
            assert st.pc == 0x104


def test_carry_chain_edge_cases():
    """64-bit add and subtract from addc/adde and subfc/subfe, CA/OV/SO by hand."""
    st, mem = NuxState(), FlatMemory()
    st.gpr[3:7] = [0x0000_0001, 0xFFFF_FFFF, 0x0000_0000, 0x0000_0001]  # 0x1_ffffffff, 0x1
    run(st, mem, "addc", rt=8, ra=4, rb=6)     # low words
    assert st.gpr[8] == 0 and st.xer & XER_CA
    run(st, mem, "adde", rt=7, ra=3, rb=5)     # high words + carry
    assert st.gpr[7] == 2 and not st.xer & XER_CA
    run(st, mem, "subfc", rt=8, ra=6, rb=5)    # 0 - 1: borrow -> CA = 0
    assert st.gpr[8] == M32 and not st.xer & XER_CA
    run(st, mem, "subfe", rt=9, ra=5, rb=3)    # 1 - 0 - borrow = 0
    assert st.gpr[9] == 0 and st.xer & XER_CA
    st.gpr[10] = 0x7FFF_FFFF
    run(st, mem, "addo.", rt=11, ra=10, rb=6)
    assert st.gpr[11] == 0x8000_0000 and st.xer & XER_OV and st.xer & XER_SO
    assert st.cr >> 28 == 0b1001               # LT and SO
    run(st, mem, "addo", rt=11, ra=6, rb=6)    # no overflow clears OV, keeps SO
    assert not st.xer & XER_OV and st.xer & XER_SO
    st.xer = XER_CA
    st.gpr[12] = M32
    run(st, mem, "addze", rt=13, ra=12)
    assert st.gpr[13] == 0 and st.xer & XER_CA
    st.gpr[12] = 0x8000_0000
    run(st, mem, "nego", rt=13, ra=12)
    assert st.gpr[13] == 0x8000_0000 and st.xer & XER_OV


def test_mul_div():
    rng = random.Random(2)
    mem = FlatMemory()
    for ins in family("mul") + family("div"):
        op = ins.params["op"]
        for k in range(200):
            st = fresh(rng)
            rt, ra, rb = regs(rng, 3)
            a, b = value32(rng), value32(rng)
            if k < 6:   # divide by zero and the one signed overflow
                a, b = [(5, 0), (0x8000_0000, M32), (0, 0), (M32, 0), (0x8000_0000, 1), (7, M32)][k]
            st.gpr[ra], st.gpr[rb] = a, b
            xer, cr = st.xer, st.cr
            run(st, mem, ins.mnemonic, rt=rt, ra=ra, rb=rb)
            result, ov = (R.mul if ins.family == "mul" else R.div)(op, a, b)
            assert st.gpr[rt] == result, (ins.mnemonic, hex(a), hex(b))
            check_flags(st, xer, cr, ins, result, None, ov)


def test_immediate_arithmetic():
    rng = random.Random(3)
    mem = FlatMemory()
    for ins in family("addi") + family("addic") + family("subfic") + family("mulli"):
        for k in range(200):
            st = fresh(rng)
            rt, ra = regs(rng, 2)
            if ins.family == "addi" and k % 7 == 0:
                ra = 0                                   # (RA|0): the value 0
            si = rng.choice([0, 1, -1, 0x7FFF, -0x8000]) if k % 5 == 0 else rng.randrange(-0x8000, 0x8000)
            a = st.gpr[ra] = value32(rng)
            xer, cr = st.xer, st.cr
            run(st, mem, ins.mnemonic, rt=rt, ra=ra, si=si)
            mn = ins.mnemonic
            if mn == "addi":
                exp, ca = ((0 if ra == 0 else a) + si) & M32, None
            elif mn == "addis":
                exp, ca = ((0 if ra == 0 else a) + si * 65536) & M32, None
            elif mn.startswith("addic"):
                exp = (a + si) & M32
                ca = a + (si & M32) > M32
            elif mn == "subfic":
                exp = (si - a) & M32
                ca = (si & M32) >= a                       # no borrow
            else:
                exp, ca = (R.s32(a) * si) & M32, None
            assert st.gpr[rt] == exp, (mn, hex(a), si)
            if ca is not None:
                assert bool(st.xer & XER_CA) == ca, mn
            if mn == "addic.":
                assert st.cr >> 28 == R.cr0_bits(exp, xer & XER_SO)
            else:
                assert st.cr == cr


def test_logical_immediate():
    rng = random.Random(4)
    mem = FlatMemory()
    for ins in family("logic_imm"):
        for _ in range(200):
            st = fresh(rng)
            ra, rs = regs(rng, 2)
            ui = rng.randrange(0x10000)
            s = st.gpr[rs] = value32(rng)
            cr = st.cr
            run(st, mem, ins.mnemonic, ra=ra, rs=rs, ui=ui)
            imm = ui << ins.params["shift"]
            exp = R.logic(ins.params["op"], s, imm)
            assert st.gpr[ra] == exp, ins.mnemonic
            if ins.params["record"]:
                assert st.cr >> 28 == R.cr0_bits(exp, st.xer & XER_SO)
            else:
                assert st.cr == cr


def test_logical_shift_unary():
    rng = random.Random(5)
    mem = FlatMemory()
    for ins in family("logic") + family("shift") + family("unary"):
        op = ins.params["op"]
        for k in range(200):
            st = fresh(rng)
            ra, rs, rb = regs(rng, 3)
            s = st.gpr[rs] = value32(rng)
            amount = [0, 31, 32, 33, 63, 1][k] if k < 6 else rng.randrange(64)
            b = st.gpr[rb] = value32(rng) if ins.family == "logic" else \
                (rng.getrandbits(26) << 6) | amount          # upper bits must be ignored
            xer, cr = st.xer, st.cr
            if op == "srawi":
                run(st, mem, ins.mnemonic, ra=ra, rs=rs, sh=amount % 32)
            elif ins.family == "unary":
                run(st, mem, ins.mnemonic, ra=ra, rs=rs)
            else:
                run(st, mem, ins.mnemonic, ra=ra, rs=rs, rb=rb)
            ca = None
            if ins.family == "logic":
                exp = R.logic(op, s, b)
            elif op == "slw":
                exp = R.slw(s, b)
            elif op == "srw":
                exp = R.srw(s, b)
            elif op in ("sraw", "srawi"):
                exp, ca = R.sraw(s, amount % 32 if op == "srawi" else amount)
            elif op == "cntlzw":
                exp = R.cntlzw(s)
            else:
                exp = R.exts(s, 1 if op == "extsb" else 2)
            assert st.gpr[ra] == exp, (ins.mnemonic, hex(s), hex(b))
            if ca is not None:
                assert bool(st.xer & XER_CA) == ca, (ins.mnemonic, hex(s), amount)
            else:
                assert st.xer == xer
            if ins.rc:
                assert st.cr >> 28 == R.cr0_bits(exp, xer & XER_SO)
            else:
                assert st.cr == cr


def test_rotates():
    rng = random.Random(6)
    mem = FlatMemory()
    for ins in family("rotate"):
        for k in range(300):
            st = fresh(rng)
            ra, rs, rb = regs(rng, 3)
            s = st.gpr[rs] = value32(rng)
            old = st.gpr[ra]
            edge_masks = [(0, 31), (31, 0), (5, 5), (16, 15)]     # full, wrapped, one bit, wrapped
            mb, me = edge_masks[k] if k < 4 else (rng.randrange(32), rng.randrange(32))
            n = rng.randrange(32)
            if ins.params["op"] == "rlwnm":
                st.gpr[rb] = (rng.getrandbits(27) << 5) | n
                run(st, mem, ins.mnemonic, ra=ra, rs=rs, rb=rb, mb=mb, me=me)
            else:
                run(st, mem, ins.mnemonic, ra=ra, rs=rs, sh=n, mb=mb, me=me)
            m = R.mask(mb, me)
            r = R.rotl(s, n)
            exp = (r & m) | (old & ~m & M32) if ins.params["op"] == "rlwimi" else r & m
            assert st.gpr[ra] == exp, (ins.mnemonic, mb, me, n)
            if ins.rc:
                assert st.cr >> 28 == R.cr0_bits(exp, st.xer & XER_SO)


def test_compares():
    rng = random.Random(8)
    mem = FlatMemory()
    for ins in family("cmp"):
        for k in range(200):
            st = fresh(rng)
            ra, rb = regs(rng, 2)
            bf = rng.randrange(8)
            a = st.gpr[ra] = value32(rng)
            cr = st.cr
            signed = ins.params["signed"]
            if ins.params["imm"]:
                key = "si" if signed else "ui"
                imm = rng.randrange(-0x8000, 0x8000) if signed else rng.randrange(0x10000)
                if k % 9 == 0:
                    imm = R.s32(a) if signed and -0x8000 <= R.s32(a) < 0x8000 else imm
                run(st, mem, ins.mnemonic, bf=bf, l=0, ra=ra, **{key: imm})
                x, y = (R.s32(a), imm) if signed else (a, imm)
            else:
                b = st.gpr[rb] = a if k % 9 == 0 else value32(rng)
                run(st, mem, ins.mnemonic, bf=bf, l=0, ra=ra, rb=rb)
                x, y = (R.s32(a), R.s32(b)) if signed else (a, b)
            exp = (8 if x < y else 4 if x > y else 2) | (1 if st.xer & XER_SO else 0)
            shift = 28 - 4 * bf
            assert (st.cr >> shift) & 15 == exp, (ins.mnemonic, x, y)
            assert st.cr & ~(15 << shift) & M32 == cr & ~(15 << shift) & M32


def test_loads_and_stores():
    rng = random.Random(9)
    for ins in family("load") + family("store"):
        p = ins.params
        size = p["size"]
        for k in range(150):
            st, mem = fresh(rng), FlatMemory()
            mem.data[0x1000:0x1400] = rng.randbytes(0x400)
            rt, ra, rb = regs(rng, 3, exclude=(0,))
            if not p["update"] and k % 5 == 0:
                ra = 0
            ea = 0x1000 + rng.randrange(0x400 // size) * size
            d = 0
            if p["indexed"]:
                base = value32(rng) if ra else 0
                st.gpr[rb] = (ea - base) & M32
            else:
                d = rng.randrange(-0x8000, 0x8000) if ra else ea
                base = (ea - d) & M32
            if ra:
                st.gpr[ra] = base
            before = list(st.gpr)
            key = "rt" if ins.unit == "load" else "rs"
            ops = {key: rt, "ra": ra}
            ops.update({"rb": rb} if p["indexed"] else {"d": d})
            old_mem = bytes(mem.data)
            run(st, mem, ins.mnemonic, **ops)
            if ins.unit == "load":
                raw = int.from_bytes(old_mem[ea:ea + size], "big")
                if p["signed"] and raw & 0x8000:
                    raw = (raw - 0x10000) & M32
                assert st.gpr[rt] == raw, ins.mnemonic
            else:
                want = (before[rt] & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
                assert bytes(mem.data[ea:ea + size]) == want, ins.mnemonic
                assert mem.data[:ea] == old_mem[:ea] and mem.data[ea + size:] == old_mem[ea + size:]
            if p["update"]:
                assert st.gpr[ra] == ea
            changed = {i for i in range(32) if st.gpr[i] != before[i]}
            allowed = ({rt} if ins.unit == "load" else set()) | ({ra} if p["update"] else set())
            assert changed <= allowed


def test_misaligned_and_outside_accesses_fault():
    st, mem = NuxState(), FlatMemory()
    st.gpr[1] = 0x1001
    with pytest.raises(MemoryFault, match="misaligned 4-byte access"):
        run(st, mem, "lwz", rt=3, d=0, ra=1)
    st.gpr[1] = 0x4000
    with pytest.raises(MemoryFault, match="outside the memory"):
        run(st, mem, "stb", rs=3, d=0, ra=1)


def test_lmw_stmw():
    rng = random.Random(10)
    for k in range(40):
        st, mem = fresh(rng), FlatMemory()
        rt = rng.randrange(1, 32)
        ra = rng.randrange(0, rt)
        base = 0x800 + 4 * rng.randrange(64)
        d = rng.randrange(-64, 64) * 4
        if ra:
            st.gpr[ra] = base - d
        else:
            d = base
        values = list(st.gpr)
        run(st, mem, "stmw", rs=rt, d=d, ra=ra)
        for i, r in enumerate(range(rt, 32)):
            assert mem.load(base + 4 * i, 4) == values[r]
        st2 = NuxState()
        st2.gpr[ra] = st.gpr[ra]
        run(st2, mem, "lmw", rt=rt, d=d, ra=ra)
        assert st2.gpr[rt:] == values[rt:]
        assert all(st2.gpr[i] == (st.gpr[ra] if i == ra else 0) for i in range(rt))


# --- branches and CR ---------------------------------------------------------------------------------
def test_conditional_branches_every_bo():
    rng = random.Random(11)
    mem = FlatMemory()
    for ins in family("bc") + family("bcreg"):
        for bo in range(32):
            for k in range(12):
                bi = rng.randrange(32)
                st = fresh(rng)
                st.pc = 0x2000
                st.ctr = [0, 1, 2, M32][k] if k < 4 else rng.getrandbits(32)
                st.lr = rng.getrandbits(32)
                lr0, ctr0, cr_bit = st.lr, st.ctr, (st.cr >> (31 - bi)) & 1
                if ins.family == "bc":
                    bd = rng.randrange(-0x2000, 0x2000) * 4
                    ops = dict(bo=bo, bi=bi, bd=bd)
                    target = (bd & M32) if ins.aa else (0x2000 + bd) & M32
                else:
                    ops = dict(bo=bo, bi=bi)
                    target = (lr0 if ins.params["target"] == "lr" else ctr0) & ~3 & M32
                if ins.family == "bcreg" and ins.params["target"] == "ctr" and not bo & 4:
                    with pytest.raises(ValueError):
                        encode(ins.mnemonic, **ops)
                    continue
                run(st, mem, ins.mnemonic, **ops)
                taken, ctr = R.branch_taken(bo, cr_bit, ctr0)
                assert st.ctr == ctr, (ins.mnemonic, bo)
                assert st.pc == (target if taken else 0x2004), (ins.mnemonic, bo, bi)
                assert st.lr == (0x2004 if ins.lk else lr0)


def test_unconditional_branches():
    rng = random.Random(12)
    mem = FlatMemory()
    for ins in family("b"):
        for _ in range(50):
            st = NuxState()
            st.pc = 0x1000_0000
            li = rng.randrange(-0x80_0000, 0x80_0000) * 4
            run(st, mem, ins.mnemonic, li=li)
            assert st.pc == ((li & M32) if ins.aa else (0x1000_0000 + li) & M32)
            assert st.lr == (0x1000_0004 if ins.lk else 0)


def test_bclrl_branches_to_the_old_lr():
    st, mem = NuxState(), FlatMemory()
    st.pc, st.lr = 0x100, 0x203      # low bits of LR are ignored
    run(st, mem, "bclrl", bo=20, bi=0)
    assert st.pc == 0x200 and st.lr == 0x104


def test_cr_logic_and_moves():
    rng = random.Random(13)
    mem = FlatMemory()
    ops = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
           "nand": lambda a, b: 1 - (a & b), "nor": lambda a, b: 1 - (a | b),
           "eqv": lambda a, b: int(a == b), "andc": lambda a, b: a & (1 - b),
           "orc": lambda a, b: a | (1 - b)}
    for ins in family("crlogic"):
        for _ in range(100):
            st = fresh(rng)
            bt, ba, bb = (rng.randrange(32) for _ in range(3))
            bits = format(st.cr, "032b")
            run(st, mem, ins.mnemonic, bt=bt, ba=ba, bb=bb)
            exp = list(bits)
            exp[bt] = str(ops[ins.params["op"]](int(bits[ba]), int(bits[bb])))
            assert format(st.cr, "032b") == "".join(exp), ins.mnemonic
    for _ in range(50):
        st = fresh(rng)
        bf, bfa = rng.randrange(8), rng.randrange(8)
        fields = [format(st.cr, "032b")[4 * i:4 * i + 4] for i in range(8)]
        run(st, mem, "mcrf", bf=bf, bfa=bfa)
        fields[bf] = fields[bfa]
        assert format(st.cr, "032b") == "".join(fields)
        rt, rs = regs(rng, 2)
        run(st, mem, "mfcr", rt=rt)
        assert st.gpr[rt] == st.cr
        fxm = rng.randrange(256)
        cr, v = st.cr, st.gpr[rs]
        run(st, mem, "mtcrf", fxm=fxm, rs=rs)
        sel = "".join("1111" if fxm & (0x80 >> i) else "0000" for i in range(8))
        exp = "".join(b if s == "1" else c for s, b, c in zip(sel, format(v, "032b"), format(cr, "032b")))
        assert format(st.cr, "032b") == exp
        one = 1 << rng.randrange(8)
        run(st, mem, "mfocrf", rt=rt, fxm=one)
        sel = "".join("1111" if one & (0x80 >> i) else "0000" for i in range(8))
        assert st.gpr[rt] == int(sel, 2) & st.cr
        cr, v = st.cr, st.gpr[rs]
        run(st, mem, "mtocrf", fxm=one, rs=rs)
        assert st.cr == (cr & ~int(sel, 2) & M32) | (v & int(sel, 2))


def test_special_purpose_registers():
    st, mem = NuxState(), FlatMemory()
    st.gpr[3] = 0xFFFF_FFFF
    for spr, attr in ((8, "lr"), (9, "ctr")):
        run(st, mem, "mtspr", spr=spr, rs=3)
        assert getattr(st, attr) == M32
        setattr(st, attr, 0x1234)
        run(st, mem, "mfspr", rt=4, spr=spr)
        assert st.gpr[4] == 0x1234
    run(st, mem, "mtspr", spr=1, rs=3)
    assert st.xer == 0xE000_007F               # reserved XER bits read 0
    run(st, mem, "mfspr", rt=5, spr=1)
    assert st.gpr[5] == 0xE000_007F
    st.time_base = 0x1_2345_6789
    for spr, exp in ((268, 0x2345_6789), (284, 0x2345_6789), (269, 1), (285, 1)):
        run(st, mem, "mfspr", rt=6, spr=spr)
        assert st.gpr[6] == exp
    with pytest.raises(IllegalInstruction, match="SPR 272"):
        decode(encode("mfspr", rt=3, spr=1) & ~(0x3FF << 11) | (((272 & 31) << 5 | 272 >> 5) << 11))


def test_sync_isync_wait():
    st, mem = NuxState(), FlatMemory()
    before = st.copy()
    for mn in ("sync", "isync"):
        run(st, mem, mn)
    assert st.pc == 8 and st.gpr == before.gpr and not st.waiting
    run(st, mem, "wait")
    assert st.waiting and st.pc == 12


# --- FXV -----------------------------------------------------------------------------------------------
def random_vector(rng, n):
    """128 bytes whose n-bit lanes mix random values and edge values."""
    edges = [0, 1, -1, (1 << (n - 1)) - 1, -(1 << (n - 1)), 2, -2]
    lanes = [rng.choice(edges) if rng.random() < 0.35 else rng.randrange(-(1 << (n - 1)), 1 << (n - 1))
             for _ in range(128 * 8 // n)]
    return R.from_lanes(lanes, n)


def random_acc(rng, n):
    edges = [0, 1, -1, (1 << (2 * n - 1)) - 1, -(1 << (2 * n - 1)), 1 << (2 * n - 2)]
    lanes = [rng.choice(edges) if rng.random() < 0.3 else rng.randrange(-(1 << (2 * n - 1)), 1 << (2 * n - 1))
             for _ in range(128 * 8 // n)]
    return R.acc_from_lanes(lanes, n)


def random_flags(rng, n):
    """Per-byte flags as strings ('G', 'L', 'E'), set per lane as a compare would."""
    per_lane = [rng.choice("GLE") for _ in range(128 * 8 // n)]
    return [f for f in per_lane for _ in range(n // 8)]


def set_flags(st, flags):
    code = {"G": VCR_GT, "L": VCR_LT, "E": VCR_EQ}
    st.vcr[:] = [code[f] for f in flags]


def vec(st, r):
    return bytes(st.vr[r])


def test_fxv_arithmetic_every_instruction_and_condition():
    rng = random.Random(14)
    mem = FlatMemory()
    for ins in family("fxv_arith"):
        n, op = ins.params["lane"], ins.params["op"]
        names = ins.operand_names
        for c in range(4):
            for k in range(6):
                st = NuxState()
                va, vb, vt = rng.sample(range(32), 3)
                if k == 5 and "vrt" in names:
                    vt = va                           # destination aliases a source
                a, b = random_vector(rng, n), random_vector(rng, n)
                st.vr[va] = np.frombuffer(a, np.uint8)
                if "vrb" in names:
                    st.vr[vb] = np.frombuffer(b, np.uint8)
                else:
                    b = bytes(128)
                st.vr[vt] = np.frombuffer(rng.randbytes(128), np.uint8) if vt != va else st.vr[va]
                acc = random_acc(rng, n)
                st.acc[:] = np.frombuffer(acc, ">i4")
                flags = random_flags(rng, n if k % 2 else 8)   # odd k: lane-wise flags
                set_flags(st, flags)
                old_t = vec(st, vt)
                ops = {"vra": va, "c": c}
                if "vrb" in names:
                    ops["vrb"] = vb
                if "vrt" in names:
                    ops["vrt"] = vt
                run(st, mem, ins.mnemonic, **ops)
                la, lb, lm = R.lanes(a, n), R.lanes(b, n), R.acc_lanes(acc, n)
                dests, values = zip(*(R.fxv_arith(op, x, y, m, n) for x, y, m in zip(la, lb, lm)))
                enable = [R.condition(f, c) for f in flags]
                if dests[0] == "vrt":
                    new = R.from_lanes(values, n)
                    exp = bytes(new[j] if enable[j] else old_t[j] for j in range(128))
                    assert vec(st, vt) == exp, (ins.mnemonic, c, k)
                    assert st.acc.tobytes() == acc
                else:
                    new = R.acc_from_lanes(values, n)
                    exp = bytes(new[j] if enable[j // 2] else acc[j] for j in range(256))
                    assert st.acc.tobytes() == exp, (ins.mnemonic, c, k)
                    assert vec(st, vt) == old_t
                assert vec(st, va) == a or vt == va


def test_fractional_edge_cases():
    st, mem = NuxState(), FlatMemory()
    st.vr[1] = 0x80                                           # -1 in every byte
    st.vr[7].view(">u2")[:] = 0x8000                          # -1 in every halfword
    run(st, mem, "fxvmulhfs", vrt=2, vra=7, vrb=7)
    assert (st.vr[2].view(">i2") == 0x7FFF).all()
    run(st, mem, "fxvmulbfs", vrt=2, vra=1, vrb=1)
    assert (st.vr[2] == 0x7F).all()
    run(st, mem, "fxvmultachfs", vra=7, vrb=7)
    assert (st.acc == 0x7FFF_FFFF).all()
    run(st, mem, "fxvmatachfs", vra=7, vrb=7)                 # saturates the accumulator
    assert (st.acc == 0x7FFF_FFFF).all()
    run(st, mem, "fxvmahfs", vrt=2, vra=7, vrb=7)             # upper half of the saturated sum
    assert (st.vr[2].view(">i2") == 0x7FFF).all()
    run(st, mem, "fxvmultacbfs", vra=1, vrb=1)
    assert (st.acc_b == 0x7FFF).all()
    st.vr[8].view(">i2")[:] = -0x7FFF
    run(st, mem, "fxvmtachf", vra=8)                          # acc = -0x7fff << 16
    run(st, mem, "fxvaddactachf", vra=7)                      # + (-1 << 16 ... ) saturates low
    assert (st.acc == -0x8000_0000).all()
    st.vr[3] = 0x7F
    run(st, mem, "fxvaddbfs", vrt=4, vra=3, vrb=3)            # 127 + 127 -> 127
    assert (st.vr[4] == 0x7F).all()
    run(st, mem, "fxvaddbfs", vrt=4, vra=1, vrb=1)            # -128 + -128 -> -128
    assert (st.vr[4] == 0x80).all()
    run(st, mem, "fxvsubbfs", vrt=4, vra=3, vrb=1)            # 127 - -128 -> 127
    assert (st.vr[4] == 0x7F).all()
    run(st, mem, "fxvsubbfs", vrt=4, vra=1, vrb=3)            # -128 - 127 -> -128
    assert (st.vr[4] == 0x80).all()
    run(st, mem, "fxvsubhfs", vrt=4, vra=3, vrb=1)            # 0x7f7f - 0x8080
    assert (st.vr[4].view(">i2") == 0x7FFF).all()
    run(st, mem, "fxvaddbm", vrt=4, vra=3, vrb=3)             # modulo: 254 -> -2
    assert (st.vr[4] == 0xFE).all()
    run(st, mem, "fxvmtachf", vra=3)                          # 0x7f7f << 16
    assert (st.acc == 0x7F7F_0000).all()
    run(st, mem, "fxvmtacb", vra=1)                           # sign-extended bytes
    assert (st.acc_b == -128).all()


def test_fxv_compare():
    rng = random.Random(15)
    mem = FlatMemory()
    for ins in family("fxv_cmp"):
        n = ins.params["lane"]
        for _ in range(30):
            st = NuxState()
            r = rng.randrange(32)
            a = random_vector(rng, n)
            st.vr[r] = np.frombuffer(a, np.uint8)
            run(st, mem, ins.mnemonic, vra=r)
            for j, lane in enumerate(R.lanes(a, n)):
                want = VCR_GT if lane > 0 else VCR_LT if lane < 0 else VCR_EQ
                assert all(st.vcr[j * n // 8 + i] == want for i in range(n // 8))


def test_fxv_splat_shift_select():
    rng = random.Random(16)
    mem = FlatMemory()
    for _ in range(20):
        st = NuxState()
        st.gpr[5] = rng.getrandbits(32)
        run(st, mem, "fxvsplath", vrt=1, ra=5)
        assert bytes(st.vr[1]) == (st.gpr[5] & 0xFFFF).to_bytes(2, "big") * 64
        run(st, mem, "fxvsplatb", vrt=2, ra=5)
        assert bytes(st.vr[2]) == bytes([st.gpr[5] & 0xFF]) * 128
    for ins in family("fxv_shift"):
        n = ins.params["lane"]
        for sh in range(-16, 16):
            st = NuxState()
            a = rng.randbytes(128)
            st.vr[3] = np.frombuffer(a, np.uint8)
            run(st, mem, ins.mnemonic, vrt=4, vra=3, sh=sh)
            lanes = [int.from_bytes(a[i:i + n // 8], "big") for i in range(0, 128, n // 8)]
            exp = b"".join(R.shift_lane(u, sh, n).to_bytes(n // 8, "big") for u in lanes)
            assert vec(st, 4) == exp, (ins.mnemonic, sh)
    for c in range(4):
        for k in range(10):
            st = NuxState()
            a, b = rng.randbytes(128), rng.randbytes(128)
            st.vr[1], st.vr[2] = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
            flags = random_flags(rng, 8 if k % 2 else 16)
            set_flags(st, flags)
            run(st, mem, "fxvsel", vrt=3, vra=1, vrb=2, c=c)
            exp = bytes(b[j] if R.condition(flags[j], c) else a[j] for j in range(128))
            assert vec(st, 3) == exp


def test_fxv_pack_unpack():
    rng = random.Random(17)
    mem = FlatMemory()
    for ins in family("fxv_pack"):
        for s in range(4):
            for _ in range(5):
                st = NuxState()
                a, b = rng.randbytes(128), rng.randbytes(128)
                st.vr[1], st.vr[2] = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
                run(st, mem, ins.mnemonic, vrt=3, vra=1, vrb=2, c=s)
                exp = b"".join(bytes(R.pack(ins.params["op"], a[16 * i:16 * i + 16],
                                            b[16 * i:16 * i + 16], s)) for i in range(8))
                assert vec(st, 3) == exp, (ins.mnemonic, s)


def test_fxv_unpack_zero_extends_and_packs_back():
    """How libnux converts 8-bit to 16-bit rows and back with s = 0."""
    st, mem = NuxState(), FlatMemory()
    rng = random.Random(18)
    x = rng.randbytes(128)
    st.vr[1] = np.frombuffer(x, np.uint8)                # bytes; v0 stays zero
    run(st, mem, "fxvupckbl", vrt=2, vra=0, vrb=1)       # left halves: zero-extended
    run(st, mem, "fxvupckbr", vrt=3, vra=0, vrb=1)
    for s in range(8):
        assert list(st.vr[2].view(">u2")[8 * s:8 * s + 8]) == list(x[16 * s:16 * s + 8])
        assert list(st.vr[3].view(">u2")[8 * s:8 * s + 8]) == list(x[16 * s + 8:16 * s + 16])
    run(st, mem, "fxvpckbl", vrt=4, vra=2, vrb=3)        # low bytes back
    assert vec(st, 4) == x
    run(st, mem, "fxvupckbl", vrt=5, vra=1, vrb=0)       # fractional: byte << 8
    run(st, mem, "fxvupckbr", vrt=6, vra=1, vrb=0)
    run(st, mem, "fxvpckbu", vrt=7, vra=5, vrb=6)        # upper bytes back
    assert vec(st, 7) == x


def test_fxv_memory_and_io():
    rng = random.Random(19)
    st, mem = NuxState(), FlatMemory()
    data = rng.randbytes(128)
    mem.write(0x800, data)
    st.gpr[3], st.gpr[4] = 0x700, 0x100
    run(st, mem, "fxvlax", vrt=5, ra=3, rb=4)           # (RA) + (RB)
    assert vec(st, 5) == data
    st.gpr[4] = 0xC00
    run(st, mem, "fxvstax", vrt=5, ra=0, rb=4)          # RA = 0: (RB) alone
    assert mem.read(0xC00, 128) == data
    st.gpr[4] = 0xC10
    with pytest.raises(MemoryFault, match="misaligned vector"):
        run(st, mem, "fxvlax", vrt=5, ra=0, rb=4)
    io_data = rng.randbytes(128)
    mem.io[0x80001] = np.frombuffer(io_data, np.uint8).copy()
    for c in range(4):
        flags = random_flags(rng, 8)
        set_flags(st, flags)
        st.vr[6] = 0x55
        st.gpr[7], st.gpr[8] = 0x80000, 1
        run(st, mem, "fxvinx", vrt=6, ra=7, rb=8, c=c)
        en = [R.condition(f, c) for f in flags]
        assert vec(st, 6) == bytes(io_data[j] if en[j] else 0x55 for j in range(128))
        st.vr[9] = np.frombuffer(rng.randbytes(128), np.uint8)
        run(st, mem, "fxvoutx", vrt=9, ra=0, rb=8, c=c)
        kind, address, sent, mask = mem.io_log[-1]
        assert kind == "out" and address == 1
        assert (mask is None) == (c == 0)
        assert bytes(sent) == bytes(st.vr[9][j] if en[j] else 0 for j in range(128))
        if mask is not None:
            assert list(mask) == en


# --- programs -----------------------------------------------------------------------------------------------
def run_program(text, *, origin=0, max_steps=100_000, mem=None, tick=None):
    program = assemble(text, origin=origin)
    mem = mem if mem is not None else FlatMemory()
    mem.load_program(program)
    st = NuxState()
    st.pc = program.entry
    steps = 0
    while not st.waiting:
        if tick is not None:
            st.time_base = tick(steps)
        step(st, mem)
        steps += 1
        assert steps < max_steps, "program did not reach wait"
    return st, mem, program, steps


def test_program_counting_loop():
    st, _, _, steps = run_program("""
        li r3, 0
        li r4, 100
        mtctr r4
    loop:
        addi r3, r3, 3
        bdnz loop
        wait
    """)
    assert st.gpr[3] == 300 and st.ctr == 0 and steps == 3 + 200 + 1


def test_program_function_call_with_stack_frame():
    st, mem, p, _ = run_program("""
        .set STACK, 0x3ff0
    _start:
        lis r1, STACK@ha
        addi r1, r1, STACK@l
        li r3, 20
        li r4, 22
        bl add_twice
        mr r31, r3
        wait

    add_twice:                  # returns 2 * (r3 + r4), calls add
        stwu r1, -16(r1)
        mflr r0
        stw r0, 20(r1)
        stw r31, 12(r1)
        bl add
        mr r31, r3
        add r3, r3, r31
        lwz r31, 12(r1)
        lwz r0, 20(r1)
        mtlr r0
        addi r1, r1, 16
        blr
    add:
        add r3, r3, r4
        blr
    """)
    assert st.gpr[31] == 84 and st.gpr[1] == 0x3FF0
    assert mem.load(0x3FF0 - 16 + 20, 4) == p.symbols["_start"] + 20   # saved LR: after "bl add_twice"


def test_program_recursive_factorial():
    st, _, _, _ = run_program("""
        li r1, 0x3ff0
        li r3, 10
        bl fact
        wait
    fact:                       # r3 <- r3!
        cmpwi r3, 1
        bgt 1f
        li r3, 1
        blr
    1:  stwu r1, -16(r1)
        mflr r0
        stw r0, 20(r1)
        stw r3, 8(r1)
        addi r3, r3, -1
        bl fact
        lwz r4, 8(r1)
        mullw r3, r3, r4
        lwz r0, 20(r1)
        mtlr r0
        addi r1, r1, 16
        blr
    """)
    assert st.gpr[3] == 3628800 and st.gpr[1] == 0x3FF0


def test_program_time_base_reads():
    st, _, _, steps = run_program("""
        mftb r3
        mfspr r4, 284
        nop
        nop
        mfspr r5, 268
        mftbu r6
        mfspr r7, 285
        subf r8, r3, r5
        wait
    """, tick=lambda k: 0x7_FFFF_FFF0 + 10 * k)
    assert st.gpr[3] == 0xFFFF_FFF0 and st.gpr[4] == 0xFFFF_FFFA
    assert st.gpr[5] == (0x7_FFFF_FFF0 + 40) & M32 and st.gpr[6] == 8 and st.gpr[7] == 8
    assert st.gpr[8] == 40


def test_program_lmw_stmw_save_restore():
    st, mem, _, _ = run_program("""
        li r1, 0x3000
        li r31, 31
        li r30, 30
        li r29, 29
        stmw r29, -12(r1)
        li r29, 0
        li r30, 0
        li r31, 0
        lmw r29, -12(r1)
        wait
    """)
    assert st.gpr[29:] == [29, 30, 31]
    assert [mem.load(0x3000 - 12 + 4 * i, 4) for i in range(3)] == [29, 30, 31]


def test_program_vector_saturating_add_compare_select():
    rng = np.random.default_rng(20)
    a = rng.integers(-128, 128, 128)
    b = rng.integers(-128, 128, 128)
    a[:4], b[:4] = [127, -128, 100, -100], [1, -1, 100, -100]
    mem = FlatMemory()
    mem.write(0x1000, a.astype(np.int8).tobytes())
    mem.write(0x1080, b.astype(np.int8).tobytes())
    st, mem, _, _ = run_program("""
        li r3, 0x1000
        li r4, 0x80
        fxvlax v1, 0, r3          # a
        fxvlax v2, r3, r4         # b
        fxvaddbfs v3, v1, v2      # saturating a + b
        fxvcmpb v3
        li r5, 0
        fxvsplatb v4, r5          # zeros
        fxvsel v5, v4, v3, 1      # ReLU: the sum where > 0, else 0
        li r6, 0x1100
        fxvstax v5, 0, r6
        sync
        wait
    """, mem=mem)
    total = np.clip(a + b, -128, 127)
    relu = np.where(total > 0, total, 0)
    assert np.array_equal(np.frombuffer(mem.read(0x1100, 128), np.int8), relu)
    assert list(relu[:4]) == [127, 0, 127, 0]


def test_program_stdp_kernel_of_the_group_rtl_tests():
    """The group's RTL test 'vector_stdp_kernel' rewritten: its expected result
    words are 0xfe020001 (weights) and 0x00ffff01 (a) [NUX test/testcode]."""
    st, mem, _, _ = run_program("""
        .set WEIGHTS, 0x1000; .set CAUSAL, 0x1080; .set ACAUSAL, 0x1100; .set WMAX, 0x1180
        .set C, 0x1200; .set RESULT, 0x1280; .set A, 0x1300
        li r1, WEIGHTS; li r6, CAUSAL; li r7, ACAUSAL; li r2, WMAX; li r4, C
        li r5, RESULT; li r8, A
        fxvlax 0, 0, 1
        fxvlax 1, 0, 6
        fxvlax 2, 0, 7
        fxvlax 31, 0, 2
        fxvlax 29, 0, 4
        fxvsubhm 1, 1, 2
        fxvcmph 1
        fxvsubhm 2, 31, 0
        fxvmulhm 3, 29, 0
        fxvmtac 0
        fxvmahm 0, 1, 2, 1
        fxvmahm 0, 1, 3, 2
        fxvstax 0, 0, 5
        fxvstax 1, 0, 8
        wait
        .data
        .org 0x1000
        .fill 64, 2, 0x0001
        .fill 32, 4, 0x00ff0000
        .fill 32, 4, 0x000000ff
        .fill 64, 2, 0x0100
        .fill 64, 2, 0x0000
    """)
    assert mem.read(0x1280, 128) == bytes.fromhex("fe020001") * 32
    assert mem.read(0x1300, 128) == bytes.fromhex("00ffff01") * 32


@pytest.mark.parametrize("c,val1,val2,acc,expected", [
    (0, 2, 3, 1, 0x07070707), (1, 2, 3, 1, 0xAAAA07AA), (2, 2, 3, 1, 0xAAAAAA07),
    (3, 2, 3, 1, 0x0707AAAA), (0, 0x81, 2, 1, 0x03030303), (3, 0, 0, 0, 0x0000AAAA),
])
def test_predicated_multiply_accumulate_of_the_group_instruction_tests(c, val1, val2, acc, expected):
    """The group's instruction test fxvmabm_c: mask bytes 00 00 01 ff, default
    0xaa, expected words per condition [NUX tests/instructions/src/fxvmabm_c.S]."""
    mem = FlatMemory()
    mem.write(0x1000, bytes.fromhex("000001ff") * 32)
    st, mem, _, _ = run_program(f"""
        li r1, {val1}; li r2, {val2}; li r3, 0x1000; li r4, 0x1100; li r6, {acc}; li r7, 0xaa
        fxvsplatb 1, r1
        fxvsplatb 2, r2
        fxvlax 3, 0, r3
        fxvsplatb 4, r6
        fxvsplatb 31, r7
        fxvmtacb 4
        fxvcmpb 3
        fxvmabm 31, 1, 2, {c}
        fxvstax 31, 0, r4
        wait
    """, mem=mem)
    assert mem.read(0x1100, 128) == expected.to_bytes(4, "big") * 32


def test_step_reports_illegal_instruction_with_address():
    mem, st = FlatMemory(), NuxState()
    mem.store(0x40, 4, 0x7C0001AC)
    st.pc = 0x40
    with pytest.raises(IllegalInstruction, match="at 0x00000040"):
        step(st, mem)
    assert st.halted and st.pc == 0x40
    st2 = NuxState()
    st2.pc = 0x4000
    with pytest.raises(MemoryFault):
        step(st2, mem)
    assert st2.halted
