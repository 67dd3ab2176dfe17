"""Seeds, thread counts and batch splits must not change results; noise must
have the documented size."""
from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest

import naive
from bss2sim.circuits import (Chip, EffectParams, EventSchedule, MismatchParams, NoiseParams, TrialNoise,
                      integrate_fast, integrate_trace)
from helpers import sparse_inputs

PATHS = {
    "fast": lambda chip, half, s, rc, noise: integrate_fast(chip, half, s, rc, noise=noise),
    "trace": lambda chip, half, s, rc, noise: integrate_trace(chip, half, s, rc, noise=noise,
                                                              record=False),
}


def _truth_arrays(truth):
    out = {}
    for f in dataclasses.fields(truth):
        value = getattr(truth, f.name)
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{f.name}/{k}"] = v
        elif isinstance(value, np.ndarray):
            out[f.name] = value
    return out


def _setup(seed=3, vectors=20, half=0):
    chip = Chip(seed)
    rng = np.random.default_rng(seed)
    chip.config.set_logical_weights(half, rng.integers(-63, 64, (128, 256)))
    x = sparse_inputs(rng, vectors, 40)
    sched = EventSchedule.from_inputs(x, wait_between_events=2)
    return chip, sched, sched.last_cycle() + 5


# --- chips -----------------------------------------------------------------------

def test_same_chip_seed_same_truth():
    a, b = _truth_arrays(Chip(42).truth), _truth_arrays(Chip(42).truth)
    assert len(a) > 20 and a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_different_chip_seeds_differ():
    a, b = _truth_arrays(Chip(42).truth), _truth_arrays(Chip(43).truth)
    for name in a:
        if name == "cadc_stuck_code":      # a fault map, not drawn: no faults on either chip
            assert np.all(a[name] == -1) and np.all(b[name] == -1)
            continue
        assert not np.array_equal(a[name], b[name]), name


def test_truth_streams_are_independent_per_quantity():
    # Each quantity draws from its own stream keyed by (seed, name): changing
    # one spread changes that quantity only.
    base = _truth_arrays(Chip(42).truth)
    other = _truth_arrays(Chip(42, mismatch=MismatchParams(cadc_offset_v=0.03)).truth)
    for name in base:
        if name == "cadc_offset_v":
            np.testing.assert_allclose(other[name], 2 * base[name], rtol=1e-12)
        else:
            assert np.array_equal(base[name], other[name]), name


def test_ideal_chip_has_no_mismatch():
    t = Chip(5, mismatch=MismatchParams.none()).truth
    for name in ("synapse_gain", "driver_gain", "quadrant_synapse_bias", "quadrant_driver_ramp",
                 "syn_strength_exc", "syn_strength_inh", "syn_knee_exc", "cadc_gain"):
        assert np.all(getattr(t, name) == 1.0), name
    for name in ("synapse_dac_bow", "driver_offset_s", "reset_offset_v", "cadc_offset_v"):
        assert np.all(getattr(t, name) == 0.0), name
    assert np.all(t.rail_high_v == t.rail_high_v.flat[0])
    assert np.all(t.tau_syn_exc_s == t.tau_syn_inh_s)


def test_truth_is_read_only():
    truth = Chip(1).truth
    with pytest.raises(ValueError):
        truth.synapse_gain[0, 0, 0] = 2.0
    with pytest.raises(ValueError):
        truth.capmem_gain["synapse_bias"][0, 0] = 2.0


def test_same_chip_seed_same_codes():
    chip_a, sched, read = _setup(seed=8, vectors=4)
    chip_b, _, _ = _setup(seed=8, vectors=4)
    chip_c, _, _ = _setup(seed=9, vectors=4)
    chip_c.config.set_logical_weights(0, chip_a.config.weights[0, 0::2].astype(np.int64)
                                      - chip_a.config.weights[0, 1::2].astype(np.int64))
    a = integrate_fast(chip_a, 0, sched, read)
    b = integrate_fast(chip_b, 0, sched, read)
    c = integrate_fast(chip_c, 0, sched, read)
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.membrane_at_read_v, b.membrane_at_read_v)
    assert not np.array_equal(a.codes, c.codes)          # another chip, same weights


