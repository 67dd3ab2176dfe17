"""Load PPU programs from ELF executables (32-bit big-endian PowerPC), with
the standard library only.

:func:`load_elf` reads what :func:`~.compile.compile_c` (or any PowerPC
linker with a matching script) writes and returns a :class:`~.program.Program`:
one :class:`~.program.Segment` per ``PT_LOAD`` program header (file bytes
plus the zero fill up to its memory size, so ``.bss`` arrives cleared), the
entry point, and the symbols of ``.symtab``::

    program = load_elf("prog.elf")
    ppu.load(program)
    program.symbol("result")         # address of a global array

Checks (each failure is a :class:`ValueError` naming the file): ELF magic,
class ELFCLASS32, data ELFDATA2MSB (big-endian), machine EM_PPC (20), type
ET_EXEC; header, program and section tables and segment bytes inside the
file; every loaded byte inside the PPU's 16 KiB internal SRAM
(0x0000..0x3fff); no two segments overlapping; no file-backed byte in the
mailbox at the top of the SRAM (zero fill reaching into the mailbox is cut
off at its start rather than loaded, so loading never clears the mailbox);
the entry point inside a loaded executable segment.

ELF layout: the System V gABI (ELF32 header 52 bytes, program header 32,
section header 40, symbol 16).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError

from .program import Program, Segment

SRAM_BYTES = K.PPU_MEMORY_BYTES
"""Every segment must fit the PPU's internal SRAM."""
MAILBOX_BYTES = K.PPU_MAILBOX_BYTES
"""Mailbox size when the ELF file does not define ``_mailbox``."""

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
EM_PPC, EM_PPC64 = 20, 21
PT_LOAD = 1
PF_X = 1
SHT_SYMTAB, SHT_NOBITS = 2, 8
SHF_ALLOC = 2
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFFF
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2

_EHDR = struct.Struct(">16sHHIIIIIHHHHHH")  # 52 bytes
_PHDR = struct.Struct(">IIIIIIII")  # 32 bytes
_SHDR = struct.Struct(">IIIIIIIIII")  # 40 bytes
_SYM = struct.Struct(">IIIBBH")  # 16 bytes

_CLASS_NAMES = {ELFCLASS32: "ELFCLASS32", ELFCLASS64: "ELFCLASS64 (64-bit)"}
_DATA_NAMES = {ELFDATA2LSB: "ELFDATA2LSB (little-endian)", ELFDATA2MSB: "ELFDATA2MSB"}
_TYPE_NAMES = {0: "ET_NONE", ET_REL: "ET_REL (a relocatable object, not linked: link it with "
               "the toolchain's nux.ld)", ET_EXEC: "ET_EXEC", ET_DYN: "ET_DYN (shared object or PIE: "
               "link with -static -no-pie)", 4: "ET_CORE (a core dump)"}
_MACHINE_NAMES = {EM_PPC: "EM_PPC", EM_PPC64: "EM_PPC64 (64-bit PowerPC)", 3: "EM_386 (x86)",
                  62: "EM_X86_64", 40: "EM_ARM", 183: "EM_AARCH64", 243: "EM_RISCV"}


class _Reader:
    """Bounds-checked big-endian reads from the file's bytes."""

    def __init__(self, data: bytes, source: str):
        self.data = data
        self.source = source

    def fail(self, what: str):
        raise ValueError(f"{self.source}: {what}")

    def unpack(self, fmt: struct.Struct, offset: int, what: str):
        if offset < 0 or offset + fmt.size > len(self.data):
            self.fail(f"truncated: {what} at byte {offset} needs {fmt.size} bytes, "
                      f"the file has {len(self.data)}")
        return fmt.unpack_from(self.data, offset)

    def bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            self.fail(f"truncated: {what} (bytes {offset}..{offset + size}) lies beyond the end "
                      f"of the file ({len(self.data)} bytes)")
        return self.data[offset:offset + size]


