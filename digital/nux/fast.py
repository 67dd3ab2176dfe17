"""The fast engine of the Nux core: predecoded instructions and a numba
interpreter, bit for bit the same as :meth:`.core.Nux.run` over
:func:`.reference.execute`.

How it works
------------
* **Predecoding.** Every word of the internal SRAM that is executed is decoded
  once with :func:`.isa.decode` (in Python) and turned into one int64 row of
  :data:`NUM_COLUMNS` columns: an operation id (one per distinct semantics,
  ``OP_*``), its operand fields (``C_T``, ``C_A``, ``C_B``, ``C_IMM``, ...),
  the variant flags (Rc, OE, AA, LK, update, indexed, the FXV condition) and
  the cycle-model class (``C_KIND``, ``C_UNIT``). Rows of a word value are
  cached for all PPUs (:func:`predecode`); a PPU's table holds one row per SRAM
  word, decoded lazily when the word is first executed, and a row is dropped
  when its word changes: by a store of the program (the interpreter marks the
  row) or from outside between runs (a compare of the SRAM with the words the
  rows were made from). Self-modifying code therefore just works.
* **Interpreting.** :func:`_run` (numba, one thread) executes rows on the
  machine state in numpy arrays: the PPU's own vector registers, vector
  condition register and accumulator (``state.vr``, ``state.vcr``, a byte view
  of ``state.acc``: no copies), the GPRs and the scalar registers in small
  int64 arrays, the SRAM and the external memory as uint8 views of their
  bytearrays, and the vector FIFO. It implements every instruction family of
  :mod:`.reference` and the cycle model of :meth:`.core.Nux.run` (scalar costs
  per unit, external accesses, vector FIFO, vector unit busy-until time,
  ``sync`` waiting for the vector unit, the time base, ``mem.now``,
  ``mem.io_kind``).
* **Falling back.** The interpreter stops *before* an instruction it does not
  do: vector I/O to the chip half (CADC, synapse rows, neuron resets) or the
  random generator (their models are Python: :class:`.memory.AnalogHalf`, the
  memory's numpy generator), a misaligned or out-of-map access, a program
  counter outside the SRAM, an illegal word. :func:`_python_step` executes
  that one instruction exactly as one pass of the loop of :meth:`.core.Nux.run`
  does (the same decode, :func:`.reference.execute`, cycle model and errors),
  and the interpreter goes on. Vector I/O to the external memory
  (``fxvinx``/``fxvoutx`` at 0x8000_0000 + n) and scalar and vector accesses
  to its data view run in numba.

:func:`run_fast` is the public entry (same arguments, result and errors as
:meth:`.core.Nux.run`); :func:`benchmark` measures instructions per second.
"""
from __future__ import annotations

import inspect
import time
import weakref

import numpy as np
from numba import njit

from bss2sim.circuits.checks import check_int

# core is imported as a module (not its names): core may import this module
# while it is itself being imported.
from . import core as _core
from . import isa, reference
from .memory import EXTMEM_BYTES, EXTMEM_DATA_BASE, IO_EXTMEM_BASE, SRAM_BYTES

__all__ = ["run_fast", "predecode", "benchmark", "NUM_COLUMNS", "OP_NAMES"]

M32 = 0xFFFF_FFFF
_SRAM_WORDS = SRAM_BYTES // 4
_XER_SO = reference.XER_SO
_XER_CA = reference.XER_CA
_XER_OV = reference.XER_OV
_XER_WRITABLE = reference.XER_WRITABLE
_VBYTES = reference.VECTOR_BYTES

# --- the predecoded row ------------------------------------------------------------------
# Columns of one row (int64). Fields are named by the role they play in the
# interpreter; which instruction field lands where is set in _row_of.
C_OP = 0      # operation id (OP_*)
C_T = 1       # rt / rs / bf / bo / bt / vrt: the "target" register-like field
C_A = 2       # ra / bi / ba / bfa / vra
C_B = 3       # rb / sh / bb / vrb
C_IMM = 4     # immediate: si, ui (pre-shifted), d, li, bd, rotate mask, CR mask, vector sh
C_P = 5       # parameter: access size, logic/cr op, arith encoding, spr, FXV op, signed compare
C_Q = 6       # second parameter: signed load, FXV lane width (8 or 16), immediate compare
C_RC = 7      # Rc (record to CR0); FXV arithmetic: 1 if the result goes to the accumulator
C_OE = 8      # OE (record overflow)
C_AA = 9      # AA (absolute branch target)
C_LK = 10     # LK (link)
C_UPD = 11    # update form of a load/store
C_IDX = 12    # indexed (X-form) load/store
C_C = 13      # FXV condition / pack size field
C_KIND = 14   # cycle-model class: K_SCALAR, K_VECTOR, K_SYNC
C_UNIT = 15   # index of the unit in the cost tables (UNIT_IDS)
NUM_COLUMNS = 16
"""Columns of a predecoded row."""

K_SCALAR, K_VECTOR, K_SYNC = 0, 1, 2

OP_NAMES = (
    # rows that stop the interpreter before the instruction
    "DECODE", "ILLEGAL", "PYTHON",
    # fixed point
    "ADDI", "ADDIC", "SUBFIC", "MULLI", "CMP", "LOGICI", "LOGIC", "ARITH",
    "MULLW", "MULHW", "MULHWU", "DIVW", "DIVWU", "SLW", "SRW", "SRAW", "SRAWI",
    "EXTSB", "EXTSH", "CNTLZW", "RLWINM", "RLWNM", "RLWIMI",
    # memory
    "LOAD", "STORE", "LMW", "STMW",
    # branches, CR, SPRs
    "B", "BC", "BCLR", "BCCTR", "CRLOGIC", "MCRF", "MFCR", "MTCRF", "MFSPR", "MTSPR",
    "NOP", "WAIT",
    # FXV
    "VARITH", "VCMP", "VSPLAT", "VSHIFT", "VSEL", "VPACK", "VLAX", "VSTAX", "VINX", "VOUTX",
)
"""Operation ids of the interpreter, in order (``OP_<name>`` = index)."""
(OP_DECODE, OP_ILLEGAL, OP_PYTHON,
 OP_ADDI, OP_ADDIC, OP_SUBFIC, OP_MULLI, OP_CMP, OP_LOGICI, OP_LOGIC, OP_ARITH,
 OP_MULLW, OP_MULHW, OP_MULHWU, OP_DIVW, OP_DIVWU, OP_SLW, OP_SRW, OP_SRAW, OP_SRAWI,
 OP_EXTSB, OP_EXTSH, OP_CNTLZW, OP_RLWINM, OP_RLWNM, OP_RLWIMI,
 OP_LOAD, OP_STORE, OP_LMW, OP_STMW,
 OP_B, OP_BC, OP_BCLR, OP_BCCTR, OP_CRLOGIC, OP_MCRF, OP_MFCR, OP_MTCRF, OP_MFSPR, OP_MTSPR,
 OP_NOP, OP_WAIT,
 OP_VARITH, OP_VCMP, OP_VSPLAT, OP_VSHIFT, OP_VSEL, OP_VPACK, OP_VLAX, OP_VSTAX, OP_VINX,
 OP_VOUTX) = range(len(OP_NAMES))

# Two-input logic of the X/D forms and of the CR instructions.
_LOGIC_OPS = ("and", "andc", "or", "orc", "xor", "nand", "nor", "eqv")

# The XO-form add/subtract family as RT = x + y + carry_in [reference._arith_operands],
# packed into C_P: bit 0 x = ~RA (else RA); bits 1-2 y = RB (0), 0 (1), 0xffffffff (2);
# bits 3-4 carry in 0 (0), 1 (1), XER[CA] (2); bit 5 writes CA.
_ARITH = {
    "add": (0, 0, 0, 0), "addc": (0, 0, 0, 1), "adde": (0, 0, 2, 1), "addze": (0, 1, 2, 1),
    "addme": (0, 2, 2, 1), "subf": (1, 0, 1, 0), "subfc": (1, 0, 1, 1), "subfe": (1, 0, 2, 1),
    "subfze": (1, 1, 2, 1), "subfme": (1, 2, 2, 1), "neg": (1, 1, 1, 0),
}

