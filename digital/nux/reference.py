"""Reference semantics of the Nux instruction set: plain Python, written for
clarity, one small function per instruction family with the variant's
parameters from :mod:`.isa`.

Sources: Power ISA 2.06 Book I (fixed-point, branch and CR instructions) and
Book III-E (SPRs); for FXV the guide's pseudo-code [NUX ``fxv.tex``],
disambiguated by the processor's RTL where the guide is incomplete or
inconsistent [NUX ``valu.sv``, ``valu_mult_add.sv``, ``vector_permute.sv``,
``vector_compare.sv``, ``vector_pls.sv``] (noted at each place).

State lives in :class:`NuxState`; memory and vector I/O are reached only
through a ``memory`` object with this protocol (the core implements it;
:class:`FlatMemory` is a test double):

* ``fetch(address) -> int``: 32-bit instruction word;
* ``load(address, size) -> int``: unsigned big-endian value, size 1, 2 or 4;
* ``store(address, size, value)``;
* ``load_vector(address) -> np.ndarray``: uint8 (128,), for ``fxvlax``;
* ``store_vector(address, data, mask)``: for ``fxvstax`` (mask always None:
  the store is not predicated [NUX ``vector_ls*.sv`` have no condition]);
* ``io_in(address) -> np.ndarray``: uint8 (128,), for ``fxvinx``;
* ``io_out(address, data, mask)``: for ``fxvoutx``; ``mask`` is a bool
  (128,) per byte, or None when unconditional (C=0).

Faults of the memory are :class:`MemoryFault`; words that are no instruction
are :class:`~.isa.IllegalInstruction`.

Choices where the ISA leaves a result undefined (all *assumed*, the RTL's
divider result is not documented):

* ``divw`` by 0 or 0x8000_0000 / -1, ``divwu`` by 0: RT = 0; with OE=1 OV=1
  and SO=1; CR0 (Rc=1) from the 0 result, SO copied.
* ``mfocrf``: CR fields not selected read as 0.
* ``mtspr XER``: only SO, OV, CA and the byte count (bits 25..31) are kept,
  the reserved bits read 0.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import constants as K

from .isa import Decoded, IllegalInstruction, INSTRUCTIONS, decode

__all__ = ["MemoryFault", "FlatMemory", "NuxState", "step", "execute",
           "VCR_GT", "VCR_LT", "VCR_EQ", "XER_SO", "XER_OV", "XER_CA", "VECTOR_BYTES",
           "mask32", "rotl32", "condition_mask"]

MASK32 = 0xFFFF_FFFF
XER_SO = 0x8000_0000
"""XER bit 32 (IBM 64-bit numbering; bit 0 of the 32-bit register): summary overflow."""
XER_OV = 0x4000_0000
"""XER overflow."""
XER_CA = 0x2000_0000
"""XER carry."""
XER_WRITABLE = 0xE000_007F
"""Bits of XER that ``mtxer`` keeps (SO, OV, CA, byte count), *assumed*."""
VECTOR_BYTES = 128
"""One vector register: 8 slices x 8 halfwords [NUX OPT_VECTOR_SLICES = 8]."""
SLICES = 8
VCR_GT = 0b001
"""Flag bit of the per-byte vector condition register: element > 0 (tested by C=1)."""
VCR_LT = 0b010
"""Element < 0 (tested by C=2)."""
VCR_EQ = 0b100
"""Element == 0 (tested by C=3)."""


class MemoryFault(Exception):
    """An access the memory refuses.

    Attributes
    ----------
    address : int
        First byte of the access.
    size : int
        Bytes accessed.
    reason : str
        Why (outside the memory, misaligned, ...).
    """

    def __init__(self, address: int, size: int, reason: str):
        self.address = int(address) & MASK32
        self.size = int(size)
        self.reason = reason
        super().__init__(f"{reason}: {self.size}-byte access at 0x{self.address:08x}")

    def __reduce__(self):
        return (MemoryFault, (self.address, self.size, self.reason))


class FlatMemory:
    """A test double of the memory protocol: ``size`` bytes of RAM at address 0
    and a vector I/O space that remembers what was written.

    Scalar accesses must be aligned to their size, vector ones to 128 bytes
    (*assumed* as the core's memory, :mod:`.memory`, requires; the hardware
    drops only the two lowest address bits [NUX vector_ls_shared.sv]). The I/O space holds one 128-byte
    vector per address (zeros until written); every ``io_in``/``io_out`` is
    logged in :attr:`io_log` as ``(kind, address, data copy, mask copy)``.
    """

    def __init__(self, size: int = K.PPU_MEMORY_BYTES):
        self.data = bytearray(size)
        self.io = {}
        self.io_log = []

    def _check(self, address, size):
        if address % size:
            raise MemoryFault(address, size, f"misaligned {size}-byte access")
        if not 0 <= address <= len(self.data) - size:
            raise MemoryFault(address, size, f"outside the memory 0x0..0x{len(self.data) - 1:x}")

    def fetch(self, address: int) -> int:
        self._check(address, 4)
        return int.from_bytes(self.data[address:address + 4], "big")

    def load(self, address: int, size: int) -> int:
        self._check(address, size)
        return int.from_bytes(self.data[address:address + size], "big")

    def store(self, address: int, size: int, value: int):
        self._check(address, size)
        self.data[address:address + size] = (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "big")

    def _check_vector(self, address):
        if address % VECTOR_BYTES:
            raise MemoryFault(address, VECTOR_BYTES, "misaligned vector access (128-byte boundary)")
        if not 0 <= address <= len(self.data) - VECTOR_BYTES:
            raise MemoryFault(address, VECTOR_BYTES, f"outside the memory 0x0..0x{len(self.data) - 1:x}")

    def load_vector(self, address: int) -> np.ndarray:
        self._check_vector(address)
        return np.frombuffer(bytes(self.data[address:address + VECTOR_BYTES]), np.uint8).copy()

    def store_vector(self, address: int, data, mask=None):
        self._check_vector(address)
        new = np.asarray(data, np.uint8)
        if mask is not None:
            old = self.load_vector(address)
            new = np.where(np.asarray(mask, bool), new, old).astype(np.uint8)
        self.data[address:address + VECTOR_BYTES] = new.tobytes()

    def io_in(self, address: int) -> np.ndarray:
        data = self.io.get(address & MASK32, np.zeros(VECTOR_BYTES, np.uint8)).copy()
        self.io_log.append(("in", address & MASK32, data.copy(), None))
        return data

    def io_out(self, address: int, data, mask=None):
        address &= MASK32
        data = np.asarray(data, np.uint8).copy()
        old = self.io.get(address, np.zeros(VECTOR_BYTES, np.uint8))
        new = data if mask is None else np.where(np.asarray(mask, bool), data, old).astype(np.uint8)
        self.io[address] = new
        self.io_log.append(("out", address, data, None if mask is None else np.asarray(mask, bool).copy()))

    def write(self, address: int, data: bytes):
        """Place bytes (a program or input data)."""
        self.data[address:address + len(data)] = data

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.data[address:address + size])

    def load_program(self, program):
        """Place a :class:`~.program.Program`'s segments."""
        for seg in program.segments:
            self.write(seg.address, seg.data)


