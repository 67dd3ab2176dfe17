"""The behavioural fidelity against the chip and against references written
out here: rounding to nearest by default (unbiased like the chip's read minus
baseline), hxtorch's floor as ``formula="hxtorch"``, noise on every returned
column (also those without weights), noise shared by the 128 columns of a
quadrant, and the measurement that recovers it."""
from __future__ import annotations

import json

import numba
import numpy as np
import pytest

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import WrongTypeError
from bss2sim.digital import Accelerator, BehaviouralParams, FaultyUnits, measure_behaviour
from bss2sim.digital.measure import noise_structure

ROWS, COLS, QUAD = 128, 256, 128


def floor_ref(x, w, gain, num_sends=1, rows=ROWS):
    """hxtorch's mock without noise: per row tile ``floor(gain * x . W * num_sends)``
    clamped to int8, the tiles summed and clamped."""
    out = np.zeros((x.shape[0], w.shape[1]), np.int64)
    for r in range(0, x.shape[1], rows):
        part = (x[:, r:r + rows] @ w[r:r + rows]) * num_sends
        out += np.clip(np.floor(gain * part), -128, 127).astype(np.int64)
    return np.clip(out, -128, 127)


def sparse_x(rng, B, Kin, density, high=31):
    return rng.integers(1, high + 1, (B, Kin)) * (rng.random((B, Kin)) < density)


# --- (1) rounding -----------------------------------------------------------------------------

def test_hxtorch_formula_reproduces_floor_exactly():
    rng = np.random.default_rng(1)
    x = sparse_x(rng, 9, 300, 0.4)
    w = rng.integers(-63, 64, (300, 300))
    for gain, sends in ((3 / 2048, 1), (1 / 256, 3), (0.00144, 2)):    # binary fractions and not
        acc = Accelerator(behavioural=BehaviouralParams(gain, 0.0, formula="hxtorch"), noise_seed=None)
        want = floor_ref(x, w, gain, sends)
        assert np.ptp(want) > 20
        np.testing.assert_array_equal(acc.matmul(x, w, num_sends=sends), want)


def test_default_rounds_to_nearest_half_to_even():
    # gain 1/2 puts every odd x.W exactly half-way: np.rint's rule, to the even neighbour.
    x = np.array([[1]])
    w = np.array([[1, 3, 5, -1, -3, -5, 4, 7, -7]])
    unbiased = Accelerator(behavioural=BehaviouralParams(0.5, 0.0), noise_seed=None).matmul(x, w)
    hxtorch = Accelerator(behavioural=BehaviouralParams(0.5, 0.0, formula="hxtorch"),
                          noise_seed=None).matmul(x, w)
    assert unbiased[0].tolist() == [0, 2, 2, 0, -2, -2, 2, 4, -4]
    assert hxtorch[0].tolist() == [0, 1, 2, -1, -2, -3, 2, 3, -4]
    # Not half-way: nearest (0.6 -> 1, -0.6 -> -1), where floor gives 0 and -1.
    w = np.array([[3, -3]])
    assert Accelerator(behavioural=BehaviouralParams(0.2, 0.0), noise_seed=None).matmul(x, w)[0].tolist() == [1, -1]


def test_the_two_formulas_differ_by_the_rounding_only_with_noise():
    """Same seed, same noise: per single tile the unbiased result is the floored
    one or one more, half the time each on average (no clamping here)."""
    rng = np.random.default_rng(2)
    x = sparse_x(rng, 64, ROWS, 0.3)
    w = rng.integers(-30, 31, (ROWS, COLS))
    params = dict(gain=0.0015, sigma=2.0, sigma_shared=1.0)
    a = Accelerator(behavioural=BehaviouralParams(**params), noise_seed=4).matmul(x, w)
    b = Accelerator(behavioural=BehaviouralParams(**params, formula="hxtorch"), noise_seed=4).matmul(x, w)
    assert np.abs(a).max() < 120
    d = a - b
    assert set(np.unique(d)) <= {0, 1}
    assert abs(d.mean() - 0.5) < 0.02, d.mean()


def test_unbiased_noise_has_no_bias_and_hxtorch_minus_half():
    rng = np.random.default_rng(3)
    x = sparse_x(rng, 8, ROWS, 0.3)
    w = rng.integers(-30, 31, (ROWS, COLS))
    ideal = 0.0015 * (x @ w)
    for formula, want in (("unbiased", 0.0), ("hxtorch", -0.5)):
        acc = Accelerator(behavioural=BehaviouralParams(0.0015, 2.0, sigma_shared=0.5, formula=formula),
                          noise_seed=5)
        ys = np.stack([acc.matmul(x, w) for _ in range(30)]).astype(float)
        assert np.abs(ys).max() < 120
        bias = (ys.mean(axis=0) - ideal).mean()
        assert abs(bias - want) < 0.08, (formula, bias)


