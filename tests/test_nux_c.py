"""C programs for the PPU: Debian's stock PowerPC cross compiler, the
project's start-up file, linker script and FXV header, the ELF loader, and
(when the core is there) runs on the simulated PPU.

Tests that need ``powerpc-linux-gnu-gcc`` skip when it is missing, except
in CI (environment variable ``CI`` set), where a missing compiler fails:
``.ci/run`` installs it with apt-get.
"""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from bss2sim.digital.nux import compile as cc
from bss2sim.digital.nux.elf import load_elf, parse_elf
from bss2sim.digital.nux.program import Program

IN_CI = bool(os.environ.get("CI"))
MASK32 = 0xFFFF_FFFF

# The FXV extended opcodes as nux doc/guide/src/fxv.tex lists them (fxvcmph
# is the RTL's name of the guide's fxvcmphm) -- typed here independently of
# fxv.h so a typo in either shows.
GUIDE_XO = {
    "fxvmahm": 12, "fxvmatachm": 44, "fxvmulhm": 76, "fxvmultachm": 108, "fxvsubhm": 332,
    "fxvaddactachm": 364, "fxvaddtachm": 428, "fxvaddachm": 396, "fxvaddhm": 460,
    "fxvcmph": 300, "fxvmtach": 15, "fxvsplath": 268,
    "fxvmabm": 13, "fxvmatacbm": 45, "fxvmulbm": 77, "fxvmultacbm": 109, "fxvsubbm": 333,
    "fxvaddactacb": 365, "fxvaddtacb": 429, "fxvaddacbm": 397, "fxvaddbm": 461, "fxvcmpb": 301,
    "fxvmtacb": 14, "fxvsplatb": 269,
    "fxvmahfs": 28, "fxvmtachf": 31, "fxvmatachfs": 60, "fxvmulhfs": 92, "fxvmultachfs": 124,
    "fxvsubhfs": 348, "fxvaddactachf": 380, "fxvaddachfs": 412, "fxvaddhfs": 476,
    "fxvmabfs": 29, "fxvmtacbf": 30, "fxvmatacbfs": 61, "fxvmulbfs": 93, "fxvmultacbfs": 125,
    "fxvsubbfs": 349, "fxvaddactacbf": 381, "fxvaddacbfs": 413, "fxvaddbfs": 477,
    "fxvsel": 319, "fxvshh": 316, "fxvshb": 317, "fxvpckbu": 239, "fxvpckbl": 255,
    "fxvupckbl": 287, "fxvupckbr": 271,
    "fxvlax": 492, "fxvstax": 508, "fxvinx": 236, "fxvoutx": 252,
}

# What Nux's decoder knows [nux src/rtl/packages/pu_inst_pkg.sv] (without the
# deprecated NEVER/SYNAPSE extensions): primary opcodes, the X/XFX-form
# extended opcodes of primary opcode 31 (10 bits), its XO-form ones (9 bits,
# OE separate) and the XL-form ones of primary opcode 19.
NUX_PRIMARY = {3, 4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
               29, 31, *range(32, 48)}
NUX_X31 = {0, 4, 23, 24, 26, 28, 32, 55, 60, 62, 83, 87, 119, 122, 124, 146, 151, 154, 183, 215,
           247, 279, 284, 310, 311, 316, 343, 375, 407, 412, 438, 439, 444, 476, 536, 598, 792,
           824, 922, 954,
           19, 144, 339, 467}  # XFX: mfocrf/mfcr, mtocrf/mtcrf, mfspr, mtspr
NUX_XO31 = {8, 10, 11, 40, 75, 104, 136, 138, 200, 202, 232, 234, 235, 266, 459, 491}
NUX_XL19 = {0, 16, 33, 38, 50, 51, 129, 193, 225, 289, 257, 417, 449, 528}


def nux_decodes(word: int) -> bool:
    """Whether Nux's decoder has an instruction for this word (by opcode fields)."""
    op = word >> 26
    if op not in NUX_PRIMARY:
        return False
    if op == 31:
        return (word >> 1) & 0x3FF in NUX_X31 or (word >> 1) & 0x1FF in NUX_XO31
    if op == 19:
        return (word >> 1) & 0x3FF in NUX_XL19
    if op == 4:
        return (word >> 2) & 0x1FF in GUIDE_XO.values()
    return True


