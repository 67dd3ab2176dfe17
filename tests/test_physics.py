"""Physical behaviour of the analog model (noise off): linearity, rails,
synaptic-input saturation, reset and leak, exc/inh cancellation, CADC range.

Chips use the default preset (its effects accounted for in the expectations)
unless a test checks the old physics only (then ``preset="ideal"``)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import naive
from bss2sim.circuits import (Chip, EventSchedule, MismatchParams, integrate_fast,
                      integrate_trace)
from bss2sim.circuits.params import EffectParams
from helpers import one_driver_logical

DRIVER = 5
BURST = [(DRIVER, 31, 10 * i) for i in range(8)]       # 8 events, well below the knee
READ = 470


def _baseline(chip, half, read):
    return integrate_fast(chip, half, EventSchedule.from_lists([[]]), read).membrane_at_read_v[0]


def _response(chip, half, events, read):
    """Membrane change at the read caused by ``events`` (V, per column)."""
    res = integrate_fast(chip, half, EventSchedule.from_lists([events]), read)
    return res.membrane_at_read_v[0] - _baseline(chip, half, read), res


def _capmem_cells(chip, name, setting, half, kind):
    """Naive capmem values of one half's per-column cells."""
    t = chip.truth
    return np.array([naive.capmem_value(setting, t.capmem_gain[name][half, k],
                                        t.capmem_offset[name][half, k], kind) for k in range(256)])


def _droop_mv(cp, read):
    """Capmem droop of the membrane at the read with refresh phase 0 (noise off):
    what the trace path's membrane shows and the fast path's does not."""
    a = np.exp(-cp[naive.LAM_M] * read * 8.0)
    return cp[naive.RIPPLE] * (a * cp[naive.PHASE_RESET] + (1 - a) * cp[naive.PHASE_LEAK])


def _reset_residual(chip, half, v0, e_leak):
    """The documented reset residual: the start moves from v0 towards e_leak by
    reset_residual_rel x max(1 + 0.5 n, 0) (n the chip's fixed pattern)."""
    fx = chip.effects
    n = chip._effect_normals("reset_residual", (2, 256))[half]
    frac = fx.reset_residual_rel * np.maximum(1 + 0.5 * n, 0.0)
    return v0 + frac * (e_leak - v0)


def _max_line_deviation(x, y):
    """Largest deviation of y (n, columns) from its least-squares line over x,
    relative to the full-scale response |y[-1]| per column."""
    a = np.vstack([x, np.ones_like(x)]).T.astype(float)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    return np.abs(resid).max(axis=0) / np.abs(y[-1])


# --- linearity ---------------------------------------------------------------

@pytest.mark.parametrize("seed,half,preset", [(0, 0, "default"), (1, 1, "default"), (0, 0, "ideal")])
def test_response_linear_in_weight(seed, half, preset):
    chip = Chip(seed, preset=preset)
    weights = np.arange(64)
    dv = []
    for w in weights:
        chip.config.set_logical_weights(half, one_driver_logical(DRIVER, int(w)))
        r, res = _response(chip, half, BURST, READ)
        assert not res.stepped_columns.any()
        dv.append(r)
    dv = np.array(dv)                                    # (64, 256)
    if preset == "ideal":
        assert np.all(dv[0] == 0)
    else:
        # Weight 0 still moves the membrane: the pulses inject charge.
        assert np.abs(dv[0]).max() > 1e-5
    dv = dv - dv[0]
    assert np.all(np.diff(dv, axis=0) > 0)               # monotonic in the weight
    assert np.median(dv[-1]) > 0.05                      # about 100 mV full scale
    assert _max_line_deviation(weights, dv).max() < 0.03
    # Beyond the line: the shape is exactly the per-synapse current of the
    # reference (the DAC with its bow and bit mismatch, the row's IR drop).
    cols = [0, 100, 200] if preset != "ideal" else list(range(256))
    if preset == "ideal":
        bow = chip.truth.synapse_dac_bow[half, 2 * DRIVER]
        cur = weights[:, None] + bow[None, :] * weights[:, None] * (63 - weights[:, None]) / 63
    else:
        cur = []
        for w in weights:
            chip.config.set_logical_weights(half, one_driver_logical(DRIVER, int(w)))
            cur.append([naive.synapse_current_ua(chip, half, DRIVER, c)[0] for c in cols])
        cur = np.array(cur)
    ratio = dv[1:, cols] / cur[1:]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[-1], ratio.shape), rtol=2e-4)