@pytest.mark.parametrize("kwargs,match", [
    (dict(formula="floor"), r"BehaviouralParams\.formula='floor' is not allowed: must be one of 'unbiased', 'hxtorch'"),
    (dict(formula="Unbiased"), r"formula='Unbiased'.*'unbiased', 'hxtorch'"),
    (dict(formula=None), r"formula=None.*'unbiased', 'hxtorch'"),
    (dict(formula=1), r"formula=1.*'unbiased', 'hxtorch'"),
    (dict(sigma_shared=-0.1), r"BehaviouralParams\.sigma_shared=-0\.1 is out of range: must be >= 0"),
    (dict(sigma_shared=float("nan")), r"BehaviouralParams\.sigma_shared=nan.*finite"),
    (dict(sigma_shared=float("inf")), r"BehaviouralParams\.sigma_shared=inf.*finite"),
    (dict(sigma_shared="1"), r"BehaviouralParams\.sigma_shared='1'.*finite number"),
    (dict(sigma_shared=True), r"BehaviouralParams\.sigma_shared=True.*finite number"),
])
def test_behavioural_params_new_fields_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BehaviouralParams(0.0015, 2.0, **kwargs)


def test_behavioural_params_defaults_and_keywords():
    p = BehaviouralParams(0.0015, 2.0)
    assert (p.sigma_shared, p.formula) == (0.0, "unbiased")
    assert BehaviouralParams(0.0015, 2.0, sigma_shared=1, formula="hxtorch").sigma_shared == 1.0
    with pytest.raises(TypeError):
        BehaviouralParams(0.0015, 2.0, 1.0)      # the new fields are keyword-only


# --- (1) against the cycle-level chip ------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated_chip():
    from bss2sim import load_calibration
    chip = Chip(0)
    load_calibration(chip)
    return chip


@pytest.fixture(scope="module")
def measured(calibrated_chip):
    return measure_behaviour(calibrated_chip)


def test_behavioural_is_unbiased_against_the_calibrated_chip(calibrated_chip, measured):
    """A 784-input layer (7 row tiles): the mean of chip minus behavioural over
    the outputs stays within a quarter LSB per tile with the default formula,
    and is about +1/2 LSB per tile with hxtorch's floor. The behavioural model
    has no offsets, so the rounding's share is the difference less the chip's
    mean offset per pass (measured through VMMs: ``offset_per_neuron``)."""
    rng = np.random.default_rng(11)
    x = sparse_x(rng, 64, 784, 0.15)
    w = rng.integers(-20, 21, (784, 256))
    tiles = 7
    chip = Accelerator(calibrated_chip, noise_seed=3).matmul(x, w)
    ok = np.abs(chip) < 100
    assert ok.mean() > 0.9
    bias = {}
    for formula in ("unbiased", "hxtorch"):
        p = BehaviouralParams(measured.gain, measured.sigma_independent,
                              sigma_shared=measured.sigma_shared, formula=formula)
        beh = Accelerator(behavioural=p, noise_seed=8).matmul(x, w)
        bias[formula] = float((chip - beh)[ok].mean()) / tiles
    offset = float(np.nanmean(measured.offset_per_neuron))
    assert abs(bias["unbiased"]) < 0.25, (bias, offset)
    assert abs(bias["unbiased"] - offset) < 0.15, (bias, offset)
    assert 0.35 < bias["hxtorch"] - offset < 0.65, (bias, offset)


# --- (2) columns without weights ----------------------------------------------------------------