def need_compiler():
    """Skip without the cross compiler -- unless in CI, where it must be there."""
    if cc.compiler_available():
        return
    msg = f"powerpc-linux-gnu-gcc is not installed ({cc.APT_INSTALL})"
    if IN_CI:
        pytest.fail(f"CI is set but {msg}: .ci/run must install it", pytrace=False)
    pytest.skip(msg)


def need_core():
    """The simulated core, or skip while it is not there yet."""
    try:
        from bss2sim.digital.nux import core
    except ImportError as e:
        pytest.skip(f"bss2sim.digital.nux.core is not importable yet: {e}")
    if not hasattr(core, "Nux"):
        pytest.skip("bss2sim.digital.nux.core has no Nux yet")
    return core


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The two example programs compiled once: name -> ELF path."""
    need_compiler()
    out = tmp_path_factory.mktemp("nux_c")
    return {name: cc.compile_c(cc.EXAMPLES_DIR / f"{name}.c", out / f"{name}.elf")
            for name in ("scalar", "cadc_read")}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def expect_error(data, *fragments, source="prog.elf"):
    with pytest.raises(ValueError) as e:
        parse_elf(data, source=source)
    msg = str(e.value)
    assert source in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


# --- no compiler needed --------------------------------------------------------------

def test_header_opcode_table_matches_the_guide():
    table = cc.fxv_opcodes()
    assert sorted(table.values()) == sorted(GUIDE_XO)
    assert {v: k for k, v in table.items()} == GUIDE_XO


def test_toolchain_files_exist():
    for f in ("start.S", "nux.ld", "fxv.h", "runtime.c", "examples/scalar.c", "examples/cadc_read.c"):
        assert (cc.TOOLCHAIN_DIR / f).is_file(), f


def test_missing_compiler_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(cc.COMPILER_ENV, raising=False)
    assert not cc.compiler_available()
    src = write(tmp_path, "x.c", "int main(void) { return 0; }\n")
    with pytest.raises(cc.CompilerNotFoundError, match="apt-get install -y gcc-powerpc-linux-gnu"):
        cc.compile_c(src, tmp_path / "x.elf")
    monkeypatch.setenv(cc.COMPILER_ENV, "no-such-gcc")
    with pytest.raises(cc.CompilerNotFoundError, match="no-such-gcc"):
        cc.find_tool("gcc")


def test_not_an_elf_and_missing_file(tmp_path):
    expect_error(b"", "not an ELF file")
    expect_error(b"#!/bin/sh\necho\n", "not an ELF file")
    with pytest.raises(FileNotFoundError, match="nothing.elf"):
        load_elf(tmp_path / "nothing.elf")
    with pytest.raises(TypeError, match="bytes"):
        parse_elf("a string")


def test_host_executable_is_refused():
    exe = Path(sys.executable).resolve()
    head = exe.read_bytes()[:64]
    if head[:4] != b"\x7fELF":
        pytest.skip("the Python executable is not an ELF file on this system")
    with pytest.raises(ValueError) as e:
        load_elf(exe)
    assert str(exe) in str(e.value)
    assert any(s in str(e.value) for s in ("ELFCLASS64", "little-endian", "machine"))


# --- compiling -----------------------------------------------------------------------

def test_compile_command_flags():
    need_compiler()
    cmd = cc.compile_command(cc.EXAMPLES_DIR / "scalar.c", "out.elf", ("-DX=1",))
    for flag in ("-m32", "-mbig-endian", "-mcpu=powerpc", "-msoft-float", "-mno-altivec",
                 "-mno-isel", "-mstrict-align", "-msdata=none", "-ffreestanding", "-nostdlib",
                 "-fno-pie", "-no-pie", "-DX=1", str(cc.LINKER_SCRIPT), str(cc.START_FILE)):
        assert flag in cmd, flag
    with pytest.raises(TypeError, match="extra_flags"):
        cc.compile_command(cc.EXAMPLES_DIR / "scalar.c", "out.elf", "-O0")


def test_mailbox_size(tmp_path):
    need_compiler()
    src = write(tmp_path, "m.c", "int main(void) { return 5; }\n")
    p = load_elf(cc.compile_c(src, tmp_path / "m.elf", mailbox_size=1024))
    assert p.symbol("_mailbox") == 0x4000 - 1024 and p.symbol("_stack_top") == 0x4000 - 1024 - 16
    for bad in (0, 8, 100, 16 * 1024, "4096"):
        with pytest.raises(ValueError, match="mailbox_size"):
            cc.compile_c(src, tmp_path / "m.elf", mailbox_size=bad)


def test_compile_errors_carry_the_compiler_messages(tmp_path):
    need_compiler()
    bad = write(tmp_path, "bad.c", "int main(void) { return nonsense; }\n")
    with pytest.raises(cc.CompileError, match="nonsense") as e:
        cc.compile_c(bad, tmp_path / "bad.elf")
    assert "bad.c" in str(e.value) and e.value.command
    fl = write(tmp_path, "float.c", "volatile float a = 1.5f, b = 2.0f;\n"
                                    "int main(void) { return (int)(a * b); }\n")
    with pytest.raises(cc.CompileError, match="floating point"):
        cc.compile_c(fl, tmp_path / "float.elf")
    big = write(tmp_path, "big.c", "char huge[14000];\nint main(void) { huge[1] = 1; return huge[0]; }\n")
    with pytest.raises(cc.CompileError, match="16 KiB"):
        cc.compile_c(big, tmp_path / "big.elf")
    with pytest.raises(FileNotFoundError, match="source_path"):
        cc.compile_c(tmp_path / "missing.c", tmp_path / "m.elf")
    with pytest.raises(FileNotFoundError, match="out_elf"):
        cc.compile_c(bad, tmp_path / "no" / "dir" / "x.elf")


def test_compiler_warnings_are_passed_on(tmp_path):
    need_compiler()
    src = write(tmp_path, "w.c", "int main(void) { int unused; return 0; }\n")
    with pytest.warns(cc.CompilerWarning, match="unused"):
        cc.compile_c(src, tmp_path / "w.elf")


def test_vector_register_out_of_range_does_not_compile(tmp_path):
    need_compiler()
    src = write(tmp_path, "v.c", '#include "fxv.h"\nint main(void) { fxv_addbm(32, 0, 0); return 0; }\n')
    with pytest.raises(cc.CompileError):
        cc.compile_c(src, tmp_path / "v.elf")
    src = write(tmp_path, "c.c", '#include "fxv.h"\nint main(void) { fxv_addbm_c(1, 2, 3, 4); return 0; }\n')
    with pytest.raises(cc.CompileError):
        cc.compile_c(src, tmp_path / "c.elf")


def test_header_emits_the_encodings(tmp_path):
    """Every macro's word: constant fields as the guide defines them, and the
    GPRs GCC chose printed as plain numbers into the RA/RB fields."""
    need_compiler()
    src = write(tmp_path, "enc.c", r'''
#include "fxv.h"
__attribute__((noipa)) void gprs(uint8_t *p, uint32_t off)   /* p in r3, off in r4 */
{
    fxv_lax(7, p, off);
    fxv_stax(8, p, off);
    fxv_inx_c(9, p, off, FXV_LT);
    fxv_outx_c(10, p, off, FXV_EQ);
    fxv_splatb(11, p);
    fxv_splath(12, off);
}
__attribute__((noipa)) void vectors(void)
{
    fxv_addbm(1, 2, 3);
    fxv_addbm_c(4, 5, 6, FXV_GT);
    fxv_subbfs(31, 30, 29);
    fxv_mulbfs_c(0, 1, 2, FXV_EQ);
    fxv_sel(3, 4, 5, FXV_LT);
    fxv_cmpb(6);
    fxv_cmph(7);
    fxv_shb(8, 9, 3);
    fxv_matachm(10, 11);
    fxv_addachm(12, 13);
    fxv_mtacb(14);
    fxv_pckbu(15, 16, 17, 2);
}
uint8_t buf[128] FXV_ALIGNED;
int main(void) { gprs(buf, 0); vectors(); return 0; }
''')
    elf = cc.compile_c(src, tmp_path / "enc.elf")
    program = load_elf(elf)
    text = b"".join(s.data for s in program.segments if s.address == 0)

    def words(fn):
        start = program.symbol(fn)
        out = []
        for a in range(start, len(text) - 3, 4):
            w = struct.unpack_from(">I", text, a)[0]
            if w == 0x4E800020:  # blr: end of the function
                return out
            if w >> 26 == 4:
                out.append(w)
        raise AssertionError(f"no blr after {fn}")

    def enc(name, t, a, b, c=0):
        return (4 << 26) | (t << 21) | (a << 16) | (b << 11) | (GUIDE_XO[name] << 2) | c

    assert words("vectors") == [
        enc("fxvaddbm", 1, 2, 3), enc("fxvaddbm", 4, 5, 6, 1), enc("fxvsubbfs", 31, 30, 29),
        enc("fxvmulbfs", 0, 1, 2, 3), enc("fxvsel", 3, 4, 5, 2), enc("fxvcmpb", 0, 6, 0),
        enc("fxvcmph", 0, 7, 0), enc("fxvshb", 8, 9, 3), enc("fxvmatachm", 0, 10, 11),
        enc("fxvaddachm", 12, 13, 0), enc("fxvmtacb", 0, 14, 0), enc("fxvpckbu", 15, 16, 17, 2)]
    # At -O2 GCC keeps the arguments where the ABI put them: r3 and r4.
    assert words("gprs") == [
        enc("fxvlax", 7, 3, 4), enc("fxvstax", 8, 3, 4), enc("fxvinx", 9, 3, 4, 2),
        enc("fxvoutx", 10, 3, 4, 3), enc("fxvsplatb", 11, 3, 0), enc("fxvsplath", 12, 4, 0)]


def test_base_register_is_never_r0(tmp_path):
    """RA = 0 reads as the value 0 in fxvlax/fxvinx/fxvsplat*, so the
    header's "b" constraint must keep GCC from choosing r0 there."""
    need_compiler()
    src = write(tmp_path, "r0.c", r'''
#include "fxv.h"
uint8_t buf[4][128] FXV_ALIGNED;
int main(void)
{
    for (uint32_t i = 0; i < 4; i++) {
        fxv_splatb(1, i);
        fxv_stax(1, buf[i], 0);
        fxv_inx(2, FXV_IO_CADC_CAUSAL + i, i);
        fxv_splath(3, 0);
    }
    return 0;
}
''')
    elf = cc.compile_c(src, tmp_path / "r0.elf", optimize="-O3")
    fxv = [w for _, w, n in cc.instruction_words(elf) if n.startswith("fxv")]
    assert len(fxv) >= 4
    assert all((w >> 16) & 31 != 0 for w in fxv), [hex(w) for w in fxv]


