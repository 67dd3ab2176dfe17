"""PPU lane operations against slow element-by-element references, and the PPU
cost model against its documented formulas (expected values written out here
from the PPUCostParams fields)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from bss2sim.circuits.constants import PPU_CLOCK_HZ, PPU_MEMORY_BYTES
from bss2sim.digital.ppu import (PPU, PPUCostParams, add_sat, clamp, converting_relu, lane_dtype,
                         lane_range, lanes, relu, saturate, shift_right, sub_sat)

LANE_TYPES = [(8, True), (8, False), (16, True), (16, False)]
EXPECTED_DTYPE = {(8, True): np.int8, (8, False): np.uint8,
                  (16, True): np.int16, (16, False): np.uint16}
EXPECTED_RANGE = {(8, True): (-128, 127), (8, False): (0, 255),
                  (16, True): (-32768, 32767), (16, False): (0, 65535)}


# --- slow references ---------------------------------------------------------------

def ref_saturate_one(v, lo, hi):
    if v > hi:
        return hi
    if v < lo:
        return lo
    return v


def ref_elementwise(fn, *arrays):
    """Apply a python function of ints element by element."""
    flat = [np.asarray(a).ravel().tolist() for a in arrays]
    out = [fn(*vals) for vals in zip(*flat)]
    return np.array(out, dtype=np.int64).reshape(np.asarray(arrays[0]).shape)


def ref_shift(v, n):
    q = v // (2 ** n)           # python floor division: rounds towards minus infinity
    return q


def ref_converting_relu(v, shift):
    if v < 0:
        v = 0
    if v > 127:
        v = 127
    v = v // (2 ** shift)
    if v < 0:
        v = 0
    if v > 31:
        v = 31
    return v


def operands(bits, signed, rng):
    """Pairs (a, b) covering the whole 8-bit plane, or edges plus random for 16 bit."""
    lo, hi = EXPECTED_RANGE[(bits, signed)]
    if bits == 8:
        vals = np.arange(lo, hi + 1)
        a, b = np.meshgrid(vals, vals, indexing="ij")
        return a.reshape(-1, 128), b.reshape(-1, 128)
    edges = [lo, lo + 1, lo + 2, -2, -1, 0, 1, 2, hi // 2, hi // 2 + 1, hi - 1, hi]
    edges = sorted({e for e in edges if lo <= e <= hi})
    pairs = list(itertools.product(edges, edges))
    n = 64 * 100 - len(pairs)
    a = np.concatenate([[p[0] for p in pairs], rng.integers(lo, hi + 1, n)])
    b = np.concatenate([[p[1] for p in pairs], rng.integers(lo, hi + 1, n)])
    return a.reshape(-1, 64), b.reshape(-1, 64)


# --- lane types --------------------------------------------------------------------

def test_lane_counts_and_types():
    assert lanes(8) == 128 and lanes(16) == 64
    for lt in LANE_TYPES:
        assert lane_range(*lt) == EXPECTED_RANGE[lt]
        assert lane_dtype(*lt) is EXPECTED_DTYPE[lt]


# --- add_sat / sub_sat ---------------------------------------------------------------

@pytest.mark.parametrize("bits,signed", LANE_TYPES)
def test_add_sat_matches_reference(bits, signed):
    lo, hi = EXPECTED_RANGE[(bits, signed)]
    a, b = operands(bits, signed, np.random.default_rng(bits + signed))
    got = add_sat(a, b, bits=bits, signed=signed)
    assert got.dtype == EXPECTED_DTYPE[(bits, signed)]
    assert got.shape == a.shape
    want = ref_elementwise(lambda x, y: ref_saturate_one(x + y, lo, hi), a, b)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("bits,signed", LANE_TYPES)
def test_sub_sat_matches_reference(bits, signed):
    lo, hi = EXPECTED_RANGE[(bits, signed)]
    a, b = operands(bits, signed, np.random.default_rng(10 + bits + signed))
    got = sub_sat(a, b, bits=bits, signed=signed)
    assert got.dtype == EXPECTED_DTYPE[(bits, signed)]
    want = ref_elementwise(lambda x, y: ref_saturate_one(x - y, lo, hi), a, b)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("bits,signed,a,b,add_want,sub_want", [
    (8, True, 127, 1, 127, 126), (8, True, -128, -1, -128, -127),
    (8, True, -128, 1, -127, -128), (8, True, 127, -1, 126, 127),
    (8, True, 100, 100, 127, 0), (8, True, -100, 100, 0, -128),
    (8, False, 255, 1, 255, 254), (8, False, 0, 1, 1, 0), (8, False, 200, 100, 255, 100),
    (16, True, 32767, 1, 32767, 32766), (16, True, -32768, -1, -32768, -32767),
    (16, True, -32768, 1, -32767, -32768), (16, True, 32767, -1, 32766, 32767),
    (16, False, 65535, 1, 65535, 65534), (16, False, 0, 1, 1, 0),
])
def test_saturation_at_both_ends(bits, signed, a, b, add_want, sub_want):
    assert int(add_sat(a, b, bits, signed)) == add_want
    assert int(sub_sat(a, b, bits, signed)) == sub_want


def test_add_sat_broadcasts_a_scalar():
    a = np.arange(-64, 64).reshape(1, 128)
    np.testing.assert_array_equal(add_sat(a, 100).astype(int), np.clip(a + 100, -128, 127))


# --- shift_right ---------------------------------------------------------------------

@pytest.mark.parametrize("bits,signed", LANE_TYPES)
def test_shift_right_matches_reference(bits, signed):
    lo, hi = EXPECTED_RANGE[(bits, signed)]
    rng = np.random.default_rng(20 + bits)
    a = np.arange(lo, hi + 1) if bits == 8 else np.concatenate(
        [[lo, lo + 1, -1, 0, 1, hi - 1, hi], rng.integers(lo, hi + 1, 64 * 50 - 7)])
    a = a[(a >= lo) & (a <= hi)]
    for n in range(bits):
        got = shift_right(a, n, bits, signed)
        assert got.dtype == EXPECTED_DTYPE[(bits, signed)]
        np.testing.assert_array_equal(got.astype(np.int64), ref_elementwise(lambda v: ref_shift(v, n), a))


def test_shift_right_is_arithmetic():
    assert int(shift_right(-1, 3)) == -1
    assert int(shift_right(-128, 7)) == -1
    assert int(shift_right(-5, 1)) == -3
    assert int(shift_right(127, 7)) == 0
    assert int(shift_right(255, 4, 8, False)) == 15


# --- clamp / relu / saturate --------------------------------------------------------

@pytest.mark.parametrize("bits,signed", LANE_TYPES)
def test_clamp_matches_reference(bits, signed):
    lo_t, hi_t = EXPECTED_RANGE[(bits, signed)]
    rng = np.random.default_rng(30 + bits + signed)
    a = rng.integers(lo_t, hi_t + 1, (4, lanes(bits)))
    a[0, :4] = [lo_t, hi_t, lo_t + 1, hi_t - 1]
    for lo, hi in [(lo_t, hi_t), (0, 31), (lo_t, lo_t), (hi_t, hi_t), (5, 6),
                   (max(lo_t, -20), 100)]:
        got = clamp(a, lo, hi, bits, signed)
        assert got.dtype == EXPECTED_DTYPE[(bits, signed)]
        np.testing.assert_array_equal(got.astype(np.int64),
                                      ref_elementwise(lambda v: ref_saturate_one(v, lo, hi), a))


@pytest.mark.parametrize("bits", [8, 16])
def test_relu_matches_reference(bits):
    lo, hi = EXPECTED_RANGE[(bits, True)]
    a = np.arange(lo, hi + 1) if bits == 8 else np.random.default_rng(1).integers(lo, hi + 1, 6400)
    got = relu(a, bits)
    assert got.dtype == EXPECTED_DTYPE[(bits, True)]
    np.testing.assert_array_equal(got.astype(np.int64), ref_elementwise(lambda v: v if v > 0 else 0, a))


@pytest.mark.parametrize("bits,signed", LANE_TYPES)
def test_saturate_matches_reference(bits, signed):
    lo, hi = EXPECTED_RANGE[(bits, signed)]
    a = np.array([-2**40, -70000, -32769, -32768, -129, -128, -1, 0, 1, 127, 128, 255, 256,
                  32767, 32768, 65535, 65536, 2**40], dtype=np.int64)
    got = saturate(a, bits, signed)
    assert got.dtype == EXPECTED_DTYPE[(bits, signed)]
    np.testing.assert_array_equal(got.astype(np.int64),
                                  ref_elementwise(lambda v: ref_saturate_one(v, lo, hi), a))


def test_saturate_huge_unsigned_does_not_wrap():
    assert int(saturate(np.array([2**64 - 1], np.uint64), 16, True)[0]) == 32767
    assert int(saturate(np.array([2**63], np.uint64), 8, False)[0]) == 255


# --- converting ReLU -----------------------------------------------------------------

def test_converting_relu_all_inputs_all_shifts():
    a = np.arange(-128, 128).reshape(2, 128)
    for shift in range(8):
        got = converting_relu(a, shift)
        assert got.dtype == np.uint8
        assert got.shape == a.shape
        np.testing.assert_array_equal(got.astype(np.int64),
                                      ref_elementwise(lambda v: ref_converting_relu(v, shift), a))


@pytest.mark.parametrize("x,shift,want", [(127, 0, 31), (31, 0, 31), (32, 0, 31), (30, 0, 30),
                                          (-1, 0, 0), (-128, 7, 0), (127, 2, 31), (127, 3, 15),
                                          (127, 7, 0), (64, 1, 31), (40, 1, 20), (41, 1, 20)])
def test_converting_relu_examples(x, shift, want):
    assert int(converting_relu(x, shift)) == want


# --- validation ----------------------------------------------------------------------

@pytest.mark.parametrize("fn,args,match", [
    (add_sat, (np.array([0, 200]), 0), r"a\[1\]=200 is out of range -128\.\.127"),
    (add_sat, (0, np.array([[0, -129]])), r"b\[0, 1\]=-129 is out of range -128\.\.127"),
    (sub_sat, (np.array([0, -1]), 0, 8, False), r"a\[1\]=-1 is out of range 0\.\.255"),
    (sub_sat, (0, 70000, 16, True), r"b=70000 is out of range -32768\.\.32767"),
    (add_sat, (np.array([1.0, 2.0]), 0), r"a has dtype float64"),
    (sub_sat, (0, np.array([np.nan])), r"b contains NaN"),
    (add_sat, (0, 0, 12), r"bits=12 is not allowed"),
    (add_sat, (0, 0, 8, 1), r"signed=1 is not allowed"),
    (shift_right, (np.array([300]), 1), r"a\[0\]=300 is out of range -128\.\.127"),
    (shift_right, (1, 8), r"n=8 is not allowed: must be an integer in 0\.\.7"),
    (shift_right, (1, -1, 16), r"n=-1 is not allowed: must be an integer in 0\.\.15"),
    (clamp, (0, 5, 3), r"lo=5 is above hi=3"),
    (clamp, (0, -200, 3), r"lo=-200 is not allowed: must be an integer in -128\.\.127"),
    (clamp, (0, 0, 256, 8, False), r"hi=256 is not allowed: must be an integer in 0\.\.255"),
    (relu, (np.array([128]),), r"a\[0\]=128 is out of range -128\.\.127"),
    (relu, (np.array([True]),), r"a has dtype bool"),
    (converting_relu, (np.array([1, 128]), 0), r"a\[1\]=128 is out of range -128\.\.127"),
    (converting_relu, (0, 8), r"shift=8 is not allowed: must be an integer in 0\.\.7"),
    (converting_relu, (0, 1.0), r"shift=1\.0 is not allowed"),
    (converting_relu, (np.array([np.inf]), 0), r"a contains NaN or infinity"),
    (saturate, (np.array([0.5]),), r"a has dtype float64"),
    (saturate, (np.array([np.nan]), 16), r"a contains NaN"),
])
def test_bad_input_raises(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_inputs_are_not_modified():
    a = np.array([100, -100, 5], np.int64)
    b = np.array([100, 100, 5], np.int64)
    add_sat(a, b)
    sub_sat(a, b)
    converting_relu(a, 2)
    np.testing.assert_array_equal(a, [100, -100, 5])
    np.testing.assert_array_equal(b, [100, 100, 5])


# --- cost parameters -----------------------------------------------------------------

def test_cost_param_defaults_and_frozen():
    p = PPUCostParams()
    assert (p.simd_op_cycles, p.vector_load_store_cycles, p.cadc_read_cycles,
            p.loop_iteration_cycles, p.weight_row_write_cycles, p.neuron_reset_cycles,
            p.reserved_bytes) == (1, 2, 4, 3, 32, 4, 4096)
    assert p.link_bytes_per_s == pytest.approx(1e9)
    assert p.link_latency_s == pytest.approx(1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.simd_op_cycles = 2


@pytest.mark.parametrize("kwargs,match", [
    ({"simd_op_cycles": -1}, r"simd_op_cycles=-1"),
    ({"cadc_read_cycles": 1.5}, r"cadc_read_cycles=1\.5"),
    ({"reserved_bytes": PPU_MEMORY_BYTES}, r"reserved_bytes=16384 is not allowed"),
    ({"link_bytes_per_s": 0.0}, r"link_bytes_per_s=0\.0"),
    ({"link_latency_s": float("nan")}, r"link_latency_s=nan"),
])
def test_cost_param_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPUCostParams(**kwargs)


# distinct primes so that a swapped or missing field changes every expected count
ODD = PPUCostParams(simd_op_cycles=2, vector_load_store_cycles=3, cadc_read_cycles=5,
                    loop_iteration_cycles=7, weight_row_write_cycles=11, neuron_reset_cycles=13,
                    reserved_bytes=1000, link_bytes_per_s=3.0e8, link_latency_s=2.5e-6)


@pytest.mark.parametrize("half", [2, -1, True, 0.0])
def test_bad_half(half):
    with pytest.raises(ValueError, match=rf"half={half!r} is not allowed"):
        PPU(half)


# --- PPU operations --------------------------------------------------------------------

def expected_postprocess_cycles(p, batch, relu_on):
    cadc_reads = 2 * (256 // 128)          # two conversions, two 128-channel reads each
    sub_ops = 256 // 64                    # 16-bit subtraction, 64 lanes per vector
    pack_ops = 256 // 64                   # saturate-and-pack, one per 16-bit vector
    relu_ops = (256 // 128) * 3 if relu_on else 0
    stores = 256 // 128
    per_vector = (cadc_reads * p.cadc_read_cycles
                  + (sub_ops + pack_ops + relu_ops) * p.simd_op_cycles
                  + stores * p.vector_load_store_cycles
                  + 1 * p.loop_iteration_cycles)
    return batch * per_vector


@pytest.mark.parametrize("params", [PPUCostParams(), ODD])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("relu_shift", [None, 3])
def test_vmm_postprocess_cycles(params, batch, relu_shift):
    rng = np.random.default_rng(batch)
    read = rng.integers(0, 256, (batch, 256))
    base = rng.integers(0, 256, (batch, 256))
    ppu = PPU(1, params)
    ppu.vmm_postprocess(read, base, relu_shift=relu_shift)
    want = expected_postprocess_cycles(params, batch, relu_shift is not None)
    assert ppu.cycles == want
    assert isinstance(ppu.cycles, int)
    assert ppu.time_s == pytest.approx(want / PPU_CLOCK_HZ)
    ppu.vmm_postprocess(read, base, relu_shift=relu_shift)      # counter accumulates
    assert ppu.cycles == 2 * want


def test_vmm_postprocess_default_cycles_literal():
    ppu = PPU()
    codes = np.zeros((1, 256), np.uint8)
    ppu.vmm_postprocess(codes, codes)
    assert ppu.cycles == 4 * 4 + 8 * 1 + 2 * 2 + 3 == 31
    ppu.vmm_postprocess(codes[0], codes[0], relu_shift=0)   # 1-D counts as one vector
    assert ppu.cycles == 31 + 37
    assert ppu.time_s == pytest.approx(68 * 4e-9)


def test_vmm_postprocess_result():
    rng = np.random.default_rng(7)
    read = rng.integers(0, 256, (9, 256)).astype(np.uint8)
    base = rng.integers(0, 256, (9, 256)).astype(np.uint8)
    read[0, :4], base[0, :4] = [255, 0, 127, 128], [0, 255, 0, 0]   # +255, -255, +127, +128
    read[1, :3], base[1, :3] = [0, 0, 1], [128, 129, 129]            # -128, -129, -128
    got = PPU().vmm_postprocess(read, base)
    want = np.clip(read.astype(int) - base, -128, 127)
    assert got.dtype == np.int8 and got.shape == (9, 256)
    np.testing.assert_array_equal(got.astype(int), want)
    assert list(got[0, :4]) == [127, -128, 127, 127]
    assert list(got[1, :3]) == [-128, -128, -128]
    for s in range(8):
        got_r = PPU().vmm_postprocess(read, base, relu_shift=s)
        assert got_r.dtype == np.uint8
        np.testing.assert_array_equal(got_r.astype(int), np.clip(np.clip(want, 0, 127) >> s, 0, 31))
        np.testing.assert_array_equal(got_r, converting_relu(want, s))


@pytest.mark.parametrize("kwargs,match", [
    ({"read_codes": np.full((2, 256), 256)}, r"read_codes\[0, 0\]=256 is out of range 0\.\.255"),
    ({"baseline_codes": np.full((2, 256), -1)}, r"baseline_codes\[0, 0\]=-1 is out of range 0\.\.255"),
    ({"read_codes": np.zeros((2, 256))}, r"read_codes has dtype float64"),
    ({"read_codes": np.zeros((2, 128), int), "baseline_codes": np.zeros((2, 128), int)},
     r"read_codes has shape \(2, 128\)"),
    ({"baseline_codes": np.zeros((256,), int)}, r"baseline_codes has shape \(256,\); expected \(2, 256\)"),
    ({"relu_shift": 8}, r"relu_shift=8 is not allowed: must be an integer in 0\.\.7"),
    ({"relu_shift": -1}, r"relu_shift=-1 is not allowed"),
])
def test_vmm_postprocess_bad_input(kwargs, match):
    args = {"read_codes": np.zeros((2, 256), int), "baseline_codes": np.zeros((2, 256), int)}
    args.update(kwargs)
    ppu = PPU()
    with pytest.raises(ValueError, match=match):
        ppu.vmm_postprocess(**args)
    assert ppu.cycles == 0


@pytest.mark.parametrize("params", [PPUCostParams(), ODD])
def test_read_cadc(params):
    ppu = PPU(0, params)
    codes = np.random.default_rng(3).integers(0, 256, (3, 4, 256))
    out = ppu.read_cadc(codes)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, codes)
    assert ppu.cycles == 3 * 4 * 2 * params.cadc_read_cycles
    with pytest.raises(ValueError, match=r"codes has shape \(3, 255\)"):
        ppu.read_cadc(np.zeros((3, 255), int))
    with pytest.raises(ValueError, match=r"codes\[0\]=300 is out of range 0\.\.255"):
        ppu.read_cadc(np.full(256, 300))


@pytest.mark.parametrize("params", [PPUCostParams(), ODD])
def test_vector_ops_weight_rows_and_reset(params):
    ppu = PPU(0, params)
    assert ppu.vector_ops(10) == 10 * params.simd_op_cycles
    assert ppu.write_weight_rows(256) == 256 * params.weight_row_write_cycles
    assert ppu.write_weight_rows(0) == 0
    assert ppu.reset_neurons() == params.neuron_reset_cycles
    total = 10 * params.simd_op_cycles + 256 * params.weight_row_write_cycles + params.neuron_reset_cycles
    assert ppu.cycles == total
    assert ppu.time_s == pytest.approx(total / PPU_CLOCK_HZ)
    with pytest.raises(ValueError, match=r"num_rows=-1 is not allowed: must be an integer >= 0"):
        ppu.write_weight_rows(-1)
    with pytest.raises(ValueError, match=r"num_rows=2\.0 is not allowed"):
        ppu.write_weight_rows(2.0)
    with pytest.raises(ValueError, match=r"n=-3 is not allowed"):
        ppu.vector_ops(-3)
    assert ppu.cycles == total


def test_default_weight_rows_literal():
    ppu = PPU()
    ppu.write_weight_rows(256)
    assert ppu.cycles == 8192


def test_data_capacity():
    assert PPU().data_capacity_bytes == 16 * 1024 - 4096 == 12288
    assert PPU(1, ODD).data_capacity_bytes == PPU_MEMORY_BYTES - ODD.reserved_bytes


def expected_stream_seconds(p, bytes_in, bytes_out):
    cap = PPU_MEMORY_BYTES - p.reserved_bytes
    chunks = 0
    for n in (bytes_in, bytes_out):
        left = n
        while left > 0:                 # one chunk of at most cap bytes per transfer
            chunks += 1
            left -= cap
    return chunks * p.link_latency_s + (bytes_in + bytes_out) / p.link_bytes_per_s


@pytest.mark.parametrize("params", [PPUCostParams(), ODD])
@pytest.mark.parametrize("bytes_in,bytes_out", [(0, 0), (1, 0), (0, 12288), (12288, 12289),
                                                (100_000, 2_500), (15_384, 15_385)])
def test_stream_seconds(params, bytes_in, bytes_out):
    ppu = PPU(0, params)
    want = expected_stream_seconds(params, bytes_in, bytes_out)
    assert ppu.stream(bytes_in, bytes_out) == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert ppu.stream_seconds == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert ppu.cycles == 0


def test_stream_literal_and_accumulates():
    ppu = PPU()
    s1 = ppu.stream(12288, 12289)         # 1 chunk in, 2 chunks out
    assert s1 == pytest.approx(3e-6 + 24577 / 1e9)
    s2 = ppu.stream(0, 0)
    assert s2 == 0.0
    s3 = ppu.stream(100, 0)
    assert s3 == pytest.approx(1e-6 + 100e-9)
    assert ppu.stream_seconds == pytest.approx(s1 + s3)
    with pytest.raises(ValueError, match=r"bytes_in=-1 is not allowed"):
        ppu.stream(-1, 0)
    with pytest.raises(ValueError, match=r"bytes_out=1\.5 is not allowed"):
        ppu.stream(0, 1.5)
    assert ppu.stream_seconds == pytest.approx(s1 + s3)
