"""Event-driven fast path against the time-stepped trace path (noise off), on
the default preset (and the harsh one where noted).

The two paths model the enable pulses differently (the fast path injects each
event's charge at the start of its cycle, the trace path spreads it over the
pulse of a few ns), so codes may differ by one LSB where the membrane is
still moving fast at the read; they must agree to rms <= 0.5 LSB, max 1 LSB.
"""
from __future__ import annotations

import numpy as np
import pytest

import naive
from bss2sim.circuits import Chip, EventSchedule, integrate_fast, integrate_trace
from helpers import events_of, irregular_schedule, rms_and_max


def _compare(chip, half, sched, read, rms_lsb=0.5, max_lsb=1, v_rms_mv=1.5):
    fast = integrate_fast(chip, half, sched, read)
    trace = integrate_trace(chip, half, sched, read, record=False)
    rms, mx = rms_and_max(fast.codes, trace.codes)
    assert rms <= rms_lsb, f"rms code difference {rms:.3f} LSB"
    assert mx <= max_lsb, f"max code difference {mx} LSB"
    dv = (fast.membrane_at_read_v - trace.membrane_at_read_v) * 1e3
    assert np.sqrt(np.mean(dv ** 2)) < v_rms_mv
    assert np.abs(dv).max() < 5.0
    assert np.array_equal(fast.read_cycle, trace.read_cycle)
    return fast, trace


@pytest.mark.parametrize("wait", [1, 2, 5, 8])
@pytest.mark.parametrize("seed,preset", [(0, "default"), (7, "default"), (3, "harsh")])
def test_random_weights_and_inputs(seed, preset, wait):
    chip = Chip(seed, preset=preset)
    rng = np.random.default_rng(1000 * seed + wait)
    half = seed % 2
    chip.config.set_logical_weights(half, rng.integers(-63, 64, (128, 256)))
    x = rng.integers(0, 32, (4, 128))
    x[1, rng.random(128) < 0.7] = 0                 # a sparser vector
    sched = EventSchedule.from_inputs(x, wait_between_events=wait)
    read = sched.last_cycle() + rng.integers(0, 40, 4)
    fast, _ = _compare(chip, half, sched, read)
    assert fast.codes.std() > 5                     # the inputs spread the codes


@pytest.mark.parametrize("max_gap,p_same,preset", [(1, 0.5, "default"), (4, 0.3, "default"),
                                                  (20, 0.2, "default"), (2, 0.5, "harsh")])
def test_irregular_spacing(max_gap, p_same, preset):
    chip = Chip(31, preset=preset)
    rng = np.random.default_rng(max_gap)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = irregular_schedule(rng, 4, 90, max_gap=max_gap, p_same=p_same)
    # Several drivers do share a cycle.
    d, a, c = sched.vector(0)
    assert (np.diff(c) == 0).any()
    read = sched.last_cycle() + rng.integers(0, 30, 4)
    _compare(chip, 0, sched, read)


def test_irregular_spacing_via_from_arrays():
    chip = Chip(32)
    rng = np.random.default_rng(32)
    chip.config.set_logical_weights(1, rng.integers(-63, 64, (128, 256)))
    counts = np.array([50, 0, 80])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    driver, value, cycle = [], [], []
    for n in counts:
        gaps = rng.integers(1, 10, n)
        driver.append(rng.integers(0, 128, n))
        value.append(rng.integers(1, 32, n))
        cycle.append(np.cumsum(gaps))
    sched = EventSchedule.from_arrays(offsets, np.concatenate(driver), np.concatenate(value),
                                      np.concatenate(cycle))
    read = sched.last_cycle() + np.array([3, 10, 0])
    _compare(chip, 1, sched, read)


def _saturating_chip(seed, sign, strength=None):
    chip = Chip(seed)
    chip.config.set_logical_weights(0, np.full((128, 256), sign * 63))
    if strength is not None:
        # A weaker synaptic-input OTA keeps the membrane off the rails while
        # the synaptic input itself saturates.
        chip.config.set_capmem("syn_strength_exc", strength)
        chip.config.set_capmem("syn_strength_inh", strength)
    return chip


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("seed", [2, 3])
def test_synaptic_input_saturation(seed, sign):
    # 24 maximal events on consecutive cycles (wait 1): the synaptic input
    # passes its knee, the membrane stays away from the rails.
    chip = _saturating_chip(seed, sign, strength=300)
    n = 24
    sched = EventSchedule.from_lists([[(d, 31, d) for d in range(n)]] * 2)
    read = np.array([n + 40, n + 120])
    fast, _ = _compare(chip, 0, sched, read)
    cp = chip.operating_point(0).column_params
    knee = cp[naive.KNEE_E] if sign > 0 else cp[naive.KNEE_I]
    # It really saturates: the synaptic input passes its knee in most columns
    # and the fast path walks those columns with Runge-Kutta steps...
    rec = integrate_trace(chip, 0, sched.slice(1, 2), read[1:])
    syn = rec.syn_exc_c if sign > 0 else rec.syn_inh_c
    peak = np.nanmax(syn[0], axis=0) * 1e15
    over = peak > 1.1 * knee
    assert over.mean() > 0.7
    assert fast.stepped_columns[:, over].all()
    # ...no rail is touched at any time...
    v_rec = rec.membrane_v[0] * 1e3
    assert (np.nanmax(v_rec, axis=0) < cp[naive.RAIL_HI] - 10).all()
    assert (np.nanmin(v_rec, axis=0) > cp[naive.RAIL_LO] + 10).all()
    # ...and the response stays below the linear (no-knee) prediction.
    circ = naive.ExpmCircuit(chip.operating_point(0), chip.effects)
    v_mv = fast.membrane_at_read_v * 1e3
    empty = EventSchedule.from_lists([[], []])
    base = integrate_fast(chip, 0, empty, read).membrane_at_read_v * 1e3
    for b in range(2):
        linear = circ.membrane_at_read_mv(events_of(sched, b), int(read[b])) - base[b]
        actual = v_mv[b] - base[b]
        assert (np.sign(actual) == sign).all()
        assert (sign * (linear - actual)[over] > 2e-3).all()
        assert np.median(actual / linear) < 0.999


