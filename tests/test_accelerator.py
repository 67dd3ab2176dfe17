"""The Accelerator at both fidelities against references written out here:
integer semantics (inputs 0..31, weights -63..63, int8 outputs), tiles of
128 inputs x 256 outputs on both halves with digital accumulation of row tiles,
the behavioural model ``clamp_int8(round(gain * x.W * num_sends + noise))`` per
tile (round half to even; ``formula="hxtorch"``: floor), the hand-sequenced chip program, convolutions by explicit loops, the PPU
operations, behavioural measurement and input validation."""
from __future__ import annotations

import numpy as np
import pytest

from bss2sim.circuits import (CAPMEM_PARAMETERS, Chip, CircuitParams, EventSchedule, MismatchParams,
                      NoiseParams, integrate_fast)
from bss2sim.circuits import constants as K
from bss2sim.digital import Accelerator, BehaviouralParams, measure_behaviour, unfold2d
from bss2sim.digital.ppu import PPUCostParams

ROWS, COLS = 128, 256
PPU_HZ = 250e6
CYCLE_S = 8e-9


def clamp8(a):
    return np.clip(a, -128, 127)


def round_half_even(v):
    """Nearest integer, a half-way value to the even neighbour (written out,
    not np.rint)."""
    v = np.asarray(v, np.float64)
    f = np.floor(v)
    d = v - f
    return f + (d > 0.5) + ((d == 0.5) & (np.mod(f, 2) == 1))


def behavioural_ref(x, w, gain, num_sends=1):
    """Noise-free behavioural model: per tile of 128 rows x 256 columns,
    clamp_int8(round(gain * x_tile . W_tile * num_sends)); row tiles summed and clamped."""
    x = np.atleast_2d(x)
    B, Kin = x.shape
    N = w.shape[1]
    out = np.zeros((B, N), np.int64)
    for r0 in range(0, Kin, ROWS):
        part = (x[:, r0:r0 + ROWS] @ w[r0:r0 + ROWS]) * num_sends
        out += clamp8(round_half_even(gain * part).astype(np.int64))
    return clamp8(out)


def ideal_chip():
    return Chip(0, mismatch=MismatchParams.none(), noise=NoiseParams.none(), preset="ideal",
                circuit=CircuitParams(pulse_nonlinearity=0.0, residual_leak_tau_s=1e3,
                                      syn_knee_c=1e-12))


def sparse_x(rng, B, Kin, density, high=31):
    return rng.integers(1, high + 1, (B, Kin)) * (rng.random((B, Kin)) < density)


# --- behavioural tiling ----------------------------------------------------------------

# Gains are binary fractions, so gain * (x.W) * num_sends is exact in floating point
# whatever the order of the products, and the rounding is unambiguous.
@pytest.mark.parametrize("gain,num_sends,shape", [
    (3 / 2048, 1, (300, 300)),   # 3 row tiles x 2 column tiles
    (3 / 2048, 4, (300, 100)),
    (1 / 256, 2, (256, 520)),    # tiles saturate on their own before the sum
    (1 / 64, 1, (129, 257)),     # one-row and one-column remainders
])
def test_behavioural_tiled_matches_sum_of_rounded_tiles(gain, num_sends, shape):
    Kin, N = shape
    rng = np.random.default_rng(Kin + N)
    x = sparse_x(rng, 6, Kin, 0.5)
    w = rng.integers(-63, 64, (Kin, N))
    acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=2.0), noise_seed=None)
    y = acc.matmul(x, w, num_sends=num_sends)
    want = behavioural_ref(x, w, gain, num_sends)
    assert y.shape == (6, N)
    np.testing.assert_array_equal(y, want)
    assert np.ptp(want) > 20         # not a trivial all-equal result
    # A single vector gives a single row.
    np.testing.assert_array_equal(acc.matmul(x[2], w, num_sends=num_sends), want[2])


def test_behavioural_single_tile_is_rounded_gain_times_product():
    rng = np.random.default_rng(5)
    x = sparse_x(rng, 8, 100, 0.3)
    w = rng.integers(-63, 64, (100, 256))
    gain = 3 / 2048
    acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=0.0), noise_seed=7)
    y = acc.matmul(x, w)
    ideal = x @ w
    np.testing.assert_array_equal(y, clamp8(round_half_even(gain * ideal)).astype(np.int64))
    # Written out for one element (Python's round() rounds half to even).
    b, c = 3, 17
    s = sum(int(x[b, k]) * int(w[k, c]) for k in range(100))
    assert y[b, c] == max(-128, min(127, round(gain * s)))


