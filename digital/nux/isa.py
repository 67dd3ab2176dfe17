"""The instruction set of the PPU core ("Nux"): one table drives the decoder,
the encoder and the disassembler.

Nux implements a 32-bit, big-endian subset of Power ISA 2.06 (embedded
environment; categories Base, Embedded, External Control and Wait) plus the
custom FXV vector extension [NUX guide ``instructions.tex``, ``fxv.tex``;
``pu_inst_pkg.sv`` for the extended opcodes]. Every instruction the model
knows is one frozen :class:`Instruction` in :data:`INSTRUCTIONS`; variants
(``add``/``add.``/``addo``/``addo.``, ``b``/``bl``/``ba``/``bla``, ...) are
generated from one description each.

Bit numbering in the docstrings follows the ISA (IBM: bit 0 is the most
significant bit of the 32-bit word); :class:`Operand` stores the position as
``shift`` = number of bits right of the field's least significant bit.

Encoding rules enforced by :func:`decode` (a word is accepted only if
re-encoding its decoded fields gives the same word):

* every bit that is neither a fixed opcode bit nor an operand field is
  reserved and must be 0 (the ISA's "/" fields; for FXV instructions the
  fields an instruction does not use, e.g. VRT of ``fxvcmpb``);
* invalid forms are illegal: update loads with RA=0 or RA=RT, update stores
  with RA=0, ``lmw`` with RA in the loaded range, compares with L=1 (64-bit
  compare on this 32-bit core), ``bcctr`` with CTR decrement (BO_2=0),
  ``mfocrf``/``mtocrf`` whose FXM has not exactly one bit set, ``mfspr``/
  ``mtspr`` of an SPR the model does not implement (:data:`READ_SPRS`,
  :data:`WRITE_SPRS`), ``sync`` with L>1;
* branch hint bits (BO "at"/"z" bits, BH) follow the ISA: BO is free, BH must
  be 0 (BH is a hint only; the model has no use for it, *assumed* 0 in all
  code the toolchain emits);
* ``wait`` accepts WC 0..3, all with the same effect (*assumed*: the core
  has no reservation to wait on; the RTL's ``wait`` word is 0x7c00007c).

Names follow the group's binutils (``fxvcmph``, ``fxvaddactacbm``,
``fxvaddtach``); the guide's spellings (``fxvcmphm``, ``fxvaddactacb``,
``fxvaddtachm``) are accepted as aliases by :func:`encode` and the assembler.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

__all__ = [
    "UNITS", "OPERAND_KINDS", "Operand", "Instruction", "Decoded", "IllegalInstruction",
    "INSTRUCTIONS", "BY_MNEMONIC", "READ_SPRS", "WRITE_SPRS", "SPR_NAMES",
    "lookup", "decode", "encode", "disassemble", "format_operands",
]

UNITS = frozenset({
    "alu", "mul", "div", "load", "store", "branch", "cr", "spr", "sync", "wait",
    "vector_alu", "vector_mul", "vector_permute", "vector_load", "vector_store",
    "vector_in", "vector_out",
})
"""Functional units the cycle model of the core charges (see ``Instruction.unit``)."""

OPERAND_KINDS = {
    # kind: (lowest value, highest value, step) of the value in ``fields``
    "gpr": (0, 31, 1),        # general-purpose register
    "gpr0": (0, 31, 1),       # RA where 0 means the value 0, not r0 ("(RA|0)")
    "vr": (0, 31, 1),         # vector register
    "crf": (0, 7, 1),         # condition register field
    "crbit": (0, 31, 1),      # condition register bit (BI, BT, BA, BB)
    "uimm": None,             # unsigned immediate, width of the field
    "simm": None,             # signed immediate, width of the field
    "disp": (-0x8000, 0x7FFF, 1),   # 16-bit displacement of d(RA), printed with its RA
    "bd": (-0x8000, 0x7FFC, 4),     # bc target: byte displacement (or absolute, AA=1)
    "li": (-0x200_0000, 0x1FF_FFFC, 4),  # b target: byte displacement (or absolute, AA=1)
    "spr": (0, 1023, 1),      # SPR number (the field holds its two halves swapped)
    "cond": (0, 3, 1),        # FXV condition C: 0 always, 1 gt, 2 lt, 3 eq
}
"""Operand kinds and the range of their values."""


@dataclass(frozen=True)
class Operand:
    """One operand field of an instruction.

    ``name`` is the key in :attr:`Decoded.fields` and in :func:`encode`'s
    keyword arguments. ``shift``/``width`` place the field in the word
    (``shift`` bits right of the field's least significant bit). An optional
    operand may be left out in assembly and in :func:`encode`; it is then 0.
    """

    name: str
    kind: str
    shift: int
    width: int
    optional: bool = False

    @property
    def field_mask(self) -> int:
        return ((1 << self.width) - 1) << self.shift

    def value_range(self):
        """(lowest, highest, step) of the operand's value."""
        r = OPERAND_KINDS[self.kind]
        if r is not None:
            return r
        if self.kind == "uimm":
            return 0, (1 << self.width) - 1, 1
        return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1, 1

    # field bits -> value as the semantics use it
    def extract(self, word: int) -> int:
        raw = (word >> self.shift) & ((1 << self.width) - 1)
        kind = self.kind
        if kind in ("simm", "disp"):
            sign = 1 << (self.width - 1)
            return (raw ^ sign) - sign
        if kind in ("bd", "li"):
            sign = 1 << (self.width - 1)
            return ((raw ^ sign) - sign) << 2
        if kind == "spr":
            return ((raw & 0x1F) << 5) | (raw >> 5)
        return raw

    # value -> field bits, with the range check
    def insert(self, mnemonic: str, value) -> int:
        if isinstance(value, bool):
            raise ValueError(f"{mnemonic}: operand {self.name} must be an integer, got {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise ValueError(f"{mnemonic}: operand {self.name} must be an integer, "
                             f"got {value!r}") from None
        lo, hi, step = self.value_range()
        if not lo <= value <= hi or value % step:
            what = f"{lo}..{hi}" + (f" in steps of {step}" if step != 1 else "")
            raise ValueError(f"{mnemonic}: operand {self.name} = {value} is out of range {what}")
        kind = self.kind
        if kind in ("bd", "li"):
            raw = (value >> 2) & ((1 << self.width) - 1)
        elif kind == "spr":
            raw = ((value & 0x1F) << 5) | (value >> 5)
        else:
            raw = value & ((1 << self.width) - 1)
        return raw << self.shift


@dataclass(frozen=True, eq=False)
class Instruction:
    """One instruction (one variant: ``add.`` and ``addo`` are separate entries).

    Attributes
    ----------
    mnemonic : str
        Canonical assembly name (the group's binutils spelling).
    form : str
        Power ISA instruction form ("D", "X", "XO", "XL", "XFX", "M", "I", "B")
        or "FXV" (primary opcode 4, 9-bit XO in bits 21-29, C in bits 30-31).
    opcode : int
        Primary opcode (bits 0-5).
    xo : int or None
        Extended opcode (its own field width: 10 bits for X/XL/XFX, 9 for XO,
        9 for FXV), None for D/M/I/B forms.
    fixed : tuple of (name, shift, width, value)
        Fixed fields besides the primary opcode: ``xo``, ``oe``, ``rc``,
        ``lk``, ``aa`` and selector bits.
    operands : tuple of Operand
        In assembly order. A ``disp`` operand is printed as ``d(ra)`` together
        with the ``ra`` operand that follows it.
    unit : str
        Functional unit for the cycle model (one of :data:`UNITS`).
    family : str
        Name of the semantics family in :mod:`.reference`.
    params : dict
        The variant's parameters for its family (e.g. ``{"op": "add"}``).
    aliases : tuple of str
        Other mnemonics that assemble to this instruction.
    validate : callable or None
        ``validate(fields) -> str | None``: a message if the field values make
        an invalid form.
    """

    mnemonic: str
    form: str
    opcode: int
    xo: int | None
    fixed: tuple
    operands: tuple
    unit: str
    family: str
    params: dict = field(default_factory=dict)
    aliases: tuple = ()
    validate: Callable | None = None
    mask: int = 0
    match: int = 0

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"{self.mnemonic}: unknown unit {self.unit!r}")
        match = self.opcode << 26
        fixed_bits = 0x3F << 26
        for _, shift, width, value in self.fixed:
            m = ((1 << width) - 1) << shift
            if fixed_bits & m:
                raise ValueError(f"{self.mnemonic}: overlapping fixed fields")
            fixed_bits |= m
            match |= (value << shift) & m
        operand_bits = 0
        for op in self.operands:
            if operand_bits & op.field_mask or fixed_bits & op.field_mask:
                raise ValueError(f"{self.mnemonic}: operand {op.name} overlaps another field")
            operand_bits |= op.field_mask
        # Every bit outside the operands is either fixed or reserved (must be 0).
        object.__setattr__(self, "mask", 0xFFFF_FFFF & ~operand_bits)
        object.__setattr__(self, "match", match)
        object.__setattr__(self, "_extractors",
                           tuple((op.name, op.extract) for op in self.operands))
        fixed_values = {name: value for name, _, _, value in self.fixed}
        object.__setattr__(self, "rc", fixed_values.get("rc", 0))
        object.__setattr__(self, "oe", fixed_values.get("oe", 0))
        object.__setattr__(self, "lk", fixed_values.get("lk", 0))
        object.__setattr__(self, "aa", fixed_values.get("aa", 0))

    def operand(self, name: str) -> Operand:
        for op in self.operands:
            if op.name == name:
                return op
        raise KeyError(f"{self.mnemonic} has no operand {name!r}")

    @property
    def operand_names(self) -> tuple:
        return tuple(op.name for op in self.operands)

    def __repr__(self):
        return f"Instruction({self.mnemonic!r}, {self.form}, unit={self.unit!r})"