# FXV arithmetic ops in the order of their ids (C_P of OP_VARITH).
_FXV_OPS = ("ma_mod", "matac_mod", "mul_mod", "multac_mod", "sub_mod", "addactac_mod",
            "addtac_mod", "addac_mod", "add_mod", "mtac", "ma_fs", "mtac_f", "matac_fs",
            "mul_fs", "multac_fs", "sub_fs", "addactac_fs", "addac_fs", "add_fs")
(V_MA_MOD, V_MATAC_MOD, V_MUL_MOD, V_MULTAC_MOD, V_SUB_MOD, V_ADDACTAC_MOD, V_ADDTAC_MOD,
 V_ADDAC_MOD, V_ADD_MOD, V_MTAC, V_MA_FS, V_MTAC_F, V_MATAC_FS, V_MUL_FS, V_MULTAC_FS,
 V_SUB_FS, V_ADDACTAC_FS, V_ADDAC_FS, V_ADD_FS) = range(len(_FXV_OPS))
_PACK_OPS = ("pack_upper", "pack_lower", "unpack_left", "unpack_right")

UNIT_IDS = {u: i for i, u in enumerate(sorted(isa.UNITS))}
"""Unit name -> index into the cost tables."""


def _row_of(decoded) -> np.ndarray:
    """The predecoded row of one decoded instruction (see the ``C_*`` columns)."""
    ins, f = decoded
    p = ins.params
    fam = ins.family
    row = np.zeros(NUM_COLUMNS, np.int64)
    row[C_UNIT] = UNIT_IDS[ins.unit]
    if ins.unit in _core.VECTOR_UNITS:
        row[C_KIND] = K_VECTOR
    elif ins.mnemonic in ("sync", "isync"):
        row[C_KIND] = K_SYNC
    else:
        row[C_KIND] = K_SCALAR

    def put(op, t=0, a=0, b=0, imm=0, pp=0, q=0):
        row[C_OP], row[C_T], row[C_A], row[C_B], row[C_IMM], row[C_P], row[C_Q] = \
            op, t, a, b, imm, pp, q

    rc = p.get("rc", p.get("record", 0))
    row[C_RC] = rc
    row[C_OE] = p.get("oe", 0)
    if fam == "addi":
        put(OP_ADDI, f["rt"], f["ra"], imm=(f["si"] << p["shift"]))
    elif fam == "addic":
        put(OP_ADDIC, f["rt"], f["ra"], imm=f["si"] & M32)
    elif fam == "subfic":
        put(OP_SUBFIC, f["rt"], f["ra"], imm=f["si"] & M32)
    elif fam == "mulli":
        put(OP_MULLI, f["rt"], f["ra"], imm=f["si"])
    elif fam == "cmp":
        if p["imm"]:
            imm = f["si"] if p["signed"] else f["ui"]
            put(OP_CMP, f["bf"], f["ra"], 0, imm, int(p["signed"]), 1)
        else:
            put(OP_CMP, f["bf"], f["ra"], f["rb"], 0, int(p["signed"]), 0)
    elif fam == "logic_imm":
        put(OP_LOGICI, f["ra"], f["rs"], 0, f["ui"] << p["shift"], _LOGIC_OPS.index(p["op"]))
    elif fam == "logic":
        put(OP_LOGIC, f["ra"], f["rs"], f["rb"], 0, _LOGIC_OPS.index(p["op"]))
    elif fam == "arith":
        xn, yk, ck, wca = _ARITH[p["op"]]
        put(OP_ARITH, f["rt"], f["ra"], f.get("rb", 0), 0, xn | (yk << 1) | (ck << 3) | (wca << 5))
    elif fam == "mul":
        put({"mullw": OP_MULLW, "mulhw": OP_MULHW, "mulhwu": OP_MULHWU}[p["op"]],
            f["rt"], f["ra"], f["rb"])
    elif fam == "div":
        put({"divw": OP_DIVW, "divwu": OP_DIVWU}[p["op"]], f["rt"], f["ra"], f["rb"])
    elif fam == "shift":
        op = {"slw": OP_SLW, "srw": OP_SRW, "sraw": OP_SRAW, "srawi": OP_SRAWI}[p["op"]]
        put(op, f["ra"], f["rs"], f["sh"] if p["op"] == "srawi" else f["rb"])
    elif fam == "unary":
        put({"extsb": OP_EXTSB, "extsh": OP_EXTSH, "cntlzw": OP_CNTLZW}[p["op"]], f["ra"], f["rs"])
    elif fam == "rotate":
        op = {"rlwinm": OP_RLWINM, "rlwnm": OP_RLWNM, "rlwimi": OP_RLWIMI}[p["op"]]
        amount = f["rb"] if p["op"] == "rlwnm" else f["sh"]
        put(op, f["ra"], f["rs"], amount, reference.ppc_mask(f["mb"], f["me"]))
    elif fam in ("load", "store"):
        t = f["rt"] if fam == "load" else f["rs"]
        put(OP_LOAD if fam == "load" else OP_STORE, t, f["ra"], f.get("rb", 0), f.get("d", 0),
            p["size"], int(p.get("signed", False)))
        row[C_UPD], row[C_IDX] = int(p["update"]), int(p["indexed"])
    elif fam == "lmw":
        put(OP_LMW, f["rt"], f["ra"], 0, f["d"])
    elif fam == "stmw":
        put(OP_STMW, f["rs"], f["ra"], 0, f["d"])
    elif fam == "b":
        put(OP_B, imm=f["li"])
        row[C_AA], row[C_LK] = p["aa"], p["lk"]
    elif fam == "bc":
        put(OP_BC, f["bo"], f["bi"], 0, f["bd"])
        row[C_AA], row[C_LK] = p["aa"], p["lk"]
    elif fam == "bcreg":
        put(OP_BCLR if p["target"] == "lr" else OP_BCCTR, f["bo"], f["bi"])
        row[C_LK] = p["lk"]
    elif fam == "crlogic":
        put(OP_CRLOGIC, f["bt"], f["ba"], f["bb"], 0, _LOGIC_OPS.index(p["op"]))
    elif fam == "mcrf":
        put(OP_MCRF, f["bf"], f["bfa"])
    elif fam == "mfcr":
        put(OP_MFCR, f["rt"], imm=M32)
    elif fam == "mfocrf":
        put(OP_MFCR, f["rt"], imm=reference._fxm_mask(f["fxm"]))
    elif fam == "mtcrf":
        put(OP_MTCRF, f["rs"], imm=reference._fxm_mask(f["fxm"]))
    elif fam == "mfspr":
        put(OP_MFSPR, f["rt"], pp=f["spr"])
    elif fam == "mtspr":
        put(OP_MTSPR, f["rs"], pp=f["spr"])
    elif fam == "nop":
        put(OP_NOP)
    elif fam == "wait":
        put(OP_WAIT)
    elif fam == "fxv_arith" and p["op"] in _FXV_OPS:
        dest = reference._FXV_ARITH[p["op"]][0]
        put(OP_VARITH, f.get("vrt", 0), f["vra"], f.get("vrb", 0), 0, _FXV_OPS.index(p["op"]),
            p["lane"])
        row[C_RC] = 1 if dest == "acc" else 0
        row[C_C] = f.get("c", 0)
    elif fam == "fxv_cmp":
        put(OP_VCMP, 0, f["vra"], q=p["lane"])
    elif fam == "fxv_splat":
        put(OP_VSPLAT, f["vrt"], f["ra"], q=p["lane"])
    elif fam == "fxv_shift":
        put(OP_VSHIFT, f["vrt"], f["vra"], 0, f["sh"], q=p["lane"])
    elif fam == "fxv_sel":
        put(OP_VSEL, f["vrt"], f["vra"], f["vrb"])
        row[C_C] = f["c"]
    elif fam == "fxv_pack":
        put(OP_VPACK, f["vrt"], f["vra"], f["vrb"], 0, _PACK_OPS.index(p["op"]))
        row[C_C] = f["c"]
    elif fam == "fxv_lax":
        put(OP_VLAX, f["vrt"], f["ra"], f["rb"])
    elif fam == "fxv_stax":
        put(OP_VSTAX, f["vrt"], f["ra"], f["rb"])
    elif fam in ("fxv_inx", "fxv_outx"):
        # Only the external memory's vectors are done in numba; the chip half
        # (CADC, synapses, neuron resets) and the random generator in Python.
        put(OP_VINX if fam == "fxv_inx" else OP_VOUTX, f["vrt"], f["ra"], f["rb"])
        row[C_C] = f["c"]
    else:
        # A family this engine does not know (a newer table): executed by the
        # reference semantics in Python.
        put(OP_PYTHON)
    return row