def test_response_linear_in_negative_weight():
    chip = Chip(2)
    weights = np.arange(0, 64, 7)
    dv = []
    for w in weights:
        chip.config.set_logical_weights(0, one_driver_logical(DRIVER, -int(w)))
        dv.append(_response(chip, 0, BURST, READ)[0])
    dv = np.array(dv)
    dv = dv - dv[0]                       # the pulses' injected charge
    assert np.all(np.diff(dv, axis=0) < 0)
    assert _max_line_deviation(weights, dv).max() < 0.03


@pytest.mark.parametrize("seed,preset", [(0, "default"), (4, "default"), (4, "ideal")])
def test_response_linear_in_input_value(seed, preset):
    chip = Chip(seed, preset=preset)
    # A driver whose offset does not clip the shortest pulses to zero width.
    driver = int(np.argmin(np.abs(chip.truth.driver_offset_s[0])))
    chip.config.set_logical_weights(0, one_driver_logical(driver, 63))
    values = np.arange(1, 32)
    schedule = EventSchedule.from_lists([[(driver, int(a), 10 * i) for i in range(8)] for a in values])
    res = integrate_fast(chip, 0, schedule, READ)
    dv = res.membrane_at_read_v - _baseline(chip, 0, READ)    # (31, 256)
    assert np.all(np.diff(dv, axis=0) > 0)
    assert _max_line_deviation(values, dv).max() < 0.03
    # The compressive pulse curve is visible: the deviation is not zero either.
    assert _max_line_deviation(values, dv).max() > 0.002
    # The response follows the documented value-to-width curve exactly: affine
    # in the width (driver recovery scales every width alike; each pulse's
    # injected charge adds the same whatever its width), offset 0 when ideal.
    k = chip.circuit.pulse_nonlinearity
    shape = 31 * (1 - np.exp(-k * values / 31)) / (1 - np.exp(-k))
    t = chip.truth
    width = t.driver_gain[0, driver] * chip.circuit.pulse_width_per_value_s * shape \
        + t.driver_offset_s[0, driver]
    a = np.vstack([width, np.ones_like(width)]).T
    coef, *_ = np.linalg.lstsq(a, dv, rcond=None)
    np.testing.assert_allclose(a @ coef, dv, rtol=2e-4, atol=1e-9)
    offset = coef[1] / (coef[0] * width[-1])             # relative to the full-scale response
    if preset == "ideal":
        assert np.abs(offset).max() < 1e-4
    else:
        assert np.abs(np.median(offset)) > 1e-4


def test_superposition_in_linear_range():
    chip = Chip(7)
    rng = np.random.default_rng(7)
    chip.config.set_logical_weights(1, rng.integers(-63, 64, (128, 256)))
    a = [(3, 20, 0), (9, 31, 4), (3, 7, 9)]
    # No two drivers share a cycle in the union: the column-line IR drop of
    # coincident pulses is the one effect that does not superpose.
    b = [(40, 31, 2), (77, 12, 5), (120, 31, 30)]
    both = sorted(a + b, key=lambda e: e[2])
    ra, _ = _response(chip, 1, a, 200)
    rb, _ = _response(chip, 1, b, 200)
    rab, res = _response(chip, 1, both, 200)
    assert not res.stepped_columns.any()
    np.testing.assert_allclose(rab, ra + rb, atol=1e-6)
    assert np.abs(ra).max() > 5e-3 and np.abs(rb).max() > 5e-3


# --- rails and synaptic-input saturation ----------------------------------------

@pytest.mark.parametrize("integrate", [integrate_fast, integrate_trace])
@pytest.mark.parametrize("sign", [1, -1])
def test_membrane_saturates_at_rails(integrate, sign):
    chip = Chip(11)
    half = 1
    chip.config.set_logical_weights(half, np.full((128, 256), sign * 63))
    schedule = EventSchedule.from_inputs(np.full((1, 128), 31), wait_between_events=1)
    kwargs = {"record": False} if integrate is integrate_trace else {}
    res = integrate(chip, half, schedule, int(schedule.last_cycle()[0]) + 20, **kwargs)
    rail = chip.truth.rail_high_v[half] if sign > 0 else chip.truth.rail_low_v[half]
    np.testing.assert_allclose(res.membrane_at_read_v[0], rail, rtol=0, atol=1e-9)
    # The rails differ per column (mismatch), so this is not one clipping constant.
    assert np.ptp(rail) > 0.01