class Decoded(NamedTuple):
    """A decoded instruction: the table entry and its operand values.

    ``fields`` maps operand names to values as the semantics use them:
    immediates and displacements sign-extended where the ISA sign-extends,
    branch displacements in bytes (the word offset shifted left by 2; with
    AA=1 the absolute target), SPR numbers with their halves put back in order.
    """

    instruction: Instruction
    fields: dict


class IllegalInstruction(Exception):
    """A word that is no instruction of this core (or an invalid form).

    Attributes
    ----------
    word : int
        The 32-bit instruction word.
    address : int or None
        Where it was fetched (None if not known).
    reason : str
        What is wrong with it.
    """

    def __init__(self, word: int, address: int | None = None, reason: str = ""):
        self.word = int(word) & 0xFFFF_FFFF
        self.address = address
        self.reason = reason
        msg = f"illegal instruction 0x{self.word:08x}"
        if address is not None:
            msg += f" at 0x{int(address) & 0xFFFF_FFFF:08x}"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)

    def __reduce__(self):
        return (IllegalInstruction, (self.word, self.address, self.reason))


# --- fields (IBM bit ranges) -----------------------------------------------------------
def _f(first: int, last: int):
    """(shift, width) of IBM bits first..last of a 32-bit word."""
    return 31 - last, last - first + 1


