"""Independent reference formulas for the Nux instruction tests.

Written from the Power ISA 2.06 definitions and the FXV guide/RTL without
looking at ``reference.py``'s code paths: scalar results via Python integers
with explicit signed/unsigned interpretations (carries by comparison,
overflow by range, bits via strings), FXV results lane by lane on bytes with
two's-complement bit patterns and carry-based saturation as the RTL does it.
"""
from __future__ import annotations

from fractions import Fraction
import math

M32 = (1 << 32) - 1


def s32(x):
    x &= M32
    return x - (1 << 32) if x >= 1 << 31 else x


def fits_s32(x):
    return -(1 << 31) <= x <= (1 << 31) - 1


def cr0_bits(result, so):
    """LT GT EQ SO of CR0 for a 32-bit result."""
    v = s32(result)
    return (0b1000 if v < 0 else 0b0100 if v > 0 else 0b0010) | (1 if so else 0)


# --- XO-form arithmetic: (result, CA or None, OV) ----------------------------------------------
def arith(op, ra, rb, ca):
    """Expected (result, carry or None if CA is not written, signed overflow)."""
    sa, sb = s32(ra), s32(rb)
    if op == "add":
        return (ra + rb) & M32, None, not fits_s32(sa + sb)
    if op == "addc":
        r = (ra + rb) & M32
        return r, r < ra, not fits_s32(sa + sb)
    if op == "adde":
        return (ra + rb + ca) & M32, ra + rb + ca > M32, not fits_s32(sa + sb + ca)
    if op == "addze":
        return (ra + ca) & M32, ra == M32 and ca == 1, not fits_s32(sa + ca)
    if op == "addme":
        return (ra + ca - 1) & M32, ra + ca >= 1, not fits_s32(sa + ca - 1)
    if op == "subf":
        return (rb - ra) & M32, None, not fits_s32(sb - sa)
    if op == "subfc":
        return (rb - ra) & M32, rb >= ra, not fits_s32(sb - sa)
    if op == "subfe":
        # rb - ra - 1 + ca: no borrow <=> the unsigned difference is not negative
        return (rb - ra - 1 + ca) & M32, rb - ra - 1 + ca >= 0, not fits_s32(sb - sa - 1 + ca)
    if op == "subfze":
        return (-ra - 1 + ca) & M32, ra == 0 and ca == 1, not fits_s32(-sa - 1 + ca)
    if op == "subfme":
        return (-ra - 2 + ca) & M32, ra != M32 or ca == 1, not fits_s32(-sa - 2 + ca)
    if op == "neg":
        return (-ra) & M32, None, ra == 0x8000_0000
    raise KeyError(op)


def mul(op, ra, rb):
    """(result, overflow of mullw)."""
    if op == "mullw":
        p = s32(ra) * s32(rb)
        return p & M32, not fits_s32(p)
    if op == "mulhw":
        return ((s32(ra) * s32(rb)) >> 32) & M32, False
    return ((ra * rb) >> 32) & M32, False