@pytest.mark.parametrize("sign", [1, -1])
def test_rails(sign):
    chip = _saturating_chip(4, sign)
    sched = EventSchedule.from_inputs(np.full((2, 128), 31), wait_between_events=1)
    read = sched.last_cycle() + np.array([0, 100])
    fast, trace = _compare(chip, 0, sched, read)
    cp = chip.operating_point(0).column_params
    rail = cp[naive.RAIL_HI] if sign > 0 else cp[naive.RAIL_LO]
    assert fast.stepped_columns.all()
    rail = np.broadcast_to(rail, (2, 256))
    np.testing.assert_allclose(fast.membrane_at_read_v * 1e3, rail, atol=1e-6)
    np.testing.assert_allclose(trace.membrane_at_read_v * 1e3, rail, atol=1e-6)


@pytest.mark.parametrize("sign", [1, -1])
def test_rails_below_the_knee(sign):
    # Many moderate events, widely spaced: the synaptic inputs stay far below
    # their knees, yet the membrane runs into a rail and sits there a while
    # (the fast path walks these columns with the Runge-Kutta steps as affine
    # maps). The reads come at three delays after the last event.
    chip = Chip(11)
    rng = np.random.default_rng(11)
    chip.config.set_logical_weights(0, sign * rng.integers(10, 64, (128, 256)))
    sched = EventSchedule.from_inputs(np.full((3, 128), 31), wait_between_events=8)
    read = sched.last_cycle() + np.array([10, 100, 300])
    fast, _ = _compare(chip, 0, sched, read)
    rec = integrate_trace(chip, 0, sched.slice(0, 1), read[:1])
    cp = chip.operating_point(0).column_params
    syn = rec.syn_exc_c if sign > 0 else rec.syn_inh_c
    knee = cp[naive.KNEE_E] if sign > 0 else cp[naive.KNEE_I]
    assert (np.nanmax(syn[0], axis=0) * 1e15 < 0.7 * knee).all()
    v_rec = rec.membrane_v[0] * 1e3
    rail = cp[naive.RAIL_HI] if sign > 0 else cp[naive.RAIL_LO]
    extreme = np.nanmax(v_rec, axis=0) if sign > 0 else np.nanmin(v_rec, axis=0)
    assert (np.abs(extreme - rail) < 1e-6).mean() > 0.9
    assert fast.stepped_columns.all()


def test_mixed_batch_linear_saturating_and_empty():
    # Linear, saturating and empty vectors in one batch with different reads.
    chip = Chip(5)
    rng = np.random.default_rng(5)
    w = rng.integers(-20, 21, (128, 256))
    w[:24] = 63
    chip.config.set_logical_weights(0, w)
    linear_drivers = rng.choice(np.arange(24, 128), 30, replace=False)
    vectors = [
        [(d, 31, d) for d in range(24)],                          # saturating
        [(int(d), int(rng.integers(1, 32)), 3 * i) for i, d in enumerate(linear_drivers)],
        [],
        [(0, 31, 0), (1, 31, 0), (2, 31, 0), (0, 31, 1), (1, 31, 1), (2, 31, 1)],
    ]
    sched = EventSchedule.from_lists(vectors)
    read = sched.last_cycle() + np.array([60, 5, 17, 300])
    fast, _ = _compare(chip, 0, sched, read)
    assert fast.stepped_columns[0].any() and not fast.stepped_columns[2].any()


@pytest.mark.parametrize("preset", ["default", "ideal"])
def test_read_at_cycle_zero(preset):
    # No events, conversion right after the reset: both paths must report the
    # reset potential as the membrane at the read (with the capmem droop of the
    # reset cell at refresh phase 0).
    chip = Chip(6, preset=preset)
    sched = EventSchedule.from_lists([[], []])
    fast = integrate_fast(chip, 0, sched, 0)
    trace = integrate_trace(chip, 0, sched, 0)
    cp = chip.operating_point(0).column_params
    droop = cp[naive.RIPPLE] * cp[naive.PHASE_RESET]
    assert (droop > 0).all() == (preset == "default")
    reset_mv = cp[naive.V_RESET]
    np.testing.assert_allclose(fast.membrane_at_read_v * 1e3, np.broadcast_to(reset_mv - droop, (2, 256)),
                               atol=1e-9)
    assert np.array_equal(fast.codes, trace.codes)
    np.testing.assert_allclose(trace.membrane_at_read_v * 1e3, np.broadcast_to(reset_mv - droop, (2, 256)),
                               atol=1e-6)
