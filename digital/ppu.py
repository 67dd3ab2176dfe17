"""The embedded plasticity processors (PPUs) of BrainScaleS-2 as they serve
vector-matrix multiplications: SIMD lane arithmetic and a cycle-cost model.

Each chip half has one PPU: a 32-bit scalar core at 250 MHz with 16 KiB of SRAM
and a SIMD vector unit whose 1024-bit registers hold 128 x 8-bit or 64 x 16-bit
lanes with saturating arithmetic [TH]. Between layers the group's software
applies a "converting ReLU" that turns the signed 8-bit result of a VMM into the
5-bit input of the next one: clamp to 0..127, shift right, clamp to 0..31
[W20][SW].

Two parts:

* Pure lane operations (:func:`add_sat`, :func:`sub_sat`, :func:`shift_right`,
  :func:`clamp`, :func:`relu`, :func:`converting_relu`, :func:`saturate`). They
  work elementwise on integer arrays of any shape; on the PPU the last axis is a
  multiple of the lane count (:func:`lanes`). A lane type is ``(bits, signed)``
  with ``bits`` 8 or 16; its values are ``-2**(bits-1)..2**(bits-1)-1`` (signed)
  or ``0..2**bits-1`` (unsigned) and results come back as ``np.int8``,
  ``np.uint8``, ``np.int16`` or ``np.uint16`` accordingly. Inputs outside the
  lane type, of a non-integer dtype or containing NaN raise ``ValueError``
  naming the parameter, the bad value and the allowed range.
* :class:`PPU`, one per half, performs operations on numpy data and adds the
  cost of each to its ``cycles`` counter by the formula documented on the
  method; the cost constants are :class:`PPUCostParams`, all *assumed*.
  Streaming through the FPGA link is counted in seconds (``stream_seconds``),
  apart from the cycles.

Chip constants come from :mod:`bss2sim.circuits.constants` only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from bss2sim.circuits.checks import as_int_array, check_bool, check_int

from bss2sim.circuits.constants import (CADC_MAX, COLUMNS_PER_HALF, FPGA_CLOCK_HZ, INPUT_MAX,
                                NUM_HALVES, OUTPUT_MAX, OUTPUT_MIN, PPU_CLOCK_HZ,
                                PPU_MEMORY_BYTES, PPU_SIMD_BITS)

__all__ = [
    "lanes", "lane_range", "lane_dtype",
    "add_sat", "sub_sat", "shift_right", "clamp", "relu", "converting_relu", "saturate",
    "CONVERTING_RELU_MAX_SHIFT", "CONVERTING_RELU_OPS_PER_VECTOR",
    "PPUCostParams", "PPU",
]

CONVERTING_RELU_MAX_SHIFT = 7
"""Largest shift of the converting ReLU: shifting the 7-bit positive range
0..127 by more than 7 bits would always give 0."""
CONVERTING_RELU_OPS_PER_VECTOR = 3
"""SIMD operations of the converting ReLU per 8-bit vector: max with 0 (the upper
clamp at 127 is the int8 maximum and costs nothing), arithmetic shift, min with 31."""


# --- lane types --------------------------------------------------------------------

_LANE_DTYPES = {(8, True): np.int8, (8, False): np.uint8,
                (16, True): np.int16, (16, False): np.uint16}


def _check_bits_signed(bits, signed):
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) \
            or int(bits) not in (8, 16):
        raise ValueError(f"bits={bits!r} is not allowed: must be 8 or 16")
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"signed={signed!r} is not allowed: must be True or False")
    return int(bits), bool(signed)


def lanes(bits: int) -> int:
    """Lanes of one 1024-bit SIMD register for ``bits``-wide lanes (128 for 8, 64 for 16)."""
    bits, _ = _check_bits_signed(bits, True)
    return PPU_SIMD_BITS // bits


def lane_range(bits: int = 8, signed: bool = True) -> tuple[int, int]:
    """Smallest and largest value (integers, no unit) of the lane type."""
    bits, signed = _check_bits_signed(bits, signed)
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def lane_dtype(bits: int = 8, signed: bool = True) -> type:
    """numpy dtype of the lane type: int8, uint8, int16 or uint16."""
    return _LANE_DTYPES[_check_bits_signed(bits, signed)]


# --- validation --------------------------------------------------------------------

def _check_int_values(name, values, lo=None, hi=None):
    """``values`` as an int64 array; integer dtype, no NaN, and within lo..hi when
    bounds are given (``ValueError`` naming ``name``, the value and the range).
    An integer array whose dtype cannot leave lo..hi (uint8 codes against
    0..255) needs no scan; others are scanned once by min and max."""
    rng = f"{lo}..{hi}" if lo is not None else "the int64 range"
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and values.dtype != np.uint64:
        a = values
    else:
        if isinstance(values, np.ndarray) and values.dtype.kind in "fc" and values.size \
                and not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contains NaN or infinity; expected integers in {rng}")
        as_int_array(name, values)          # ragged lists, strings, objects, floats: named errors
        a = np.asarray(values)
        if a.dtype == np.uint64 and a.size and lo is None:
            if a.max() > np.iinfo(np.int64).max:
                idx = np.unravel_index(int(np.argmax(a)), a.shape)
                raise ValueError(f"{_where(name, a, idx)} is out of range {rng}")
    if lo is not None and a.size:
        info = np.iinfo(a.dtype)
        if (info.min < lo or info.max > hi) and (a.min() < lo or a.max() > hi):
            bad = (a < lo) | (a > hi)
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{_where(name, a, idx)} is out of range {rng}")
    return a.astype(np.int64)


def _checked_codes(name, codes):
    """CADC codes checked against 0..CADC_MAX, kept as uint8 (no int64 copy)."""
    if isinstance(codes, np.ndarray) and codes.dtype == np.uint8:
        return codes
    return _check_int_values(name, codes, 0, CADC_MAX).astype(np.uint8)


def _where(name, a, idx):
    if a.ndim == 0:
        return f"{name}={a[()]}"
    return f"{name}[{', '.join(str(int(i)) for i in idx)}]={a[idx]}"


def _check_int_scalar(name, value, lo, hi):
    return check_int(name, value, lo, None if hi == math.inf else hi)


def _lane_operand(name, values, bits, signed):
    lo, hi = lane_range(bits, signed)
    return _check_int_values(name, values, lo, hi)


def _broadcast(a, b):
    try:
        return np.broadcast_arrays(a, b)
    except ValueError:
        raise ValueError(f"a has shape {a.shape} and b has shape {b.shape}; "
                         f"they must be equal or broadcastable") from None


# --- lane operations ---------------------------------------------------------------

def saturate(a, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Clip integers to the range of the lane type, as a saturating SIMD result does.

    ``a``: integers of any integer dtype and any value (a wide intermediate).
    Returns the lane dtype (int8, uint8, int16 or uint16), same shape as ``a``.
    """
    bits, signed = _check_bits_signed(bits, signed)
    lo, hi = lane_range(bits, signed)
    x = np.asarray(a)
    if x.dtype == np.uint64:                      # values above int64 saturate, not wrap
        x = np.minimum(x, np.uint64(hi))
    x = _check_int_values("a", x)
    return np.clip(x, lo, hi).astype(lane_dtype(bits, signed))