# --- trial noise -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["fast", "trace"])
def test_same_noise_seed_bit_identical(path):
    chip, sched, read = _setup(vectors=20 if path == "fast" else 4)
    run = PATHS[path]
    a = run(chip, 0, sched, read, TrialNoise(5))
    b = run(chip, 0, sched, read, TrialNoise(5))
    c = run(chip, 0, sched, read, TrialNoise(6))
    quiet = run(chip, 0, sched, read, None)
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.membrane_at_read_v, b.membrane_at_read_v)
    assert not np.array_equal(a.codes, c.codes)
    assert not np.array_equal(a.codes, quiet.codes)
    # Noise off is deterministic as well.
    assert np.array_equal(quiet.codes, run(chip, 0, sched, read, None).codes)


@pytest.mark.parametrize("path", ["fast", "trace"])
def test_noise_object_advances(path):
    # Reusing one TrialNoise gives fresh noise on the next call, the same as a
    # new object started at the advanced index.
    chip, sched, read = _setup(vectors=20 if path == "fast" else 3)
    run = PATHS[path]
    noise = TrialNoise(9)
    first = run(chip, 0, sched, read, noise)
    assert noise.next_index == sched.num_vectors
    second = run(chip, 0, sched, read, noise)
    assert not np.array_equal(first.codes, second.codes)
    again = run(chip, 0, sched, read, TrialNoise(9, start_index=sched.num_vectors))
    assert np.array_equal(second.codes, again.codes)


@pytest.mark.parametrize("path", ["fast", "trace"])
def test_thread_count_does_not_change_results(path):
    chip, sched, read = _setup(vectors=20 if path == "fast" else 4)
    run = PATHS[path]
    default_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run(chip, 0, sched, read, TrialNoise(3))
        one_quiet = run(chip, 0, sched, read, None)
    finally:
        numba.set_num_threads(default_threads)
    assert numba.get_num_threads() == default_threads
    many = run(chip, 0, sched, read, TrialNoise(3))
    many_quiet = run(chip, 0, sched, read, None)
    assert np.array_equal(one.codes, many.codes)
    assert np.array_equal(one.membrane_at_read_v, many.membrane_at_read_v)
    assert np.array_equal(one_quiet.codes, many_quiet.codes)


@pytest.mark.parametrize("path,vectors,split", [("fast", 20, 13), ("trace", 5, 3)])
def test_batch_split_gives_identical_noise(path, vectors, split):
    chip, sched, read = _setup(vectors=vectors)
    run = PATHS[path]
    whole = run(chip, 0, sched, read, TrialNoise(7))
    noise = TrialNoise(7)
    a = run(chip, 0, sched.slice(0, split), read[:split], noise)
    b = run(chip, 0, sched.slice(split, vectors), read[split:], noise)
    assert np.array_equal(whole.codes, np.concatenate([a.codes, b.codes]))
    assert np.array_equal(whole.membrane_at_read_v,
                          np.concatenate([a.membrane_at_read_v, b.membrane_at_read_v]))
    # Each vector owns its stream: a slice alone, started at its index, agrees too.
    c = run(chip, 0, sched.slice(split, vectors), read[split:], TrialNoise(7, start_index=split))
    assert np.array_equal(c.codes, b.codes)


def test_noise_does_not_depend_on_batch_neighbours():
    # The noise of vector b is keyed by (seed, index), not by the other vectors:
    # same events in vector 0, other events elsewhere, vector 0 reads the same.
    chip, sched, read = _setup(vectors=6)
    a = integrate_fast(chip, 0, sched, read, noise=TrialNoise(11))
    d, v, c = sched.vector(0)
    mixed = EventSchedule.from_lists([[(int(p), int(q), int(r)) for p, q, r in zip(d, v, c)]]
                                     + [[(1, 31, 0)]] * 5)
    m = integrate_fast(chip, 0, mixed, read, noise=TrialNoise(11))
    assert np.array_equal(m.codes[0], a.codes[0])
    assert not np.array_equal(m.codes[1:], a.codes[1:])