class NuxState:
    """Architectural state of one Nux core.

    Attributes
    ----------
    gpr : list of int
        32 general-purpose registers, each 0..2**32-1.
    cr : int
        Condition register (32 bit; field n in bits 4n..4n+3, IBM numbering:
        LT 8, GT 4, EQ 2, SO 1 of ``(cr >> (28 - 4n)) & 15``).
    lr, ctr, xer : int
        Link, count and fixed-point exception registers (32 bit; XER SO
        0x8000_0000, OV 0x4000_0000, CA 0x2000_0000).
    pc : int
        Address of the next instruction.
    vr : np.ndarray
        uint8 (32, 128): the vector registers, byte 0 the most significant
        byte as in big-endian memory; halfword lane i is bytes 2i..2i+1;
        slice s is bytes 16s..16s+15.
    vcr : np.ndarray
        uint8 (128,): the vector condition register, one set of flags per byte
        lane: :data:`VCR_GT` (1), :data:`VCR_LT` (2), :data:`VCR_EQ` (4). The
        hardware keeps one flag per nibble and always sets and uses them in
        pairs (bytes) or fours (halfwords) [NUX fxv.tex], so per-byte flags
        hold the same information: a byte compare sets one byte's flags, a
        halfword compare both bytes' of its lane. A predicated instruction
        writes each byte of a halfword result (and the matching 16-bit half
        of an accumulator lane) where that byte's flag is set, as the
        hardware's per-nibble write enables do [NUX valu.sv mask_conditional].
    acc : np.ndarray
        Big-endian int32 ``'>i4'`` (64,): the accumulator, one double-width
        (32-bit) element per halfword lane. Byte operations use the same
        storage as 16-bit elements per byte lane (:attr:`acc_b`): byte lane
        2i is the upper half of ``acc[i]``, byte lane 2i+1 the lower half
        [NUX valu.sv: the byte configuration splits each 32-bit element].
    time_base : int
        The time base in PPU cycles (64 bit); the core updates it before each
        instruction; ``mfspr 268/284`` read its low word, 269/285 its high word.
    waiting : bool
        Set by ``wait``.
    halted : bool
        Set by :func:`step` when an instruction faulted (illegal or a memory
        fault); ``pc`` then still points at it.
    """

    def __init__(self):
        self.gpr = [0] * 32
        self.cr = 0
        self.lr = 0
        self.ctr = 0
        self.xer = 0
        self.pc = 0
        self.vr = np.zeros((32, VECTOR_BYTES), np.uint8)
        self.vcr = np.zeros(VECTOR_BYTES, np.uint8)
        self.acc = np.zeros(VECTOR_BYTES // 2, ">i4")
        self.time_base = 0
        self.waiting = False
        self.halted = False

    @property
    def acc_b(self) -> np.ndarray:
        """The accumulator as 128 big-endian int16 elements (byte lanes), a view."""
        return self.acc.view(">i2")

    def copy(self) -> "NuxState":
        new = NuxState()
        new.gpr = list(self.gpr)
        for name in ("cr", "lr", "ctr", "xer", "pc", "time_base", "waiting", "halted"):
            setattr(new, name, getattr(self, name))
        new.vr = self.vr.copy()
        new.vcr = self.vcr.copy()
        new.acc = self.acc.copy()
        return new

    def cr_field(self, n: int) -> int:
        """CR field n (0..7) as 4 bits LT GT EQ SO."""
        return (self.cr >> (28 - 4 * n)) & 0xF

    def cr_bit(self, bit: int) -> int:
        """CR bit (IBM numbering 0..31)."""
        return (self.cr >> (31 - bit)) & 1


# --- integer helpers -----------------------------------------------------------------------
def mask32(x: int) -> int:
    return x & MASK32


def signed32(x: int) -> int:
    x &= MASK32
    return x - (1 << 32) if x & 0x8000_0000 else x


def rotl32(x: int, n: int) -> int:
    x &= MASK32
    n &= 31
    return ((x << n) | (x >> (32 - n))) & MASK32 if n else x


def ppc_mask(mb: int, me: int) -> int:
    """MASK(mb, me) of the ISA: ones from bit mb to bit me (IBM numbering), wrapping
    around when mb > me."""
    def ones_from(b):  # bits b..31
        return MASK32 >> b
    if mb <= me:
        return ones_from(mb) & ~ones_from(me + 1) & MASK32 if me < 31 else ones_from(mb)
    return (ones_from(mb) | ~ones_from(me + 1)) & MASK32


def _set_cr_field(st, n, bits):
    shift = 28 - 4 * n
    st.cr = (st.cr & ~(0xF << shift) & MASK32) | ((bits & 0xF) << shift)


def _compare_bits(a: int, b: int, so: int) -> int:
    return (8 if a < b else 4 if a > b else 2) | so


def _record(st, value):
    """CR0 from a result (signed compare with 0) and XER[SO]."""
    _set_cr_field(st, 0, _compare_bits(signed32(value), 0, 1 if st.xer & XER_SO else 0))


def _set_ca(st, ca):
    st.xer = (st.xer | XER_CA) if ca else (st.xer & ~XER_CA & MASK32)


def _set_ov(st, ov):
    st.xer = (st.xer | XER_OV | XER_SO) if ov else (st.xer & ~XER_OV & MASK32)


def _ea(st, f, key="d"):
    """(RA|0) + D or (RA|0) + (RB)."""
    base = st.gpr[f["ra"]] if f["ra"] else 0
    offset = f[key] if key == "d" else st.gpr[f["rb"]]
    return (base + offset) & MASK32


# --- fixed-point families ------------------------------------------------------------------
def _addi(st, mem, f, p):
    base = st.gpr[f["ra"]] if f["ra"] else 0
    st.gpr[f["rt"]] = (base + (f["si"] << p["shift"])) & MASK32


def _addic(st, mem, f, p):
    total = st.gpr[f["ra"]] + (f["si"] & MASK32)
    st.gpr[f["rt"]] = total & MASK32
    _set_ca(st, total >> 32)
    if p["record"]:
        _record(st, total)


def _subfic(st, mem, f, p):
    total = (~st.gpr[f["ra"]] & MASK32) + (f["si"] & MASK32) + 1
    st.gpr[f["rt"]] = total & MASK32
    _set_ca(st, total >> 32)


def _mulli(st, mem, f, p):
    st.gpr[f["rt"]] = (signed32(st.gpr[f["ra"]]) * f["si"]) & MASK32


def _cmp(st, mem, f, p):
    a = st.gpr[f["ra"]]
    b = f["si"] if p["imm"] and p["signed"] else f["ui"] if p["imm"] else st.gpr[f["rb"]]
    if p["signed"]:
        a, b = signed32(a), signed32(b)
    else:
        b &= MASK32
    _set_cr_field(st, f["bf"], _compare_bits(a, b, 1 if st.xer & XER_SO else 0))


_LOGIC = {
    "and": lambda a, b: a & b,
    "andc": lambda a, b: a & ~b,
    "or": lambda a, b: a | b,
    "orc": lambda a, b: a | ~b,
    "xor": lambda a, b: a ^ b,
    "nand": lambda a, b: ~(a & b),
    "nor": lambda a, b: ~(a | b),
    "eqv": lambda a, b: ~(a ^ b),
}


def _logic_imm(st, mem, f, p):
    result = _LOGIC[p["op"]](st.gpr[f["rs"]], f["ui"] << p["shift"]) & MASK32
    st.gpr[f["ra"]] = result
    if p["record"]:
        _record(st, result)


def _logic(st, mem, f, p):
    result = _LOGIC[p["op"]](st.gpr[f["rs"]], st.gpr[f["rb"]]) & MASK32
    st.gpr[f["ra"]] = result
    if p["rc"]:
        _record(st, result)


def _arith_operands(st, f, op):
    """(x, y, carry in, writes CA) of the XO-form add/subtract family: RT = x + y + cin."""
    ra = st.gpr[f["ra"]]
    rb = st.gpr[f["rb"]] if "rb" in f else 0
    ca = 1 if st.xer & XER_CA else 0
    not_ra = ~ra & MASK32
    return {
        "add": (ra, rb, 0, False), "addc": (ra, rb, 0, True), "adde": (ra, rb, ca, True),
        "addze": (ra, 0, ca, True), "addme": (ra, MASK32, ca, True),
        "subf": (not_ra, rb, 1, False), "subfc": (not_ra, rb, 1, True),
        "subfe": (not_ra, rb, ca, True), "subfze": (not_ra, 0, ca, True),
        "subfme": (not_ra, MASK32, ca, True), "neg": (not_ra, 0, 1, False),
    }[op]


def _arith(st, mem, f, p):
    x, y, cin, writes_ca = _arith_operands(st, f, p["op"])
    total = x + y + cin
    result = total & MASK32
    st.gpr[f["rt"]] = result
    if writes_ca:
        _set_ca(st, total >> 32)
    if p["oe"]:
        # Signed overflow: the operands have the same sign and the result another.
        sx, sy, sr = x >> 31, y >> 31, result >> 31
        _set_ov(st, sx == sy and sr != sx)
    if p["rc"]:
        _record(st, result)


def _mul(st, mem, f, p):
    a, b = st.gpr[f["ra"]], st.gpr[f["rb"]]
    op = p["op"]
    if op == "mulhwu":
        result = ((a * b) >> 32) & MASK32
    else:
        product = signed32(a) * signed32(b)
        result = (product >> 32) & MASK32 if op == "mulhw" else product & MASK32
        if op == "mullw" and p["oe"]:
            _set_ov(st, not -(1 << 31) <= product < (1 << 31))
    st.gpr[f["rt"]] = result
    if p["rc"]:
        _record(st, result)


def _div(st, mem, f, p):
    a, b = st.gpr[f["ra"]], st.gpr[f["rb"]]
    if p["op"] == "divw":
        sa, sb = signed32(a), signed32(b)
        overflow = sb == 0 or (sa == -(1 << 31) and sb == -1)
        # Quotient rounded toward zero (Python's // rounds toward -inf).
        result = 0 if overflow else (abs(sa) // abs(sb)) * (1 if (sa < 0) == (sb < 0) else -1)
    else:
        overflow = b == 0
        result = 0 if overflow else a // b
    result &= MASK32
    st.gpr[f["rt"]] = result
    if p["oe"]:
        _set_ov(st, overflow)
    if p["rc"]:
        _record(st, result)


def _shift(st, mem, f, p):
    rs = st.gpr[f["rs"]]
    op = p["op"]
    if op in ("slw", "srw"):
        n = st.gpr[f["rb"]] & 0x3F          # six bits: amounts 32..63 give 0
        result = 0 if n > 31 else ((rs << n) if op == "slw" else (rs >> n)) & MASK32
    else:
        n = f["sh"] if op == "srawi" else st.gpr[f["rb"]] & 0x3F
        value = signed32(rs)
        if n > 31:
            result = MASK32 if value < 0 else 0
            ca = value < 0
        else:
            result = (value >> n) & MASK32
            ca = value < 0 and (rs & ((1 << n) - 1)) != 0   # 1 bits shifted out of a negative
        _set_ca(st, ca)
    st.gpr[f["ra"]] = result
    if p["rc"]:
        _record(st, result)


def _unary(st, mem, f, p):
    rs = st.gpr[f["rs"]]
    op = p["op"]
    if op == "extsb":
        result = (rs & 0xFF) - (0x100 if rs & 0x80 else 0)
    elif op == "extsh":
        result = (rs & 0xFFFF) - (0x10000 if rs & 0x8000 else 0)
    else:  # cntlzw
        result = 32 - rs.bit_length()
    result &= MASK32
    st.gpr[f["ra"]] = result
    if p["rc"]:
        _record(st, result)


def _rotate(st, mem, f, p):
    rs = st.gpr[f["rs"]]
    n = st.gpr[f["rb"]] & 0x1F if p["op"] == "rlwnm" else f["sh"]
    m = ppc_mask(f["mb"], f["me"])
    rotated = rotl32(rs, n)
    if p["op"] == "rlwimi":
        result = (rotated & m) | (st.gpr[f["ra"]] & ~m & MASK32)
    else:
        result = rotated & m
    st.gpr[f["ra"]] = result
    if p["rc"]:
        _record(st, result)


# --- loads and stores ----------------------------------------------------------------------
def _load(st, mem, f, p):
    ea = _ea(st, f, "rb" if p["indexed"] else "d")
    value = mem.load(ea, p["size"])
    if p["signed"] and value & 0x8000:
        value = (value - 0x10000) & MASK32
    st.gpr[f["rt"]] = value
    if p["update"]:
        st.gpr[f["ra"]] = ea


def _store(st, mem, f, p):
    ea = _ea(st, f, "rb" if p["indexed"] else "d")
    mem.store(ea, p["size"], st.gpr[f["rs"]] & ((1 << (8 * p["size"])) - 1))
    if p["update"]:
        st.gpr[f["ra"]] = ea


def _lmw(st, mem, f, p):
    ea = _ea(st, f)
    for r in range(f["rt"], 32):
        st.gpr[r] = mem.load(ea, 4)
        ea = (ea + 4) & MASK32


def _stmw(st, mem, f, p):
    ea = _ea(st, f)
    for r in range(f["rs"], 32):
        mem.store(ea, 4, st.gpr[r])
        ea = (ea + 4) & MASK32


# --- branches and the condition register ------------------------------------------------------
def _branch_condition(st, bo: int, bi: int) -> bool:
    """Decrement CTR if BO_2 = 0 and evaluate BO/BI (Power ISA 2.06 Book I 2.4).

    BO bits (IBM): 0 ignore the CR bit, 1 the value the CR bit must have,
    2 do not decrement CTR, 3 branch if CTR == 0 (else if CTR != 0), 4 (and
    the 'a' bit 1 of the CR-only forms) hints.
    """
    bo0, bo1, bo2, bo3 = (bo >> 4) & 1, (bo >> 3) & 1, (bo >> 2) & 1, (bo >> 1) & 1
    if not bo2:
        st.ctr = (st.ctr - 1) & MASK32
    ctr_ok = bo2 or ((st.ctr != 0) != bool(bo3))
    cond_ok = bo0 or (st.cr_bit(bi) == bo1)
    return bool(ctr_ok and cond_ok)


def _b(st, mem, f, p):
    pc = st.pc
    if p["lk"]:
        st.lr = (pc + 4) & MASK32
    st.pc = f["li"] & MASK32 if p["aa"] else (pc + f["li"]) & MASK32


def _bc(st, mem, f, p):
    pc = st.pc
    taken = _branch_condition(st, f["bo"], f["bi"])
    if p["lk"]:
        st.lr = (pc + 4) & MASK32
    if taken:
        st.pc = f["bd"] & MASK32 if p["aa"] else (pc + f["bd"]) & MASK32
    else:
        st.pc = (pc + 4) & MASK32


def _bcreg(st, mem, f, p):
    pc = st.pc
    taken = _branch_condition(st, f["bo"], f["bi"])
    # The target is read before LR is written (bclrl branches to the old LR).
    target = (st.lr if p["target"] == "lr" else st.ctr) & ~3 & MASK32
    if p["lk"]:
        st.lr = (pc + 4) & MASK32
    st.pc = target if taken else (pc + 4) & MASK32


_CRLOGIC = {
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "nand": lambda a, b: 1 - (a & b), "nor": lambda a, b: 1 - (a | b),
    "eqv": lambda a, b: 1 - (a ^ b), "andc": lambda a, b: a & (1 - b),
    "orc": lambda a, b: a | (1 - b),
}


def _crlogic(st, mem, f, p):
    bit = _CRLOGIC[p["op"]](st.cr_bit(f["ba"]), st.cr_bit(f["bb"]))
    shift = 31 - f["bt"]
    st.cr = (st.cr & ~(1 << shift) & MASK32) | (bit << shift)


def _mcrf(st, mem, f, p):
    _set_cr_field(st, f["bf"], st.cr_field(f["bfa"]))


def _fxm_mask(fxm: int) -> int:
    """CR bits selected by FXM: its bit i (IBM, i = 0 the leftmost of 8) selects CR field i."""
    mask = 0
    for i in range(8):
        if fxm & (0x80 >> i):
            mask |= 0xF << (28 - 4 * i)
    return mask


def _mfcr(st, mem, f, p):
    st.gpr[f["rt"]] = st.cr


def _mfocrf(st, mem, f, p):
    st.gpr[f["rt"]] = st.cr & _fxm_mask(f["fxm"])


def _mtcrf(st, mem, f, p):
    m = _fxm_mask(f["fxm"])
    st.cr = (st.cr & ~m & MASK32) | (st.gpr[f["rs"]] & m)


def _mfspr(st, mem, f, p):
    spr = f["spr"]
    if spr == 1:
        v = st.xer
    elif spr == 8:
        v = st.lr
    elif spr == 9:
        v = st.ctr
    elif spr in (268, 284):
        v = st.time_base & MASK32
    elif spr in (269, 285):
        v = (st.time_base >> 32) & MASK32
    else:  # the decoder refuses other SPRs; kept for predecoded words built by hand
        raise IllegalInstruction(mem.fetch(st.pc), st.pc, f"mfspr of unimplemented SPR {spr}")
    st.gpr[f["rt"]] = v & MASK32


def _mtspr(st, mem, f, p):
    spr, v = f["spr"], st.gpr[f["rs"]]
    if spr == 1:
        st.xer = v & XER_WRITABLE
    elif spr == 8:
        st.lr = v
    elif spr == 9:
        st.ctr = v
    else:
        raise IllegalInstruction(mem.fetch(st.pc), st.pc, f"mtspr of unwritable SPR {spr}")


def _nop(st, mem, f, p):
    pass  # sync/isync: ordering only; the core charges their waiting


def _wait(st, mem, f, p):
    st.waiting = True


# --- FXV: lanes, predication -------------------------------------------------------------------
def condition_mask(st, c: int) -> np.ndarray:
    """Per-byte enable of an FXV instruction with condition field C: bool (128,).

    C = 0 always, 1 where GT, 2 where LT, 3 where EQ [NUX fxv.tex ``conditional``].
    """
    if c == 0:
        return np.ones(VECTOR_BYTES, bool)
    return (st.vcr >> (c - 1)) & 1 == 1


def _lanes(v: np.ndarray, lane: int) -> np.ndarray:
    """Signed lane values of a vector (64 halfwords or 128 bytes) as int64."""
    return (v.view(">i2") if lane == 16 else v.view(np.int8)).astype(np.int64)


def _lane_bytes(values: np.ndarray, lane: int) -> np.ndarray:
    """Lane values (any integers, kept modulo 2**lane) as the 128 big-endian bytes."""
    wrapped = np.asarray(values, np.int64) & ((1 << lane) - 1)
    return wrapped.astype(">u2").view(np.uint8) if lane == 16 else wrapped.astype(np.uint8)


def _acc_read(st, lane: int) -> np.ndarray:
    """Accumulator elements of the lane width (32 bit for halfword, 16 for byte lanes)."""
    return (st.acc if lane == 16 else st.acc_b).astype(np.int64)


def _acc_bytes(values: np.ndarray, lane: int) -> np.ndarray:
    """Accumulator values (modulo 2**(2 lane)) as 128 big-endian int16 halves, one per byte lane."""
    wrapped = np.asarray(values, np.int64) & ((1 << (2 * lane)) - 1)
    if lane == 16:
        return wrapped.astype(">u4").view(">i2")
    return wrapped.astype(np.uint16).astype(">u2").view(">i2")


def _sat(x: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _mult_sat_fract(a: np.ndarray, b: np.ndarray, lane: int) -> np.ndarray:
    """The guide's mult_sat_fract(a, b, n): 2ab, except -1 x -1 gives 2**(2n-1) - 1."""
    both_min = (a == -(1 << (lane - 1))) & (b == -(1 << (lane - 1)))
    return np.where(both_min, (1 << (2 * lane - 1)) - 1, 2 * a * b)


# The FXV arithmetic: op -> (destination, formula(a, b, m, n)) on lane values a, b
# (signed n-bit), accumulator elements m (signed 2n-bit). A "vrt" result is
# written modulo 2**n, an "acc" result modulo 2**(2n); saturating formulas
# already give values in range. Fractional variants align a single-width
# operand with the upper half of the double-width element (a << n) [NUX
# valu_mult_add.sv: the "sign_extend" of the guide's fractional pseudo-code is
# that left alignment, which its add_sat_fract and final shift_right imply].
_FXV_ARITH = {
    "ma_mod": ("vrt", lambda a, b, m, n: a * b + m),
    "matac_mod": ("acc", lambda a, b, m, n: a * b + m),
    "mul_mod": ("vrt", lambda a, b, m, n: a * b),
    "multac_mod": ("acc", lambda a, b, m, n: a * b),
    "sub_mod": ("vrt", lambda a, b, m, n: a - b),
    "addactac_mod": ("acc", lambda a, b, m, n: a + m),
    "addtac_mod": ("acc", lambda a, b, m, n: a + b),
    "addac_mod": ("vrt", lambda a, b, m, n: a + m),
    "add_mod": ("vrt", lambda a, b, m, n: a + b),
    "mtac": ("acc", lambda a, b, m, n: a),
    "ma_fs": ("vrt", lambda a, b, m, n: _sat(_mult_sat_fract(a, b, n) + m, 2 * n) >> n),
    "mtac_f": ("acc", lambda a, b, m, n: a << n),
    "matac_fs": ("acc", lambda a, b, m, n: _sat(_mult_sat_fract(a, b, n) + m, 2 * n)),
    "mul_fs": ("vrt", lambda a, b, m, n: _mult_sat_fract(a, b, n) >> n),
    "multac_fs": ("acc", lambda a, b, m, n: _mult_sat_fract(a, b, n)),
    "sub_fs": ("vrt", lambda a, b, m, n: _sat(a - b, n)),
    "addactac_fs": ("acc", lambda a, b, m, n: _sat((a << n) + m, 2 * n)),
    "addac_fs": ("vrt", lambda a, b, m, n: _sat((a << n) + m, 2 * n) >> n),
    "add_fs": ("vrt", lambda a, b, m, n: _sat(a + b, n)),
}


def _fxv_arith(st, mem, f, p):
    n = p["lane"]
    dest, formula = _FXV_ARITH[p["op"]]
    a = _lanes(st.vr[f["vra"]], n)
    b = _lanes(st.vr[f["vrb"]], n) if "vrb" in f else np.zeros_like(a)
    m = _acc_read(st, n)
    result = formula(a, b, m, n)
    enable = condition_mask(st, f.get("c", 0))
    if dest == "vrt":
        t = st.vr[f["vrt"]]
        t[enable] = _lane_bytes(result, n)[enable]
    else:
        acc_b = st.acc_b
        acc_b[enable] = _acc_bytes(result, n)[enable]


def _fxv_cmp(st, mem, f, p):
    n = p["lane"]
    u = _lanes(st.vr[f["vra"]], n)
    flags = np.where(u > 0, VCR_GT, np.where(u < 0, VCR_LT, VCR_EQ)).astype(np.uint8)
    st.vcr[:] = np.repeat(flags, 2) if n == 16 else flags


def _fxv_splat(st, mem, f, p):
    value = st.gpr[f["ra"]]
    if p["lane"] == 16:
        st.vr[f["vrt"]] = _lane_bytes(np.full(64, value & 0xFFFF), 16)
    else:
        st.vr[f["vrt"]] = value & 0xFF


def _fxv_shift(st, mem, f, p):
    """Shift each lane left by sh (-16..15); negative amounts shift right,
    filling zeros [NUX vector_permute.sv shifth/shiftb: a logical shift; libnux
    relies on it being logical when it restores the sign by hand]."""
    n, sh = p["lane"], f["sh"]
    u = st.vr[f["vra"]].view(">u2").astype(np.int64) if n == 16 else st.vr[f["vra"]].astype(np.int64)
    result = (u << sh) if sh >= 0 else (u >> -sh)
    st.vr[f["vrt"]] = _lane_bytes(result, n)


def _fxv_sel(st, mem, f, p):
    """Per byte: VRB where the condition holds, else VRA; C = 0 always takes VRB
    [NUX fxv.tex; vector_permute.sv select]."""
    enable = condition_mask(st, f["c"])
    st.vr[f["vrt"]] = np.where(enable, st.vr[f["vrb"]], st.vr[f["vra"]])


def _fxv_pack(st, mem, f, p):
    """Pack/unpack between halfword and byte elements, per 16-byte slice; the C
    field is the size parameter s (0..3) [NUX fxv.tex; the guide's pseudo-code
    shows a 4-halfword slice and leaves the unpacks empty, the RTL
    vector_permute.sv defines them for 8 halfwords per slice]:

    * pack upper: byte i = (upper byte of halfword i of VRA|VRB) >> s;
    * pack lower: byte i = (upper byte & (2**s - 1)) << (8 - 2s) | lower byte >> 2s,
      of halfword i of VRA|VRB (i < 8: VRA, else VRB);
    * unpack left (right): halfword i of the result from byte i (i + 8) of
      VRA (u) and of VRB (v): upper byte (u << s) | (v >> (8 - 2s)) & (2**s - 1),
      lower byte v << 2s, each kept to 8 bits. With s = 0 the unpack gives
      halfwords (u, v), the inverse of packing the upper bytes of (u, v) halves.
    """
    s = f["c"]
    a = st.vr[f["vra"]].reshape(SLICES, 16).astype(np.int64)
    b = st.vr[f["vrb"]].reshape(SLICES, 16).astype(np.int64)
    op = p["op"]
    if op in ("pack_upper", "pack_lower"):
        src = np.concatenate([a, b], axis=1)           # 16 halfwords per slice
        upper, lower = src[:, 0::2], src[:, 1::2]
        if op == "pack_upper":
            out = upper >> s
        else:
            out = ((upper & ((1 << s) - 1)) << (8 - 2 * s)) | (lower >> (2 * s))
    else:
        half = slice(0, 8) if op == "unpack_left" else slice(8, 16)
        u, v = a[:, half], b[:, half]
        hi = ((u << s) & 0xFF) | ((v >> (8 - 2 * s)) & ((1 << s) - 1))
        lo = (v << (2 * s)) & 0xFF
        out = np.stack([hi, lo], axis=2).reshape(SLICES, 16)
    st.vr[f["vrt"]] = (out & 0xFF).astype(np.uint8).reshape(VECTOR_BYTES)


def _fxv_lax(st, mem, f, p):
    st.vr[f["vrt"]] = np.asarray(mem.load_vector(_ea(st, f, "rb")), np.uint8)


def _fxv_stax(st, mem, f, p):
    mem.store_vector(_ea(st, f, "rb"), st.vr[f["vrt"]].copy(), None)


def _fxv_inx(st, mem, f, p):
    data = np.asarray(mem.io_in(_ea(st, f, "rb")), np.uint8)
    enable = condition_mask(st, f["c"])
    st.vr[f["vrt"]][enable] = data[enable]


def _fxv_outx(st, mem, f, p):
    enable = condition_mask(st, f["c"])
    # Disabled bytes are sent as 0 and masked [NUX fxv.tex fxvoutx].
    data = np.where(enable, st.vr[f["vrt"]], 0).astype(np.uint8)
    mem.io_out(_ea(st, f, "rb"), data, None if f["c"] == 0 else enable)


_FAMILIES = {
    "addi": _addi, "addic": _addic, "subfic": _subfic, "mulli": _mulli, "cmp": _cmp,
    "logic_imm": _logic_imm, "logic": _logic, "arith": _arith, "mul": _mul, "div": _div,
    "shift": _shift, "unary": _unary, "rotate": _rotate, "load": _load, "store": _store,
    "lmw": _lmw, "stmw": _stmw, "b": _b, "bc": _bc, "bcreg": _bcreg, "crlogic": _crlogic,
    "mcrf": _mcrf, "mfcr": _mfcr, "mfocrf": _mfocrf, "mtcrf": _mtcrf, "mfspr": _mfspr,
    "mtspr": _mtspr, "nop": _nop, "wait": _wait, "fxv_arith": _fxv_arith, "fxv_cmp": _fxv_cmp,
    "fxv_splat": _fxv_splat, "fxv_shift": _fxv_shift, "fxv_sel": _fxv_sel, "fxv_pack": _fxv_pack,
    "fxv_lax": _fxv_lax, "fxv_stax": _fxv_stax, "fxv_inx": _fxv_inx, "fxv_outx": _fxv_outx,
}
_BRANCHES = {"b", "bc", "bcreg"}
_missing = {ins.family for ins in INSTRUCTIONS} - set(_FAMILIES)
if _missing:
    raise RuntimeError(f"families without semantics: {sorted(_missing)}")
del _missing


def execute(state: NuxState, memory, decoded: Decoded) -> None:
    """Execute one predecoded instruction at ``state.pc``.

    Updates the state (registers, flags, memory through ``memory``) and the
    program counter: the next instruction, or the branch target.

    Raises
    ------
    MemoryFault
        From the memory; the state may be partly updated (``pc`` unchanged).
    IllegalInstruction
        For an SPR the model does not implement (a hand-built Decoded).
    """
    ins, fields = decoded
    _FAMILIES[ins.family](state, memory, fields, ins.params)
    if ins.family not in _BRANCHES:
        state.pc = (state.pc + 4) & MASK32


def step(state: NuxState, memory) -> Decoded:
    """Fetch, decode and execute the instruction at ``state.pc``.

    Returns
    -------
    Decoded
        The executed instruction (so the core can charge its cycles).

    Raises
    ------
    IllegalInstruction
        With the instruction's address; ``state.halted`` is set, ``pc`` unchanged.
    MemoryFault
        From the fetch or the access; ``state.halted`` is set, ``pc`` unchanged.
    """
    pc = state.pc
    try:
        decoded = decode(memory.fetch(pc), pc)
        execute(state, memory, decoded)
    except (IllegalInstruction, MemoryFault):
        state.pc = pc
        state.halted = True
        raise
    return decoded