# --- ELF files built by the compiler -------------------------------------------------

def test_load_compiled_program(built):
    p = load_elf(built["scalar"])
    assert isinstance(p, Program) and p.source == str(built["scalar"])
    assert p.entry == p.symbol("_start") == 0
    assert p.symbol("_mailbox") == 0x3000
    assert p.symbol("_stack_top") == p.symbol("_mailbox") - 16
    assert 0 < p.symbol("_bss_start") <= p.symbol("_bss_end") <= p.symbol("_end") < p.symbol("_stack_top")
    for name in ("main", "results", "table", "input_u"):
        assert name in p.symbols, name
    # static functions (local symbols) are there too
    assert "fib" in p.symbols and "classify" in p.symbols
    segs = sorted(p.segments, key=lambda s: s.address)
    assert segs[0].address == 0 and ".text" in segs[0].name
    assert all(a.end <= b.address for a, b in zip(segs, segs[1:]))
    assert all(s.end <= p.symbol("_mailbox") for s in segs)
    # first instruction: lis r1, _stack_top@ha
    assert struct.unpack_from(">I", segs[0].data, 0)[0] >> 16 == 0x3C20

    def read(address, n):
        for s in segs:
            if s.address <= address and address + n <= s.end:
                return s.data[address - s.address:address - s.address + n]
        raise AssertionError(f"0x{address:x} not loaded")

    # initialised data (big-endian words), and .bss as zero fill
    assert struct.unpack(">8i", read(p.symbol("table"), 32)) == (3, -1, 4, -1, 5, -9, 2, -6)
    assert read(p.symbol("results"), 64) == bytes(64)
    assert p.symbol("_bss_start") <= p.symbol("results") < p.symbol("_bss_end")