@pytest.mark.parametrize("path", ["fast", "trace"])
def test_zero_noise_amplitudes_equal_noise_off(path):
    chip, sched, read = _setup(vectors=3)
    # The effects' trial-to-trial parts (shared and slow noise, kT/C, the ripple's
    # random phase) are noise too: off on both chips, so only NoiseParams differs.
    quiet_effects = EffectParams().without_trial_noise()
    chip = Chip(3, effects=quiet_effects)
    chip.config.set_logical_weights(0, np.random.default_rng(3).integers(-63, 64, (128, 256)))
    quiet_chip = Chip(3, noise=NoiseParams.none(), effects=quiet_effects)
    quiet_chip.config.set_logical_weights(0, chip.config.weights[0, 0::2].astype(np.int64)
                                          - chip.config.weights[0, 1::2].astype(np.int64))
    run = PATHS[path]
    off = run(chip, 0, sched, read, None)
    zero = run(quiet_chip, 0, sched, read, TrialNoise(1))
    assert np.array_equal(off.codes, zero.codes)
    np.testing.assert_array_equal(off.membrane_at_read_v, zero.membrane_at_read_v)


# --- noise size --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["fast", "trace"])
def test_noise_statistics(path):
    chip = Chip(19)
    rng = np.random.default_rng(19)
    chip.config.set_logical_weights(0, rng.integers(-30, 31, (128, 256)))
    x = sparse_inputs(rng, 1, 12)
    repeats = 200
    sched = EventSchedule.from_inputs(np.repeat(x, repeats, axis=0), wait_between_events=4)
    read = int(sched.last_cycle().max()) + 10
    run = PATHS[path]
    quiet = run(chip, 0, sched.slice(0, 1), read, None).codes[0].astype(float)
    codes = run(chip, 0, sched, read, TrialNoise(123)).codes.astype(float)
    sd = codes.std(axis=0)
    # About 1.2 LSB read noise plus a little membrane noise at this read time.
    assert 0.7 < np.median(sd) < 2.5
    # Documented sizes: read noise in LSB, membrane noise as an Ornstein-Uhlenbeck
    # process from the reset, plus 1/12 LSB^2 of quantisation.
    t_s = read * 8e-9
    tau = chip.truth.residual_leak_tau_s[0]
    var_mem_v2 = chip.noise.membrane_noise_v_per_sqrt_s ** 2 * tau / 2 * (1 - np.exp(-2 * t_s / tau))
    op = chip.operating_point(0)
    step_v = op.column_params[naive.CADC_STEP] * 1e-3
    fx = chip.effects
    # The effects' noise: the quadrant's common noise and the slow noise (LSB per
    # read), kT/C on the capacitance, and the refresh ripple: the reset and ramp
    # start cells droop by ripple x frac(u + phase) with u uniform per read
    # (the leak cell's term is negligible this early after the reset).
    kt = 1.380649e-23 * (chip.environment.temperature_c + 273.15)
    var_ktc_v2 = kt / chip.truth.membrane_capacitance_f[0]
    u = (np.arange(4000) + 0.5) / 4000
    cp = op.column_params
    ripple = fx.capmem_ripple_v * ((u[:, None] + cp[naive.PHASE_START]) % 1.0
                                   - (u[:, None] + cp[naive.PHASE_RESET]) % 1.0)
    expected = np.sqrt(chip.noise.cadc_read_noise_lsb ** 2 + var_mem_v2 / step_v ** 2 + 1 / 12
                       + fx.cadc_common_noise_lsb ** 2 + fx.low_frequency_noise_lsb ** 2
                       + (var_ktc_v2 + ripple.var(axis=0)) / step_v ** 2)
    assert 0.85 < np.median(sd / expected) < 1.15
    assert sd.min() > 0.4 and sd.max() < 3.5
    # Noise is centred: the mean code stays near the noise-free code.
    assert np.abs(np.median(codes.mean(axis=0) - quiet)) < 0.7
    assert np.abs(codes.mean(axis=0) - quiet).max() < 1.5