def add_sat(a, b, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Saturating lane-wise addition ``saturate(a + b)``.

    ``a``, ``b``: integers in the lane type's range, equal or broadcastable shapes.
    Returns the lane dtype (int8, uint8, int16 or uint16).
    """
    bits, signed = _check_bits_signed(bits, signed)
    x, y = _broadcast(_lane_operand("a", a, bits, signed), _lane_operand("b", b, bits, signed))
    return saturate(x + y, bits, signed)


def sub_sat(a, b, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Saturating lane-wise subtraction ``saturate(a - b)``.

    ``a``, ``b``: integers in the lane type's range, equal or broadcastable shapes.
    Returns the lane dtype (int8, uint8, int16 or uint16).
    """
    bits, signed = _check_bits_signed(bits, signed)
    x, y = _broadcast(_lane_operand("a", a, bits, signed), _lane_operand("b", b, bits, signed))
    return saturate(x - y, bits, signed)


def shift_right(a, n: int, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Arithmetic right shift by ``n`` bits: ``floor(a / 2**n)`` (rounds towards
    minus infinity; the sign bit is copied in, so -1 stays -1).

    ``a``: integers in the lane type's range; ``n``: integer in 0..bits-1.
    Returns the lane dtype (int8, uint8, int16 or uint16).
    """
    bits, signed = _check_bits_signed(bits, signed)
    x = _lane_operand("a", a, bits, signed)
    n = _check_int_scalar("n", n, 0, bits - 1)
    return (x >> n).astype(lane_dtype(bits, signed))


def clamp(a, lo: int, hi: int, bits: int = 8, signed: bool = True) -> np.ndarray:
    """Clamp lanes to ``lo..hi`` (a max then a min on the SIMD unit).

    ``a``: integers in the lane type's range; ``lo``, ``hi``: integers in the lane
    type's range with ``lo <= hi``. Returns the lane dtype.
    """
    bits, signed = _check_bits_signed(bits, signed)
    tlo, thi = lane_range(bits, signed)
    x = _lane_operand("a", a, bits, signed)
    lo = _check_int_scalar("lo", lo, tlo, thi)
    hi = _check_int_scalar("hi", hi, tlo, thi)
    if lo > hi:
        raise ValueError(f"lo={lo} is above hi={hi}; expected lo <= hi within {tlo}..{thi}")
    return np.clip(x, lo, hi).astype(lane_dtype(bits, signed))


def relu(a, bits: int = 8) -> np.ndarray:
    """Rectifier on signed lanes: ``max(a, 0)``.

    ``a``: signed integers of ``bits`` (8: -128..127, 16: -32768..32767).
    Returns ``np.int8`` (8 bit) or ``np.int16`` (16 bit).
    """
    bits, _ = _check_bits_signed(bits, True)
    x = _lane_operand("a", a, bits, True)
    return np.maximum(x, 0).astype(lane_dtype(bits, True))


def converting_relu(a, shift: int) -> np.ndarray:
    """Converting ReLU between layers [W20][SW]: a signed 8-bit VMM result becomes
    a 5-bit input of the next layer, ``min(max(a, 0) >> shift, 31)`` (clamp to
    0..127, shift right by ``shift`` bits, clamp to 0..31).

    ``a``: integers in OUTPUT_MIN..OUTPUT_MAX (-128..127); ``shift``: integer in
    0..7. Returns ``np.uint8`` with values in 0..INPUT_MAX (0..31).
    """
    x = _check_int_values("a", a, OUTPUT_MIN, OUTPUT_MAX)
    shift = _check_int_scalar("shift", shift, 0, CONVERTING_RELU_MAX_SHIFT)
    return np.clip(np.clip(x, 0, OUTPUT_MAX) >> shift, 0, INPUT_MAX).astype(np.uint8)


# --- cost model --------------------------------------------------------------------

@dataclass(frozen=True)
class PPUCostParams:
    """Costs of PPU operations in PPU clock cycles (4 ns at 250 MHz), bytes and
    seconds. None of them is published: every value is *assumed* and can be changed.

    The accelerator counts with them the operations outside a VMM (ReLU,
    converting ReLU, additions, streaming); a VMM's own timing (CADC reads,
    resets, the saturating subtract, weight writes) comes from its sequence's
    playback and PPU programs (:mod:`bss2sim.digital.sequences`) and the
    cycle model of the processor, not from these. :class:`PPU`'s counting
    methods for those operations remain for programs of your own."""

    simd_op_cycles: int = 1
    """Cycles per SIMD arithmetic operation on one 1024-bit vector; default 1
    (*assumed*: a pipelined vector unit issues one operation per cycle)."""
    vector_load_store_cycles: int = 2
    """Cycles per load or store of one 1024-bit vector between SRAM and a vector
    register; default 2 (*assumed*: the SRAM port is narrower than a register or
    needs an extra access cycle)."""
    cadc_read_cycles: int = 4
    """Cycles per read of 128 CADC channels into a vector register; default 4
    (*assumed*: a read over the on-chip bus; the conversion time itself,
    ``CADC_CONVERSION_S``, is counted by the analog model, not here)."""
    loop_iteration_cycles: int = 3
    """Cycles of scalar loop overhead per iteration (counter update, compare,
    branch); default 3 (*assumed*: one cycle each on the in-order scalar core)."""
    weight_row_write_cycles: int = 32
    """Cycles per write of one synapse row of 256 weights; default 32 (*assumed*:
    256 synapses of 8 bit in 2 vectors plus the bus transfer to the array)."""
    neuron_reset_cycles: int = 4
    """Cycles per trigger of a reset of all neurons of the half; default 4
    (*assumed*: one bus write; the reset settling itself is analog)."""
    reserved_bytes: int = 4096
    """Bytes of the 16 KiB SRAM reserved for program and stack; default 4096
    (*assumed*: a small inference kernel and its stack fit in 4 KiB)."""
    link_bytes_per_s: float = FPGA_CLOCK_HZ * 8
    """Bandwidth of the link that streams data in and out of PPU memory in bytes per
    second; default 125e6 * 8 = 1e9 (*assumed* FPGA link: 64 bit per 125 MHz FPGA cycle)."""
    link_latency_s: float = 1e-6
    """Fixed latency per streamed transfer (one chunk) in seconds; default 1e-6
    (*assumed*: a round trip through the FPGA of about 1 us)."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                        or value < 0:
                    raise ValueError(f"PPUCostParams.{f.name}={value!r} is not allowed: "
                                     f"must be an integer >= 0")
        if self.reserved_bytes >= PPU_MEMORY_BYTES:
            raise ValueError(f"PPUCostParams.reserved_bytes={self.reserved_bytes!r} is not allowed: "
                             f"must be in 0..{PPU_MEMORY_BYTES - 1} (PPU memory is {PPU_MEMORY_BYTES} bytes)")
        v = self.link_bytes_per_s
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(v) and v > 0):
            raise ValueError(f"PPUCostParams.link_bytes_per_s={v!r} is not allowed: "
                             f"must be a finite number > 0")
        v = self.link_latency_s
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"PPUCostParams.link_latency_s={v!r} is not allowed: "
                             f"must be a finite number >= 0")