# --- chip fidelity by hand -----------------------------------------------------------

def slot_schedule(x, x_other, wait, num_sends, first_slot):
    """Events of one half written out from the slot rule: the half's stream (its
    non-zero inputs in driver order, ``num_sends`` times) ends in the last slot
    of the pair's longer stream, slots ``wait`` apart from ``first_slot``.
    Returns the schedule and each vector's longer stream length."""
    vectors, longest = [], []
    for b in range(x.shape[0]):
        stream = [d for _ in range(num_sends) for d in range(ROWS) if x[b, d] != 0]
        other = 0 if x_other is None else num_sends * int(np.count_nonzero(x_other[b]))
        m = max(len(stream), other)
        vectors.append([(d, int(x[b, d]), first_slot + (m - len(stream) + j) * wait)
                        for j, d in enumerate(stream)])
        longest.append(m)
    return EventSchedule.from_lists(vectors), np.array(longest, np.int64)


def chip_by_hand(chip, x, w, half=0, wait=5, num_sends=1, x_other=None, sequence="published"):
    """The per-vector program of one tile on one half, written out with the chip API:
    logical weights, event schedule, baseline read and read at the times the
    sequence's PPU program gives (its profile), PPU subtraction."""
    from bss2sim.digital.sequences import profile
    prof = profile(sequence)
    tile = np.zeros((ROWS, COLS), np.int64)
    tile[:w.shape[0], :w.shape[1]] = w
    xt = np.zeros((x.shape[0], ROWS), np.int64)
    xt[:, :x.shape[1]] = x
    xo = None
    if x_other is not None:
        xo = np.zeros((x.shape[0], ROWS), np.int64)
        xo[:len(x_other), :x_other.shape[1]] = x_other
    chip.config.set_logical_weights(half, tile)
    sched, longest = slot_schedule(xt, xo, wait, num_sends, prof.event_start[half])
    B = x.shape[0]
    empty = EventSchedule.from_lists([[] for _ in range(B)])
    base = integrate_fast(chip, half, empty, prof.baseline_cycles[half]).codes.astype(np.int64)
    read = integrate_fast(chip, half, sched, prof.event_start[half] + longest * wait
                          + prof.read_after_events[half]).codes.astype(np.int64)
    return clamp8(read - base)[:, :w.shape[1]]


def test_chip_single_tile_matches_hand_sequenced_program():
    chip = Chip(4)
    rng = np.random.default_rng(11)
    Kin, N = 100, 200
    x = sparse_x(rng, 5, Kin, 0.4)
    x[4] = 0                                  # an empty vector reads its baseline
    w = rng.integers(-63, 64, (Kin, N))
    acc = Accelerator(chip, noise_seed=None)
    y = acc.matmul(x, w, wait_between_events=3, num_sends=2)
    # A single tile runs on both halves: even vectors on the top, odd on the bottom.
    want = np.empty_like(y)
    # Each vector runs alone in its entry, the other half idle.
    want[0::2] = chip_by_hand(Chip(4), x[0::2], w, half=0, wait=3, num_sends=2)
    want[1::2] = chip_by_hand(Chip(4), x[1::2], w, half=1, wait=3, num_sends=2)
    np.testing.assert_array_equal(y, want)
    assert np.ptp(want) > 20
    assert np.abs(y[4]).max() <= 1


def test_chip_column_tiles_run_on_both_halves_as_by_hand():
    # 128 x 512: columns 0..255 on the top half, 256..511 on the bottom half, one pass.
    rng = np.random.default_rng(12)
    x = sparse_x(rng, 4, ROWS, 0.3)
    w = rng.integers(-63, 64, (ROWS, 512))
    y = Accelerator(Chip(5), noise_seed=None).matmul(x, w)
    ref = Chip(5)
    top = chip_by_hand(ref, x, w[:, :256], half=0, x_other=x)
    bot = chip_by_hand(ref, x, w[:, 256:], half=1, x_other=x)
    np.testing.assert_array_equal(y, np.concatenate([top, bot], axis=1))