RT = _f(6, 10)
RA = _f(11, 15)
RB = _f(16, 20)
D16 = _f(16, 31)
BF = _f(6, 8)
BFA = _f(11, 13)
L10 = _f(10, 10)
BO = _f(6, 10)
BI = _f(11, 15)
BD = _f(16, 29)
LI = _f(6, 29)
SH = _f(16, 20)
MB = _f(21, 25)
ME = _f(26, 30)
SPR = _f(11, 20)
FXM = _f(12, 19)
B11 = _f(11, 11)
L2 = _f(9, 10)
C2 = _f(30, 31)
XO10 = _f(21, 30)
XO9 = _f(22, 30)
OE = _f(21, 21)
RC = _f(31, 31)
AA = _f(30, 30)
LK = _f(31, 31)
FXVXO = _f(21, 29)


def _o(name, kind, pos, optional=False):
    return Operand(name, kind, pos[0], pos[1], optional)


def _fx(name, pos, value):
    return (name, pos[0], pos[1], value)


# --- special-purpose registers ------------------------------------------------------------
SPR_NAMES = {1: "xer", 8: "lr", 9: "ctr", 268: "tbl", 269: "tbu", 284: "tbl", 285: "tbu"}
"""SPRs of the model. 268/269 are the user-mode time base reads of the ISA; the
chip group reads the time base with ``mfspr rX, 284`` (TBL) [LNX speed tests]
and 285 (TBU) [LNX ``spr.h``], so 284/285 read it too."""
READ_SPRS = frozenset(SPR_NAMES)
WRITE_SPRS = frozenset({1, 8, 9})
"""Writable SPRs. Writes of the time base (``mtspr 284/285``, privileged in
Book III-E) are not modelled: the core owns the time base."""


# --- validation of invalid forms --------------------------------------------------------------
def _v_update_load(f):
    if f["ra"] == 0:
        return "update form with RA=0 is invalid"
    if f["ra"] == f["rt"]:
        return "update form with RA=RT is invalid"
    return None


def _v_update_store(f):
    return "update form with RA=0 is invalid" if f["ra"] == 0 else None


def _v_lmw(f):
    if f["ra"] >= f["rt"]:
        return f"RA=r{f['ra']} lies in the loaded range r{f['rt']}..r31 (invalid form)"
    return None


def _v_cmp(f):
    return "L=1 (64-bit compare) is an invalid form on this 32-bit core" if f["l"] else None


def _v_bcctr(f):
    return "bcctr with CTR decrement (BO_2=0) is an invalid form" if not f["bo"] & 0b00100 else None


def _v_one_field(f):
    if bin(f["fxm"]).count("1") != 1:
        return f"FXM=0x{f['fxm']:02x} must select exactly one CR field"
    return None


def _v_mfspr(f):
    if f["spr"] not in READ_SPRS:
        return f"SPR {f['spr']} is not implemented (readable: {sorted(READ_SPRS)})"
    return None


def _v_mtspr(f):
    if f["spr"] not in WRITE_SPRS:
        return f"SPR {f['spr']} is not writable (writable: {sorted(WRITE_SPRS)})"
    return None


def _v_sync(f):
    return f"sync L={f['l']} is reserved (0 sync, 1 lwsync)" if f["l"] > 1 else None


# --- the table -------------------------------------------------------------------------------
_TABLE: list = []


def _add(mnemonic, form, opcode, xo, fixed, operands, unit, family, params=None,
         validate=None, aliases=()):
    _TABLE.append(Instruction(mnemonic, form, opcode, xo, tuple(fixed), tuple(operands), unit,
                              family, dict(params or {}), tuple(aliases), validate))