def load_elf(path, *, mailbox: int | None = None) -> Program:
    """Read an ELF executable for the PPU.

    Parameters
    ----------
    path : str or path
        The ELF file.
    mailbox : int or None
        Start address of the mailbox (bytes; it reaches to the top of the
        16 KiB SRAM). None: the file's ``_mailbox`` symbol, else
        0x3000 (16 KiB - 4 KiB).

    Returns a :class:`~.program.Program` (``source`` = the path).
    Raises :class:`FileNotFoundError` if the file does not exist and
    :class:`ValueError` naming the file and what is wrong with it otherwise.
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise WrongTypeError(f"path={path!r} is not allowed: got a {type(path).__name__}, "
                             "must be a path (str or pathlib.Path)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ELF file {path} does not exist or is not a file")
    return parse_elf(path.read_bytes(), source=str(path), mailbox=mailbox)


def parse_elf(data: bytes, source: str = "<bytes>", *, mailbox: int | None = None) -> Program:
    """:func:`load_elf` on the bytes of an ELF file (``source`` names it in messages)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected the bytes of an ELF file, got {type(data).__name__}")
    r = _Reader(bytes(data), source)
    if len(r.data) < 4 or r.data[:4] != b"\x7fELF":
        r.fail(f"not an ELF file (first bytes {r.data[:4]!r}, expected b'\\x7fELF')")
    if len(r.data) < 6:
        r.fail(f"truncated: {len(r.data)} bytes, an ELF header has 52")
    ei_class, ei_data = r.data[4], r.data[5]
    if ei_class != ELFCLASS32:
        r.fail(f"class {_CLASS_NAMES.get(ei_class, ei_class)}, expected ELFCLASS32 "
               f"(the PPU is a 32-bit core)")
    if ei_data != ELFDATA2MSB:
        r.fail(f"data encoding {_DATA_NAMES.get(ei_data, ei_data)}, expected ELFDATA2MSB "
               f"(the PPU is big-endian)")
    (ident, e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, _e_flags, e_ehsize,
     e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = r.unpack(_EHDR, 0, "the ELF header")
    if ident[6] != 1 or e_version != 1:
        r.fail(f"ELF version {ident[6]}/{e_version}, expected 1 (EV_CURRENT)")
    if e_machine != EM_PPC:
        r.fail(f"machine {_MACHINE_NAMES.get(e_machine, e_machine)}, expected EM_PPC (20, "
               f"32-bit PowerPC)")
    if e_type != ET_EXEC:
        r.fail(f"type {_TYPE_NAMES.get(e_type, e_type)}, expected ET_EXEC (an executable)")
    if e_ehsize < _EHDR.size:
        r.fail(f"ELF header size {e_ehsize}, expected at least {_EHDR.size}")
    if e_phnum == 0:
        r.fail("no program headers (nothing to load)")
    if e_phentsize != _PHDR.size:
        r.fail(f"program header size {e_phentsize}, expected {_PHDR.size}")

    sections = _read_sections(r, e_shoff, e_shnum, e_shentsize, e_shstrndx)
    symbols = _read_symbols(r, sections)

    if mailbox is None:
        mailbox = symbols.get("_mailbox", SRAM_BYTES - MAILBOX_BYTES)
    if not isinstance(mailbox, int) or not 0 < mailbox <= SRAM_BYTES:
        raise ValueError(f"{source}: mailbox = {mailbox!r}: expected an address in 1..{SRAM_BYTES}")

    segments = []
    executable = []
    for i in range(e_phnum):
        (p_type, p_offset, p_vaddr, _p_paddr, p_filesz, p_memsz, p_flags,
         _p_align) = r.unpack(_PHDR, e_phoff + i * _PHDR.size, f"program header {i}")
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        where = f"segment {i} (0x{p_vaddr:08x}..0x{p_vaddr + p_memsz:08x}, {_names(sections, p_vaddr, p_memsz)})"
        if p_filesz > p_memsz:
            r.fail(f"{where}: file size {p_filesz} exceeds its memory size {p_memsz}")
        if p_vaddr + p_memsz > SRAM_BYTES:
            r.fail(f"{where} lies outside the PPU's 16 KiB internal memory (0x0..0x{SRAM_BYTES - 1:x})")
        if p_filesz and p_vaddr + p_filesz > mailbox:
            r.fail(f"{where}: its file bytes reach into the mailbox at 0x{mailbox:04x}..0x{SRAM_BYTES:04x} "
                   f"(only zero-filled, NOBITS data may lie there)")
        payload = r.bytes(p_offset, p_filesz, f"the bytes of {where}")
        # Zero fill (NOBITS) into the mailbox is not loaded: the mailbox
        # belongs to the host, loading must not clear it.
        end = min(p_vaddr + p_memsz, max(mailbox, p_vaddr + p_filesz))
        data = payload + bytes(end - p_vaddr - p_filesz)
        if not data:
            continue
        seg = Segment(p_vaddr, data, _names(sections, p_vaddr, p_memsz))
        for other in segments:
            if seg.address < other.end and other.address < seg.end:
                r.fail(f"{where} overlaps segment {other.name} (0x{other.address:08x}..0x{other.end:08x})")
        segments.append(seg)
        if p_flags & PF_X:
            executable.append(seg)
    if not segments:
        r.fail("no loadable (PT_LOAD) segment with contents")
    if not any(s.address <= e_entry < s.end for s in executable):
        r.fail(f"entry point 0x{e_entry:08x} is not inside a loaded executable segment")
    if e_entry % 4:
        r.fail(f"entry point 0x{e_entry:08x} is not word-aligned")
    segments.sort(key=lambda s: s.address)
    return Program(segments=tuple(segments), entry=e_entry, symbols=symbols, source=source)


def _read_sections(r: _Reader, shoff: int, shnum: int, shentsize: int, shstrndx: int) -> list[dict]:
    """Section headers as dicts (name, type, flags, addr, offset, size, link, entsize); [] if none."""
    if shoff == 0 or shnum == 0:
        return []
    if shentsize != _SHDR.size:
        r.fail(f"section header size {shentsize}, expected {_SHDR.size}")
    if shnum >= SHN_LORESERVE:
        r.fail(f"{shnum} section headers: extended numbering is not supported")
    sections = []
    for i in range(shnum):
        (name, sh_type, flags, addr, offset, size, link, _info, _align,
         entsize) = r.unpack(_SHDR, shoff + i * _SHDR.size, f"section header {i}")
        sections.append(dict(name_offset=name, type=sh_type, flags=flags, addr=addr, offset=offset,
                             size=size, link=link, entsize=entsize, name=""))
    if shstrndx != 0:
        if shstrndx >= shnum:
            r.fail(f"section name table index {shstrndx} out of range ({shnum} sections)")
        strtab = sections[shstrndx]
        table = r.bytes(strtab["offset"], strtab["size"], "the section name table")
        for s in sections:
            s["name"] = _string(r, table, s["name_offset"], "section name")
    return sections


def _read_symbols(r: _Reader, sections: list[dict]) -> dict:
    """name -> value of the named FUNC, OBJECT and NOTYPE symbols of .symtab
    (defined ones; a global wins over a local of the same name)."""
    symbols, binding_of = {}, {}
    for s in sections:
        if s["type"] != SHT_SYMTAB:
            continue
        if s["entsize"] not in (0, _SYM.size):
            r.fail(f"symbol table {s['name']}: entry size {s['entsize']}, expected {_SYM.size}")
        if s["link"] >= len(sections):
            r.fail(f"symbol table {s['name']}: string table index {s['link']} out of range")
        strsec = sections[s["link"]]
        strings = r.bytes(strsec["offset"], strsec["size"], f"the string table of {s['name']}")
        r.bytes(s["offset"], s["size"], f"symbol table {s['name']}")  # bounds check
        for k in range(1, s["size"] // _SYM.size):  # entry 0 is the null symbol
            st_name, st_value, _size, st_info, _other, st_shndx = r.unpack(
                _SYM, s["offset"] + k * _SYM.size, f"symbol {k} of {s['name']}")
            sym_type, binding = st_info & 0xF, st_info >> 4
            if st_name == 0 or st_shndx == SHN_UNDEF or sym_type not in (STT_NOTYPE, STT_OBJECT, STT_FUNC):
                continue
            name = _string(r, strings, st_name, f"name of symbol {k}")
            if not name or name.startswith("$"):
                continue
            rank = 0 if binding == STB_LOCAL else 1
            if name in symbols and binding_of[name] >= rank:
                continue  # first local of a name, or a global, stays
            symbols[name] = st_value
            binding_of[name] = rank
    return symbols


def _string(r: _Reader, table: bytes, offset: int, what: str) -> str:
    if offset >= len(table):
        r.fail(f"{what}: string offset {offset} beyond its table ({len(table)} bytes)")
    end = table.find(b"\0", offset)
    if end < 0:
        r.fail(f"{what}: string at offset {offset} is not terminated")
    return table[offset:end].decode("utf-8", "replace")


def _names(sections: list[dict], address: int, size: int) -> str:
    """Names of the allocated sections inside [address, address + size), joined by '+'."""
    names = [s["name"] for s in sections
             if s["flags"] & SHF_ALLOC and s["size"] and s["name"]
             and address <= s["addr"] < address + size]
    return "+".join(names) if names else "segment"