_ROW_CACHE: dict = {}
_ROW_CACHE_LIMIT = 1 << 16
"""Word -> row for all PPUs; emptied when it grows past this (data words that
happen to be executed could otherwise grow it without bound)."""


def predecode(words) -> np.ndarray:
    """Predecoded rows of instruction words.

    Parameters
    ----------
    words : iterable of int
        32-bit instruction words (big-endian values).

    Returns
    -------
    np.ndarray
        int64 (len(words), :data:`NUM_COLUMNS`); a word that is no instruction
        gets the op id ``OP_ILLEGAL`` (the core's error is raised when it is
        executed, as in :meth:`.core.Nux.run`).
    """
    words = [int(w) & M32 for w in words]
    out = np.zeros((len(words), NUM_COLUMNS), np.int64)
    for i, w in enumerate(words):
        row = _ROW_CACHE.get(w)
        if row is None:
            try:
                row = _row_of(isa.decode(w))
            except isa.IllegalInstruction:
                row = np.zeros(NUM_COLUMNS, np.int64)
                row[C_OP] = OP_ILLEGAL
            if len(_ROW_CACHE) >= _ROW_CACHE_LIMIT:
                _ROW_CACHE.clear()
            _ROW_CACHE[w] = row
        out[i] = row
    return out


COST_SCALAR, COST_TAKEN, COST_VECTOR, COST_EXTERNAL = range(4)
"""Rows of the cost table: cycles of a scalar instruction, of a taken branch,
latency of a vector instruction, cycles of a scalar access to the external
memory (per unit index)."""


def _cost_tables(timing) -> np.ndarray:
    """The cost table (int64 (4, units), rows ``COST_*``), as
    :meth:`.core.Nux._cost` and :meth:`.core.Nux._vector_latency` charge: for
    vector I/O the external memory's latencies (the only I/O done in numba)."""
    t = timing
    costs = np.zeros((4, len(UNIT_IDS)), np.int64)
    for unit, i in UNIT_IDS.items():
        cost = {"mul": t.mul, "div": t.div, "load": t.load, "store": t.store, "sync": t.sync,
                "branch": t.branch_not_taken, "wait": t.wait_wakeup}.get(unit, t.alu)
        costs[COST_SCALAR, i] = cost
        costs[COST_TAKEN, i] = t.branch_taken if unit == "branch" else cost
        costs[COST_EXTERNAL, i] = {"load": t.bus_load + t.external_extra,
                                   "store": t.store + t.external_extra}.get(unit, cost)
        costs[COST_VECTOR, i] = {"vector_alu": t.vector_alu, "vector_mul": t.vector_mul,
                                 "vector_permute": t.vector_permute,
                                 "vector_load": t.vector_load, "vector_store": t.vector_store,
                                 "vector_in": t.extmem_in, "vector_out": t.extmem_out}.get(unit, 0)
    return costs


# --- the interpreter ---------------------------------------------------------------------
# Scalar registers (int64 array ``regs``) and run control (int64 array ``ctl``).
R_CR, R_LR, R_CTR, R_XER, R_PC, R_TB, R_WAITING = range(7)
NUM_REGS = 7
# The first seven change during a run, the others are set once per run.
(X_CYCLE, X_INSTR, X_VFREE, X_FIFO_N, X_NOW, X_STORED, X_IO, X_FIFO_DEPTH, X_START_CYCLE,
 X_START_INSTR, X_MAX_CYCLES, X_MAX_INSTR, X_VISSUE) = range(13)
NUM_CTL = 13
# X_IO: the vector I/O of the interpreter, for memory.io_kind (0 none since the last push).
IO_NONE, IO_EXTMEM_IN, IO_EXTMEM_OUT = 0, 1, 2
_IO_KINDS = (None, "extmem_in", "extmem_out")
# Why _run returned.
S_WAIT, S_CYCLES, S_INSTRUCTIONS, S_DECODE, S_PYTHON = range(5)


@njit(cache=True)
def _s32(x):
    x &= M32
    return x - 0x1_0000_0000 if x & 0x8000_0000 else x


@njit(cache=True)
def _cmp_bits(a, b, so):
    if a < b:
        return 8 | so
    if a > b:
        return 4 | so
    return 2 | so


@njit(cache=True)
def _set_field(cr, n, bits):
    shift = 28 - 4 * n
    return (cr & ~(0xF << shift) & M32) | ((bits & 0xF) << shift)


@njit(cache=True)
def _record(cr, xer, value):
    """CR0 from a result: signed compare with 0, and XER[SO]."""
    return _set_field(cr, 0, _cmp_bits(_s32(value), 0, 1 if xer & _XER_SO else 0))


@njit(cache=True)
def _logic(op, a, b):
    if op == 0:
        r = a & b
    elif op == 1:
        r = a & ~b
    elif op == 2:
        r = a | b
    elif op == 3:
        r = a | ~b
    elif op == 4:
        r = a ^ b
    elif op == 5:
        r = ~(a & b)
    elif op == 6:
        r = ~(a | b)
    else:
        r = ~(a ^ b)
    return r & M32


@njit(cache=True)
def _set_ov(xer, ov):
    return (xer | _XER_OV | _XER_SO) if ov else (xer & ~_XER_OV & M32)


@njit(cache=True)
def _set_ca(xer, ca):
    return (xer | _XER_CA) if ca else (xer & ~_XER_CA & M32)


@njit(cache=True)
def _rotl(x, n):
    n &= 31
    if n == 0:
        return x
    return ((x << n) | (x >> (32 - n))) & M32


@njit(cache=True, inline="always")
def _load_be(sram, ea, size):
    if size == 1:
        return np.int64(sram[ea])
    if size == 2:
        return (np.int64(sram[ea]) << 8) | np.int64(sram[ea + 1])
    return ((np.int64(sram[ea]) << 24) | (np.int64(sram[ea + 1]) << 16)
            | (np.int64(sram[ea + 2]) << 8) | np.int64(sram[ea + 3]))


@njit(cache=True, inline="always")
def _store_be(sram, ea, size, value):
    for k in range(size):
        sram[ea + k] = (value >> (8 * (size - 1 - k))) & 0xFF


@njit(cache=True, inline="always")
def _sat(x, bits):
    lo = -(np.int64(1) << (bits - 1))
    hi = (np.int64(1) << (bits - 1)) - 1
    return lo if x < lo else hi if x > hi else x


@njit(cache=True, inline="always")
def _msf(a, b, n):
    """The guide's mult_sat_fract: 2ab, except -1 x -1 gives 2**(2n-1) - 1."""
    lo = -(np.int64(1) << (n - 1))
    if a == lo and b == lo:
        return (np.int64(1) << (2 * n - 1)) - 1
    return 2 * a * b