def _build():
    o_rt, o_ra, o_rb, o_rs = (_o("rt", "gpr", RT), _o("ra", "gpr", RA), _o("rb", "gpr", RB),
                              _o("rs", "gpr", RT))
    o_ra0 = _o("ra", "gpr0", RA)
    o_ra_dest = _o("ra", "gpr", RA)   # RA as destination of logical/shift/rotate ops
    o_rs_src = _o("rs", "gpr", RT)
    o_si = _o("si", "simm", D16)
    o_ui = _o("ui", "uimm", D16)
    o_d = _o("d", "disp", D16)

    # D-form arithmetic
    _add("addi", "D", 14, None, [], [o_rt, o_ra0, o_si], "alu", "addi", {"shift": 0})
    _add("addis", "D", 15, None, [], [o_rt, o_ra0, o_si], "alu", "addi", {"shift": 16})
    _add("addic", "D", 12, None, [], [o_rt, o_ra, o_si], "alu", "addic", {"record": 0})
    _add("addic.", "D", 13, None, [], [o_rt, o_ra, o_si], "alu", "addic", {"record": 1})
    _add("subfic", "D", 8, None, [], [o_rt, o_ra, o_si], "alu", "subfic")
    _add("mulli", "D", 7, None, [], [o_rt, o_ra, o_si], "mul", "mulli")
    o_bf, o_l = _o("bf", "crf", BF), _o("l", "uimm", L10)
    _add("cmpi", "D", 11, None, [], [o_bf, o_l, o_ra, o_si], "alu", "cmp",
         {"signed": True, "imm": True}, _v_cmp)
    _add("cmpli", "D", 10, None, [], [o_bf, o_l, o_ra, o_ui], "alu", "cmp",
         {"signed": False, "imm": True}, _v_cmp)
    for name, opc, op, shifted, record in (("andi.", 28, "and", 0, 1), ("andis.", 29, "and", 16, 1),
                                            ("ori", 24, "or", 0, 0), ("oris", 25, "or", 16, 0),
                                            ("xori", 26, "xor", 0, 0), ("xoris", 27, "xor", 16, 0)):
        _add(name, "D", opc, None, [], [o_ra_dest, o_rs_src, o_ui], "alu", "logic_imm",
             {"op": op, "shift": shifted, "record": record})

    # loads and stores, D-form and X-form
    loads = (("lwz", 32, 23, 4, False), ("lbz", 34, 87, 1, False), ("lhz", 40, 279, 2, False),
             ("lha", 42, 343, 2, True))
    for name, opc, xo, size, sign in loads:
        _add(name, "D", opc, None, [], [o_rt, o_d, o_ra0], "load", "load",
             {"size": size, "signed": sign, "update": False, "indexed": False})
        _add(name + "u", "D", opc + 1, None, [], [o_rt, o_d, o_ra], "load", "load",
             {"size": size, "signed": sign, "update": True, "indexed": False}, _v_update_load)
        _add(name + "x", "X", 31, xo, [_fx("xo", XO10, xo)], [o_rt, o_ra0, o_rb], "load", "load",
             {"size": size, "signed": sign, "update": False, "indexed": True})
        _add(name + "ux", "X", 31, xo + 32, [_fx("xo", XO10, xo + 32)], [o_rt, o_ra, o_rb], "load",
             "load", {"size": size, "signed": sign, "update": True, "indexed": True}, _v_update_load)
    stores = (("stw", 36, 151, 4), ("stb", 38, 215, 1), ("sth", 44, 407, 2))
    for name, opc, xo, size in stores:
        _add(name, "D", opc, None, [], [o_rs, o_d, o_ra0], "store", "store",
             {"size": size, "update": False, "indexed": False})
        _add(name + "u", "D", opc + 1, None, [], [o_rs, o_d, o_ra], "store", "store",
             {"size": size, "update": True, "indexed": False}, _v_update_store)
        _add(name + "x", "X", 31, xo, [_fx("xo", XO10, xo)], [o_rs, o_ra0, o_rb], "store", "store",
             {"size": size, "update": False, "indexed": True})
        _add(name + "ux", "X", 31, xo + 32, [_fx("xo", XO10, xo + 32)], [o_rs, o_ra, o_rb], "store",
             "store", {"size": size, "update": True, "indexed": True}, _v_update_store)
    _add("lmw", "D", 46, None, [], [o_rt, o_d, o_ra0], "load", "lmw", {}, _v_lmw)
    _add("stmw", "D", 47, None, [], [o_rs, o_d, o_ra0], "store", "stmw")

    # XO-form arithmetic: (name, xo, uses RB, has OE, unit, family, params)
    xo_ops = (
        ("add", 266, True, True, "alu", "arith", {"op": "add"}),
        ("addc", 10, True, True, "alu", "arith", {"op": "addc"}),
        ("adde", 138, True, True, "alu", "arith", {"op": "adde"}),
        ("addze", 202, False, True, "alu", "arith", {"op": "addze"}),
        ("addme", 234, False, True, "alu", "arith", {"op": "addme"}),
        ("subf", 40, True, True, "alu", "arith", {"op": "subf"}),
        ("subfc", 8, True, True, "alu", "arith", {"op": "subfc"}),
        ("subfe", 136, True, True, "alu", "arith", {"op": "subfe"}),
        ("subfze", 200, False, True, "alu", "arith", {"op": "subfze"}),
        ("subfme", 232, False, True, "alu", "arith", {"op": "subfme"}),
        ("neg", 104, False, True, "alu", "arith", {"op": "neg"}),
        ("mullw", 235, True, True, "mul", "mul", {"op": "mullw"}),
        ("mulhw", 75, True, False, "mul", "mul", {"op": "mulhw"}),
        ("mulhwu", 11, True, False, "mul", "mul", {"op": "mulhwu"}),
        ("divw", 491, True, True, "div", "div", {"op": "divw"}),
        ("divwu", 459, True, True, "div", "div", {"op": "divwu"}),
    )
    for name, xo, uses_rb, has_oe, unit, family, params in xo_ops:
        operands = [o_rt, o_ra] + ([o_rb] if uses_rb else [])
        for oe in ((0, 1) if has_oe else (0,)):
            for rc in (0, 1):
                mn = name + ("o" if oe else "") + ("." if rc else "")
                _add(mn, "XO", 31, xo, [_fx("xo", XO9, xo), _fx("oe", OE, oe), _fx("rc", RC, rc)],
                     operands, unit, family, dict(params, oe=oe, rc=rc))

    # X-form logical, shifts, extends (RA <- RS op RB), with and without Rc
    x_logic = (("and", 28, "and"), ("andc", 60, "andc"), ("or", 444, "or"), ("orc", 412, "orc"),
               ("xor", 316, "xor"), ("nand", 476, "nand"), ("nor", 124, "nor"),
               ("eqv", 284, "eqv"))
    for name, xo, op in x_logic:
        for rc in (0, 1):
            _add(name + ("." if rc else ""), "X", 31, xo, [_fx("xo", XO10, xo), _fx("rc", RC, rc)],
                 [o_ra_dest, o_rs_src, o_rb], "alu", "logic", {"op": op, "rc": rc})
    for name, xo in (("slw", 24), ("srw", 536), ("sraw", 792)):
        for rc in (0, 1):
            _add(name + ("." if rc else ""), "X", 31, xo, [_fx("xo", XO10, xo), _fx("rc", RC, rc)],
                 [o_ra_dest, o_rs_src, o_rb], "alu", "shift", {"op": name, "rc": rc})
    for rc in (0, 1):
        _add("srawi" + ("." if rc else ""), "X", 31, 824, [_fx("xo", XO10, 824), _fx("rc", RC, rc)],
             [o_ra_dest, o_rs_src, _o("sh", "uimm", SH)], "alu", "shift", {"op": "srawi", "rc": rc})
    for name, xo in (("extsb", 954), ("extsh", 922), ("cntlzw", 26)):
        for rc in (0, 1):
            _add(name + ("." if rc else ""), "X", 31, xo, [_fx("xo", XO10, xo), _fx("rc", RC, rc)],
                 [o_ra_dest, o_rs_src], "alu", "unary", {"op": name, "rc": rc})

    # compares, X-form
    _add("cmp", "X", 31, 0, [_fx("xo", XO10, 0)], [o_bf, o_l, o_ra, o_rb], "alu", "cmp",
         {"signed": True, "imm": False}, _v_cmp)
    _add("cmpl", "X", 31, 32, [_fx("xo", XO10, 32)], [o_bf, o_l, o_ra, o_rb], "alu", "cmp",
         {"signed": False, "imm": False}, _v_cmp)

    # rotates, M-form
    o_sh, o_mb, o_me = _o("sh", "uimm", SH), _o("mb", "uimm", MB), _o("me", "uimm", ME)
    for name, opc, amount in (("rlwinm", 21, o_sh), ("rlwimi", 20, o_sh), ("rlwnm", 23, o_rb)):
        for rc in (0, 1):
            _add(name + ("." if rc else ""), "M", opc, None, [_fx("rc", RC, rc)],
                 [o_ra_dest, o_rs_src, amount, o_mb, o_me], "alu", "rotate", {"op": name, "rc": rc})

    # branches
    o_li, o_bo, o_bi, o_bd = _o("li", "li", LI), _o("bo", "uimm", BO), _o("bi", "crbit", BI), \
        _o("bd", "bd", BD)
    for aa in (0, 1):
        for lk in (0, 1):
            suffix = ("l" if lk else "") + ("a" if aa else "")
            _add("b" + suffix, "I", 18, None, [_fx("aa", AA, aa), _fx("lk", LK, lk)], [o_li],
                 "branch", "b", {"aa": aa, "lk": lk})
            _add("bc" + suffix, "B", 16, None, [_fx("aa", AA, aa), _fx("lk", LK, lk)],
                 [o_bo, o_bi, o_bd], "branch", "bc", {"aa": aa, "lk": lk})
    for name, xo, target, validate in (("bclr", 16, "lr", None), ("bcctr", 528, "ctr", _v_bcctr)):
        for lk in (0, 1):
            _add(name + ("l" if lk else ""), "XL", 19, xo, [_fx("xo", XO10, xo), _fx("lk", LK, lk)],
                 [o_bo, o_bi], "branch", "bcreg", {"target": target, "lk": lk}, validate)

    # CR logic, XL-form
    o_bt, o_ba, o_bb = _o("bt", "crbit", RT), _o("ba", "crbit", RA), _o("bb", "crbit", RB)
    for name, xo in (("crand", 257), ("cror", 449), ("crxor", 193), ("crnand", 225),
                     ("crnor", 33), ("creqv", 289), ("crandc", 129), ("crorc", 417)):
        _add(name, "XL", 19, xo, [_fx("xo", XO10, xo)], [o_bt, o_ba, o_bb], "cr", "crlogic",
             {"op": name[2:]})
    _add("mcrf", "XL", 19, 0, [_fx("xo", XO10, 0)], [o_bf, _o("bfa", "crf", BFA)], "cr", "mcrf")
    _add("isync", "XL", 19, 150, [_fx("xo", XO10, 150)], [], "sync", "nop")

    # SPRs and the CR as a whole, XFX-form
    o_spr, o_fxm = _o("spr", "spr", SPR), _o("fxm", "uimm", FXM)
    _add("mfspr", "XFX", 31, 339, [_fx("xo", XO10, 339)], [o_rt, o_spr], "spr", "mfspr", {},
         _v_mfspr)
    _add("mtspr", "XFX", 31, 467, [_fx("xo", XO10, 467)], [o_spr, o_rs], "spr", "mtspr", {},
         _v_mtspr)
    _add("mfcr", "XFX", 31, 19, [_fx("xo", XO10, 19), _fx("one", B11, 0)], [o_rt], "cr", "mfcr")
    _add("mfocrf", "XFX", 31, 19, [_fx("xo", XO10, 19), _fx("one", B11, 1)], [o_rt, o_fxm], "cr",
         "mfocrf", {}, _v_one_field)
    _add("mtcrf", "XFX", 31, 144, [_fx("xo", XO10, 144), _fx("one", B11, 0)], [o_fxm, o_rs], "cr",
         "mtcrf")
    _add("mtocrf", "XFX", 31, 144, [_fx("xo", XO10, 144), _fx("one", B11, 1)], [o_fxm, o_rs], "cr",
         "mtcrf", {}, _v_one_field)

    # synchronisation and wait
    _add("sync", "X", 31, 598, [_fx("xo", XO10, 598)], [_o("l", "uimm", L2, optional=True)], "sync",
         "nop", {}, _v_sync, aliases=("msync",))
    _add("wait", "X", 31, 62, [_fx("xo", XO10, 62)], [_o("wc", "uimm", L2, optional=True)], "wait",
         "wait")

    # FXV vector extension [NUX fxv.tex; operand syntax as the group's binutils]
    v_t, v_a, v_b = _o("vrt", "vr", RT), _o("vra", "vr", RA), _o("vrb", "vr", RB)
    c = _o("c", "cond", C2, optional=True)

    def fxv(name, xo, operands, unit, family, params=None, aliases=()):
        _add(name, "FXV", 4, xo, [_fx("xo", FXVXO, xo)], operands, unit, family, params,
             aliases=aliases)

    # arithmetic: (h name, b name, h xo, operands kind, unit, op)
    arith = (
        ("fxvmahm", "fxvmabm", 12, "tab", "vector_mul", "ma_mod"),
        ("fxvmatachm", "fxvmatacbm", 44, "ab", "vector_mul", "matac_mod"),
        ("fxvmulhm", "fxvmulbm", 76, "tab", "vector_mul", "mul_mod"),
        ("fxvmultachm", "fxvmultacbm", 108, "ab", "vector_mul", "multac_mod"),
        ("fxvsubhm", "fxvsubbm", 332, "tab", "vector_alu", "sub_mod"),
        ("fxvaddactachm", "fxvaddactacbm", 364, "a", "vector_alu", "addactac_mod"),
        ("fxvaddtach", "fxvaddtacb", 428, "ab", "vector_alu", "addtac_mod"),
        ("fxvaddachm", "fxvaddacbm", 396, "ta", "vector_alu", "addac_mod"),
        ("fxvaddhm", "fxvaddbm", 460, "tab", "vector_alu", "add_mod"),
        ("fxvmtach", "fxvmtacb", 15, "a", "vector_alu", "mtac"),
        ("fxvmahfs", "fxvmabfs", 28, "tab", "vector_mul", "ma_fs"),
        ("fxvmtachf", "fxvmtacbf", 31, "a", "vector_alu", "mtac_f"),
        ("fxvmatachfs", "fxvmatacbfs", 60, "ab", "vector_mul", "matac_fs"),
        ("fxvmulhfs", "fxvmulbfs", 92, "tab", "vector_mul", "mul_fs"),
        ("fxvmultachfs", "fxvmultacbfs", 124, "ab", "vector_mul", "multac_fs"),
        ("fxvsubhfs", "fxvsubbfs", 348, "tab", "vector_alu", "sub_fs"),
        ("fxvaddactachf", "fxvaddactacbf", 380, "a", "vector_alu", "addactac_fs"),
        ("fxvaddachfs", "fxvaddacbfs", 412, "ta", "vector_alu", "addac_fs"),
        ("fxvaddhfs", "fxvaddbfs", 476, "tab", "vector_alu", "add_fs"),
    )
    # Other spellings: the guide's (fxvaddactacb, fxvaddtachm) and the older
    # fxvmtac of the group's RTL test programs [NUX test/testcode].
    guide_names = {"fxvaddactacbm": ("fxvaddactacb",), "fxvaddtach": ("fxvaddtachm",),
                   "fxvmtach": ("fxvmtac",)}
    layouts = {"tab": [v_t, v_a, v_b, c], "ab": [v_a, v_b, c], "a": [v_a, c], "ta": [v_t, v_a, c]}
    for hname, bname, hxo, layout, unit, op in arith:
        # XO of the byte variant: hxo + 1, except the accumulator moves (mtacb 14
        # and mtach 15; mtacbf 30 and mtachf 31) [NUX pu_inst_pkg.sv].
        bxo = hxo - 1 if op in ("mtac", "mtac_f") else hxo + 1
        for name, xo, lane in ((hname, hxo, 16), (bname, bxo, 8)):
            fxv(name, xo, layouts[layout], unit, "fxv_arith", {"op": op, "lane": lane},
                guide_names.get(name, ()))
    fxv("fxvcmph", 300, [v_a], "vector_alu", "fxv_cmp", {"lane": 16}, ("fxvcmphm",))
    fxv("fxvcmpb", 301, [v_a], "vector_alu", "fxv_cmp", {"lane": 8})
    # Splat, shift, select and pack run in the permute unit [NUX vector_permute_ctrl.sv].
    o_gra = _o("ra", "gpr", RA)
    fxv("fxvsplath", 268, [v_t, o_gra], "vector_permute", "fxv_splat", {"lane": 16})
    fxv("fxvsplatb", 269, [v_t, o_gra], "vector_permute", "fxv_splat", {"lane": 8})
    o_vsh = _o("sh", "simm", RB)
    fxv("fxvshh", 316, [v_t, v_a, o_vsh], "vector_permute", "fxv_shift", {"lane": 16})
    fxv("fxvshb", 317, [v_t, v_a, o_vsh], "vector_permute", "fxv_shift", {"lane": 8})
    fxv("fxvsel", 319, [v_t, v_a, v_b, c], "vector_permute", "fxv_sel")
    for name, xo, op in (("fxvpckbu", 239, "pack_upper"), ("fxvpckbl", 255, "pack_lower"),
                         ("fxvupckbl", 287, "unpack_left"), ("fxvupckbr", 271, "unpack_right")):
        fxv(name, xo, [v_t, v_a, v_b, c], "vector_permute", "fxv_pack", {"op": op})
    o_grb = _o("rb", "gpr", RB)
    fxv("fxvlax", 492, [v_t, o_ra0, o_grb], "vector_load", "fxv_lax")
    fxv("fxvstax", 508, [v_t, o_ra0, o_grb], "vector_store", "fxv_stax")
    fxv("fxvinx", 236, [v_t, o_ra0, o_grb, c], "vector_in", "fxv_inx")
    fxv("fxvoutx", 252, [v_t, o_ra0, o_grb, c], "vector_out", "fxv_outx")