def _acc(fidelity, seed=6, **kw):
    if fidelity == "chip":
        return Accelerator(Chip(2), noise_seed=seed, **kw)
    return Accelerator(behavioural=BehaviouralParams(0.0015, 2.0, sigma_shared=0.7), noise_seed=seed, **kw)


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
@pytest.mark.parametrize("faulty", [None, FaultyUnits(columns=((0, 3), (1, 200)))], ids=["healthy", "faulty"])
def test_returned_columns_without_weights_read_noise(fidelity, faulty):
    rng = np.random.default_rng(7)
    acc = _acc(fidelity, faulty=faulty)
    C = acc.tile_shape[1]
    B = 24
    x = sparse_x(rng, B, ROWS, 0.3)
    # Two column tiles (both halves); the last 60 columns of each hold no weights.
    w = rng.integers(-40, 41, (ROWS, 2 * C))
    w[:, C - 60:C] = 0
    w[:, 2 * C - 60:] = 0
    y = acc.matmul(x, w)
    for cols in (slice(C - 60, C), slice(2 * C - 60, 2 * C)):
        z = y[:, cols]
        # Noise like every other column: not constant over vectors, in every column.
        assert np.all(z.std(axis=0) > 0.3), z.std(axis=0).min()


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_columns_with_weights_do_not_depend_on_how_many_are_returned(fidelity):
    """The noise of a column is keyed to the column, not to how many columns a
    pass integrates: with the same weights on the chip, returning only the
    columns up to the last weight column (what the old optimisation
    integrated) gives those columns bit for bit. (Only all-zero columns are
    left out: weights elsewhere in a row change a column through IR drop.)"""
    rng = np.random.default_rng(8)
    x = sparse_x(rng, 10, ROWS, 0.3)
    for n in (200, 120, 1):
        w = rng.integers(-40, 41, (ROWS, COLS))
        w[:, n:] = 0
        full = _acc(fidelity).matmul(x, w)
        np.testing.assert_array_equal(_acc(fidelity).matmul(x, w[:, :n]), full[:, :n], err_msg=str(n))


def test_behavioural_columns_with_weights_keep_their_noise_draws():
    """Written out from the keyed streams: column c of a vector's row is draw c
    of its stream, whatever the number of columns drawn."""
    from bss2sim.circuits import TrialNoise
    from bss2sim.circuits.rng import keyed_normals
    a = keyed_normals(TrialNoise(77, 5), 4, 256)
    b = keyed_normals(TrialNoise(77, 5), 4, 131)
    np.testing.assert_array_equal(a[:, :131], b)


# --- (3) shared noise --------------------------------------------------------------------------

def test_shared_noise_is_common_to_a_quadrant_and_independent_between_quadrants():
    """sigma = 0: all columns of a physical quadrant get the same noise, so their
    results differ by the rounding of the noise-free values only."""
    x = np.zeros((400, ROWS), np.int64)                    # x . W = 0: outputs are the noise
    w = np.zeros((ROWS, 512), np.int64)
    acc = Accelerator(behavioural=BehaviouralParams(0.0015, 0.0, sigma_shared=3.0), noise_seed=9)
    y = acc.matmul(x, w).astype(float)
    q = y.reshape(400, 4, QUAD)
    assert np.all(q == q[:, :, :1])                        # one value per vector and quadrant
    v = q[:, :, 0]
    assert v.std() == pytest.approx(3.0, rel=0.1)
    c = np.corrcoef(v.T)
    assert np.abs(c[np.triu_indices(4, 1)]).max() < 0.15


def test_shared_noise_follows_the_physical_quadrant_under_faults():
    # One faulty column in quadrant 0 of the top half: there logical column 127
    # sits on physical column 128, in quadrant 1. The one column tile is left
    # over: even vectors run on the top half, odd ones on the bottom (no faults).
    faulty = FaultyUnits(columns=((0, 10),))
    acc = Accelerator(behavioural=BehaviouralParams(0.0015, 0.0, sigma_shared=3.0), noise_seed=10,
                      faulty=faulty)
    y = acc.matmul(np.zeros((60, ROWS), np.int64), np.zeros((ROWS, 255), np.int64))
    top, bottom = y[0::2], y[1::2]
    np.testing.assert_array_equal(top[:, 126], top[:, 0])
    np.testing.assert_array_equal(top[:, 127], top[:, 254])
    assert np.any(top[:, 126] != top[:, 127])
    np.testing.assert_array_equal(bottom[:, 127], bottom[:, 0])
    np.testing.assert_array_equal(bottom[:, 128], bottom[:, 254])
    assert np.any(bottom[:, 127] != bottom[:, 128])


@pytest.mark.parametrize("shape", [(ROWS, COLS), (200, 300), (300, 700)])
def test_shared_noise_batch_split_and_threads_give_identical_results(shape):
    Kin, N = shape
    rng = np.random.default_rng(12)
    x = sparse_x(rng, 7, Kin, 0.3)
    w = rng.integers(-63, 64, (Kin, N))

    def acc():
        return Accelerator(behavioural=BehaviouralParams(0.0015, 2.0, sigma_shared=1.5), noise_seed=13)

    whole = acc().matmul(x, w)
    for cuts in ([1], [2], [3, 4], [1, 2, 3, 4, 5, 6]):
        a = acc()
        split = np.concatenate([a.matmul(x[p], w) for p in np.split(np.arange(len(x)), cuts)])
        np.testing.assert_array_equal(split, whole, err_msg=str(cuts))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(acc().matmul(x, w), whole)
    finally:
        numba.set_num_threads(threads)


