"""The effects calibration cannot remove (``EffectParams``), temperature and
drift (``DriftParams``, ``circuits/environment.py``) and the presets, each
against an independent reference (``naive.py``) or a physical expectation.
Statistical tests use fixed seeds and tolerances of several standard errors."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import naive
from bss2sim.circuits import (Chip, EventSchedule, MismatchParams, NoiseParams, TrialNoise,
                              integrate_fast, integrate_trace)
from bss2sim.circuits.environment import DriftPattern, drift_trajectory
from bss2sim.circuits.integrate import coincident_corrections, recovered_widths
from bss2sim.circuits.params import HARSH_FACTOR, DriftParams, EffectParams, preset
from helpers import events_of, irregular_schedule, one_driver_logical, rms_and_max

KEPT = ("low_frequency_shared_fraction", "driver_recovery_tau_s", "capmem_settling_tau_s",
        "charge_injection_spread_rel", "reset_ktc_noise")
"""EffectParams fields that are not magnitudes (fractions, time constants, a switch)."""


def only(**fields):
    """Every effect off except ``fields``."""
    return dataclasses.replace(EffectParams.none(), **fields)


def _empty(n):
    return EventSchedule.from_lists([[]] * n)


# --- presets -------------------------------------------------------------------

def test_ideal_preset_has_no_effects_and_no_drift():
    drift, fx = preset("ideal")
    for f in dataclasses.fields(EffectParams):
        if f.name == "reset_ktc_noise":
            assert fx.reset_ktc_noise is False
        elif f.name not in KEPT:
            assert getattr(fx, f.name) == 0, f.name
    for f in dataclasses.fields(DriftParams):
        if f.name != "reference_temperature_c":
            assert getattr(drift, f.name) == 0, f.name
    chip = Chip(1, preset="ideal")
    chip.set_environment(60.0, 1000.0)
    assert chip._drift_state() is not None
    ref = Chip(1, preset="ideal")
    assert np.array_equal(chip.operating_point(0).column_params, ref.operating_point(0).column_params)


def test_harsh_preset_is_three_times_default():
    assert HARSH_FACTOR == 3.0
    d_drift, d_fx = preset("default")
    h_drift, h_fx = preset("harsh")
    assert d_fx == EffectParams() and d_drift == DriftParams()
    for f in dataclasses.fields(EffectParams):
        d, h = getattr(d_fx, f.name), getattr(h_fx, f.name)
        if f.name in KEPT:
            assert h == d, f.name
        elif f.name == "driver_recovery_depth":
            assert h == pytest.approx(min(3 * d, 0.9))
        else:
            assert h == pytest.approx(3 * d), f.name
    for f in dataclasses.fields(DriftParams):
        d, h = getattr(d_drift, f.name), getattr(h_drift, f.name)
        assert h == pytest.approx(d if f.name == "reference_temperature_c" else 3 * d), f.name
    assert Chip(0, preset="harsh").effects == h_fx


@pytest.mark.parametrize("bad", ["nope", "Default", 3, None])
def test_bad_preset_name_raises(bad):
    with pytest.raises(ValueError, match="preset"):
        Chip(0, preset=bad)
    with pytest.raises(ValueError, match="preset"):
        preset(bad)


@pytest.mark.parametrize("cls,field,value", [
    (EffectParams, "row_ir_drop_rel_per_ua", -1.0), (EffectParams, "cadc_common_noise_lsb", float("nan")),
    (EffectParams, "low_frequency_shared_fraction", 1.5), (EffectParams, "driver_recovery_depth", 2.0),
    (EffectParams, "driver_recovery_tau_s", 0.0), (EffectParams, "capmem_settling_tau_s", -1e-3),
    (DriftParams, "rail_drift_v", -1e-3), (DriftParams, "capmem_current_drift_rel", float("inf"))])
def test_bad_parameter_values_raise_naming_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


# --- temperature and age ----------------------------------------------------------

def test_reference_condition_is_bit_identical():
    plain = Chip(3)
    chip = Chip(3)
    chip.set_environment(25.0, 0.0)
    assert chip._drift_state() is None
    for half in (0, 1):
        a, b = plain.operating_point(half), chip.operating_point(half)
        for field in a._fields:
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
    chip.set_environment(26.0, 0.0)
    assert not np.array_equal(chip.operating_point(0).column_params, plain.operating_point(0).column_params)


def test_drift_process_statistics():
    normals = np.random.default_rng(0).standard_normal((8, 2, 40000))
    assert np.array_equal(drift_trajectory(normals, 0.0), np.zeros(40000))
    d24 = drift_trajectory(normals, 24.0)
    assert np.sqrt(np.mean(d24 ** 2)) == pytest.approx(1.0, abs=0.03)
    np.testing.assert_allclose(d24, naive.drift_walk(normals, 24.0), rtol=1e-12, atol=1e-12)
    # Continuous: a minute later the cells have barely moved.
    step = drift_trajectory(normals, 24.0 + 1 / 60) - d24
    assert np.sqrt(np.mean(step ** 2)) < 0.05
    # Variance grows about linearly between 1 h and a week.
    hours = np.array([1.0, 4.0, 24.0, 72.0, 168.0])
    var = np.array([np.mean(drift_trajectory(normals, h) ** 2) for h in hours])
    assert np.all(np.diff(var) > 0)
    per_hour = var / hours
    assert per_hour.max() / per_hour.min() < 2.5
    assert var[-1] / var[0] == pytest.approx(168, rel=0.6)


def test_chip_drift_over_many_cells_at_24_hours():
    # The synapse factor of a column is 1 + synapse_drift_rel d(t) per column.
    p = DriftParams()
    pattern = DriftPattern(5, dataclasses.replace(DriftParams.none(), synapse_drift_rel=p.synapse_drift_rel))
    from bss2sim.circuits.environment import Environment
    state = pattern.at(Environment(25.0, 24.0))
    d = (state.synapse[:, 0, :] - 1) / p.synapse_drift_rel            # (2, 256) columns
    assert np.sqrt(np.mean(d ** 2)) == pytest.approx(1.0, abs=0.15)
    np.testing.assert_allclose(state.synapse[:, 7, :], state.synapse[:, 0, :])   # per column


def test_temperature_moves_capmem_by_documented_coefficients():
    chip = Chip(4)
    before = {n: chip._capmem(n) for n in ("reset_potential", "synapse_bias")}
    op_before = chip.operating_point(0).column_params.copy()
    chip.set_environment(temperature_c=35.0)
    p = chip.drift
    n_v = chip._drift_pattern._draw("tempco/capmem/reset_potential", (2, 256))
    np.testing.assert_allclose(chip._capmem("reset_potential") - before["reset_potential"],
                               10.0 * (p.capmem_voltage_tempco_mean_v_per_k
                                       + p.capmem_voltage_tempco_spread_v_per_k * n_v), rtol=1e-9, atol=1e-15)
    n_i = chip._drift_pattern._draw("tempco/capmem/synapse_bias", (2, 2))
    np.testing.assert_allclose(chip._capmem("synapse_bias") / before["synapse_bias"],
                               1 + 10.0 * (p.capmem_current_tempco_mean_rel_per_k
                                           + p.capmem_current_tempco_spread_rel_per_k * n_i), rtol=1e-12)
    # The leak potential's cell moves E_LEAK of the operating point likewise.
    n_l = chip._drift_pattern._draw("tempco/capmem/leak_potential", (2, 256))[0]
    np.testing.assert_allclose(chip.operating_point(0).column_params[naive.E_LEAK] - op_before[naive.E_LEAK],
                               1e4 * (p.capmem_voltage_tempco_mean_v_per_k
                                      + p.capmem_voltage_tempco_spread_v_per_k * n_l), rtol=1e-7, atol=1e-9)


def test_bad_environment_raises_and_changes_nothing():
    chip = Chip(0)
    chip.set_environment(30.0, 5.0)
    env = chip.environment
    with pytest.raises(ValueError, match="temperature_c"):
        chip.set_environment(temperature_c=500)
    with pytest.raises(ValueError, match="hours"):
        chip.set_environment(hours=-1.0)
    assert chip.environment == env


def test_both_paths_see_the_same_environment():
    chip = Chip(9)
    rng = np.random.default_rng(9)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = EventSchedule.from_inputs(rng.integers(0, 32, (2, 128)), wait_between_events=4)
    read = sched.last_cycle() + 10
    before = integrate_fast(chip, 0, sched, read).codes
    chip.set_environment(60.0, 500.0)
    fast = integrate_fast(chip, 0, sched, read)
    trace = integrate_trace(chip, 0, sched, read, record=False)
    rms, mx = rms_and_max(fast.codes, trace.codes)
    assert rms <= 0.5 and mx <= 1
    assert rms_and_max(before, fast.codes)[0] > 2      # the condition did move the chip


# --- shared noise ----------------------------------------------------------------

def _corr_blocks(codes):
    c = np.corrcoef(codes.T.astype(float))
    iu = np.triu_indices(128, 1)
    within = np.concatenate([c[:128, :128][iu], c[128:, 128:][iu]])
    across = c[:128, 128:].ravel()
    return within.mean(), across.mean()


def test_common_conversion_noise_correlates_a_quadrant():
    sigma_cm, sigma_own = 2.0, 2.0
    chip = Chip(0, noise=NoiseParams(0.0, sigma_own), effects=only(cadc_common_noise_lsb=sigma_cm))
    codes = integrate_fast(chip, 0, _empty(600), 10, noise=TrialNoise(3)).codes
    within, across = _corr_blocks(codes)
    expected = sigma_cm ** 2 / (sigma_cm ** 2 + sigma_own ** 2 + 1 / 12)    # quantisation too
    assert within == pytest.approx(expected, abs=0.1)
    assert abs(across) < 0.05
    assert codes.std(axis=0).mean() == pytest.approx(math.sqrt(sigma_cm ** 2 + sigma_own ** 2 + 1 / 12), rel=0.1)


def test_slow_noise_shared_between_reads_with_a_shared_seed():
    rho = EffectParams().low_frequency_shared_fraction
    chip = Chip(1, noise=NoiseParams(0.0, 0.0), effects=only(low_frequency_noise_lsb=3.0))
    sched = _empty(400)
    a = integrate_fast(chip, 0, sched, 10, noise=TrialNoise(11, shared_seed=7)).codes.astype(float)
    b = integrate_fast(chip, 0, sched, 10, noise=TrialNoise(12, shared_seed=7)).codes.astype(float)
    c = integrate_fast(chip, 0, sched, 10, noise=TrialNoise(12)).codes.astype(float)
    assert a.std(axis=0).mean() == pytest.approx(3.0, rel=0.1)

    def col_corr(x, y):
        x = x - x.mean(axis=0)
        y = y - y.mean(axis=0)
        return np.mean((x * y).mean(axis=0) / (x.std(axis=0) * y.std(axis=0)))

    assert col_corr(a, b) == pytest.approx(rho * 9 / (9 + 1 / 12), abs=0.05)
    assert abs(col_corr(a, c)) < 0.05
    # Between columns the slow noise is independent.
    within, across = _corr_blocks(a)
    assert abs(within) < 0.05 and abs(across) < 0.05
    # The difference of two reads has only the unshared part: 2 (1 - rho) sigma^2.
    assert (a - b).var(axis=0).mean() == pytest.approx(2 * (1 - rho) * 9 + 2 / 12, rel=0.15)


def test_noise_bit_identical_across_batch_splits_and_partial_columns():
    chip = Chip(2, preset="harsh")
    rng = np.random.default_rng(2)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = EventSchedule.from_inputs(rng.integers(0, 32, (20, 128)) * (rng.random((20, 128)) < 0.3),
                                      wait_between_events=3)
    read = sched.last_cycle() + 5
    whole = integrate_fast(chip, 0, sched, read, noise=TrialNoise(5, shared_seed=9)).codes
    parts = np.vstack([integrate_fast(chip, 0, sched.slice(0, 10), read[:10], noise=TrialNoise(5, 0, 9)).codes,
                       integrate_fast(chip, 0, sched.slice(10, 20), read[10:], noise=TrialNoise(5, 10, 9)).codes])
    assert np.array_equal(whole, parts)
    for n in (1, 100, 129):
        part = integrate_fast(chip, 0, sched, read, noise=TrialNoise(5, shared_seed=9), columns=n).codes
        assert np.array_equal(part[:, :n], whole[:, :n]), n
    small = sched.slice(0, 2)
    t_whole = integrate_trace(chip, 0, small, read[:2], noise=TrialNoise(5, shared_seed=9), record=False).codes
    t_parts = np.vstack([integrate_trace(chip, 0, small.slice(b, b + 1), read[b:b + 1],
                                         noise=TrialNoise(5, b, 9), record=False).codes for b in (0, 1)])
    assert np.array_equal(t_whole, t_parts)


# --- IR drop ---------------------------------------------------------------------------

def test_row_ir_drop_couples_columns_of_a_row():
    chip = Chip(3, effects=only(row_ir_drop_rel_per_ua=EffectParams().row_ir_drop_rel_per_ua))
    alone = one_driver_logical(7, 0)
    alone[7, 0] = 63
    full = one_driver_logical(7, 63)
    burst = [(7, 31, 10 * i) for i in range(8)]
    out = {}
    for name, w in (("alone", alone), ("full", full)):
        chip.config.set_logical_weights(0, w)
        op = chip.operating_point(0)
        exc, _ = naive.synapse_current_ua(chip, 0, 7, 0)
        assert op.current_exc_ua[7, 0] == pytest.approx(exc, rel=1e-6)
        base = integrate_fast(chip, 0, _empty(1), 200).membrane_at_read_v[0, 0]
        out[name] = (exc, integrate_fast(chip, 0, EventSchedule.from_lists([burst]), 200)
                     .membrane_at_read_v[0, 0] - base)
    # Column 0's weight is the same in both: its gain depends on the others' weights.
    gain = out["full"][1] / out["alone"][1]
    assert gain == pytest.approx(out["full"][0] / out["alone"][0], rel=1e-5)
    assert 0.95 < gain < 0.99


def test_column_ir_drop_of_coincident_pulses():
    beta = EffectParams().column_ir_drop_rel_per_ua
    chip = Chip(4, effects=only(column_ir_drop_rel_per_ua=beta))
    w = np.zeros((128, 256), np.int64)
    w[:4] = 63
    chip.config.set_logical_weights(0, w)
    op = chip.operating_point(0)
    together = [(d, 31, 2) for d in range(4)]
    apart = [(d, 31, 2 + d) for d in range(4)]
    circ = naive.ExpmCircuit(op, chip.effects)
    res = integrate_fast(chip, 0, EventSchedule.from_lists([together, apart]), 100)
    np.testing.assert_allclose(res.membrane_at_read_v[0] * 1e3, circ.membrane_at_read_mv(together, 100), atol=1e-3)
    plain = naive.ExpmCircuit(op)       # without the drop: superposition
    np.testing.assert_allclose(res.membrane_at_read_v[1] * 1e3, plain.membrane_at_read_mv(apart, 100), atol=1e-3)
    loss = plain.membrane_at_read_mv(together, 100) - res.membrane_at_read_v[0] * 1e3
    assert (loss > 0.1).all()


def test_column_ir_drop_stays_bounded_for_many_coincident_pulses():
    """The drop saturates: more excitatory pulses in one cycle never lower the
    membrane, on the harsh preset too, and both paths agree."""
    for name in ("default", "harsh"):
        chip = Chip(4, preset=name, noise=NoiseParams.none())
        w = np.zeros((128, 256), np.int64)
        w[:, :8] = 63
        chip.config.set_logical_weights(0, w)
        rises = []
        for count in (32, 64, 128):
            sched = EventSchedule.from_lists([[(d, 31, 2) for d in range(count)]])
            v = integrate_fast(chip, 0, sched, 40).membrane_at_read_v[0, :8]
            t = integrate_trace(chip, 0, sched, 40, record=False).membrane_at_read_v[0, :8]
            np.testing.assert_allclose(v, t, atol=5e-3)
            rises.append(v)
        v0 = chip.operating_point(0).column_params[naive.V_RESET, :8] * 1e-3
        assert (rises[0] > v0).all() and (rises[1] >= rises[0] - 1e-4).all() \
            and (rises[2] >= rises[1] - 1e-4).all(), (name, rises)



def _coincident_groups(offsets, cycle):
    """Plain reference: runs of more than one event of one vector in one cycle."""
    groups = []
    for b in range(len(offsets) - 1):
        k = offsets[b]
        while k < offsets[b + 1]:
            end = k + 1
            while end < offsets[b + 1] and cycle[end] == cycle[k]:
                end += 1
            if end - k > 1:
                groups.append((b, k, end))
            k = end
    return groups


@pytest.mark.parametrize("offsets, cycle", [
    ([0, 0, 2, 2, 4], [5, 10, 10, 12]),        # same cycle across a vector boundary (and empty vectors)
    ([0, 2, 4], [3, 3, 7, 9]),                 # a pair in the first vector
    ([0, 0, 0, 2], [4, 4]),                    # a pair after two empty vectors
    ([0, 3, 3, 6], [1, 2, 2, 2, 2, 8]),        # a pair, then a vector starting in the same cycle
    ([0, 1, 2, 3], [7, 7, 7]),                 # one event per vector, all in one cycle
])
def test_coincident_corrections_group_only_events_of_one_vector(offsets, cycle):
    """One pseudo event per group of events that share a vector and a cycle,
    none across vector boundaries; the inputs themselves when there is none."""
    rng = np.random.default_rng(0)
    ie = rng.random((4, 3)).astype(np.float32)
    ii = rng.random((4, 3)).astype(np.float32)
    offsets = np.array(offsets, np.int64)
    cycle = np.array(cycle, np.int64)
    n = len(cycle)
    driver = np.arange(n, dtype=np.int64) % 4
    width = np.full(n, 50.0, np.float32)
    inject = np.ones(n, np.float32)
    out = coincident_corrections(ie, ii, offsets, driver, cycle, width, inject, 0.01)
    groups = _coincident_groups(offsets, cycle)
    if not groups:
        assert all(a is b for a, b in zip(out, (ie, ii, offsets, driver, cycle, width, inject)))
        return
    _, _, new_offsets, new_driver, new_cycle, new_width, _ = out
    per_vector = np.bincount([g[0] for g in groups], minlength=len(offsets) - 1)
    np.testing.assert_array_equal(new_offsets, offsets + np.r_[0, np.cumsum(per_vector)])
    pseudo = new_driver >= ie.shape[0]
    assert pseudo.sum() == len(groups)
    assert list(new_cycle[pseudo]) == [cycle[end - 1] for _, _, end in groups]
    np.testing.assert_array_equal(new_width[pseudo], 1.0)

# --- synapse DAC ----------------------------------------------------------------------

def _row_currents(chip, weight):
    w = np.zeros((256, 256), np.int64)
    w[10] = weight                    # driver 5's excitatory row
    chip.config.set_weights(0, w)
    return chip.operating_point(0).current_exc_ua[5].astype(float)


def test_dac_bit_mismatch_gives_dnl_at_the_major_carry():
    x = EffectParams().synapse_dac_unit_mismatch_rel
    dnl = {}
    for seed in (1, 2):
        ideal = Chip(seed, mismatch=MismatchParams.none(), effects=EffectParams.none())
        unit = _row_currents(ideal, 1)
        chip = Chip(seed, mismatch=MismatchParams.none(), effects=only(synapse_dac_unit_mismatch_rel=x))
        dnl[seed] = (_row_currents(chip, 32) - _row_currents(chip, 31)) / unit - 1
    # sigma of the step: bit 5 (32 units, x sqrt(32)) against bits 0..4 (x sqrt(31)).
    expected = x * math.sqrt(63)
    for d in dnl.values():
        assert d.std() == pytest.approx(expected, rel=0.15)
        assert np.abs(d).max() > 0.1
    assert not np.allclose(dnl[1], dnl[2], atol=0.05)


def test_dac_without_unit_mismatch_is_the_smooth_bow():
    chip = Chip(6, effects=EffectParams.none())
    bow = chip.truth.synapse_dac_bow[0, 10]
    i63 = _row_currents(chip, 63)
    for w in (1, 31, 32, 50):
        np.testing.assert_allclose(_row_currents(chip, w) / i63, (w + bow * w * (63 - w) / 63) / 63, rtol=1e-6)


# --- charge injection ----------------------------------------------------------------

def test_charge_injection_grows_linearly_with_events():
    fx = EffectParams()
    chip = Chip(7, effects=only(charge_injection_exc_c=fx.charge_injection_exc_c,
                                charge_injection_inh_c=fx.charge_injection_inh_c))
    counts = [0, 1, 8, 32, 128]
    sched = EventSchedule.from_lists([[(d, 31, 0) for d in range(n)] for n in counts])
    dv = integrate_fast(chip, 0, sched, 300).membrane_at_read_v
    dv = dv - dv[0]
    circ = naive.ExpmCircuit(chip.operating_point(0), chip.effects)
    for n, row in zip(counts, dv):
        np.testing.assert_allclose(row * 1e3, circ.membrane_at_read_mv([(d, 31, 0) for d in range(n)], 300)
                                   - circ.membrane_at_read_mv([], 300), atol=1e-4)
        np.testing.assert_allclose(row, n * dv[1], rtol=1e-4, atol=1e-10)
    assert np.abs(dv[-1]).max() > 1e-3          # 128 events: about a mV
    off = Chip(7, effects=EffectParams.none())
    dv_off = integrate_fast(off, 0, sched, 300).membrane_at_read_v
    assert np.array_equal(dv_off, np.broadcast_to(dv_off[0], dv_off.shape))


def test_zero_width_pulses_inject_nothing():
    chip = Chip(8, effects=only(charge_injection_exc_c=0.1e-15))
    chip.config.set_driver_offsets(0, np.zeros(128, np.int64))     # -0.96 ns: value 1 clips to 0
    op = chip.operating_point(0)
    drivers = [d for d in range(128) if op.pulse_width_ns[d, 1] == 0][:10]
    assert len(drivers) == 10
    sched = EventSchedule.from_lists([[], [(d, 1, 3) for d in drivers], [(d, 31, 3) for d in drivers]])
    v = integrate_fast(chip, 0, sched, 50).membrane_at_read_v
    assert np.array_equal(v[0], v[1])
    assert np.abs(v[2] - v[0]).min() > 0


# --- driver recovery -----------------------------------------------------------------

def test_recovered_widths_formula():
    depth, tau = 0.2, 30e-9
    sched = EventSchedule.from_lists([[(3, 31, 0), (4, 31, 1), (3, 31, 2), (3, 31, 100)], [(3, 31, 5)]])
    w = recovered_widths(np.full(5, 5.0), sched, depth, tau)
    loss2 = depth * math.exp(-16e-9 / tau)
    np.testing.assert_allclose(w, [5.0, 5.0, 5.0 * (1 - loss2), 5.0 * (1 - depth * math.exp(-784e-9 / tau)), 5.0])


@pytest.mark.parametrize("spacing", [1, 3, 100])
def test_driver_recovery_shortens_close_pulses(spacing):
    fx = only(driver_recovery_depth=0.2, driver_recovery_tau_s=30e-9)
    chip = Chip(9, effects=fx)
    chip.config.set_logical_weights(0, one_driver_logical(5, 40))
    read = 2 * spacing + 60
    sched = EventSchedule.from_lists([[], [(5, 31, 0)], [(5, 31, spacing)], [(5, 31, 0), (5, 31, spacing)]])
    v = integrate_fast(chip, 0, sched, read).membrane_at_read_v
    first, second, pair = v[1] - v[0], v[2] - v[0], v[3] - v[0]
    loss = 0.2 * math.exp(-spacing * 8e-9 / 30e-9)
    np.testing.assert_allclose(pair - first, (1 - loss) * second, rtol=1e-4, atol=1e-9)
    if spacing == 100:
        np.testing.assert_allclose(pair, first + second, rtol=1e-6, atol=1e-9)
    else:
        assert ((first + second - pair) > 1e-4 * np.abs(second)).all()
    trace = integrate_trace(chip, 0, sched, read, record=False)
    rms, mx = rms_and_max(integrate_fast(chip, 0, sched, read).codes, trace.codes)
    assert rms <= 0.5 and mx <= 1


def test_driver_recovery_fast_and_trace_agree_on_dense_repeats():
    chip = Chip(10, preset="harsh")
    rng = np.random.default_rng(10)
    chip.config.set_logical_weights(1, rng.integers(-63, 64, (128, 256)))
    sched = irregular_schedule(rng, 3, 40, max_gap=2, p_same=0.3, drivers=range(4))
    read = sched.last_cycle() + 20
    fast = integrate_fast(chip, 1, sched, read)
    trace = integrate_trace(chip, 1, sched, read, record=False)
    rms, mx = rms_and_max(fast.codes, trace.codes)
    assert rms <= 0.5 and mx <= 1
    codes, _ = naive.expm_codes(chip, 1, [events_of(sched, b) for b in range(3)], read)
    if not fast.stepped_columns.any():
        assert np.array_equal(codes, fast.codes)


# --- reset ---------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [25.0, 100.0])
def test_ktc_noise_in_trace_path(temperature):
    chip = Chip(11, noise=NoiseParams.none(), effects=only(reset_ktc_noise=True))
    chip.set_environment(temperature_c=temperature)
    quiet = integrate_trace(chip, 0, _empty(1), 0, record=False, substeps_per_cycle=1).membrane_at_read_v[0]
    v = integrate_trace(chip, 0, _empty(200), 0, noise=TrialNoise(4), record=False,
                        substeps_per_cycle=1).membrane_at_read_v
    expected = np.sqrt(naive.BOLTZMANN * (temperature + 273.15) / chip.truth.membrane_capacitance_f[0])
    z = (v - quiet) / expected
    assert z.std() == pytest.approx(1.0, abs=0.02)
    assert abs(z.mean()) < 0.02
    assert 40e-6 < expected.mean() < 55e-6


def test_reset_residual_moves_start_towards_leak():
    rel = 0.05
    ideal = Chip(12, effects=EffectParams.none())
    chip = Chip(12, effects=only(reset_residual_rel=rel))
    for c in (ideal, chip):
        c.config.set_capmem("reset_potential", 600)
        c.config.set_capmem("leak_potential", 300)
    cp0 = ideal.operating_point(0).column_params
    cp = chip.operating_point(0).column_params
    frac = (cp[naive.V_RESET] - cp0[naive.V_RESET]) / (cp0[naive.E_LEAK] - cp0[naive.V_RESET])
    n = chip._effect_normals("reset_residual", (2, 256))[0]
    np.testing.assert_allclose(frac, rel * np.maximum(1 + 0.5 * n, 0), rtol=1e-9)
    assert frac.mean() == pytest.approx(rel, rel=0.15)
    # Towards the lower leak potential (a column whose residual clips at 0 stays).
    assert (cp[naive.V_RESET] <= cp0[naive.V_RESET]).all() and (cp[naive.V_RESET] < cp0[naive.V_RESET]).mean() > 0.9


# --- capmem settling and ripple -------------------------------------------------------

def test_capmem_settles_exponentially_after_a_write():
    chip = Chip(13)
    tau = chip.effects.capmem_settling_tau_s
    old = chip.operating_point(0).column_params[naive.E_LEAK].copy()
    chip.config.set_capmem("leak_potential", 500)
    chip.advance_time(0.0)             # the write is noticed now and starts settling
    fresh = Chip(13)
    fresh.config.set_capmem("leak_potential", 500)
    new = fresh.operating_point(0).column_params[naive.E_LEAK]
    for t, total in ((0.0, 0.0), (tau, tau), (2 * tau, 3 * tau)):
        if t:
            chip.advance_time(t)
        now = chip.operating_point(0).column_params[naive.E_LEAK]
        np.testing.assert_allclose((now - new) / (old - new), math.exp(-total / tau), rtol=1e-9)
    chip.advance_time(100 * tau)
    np.testing.assert_allclose(chip.operating_point(0).column_params[naive.E_LEAK], new, atol=1e-12)


def test_capmem_write_without_advance_counts_as_settled():
    chip = Chip(14)
    chip.config.set_capmem("leak_potential", 500)
    settled = chip.operating_point(0).column_params[naive.E_LEAK].copy()
    chip.advance_time(1e-4)
    np.testing.assert_array_equal(chip.operating_point(0).column_params[naive.E_LEAK], settled)
    with pytest.raises(ValueError, match="seconds"):
        chip.advance_time(-1)



@pytest.mark.parametrize("how", ["same object", "copy", "repeated version"])
def test_capmem_write_is_noticed_however_the_configuration_arrives(how):
    # A chip compares its capmem settings with those last seen only when the
    # configuration (object or version) changed: a write through the chip's own
    # configuration, a replaced configuration, and one that repeats the version
    # number last seen (as a configuration unpickled from another process may)
    # must all start a settling transient.
    chip = Chip(15)
    tau = chip.effects.capmem_settling_tau_s
    old = chip.operating_point(0).column_params[naive.E_LEAK].copy()
    if how == "same object":
        chip.config.set_capmem("leak_potential", 500)
    else:
        other = chip.config.copy()
        other.set_capmem("leak_potential", 500)
        if how == "repeated version":
            other.version = chip.config.version
        chip.config = other
    chip.advance_time(0.0)
    now = chip.operating_point(0).column_params[naive.E_LEAK].copy()
    np.testing.assert_allclose(now, old, atol=1e-9)        # not moved yet: settling starts now
    chip.advance_time(100 * tau)
    settled = chip.operating_point(0).column_params[naive.E_LEAK]
    assert np.abs(settled - old).max() > 1.0               # mV: the write took effect

def test_ripple_with_noise_off_is_the_formula():
    chip = Chip(15, effects=only(capmem_ripple_v=3e-3))
    rng = np.random.default_rng(15)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = EventSchedule.from_inputs(rng.integers(0, 32, (3, 128)), wait_between_events=4)
    read = sched.last_cycle() + np.array([0, 50, 700])
    res = integrate_fast(chip, 0, sched, read)
    codes, _ = naive.expm_codes(chip, 0, [events_of(sched, b) for b in range(3)], read)
    assert np.array_equal(res.codes, codes)
    flat = Chip(15, effects=EffectParams.none())
    flat.config.set_logical_weights(0, chip.config.weights[0][0::2].astype(np.int64)
                                    - chip.config.weights[0][1::2].astype(np.int64))
    assert (integrate_fast(flat, 0, sched, read).codes != res.codes).sum() > 50
    # The trace path lowers the reset potential itself.
    cp = chip.operating_point(0).column_params
    tr = integrate_trace(chip, 0, _empty(1), 0, record=False)
    np.testing.assert_allclose(tr.membrane_at_read_v[0] * 1e3, cp[naive.V_RESET] - 3.0 * cp[naive.PHASE_RESET],
                               atol=1e-9)


def test_ripple_adds_read_to_read_spread():
    r_mv = 20.0
    chip = Chip(16, noise=NoiseParams.none(), effects=only(capmem_ripple_v=r_mv * 1e-3))
    codes = integrate_fast(chip, 0, _empty(500), 10, noise=TrialNoise(6)).codes.astype(float)
    cp = chip.operating_point(0).column_params
    u = np.random.default_rng(0).random(20000)[:, None]
    circ = naive.ExpmCircuit(chip.operating_point(0))
    shift = np.array([circ.ripple_mv(10, float(x)) for x in u[:2000, 0]]) / cp[naive.CADC_STEP]
    expected = np.sqrt(shift.var(axis=0) + 1 / 12)
    np.testing.assert_allclose(codes.std(axis=0).mean(), expected.mean(), rtol=0.1)
    assert codes.std(axis=0).mean() > 1.0
    # All columns move together (one phase per read): strong correlation.
    within, _ = _corr_blocks(codes)
    assert within > 0.2


# --- synaptic time constant -------------------------------------------------------------

def test_syn_tau_cell_tunes_the_time_constant():
    chip = Chip(17, mismatch=MismatchParams.none())
    chip.config.set_capmem("syn_tau_exc", 300)
    lam_300 = chip.operating_point(1).column_params[naive.LAM_E].copy()
    lam_i = chip.operating_point(1).column_params[naive.LAM_I].copy()
    chip.config.set_capmem("syn_tau_exc", 600)
    cp = chip.operating_point(1).column_params
    np.testing.assert_allclose(cp[naive.LAM_E] / lam_300, 2.0, rtol=1e-12)     # tau halves
    np.testing.assert_array_equal(cp[naive.LAM_I], lam_i)
    np.testing.assert_allclose(1e-9 / cp[naive.LAM_E], 0.32e-6 * 512 / 600, rtol=1e-12)
    # With mismatch, tau follows the cell's current (gain and offset included).
    chip = Chip(17)
    for setting in (300, 600):
        chip.config.set_capmem("syn_tau_exc", setting)
        cp = chip.operating_point(1).column_params
        for col in (0, 200):
            assert cp[naive.LAM_E, col] == pytest.approx(naive.column_params(chip, 1, col)[naive.LAM_E], rel=1e-12)