_build()

INSTRUCTIONS: tuple = tuple(_TABLE)
"""Every instruction (variant) of the model."""

BY_MNEMONIC: dict = {}
for _ins in INSTRUCTIONS:
    for _name in (_ins.mnemonic,) + _ins.aliases:
        if _name in BY_MNEMONIC:
            raise RuntimeError(f"duplicate mnemonic {_name}")
        BY_MNEMONIC[_name] = _ins

# Decoder index: primary opcode -> (key shift, key mask, {key: candidates}).
_KEYS = {31: (1, 0x3FF), 19: (1, 0x3FF), 4: (2, 0x1FF)}
_DECODE: dict = {}
for _ins in INSTRUCTIONS:
    _shift, _kmask = _KEYS.get(_ins.opcode, (0, 0))
    _entry = _DECODE.setdefault(_ins.opcode, (_shift, _kmask, {}))
    _entry[2].setdefault((_ins.match >> _shift) & _kmask, []).append(_ins)
for _entry in _DECODE.values():
    for _k in list(_entry[2]):
        _entry[2][_k] = tuple(_entry[2][_k])
del _ins, _name, _shift, _kmask, _entry


def lookup(mnemonic: str) -> Instruction:
    """The table entry of a mnemonic (or alias); ValueError naming it otherwise."""
    ins = BY_MNEMONIC.get(mnemonic)
    if ins is None:
        raise ValueError(f"unknown mnemonic {mnemonic!r}")
    return ins