def _patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _phdrs(data: bytes):
    phoff, = struct.unpack_from(">I", data, 28)
    phnum, = struct.unpack_from(">H", data, 44)
    return [(phoff + 32 * i, struct.unpack_from(">8I", data, phoff + 32 * i)) for i in range(phnum)]


def test_damaged_elf_files(built):
    data = built["cadc_read"].read_bytes()
    parse_elf(data)  # the intact file loads
    expect_error(data[:30], "truncated")
    expect_error(data[:100], "truncated")  # program header table cut
    text_off = next(ph[1] for _, ph in _phdrs(data) if ph[0] == 1 and ph[4])
    expect_error(data[:text_off + 40], "truncated")  # the section headers are at the end
    no_sections = _patched(_patched(data, 32, ">I", 0), 48, ">H", 0)  # e_shoff = 0, e_shnum = 0
    assert parse_elf(no_sections).symbols == {}
    expect_error(no_sections[:text_off + 40], "truncated", "segment")
    expect_error(b"\x7fELG" + data[4:], "not an ELF file")
    expect_error(data[:5] + b"\x01" + data[6:], "little-endian", "ELFDATA2MSB")
    expect_error(data[:4] + b"\x02" + data[5:], "ELFCLASS64", "ELFCLASS32")
    expect_error(data[:4] + b"\x00" + data[5:], "class")
    expect_error(_patched(data, 18, ">H", 3), "machine", "EM_386", "EM_PPC")
    expect_error(_patched(data, 18, ">H", 21), "EM_PPC64")
    expect_error(_patched(data, 16, ">H", 3), "ET_DYN")
    expect_error(_patched(data, 24, ">I", 0x2000), "entry point")
    expect_error(_patched(data, 24, ">I", 2), "entry point")
    expect_error(_patched(data, 42, ">H", 20), "program header size")