@njit(cache=True)
def _fxv_lanes(op, x, y, m, r, count, n):
    """The FXV arithmetic formula of reference._FXV_ARITH on ``count`` lanes of
    n-bit values x, y and 2n-bit accumulator elements m (int64), into r. One
    loop per formula, so the loops are free of branches on the op."""
    if op == V_MA_MOD or op == V_MATAC_MOD:
        for i in range(count):
            r[i] = x[i] * y[i] + m[i]
    elif op == V_MUL_MOD or op == V_MULTAC_MOD:
        for i in range(count):
            r[i] = x[i] * y[i]
    elif op == V_SUB_MOD:
        for i in range(count):
            r[i] = x[i] - y[i]
    elif op == V_ADDACTAC_MOD or op == V_ADDAC_MOD:
        for i in range(count):
            r[i] = x[i] + m[i]
    elif op == V_ADDTAC_MOD or op == V_ADD_MOD:
        for i in range(count):
            r[i] = x[i] + y[i]
    elif op == V_MTAC:
        for i in range(count):
            r[i] = x[i]
    elif op == V_MA_FS:
        for i in range(count):
            r[i] = _sat(_msf(x[i], y[i], n) + m[i], 2 * n) >> n
    elif op == V_MTAC_F:
        for i in range(count):
            r[i] = x[i] << n
    elif op == V_MATAC_FS:
        for i in range(count):
            r[i] = _sat(_msf(x[i], y[i], n) + m[i], 2 * n)
    elif op == V_MUL_FS:
        for i in range(count):
            r[i] = _msf(x[i], y[i], n) >> n
    elif op == V_MULTAC_FS:
        for i in range(count):
            r[i] = _msf(x[i], y[i], n)
    elif op == V_SUB_FS:
        for i in range(count):
            r[i] = _sat(x[i] - y[i], n)
    elif op == V_ADDACTAC_FS:
        for i in range(count):
            r[i] = _sat((x[i] << n) + m[i], 2 * n)
    elif op == V_ADDAC_FS:
        for i in range(count):
            r[i] = _sat((x[i] << n) + m[i], 2 * n) >> n
    else:  # V_ADD_FS
        for i in range(count):
            r[i] = _sat(x[i] + y[i], n)


@njit(cache=True, inline="always")
def _enabled(vcr, c, j):
    """Whether byte lane j is written under FXV condition c (0 always, 1 gt, 2 lt, 3 eq)."""
    return c == 0 or ((vcr[j] >> (c - 1)) & 1) == 1


@njit(cache=True, inline="always")
def _vec_arith(vr, accb, vcr, scratch, t, a, b, op, lane, to_acc, c):
    """One FXV arithmetic instruction: the lanes into scratch rows (x, y, m),
    the formula into row r, then the write with the per-byte condition.

    The accumulator is its big-endian bytes (``accb``): 32-bit element i in
    bytes 4i..4i+3, the 16-bit half of byte lane j in bytes 2j, 2j+1.
    """
    # Unsigned register numbers: the indexing needs no negative-index fix-up.
    t, a, b = np.uint64(t), np.uint64(a), np.uint64(b)
    x = scratch[0]
    y = scratch[1]
    m = scratch[2]
    r = scratch[3]
    # Only the operands the formula reads (the others are never looked at).
    uses_y = not (op == V_ADDACTAC_MOD or op == V_ADDAC_MOD or op == V_MTAC or op == V_MTAC_F
                  or op == V_ADDACTAC_FS or op == V_ADDAC_FS)
    uses_m = (op == V_MA_MOD or op == V_MATAC_MOD or op == V_ADDACTAC_MOD or op == V_ADDAC_MOD
              or op == V_MA_FS or op == V_MATAC_FS or op == V_ADDACTAC_FS or op == V_ADDAC_FS)
    if lane == 16:
        count = 64
        for i in range(64):
            x[i] = (((np.int64(vr[a, 2 * i]) ^ 0x80) - 0x80) << 8) | np.int64(vr[a, 2 * i + 1])
        if uses_y:
            for i in range(64):
                y[i] = (((np.int64(vr[b, 2 * i]) ^ 0x80) - 0x80) << 8) | np.int64(vr[b, 2 * i + 1])
        if uses_m:
            for i in range(64):
                m[i] = ((((np.int64(accb[4 * i]) ^ 0x80) - 0x80) << 24)
                        | (np.int64(accb[4 * i + 1]) << 16)
                        | (np.int64(accb[4 * i + 2]) << 8) | np.int64(accb[4 * i + 3]))
    else:
        count = 128
        for j in range(128):
            x[j] = (np.int64(vr[a, j]) ^ 0x80) - 0x80
        if uses_y:
            for j in range(128):
                y[j] = (np.int64(vr[b, j]) ^ 0x80) - 0x80
        if uses_m:
            for j in range(128):
                m[j] = (((np.int64(accb[2 * j]) ^ 0x80) - 0x80) << 8) | np.int64(accb[2 * j + 1])
    _fxv_lanes(op, x, y, m, r, count, lane)
    # Write: a byte of a halfword result (and the 16-bit half of a 32-bit
    # accumulator element) only where its byte lane is enabled.
    if lane == 16:
        if to_acc and c == 0:
            for i in range(64):
                v = r[i]
                accb[4 * i] = (v >> 24) & 0xFF
                accb[4 * i + 1] = (v >> 16) & 0xFF
                accb[4 * i + 2] = (v >> 8) & 0xFF
                accb[4 * i + 3] = v & 0xFF
        elif to_acc:
            for i in range(64):
                v = r[i]
                if _enabled(vcr, c, 2 * i):
                    accb[4 * i] = (v >> 24) & 0xFF
                    accb[4 * i + 1] = (v >> 16) & 0xFF
                if _enabled(vcr, c, 2 * i + 1):
                    accb[4 * i + 2] = (v >> 8) & 0xFF
                    accb[4 * i + 3] = v & 0xFF
        elif c == 0:
            for i in range(64):
                vr[t, 2 * i] = (r[i] >> 8) & 0xFF
                vr[t, 2 * i + 1] = r[i] & 0xFF
        else:
            for i in range(64):
                if _enabled(vcr, c, 2 * i):
                    vr[t, 2 * i] = (r[i] >> 8) & 0xFF
                if _enabled(vcr, c, 2 * i + 1):
                    vr[t, 2 * i + 1] = r[i] & 0xFF
    else:
        if to_acc and c == 0:
            for j in range(128):
                accb[2 * j] = (r[j] >> 8) & 0xFF
                accb[2 * j + 1] = r[j] & 0xFF
        elif to_acc:
            for j in range(128):
                if _enabled(vcr, c, j):
                    accb[2 * j] = (r[j] >> 8) & 0xFF
                    accb[2 * j + 1] = r[j] & 0xFF
        elif c == 0:
            for j in range(128):
                vr[t, j] = r[j] & 0xFF
        else:
            for j in range(128):
                if _enabled(vcr, c, j):
                    vr[t, j] = r[j] & 0xFF


@njit(cache=True)
def _vec_sel(vr, vcr, t, a, b, c):
    """Per byte: VRB where condition c holds, else VRA (C = 0 always takes VRB)."""
    t, a, b = np.uint64(t), np.uint64(a), np.uint64(b)
    if c == 0:
        for j in range(128):
            vr[t, j] = vr[b, j]
    else:
        sh = c - 1
        for j in range(128):
            vr[t, j] = vr[b, j] if (vcr[j] >> sh) & 1 else vr[a, j]


@njit(cache=True)
def _vec_in(vr, vcr, t, mem, off, c):
    """Vector register t from 128 bytes of memory at off, where condition c
    holds. Unsigned indices: the copy needs no negative-index fix-up per byte
    (which would keep it from being vectorised)."""
    t = np.uint64(t)
    base = np.uint64(off)
    if c == 0:
        for j in range(128):
            vr[t, np.uint64(j)] = mem[base + np.uint64(j)]
    else:
        sh = c - 1
        for j in range(128):
            if (vcr[j] >> sh) & 1:
                vr[t, np.uint64(j)] = mem[base + np.uint64(j)]