def test_chip_split_into_column_calls_equals_one_call():
    # On a chip without mismatch both halves are the same circuit. A 128 x 512
    # product in one call runs each vector on both halves (the same stream, so
    # the same timing as alone); two 128 x 256 calls run each vector alone on
    # the half of its id's parity: those columns agree.
    rng = np.random.default_rng(13)
    x = sparse_x(rng, 4, ROWS, 0.4)
    w = rng.integers(-63, 64, (ROWS, 512))
    acc = Accelerator(ideal_chip(), noise_seed=None)
    one = acc.matmul(x, w)
    # Separate calls: each tile is shared by both halves, vectors by id parity.
    acc2 = Accelerator(ideal_chip(), noise_seed=None)
    left, right = acc2.matmul(x, w[:, :256]), acc2.matmul(x, w[:, 256:])
    np.testing.assert_array_equal(one[0::2, :256], left[0::2])      # top half
    np.testing.assert_array_equal(one[1::2, 256:], right[1::2])     # bottom half
    assert np.ptp(one) > 20


# --- behavioural vs cycle-level on an ideal chip ------------------------------------

def ideal_gain():
    """Output LSB per unit of x*w on the ideal chip, from the operating point:
    charge per event = pulse width per value x synapse current per weight unit;
    membrane step = charge x syn strength / C_mem; code = voltage / CADC step.
    All capmem currents sit at their default settings (no mismatch)."""
    cp = CircuitParams(pulse_nonlinearity=0.0, residual_leak_tau_s=1e3, syn_knee_c=1e-12)

    def current(name):
        return CAPMEM_PARAMETERS[name].default * K.CAPMEM_CURRENT_FULL_SCALE_A / K.CAPMEM_MAX

    width_per_value = cp.pulse_width_per_value_s * cp.driver_ramp_nominal_a / current("driver_ramp")
    current_per_weight = cp.synapse_current_full_scale_a / K.WEIGHT_MAX \
        * current("synapse_bias") / cp.synapse_bias_nominal_a
    strength = cp.syn_strength_nominal * current("syn_strength_exc") / cp.syn_strength_nominal_a
    volts = width_per_value * current_per_weight * strength / cp.membrane_capacitance_f
    step = cp.cadc_step_nominal_v * current("cadc_ramp_slope") / cp.cadc_slope_nominal_a
    return volts / step


def test_ideal_gain_is_about_the_documented_calibrated_value():
    assert 0.0012 < ideal_gain() < 0.002


def test_behavioural_and_cycle_level_agree_on_an_ideal_chip():
    gain = ideal_gain()
    chip_acc = Accelerator(ideal_chip(), noise_seed=None)
    beh_acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=0.0), noise_seed=None)
    rng = np.random.default_rng(14)
    B = 12
    x = np.zeros((B, ROWS), np.int64)
    for b in range(B):
        n = int(rng.integers(1, 70))
        x[b, rng.choice(ROWS, n, replace=False)] = rng.integers(1, 32, n)
    # Each column has weights of one sign, so the outputs spread over the linear range.
    sign = rng.choice([-1, 1], 512)
    w = rng.integers(0, 64, (ROWS, 512)) * sign           # 512 columns: both halves
    for sends in (1, 2):
        yc = chip_acc.matmul(x, w, num_sends=sends)
        yb = beh_acc.matmul(x, w, num_sends=sends)
        lin = np.abs(gain * (x @ w) * sends) <= 60
        assert lin.mean() > 0.5
        assert np.std(yb[lin]) > 10                   # a real range of outputs
        diff = yc[lin] - yb[lin]
        assert np.abs(diff).max() <= 1, np.abs(diff).max()


# --- noise ---------------------------------------------------------------------------

def test_behavioural_noise_has_sigma():
    sigma, gain = 2.5, 0.0015
    rng = np.random.default_rng(15)
    x = sparse_x(rng, 4, ROWS, 0.3)
    w = rng.integers(-30, 31, (ROWS, COLS))
    acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=sigma), noise_seed=21)
    ys = np.stack([acc.matmul(x, w) for _ in range(40)]).astype(float)
    assert np.abs(ys).max() < 120                     # no clamping
    std = np.sqrt(ys.var(axis=0, ddof=1).mean())
    assert abs(std - sigma) <= 0.15 * sigma, std
    # Unbiased: rounding to nearest adds no bias on average.
    bias = (ys.mean(axis=0) - gain * (x @ w)).mean()
    assert abs(bias) < 0.1, bias


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_same_noise_seed_same_result(fidelity):
    rng = np.random.default_rng(16)
    x = sparse_x(rng, 4, 200, 0.3)
    w = rng.integers(-63, 64, (200, 300))

    def acc(seed):
        if fidelity == "chip":
            return Accelerator(Chip(6), noise_seed=seed)
        return Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=seed)

    a, b, c = acc(99).matmul(x, w), acc(99).matmul(x, w), acc(100).matmul(x, w)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.2