def test_synaptic_input_saturates_beyond_knee():
    # The default effects except the column-line IR drop, which n pulses in one
    # cycle would add on top of the knee.
    chip = Chip(0, effects=dataclasses.replace(EffectParams(), column_ir_drop_rel_per_ua=0.0))
    chip.config.set_logical_weights(0, np.full((128, 256), 63))
    chip.config.set_capmem("syn_strength_exc", 150)   # keeps the membrane off the rail
    circ = naive.ExpmCircuit(chip.operating_point(0), chip.effects)
    base = _baseline(chip, 0, 400) * 1e3
    counts = [1, 2, 4, 8, 16, 32, 64, 128]
    ratio, resp = [], []
    for n in counts:
        events = [(d, 31, 0) for d in range(n)]           # n maximal events at once
        dv, _ = _response(chip, 0, events, 400)
        linear = circ.membrane_at_read_mv(events, 400) - base
        resp.append(dv * 1e3)
        ratio.append(dv * 1e3 / linear)
    ratio = np.array(ratio)
    resp = np.array(resp)
    rail_margin = chip.operating_point(0).column_params[naive.RAIL_HI] - (base + resp[-1])
    assert (rail_margin > 5).all()
    assert np.all(np.diff(resp, axis=0) > 0)              # still grows with n...
    np.testing.assert_allclose(ratio[:4], 1.0, atol=1e-4)  # linear below the knee
    assert np.median(ratio[6]) < 0.8                       # ...but sublinearly beyond it
    assert np.median(ratio[7]) < 0.6
    assert np.all(np.diff(np.median(ratio, axis=1)[3:]) < 0)


# --- reset and residual leak ----------------------------------------------------

@pytest.mark.parametrize("integrate", [integrate_fast, integrate_trace])
def test_reset_relaxes_with_residual_leak(integrate):
    chip = Chip(12)
    cp = chip.operating_point(0).column_params
    reads = np.array([1, 100, 1000, 3000])
    kwargs = {"record": False} if integrate is integrate_trace else {}
    res = integrate(chip, 0, EventSchedule.from_lists([[]] * 4), reads, **kwargs)
    t_ns = reads[:, None] * 8.0
    e, v0 = cp[naive.E_LEAK], cp[naive.V_RESET]
    # Both paths' potentials have the capmem droop at refresh phase 0.
    e = e - cp[naive.RIPPLE] * cp[naive.PHASE_LEAK]
    v0 = v0 - cp[naive.RIPPLE] * cp[naive.PHASE_RESET]
    expected = e + (v0 - e) * np.exp(-cp[naive.LAM_M] * t_ns)
    np.testing.assert_allclose(res.membrane_at_read_v * 1e3, expected, atol=1e-6)
    # Starting point: the configured reset potential plus the column offset,
    # moved towards the leak potential by the reset residual.
    reset_v = _capmem_cells(chip, "reset_potential", 448, 0, "voltage") + chip.truth.reset_offset_v[0]
    leak_v = _capmem_cells(chip, "leak_potential", 448, 0, "voltage") + chip.truth.leak_offset_v[0]
    np.testing.assert_allclose(cp[naive.V_RESET] * 1e-3, _reset_residual(chip, 0, reset_v, leak_v), atol=1e-12)


def test_residual_leak_time_constant_from_truth():
    chip = Chip(13)
    t, c = chip.truth, chip.circuit
    # Move reset and leak potential apart so the relaxation is large.
    chip.config.set_capmem("reset_potential", 600)
    chip.config.set_capmem("leak_potential", 300)
    read = 12500                                        # 100 us
    res = integrate_fast(chip, 1, EventSchedule.from_lists([[]]), read)
    trace = integrate_trace(chip, 1, EventSchedule.from_lists([[]]), read, record=False)
    leak_current = np.maximum(t.capmem_offset["leak_bias"][1], 0.0)   # setting 0: offset only
    rate = 1.0 / t.residual_leak_tau_s[1] + c.leak_conductance_per_a * leak_current \
        / t.membrane_capacitance_f[1]
    e_leak = _capmem_cells(chip, "leak_potential", 300, 1, "voltage") + t.leak_offset_v[1]
    v0 = _capmem_cells(chip, "reset_potential", 600, 1, "voltage") + t.reset_offset_v[1]
    v0 = np.clip(v0, t.rail_low_v[1], t.rail_high_v[1])
    v0 = _reset_residual(chip, 1, v0, e_leak)
    expected = e_leak + (v0 - e_leak) * np.exp(-rate * read * 8e-9)
    cp = chip.operating_point(1).column_params
    expected = expected - 1e-3 * _droop_mv(cp, read)        # the capmem droop at refresh phase 0
    np.testing.assert_allclose(res.membrane_at_read_v[0], expected, atol=1e-6)
    np.testing.assert_allclose(trace.membrane_at_read_v[0], expected, atol=1e-6)
    # Where the leak-bias cell offset is negative (clipped to zero current), the
    # decay is the pure residual leak of the truth.
    pure = t.capmem_offset["leak_bias"][1] <= 0
    assert 50 < pure.sum() < 206
    decay = (res.membrane_at_read_v[0] + 1e-3 * _droop_mv(cp, read) - e_leak) / (v0 - e_leak)
    np.testing.assert_allclose(decay[pure], np.exp(-read * 8e-9 / t.residual_leak_tau_s[1][pure]),
                               rtol=1e-5)
    assert decay.min() < 0.9 and decay.max() < 1.0      # it does decay noticeably