@njit(cache=True)
def _vec_out(vr, vcr, t, mem, off, c):
    """Vector register t to 128 bytes of memory at off, where condition c holds."""
    t = np.uint64(t)
    base = np.uint64(off)
    if c == 0:
        for j in range(128):
            mem[base + np.uint64(j)] = vr[t, np.uint64(j)]
    else:
        sh = c - 1
        for j in range(128):
            if (vcr[j] >> sh) & 1:
                mem[base + np.uint64(j)] = vr[t, np.uint64(j)]


@njit(cache=True)
def _vec_cmp(vr, vcr, a, lane):
    if lane == 16:
        for i in range(64):
            x = (np.int64(vr[a, 2 * i]) << 8) | np.int64(vr[a, 2 * i + 1])
            flag = 4 if x == 0 else 2 if x & 0x8000 else 1
            vcr[2 * i] = flag
            vcr[2 * i + 1] = flag
    else:
        for j in range(128):
            x = vr[a, j]
            vcr[j] = 4 if x == 0 else 2 if x & 0x80 else 1


@njit(cache=True)
def _vec_shift(vr, t, a, sh, lane):
    """Logical shift of each lane by sh (-16..15; negative shifts right)."""
    if lane == 16:
        for i in range(64):
            u = (np.int64(vr[a, 2 * i]) << 8) | np.int64(vr[a, 2 * i + 1])
            r = (u << sh) if sh >= 0 else (u >> -sh)
            vr[t, 2 * i] = (r >> 8) & 0xFF
            vr[t, 2 * i + 1] = r & 0xFF
    else:
        for j in range(128):
            u = np.int64(vr[a, j])
            r = (u << sh) if sh >= 0 else (u >> -sh)
            vr[t, j] = r & 0xFF


@njit(cache=True)
def _vec_pack(vr, tmp, t, a, b, op, s):
    """Pack/unpack per 16-byte slice (reference._fxv_pack); the result goes
    through ``tmp`` because a slice's output bytes come from other positions."""
    for sl in range(8):
        base = 16 * sl
        if op <= 1:
            for i in range(16):
                src = a if i < 8 else b
                k = 2 * (i % 8)
                upper = np.int64(vr[src, base + k])
                lower = np.int64(vr[src, base + k + 1])
                if op == 0:
                    out = upper >> s
                else:
                    out = ((upper & ((1 << s) - 1)) << (8 - 2 * s)) | (lower >> (2 * s))
                tmp[base + i] = out & 0xFF
        else:
            first = 0 if op == 2 else 8
            for k in range(8):
                u = np.int64(vr[a, base + first + k])
                v = np.int64(vr[b, base + first + k])
                hi = ((u << s) & 0xFF) | ((v >> (8 - 2 * s)) & ((1 << s) - 1))
                tmp[base + 2 * k] = hi
                tmp[base + 2 * k + 1] = (v << (2 * s)) & 0xFF
    for j in range(128):
        vr[t, j] = tmp[j]


@njit(cache=True, inline="always")
def _drop_rows(rows, first_byte, nbytes):
    """A store into the SRAM: the rows of the words it touched are stale."""
    for w in range(first_byte >> 2, (first_byte + nbytes + 3) >> 2):
        rows[w, C_OP] = OP_DECODE