def test_segments_outside_the_sram_or_in_the_mailbox(built):
    data = built["cadc_read"].read_bytes()
    phdrs = [(off, ph) for off, ph in _phdrs(data) if ph[0] == 1]
    (text_off, text), (bss_off, bss) = phdrs[0], phdrs[1]
    assert text[2] == 0 and bss[4] == 0 and bss[5] > 0  # .text at 0, a pure zero-fill .bss
    # file bytes beyond 16 KiB, or into the mailbox
    expect_error(_patched(data, text_off + 8, ">I", 0x4000), "outside", "16 KiB")
    expect_error(_patched(data, text_off + 8, ">I", 0x4000_0000), "outside")
    expect_error(_patched(data, text_off + 8, ">I", 0x3000 - 16), "mailbox")
    # overlapping segments
    expect_error(_patched(data, bss_off + 8, ">I", 0x100), "overlaps")
    # filesz > memsz
    expect_error(_patched(data, text_off + 20, ">I", text[4] - 4), "file size")
    # zero fill reaching into the mailbox is allowed but not loaded ...
    grown = _patched(data, bss_off + 20, ">I", 0x3000 - bss[2] + 0x200)
    p = parse_elf(grown)
    last = max(p.segments, key=lambda s: s.address)
    assert last.end == 0x3000 and not any(last.data)
    # ... and past the top of the SRAM it is an error
    expect_error(_patched(data, bss_off + 20, ">I", 0x4000 - bss[2] + 4), "outside")
    # a zero-fill segment entirely inside the mailbox loads nothing
    moved = _patched(data, bss_off + 8, ">I", 0x3800)
    p = parse_elf(_patched(moved, bss_off + 20, ">I", 0x100))
    assert [s.address for s in p.segments] == [0]