def test_zero_sigma_shared_is_the_model_without_it():
    rng = np.random.default_rng(14)
    x = sparse_x(rng, 5, 200, 0.3)
    w = rng.integers(-63, 64, (200, 300))
    a = Accelerator(behavioural=BehaviouralParams(0.0015, 2.0), noise_seed=15).matmul(x, w)
    b = Accelerator(behavioural=BehaviouralParams(0.0015, 2.0, sigma_shared=0.0), noise_seed=15).matmul(x, w)
    c = Accelerator(behavioural=BehaviouralParams(0.0015, 2.0, sigma_shared=1.0), noise_seed=15).matmul(x, w)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.2


@pytest.mark.parametrize("sigma,sigma_shared", [(2.0, 1.0), (2.0, 0.0), (1.5, 2.0)])
def test_measurement_recovers_known_shared_and_independent_noise(sigma, sigma_shared):
    """measure_behaviour on a behavioural model of known noise. The rounding of
    the int8 results adds about 1/12 LSB^2 to the independent part; tolerance
    0.12 LSB on each part (the estimator's spread at the default 96 vectors x 6
    repeats is about 0.03 LSB)."""
    m = measure_behaviour(BehaviouralParams(0.0015, sigma, sigma_shared=sigma_shared), noise_seed=16)
    ind = np.sqrt(sigma ** 2 + 1 / 12)
    assert m.sigma_independent == pytest.approx(ind, abs=0.12)
    assert m.sigma_shared == pytest.approx(sigma_shared, abs=0.12)
    assert np.hypot(m.sigma_independent, m.sigma_shared) == pytest.approx(m.sigma_trial, rel=1e-12)
    rho = sigma_shared ** 2 / (sigma_shared ** 2 + ind ** 2)
    assert m.noise_correlation_same_quadrant == pytest.approx(rho, abs=0.03)
    assert abs(m.noise_correlation_other_quadrant) < 0.02
    assert m.gain == pytest.approx(0.0015, rel=0.02)
    p = m.behavioural()
    assert (p.sigma, p.sigma_shared) == (m.sigma_independent, m.sigma_shared)
    s = m.summary()
    assert s["noise_independent_lsb"] == m.sigma_independent and s["noise_shared_quadrant_lsb"] == m.sigma_shared
    assert s["noise_correlation_same_quadrant"] == m.noise_correlation_same_quadrant
    assert s["noise_correlation_other_quadrant"] == m.noise_correlation_other_quadrant
    json.dumps(s)


def test_noise_structure_on_synthetic_reads():
    """The estimator alone, on Gaussian reads of known structure (no rounding):
    s = 1.2 shared per quadrant, i = 1.7 independent, a quarter of the reads masked."""
    rng = np.random.default_rng(17)
    R, V = 8, 200
    shared = rng.normal(0, 1.2, (R, V, 4)).repeat(QUAD, axis=2)
    ys = 5.0 + rng.normal(0, 1.7, (R, V, 512)) + shared + rng.normal(0, 10, (1, V, 512))
    inside = rng.random((V, 512)) > 0.25
    r = noise_structure(ys, inside)
    assert r["sigma_shared"] == pytest.approx(1.2, abs=0.05)
    assert r["sigma_independent"] == pytest.approx(1.7, abs=0.05)
    assert r["correlation_same_quadrant"] == pytest.approx(1.44 / (1.44 + 2.89), abs=0.02)
    assert abs(r["correlation_other_quadrant"]) < 0.01
    with pytest.raises(ValueError, match="ys has shape"):
        noise_structure(ys[:1])
    with pytest.raises(ValueError, match="inside has shape"):
        noise_structure(ys, inside[:, :10])


def test_measure_behaviour_on_the_chip_reports_the_noise_structure(measured):
    m = measured
    assert np.hypot(m.sigma_independent, m.sigma_shared) == pytest.approx(m.sigma_trial, rel=1e-12)
    assert 0 <= m.sigma_shared <= m.sigma_trial
    assert -0.2 < m.noise_correlation_other_quadrant < m.noise_correlation_same_quadrant + 0.05 < 1
    p = m.behavioural()
    assert p.sigma == m.sigma_independent and p.sigma_shared == m.sigma_shared


def test_measure_behaviour_refuses_what_is_neither_chip_nor_params():
    with pytest.raises(WrongTypeError, match="chip=.*Chip or bss2sim.digital.BehaviouralParams"):
        measure_behaviour((0.0015, 2.0))