def test_leak_bias_sets_time_constant():
    chip = Chip(14)
    chip.config.set_capmem("leak_bias", 100)            # about 0.1 uA -> tau about 10 us
    chip.config.set_capmem("reset_potential", 600)
    chip.config.set_capmem("leak_potential", 350)
    t, c = chip.truth, chip.circuit
    reads = np.array([250, 1250, 2500])
    res = integrate_fast(chip, 0, EventSchedule.from_lists([[]] * 3), reads)
    cur = _capmem_cells(chip, "leak_bias", 100, 0, "current")
    rate = 1.0 / t.residual_leak_tau_s[0] + c.leak_conductance_per_a * cur / t.membrane_capacitance_f[0]
    cp = chip.operating_point(0).column_params
    e, v0 = cp[naive.E_LEAK] * 1e-3, cp[naive.V_RESET] * 1e-3
    expected = e + (v0 - e) * np.exp(-rate * reads[:, None] * 8e-9)
    expected = expected - 1e-3 * _droop_mv(cp, reads[:, None])   # the capmem droop at refresh phase 0
    np.testing.assert_allclose(res.membrane_at_read_v, expected, atol=1e-6)
    # After 2.5 time constants most of the gap to the leak potential is gone.
    gap = (res.membrane_at_read_v[2] + 1e-3 * _droop_mv(cp, reads[2]) - e) / (v0 - e)
    assert np.median(gap) < 0.2


# --- excitation and inhibition cancel ---------------------------------------------

def _exc_inh_weights(w):
    phys = np.zeros((256, 256), np.int64)
    phys[2 * DRIVER] = w           # excitatory row of the driver
    phys[2 * DRIVER + 1] = w       # inhibitory row of the driver
    return phys


@pytest.mark.parametrize("integrate", [integrate_fast, integrate_trace])
def test_exc_inh_cancel_exactly_without_mismatch(integrate):
    # Old physics only: the effects (DAC bit mismatch, the injected charges'
    # spread) are mismatch of their own.
    chip = Chip(0, mismatch=MismatchParams.none(), preset="ideal")
    chip.config.set_weights(0, _exc_inh_weights(63))
    sched = EventSchedule.from_lists([BURST, [(DRIVER, 31, i) for i in range(30)]])
    kwargs = {"record": False} if integrate is integrate_trace else {}
    res = integrate(chip, 0, sched, READ, **kwargs)
    base = integrate(chip, 0, EventSchedule.from_lists([[], []]), READ, **kwargs)
    assert np.abs(res.membrane_at_read_v - base.membrane_at_read_v).max() < 1e-9
    assert np.array_equal(res.codes, base.codes)
    # The same burst on the excitatory row alone does move the membrane.
    chip.config.set_logical_weights(0, one_driver_logical(DRIVER, 63))
    exc = integrate(chip, 0, sched, READ, **kwargs)
    assert (exc.membrane_at_read_v - base.membrane_at_read_v).min() > 0.05


def test_exc_inh_cancel_within_mismatch():
    chip = Chip(21)
    chip.config.set_weights(0, _exc_inh_weights(63))
    both, _ = _response(chip, 0, BURST, READ)
    chip.config.set_logical_weights(0, one_driver_logical(DRIVER, 63))
    exc, _ = _response(chip, 0, BURST, READ)
    rel = np.abs(both) / np.abs(exc)
    assert np.median(rel) < 0.35
    assert np.median(rel) > 0.01           # mismatch leaves a residue on a real chip
    assert np.median(np.abs(exc)) > 0.05


# --- CADC range ------------------------------------------------------------------

def test_cadc_code_tracks_membrane():
    chip = Chip(15)
    res = integrate_fast(chip, 0, EventSchedule.from_lists([[]]), 100)
    cp = chip.operating_point(0).column_params
    # The ramp start's capmem droop at refresh phase 0 acts at the comparator
    # (the membrane's droop is in the membrane at the read).
    ripple = cp[naive.RIPPLE] * cp[naive.PHASE_START]
    assert np.abs(ripple).max() > 0.1
    u = (res.membrane_at_read_v[0] * 1e3 + cp[naive.CADC_OFFSET] + ripple - cp[naive.CADC_START]) \
        / cp[naive.CADC_STEP]
    # Code m is the first tick whose ramp passes the membrane: m = floor(u)
    # (the membrane barely moves during one conversion without input).
    diff = res.codes[0] - u
    assert diff.max() <= 0.05 and diff.min() > -1.05
    assert 60 < np.median(res.codes[0]) < 200