@pytest.mark.parametrize("fidelity", ["behavioural", "behavioural-shared", "chip"])
@pytest.mark.parametrize("shape", [(ROWS, COLS), (200, 300)], ids=["one-tile", "four-tiles"])
def test_batch_split_gives_identical_results(fidelity, shape):
    """Trial-to-trial noise is keyed per vector: one call on the whole batch and
    two calls on slices (each with a fresh Accelerator of the same seed) agree;
    also the noise a quadrant shares (``behavioural-shared``)."""
    Kin, N = shape
    rng = np.random.default_rng(17)
    x = sparse_x(rng, 6, Kin, 0.3)
    w = rng.integers(-63, 64, (Kin, N))

    def acc():
        if fidelity == "chip":
            return Accelerator(Chip(7), noise_seed=5)
        shared = 1.5 if fidelity == "behavioural-shared" else 0.0
        return Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0, sigma_shared=shared),
                           noise_seed=5)

    whole = acc().matmul(x, w)
    # Even and odd split points: a tile left over is shared by the halves by vector
    # id, so where the batch is cut must not matter.
    for cuts in ([2], [3], [1, 4], [1, 2, 3, 4, 5]):
        split_acc = acc()
        parts = np.split(np.arange(len(x)), cuts)
        split = np.concatenate([split_acc.matmul(x[p], w) for p in parts])
        np.testing.assert_array_equal(split, whole, err_msg=str(cuts))


# --- convolutions ---------------------------------------------------------------------

def direct_conv2d(x, w, stride, padding):
    """Integer 2-D convolution (cross-correlation) with zero padding, by loops."""
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (W + 2 * pw - kw) // sw + 1
    out = np.zeros((B, O, ho, wo), np.int64)
    for b in range(B):
        for o in range(O):
            for i in range(ho):
                for j in range(wo):
                    s = 0
                    for c in range(C):
                        for u in range(kh):
                            for v in range(kw):
                                r = i * sh + u - ph
                                q = j * sw + v - pw
                                if 0 <= r < H and 0 <= q < W:
                                    s += int(x[b, c, r, q]) * int(w[o, c, u, v])
                    out[b, o, i, j] = s
    return out


def loop_im2col(x, kernel, stride, padding):
    B, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (W + 2 * pw - kw) // sw + 1
    rows = []
    for b in range(B):
        for i in range(ho):
            for j in range(wo):
                row = []
                for c in range(C):
                    for u in range(kh):
                        for v in range(kw):
                            r, q = i * sh + u - ph, j * sw + v - pw
                            row.append(int(x[b, c, r, q]) if 0 <= r < H and 0 <= q < W else 0)
                rows.append(row)
    return np.array(rows, np.int64), (ho, wo)


CONV_CASES = [((1, 1), (0, 0)), ((2, 2), (1, 1)), ((2, 1), (0, 2)), ((3, 3), (2, 2)), ((1, 2), (1, 0))]


@pytest.mark.parametrize("stride,padding", CONV_CASES)
def test_conv2d_matches_direct_convolution(stride, padding):
    rng = np.random.default_rng(sum(stride) * 10 + sum(padding))
    x = rng.integers(0, 32, (2, 3, 7, 8))
    w = rng.integers(-63, 64, (5, 3, 3, 3))          # 27 inputs: one row tile
    gain = 1.0 / 64
    acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=0.0), noise_seed=None)
    arg_s = stride[0] if stride[0] == stride[1] else stride
    arg_p = padding[0] if padding[0] == padding[1] else padding
    y = acc.conv2d(x, w, stride=arg_s, padding=arg_p)
    ref = direct_conv2d(x, w, stride, padding)
    assert y.shape == ref.shape
    np.testing.assert_array_equal(y, clamp8(round_half_even(gain * ref)).astype(np.int64))
    assert np.ptp(y) > 10