def test_relocatable_object_is_refused(tmp_path):
    need_compiler()
    src = write(tmp_path, "o.c", "int f(int x) { return x + 1; }\n")
    obj = tmp_path / "o.o"
    import subprocess
    subprocess.run([str(cc.find_tool("gcc")), *cc.CFLAGS, "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(ValueError, match="ET_REL"):
        load_elf(obj)


def test_only_instructions_nux_decodes(built):
    """The flags make GCC emit only instructions Nux's RTL decoder has."""
    for name, elf in built.items():
        words = cc.instruction_words(elf)
        assert words, name
        bad = [(hex(a), hex(w), n) for a, w, n in words if not nux_decodes(w)]
        assert not bad, f"{name}: instructions Nux does not decode: {bad}"
    names = cc.mnemonics(built["scalar"]) | cc.mnemonics(built["cadc_read"])
    # what the C programs exercise
    for m in ("divw", "divwu", "mullw", "mulhwu", "bctr", "wait", "sync", "mfspr",
              "fxvinx", "fxvoutx", "fxvsubbfs", "fxvstax", "fxvcmpb", "fxvsel", "fxvsplatb"):
        assert m in names, m
    assert not {"isel", "mfocrf", "mtocrf", "lswi", "stswi", "lmw", "stmw"} & names


# --- running on the simulated PPU ----------------------------------------------------

def _s32(v):
    v &= MASK32
    return v - (1 << 32) if v & 0x8000_0000 else v


def _c_div(a, b):
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def scalar_expected():
    """Each case of examples/scalar.c, computed in Python (uint32 words)."""
    r = [0] * 16
    r[0] = sum(i * i for i in range(32))
    fib = [0, 1]
    while len(fib) < 16:
        fib.append(fib[-1] + fib[-2])
    r[1] = fib[15]
    c = 0
    for k in range(9):
        v = 1000 + k
        w = [v + 11, v * v, v ^ 0x5A5A, v << 3, v - 101, v // 3, ~v, v & 0xF0F, -1][k]
        c = _s32(c * 3 + w)
    r[2] = c
    u, s = 0xFFFF_FFF0, -1000003
    r[3] = u // 7
    r[4] = _c_div(s, 17)
    r[5] = s - 17 * _c_div(s, 17)
    p = (u ^ 0x6543210F) * 0x12345679
    r[6] = (p >> 32) ^ (p & MASK32)
    big = 0x0123456789ABCDEF
    r[7] = (big // 1000003 + (big >> 40)) & MASK32
    t = 0
    for v in (3, -1, 4, -1, 5, -9, 2, -6):
        t = _s32(t * 5 + v)
    r[8] = t
    q = 1
    for pr in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29):
        q = (q * pr + 1) & MASK32
    r[9] = q
    r[10] = 42 + (-5) * 100
    bx, btag, by = -1234, ((-7 - 100 + 128) % 256) - 128, -56789 * 3
    r[11] = bx * 7 + btag * 11 + by
    x = 0xDEADBEE0
    rot = ((x << 13) | (x >> 19)) & MASK32
    r[12] = rot ^ (bin(x).count("1") << 24) ^ ((_s32(x) >> 7) & MASK32)
    acc = 0
    for b in (-128, -3, 0, 5, 100, 127):
        acc = _s32(acc * 7 + max(-128, min(127, 2 * b)))
    r[13] = acc
    n, steps = 27, 0
    while n != 1:
        n = 3 * n + 1 if n & 1 else n // 2
        steps += 1
    r[14] = steps
    r[15] = sum(i for i in range(20) if (i * 2654435761) & MASK32 > 0x8000_0000)
    return [v & MASK32 for v in r]


def _mailbox_word(ppu, program):
    return struct.unpack(">I", ppu.read_memory(program.symbol("_mailbox"), 4))[0]


def test_scalar_program_runs(built):
    core = need_core()
    program = load_elf(built["scalar"])
    ppu = core.Nux()
    ppu.write_memory(program.symbol("_mailbox"), b"\xaa" * 4)
    ppu.load(program)
    result = ppu.run(max_cycles=2_000_000)
    assert result.stop == "wait"
    got = list(struct.unpack(">16I", ppu.read_memory(program.symbol("results"), 64)))
    want = scalar_expected()
    bad = {i: (hex(g), hex(w)) for i, (g, w) in enumerate(zip(got, want)) if g != w}
    assert not bad, f"cases of scalar.c that differ (got, want): {bad}"
    assert _mailbox_word(ppu, program) == sum(want) & MASK32
    assert ppu.state.gpr[1] <= program.symbol("_stack_top")


@pytest.mark.parametrize("optimize", ["-O0", "-Os", "-O3"])
def test_scalar_program_runs_at_other_levels(tmp_path, optimize):
    need_compiler()
    core = need_core()
    elf = cc.compile_c(cc.EXAMPLES_DIR / "scalar.c", tmp_path / "s.elf", optimize=optimize)
    bad = [(hex(a), hex(w), n) for a, w, n in cc.instruction_words(elf) if not nux_decodes(w)]
    assert not bad, f"{optimize}: instructions Nux does not decode: {bad}"
    program = load_elf(elf)
    ppu = core.Nux()
    ppu.load(program)
    assert ppu.run(max_cycles=2_000_000).stop == "wait"
    got = list(struct.unpack(">16I", ppu.read_memory(program.symbol("results"), 64)))
    assert got == scalar_expected()


def test_startup_code_on_the_core(tmp_path):
    """start.S: stack below the mailbox, .bss cleared at run time (not only
    by the loader), constructors called, main's value in mailbox word 0 and
    the rest of the mailbox untouched."""
    need_compiler()
    core = need_core()
    src = write(tmp_path, "start.c", r'''
#include <stdint.h>
uint32_t zeros[16];
uint32_t constructed;
volatile uint32_t stack_seen;
__attribute__((constructor)) static void init(void) { constructed = 0xc0ffee; }
__attribute__((noipa)) static uint32_t depth(uint32_t n)
{
    volatile uint32_t frame[4] = {n, n, n, n};
    return n ? depth(n - 1) + frame[2] : 0;
}
int main(void)
{
    uint32_t sp;
    __asm__ volatile("mr %0, 1" : "=r"(sp));
    stack_seen = sp;
    uint32_t s = 0;
    for (int i = 0; i < 16; i++)
        s |= zeros[i];
    return (int)(s + (constructed == 0xc0ffee ? 7 : 0) + depth(20));
}
''')
    program = load_elf(cc.compile_c(src, tmp_path / "start.elf"))
    ppu = core.Nux()
    ppu.load(program)
    ppu.write_memory(program.symbol("zeros"), b"\xff" * 64)  # garbage after loading
    mailbox = program.symbol("_mailbox")
    ppu.write_memory(mailbox, bytes(range(256)) * 16)
    assert ppu.run(max_cycles=1_000_000).stop == "wait"
    assert _mailbox_word(ppu, program) == 7 + sum(range(21))
    assert ppu.read_memory(mailbox + 4, 4096 - 4) == (bytes(range(256)) * 16)[4:]
    sp = struct.unpack(">I", ppu.read_memory(program.symbol("stack_seen"), 4))[0]
    assert sp % 16 == 0 and program.symbol("_end") < sp < program.symbol("_stack_top")


def test_cadc_program_runs(built):
    """CADC read, baseline subtraction and ReLU in C on the simulated PPU,
    checked against the same steps in numpy on the raw codes it read."""
    core = need_core()
    from bss2sim.circuits import Chip
    program = load_elf(built["cadc_read"])
    ppu = core.Nux(Chip(0), half=0)
    ppu.load(program)
    result = ppu.run(max_cycles=5_000_000)
    assert result.stop == "wait"

    def arr(name, dtype):
        return np.frombuffer(ppu.read_memory(program.symbol(name), 256), dtype).reshape(2, 128)

    raw_b, raw_r = arr("raw_baseline", np.uint8), arr("raw_read", np.uint8)
    base = raw_b.astype(np.int64) - 128  # code - 128: int8 without wrap-around
    read = raw_r.astype(np.int64) - 128
    diff = np.clip(read - base, -128, 127)
    act = np.where(diff > 0, diff, 0)
    np.testing.assert_array_equal(arr("result", np.int8), diff)
    np.testing.assert_array_equal(arr("activation", np.int8), act)
    checksum = int(diff.sum() + 1000 * np.count_nonzero(act > 0))
    assert _s32(_mailbox_word(ppu, program)) == checksum
    assert raw_b.any() and raw_r.any(), "the CADC read only zeros"
    # The C code measures its read as the group's speed test does (mfspr, two
    # fxvinx, sync, mfspr; minus one): 410 +- 41 cycles on the chip [libnux
    # test_speed_memory.cpp], plus four scalar instructions for the addresses.
    cycles = struct.unpack(">I", ppu.read_memory(program.symbol("cycles_read"), 4))[0] - 1
    assert 410 - 41 <= cycles <= 410 + 41 + 8, f"CADC row read took {cycles} PPU cycles"