def test_cadc_codes_saturate_with_digital_offsets():
    chip = Chip(16)
    sched = EventSchedule.from_lists([[]])
    plain = integrate_fast(chip, 0, sched, 50).codes[0].astype(int)
    assert plain.min() > 20 and plain.max() < 235
    offsets = np.random.default_rng(16).integers(-10, 11, 256)
    chip.config.set_cadc_digital_offsets(0, offsets)
    shifted = integrate_fast(chip, 0, sched, 50).codes[0].astype(int)
    np.testing.assert_array_equal(shifted, plain + offsets)
    # The trace path applies the same offsets.
    trace = integrate_trace(chip, 0, sched, 50, record=False).codes[0].astype(int)
    np.testing.assert_array_equal(trace, plain + offsets)
    # Clipping at both ends, partly (a few codes cross) ...
    chip.config.set_cadc_digital_offsets(0, np.full(256, -128))
    low = integrate_fast(chip, 0, sched, 50).codes[0].astype(int)
    np.testing.assert_array_equal(low, np.maximum(plain - 128, 0))
    chip.config.set_cadc_digital_offsets(0, np.full(256, 127))
    high = integrate_fast(chip, 0, sched, 50).codes[0].astype(int)
    np.testing.assert_array_equal(high, np.minimum(plain + 127, 255))
    assert 0 < (high == 255).sum() < 256
    # ... and everywhere: a membrane held low (about 0.5 V) reads 0 with -128, one
    # held high (about 1.0 V) reads 255 with +127.
    for potential, offset, code in ((320, -128, 0), (640, 127, 255)):
        chip.config.set_capmem("reset_potential", potential)
        chip.config.set_capmem("leak_potential", potential)
        chip.config.set_cadc_digital_offsets(0, np.zeros(256, np.int64))
        raw = integrate_fast(chip, 0, sched, 50).codes[0]
        assert np.all(raw != code)
        chip.config.set_cadc_digital_offsets(0, np.full(256, offset))
        assert np.all(integrate_fast(chip, 0, sched, 50).codes[0] == code)
        assert np.all(integrate_trace(chip, 0, sched, 50, record=False).codes[0] == code)


@pytest.mark.parametrize("integrate", [integrate_fast, integrate_trace])
def test_cadc_codes_saturate_at_ramp_ends(integrate):
    chip = Chip(17)
    kwargs = {"record": False} if integrate is integrate_trace else {}
    sched = EventSchedule.from_lists([[]])
    # Ramp starting above the membrane: the comparator fires at the first tick.
    chip.config.set_capmem("cadc_ramp_start", 1023)
    assert np.all(integrate(chip, 1, sched, 10, **kwargs).codes == 0)
    # A ramp too shallow to reach the membrane: the count runs out at 255.
    chip.config.set_capmem("cadc_ramp_start", 0)
    chip.config.set_capmem("cadc_ramp_slope", 100)
    assert np.all(integrate(chip, 1, sched, 10, **kwargs).codes == 255)
    # With a strongly inhibited membrane at its lower rail, a normal ramp is not clipped.
    chip.config.set_capmem("cadc_ramp_start", 64)
    chip.config.set_capmem("cadc_ramp_slope", 512)
    chip.config.set_logical_weights(1, np.full((128, 256), -63))
    strong = EventSchedule.from_inputs(np.full((1, 128), 31), wait_between_events=1)
    codes = integrate(chip, 1, strong, 140, **kwargs).codes
    assert 0 < codes.min() and codes.max() < 100


@pytest.mark.parametrize("integrate", [integrate_fast, integrate_trace])
def test_membrane_below_ramp_start_reads_digital_offset(integrate):
    # The comparator fires at the first tick (count 0) when the ramp starts
    # above the membrane; the digital offset is then added to 0.
    chip = Chip(17)
    chip.config.set_capmem("cadc_ramp_start", 1023)          # about 1.6 V
    chip.config.set_cadc_digital_offsets(1, np.full(256, 100))
    kwargs = {"record": False} if integrate is integrate_trace else {}
    codes = integrate(chip, 1, EventSchedule.from_lists([[]]), 10, **kwargs).codes
    assert np.all(codes == 100)