def test_conv2d_with_several_row_tiles_is_the_exact_convolution():
    # 16 channels x 3 x 3 = 144 inputs (two row tiles); gain 1 and small values keep
    # every partial sum exact and within int8.
    rng = np.random.default_rng(18)
    x = rng.integers(0, 2, (2, 16, 5, 6))
    w = rng.integers(-1, 2, (4, 16, 3, 3))
    ref = direct_conv2d(x, w, (1, 2), (1, 1))
    assert np.abs(ref).max() <= 60
    acc = Accelerator(behavioural=BehaviouralParams(gain=1.0, sigma=0.0), noise_seed=None)
    np.testing.assert_array_equal(acc.conv2d(x, w, stride=(1, 2), padding=1), ref)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2), (1, 3)])
def test_conv1d_matches_direct_convolution(stride, padding):
    rng = np.random.default_rng(stride * 7 + padding)
    x = rng.integers(0, 32, (3, 4, 11))
    w = rng.integers(-63, 64, (6, 4, 3))
    L = x.shape[2]
    lo = (L + 2 * padding - 3) // stride + 1
    ref = np.zeros((3, 6, lo), np.int64)
    for b in range(3):
        for o in range(6):
            for i in range(lo):
                s = 0
                for c in range(4):
                    for u in range(3):
                        p = i * stride + u - padding
                        if 0 <= p < L:
                            s += int(x[b, c, p]) * int(w[o, c, u])
                ref[b, o, i] = s
    gain = 1.0 / 32
    acc = Accelerator(behavioural=BehaviouralParams(gain=gain, sigma=0.0), noise_seed=None)
    y = acc.conv1d(x, w, stride=stride, padding=padding)
    assert y.shape == ref.shape
    np.testing.assert_array_equal(y, clamp8(round_half_even(gain * ref)).astype(np.int64))


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (1, 1), (0, 0)), ((2, 3), (2, 1), (1, 2)),
                                                   ((1, 1), (3, 2), (0, 1)), ((4, 2), (1, 3), (2, 0))])
def test_unfold2d_matches_loop_im2col(kernel, stride, padding):
    x = np.random.default_rng(19).integers(0, 32, (2, 3, 6, 7))
    cols, hw = unfold2d(x, kernel, stride, padding)
    ref, ref_hw = loop_im2col(x, kernel, stride, padding)
    assert tuple(hw) == ref_hw
    np.testing.assert_array_equal(cols, ref)


def test_conv2d_zero_padding_sends_no_events():
    # A zero-padded border adds no events: the event count equals that of the
    # unpadded entries of every window, counted here.
    x = np.ones((1, 1, 3, 3), np.int64)
    w = np.ones((2, 1, 3, 3), np.int64)
    acc = Accelerator(behavioural=BehaviouralParams(gain=1.0, sigma=0.0), noise_seed=None)
    y = acc.conv2d(x, w, padding=1)
    ref = direct_conv2d(x, w, (1, 1), (1, 1))
    np.testing.assert_array_equal(y, ref)
    assert acc.report()["events"] == int(ref[0, 0].sum())     # sum of window counts


# --- PPU operations -------------------------------------------------------------------