def decode(word: int, address: int | None = None) -> Decoded:
    """Decode one 32-bit instruction word.

    Parameters
    ----------
    word : int
        The instruction word (big-endian value, 0..2**32-1).
    address : int or None
        Where it was fetched, for the error message only.

    Returns
    -------
    Decoded

    Raises
    ------
    IllegalInstruction
        The word is not an instruction of :data:`INSTRUCTIONS` (unknown opcode,
        reserved bits set, invalid form).
    """
    word = int(word) & 0xFFFF_FFFF
    entry = _DECODE.get(word >> 26)
    if entry is None:
        raise IllegalInstruction(word, address, f"primary opcode {word >> 26} is not implemented")
    shift, kmask, table = entry
    candidates = table.get((word >> shift) & kmask)
    if candidates is None:
        raise IllegalInstruction(word, address, f"extended opcode {(word >> shift) & kmask} of "
                                                f"primary opcode {word >> 26} is not implemented")
    for ins in candidates:
        if word & ins.mask == ins.match:
            fields = {name: ext(word) for name, ext in ins._extractors}
            if ins.validate is not None:
                msg = ins.validate(fields)
                if msg:
                    raise IllegalInstruction(word, address, f"{ins.mnemonic}: {msg}")
            return Decoded(ins, fields)
    names = "/".join(i.mnemonic for i in candidates)
    raise IllegalInstruction(word, address, f"reserved bits set for {names}")


