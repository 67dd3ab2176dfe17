"""The Nux assembler and listing disassembler."""
from __future__ import annotations

import random

import pytest

from bss2sim.digital.nux import isa
from bss2sim.digital.nux.asm import AssemblyError, assemble, disassemble_program
from bss2sim.digital.nux.isa import INSTRUCTIONS, encode
from bss2sim.digital.nux.program import Program


def words(program, segment=0):
    data = program.segments[segment].data
    return [int.from_bytes(data[i:i + 4], "big") for i in range(0, len(data), 4)]


def one(text, origin=0):
    (w,) = words(assemble(text, origin=origin))
    return w


def valid_operands(ins, rng):
    for _ in range(200):
        values = {}
        for op in ins.operands:
            lo, hi, step = op.value_range()
            values[op.name] = rng.randrange(lo // step, hi // step + 1) * step
        if ins.family in ("mfspr", "mtspr"):
            values["spr"] = rng.choice(sorted(isa.READ_SPRS if ins.family == "mfspr" else isa.WRITE_SPRS))
        if ins.mnemonic in ("mfocrf", "mtocrf"):
            values["fxm"] = 1 << rng.randrange(8)
        if ins.family in ("bc", "bcreg") and rng.random() < 0.5:
            values["bo"] = rng.choice([4, 6, 7, 12, 14, 15, 16, 18, 20, 24, 25, 26, 27])
            if rng.random() < 0.5:
                values["bi"] = 0
        try:
            return encode(ins.mnemonic, **values)
        except ValueError:
            continue
    raise AssertionError(ins.mnemonic)


def test_round_trip_every_instruction():
    """assemble(disassemble(w)) == w for every table entry, at random addresses."""
    rng = random.Random(3)
    for ins in INSTRUCTIONS:
        for _ in range(12):
            word = valid_operands(ins, rng)
            address = rng.randrange(0, 1 << 20) * 4
            text = isa.disassemble(word, address)
            assert one(text, origin=address) == word, (ins.mnemonic, text)
            # the raw form (no simplified mnemonic) assembles too
            raw_ops = isa.format_operands(ins, isa.decode(word).fields, address)
            raw = f"{ins.mnemonic} {','.join(raw_ops)}" if raw_ops else ins.mnemonic
            assert one(raw, origin=address) == word, raw


@pytest.mark.parametrize("text,expected", [
    ("li r3, -1", encode("addi", rt=3, ra=0, si=-1)),
    ("lis 3, 0x8000", encode("addis", rt=3, ra=0, si=-0x8000)),
    ("la r4, 8(r1)", encode("addi", rt=4, ra=1, si=8)),
    ("mr r3, r4", encode("or", ra=3, rs=4, rb=4)),
    ("mr. r3, r4", encode("or.", ra=3, rs=4, rb=4)),
    ("not r3, r4", encode("nor", ra=3, rs=4, rb=4)),
    ("nop", 0x60000000),
    ("subi r3, r4, 5", encode("addi", rt=3, ra=4, si=-5)),
    ("subis r3, r4, 1", encode("addis", rt=3, ra=4, si=-1)),
    ("subic. r3, r3, 1", encode("addic.", rt=3, ra=3, si=-1)),
    ("sub r3, r4, r5", encode("subf", rt=3, ra=5, rb=4)),
    ("subo. r3, r4, r5", encode("subfo.", rt=3, ra=5, rb=4)),
    ("subc r3, r4, r5", encode("subfc", rt=3, ra=5, rb=4)),
    ("slwi r3, r4, 5", encode("rlwinm", ra=3, rs=4, sh=5, mb=0, me=26)),
    ("srwi r3, r4, 5", encode("rlwinm", ra=3, rs=4, sh=27, mb=5, me=31)),
    ("srwi r3, r4, 0", encode("rlwinm", ra=3, rs=4, sh=0, mb=0, me=31)),
    ("rotlwi r3, r4, 7", encode("rlwinm", ra=3, rs=4, sh=7, mb=0, me=31)),
    ("rotrwi r3, r4, 7", encode("rlwinm", ra=3, rs=4, sh=25, mb=0, me=31)),
    ("rotlw r3, r4, r5", encode("rlwnm", ra=3, rs=4, rb=5, mb=0, me=31)),
    ("clrlwi r3, r4, 16", encode("rlwinm", ra=3, rs=4, sh=0, mb=16, me=31)),
    ("clrrwi. r3, r4, 2", encode("rlwinm.", ra=3, rs=4, sh=0, mb=0, me=29)),
    ("extlwi r3, r4, 8, 4", encode("rlwinm", ra=3, rs=4, sh=4, mb=0, me=7)),
    ("extrwi r3, r4, 8, 4", encode("rlwinm", ra=3, rs=4, sh=12, mb=24, me=31)),
    ("inslwi r3, r4, 8, 4", encode("rlwimi", ra=3, rs=4, sh=28, mb=4, me=11)),
    ("insrwi r3, r4, 8, 4", encode("rlwimi", ra=3, rs=4, sh=20, mb=4, me=11)),
    ("cmpw r3, r4", encode("cmp", bf=0, l=0, ra=3, rb=4)),
    ("cmpw cr7, r3, r4", encode("cmp", bf=7, l=0, ra=3, rb=4)),
    ("cmpwi cr1, r3, -5", encode("cmpi", bf=1, l=0, ra=3, si=-5)),
    ("cmplw 2, 3, 4", encode("cmpl", bf=2, l=0, ra=3, rb=4)),
    ("cmplwi r3, 0xffff", encode("cmpli", bf=0, l=0, ra=3, ui=0xFFFF)),
    ("mtlr r0", 0x7C0803A6), ("mflr r0", 0x7C0802A6), ("mtctr r4", 0x7C8903A6),
    ("mfctr r4", encode("mfspr", rt=4, spr=9)), ("mtxer r5", encode("mtspr", spr=1, rs=5)),
    ("mfxer r5", encode("mfspr", rt=5, spr=1)), ("mftb r6", encode("mfspr", rt=6, spr=268)),
    ("mftbu r6", encode("mfspr", rt=6, spr=269)), ("mtcr r7", encode("mtcrf", fxm=255, rs=7)),
    ("crset 6", encode("creqv", bt=6, ba=6, bb=6)), ("crclr 4*cr1+eq", encode("crxor", bt=6, ba=6, bb=6)),
    ("crmove 1, 2", encode("cror", bt=1, ba=2, bb=2)), ("crnot 1, 2", encode("crnor", bt=1, ba=2, bb=2)),
    ("blr", 0x4E800020), ("blrl", 0x4E800021), ("bctr", 0x4E800420), ("bctrl", 0x4E800421),
    ("beqlr", encode("bclr", bo=12, bi=2)), ("bnelr cr1", encode("bclr", bo=4, bi=6)),
    ("bltctr cr2", encode("bcctr", bo=12, bi=8)), ("bgelrl", encode("bclrl", bo=4, bi=0)),
    ("bdnzlr", encode("bclr", bo=16, bi=0)), ("bdzlr", encode("bclr", bo=18, bi=0)),
    ("lwsync", encode("sync", l=1)), ("msync", encode("sync")), ("sync", 0x7C0004AC),
    ("wait", 0x7C00007C), ("mtocrf 0x80, r3", encode("mtocrf", fxm=0x80, rs=3)),
    ("fxvaddactacb v3", encode("fxvaddactacbm", vra=3)),
    ("fxvaddtachm 1, 2, 3", encode("fxvaddtach", vra=1, vrb=2, c=3)),
    ("fxvcmphm 4", encode("fxvcmph", vra=4)),
    ("fxvshb v1, v2, -7", encode("fxvshb", vrt=1, vra=2, sh=-7)),
    ("fxvinx v1, 0, r3, 1", encode("fxvinx", vrt=1, ra=0, rb=3, c=1)),
    ("fxvoutx %v1, %r4, %r3", encode("fxvoutx", vrt=1, ra=4, rb=3)),
])
def test_simplified_and_alternative_mnemonics(text, expected):
    assert one(text) == expected


@pytest.mark.parametrize("text,origin,bo,bi,target", [
    ("beq 0x120", 0x100, 12, 2, 0x120), ("bne cr3, .+8", 0x100, 4, 14, 0x108),
    ("blt- cr1, 0x80", 0x100, 14, 4, 0x80), ("bgt+ 0x200", 0x100, 15, 1, 0x200),
    ("ble 0x100", 0x100, 4, 1, 0x100), ("bge cr7, 0x0", 0x100, 4, 28, 0),
    ("bso 0x104", 0x100, 12, 3, 0x104), ("bns 0x104", 0x100, 4, 3, 0x104),
    ("bun 0x104", 0x100, 12, 3, 0x104), ("bnu 0x104", 0x100, 4, 3, 0x104),
    ("bnl 0x104", 0x100, 4, 0, 0x104), ("bng 0x104", 0x100, 4, 1, 0x104),
    ("bdnz 0xf0", 0x100, 16, 0, 0xF0), ("bdz 0xf0", 0x100, 18, 0, 0xF0),
    ("bdnz- 0xf0", 0x100, 24, 0, 0xF0), ("bdz+ 0xf0", 0x100, 27, 0, 0xF0),
    ("bdnzt 4*cr1+gt, 0xf0", 0x100, 8, 5, 0xF0), ("bdnzf eq, 0xf0", 0x100, 0, 2, 0xF0),
    ("bdzt so, 0xf0", 0x100, 10, 3, 0xF0), ("bdzf 31, 0xf0", 0x100, 2, 31, 0xF0),
    ("bt 6, 0xf0", 0x100, 12, 6, 0xF0), ("bf 6, 0xf0", 0x100, 4, 6, 0xF0),
])
def test_conditional_branch_mnemonics(text, origin, bo, bi, target):
    word = one(text, origin=origin)
    assert word == encode("bc", bo=bo, bi=bi, bd=target - origin)


def test_branch_link_and_absolute_variants():
    assert one("beql 0x40", 0x100) == encode("bcl", bo=12, bi=2, bd=0x40 - 0x100)
    assert one("beqa 0x40", 0x100) == encode("bca", bo=12, bi=2, bd=0x40)
    assert one("bdnzla 0x40") == encode("bcla", bo=16, bi=0, bd=0x40)
    assert one("bla 0x40") == encode("bla", li=0x40)
    assert one("b 0x0", 0x2000) == encode("b", li=-0x2000)
    assert one("ba -4", 0) == encode("ba", li=-4)


def test_directives_sections_and_layout():
    p = assemble("""
        # code first
        .text
    _start:
        li r3, 1            ; li r4, 2   // two statements
        .data
        .byte 1, 2, 0xff, -1
        .align 2
    words:
        .long 0x12345678, words, -1
        .short 0xbeef, -2
        .half 7
        .word 9
        .bss
    buf: .space 8
        .section .rodata
    msg: .asciz "a\\tb\\n"
        .text
        blr
    """, origin=0x100)
    names = [s.name for s in p.segments]
    assert names == [".text", ".data", ".bss", ".rodata"]
    text, data, bss, rodata = p.segments
    assert text.address == 0x100 and words(p, 0) == [encode("addi", rt=3, ra=0, si=1),
                                                    encode("addi", rt=4, ra=0, si=2), 0x4E800020]
    assert data.address == 0x10C
    assert data.data[:4] == bytes([1, 2, 0xFF, 0xFF])
    assert p.symbols["words"] == 0x110
    assert data.data[4:16] == bytes.fromhex("12345678") + (0x110).to_bytes(4, "big") + b"\xff" * 4
    assert data.data[16:26] == bytes.fromhex("beef fffe 0007 00000009")
    assert bss.address == 0x10C + 28 and bss.data == bytes(8) and p.symbols["buf"] == bss.address
    assert rodata.address == bss.address + 8 and rodata.data == b"a\tb\n\0"
    assert p.entry == 0x100 and p.symbol("_start") == 0x100 and isinstance(p, Program)


def test_alignment_org_fill_and_space():
    p = assemble("""
        nop
        .align 4            # 16 bytes, padded with nops in code
        blr
        .balign 8, 0xaa
        .data
        .org 0x2000
        .byte 1
        .align 3, 0x55
        .byte 2
        .p2align 2
        .fill 3, 2, 0x1234
        .space 3, 7
        .skip 1
        .zero 2
        .org 0x2020
        .long end
    end:
    """)
    text, data = p.segments
    assert words(p, 0)[:5] == [0x60000000, 0x60000000, 0x60000000, 0x60000000, 0x4E800020]
    assert text.data[20:24] == b"\xaa" * 4
    assert data.address == 0x2000
    assert data.data[:12] == bytes([1]) + b"\x55" * 7 + bytes([2, 0, 0, 0])
    assert data.data[12:18] == bytes.fromhex("123412341234")
    assert data.data[18:24] == bytes([7, 7, 7, 0, 0, 0])
    assert data.data[24:32] == bytes(8)
    assert data.data[32:36] == (0x2024).to_bytes(4, "big")
    assert p.symbols["end"] == 0x2024


def test_expressions_symbols_and_relocation_operators():
    p = assemble("""
        .set BASE, 0x12348000
        .equ N, (3 + 4) * 2 - 1
        K = N << 2 | 1
        lis r3, BASE@ha
        addi r3, r3, BASE@l          # low half as a signed field
        ori r4, r4, lo(BASE)         # and as an unsigned one
        lis r5, hi(BASE)
        addis r6, r6, ha(BASE)
        li r7, N % 4 + (N / 4)       # 13 % 4 + 13 / 4
        li r8, ~0 & 0xff ^ 0x0f
        li r9, -(-K)
        li r10, 010 + 0b11 + 'A'     # octal, binary, character
        li r11, end - start
    start: nop
    end:
    """)
    w = words(p)
    assert w[0] == encode("addis", rt=3, ra=0, si=0x1235)       # 0x12348000 + 0x8000 carries
    assert w[1] == encode("addi", rt=3, ra=3, si=-0x8000)
    assert w[2] == encode("ori", ra=4, rs=4, ui=0x8000)
    assert w[3] == encode("addis", rt=5, ra=0, si=0x1234)
    assert w[4] == encode("addis", rt=6, ra=6, si=0x1235)
    assert w[5] == encode("addi", rt=7, ra=0, si=13 % 4 + 13 // 4)
    assert w[6] == encode("addi", rt=8, ra=0, si=0xF0)
    assert w[7] == encode("addi", rt=9, ra=0, si=(13 << 2) | 1)
    assert w[8] == encode("addi", rt=10, ra=0, si=8 + 3 + 65)
    assert w[9] == encode("addi", rt=11, ra=0, si=4)
    assert p.symbols["N"] == 13 and p.symbols["K"] == 53 and p.symbols["BASE"] == 0x12348000


def test_local_labels_comments_and_register_syntax():
    p = assemble("""
    /* a block comment
       over two lines */
    1:  addi %r3, 3, 1      # forward and backward local labels
        bne 1f
        b 1b
    1:  lwz r4, -4(sp)
        fxvlax v2, 0, %r5   /* inline */ ; fxvlax 2, r0, 5
    """)
    w = words(p)
    assert w[0] == encode("addi", rt=3, ra=3, si=1)
    assert w[1] == encode("bc", bo=4, bi=2, bd=8)
    assert w[2] == encode("b", li=-8)
    assert w[3] == encode("lwz", rt=4, d=-4, ra=1)
    assert w[4] == w[5] == encode("fxvlax", vrt=2, ra=0, rb=5)


def test_entry_is_start_symbol():
    p = assemble("nop\n_start: wait\n", origin=0x40)
    assert p.entry == 0x44 and p.source == "<assembly>"
    assert assemble("nop", source="x.s").source == "x.s"


@pytest.mark.parametrize("text,line,match", [
    ("nop\n  frob r3, r4", 2, r"unknown mnemonic 'frob'"),
    ("addi r3, r4", 1, r"addi takes 3 operands \(addi rt,ra,si\), got 2"),
    ("addi r3, v4, 1", 1, r"expected a general-purpose register, got 'v4'"),
    ("fxvaddbm r1, v2, v3", 1, r"expected a vector register, got 'r1'"),
    ("addi r3, r4, 0x8000", 1, r"operand si = 32768 is out of range -32768..32767"),
    ("ori r3, r4, -1", 1, r"operand ui = -1 is out of range 0..65535"),
    ("li r32, 1", 1, r"general-purpose register 'r32' out of range 0..31"),
    ("li r3, missing", 1, r"undefined symbol 'missing'"),
    ("b far\n.org 0x4000000\nfar: nop", 1, r"branch target 0x4000000 out of range"),
    ("beq 0x10000", 1, r"branch target 0x10000 out of range"),
    ("b 0x102", 1, r"branch target 0x102 is misaligned"),
    (".byte 1\nnop", 2, r"misaligned instruction"),
    (".long 1 << 32", 1, r"value 4294967296 does not fit 32 bits"),
    (".frob 1", 1, r"unknown directive .frob"),
    ("x: nop\nx: nop", 2, r"symbol 'x' is already defined \(line 1\)"),
    (".space later\nlater:", 1, r"must be a constant known at this point"),
    (".align 3\n.data\nnop\n.org 4", 4, r"\.org inside a section whose address is not known"),
    (".org 0x10\nnop\n.org 0", 3, r"moves backwards"),
    (".bss\nnop", 2, r"instruction 'nop' in .bss"),
    ("lwzu r3, 0(r3)", 1, r"RA=RT is invalid"),
    ("bdnzctr", 1, r"CTR decrement"),
    ("/* open", 1, r"unterminated /\* comment"),
    ("li r3, 1 +", 1, r"expected"),
    (".set a, b\n.set b, a\nli r3, a", 3, r"defined in terms of itself"),
    ("nop\n.data\n.org 0\n.long 1", None, r"overlap"),
])
def test_errors_name_line_and_problem(text, line, match):
    with pytest.raises(AssemblyError, match=match) as e:
        assemble(text)
    assert e.value.line == line
    if line is not None:
        assert f"line {line}" in str(e.value)
        assert e.value.text.strip() in str(e.value)
    assert isinstance(e.value, ValueError)


def test_disassemble_program_listing():
    p = assemble("""
        li r3, 5
        bne cr1, done
        .long 0
    done: wait
        .data
        .byte 7
    """, origin=0x200)
    listing = disassemble_program(p)
    lines = listing.splitlines()
    assert lines[0] == "# .text at 0x00000200 (16 bytes)"
    assert lines[1] == "00000200:  38600005  li r3,5"
    assert lines[2] == "00000204:  40860008  bne cr1,0x20c"
    assert lines[3] == "00000208:  00000000  .long 0x00000000"
    assert lines[4] == "0000020c:  7c00007c  wait"
    assert lines[5].startswith("# .data at 0x00000210")
    assert lines[6] == "00000210:  07        .byte 0x07"
    raw = disassemble_program([0x60000000, 0x4E800020], origin=0x10)
    assert raw.splitlines() == ["00000010:  60000000  nop", "00000014:  4e800020  blr"]
    assert disassemble_program(bytes.fromhex("60000000")) == "00000000:  60000000  nop"


def test_listing_reassembles():
    """A disassembled program assembles back to the same bytes."""
    src = """
        lis r1, 0x3ff0@ha
        addi r1, r1, 0x3ff0@l
        stwu r1, -32(r1)
        mflr r0
        stmw r29, 8(r1)
    loop:
        fxvlax v1, 0, r3
        fxvmahfs v2, v1, v1, 3
        fxvcmph v2
        fxvsel v3, v1, v2, 2
        fxvstax v3, r3, r4
        cmplwi cr6, r3, 12
        bdnzf 4*cr6+eq, loop
        rlwinm. r5, r6, 3, 28, 4
        bgelr+ cr2
        bctrl
        wait
    """
    p = assemble(src, origin=0x400)
    texts = [line.split("  ", 2)[2] for line in disassemble_program(p).splitlines()[1:]]
    assert words(assemble("\n".join(texts), origin=0x400)) == words(p)