def simd_seconds(n_elements, ops, costs=PPUCostParams()):
    """Both PPUs share the elements; each works through 128-lane 8-bit vectors."""
    per_ppu = -(-n_elements // 2)
    vectors = -(-per_ppu // 128)
    return ops * vectors * costs.simd_op_cycles / PPU_HZ


@pytest.mark.parametrize("costs", [PPUCostParams(), PPUCostParams(simd_op_cycles=3)])
def test_ppu_operations_semantics_and_time(costs):
    rng = np.random.default_rng(20)
    a = rng.integers(-128, 128, (7, 300))
    b = rng.integers(-128, 128, (7, 300))
    a[0, :4] = [-128, 127, 0, -1]
    b[0, :4] = [-1, 1, 0, -128]
    acc = Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), ppu_costs=costs)
    n = a.size

    def ledger():
        r = acc.report()
        return r["ppu_s"], r["total_s"]

    p0, t0 = ledger()
    r = acc.relu(a)
    np.testing.assert_array_equal(np.asarray(r, np.int64), np.where(a > 0, a, 0))
    p1, t1 = ledger()
    assert p1 - p0 == pytest.approx(simd_seconds(n, 1, costs), rel=1e-12)
    assert t1 - t0 == pytest.approx(p1 - p0, rel=1e-12)

    for shift in (0, 2, 7):
        c = acc.converting_relu(a, shift)
        want = np.array([[min(max(int(v), 0) // 2 ** shift, 31) for v in row] for row in a])
        np.testing.assert_array_equal(np.asarray(c, np.int64), want)
    p2, _ = ledger()
    assert p2 - p1 == pytest.approx(3 * simd_seconds(n, 3, costs), rel=1e-12)

    s = acc.add(a, b)
    np.testing.assert_array_equal(np.asarray(s, np.int64), np.clip(a + b, -128, 127))
    assert int(s[0, 0]) == -128 and int(s[0, 1]) == 127
    p3, t3 = ledger()
    assert p3 - p2 == pytest.approx(simd_seconds(n, 1, costs), rel=1e-12)
    rep = acc.report()
    assert rep["event_phase_s"] == 0 and rep["vmm_passes"] == 0


# --- measurement ------------------------------------------------------------------------

def test_measure_behaviour_on_a_normal_chip():
    m = measure_behaviour(Chip(1), num_vectors=48, repeats=4, ramp_steps=17)
    assert 0.001 <= m.gain <= 0.0025
    assert 1.0 <= m.sigma_trial <= 3.5
    assert m.sigma_fixed_pattern > 0.02
    lo, hi = m.linear_range
    assert lo < -30 and hi > 30
    assert m.gain_per_neuron.shape == (512,)
    p = m.behavioural()
    assert p.gain == m.gain and p.sigma == m.sigma_independent and p.sigma_shared == m.sigma_shared
    # The two parts add up to the measured trial-to-trial noise.
    assert np.hypot(p.sigma, p.sigma_shared) == pytest.approx(m.sigma_trial, rel=1e-12)


def test_measure_behaviour_on_an_ideal_chip():
    m = measure_behaviour(ideal_chip(), num_vectors=48, repeats=3, ramp_steps=17)
    assert m.sigma_trial < 0.1
    assert m.sigma_fixed_pattern < 0.02
    # Waiting 1 us after the last event leaves a little charge on the synaptic
    # inputs, so the measured gain lies slightly below the full-charge gain.
    assert 0.9 * ideal_gain() < m.gain <= 1.01 * ideal_gain()


# --- bad input ---------------------------------------------------------------------------

def beh_acc():
    return Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0))


X = np.ones((2, 10), np.int64)
W = np.ones((10, 4), np.int64)


@pytest.mark.parametrize("x,w,kw,match", [
    (np.full((2, 10), 32), W, {}, r"^x\["),
    (np.full((2, 10), -1), W, {}, r"^x\["),
    (X.astype(float), W, {}, r"^x has dtype"),
    (np.full((2, 10), np.nan), W, {}, r"^x contains NaN"),
    (X, np.full((10, 4), 64), {}, r"^w\["),
    (X, np.full((10, 4), -64), {}, r"^w\["),
    (X, W.astype(float), {}, r"^w has dtype"),
    (X, np.full((10, 4), np.inf), {}, r"^w contains"),
    (X, np.ones((9, 4), np.int64), {}, r"x has 10 inputs.*w has 9 rows"),
    (np.ones((2, 2, 10), np.int64), W, {}, r"^x has shape"),
    (X, np.ones(10, np.int64), {}, r"^w has shape"),
    (X, W, {"wait_between_events": 0}, "wait_between_events"),
    (X, W, {"wait_between_events": 256}, "wait_between_events"),
    (X, W, {"wait_between_events": 2.5}, "wait_between_events"),
    (X, W, {"num_sends": 0}, "num_sends"),
    (X, W, {"num_sends": 257}, "num_sends"),
])
def test_matmul_bad_input(x, w, kw, match):
    with pytest.raises(ValueError, match=match):
        beh_acc().matmul(x, w, **kw)


def test_matmul_bad_input_on_the_chip_fidelity_too():
    acc = Accelerator(Chip(0), noise_seed=None)
    with pytest.raises(ValueError, match=r"^x\["):
        acc.matmul(np.full((1, 5), 32), np.ones((5, 3), np.int64))
    with pytest.raises(ValueError, match="wait_between_events"):
        acc.matmul(np.ones((1, 5), np.int64), np.ones((5, 3), np.int64), wait_between_events=0)
    assert acc.report()["vmm_passes"] == 0           # nothing ran


@pytest.mark.parametrize("kwargs,match", [
    (dict(gain=-1.0, sigma=2.0), "gain"),
    (dict(gain=float("nan"), sigma=2.0), "gain"),
    (dict(gain=float("inf"), sigma=2.0), "gain"),
    (dict(gain=0.0015, sigma=-0.5), "sigma"),
    (dict(gain=0.0015, sigma=float("nan")), "sigma"),
    (dict(gain="0.0015", sigma=2.0), "gain"),
])
def test_behavioural_params_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BehaviouralParams(**kwargs)


def test_accelerator_needs_exactly_one_fidelity():
    with pytest.raises(ValueError, match="chip.*behavioural"):
        Accelerator(Chip(0), behavioural=BehaviouralParams(gain=0.0015, sigma=2.0))
    with pytest.raises(ValueError, match="chip.*behavioural"):
        Accelerator()
    with pytest.raises(ValueError, match="chip"):
        Accelerator("not a chip")
    with pytest.raises(ValueError, match="behavioural"):
        Accelerator(behavioural=(0.0015, 2.0))


XC = np.ones((1, 2, 5, 5), np.int64)
WC = np.ones((3, 2, 3, 3), np.int64)


@pytest.mark.parametrize("call,match", [
    (lambda a: a.conv2d(XC, WC, stride=0), "stride"),
    (lambda a: a.conv2d(XC, WC, stride=(1, 0)), "stride"),
    (lambda a: a.conv2d(XC, WC, stride=1.5), "stride"),
    (lambda a: a.conv2d(XC, WC, padding=-1), "padding"),
    (lambda a: a.conv2d(XC, WC, padding=(0, -2)), "padding"),
    (lambda a: a.conv2d(XC, np.ones((3, 4, 3, 3), np.int64)), "C_in"),
    (lambda a: a.conv2d(XC[0], WC), "conv2d expects x"),
    (lambda a: a.conv2d(np.full((1, 2, 5, 5), 32), WC), r"^x\["),
    (lambda a: a.conv2d(XC, np.full((3, 2, 3, 3), 64)), r"^w\["),
    (lambda a: a.conv1d(XC[:, :, 0], WC[:, :, 0], stride=0), "stride"),
    (lambda a: a.conv1d(XC[:, :, 0], WC[:, :, 0], padding=-1), "padding"),
    (lambda a: a.conv1d(XC[:, :, 0], np.ones((3, 5, 3), np.int64)), "C_in"),
])
def test_conv_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(beh_acc())


def test_ppu_operations_bad_input():
    acc = beh_acc()
    # The accelerator's methods name their own parameters (x), not the PPU helpers' (a).
    with pytest.raises(ValueError, match=r"^x\[0\]=128"):
        acc.relu(np.array([128]))
    with pytest.raises(ValueError, match=r"^x\[1\]=-129"):
        acc.converting_relu(np.array([5, -129]), 2)
    with pytest.raises(ValueError, match="shift"):
        acc.converting_relu(np.array([5]), 8)
    with pytest.raises(ValueError, match=r"^b\[0\]=-129"):
        acc.add(np.array([1]), np.array([-129]))


def test_rejected_ppu_operations_add_no_time():
    # An operation refused for bad input never ran on the PPUs.
    acc = beh_acc()
    for call in (lambda: acc.relu(np.array([128])), lambda: acc.converting_relu(np.array([5]), 8),
                 lambda: acc.add(np.array([1]), np.array([-129]))):
        with pytest.raises(ValueError):
            call()
    assert acc.report()["ppu_s"] == 0.0
    assert acc.report()["total_s"] == 0.0


def test_both_fidelities_report_the_same_chip_time():
    """The timing model belongs to the chip's program, not to the fidelity."""
    from bss2sim.circuits import Chip
    rng = np.random.default_rng(3)
    x = rng.integers(0, 32, (20, 300)) * (rng.random((20, 300)) < 0.4)
    w = rng.integers(-63, 64, (300, 100))
    reps = []
    for acc in (Accelerator(Chip(2), noise_seed=None),
                Accelerator(behavioural=BehaviouralParams(0.0015, 2.0), noise_seed=None)):
        acc.matmul(x, w)
        reps.append(acc.report())
    for key in ("total_s", "event_phase_s", "waits_s", "cadc_conversions_s", "ppu_s",
                "weight_writes_s", "transfers_s", "vmm_passes", "events"):
        assert reps[0][key] == pytest.approx(reps[1][key], rel=1e-12), key