def div(op, ra, rb):
    """(result, overflow); undefined results are 0 as the model documents."""
    if op == "divw":
        a, b = s32(ra), s32(rb)
        if b == 0 or (a == -(1 << 31) and b == -1):
            return 0, True
        return math.trunc(Fraction(a, b)) & M32, False
    if rb == 0:
        return 0, True
    return (ra // rb) & M32, False


# --- logic, shifts, rotates ---------------------------------------------------------------------
def logic(op, a, b):
    ua, ub = format(a, "032b"), format(b, "032b")
    table = {
        "and": lambda x, y: x & y, "andc": lambda x, y: x & (1 - y), "or": lambda x, y: x | y,
        "orc": lambda x, y: x | (1 - y), "xor": lambda x, y: x ^ y,
        "nand": lambda x, y: 1 - (x & y), "nor": lambda x, y: 1 - (x | y),
        "eqv": lambda x, y: 1 - (x ^ y),
    }[op]
    return int("".join(str(table(int(x), int(y))) for x, y in zip(ua, ub)), 2)


def slw(rs, rb):
    n = rb & 63
    return 0 if n >= 32 else (rs * 2 ** n) % 2 ** 32


def srw(rs, rb):
    n = rb & 63
    return 0 if n >= 32 else rs // 2 ** n


def sraw(rs, n):
    """(result, CA) of an arithmetic right shift by n (0..63)."""
    v = s32(rs)
    if n >= 32:
        return (M32 if v < 0 else 0), v < 0
    q = v // 2 ** n                     # floor division is the arithmetic shift
    return q & M32, v < 0 and q * 2 ** n != v


def rotl(rs, n):
    bits = format(rs, "032b")
    n %= 32
    return int(bits[n:] + bits[:n], 2)


def mask(mb, me):
    bits = ["0"] * 32
    for i in range(32):
        inside = mb <= i <= me if mb <= me else (i >= mb or i <= me)
        if inside:
            bits[i] = "1"
    return int("".join(bits), 2)


def cntlzw(rs):
    bits = format(rs, "032b")
    return len(bits) - len(bits.lstrip("0"))


def exts(rs, nbytes):
    return int.from_bytes((rs & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "big"), "big",
                          signed=True) & M32


# --- branches --------------------------------------------------------------------------------
def branch_taken(bo, cr_bit, ctr):
    """(taken, new ctr) from the BO table of Power ISA 2.06 Book I (figure of BO encodings)."""
    b = format(bo, "05b")   # b[0] is BO_0
    new_ctr = ctr if b[2] == "1" else (ctr - 1) & M32
    if b[2] == "1":
        ctr_ok = True
    else:
        ctr_ok = (new_ctr == 0) if b[3] == "1" else (new_ctr != 0)
    cond_ok = True if b[0] == "1" else (cr_bit == int(b[1]))
    return ctr_ok and cond_ok, new_ctr


# --- FXV lanes ------------------------------------------------------------------------------------
def lanes(vec, n):
    """Signed n-bit lanes (n = 16 or 8) of a 128-byte big-endian vector, as a list."""
    data = bytes(vec)
    step = n // 8
    return [int.from_bytes(data[i:i + step], "big", signed=True) for i in range(0, 128, step)]


def from_lanes(values, n):
    step = n // 8
    return bytes(b for v in values for b in (v % (1 << n)).to_bytes(step, "big"))


def acc_lanes(acc_bytes, n):
    """Accumulator elements of 2n bits from its 256 big-endian bytes."""
    step = 2 * n // 8
    return [int.from_bytes(acc_bytes[i:i + step], "big", signed=True) for i in range(0, 256, step)]


def acc_from_lanes(values, n):
    step = 2 * n // 8
    return bytes(b for v in values for b in (v % (1 << (2 * n))).to_bytes(step, "big"))


def twos(x, bits):
    return x % (1 << bits)


def signed(u, bits):
    return u - (1 << bits) if u >= 1 << (bits - 1) else u


def sat_add(x, y, bits):
    """Saturating addition of two bits-wide two's-complement values, by the
    carry-in/carry-out test of the top bit (as the RTL's saturation logic)."""
    ux, uy = twos(x, bits), twos(y, bits)
    total = ux + uy
    carry_in = ((ux % (1 << (bits - 1))) + (uy % (1 << (bits - 1)))) >> (bits - 1)
    carry_out = total >> bits
    if carry_out and not carry_in:
        return -(1 << (bits - 1))
    if carry_in and not carry_out:
        return (1 << (bits - 1)) - 1
    return signed(total % (1 << bits), bits)


def msf(a, b, n):
    """mult_sat_fract by the RTL's test: the doubled product overflows only when
    the top two bits of the product are 01."""
    p = twos(a * b, 2 * n)
    if p >> (2 * n - 2) == 0b01:
        return (1 << (2 * n - 1)) - 1
    return signed((p << 1) % (1 << (2 * n)), 2 * n)


def upper_half(x, n):
    """The upper n bits of a 2n-bit value, signed."""
    return signed(twos(x, 2 * n) >> n, n)


def fxv_arith(op, a, b, m, n):
    """(destination 'vrt' or 'acc', value) of one FXV arithmetic lane."""
    if op == "ma_mod":
        return "vrt", signed(twos(a * b + m, n), n)
    if op == "matac_mod":
        return "acc", signed(twos(a * b + m, 2 * n), 2 * n)
    if op == "mul_mod":
        return "vrt", signed(twos(a * b, n), n)
    if op == "multac_mod":
        return "acc", a * b
    if op == "sub_mod":
        return "vrt", signed(twos(a - b, n), n)
    if op == "addactac_mod":
        return "acc", signed(twos(a + m, 2 * n), 2 * n)
    if op == "addtac_mod":
        return "acc", a + b
    if op == "addac_mod":
        return "vrt", signed(twos(a + m, n), n)
    if op == "add_mod":
        return "vrt", signed(twos(a + b, n), n)
    if op == "mtac":
        return "acc", a
    if op == "mtac_f":
        return "acc", a * (1 << n)
    if op == "ma_fs":
        return "vrt", upper_half(sat_add(msf(a, b, n), m, 2 * n), n)
    if op == "matac_fs":
        return "acc", sat_add(msf(a, b, n), m, 2 * n)
    if op == "mul_fs":
        return "vrt", upper_half(msf(a, b, n), n)
    if op == "multac_fs":
        return "acc", msf(a, b, n)
    if op == "sub_fs":
        # a - b as a + (-b) in n+1 bits, then clamp: -(-2**(n-1)) is representable there
        d = a - b
        return "vrt", max(-(1 << (n - 1)), min((1 << (n - 1)) - 1, d))
    if op == "add_fs":
        return "vrt", sat_add(a, b, n)
    if op == "addactac_fs":
        return "acc", sat_add(a * (1 << n), m, 2 * n)
    if op == "addac_fs":
        return "vrt", upper_half(sat_add(a * (1 << n), m, 2 * n), n)
    raise KeyError(op)


def condition(flags_of_byte, c):
    """Enable of one byte: flags as a string subset of 'GLE' (gt, lt, eq)."""
    return c == 0 or "GLE"[c - 1] in flags_of_byte


def shift_lane(u, sh, n):
    """Logical shift of an unsigned n-bit lane left by sh (right for sh < 0)."""
    bits = format(u, f"0{n}b")
    if sh >= 0:
        out = (bits + "0" * sh)[sh:] if sh < n else "0" * n
    else:
        k = -sh
        out = ("0" * k + bits)[:n] if k < n else "0" * n
    return int(out, 2)


def pack(op, a16, b16, s):
    """One 16-byte slice of pckbu/pckbl/upckbl/upckbr from slices a16, b16 (lists of
    unsigned bytes), size s, following the RTL bit loops [NUX vector_permute.sv]."""
    def bit(x, i):
        return (x >> i) & 1
    out = [0] * 16
    src = list(a16) + list(b16)
    if op in ("pack_upper", "pack_lower"):
        for i in range(16):
            x, y = src[2 * i], src[2 * i + 1]
            t = 0
            if op == "pack_upper":
                for j in range(8):
                    if j + s < 8:
                        t |= bit(x, 7 - j) << (8 - s - 1 - j)
            else:
                for j in range(s):
                    t |= bit(x, 7 - (8 - s) - j) << (8 - s - 1 - j)
                for j in range(8):
                    if j + 2 * s < 8:
                        t |= bit(y, 7 - j) << (8 - 2 * s - 1 - j)
            out[i] = t
        return out
    off = 0 if op == "unpack_left" else 8
    for i in range(8):
        u, v = a16[i + off], b16[i + off]
        hi = lo = 0
        for j in range(8):
            if j + s < 8:
                hi |= bit(u, 7 - s - j) << (7 - j)
        for j in range(s):
            hi |= bit(v, 7 - s - j) << (s - 1 - j)
        for j in range(8):
            if j + 2 * s < 8:
                lo |= bit(v, 7 - 2 * s - j) << (7 - j)
        out[2 * i], out[2 * i + 1] = hi, lo
    return out