def encode(mnemonic: str, **operands) -> int:
    """Encode one instruction from its operand values.

    Parameters
    ----------
    mnemonic : str
        A mnemonic of :data:`INSTRUCTIONS` (or an alias), e.g. ``"addi"``.
    **operands
        Operand values by name (see ``Instruction.operands``), as
        :attr:`Decoded.fields` holds them: ``encode("addi", rt=3, ra=1, si=-16)``,
        ``encode("lwz", rt=9, d=8, ra=1)``, ``encode("bc", bo=12, bi=2, bd=-8)``.
        Optional operands (FXV ``c``, ``sync`` ``l``, ``wait`` ``wc``) default to 0.

    Returns
    -------
    int
        The 32-bit word.

    Raises
    ------
    ValueError
        Unknown mnemonic, missing or unknown operand, a value out of range
        (naming the operand and its range), or an invalid form.
    """
    ins = lookup(mnemonic)
    word = ins.match
    given = dict(operands)
    for op in ins.operands:
        if op.name in given:
            value = given.pop(op.name)
        elif op.optional:
            value = 0
        else:
            raise ValueError(f"{mnemonic}: missing operand {op.name} "
                             f"(operands: {', '.join(ins.operand_names) or 'none'})")
        word |= op.insert(mnemonic, value)
    if given:
        raise ValueError(f"{mnemonic} has no operand(s) {', '.join(sorted(given))} "
                         f"(operands: {', '.join(ins.operand_names) or 'none'})")
    if ins.validate is not None:
        msg = ins.validate({name: ext(word) for name, ext in ins._extractors})
        if msg:
            raise ValueError(f"{mnemonic}: {msg}")
    return word


# --- disassembly ----------------------------------------------------------------------------------
_COND_TRUE = ("lt", "gt", "eq", "so")
_COND_FALSE = ("ge", "le", "ne", "ns")
_HINT = {0b00: "", 0b10: "-", 0b11: "+"}


def _target(ins, disp, address):
    return disp & 0xFFFF_FFFF if ins.aa else (address + disp) & 0xFFFF_FFFF