@njit(cache=True)
def _run(rows, sram, ext, gpr, regs, vr, vcr, accb, fifo, ctl, costs):
    """Execute predecoded rows from regs[R_PC] until ``wait``, a budget, a
    row to decode, or an instruction that needs Python (returned before it
    changes anything).

    ``sram``, ``ext``: the memories (uint8); ``costs``: :func:`_cost_tables`.
    Returns the stop reason (S_*); the state arrays and ``ctl`` hold the
    machine at that point (cycle, instructions, vector unit, FIFO, mem.now,
    the last vector I/O, whether the SRAM was stored to).
    """
    cr = regs[R_CR]
    lr = regs[R_LR]
    ctr = regs[R_CTR]
    xer = regs[R_XER]
    pc = regs[R_PC]
    tb = regs[R_TB]
    waiting = regs[R_WAITING]
    cycle = ctl[X_CYCLE]
    instr = ctl[X_INSTR]
    vfree = ctl[X_VFREE]
    nf = ctl[X_FIFO_N]
    depth = ctl[X_FIFO_DEPTH]
    start_cycle = ctl[X_START_CYCLE]
    start_instr = ctl[X_START_INSTR]
    max_cycles = ctl[X_MAX_CYCLES]
    max_instr = ctl[X_MAX_INSTR]
    vissue = ctl[X_VISSUE]
    now = ctl[X_NOW]
    stored = ctl[X_STORED]
    io = ctl[X_IO]
    tmp = np.empty(_VBYTES, np.uint8)
    scratch = np.empty((4, _VBYTES), np.int64)
    status = S_WAIT
    while True:
        # The budgets, checked before each instruction as Nux.run does.
        if cycle - start_cycle > max_cycles:
            status = S_CYCLES
            break
        if max_instr >= 0 and instr - start_instr >= max_instr:
            status = S_INSTRUCTIONS
            break
        if pc & 3 or pc > SRAM_BYTES - 4:
            status = S_PYTHON          # the fetch faults: Python raises it
            break
        w = pc >> 2
        op = rows[w, C_OP]
        if op == OP_DECODE:
            status = S_DECODE
            break
        if op <= OP_PYTHON:
            status = S_PYTHON
            break
        t = rows[w, C_T]
        a = rows[w, C_A]
        b = rows[w, C_B]
        imm = rows[w, C_IMM]
        # Memory operands first: an access outside the SRAM (or a fault) goes
        # to Python before any timing has been charged.
        # ``off``: the offset in the SRAM, or in the external memory if
        # ``external``. (No array variable is re-bound per instruction: numba
        # would count references on every pass.)
        ea = 0
        off = 0
        external = False
        if op >= OP_LOAD and op <= OP_STMW or op == OP_VLAX or op == OP_VSTAX:
            if op == OP_LOAD or op == OP_STORE:
                size = rows[w, C_P]
                ea = ((gpr[a] if a != 0 else 0) + (gpr[b] if rows[w, C_IDX] else imm)) & M32
                align = size
            elif op == OP_LMW or op == OP_STMW:
                size = 4 * (32 - t)
                ea = ((gpr[a] if a != 0 else 0) + imm) & M32
                align = 4
            else:
                size = _VBYTES
                ea = ((gpr[a] if a != 0 else 0) + gpr[b]) & M32
                align = _VBYTES
            if ea & (align - 1):
                status = S_PYTHON
                break
            if ea + size <= SRAM_BYTES:
                off = ea
            elif EXTMEM_DATA_BASE <= ea and ea + size <= EXTMEM_DATA_BASE + EXTMEM_BYTES:
                off = ea - EXTMEM_DATA_BASE
                external = True
            else:
                status = S_PYTHON
                break
        elif op == OP_VINX or op == OP_VOUTX:
            ea = ((gpr[a] if a != 0 else 0) + gpr[b]) & M32
            off = (ea - IO_EXTMEM_BASE) * _VBYTES
            if ea < IO_EXTMEM_BASE or off + _VBYTES > EXTMEM_BYTES:
                status = S_PYTHON          # the chip half, the random generator, faults
                break

        # Timing before the instruction (Nux.run): the vector FIFO, sync.
        kind = rows[w, C_KIND]
        unit = rows[w, C_UNIT]
        begin = 0
        if kind == K_VECTOR:
            k = 0
            for j in range(nf):            # drop the entries the unit has finished
                if fifo[j] > cycle:
                    fifo[k] = fifo[j]
                    k += 1
            nf = k
            if nf >= depth:                # full: the scalar core waits for the oldest
                cycle = fifo[0]
                for j in range(nf - 1):
                    fifo[j] = fifo[j + 1]
                nf -= 1
            begin = cycle if cycle > vfree else vfree
            now = begin
        else:
            if kind == K_SYNC:
                if vfree > cycle:
                    cycle = vfree
                nf = 0
            now = cycle
        tb = cycle
        npc = (pc + 4) & M32

        # --- execute ---------------------------------------------------------------
        if op == OP_ADDI:
            gpr[t] = ((gpr[a] if a != 0 else 0) + imm) & M32
        elif op == OP_LOAD:
            v = _load_be(ext, off, size) if external else _load_be(sram, off, size)
            if rows[w, C_Q] and v & 0x8000:
                v = (v - 0x10000) & M32
            gpr[t] = v
            if rows[w, C_UPD]:
                gpr[a] = ea
        elif op == OP_STORE:
            if external:
                _store_be(ext, off, size, gpr[t])
            else:
                _store_be(sram, off, size, gpr[t])
                _drop_rows(rows, off, size)
                stored = 1
            if rows[w, C_UPD]:
                gpr[a] = ea
        elif op == OP_BC:
            if not t & 4:
                ctr = (ctr - 1) & M32
            ok = (t & 4) != 0 or ((ctr != 0) != ((t & 2) != 0))
            if ok and not t & 16:
                ok = ((cr >> (31 - a)) & 1) == ((t >> 3) & 1)
            if rows[w, C_LK]:
                lr = npc
            if ok:
                npc = (imm & M32) if rows[w, C_AA] else (pc + imm) & M32
        elif op == OP_ARITH:
            p = rows[w, C_P]
            x = gpr[a]
            if p & 1:
                x = ~x & M32
            yk = (p >> 1) & 3
            y = gpr[b] if yk == 0 else 0 if yk == 1 else M32
            ck = (p >> 3) & 3
            cin = ck if ck < 2 else (1 if xer & _XER_CA else 0)
            total = x + y + cin
            r = total & M32
            gpr[t] = r
            if p & 32:
                xer = _set_ca(xer, total >> 32)
            if rows[w, C_OE]:
                sx, sy, sr = x >> 31, y >> 31, r >> 31
                xer = _set_ov(xer, sx == sy and sr != sx)
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_LOGIC or op == OP_LOGICI:
            r = _logic(rows[w, C_P], gpr[a], gpr[b] if op == OP_LOGIC else imm)
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_CMP:
            x = gpr[a]
            y = imm if rows[w, C_Q] else gpr[b]
            if rows[w, C_P]:
                x = _s32(x)
                y = _s32(y)
            else:
                y &= M32
            cr = _set_field(cr, t, _cmp_bits(x, y, 1 if xer & _XER_SO else 0))
        elif op == OP_RLWINM or op == OP_RLWNM or op == OP_RLWIMI:
            n = (gpr[b] & 0x1F) if op == OP_RLWNM else b
            r = _rotl(gpr[a], n) & imm
            if op == OP_RLWIMI:
                r |= gpr[t] & ~imm & M32
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_B:
            if rows[w, C_LK]:
                lr = npc
            npc = (imm & M32) if rows[w, C_AA] else (pc + imm) & M32
        elif op == OP_BCLR or op == OP_BCCTR:
            if not t & 4:
                ctr = (ctr - 1) & M32
            ok = (t & 4) != 0 or ((ctr != 0) != ((t & 2) != 0))
            if ok and not t & 16:
                ok = ((cr >> (31 - a)) & 1) == ((t >> 3) & 1)
            # The target is read before LR is written (bclrl branches to the old LR).
            target = (lr if op == OP_BCLR else ctr) & ~3 & M32
            if rows[w, C_LK]:
                lr = npc
            if ok:
                npc = target
        elif op == OP_ADDIC:
            total = gpr[a] + imm
            gpr[t] = total & M32
            xer = _set_ca(xer, total >> 32)
            if rows[w, C_RC]:
                cr = _record(cr, xer, total)
        elif op == OP_SUBFIC:
            total = (~gpr[a] & M32) + imm + 1
            gpr[t] = total & M32
            xer = _set_ca(xer, total >> 32)
        elif op == OP_MULLI:
            gpr[t] = (_s32(gpr[a]) * imm) & M32
        elif op == OP_MULLW or op == OP_MULHW:
            prod = _s32(gpr[a]) * _s32(gpr[b])
            r = ((prod >> 32) & M32) if op == OP_MULHW else prod & M32
            if op == OP_MULLW and rows[w, C_OE]:
                xer = _set_ov(xer, not (-(1 << 31) <= prod < (1 << 31)))
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_MULHWU:
            # The 64-bit product of two unsigned words needs unsigned arithmetic.
            r = np.int64((np.uint64(gpr[a]) * np.uint64(gpr[b])) >> np.uint64(32))
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_DIVW or op == OP_DIVWU:
            if op == OP_DIVW:
                sa = _s32(gpr[a])
                sb = _s32(gpr[b])
                overflow = sb == 0 or (sa == -(1 << 31) and sb == -1)
                if overflow:
                    r = 0
                else:
                    q = abs(sa) // abs(sb)      # rounds toward zero
                    r = q if (sa < 0) == (sb < 0) else -q
            else:
                overflow = gpr[b] == 0
                r = 0 if overflow else gpr[a] // gpr[b]
            r &= M32
            gpr[t] = r
            if rows[w, C_OE]:
                xer = _set_ov(xer, overflow)
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_SLW or op == OP_SRW:
            n = gpr[b] & 0x3F               # six bits: 32..63 give 0
            rs = gpr[a]
            if n > 31:
                r = 0
            else:
                r = ((rs << n) if op == OP_SLW else (rs >> n)) & M32
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_SRAW or op == OP_SRAWI:
            rs = gpr[a]
            n = b if op == OP_SRAWI else gpr[b] & 0x3F
            value = _s32(rs)
            if n > 31:
                r = M32 if value < 0 else 0
                ca = value < 0
            else:
                r = (value >> n) & M32
                ca = value < 0 and (rs & ((np.int64(1) << n) - 1)) != 0
            xer = _set_ca(xer, ca)
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_EXTSB or op == OP_EXTSH or op == OP_CNTLZW:
            rs = gpr[a]
            if op == OP_EXTSB:
                r = ((rs & 0xFF) - (0x100 if rs & 0x80 else 0)) & M32
            elif op == OP_EXTSH:
                r = ((rs & 0xFFFF) - (0x10000 if rs & 0x8000 else 0)) & M32
            else:
                r = 32
                while rs:
                    rs >>= 1
                    r -= 1
            gpr[t] = r
            if rows[w, C_RC]:
                cr = _record(cr, xer, r)
        elif op == OP_LMW:
            for reg in range(t, 32):
                gpr[reg] = _load_be(ext, off, 4) if external else _load_be(sram, off, 4)
                off += 4
        elif op == OP_STMW:
            if not external:
                _drop_rows(rows, off, size)
                stored = 1
            for reg in range(t, 32):
                if external:
                    _store_be(ext, off, 4, gpr[reg])
                else:
                    _store_be(sram, off, 4, gpr[reg])
                off += 4
        elif op == OP_CRLOGIC:
            x = (cr >> (31 - a)) & 1
            y = (cr >> (31 - b)) & 1
            bit = _logic(rows[w, C_P], x, y) & 1
            shift = 31 - t
            cr = (cr & ~(np.int64(1) << shift) & M32) | (bit << shift)
        elif op == OP_MCRF:
            cr = _set_field(cr, t, (cr >> (28 - 4 * a)) & 0xF)
        elif op == OP_MFCR:
            gpr[t] = cr & imm
        elif op == OP_MTCRF:
            cr = (cr & ~imm & M32) | (gpr[t] & imm)
        elif op == OP_MFSPR:
            spr = rows[w, C_P]
            if spr == 1:
                v = xer
            elif spr == 8:
                v = lr
            elif spr == 9:
                v = ctr
            elif spr == 268 or spr == 284:
                v = tb & M32
            else:                           # 269, 285 (the decoder refuses others)
                v = (tb >> 32) & M32
            gpr[t] = v
        elif op == OP_MTSPR:
            spr = rows[w, C_P]
            if spr == 1:
                xer = gpr[t] & _XER_WRITABLE
            elif spr == 8:
                lr = gpr[t]
            else:                           # 9 (the decoder refuses others)
                ctr = gpr[t]
        elif op == OP_NOP:
            pass
        elif op == OP_WAIT:
            waiting = 1
        elif op == OP_VARITH:
            _vec_arith(vr, accb, vcr, scratch, t, a, b, rows[w, C_P], rows[w, C_Q],
                       rows[w, C_RC], rows[w, C_C])
        elif op == OP_VCMP:
            _vec_cmp(vr, vcr, a, rows[w, C_Q])
        elif op == OP_VSPLAT:
            v = gpr[a]
            if rows[w, C_Q] == 16:
                for i in range(64):
                    vr[t, 2 * i] = (v >> 8) & 0xFF
                    vr[t, 2 * i + 1] = v & 0xFF
            else:
                for j in range(128):
                    vr[t, j] = v & 0xFF
        elif op == OP_VSHIFT:
            _vec_shift(vr, t, a, imm, rows[w, C_Q])
        elif op == OP_VSEL:
            _vec_sel(vr, vcr, t, a, b, rows[w, C_C])
        elif op == OP_VPACK:
            _vec_pack(vr, tmp, t, a, b, rows[w, C_P], rows[w, C_C])
        elif op == OP_VLAX:
            if external:
                _vec_in(vr, vcr, t, ext, off, 0)
            else:
                _vec_in(vr, vcr, t, sram, off, 0)
        elif op == OP_VSTAX:
            if external:
                _vec_out(vr, vcr, t, ext, off, 0)
            else:
                _vec_out(vr, vcr, t, sram, off, 0)
                _drop_rows(rows, off, _VBYTES)
                stored = 1
        elif op == OP_VINX:
            _vec_in(vr, vcr, t, ext, off, rows[w, C_C])
            io = IO_EXTMEM_IN
        elif op == OP_VOUTX:
            # Disabled bytes are sent masked: the memory keeps its bytes there.
            _vec_out(vr, vcr, t, ext, off, rows[w, C_C])
            io = IO_EXTMEM_OUT

        # Timing after the instruction (Nux.run).
        instr += 1
        if kind == K_VECTOR:
            done = begin + costs[COST_VECTOR, unit]
            vfree = done
            fifo[nf] = done
            nf += 1
            cycle += vissue
        elif external:
            cycle += costs[COST_EXTERNAL, unit]
        elif npc != pc + 4:
            cycle += costs[COST_TAKEN, unit]   # a taken branch (other units: the same cost)
        else:
            cycle += costs[COST_SCALAR, unit]
        pc = npc
        if waiting:
            # The end: the vector unit finishes what it holds.
            if vfree > cycle:
                cycle = vfree
            status = S_WAIT
            break

    regs[R_CR] = cr
    regs[R_LR] = lr
    regs[R_CTR] = ctr
    regs[R_XER] = xer
    regs[R_PC] = pc
    regs[R_TB] = tb
    regs[R_WAITING] = waiting
    ctl[X_CYCLE] = cycle
    ctl[X_INSTR] = instr
    ctl[X_VFREE] = vfree
    ctl[X_FIFO_N] = nf
    ctl[X_NOW] = now
    ctl[X_STORED] = stored
    ctl[X_IO] = io
    return status