class PPU:
    """One embedded processor of a chip half: performs operations on numpy data and
    counts their cost.

    ``cycles`` (int, PPU clock cycles) grows by the documented formula of each
    method; ``time_s`` is ``cycles / PPU_CLOCK_HZ``. ``stream_seconds`` (float,
    seconds) accumulates link time from :meth:`stream`, kept apart from the cycles
    because the link, not the core, is busy then.
    """

    def __init__(self, half: int = 0, params: PPUCostParams | None = None):
        """``half``: 0 (top) or 1 (bottom); ``params``: cost constants (defaults if None)."""
        if isinstance(half, (bool, np.bool_)) or not isinstance(half, (int, np.integer)) \
                or not 0 <= half < NUM_HALVES:
            raise ValueError(f"half={half!r} is not allowed: must be 0 (top) or 1 (bottom)")
        if params is None:
            params = PPUCostParams()
        if not isinstance(params, PPUCostParams):
            raise ValueError(f"params={params!r} is not allowed: must be a PPUCostParams")
        self.half = int(half)
        self.params = params
        self.cycles = 0
        self.stream_seconds = 0.0

    # --- properties -----------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Seconds of core time counted so far: ``cycles / PPU_CLOCK_HZ``."""
        return self.cycles / PPU_CLOCK_HZ

    @property
    def data_capacity_bytes(self) -> int:
        """Bytes of SRAM free for data: ``PPU_MEMORY_BYTES - params.reserved_bytes``."""
        return PPU_MEMORY_BYTES - self.params.reserved_bytes

    def _add(self, cycles: int) -> int:
        self.cycles += int(cycles)
        return int(cycles)

    # --- operations -----------------------------------------------------------------

    def vector_ops(self, n: int) -> int:
        """Count ``n`` SIMD arithmetic operations on 1024-bit vectors.

        Cost: ``n * simd_op_cycles``. Returns the cycles added.
        """
        n = _check_int_scalar("n", n, 0, math.inf)
        return self._add(n * self.params.simd_op_cycles)

    def read_cadc(self, codes) -> np.ndarray:
        """Read CADC codes into vector registers.

        ``codes``: integers in 0..CADC_MAX (0..255), shape ``(..., 256)``; every
        256-channel row takes ``256 / 128 = 2`` vector reads. Cost:
        ``rows * 2 * cadc_read_cycles`` with ``rows = codes.size / 256``.
        Returns the codes as ``np.uint8``, same shape.
        """
        c = _check_int_values("codes", codes, 0, CADC_MAX)
        if c.ndim < 1 or c.shape[-1] != COLUMNS_PER_HALF:
            raise ValueError(f"codes has shape {c.shape}; expected (..., {COLUMNS_PER_HALF})")
        reads = c.size // lanes(8)
        self._add(reads * self.params.cadc_read_cycles)
        return c.astype(np.uint8)

    def vmm_postprocess(self, read_codes, baseline_codes, relu_shift: int | None = None) -> np.ndarray:
        """Digital result of VMMs from two CADC conversions: the codes read after
        the inputs and the baseline codes read before them.

        Per column ``result = saturate_int8(read - baseline)``: the codes are
        widened to 16-bit lanes, subtracted there (no overflow: -255..255) and
        packed to 8 bit with saturation to OUTPUT_MIN..OUTPUT_MAX. With
        ``relu_shift`` (0..7) the converting ReLU follows and the result is a
        5-bit input for the next layer.

        ``read_codes``, ``baseline_codes``: integers in 0..255 of equal shape,
        ``(256,)`` or ``(B, 256)``; each vector has its own baseline conversion.
        Returns ``np.int8`` in -128..127 (no ReLU) or ``np.uint8`` in 0..31
        (with ReLU), same shape as the codes.

        Cost per vector (a batch costs ``B`` times this), with ``L8 = 128`` and
        ``L16 = 64`` lanes::

            2 conversions * (256 / L8) CADC reads * cadc_read_cycles     (4 reads)
          + (256 / L16) 16-bit subtractions * simd_op_cycles              (4 ops)
          + (256 / L16) saturate-and-pack ops * simd_op_cycles            (4 ops)
          + [ReLU] (256 / L8) * 3 ops * simd_op_cycles                    (6 ops)
          + (256 / L8) vector stores * vector_load_store_cycles           (2 stores)
          + 1 loop iteration * loop_iteration_cycles

        which is 31 cycles per vector with the default costs (37 with the ReLU).
        Saturate-and-pack is one op per 16-bit source vector (*assumed*).
        """
        read = _checked_codes("read_codes", read_codes)
        base = _checked_codes("baseline_codes", baseline_codes)
        if read.ndim not in (1, 2) or read.shape[-1] != COLUMNS_PER_HALF:
            raise ValueError(f"read_codes has shape {read.shape}; expected ({COLUMNS_PER_HALF},) "
                             f"or (B, {COLUMNS_PER_HALF})")
        if base.shape != read.shape:
            raise ValueError(f"baseline_codes has shape {base.shape}; expected {read.shape} "
                             f"(the shape of read_codes)")
        if relu_shift is not None:
            relu_shift = _check_int_scalar("relu_shift", relu_shift, 0, CONVERTING_RELU_MAX_SHIFT)
        batch = 1 if read.ndim == 1 else read.shape[0]

        # Checked once above; the lane operations below run unchecked on the
        # 16-bit lanes (read - baseline lies in -255..255: no 16-bit saturation).
        diff = read.astype(np.int16) - base.astype(np.int16)
        result = np.clip(diff, OUTPUT_MIN, OUTPUT_MAX).astype(np.int8)
        if relu_shift is not None:
            result = converting_relu(result, relu_shift)

        self.count_postprocess(batch, relu_shift is not None)
        return result

    def count_postprocess(self, batch: int, relu: bool = False) -> int:
        """Count the cycles of :meth:`vmm_postprocess` for ``batch`` vectors without
        data (the behavioural fidelity runs the same program on the same PPU)."""
        batch = check_int("batch", batch, 0, 1 << 40)
        relu = check_bool("relu", relu)
        p = self.params
        vec8 = COLUMNS_PER_HALF // lanes(8)
        vec16 = COLUMNS_PER_HALF // lanes(16)
        ops = vec16 + vec16
        if relu:
            ops += vec8 * CONVERTING_RELU_OPS_PER_VECTOR
        per_vector = (2 * vec8 * p.cadc_read_cycles + ops * p.simd_op_cycles
                      + vec8 * p.vector_load_store_cycles + p.loop_iteration_cycles)
        return self._add(int(batch) * per_vector)

    def write_weight_rows(self, num_rows: int) -> int:
        """Count writes of ``num_rows`` synapse rows (256 weights each).

        Cost: ``num_rows * weight_row_write_cycles``. Returns the cycles added.
        """
        num_rows = _check_int_scalar("num_rows", num_rows, 0, math.inf)
        return self._add(num_rows * self.params.weight_row_write_cycles)

    def reset_neurons(self) -> int:
        """Count one trigger of a reset of all neurons of the half.

        Cost: ``neuron_reset_cycles``. Returns the cycles added.
        """
        return self._add(self.params.neuron_reset_cycles)

    def stream(self, bytes_in: int, bytes_out: int) -> float:
        """Seconds to stream data into and out of PPU memory through the link when
        it does not fit at once; added to ``stream_seconds``.

        Each direction moves in chunks of at most ``data_capacity_bytes``; every
        chunk pays the fixed latency, and both directions share the link
        (*assumed* one after the other)::

            chunks = ceil(bytes_in / capacity) + ceil(bytes_out / capacity)
            seconds = chunks * link_latency_s + (bytes_in + bytes_out) / link_bytes_per_s

        ``bytes_in``, ``bytes_out``: integers >= 0 (bytes). Zero bytes cost nothing.
        """
        bytes_in = _check_int_scalar("bytes_in", bytes_in, 0, math.inf)
        bytes_out = _check_int_scalar("bytes_out", bytes_out, 0, math.inf)
        cap = self.data_capacity_bytes
        chunks = -(-bytes_in // cap) + -(-bytes_out // cap)
        seconds = chunks * self.params.link_latency_s + (bytes_in + bytes_out) / self.params.link_bytes_per_s
        self.stream_seconds += seconds
        return seconds