def _fmt(op: Operand, value: int, fields: dict, ins, address: int) -> str:
    kind = op.kind
    if kind == "gpr":
        return f"r{value}"
    if kind == "gpr0":
        return "0" if value == 0 else f"r{value}"
    if kind == "vr":
        return f"v{value}"
    if kind == "crf":
        return f"cr{value}"
    if kind in ("bd", "li"):
        return f"0x{_target(ins, value, address):x}"
    return str(value)


def format_operands(ins: Instruction, fields: dict, address: int = 0) -> list:
    """The operands of a decoded instruction as assembly text, in order."""
    out = []
    ops = ins.operands
    i = 0
    while i < len(ops):
        op = ops[i]
        if op.kind == "disp":
            base = ops[i + 1]
            out.append(f"{fields[op.name]}({_fmt(base, fields[base.name], fields, ins, address)})")
            i += 2
            continue
        out.append(_fmt(op, fields[op.name], fields, ins, address))
        i += 1
    return out


def _branch_simplified(ins, f, address):
    """GNU-style simplified mnemonic of a conditional branch, or None."""
    bo, bi = f["bo"], f["bi"]
    suffix = ("lr" if ins.family == "bcreg" and ins.params["target"] == "lr" else
              "ctr" if ins.family == "bcreg" else "")
    suffix += ("l" if ins.lk else "") + ("a" if ins.aa else "")
    target = [] if ins.family == "bcreg" else [f"0x{_target(ins, f['bd'], address):x}"]
    if bo == 20 and bi == 0 and ins.family == "bcreg":
        return "b" + suffix, []
    if bo >> 2 in (0b011, 0b001):   # branch if CR bit true (011at) / false (001at)
        at = bo & 0b11
        if at not in _HINT:
            return None
        cond = (_COND_TRUE if bo >> 2 == 0b011 else _COND_FALSE)[bi & 3]
        return "b" + cond + suffix + _HINT[at], [f"cr{bi >> 2}"] + target
    if bo in (16, 24, 25, 18, 26, 27) and bi == 0 and ins.family == "bc":
        name = "bdnz" if bo in (16, 24, 25) else "bdz"
        hint = {16: "", 18: "", 24: "-", 26: "-", 25: "+", 27: "+"}[bo]
        return name + suffix + hint, target
    if bo == 16 and bi == 0 and ins.params.get("target") == "lr":
        return "bdnz" + suffix, []
    if bo == 18 and bi == 0 and ins.params.get("target") == "lr":
        return "bdz" + suffix, []
    return None


_SPR_MOVES = {1: "xer", 8: "lr", 9: "ctr"}


def _simplified(ins, f, address):
    """(mnemonic, operand texts) of a GNU simplified mnemonic, or None."""
    mn = ins.mnemonic
    if mn == "addi" and f["ra"] == 0:
        return "li", [f"r{f['rt']}", str(f["si"])]
    if mn == "addis" and f["ra"] == 0:
        return "lis", [f"r{f['rt']}", str(f["si"])]
    if mn == "ori" and f["ra"] == 0 and f["rs"] == 0 and f["ui"] == 0:
        return "nop", []
    if mn in ("or", "or.") and f["rs"] == f["rb"]:
        return "mr" + mn[2:], [f"r{f['ra']}", f"r{f['rs']}"]
    if mn in ("nor", "nor.") and f["rs"] == f["rb"]:
        return "not" + mn[3:], [f"r{f['ra']}", f"r{f['rs']}"]
    if ins.family == "cmp" and f["l"] == 0:
        name = {"cmp": "cmpw", "cmpi": "cmpwi", "cmpl": "cmplw", "cmpli": "cmplwi"}[mn]
        last = f"r{f['rb']}" if "rb" in f else str(f.get("si", f.get("ui")))
        return name, [f"cr{f['bf']}", f"r{f['ra']}", last]
    if mn == "mfspr" and f["spr"] in _SPR_MOVES:
        return "mf" + _SPR_MOVES[f["spr"]], [f"r{f['rt']}"]
    if mn == "mfspr" and f["spr"] in (268, 269):
        return ("mftb" if f["spr"] == 268 else "mftbu"), [f"r{f['rt']}"]
    if mn == "mtspr" and f["spr"] in _SPR_MOVES:
        return "mt" + _SPR_MOVES[f["spr"]], [f"r{f['rs']}"]
    if mn == "mtcrf" and f["fxm"] == 0xFF:
        return "mtcr", [f"r{f['rs']}"]
    if ins.family in ("bc", "bcreg"):
        return _branch_simplified(ins, f, address)
    return None


def disassemble(word: int, address: int = 0) -> str:
    """GNU-like assembly text of one word, e.g. ``addi r3,r1,-16``.

    Branch targets are absolute addresses (``bne cr0,0x120``) computed from
    ``address``; common simplified mnemonics are used (``li``, ``mr``,
    ``blr``, ``beq``, ``cmpwi``, ``mflr``, ...). FXV instructions print their
    condition operand always (``fxvaddbm v1,v2,v3,0``). A word that is no
    instruction prints as ``.long 0x...``. Every text assembles back to the
    same word with :func:`~.asm.assemble` at the same address.
    """
    word = int(word) & 0xFFFF_FFFF
    try:
        ins, fields = decode(word, address)
    except IllegalInstruction:
        return f".long 0x{word:08x}"
    simple = _simplified(ins, fields, address)
    if simple is not None:
        name, ops = simple
    else:
        name, ops = ins.mnemonic, format_operands(ins, fields, address)
        if ins.mnemonic in ("sync", "wait") and fields[ins.operands[0].name] == 0:
            ops = []
    return f"{name} {','.join(ops)}" if ops else name