# --- the Python side -----------------------------------------------------------------------
@njit(cache=True)
def _refresh(rows, words, sram):
    """Drop the rows of SRAM words that differ from the words they were made
    from (the program or data changed between runs, or under a Python step)."""
    for w in range(words.shape[0]):
        v = ((np.int64(sram[4 * w]) << 24) | (np.int64(sram[4 * w + 1]) << 16)
             | (np.int64(sram[4 * w + 2]) << 8) | np.int64(sram[4 * w + 3]))
        if v != words[w]:
            words[w] = v
            rows[w, C_OP] = OP_DECODE


class _Engine:
    """The fast engine's side of one PPU: its predecoded SRAM (one row per word
    and the words the rows were made from) and the interpreter's arrays for
    the scalar state, kept between runs."""

    def __init__(self, memory):
        self.memory = memory
        self.rows = np.zeros((_SRAM_WORDS, NUM_COLUMNS), np.int64)   # all OP_DECODE
        self.words = np.zeros(_SRAM_WORDS, np.int64)
        self.gpr = np.zeros(32, np.int64)
        self.regs = np.zeros(NUM_REGS, np.int64)
        self.ctl = np.zeros(NUM_CTL, np.int64)
        self.fifo = np.zeros(1, np.int64)
        self.timing = None
        self.costs = None
        self.vectors = (None, None, None, None)     # (vr, vcr, acc, acc bytes) last checked

    def arrays(self):
        """The SRAM and the external memory as writable uint8 views."""
        return (np.frombuffer(self.memory.sram, np.uint8),
                np.frombuffer(self.memory.extmem, np.uint8))

    def decode_from(self, word_index, ahead=64):
        """Decode the stale rows from ``word_index`` on (code runs on: the next
        ``ahead`` words too, so a new program is predecoded in few stops)."""
        stop = min(word_index + ahead, _SRAM_WORDS)
        current = np.frombuffer(self.memory.sram, ">u4")
        stale = word_index + np.flatnonzero(self.rows[word_index:stop, C_OP] == OP_DECODE)
        self.words[stale] = current[stale]
        self.rows[stale] = predecode(self.words[stale].tolist())

    def start(self, nux, max_cycles, max_instructions):
        """Set up a run: cost tables, budgets, the FIFO array."""
        timing = nux.timing
        if self.timing is not timing:
            self.timing, self.costs = timing, _cost_tables(timing)
        need = max(timing.vector_fifo_depth, len(nux._fifo)) + 1
        if self.fifo.shape[0] < need:
            self.fifo = np.zeros(need, np.int64)
        self.ctl[X_FIFO_DEPTH:] = (timing.vector_fifo_depth, nux.cycle, nux.instructions,
                                   max_cycles, -1 if max_instructions is None else max_instructions,
                                   timing.vector_issue)

    def vector_state(self, st):
        """The state's vector arrays in the layout the interpreter works on in
        place (converted once if something else was assigned to them)."""
        vr, vcr, acc, accb = self.vectors
        if st.vr is vr and st.vcr is vcr and st.acc is acc:
            return vr, vcr, accb
        if not (isinstance(st.vr, np.ndarray) and st.vr.dtype == np.uint8
                and st.vr.shape == (32, _VBYTES) and st.vr.flags.c_contiguous
                and st.vr.flags.writeable):
            st.vr = np.array(st.vr, np.uint8).reshape(32, _VBYTES)
        if not (isinstance(st.vcr, np.ndarray) and st.vcr.dtype == np.uint8
                and st.vcr.shape == (_VBYTES,) and st.vcr.flags.c_contiguous
                and st.vcr.flags.writeable):
            st.vcr = np.array(st.vcr, np.uint8).reshape(_VBYTES)
        if not (isinstance(st.acc, np.ndarray) and st.acc.dtype == np.dtype(">i4")
                and st.acc.shape == (_VBYTES // 2,) and st.acc.flags.c_contiguous
                and st.acc.flags.writeable):
            st.acc = np.array(st.acc, ">i4").reshape(_VBYTES // 2)
        self.vectors = (st.vr, st.vcr, st.acc, st.acc.view(np.uint8))
        return self.vectors[0], self.vectors[1], self.vectors[3]

    def pull(self, nux):
        """The PPU's scalar state, cycle count and vector unit into the arrays."""
        st = nux.state
        self.gpr[:] = st.gpr
        self.regs[:] = (st.cr, st.lr, st.ctr, st.xer, st.pc, st.time_base, bool(st.waiting))
        n = len(nux._fifo)
        self.fifo[:n] = nux._fifo
        self.ctl[:X_IO + 1] = (nux.cycle, nux.instructions, nux._vector_free, n,
                               nux.memory.now, 0, IO_NONE)

    def push(self, nux):
        """The arrays back into the PPU (Python ints, as the reference engine keeps them)."""
        st = nux.state
        st.gpr[:] = self.gpr.tolist()
        st.cr, st.lr, st.ctr, st.xer, st.pc, st.time_base, waiting = self.regs.tolist()
        st.waiting = bool(waiting)
        c = self.ctl.tolist()
        nux.cycle, nux.instructions, nux._vector_free = c[X_CYCLE], c[X_INSTR], c[X_VFREE]
        nux._fifo = self.fifo[:c[X_FIFO_N]].tolist()
        nux.memory.now = c[X_NOW]
        if c[X_IO] != IO_NONE:
            nux.memory.io_kind = _IO_KINDS[c[X_IO]]
        if c[X_STORED]:
            # The core's bookkeeping of stores into the SRAM: its decode cache
            # must not keep words the program overwrote.
            nux._decoded.clear()
            nux.memory.code_writes.clear()


_ENGINES = weakref.WeakKeyDictionary()


def _engine(nux):
    eng = _ENGINES.get(nux)
    if eng is None or eng.memory is not nux.memory:
        eng = _ENGINES[nux] = _Engine(nux.memory)
    return eng


_DECODED: dict = {}
"""Word -> isa.Decoded of the words executed by _python_step."""


def _python_step(nux):
    """Execute the instruction at the program counter exactly as one pass of the
    loop of :meth:`.core.Nux.run` does, without its budget checks (the fast
    loop did them). Raises what that pass raises."""
    mem = nux.memory
    pc = nux.state.pc
    # The fast loop stores without telling the core's decode cache, so its entry
    # for pc is replaced by the decode of the word there now (or dropped, and
    # the core decodes the word and raises its own errors).
    try:
        word = mem.fetch(pc)
    except reference.MemoryFault:
        word = None
    d = _DECODED.get(word)
    if d is not None:
        nux._decoded[pc] = d
    else:
        nux._decoded.pop(pc, None)
    d = nux._decode(pc)
    if word is not None and word not in _DECODED:
        if len(_DECODED) >= _ROW_CACHE_LIMIT:
            _DECODED.clear()
        _DECODED[word] = d
    nux._step()


def run_fast(nux, max_cycles: int = 10_000_000, max_instructions: int | None = None):
    """Run a :class:`~.core.Nux` from its program counter until ``wait``, on the
    numba interpreter; the same result, state, cycle count and errors as
    :meth:`.core.Nux.run` (the plain-Python engine).

    Parameters
    ----------
    nux : Nux
        The PPU (its program loaded, its memory filled).
    max_cycles : int
        Cycle budget of this run (PPU cycles of 4 ns); a program that has not
        reached ``wait`` by then stops with :class:`~.core.PPUError`.
    max_instructions : int or None
        Optional instruction budget.

    Returns
    -------
    RunResult
    """
    max_cycles, max_instructions = _core.check_budgets(max_cycles, max_instructions)
    st = nux.state
    start_cycle, start_instr = nux.cycle, nux.instructions
    st.waiting = False
    eng = _engine(nux)
    eng.start(nux, max_cycles, max_instructions)
    sram, ext = eng.arrays()
    while True:
        _refresh(eng.rows, eng.words, sram)
        vr, vcr, accb = eng.vector_state(st)
        eng.pull(nux)
        status = _run(eng.rows, sram, ext, eng.gpr, eng.regs, vr, vcr, accb, eng.fifo, eng.ctl,
                      eng.costs)
        while status == S_DECODE:
            eng.decode_from(int(eng.regs[R_PC]) >> 2)
            status = _run(eng.rows, sram, ext, eng.gpr, eng.regs, vr, vcr, accb, eng.fifo,
                          eng.ctl, eng.costs)
        eng.push(nux)
        if status == S_WAIT:
            break
        if status == S_CYCLES:
            raise _core.PPUError.budget("cycles", max_cycles, st.pc, nux.cycle)
        if status == S_INSTRUCTIONS:
            raise _core.PPUError.budget("instructions", max_instructions, st.pc, nux.cycle)
        # S_PYTHON: this one instruction by the reference semantics, then on.
        _python_step(nux)
        if st.waiting:
            nux.cycle = max(nux.cycle, nux._vector_free)
            break
    return _core.RunResult(cycles=nux.cycle - start_cycle,
                           instructions=nux.instructions - start_instr, stop="wait", pc=st.pc)


# --- speed ---------------------------------------------------------------------------------
BENCHMARK_BODY = """
    lis r9, {hi}
    ori r9, r9, {lo}
    mtctr r9
    li r3, 0x1000        # scalar data
    li r4, 0x2000        # vector data
    li r5, 1
    li r11, 5
    li r10, 0
    fxvlax v2, 0, r4
    fxvsplatb v3, r5
loop:
    lwz r6, 0(r3)        # SRAM load
    addi r6, r6, 3
    mullw r7, r5, r11    # multiply
    add r5, r7, r6       # r5 = 5 r5 + r6: a sequence that does not settle
    rlwinm r8, r5, 3, 20, 28
    xor r6, r6, r8
    stw r6, 0(r3)        # SRAM store
    andi. r8, r5, 1
    beq skip             # taken about every other iteration
    addi r10, r10, 1
skip:
    fxvaddbm v1, v1, v2
    fxvmatachm v1, v3
    fxvcmpb v1
    bdnz loop
    sync
    wait
"""
"""The benchmark's loop: 13 or 14 instructions per iteration (ALU, a multiply,
an SRAM load and store, a record form, a conditional branch taken about half
the time, three vector ALU/multiply ops and the loop branch)."""
_BENCH_PER_ITERATION = 13.5


def benchmark(n_instructions: int = 20_000_000, repeats: int = 3,
              reference_instructions: int = 20_000) -> dict:
    """Instructions per second of the fast engine on one thread, on a
    representative loop (:data:`BENCHMARK_BODY`), measured after compilation
    (or loading from numba's cache): the best of ``repeats`` runs; and of the
    plain-Python engine on a short run of the same loop.

    Both wall time and the thread's CPU time are measured: on a shared machine
    the CPU-time figure is the steadier one (time spent descheduled is not in
    it).

    Returns
    -------
    dict
        ``instructions`` (per run), ``wall_time_s`` (best wall time, s),
        ``instructions_per_second`` (fast engine, wall time),
        ``instructions_per_cpu_second`` (fast engine, thread CPU time),
        ``reference_instructions_per_second`` (plain-Python engine, wall time),
        ``speedup`` (the two wall-time figures' ratio).
    """
    from .asm import assemble
    n_instructions = check_int("n_instructions", n_instructions, 1000, 1 << 40)
    repeats = check_int("repeats", repeats, 1, 100)
    reference_instructions = check_int("reference_instructions", reference_instructions, 100,
                                       1 << 40)

    def program(instructions):
        n = max(1, int(instructions / _BENCH_PER_ITERATION))
        return assemble(BENCHMARK_BODY.format(hi=n >> 16, lo=n & 0xFFFF), source="<nux benchmark>")

    def one(prog, fast):
        ppu = _core.Nux()
        ppu.load(prog)
        wall, cpu = time.perf_counter(), time.thread_time()
        if fast:
            res = run_fast(ppu, max_cycles=1 << 62)
        else:
            res = _run_reference(ppu, max_cycles=1 << 62)
        return time.perf_counter() - wall, time.thread_time() - cpu, res.instructions

    one(program(1000), True)               # compile, or load from the numba cache
    prog = program(n_instructions)
    runs = [one(prog, True) for _ in range(repeats)]
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    count = runs[0][2]
    t_ref, _, n_ref = one(program(reference_instructions), False)
    ips = count / wall
    ref_ips = n_ref / t_ref
    return {"instructions": count, "wall_time_s": wall, "instructions_per_second": ips,
            "instructions_per_cpu_second": count / cpu if cpu > 0 else float("inf"),
            "reference_instructions_per_second": ref_ips, "speedup": ips / ref_ips}


def _run_reference(nux, **kw):
    """The plain-Python engine, also once Nux.run runs this one by default."""
    if "engine" in inspect.signature(nux.run).parameters:
        return nux.run(engine="reference", **kw)
    return nux.run(**kw)
