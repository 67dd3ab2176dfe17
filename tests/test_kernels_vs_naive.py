"""Kernels and derived values against the slow references in ``naive.py``."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import naive
from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast, integrate_trace
from bss2sim.circuits import kernels as K
from bss2sim.circuits.constants import FPGA_CYCLE_S
from bss2sim.circuits.rng import next_normal_pair as _normal_pair
from bss2sim.circuits.rng import add_normals, next_normal, next_normal_box_muller, next_uniform, stream_key
from helpers import events_of, irregular_schedule, sparse_inputs

FPGA_CYCLE_NS = FPGA_CYCLE_S * 1e9
"""The FPGA cycle in the kernels' unit of time, ns."""


# --- random numbers -----------------------------------------------------------

@njit
def _numba_stream(seed, index, n):
    state = np.zeros(1, np.uint64)
    state[0] = stream_key(seed, index)
    key = state[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = next_uniform(state)
    return key, out, state[0]


@njit
def _numba_normals(seed, index, n):
    state = np.zeros(1, np.uint64)
    state[0] = stream_key(seed, index)
    bm = np.empty(n)
    for i in range(n):
        bm[i] = next_normal_box_muller(state)
    state[0] = stream_key(seed, index)
    polar = np.empty(2 * n)
    for i in range(n):
        a, b = _normal_pair(state)
        polar[2 * i] = a
        polar[2 * i + 1] = b
    state[0] = stream_key(seed, index)
    zig = np.empty(n)
    for i in range(n):
        zig[i] = next_normal(state)
    return bm, polar, zig


SEEDS = [(0, 0), (7, 0), (7, 1), (7, 19), (123456789, 2**40 + 3), (2**64 - 1, 2**63 - 1),
         (0x9E3779B97F4A7C15, 5)]


def test_naive_splitmix_matches_published_vector():
    # SplitMix64 with state 0: first outputs published with the algorithm
    # (Vigna's splitmix64.c) -- the naive mixer itself must be right.
    s = naive.SplitMix(0)
    s.state = 0
    outs = []
    for _ in range(3):
        s.state = (s.state + naive.GOLDEN) & naive.MASK64
        outs.append(naive.mix64(s.state))
    assert outs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("seed,index", SEEDS)
def test_rng_stream_bit_exact(seed, index):
    key, uniforms, final = _numba_stream(np.uint64(seed), np.uint64(index), 64)
    ref_key = naive.stream_key(seed, index)
    assert int(key) == ref_key
    ref = naive.SplitMix(ref_key)
    expected = [ref.uniform() for _ in range(64)]
    assert [float(u) for u in uniforms] == expected          # bit for bit
    assert int(final) == ref.state
    assert np.all((uniforms > 0) & (uniforms < 1))
    # The vectorised numpy stream used by the trace reference agrees too.
    assert np.array_equal(naive.uniforms_numpy(ref_key, 64), uniforms)


@pytest.mark.parametrize("seed,index", SEEDS[:4])
def test_rng_normals_match_naive(seed, index):
    bm, polar, zig = _numba_normals(np.uint64(seed), np.uint64(index), 50)
    ref = naive.SplitMix(naive.stream_key(seed, index))
    expected_bm = [ref.normal_box_muller() for _ in range(50)]
    np.testing.assert_allclose(bm, expected_bm, rtol=1e-13, atol=1e-13)
    ref = naive.SplitMix(naive.stream_key(seed, index))
    expected_polar = [z for _ in range(50) for z in ref.normal_pair_polar()]
    np.testing.assert_allclose(polar, expected_polar, rtol=1e-13, atol=1e-13)
    ref = naive.SplitMix(naive.stream_key(seed, index))
    expected_zig = [ref.normal_ziggurat() for _ in range(50)]
    np.testing.assert_allclose(zig, expected_zig, rtol=1e-13, atol=1e-13)


def test_ziggurat_tail_and_wedges_match_naive():
    """Long enough for the rare branches (wedge rejections 1.2 %, tail 0.03 %)."""
    _, _, zig = _numba_normals(np.uint64(3), np.uint64(9), 40000)
    ref = naive.SplitMix(naive.stream_key(3, 9))
    expected = np.array([ref.normal_ziggurat() for _ in range(40000)])
    np.testing.assert_allclose(zig, expected, rtol=1e-13, atol=1e-13)
    assert (np.abs(zig) > naive.ZIG_R).sum() >= 3          # the tail branch ran



@njit
def _numba_added_normals(seed, index, base, scale):
    state = np.zeros(1, np.uint64)
    state[0] = stream_key(seed, index)
    out = base.copy()
    add_normals(state, out, scale)
    return out, state[0]


def test_add_normals_is_the_ziggurat_stream_scaled_and_added():
    """The bulk draw (the fast path's comparator noise) against the plain
    reference: the same normals in order, including wedge rejections and the
    tail, scaled per entry and added; the stream ends where the reference's does."""
    n = 40000
    rng = np.random.default_rng(4)
    base = rng.normal(0.0, 5.0, n)
    scale = rng.uniform(0.1, 3.0, n)
    got, final = _numba_added_normals(np.uint64(3), np.uint64(9), base, scale)
    ref = naive.SplitMix(naive.stream_key(3, 9))
    z = np.array([ref.normal_ziggurat() for _ in range(n)])
    np.testing.assert_allclose(got, base + scale * z, rtol=1e-13, atol=1e-12)
    assert int(final) == ref.state
    assert (np.abs(z) > naive.ZIG_R).sum() >= 3          # the tail branch ran
    # Bit for bit what one next_normal per entry gives.
    state = np.zeros(1, np.uint64)
    state[0] = stream_key(np.uint64(3), np.uint64(9))
    one_by_one = base[:200] + scale[:200] * np.array([_one_normal(state) for _ in range(200)])
    assert np.array_equal(got[:200], one_by_one)


@njit
def _one_normal(state):
    return next_normal(state)

@pytest.mark.parametrize("rows,cols", [(3, 256), (5, 7), (1, 1)])
def test_keyed_normals_are_the_rows_polar_streams(rows, cols):
    """The behavioural model's noise: row r is stream (seed, first + r), its
    columns the ziggurat normals of that stream in order."""
    from bss2sim.circuits.rng import keyed_normals
    got = keyed_normals(TrialNoise(31337, start_index=40), rows, cols)
    for r in range(rows):
        ref = naive.SplitMix(naive.stream_key(31337, 40 + r))
        expected = [ref.normal_ziggurat() for _ in range(cols)]
        np.testing.assert_allclose(got[r], expected, rtol=1e-13, atol=1e-13)


def test_rng_streams_of_neighbouring_indices_differ():
    _, a, _ = _numba_stream(np.uint64(7), np.uint64(0), 16)
    _, b, _ = _numba_stream(np.uint64(7), np.uint64(1), 16)
    _, c, _ = _numba_stream(np.uint64(8), np.uint64(0), 16)
    assert not np.any(a == b) and not np.any(a == c)


def test_rng_normal_moments():
    bm, polar, zig = _numba_normals(np.uint64(99), np.uint64(0), 20000)
    for z in (bm, polar, zig):
        assert abs(z.mean()) < 0.03
        assert abs(z.std() - 1.0) < 0.03


def test_ziggurat_is_gaussian():
    """Kolmogorov-Smirnov against the normal CDF on 400,000 draws, and the tail
    frequency beyond 3 sigma (0.27 %) within 4 standard errors."""
    from scipy import stats
    _, _, z = _numba_normals(np.uint64(2024), np.uint64(1), 400_000)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    p = 2 * stats.norm.sf(3.0)
    assert abs((np.abs(z) > 3.0).mean() - p) < 4 * np.sqrt(p * (1 - p) / z.size)
    assert abs(stats.kurtosis(z)) < 0.05


# --- schedules -------------------------------------------------------------------

def test_from_inputs_layout_matches_naive_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 32, (5, 128)) * (rng.random((5, 128)) < 0.3)
    x[2] = 0
    for wait, start in ((1, 0), (5, 0), (3, 17)):
        sched = EventSchedule.from_inputs(x, wait_between_events=wait, start_cycle=start)
        for b in range(5):
            expected, cycle = [], start
            for d in range(128):
                if x[b, d]:
                    expected.append((d, int(x[b, d]), cycle))
                    cycle += wait
            assert events_of(sched, b) == expected
        last = [start + wait * (np.count_nonzero(x[b]) - 1) if x[b].any() else 0 for b in range(5)]
        assert list(sched.last_cycle()) == last


# --- operating point ----------------------------------------------------------

PAIRS = [(0, 0), (3, 127), (64, 128), (127, 255), (50, 200), (100, 17)]
CONDITIONS = [(0, 0, "default", None), (5, 1, "default", (40.0, 30.0)), (3, 0, "harsh", (12.0, 200.0)),
              (0, 0, "ideal", None)]
"""(seed, half, preset, (temperature, hours) or None): the reference temperature
and hour 0, a warm chip a day later, a harsh chip in the cold, an ideal chip."""


def _chip(seed, preset="default", env=None):
    chip = Chip(seed, preset=preset)
    if env is not None:
        chip.set_environment(*env)
    return chip


@pytest.mark.parametrize("seed,half,preset,env", CONDITIONS)
def test_operating_point_currents_match_naive_loop(seed, half, preset, env):
    chip = _chip(seed, preset, env)
    rng = np.random.default_rng(seed)
    chip.config.set_weights(half, rng.integers(0, 64, (256, 256)))
    signs = rng.choice([-1, 1], 256)
    signs[0:2] = [1, 1]          # driver 0: both rows excitatory
    signs[254:256] = [-1, -1]    # driver 127: both rows inhibitory
    chip.config.set_row_signs(half, signs)
    chip.config.set_capmem("synapse_bias", rng.integers(300, 900, (2, 2)))
    op = chip.operating_point(half)
    for driver, column in PAIRS:
        exc, inh = naive.synapse_current_ua(chip, half, driver, column)
        assert op.current_exc_ua[driver, column] == pytest.approx(exc, rel=1e-6, abs=1e-9)
        assert op.current_inh_ua[driver, column] == pytest.approx(inh, rel=1e-6, abs=1e-9)
    assert op.current_inh_ua[0].max() == 0 and op.current_exc_ua[127].max() == 0
    assert op.current_exc_ua[0].min() > 0 and op.current_inh_ua[127].min() > 0
    if preset != "ideal":
        # The effects are large enough to matter: the ideal reference of the same
        # chip (same truth, same configuration) is off by more than the tolerance.
        ideal = _chip(seed, "ideal")
        ideal.config = chip.config
        exc_ideal, _ = naive.synapse_current_ua(ideal, half, 0, 0)
        exc, _ = naive.synapse_current_ua(chip, half, 0, 0)
        assert abs(exc / exc_ideal - 1) > 1e-3


def test_operating_point_currents_logical_weights():
    chip = Chip(2)
    rng = np.random.default_rng(2)
    w = rng.integers(-63, 64, (128, 256))
    chip.config.set_logical_weights(0, w)
    op = chip.operating_point(0)
    for driver, column in PAIRS + [(d, c) for d, c in zip(rng.integers(0, 128, 10),
                                                           rng.integers(0, 256, 10))]:
        exc, inh = naive.synapse_current_ua(chip, 0, driver, column)
        assert op.current_exc_ua[driver, column] == pytest.approx(exc, rel=1e-6, abs=1e-9)
        assert op.current_inh_ua[driver, column] == pytest.approx(inh, rel=1e-6, abs=1e-9)
        if w[driver, column] == 0:
            assert exc == 0 and inh == 0
        elif w[driver, column] > 0:
            assert inh == 0 and exc > 0
        else:
            assert exc == 0 and inh > 0


def test_zero_bias_gives_zero_current():
    chip = Chip(4)
    chip.config.set_logical_weights(0, np.full((128, 256), 63))
    chip.config.set_capmem("synapse_bias", 0)
    op = chip.operating_point(0)
    for driver, column in PAIRS:
        exc, _ = naive.synapse_current_ua(chip, 0, driver, column)
        assert op.current_exc_ua[driver, column] == pytest.approx(exc, abs=1e-9)
    # Capmem offsets are zero-mean: some quadrant currents clip at 0, none go negative.
    assert op.current_exc_ua.min() >= 0


@pytest.mark.parametrize("preset,env", [("default", None), ("default", (35.0, 50.0)), ("ideal", None)])
def test_operating_point_pulse_widths_match_naive(preset, env):
    chip = _chip(6, preset, env)
    rng = np.random.default_rng(6)
    chip.config.set_driver_offsets(1, rng.integers(0, 64, 128))
    chip.config.set_capmem("driver_ramp", rng.integers(400, 700, (2, 2)))
    op = chip.operating_point(1)
    t, cfg, cp = chip.truth, chip.config, chip.circuit
    state = chip._drift_state()
    assert (state is None) == (env is None)
    for driver in (0, 10, 63, 64, 127):
        block = driver // 64
        ramp = naive.capmem_cell(chip, "driver_ramp", (1, block)) * t.quadrant_driver_ramp[1, block]
        factor = 1.0 if state is None else state.driver_width[1, driver]
        assert op.pulse_width_ns[driver, 0] == 0
        for value in (1, 5, 16, 31):
            k = cp.pulse_nonlinearity
            shape = 31 * (1 - np.exp(-k * value / 31)) / (1 - np.exp(-k))
            width = (t.driver_gain[1, driver] * cp.pulse_width_per_value_s * shape
                     + t.driver_offset_s[1, driver]
                     + (int(cfg.driver_offset[1, driver]) - 32) * cp.driver_offset_step_s) \
                * cp.driver_ramp_nominal_a / ramp * factor
            width = min(max(width * 1e9, 0.0), 8.0)
            assert op.pulse_width_ns[driver, value] == pytest.approx(width, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("seed,half,preset,env", CONDITIONS)
def test_operating_point_column_params_match_naive(seed, half, preset, env):
    chip = _chip(seed, preset, env)
    rng = np.random.default_rng(seed)
    for name in ("syn_tau_exc", "syn_tau_inh", "leak_bias", "syn_strength_exc"):
        chip.config.set_capmem(name, rng.integers(200, 900, (2, 256)))
    chip.config.set_cadc_digital_offsets(half, rng.integers(-20, 21, 256))
    cp = chip.operating_point(half).column_params
    for col in (0, 77, 128, 255):
        expected = naive.column_params(chip, half, col)
        assert len(expected) == len(naive.ROW_NAMES)
        for row, value in expected.items():
            assert cp[row, col] == pytest.approx(value, rel=1e-12, abs=1e-12), naive.ROW_NAMES[row]
    on = preset != "ideal"
    # (A column's injected charge may clip at 0: its spread is 30 %.)
    assert ((cp[naive.QINJ_E] > 0).mean() > 0.9) == on and (cp[naive.RIPPLE] > 0).all() == on
    assert (cp[naive.NOISE_KTC] > 0).all() == on


def test_operating_point_column_params_ideal_match_truth():
    # The old physics on an ideal chip: rates, potentials and strengths are the
    # truth's values through the default capmem cells, with nothing added.
    chip = Chip(8, preset="ideal")
    cp = chip.operating_point(1).column_params
    t, c = chip.truth, chip.circuit
    for col in (0, 77, 128, 255):
        tau_cell = naive.capmem_value(512, t.capmem_gain["syn_tau_exc"][1, col],
                                      t.capmem_offset["syn_tau_exc"][1, col], "current")
        assert cp[naive.LAM_E, col] == pytest.approx(
            1e-9 / t.tau_syn_exc_s[1, col] * tau_cell / naive.TAU_REFERENCE_A, rel=1e-12)
        leak_current = naive.capmem_value(0, t.capmem_gain["leak_bias"][1, col],
                                          t.capmem_offset["leak_bias"][1, col], "current")
        g = t.membrane_capacitance_f[1, col] / t.residual_leak_tau_s[1, col] \
            + c.leak_conductance_per_a * leak_current
        assert cp[naive.LAM_M, col] == pytest.approx(1e-9 * g / t.membrane_capacitance_f[1, col],
                                                     rel=1e-12)
        reset = naive.capmem_value(448, t.capmem_gain["reset_potential"][1, col],
                                   t.capmem_offset["reset_potential"][1, col], "voltage") \
            + t.reset_offset_v[1, col]
        assert cp[naive.V_RESET, col] == pytest.approx(1e3 * reset, abs=1e-9)
        leak = naive.capmem_value(448, t.capmem_gain["leak_potential"][1, col],
                                  t.capmem_offset["leak_potential"][1, col], "voltage") \
            + t.leak_offset_v[1, col]
        assert cp[naive.E_LEAK, col] == pytest.approx(1e3 * leak, abs=1e-9)
        assert cp[naive.RAIL_LO, col] == pytest.approx(1e3 * t.rail_low_v[1, col], abs=1e-9)
        assert cp[naive.CADC_OFFSET, col] == pytest.approx(1e3 * t.cadc_offset_v[1, col], abs=1e-9)
    for row in (naive.QINJ_E, naive.QINJ_I, naive.NOISE_KTC, naive.NOISE_CM, naive.NOISE_LF, naive.RIPPLE):
        assert (cp[row] == 0).all(), naive.ROW_NAMES[row]


def test_drift_capmem_matches_naive():
    # The drift pattern's arithmetic (tempco and walk) against the documented process.
    chip = _chip(11, "default", (31.0, 70.0))
    state = chip._drift_state()
    for name in naive.CAPMEM_KINDS:
        how, amount = state.capmem[name]
        ref_how, ref = naive.drift_capmem(chip, name)
        assert how == ref_how
        np.testing.assert_allclose(amount, ref, rtol=1e-12, atol=1e-15)
    assert naive.drift_capmem(_chip(11), "synapse_bias") is None


def test_parameter_row_names_agree():
    for name in naive.ROW_NAMES:
        assert getattr(K, name) == getattr(naive, name), name
    assert K.NUM_COLUMN_PARAMS == 36


# --- fast path against the exact linear reference -----------------------------

def _linear_case(seed, half, num_vectors=6, active=30, weight_max=63, preset="default"):
    chip = Chip(seed, preset=preset)
    rng = np.random.default_rng(100 + seed)
    chip.config.set_logical_weights(half, rng.integers(-weight_max, weight_max + 1, (128, 256)))
    x = sparse_inputs(rng, num_vectors, active)
    x[-1] = 0                                  # one vector without events
    sched = EventSchedule.from_inputs(x, wait_between_events=int(rng.integers(3, 9)))
    read = sched.last_cycle() + rng.integers(0, 120, num_vectors)
    return chip, sched, read


def _longest_interval_loops(sched, read):
    """Plain loops: the longest gap between two events of a vector, or from its
    last event to its read (at least 1)."""
    longest = 1
    for b in range(sched.num_vectors):
        _, _, c = sched.vector(b)
        c = [int(x) for x in c]
        for k in range(1, len(c)):
            longest = max(longest, c[k] - c[k - 1])
        if c:
            longest = max(longest, int(read[b]) - c[-1])
    return longest


@pytest.mark.parametrize("case", range(6))
def test_longest_table_interval_matches_loops(case):
    from bss2sim.circuits.integrate import _longest_table_interval
    rng = np.random.default_rng(case)
    if case == 0:
        sched = EventSchedule.from_lists([[], [], []])        # no events at all
    elif case == 1:
        sched = EventSchedule.from_lists([[(0, 5, 3)], [], [(1, 5, 0), (2, 5, 900)]])
    else:
        sched = irregular_schedule(rng, 7, 40, max_gap=[1, 5, 60, 300][case - 2], p_same=0.3)
        counts = np.diff(sched.offsets)
        assert counts.min() > 0
    read = sched.last_cycle() + rng.integers(0, [1, 2, 50, 5000, 3, 10][case], sched.num_vectors)
    got = _longest_table_interval(sched.offsets, sched.cycle, read)
    assert got == _longest_interval_loops(sched, read)
    assert isinstance(got, int)


@pytest.mark.parametrize("seed,preset", [(0, "default"), (9, "harsh")])
def test_runge_kutta_step_below_the_knees_is_its_affine_map(seed, preset):
    # Below both knees and between the rails, one Runge-Kutta step (rk4_step,
    # the plain four-stage definition) is linear in the state: the walk's
    # affine coefficients must give the same step, to rounding.
    chip = Chip(seed, preset=preset)
    cp = np.ascontiguousarray(chip.operating_point(1).column_params)
    rng = np.random.default_rng(seed)
    coeff = np.empty(K.RK_COEFFS)
    for c in rng.choice(cp.shape[1], 24, replace=False):
        for cycles in range(1, K.WALK_CYCLES + 1):
            dt = cycles * FPGA_CYCLE_NS
            K._rk4_linear_coefficients(cp, c, dt, coeff)
            for _ in range(5):
                xe = rng.uniform(0.0, 0.9) * cp[naive.KNEE_E, c]
                xi = rng.uniform(0.0, 0.9) * cp[naive.KNEE_I, c]
                v = rng.uniform(0.6, 0.8) * cp[naive.RAIL_HI, c] + rng.uniform(0.2, 0.4) * cp[naive.RAIL_LO, c]
                ref = K.rk4_step(xe, xi, v, 0.0, 0.0, dt, cp, c)
                assert cp[naive.RAIL_LO, c] < ref[2] < cp[naive.RAIL_HI, c]     # no clamp in play
                got = (coeff[K.RK_EE] * xe, coeff[K.RK_II] * xi,
                       coeff[K.RK_VV] * v + coeff[K.RK_VE] * xe - coeff[K.RK_VI] * xi + coeff[K.RK_V0])
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
                # and the step really moved the state (the test would see a wrong map)
                assert abs(ref[2] - v) > 1e-6 and ref[0] < xe


def _scan_ticks(xe, xi, v, ctab, cp, c, extra):
    """The tick at which a linear column's comparator first fires, scanning every
    tick of the ramp from the first (255 if it never fires)."""
    el = cp[naive.E_LEAK, c]
    for m in range(K.CADC_MAX_CODE):
        vm = el + (v - el) * ctab[c, m, K.T_AM] + xe * ctab[c, m, K.T_BE] - xi * ctab[c, m, K.T_BI]
        ramp = cp[K.CADC_START, c] + (m + 1) * cp[K.CADC_STEP, c]
        if ramp > vm + cp[K.CADC_OFFSET, c] + extra:
            return m
    return K.CADC_MAX_CODE


@pytest.mark.parametrize("seed,half,preset", [(0, 0, "default"), (5, 1, "default"), (9, 0, "harsh")])
def test_conversion_window_and_search_give_the_full_scans_tick(seed, half, preset):
    # The fast path settles a column's code from its tick window alone where the
    # window holds one tick, and searches it otherwise; both must be the tick a
    # scan of the whole ramp finds. States: below the knees and between the
    # rails (linear), from a settled membrane to one still moving fast.
    chip = Chip(seed, preset=preset)
    cp = np.ascontiguousarray(chip.operating_point(half).column_params)
    ctab = chip.conversion_tables(half)
    slopes = chip.conversion_tick_slopes(half)
    rng = np.random.default_rng(seed)
    settled = searched = 0
    for c in rng.choice(cp.shape[1], 32, replace=False):
        for _ in range(40):
            q = rng.choice([0.0, 0.02, 0.3, 0.9])
            xe = q * rng.uniform(0.0, 1.0) * cp[naive.KNEE_E, c]
            xi = q * rng.uniform(0.0, 1.0) * cp[naive.KNEE_I, c]
            lo, hi = cp[naive.RAIL_LO, c], cp[naive.RAIL_HI, c]
            v = rng.choice([cp[naive.E_LEAK, c], rng.uniform(lo, hi)])
            extra = rng.normal(0.0, 2.0)
            want = _scan_ticks(xe, xi, v, ctab, cp, c, extra)
            _, _, first, last = K._conversion_window(xe, xi, v, cp, c, extra)
            assert first <= want <= last
            if first == last:
                settled += 1
                assert want == last
            else:
                searched += 1
            assert K._convert_linear(xe, xi, v, ctab, cp, c, extra, slopes) == want
    assert settled > 100 and searched > 100          # both ways were taken


def test_finish_code_and_linear_safe_match_their_plain_definitions():
    chip = Chip(2)
    cp = np.ascontiguousarray(chip.operating_point(0).column_params).copy()
    cp[K.DIGITAL_OFFSET, :4] = [-20.0, 0.0, 7.0, 40.0]
    for c in range(4):
        for m in (0, 1, 19, 20, 21, 200, 215, 216, 248, 254, 255):
            code = m + cp[K.DIGITAL_OFFSET, c]
            want = 0 if code < 0 else (K.CADC_MAX_CODE if code > K.CADC_MAX_CODE else int(code))
            assert K._finish_code(m, cp, c) == want
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(2000):
        c = int(rng.integers(cp.shape[1]))
        xe = rng.uniform(0.0, 1.3) * cp[naive.KNEE_E, c]
        xi = rng.uniform(0.0, 1.3) * cp[naive.KNEE_I, c]
        lo, hi = cp[naive.RAIL_LO, c], cp[naive.RAIL_HI, c]
        v = rng.uniform(lo, hi)
        el = cp[naive.E_LEAK, c]
        want = not (xe > cp[naive.KNEE_E, c] or xi > cp[naive.KNEE_I, c]) \
            and max(v, el) + cp[K.GC_E, c] * xe < hi and min(v, el) - cp[K.GC_I, c] * xi > lo
        assert bool(K._linear_safe(xe, xi, v, cp, c)) == want
        seen.add(want)
    assert seen == {True, False}


@pytest.mark.parametrize("seed,half", [(0, 0), (1, 1), (17, 0), (40, 1)])
def test_fast_path_equals_expm_reference(seed, half):
    chip, sched, read = _linear_case(seed, half)
    res = integrate_fast(chip, half, sched, read)
    assert not res.stepped_columns.any()
    events = [events_of(sched, b) for b in range(sched.num_vectors)]
    codes, v_mv = naive.expm_codes(chip, half, events, read)
    np.testing.assert_allclose(res.membrane_at_read_v, v_mv * 1e-3, rtol=0, atol=1e-6)
    assert np.array_equal(res.codes, codes)
    # The inputs did something: codes move away from the no-event vector.
    assert np.abs(res.codes[:-1].astype(int) - res.codes[-1]).max() >= 3


def test_fast_path_equals_expm_reference_irregular():
    chip = Chip(21)
    rng = np.random.default_rng(21)
    chip.config.set_logical_weights(0, rng.integers(-50, 51, (128, 256)))
    sched = irregular_schedule(rng, 5, 40, max_gap=15)
    read = sched.last_cycle() + rng.integers(0, 60, 5)
    res = integrate_fast(chip, 0, sched, read)
    assert not res.stepped_columns.any()
    events = [events_of(sched, b) for b in range(5)]
    codes, v_mv = naive.expm_codes(chip, 0, events, read)
    np.testing.assert_allclose(res.membrane_at_read_v, v_mv * 1e-3, rtol=0, atol=1e-6)
    assert np.array_equal(res.codes, codes)


@pytest.mark.parametrize("preset", ["default", "harsh"])
def test_fast_path_equals_expm_reference_repeated_and_coincident(preset):
    # Few drivers at short spacing (driver recovery bites) and several drivers
    # in one cycle (the column-line IR drop bites).
    chip = Chip(22, preset=preset)
    rng = np.random.default_rng(22)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = irregular_schedule(rng, 4, 30, max_gap=3, p_same=0.5, drivers=range(6))
    read = sched.last_cycle() + rng.integers(0, 40, 4)
    res = integrate_fast(chip, 0, sched, read)
    assert not res.stepped_columns.any()
    events = [events_of(sched, b) for b in range(4)]
    codes, v_mv = naive.expm_codes(chip, 0, events, read)
    np.testing.assert_allclose(res.membrane_at_read_v, v_mv * 1e-3, rtol=0, atol=1e-6)
    assert np.array_equal(res.codes, codes)
    # Both effects are visible against a reference without them.
    op = chip.operating_point(0)
    plain = naive.ExpmCircuit(op).membrane_at_read_mv(events[0], int(read[0]))
    assert np.abs(plain - v_mv[0]).max() > 0.5
    _check_trace(chip, 0, sched.slice(0, 1), read[:1], substeps=2)


def _repeated_sends_case(seed, preset, num_sends, wait):
    from bss2sim.digital.events import paired_schedule
    chip = Chip(seed, preset=preset)
    rng = np.random.default_rng(seed)
    # Weaker weights for more sends keep every column linear (the reference is).
    w_max = 40 if num_sends <= 3 else 8
    chip.config.set_logical_weights(0, rng.integers(-w_max, w_max + 1, (128, 256)))
    x = sparse_inputs(rng, 6, 12)
    x[1] = 0
    x[1, 7] = 31                                 # one event per send: a block of one
    x[2] = 0                                     # no events
    sched = paired_schedule(x, None, wait_between_events=wait, num_sends=num_sends,
                            start_cycle=int(rng.integers(0, 300))).halves[0]
    read = sched.last_cycle() + rng.integers(0, 80, 6)
    return chip, x, sched, read


@pytest.mark.parametrize("preset,num_sends,wait", [("default", 3, 5), ("harsh", 11, 2), ("default", 2, 7),
                                                    ("harsh", 40, 1)])
def test_fast_path_repeated_sends_equals_expm_reference(preset, num_sends, wait):
    # A vector sent several times: the fast path sums the later sends
    # geometrically; the reference integrates every event.
    chip, x, sched, read = _repeated_sends_case(31 + num_sends, preset, num_sends, wait)
    res = integrate_fast(chip, 0, sched, read)
    assert not res.stepped_columns.any()
    events = [events_of(sched, b) for b in range(sched.num_vectors)]
    codes, v_mv = naive.expm_codes(chip, 0, events, read)
    # The float32 state over 480 events (40 sends) drifts by 1.25e-6 V whether the
    # sends are summed or swept one by one; 1e-6 V holds up to a few hundred.
    atol = 1e-6 if num_sends <= 11 else 2e-6
    np.testing.assert_allclose(res.membrane_at_read_v, v_mv * 1e-3, rtol=0, atol=atol)
    assert np.array_equal(res.codes, codes)


@pytest.mark.parametrize("num_sends,wait", [(3, 5), (11, 2), (256, 1), (2, 5), (1, 4)])
def test_periodic_stream_detection(num_sends, wait):
    # Where the geometric sum applies: every VMM stream of three sends or more.
    chip, x, sched, _ = _repeated_sends_case(5, "harsh", num_sends, wait)
    from bss2sim.circuits.integrate import _event_arrays
    offsets, drv, cyc, width, inject = _event_arrays(chip, chip.operating_point(0), sched)
    for b in range(sched.num_vectors):
        n = int(np.count_nonzero(x[b]))
        got = K._periodic_stream(offsets, drv, cyc, width, inject, b, 4096)
        periodic = num_sends >= K.MIN_PERIODIC_SENDS and n > 0 and n * num_sends >= 2 * K.MIN_PERIODIC_SENDS
        assert got == ((n, num_sends, wait) if periodic else (0, 0, 0))
    # A stream whose spacing changes once is not periodic.
    cyc2 = cyc.copy()
    k = int(offsets[0]) + 2
    cyc2[k:int(offsets[1])] += 1
    if num_sends >= K.MIN_PERIODIC_SENDS:
        assert K._periodic_stream(offsets, drv, cyc2, width, inject, 0, 4096) == (0, 0, 0)
        # Nor one whose third send differs in a width.
        w2 = width.copy()
        n0 = int(np.count_nonzero(x[0]))
        w2[int(offsets[0]) + 2 * n0] *= 0.5
        assert K._periodic_stream(offsets, drv, cyc, w2, inject, 0, 4096) == (0, 0, 0)


@pytest.mark.parametrize("num_sends,wait", [(3, 5), (11, 2), (64, 1)])
def test_periodic_bounds_equal_the_event_by_event_bounds(num_sends, wait):
    # The linearity bounds of a repeated vector, from two sends, against the
    # same bounds over every event.
    chip, x, sched, _ = _repeated_sends_case(7, "harsh", num_sends, wait)
    from bss2sim.circuits.integrate import _event_arrays
    op = chip.operating_point(0)
    offsets, drv, cyc, width, inject = _event_arrays(chip, op, sched)
    ie_t = np.ascontiguousarray(op.current_exc_ua.T)
    ii_t = np.ascontiguousarray(op.current_inh_ua.T)
    checked = 0
    for b in range(sched.num_vectors):
        n, sends, gap = K._periodic_stream(offsets, drv, cyc, width, inject, b, 4096)
        if n == 0:
            continue
        checked += 1
        for lam in (0.01, 0.03, 0.2):
            for vals in (width, inject):
                assert K._scalar_peak_periodic(offsets, vals, b, lam, n, sends, gap) == pytest.approx(
                    K._scalar_peak(offsets, vals, cyc, b, lam), rel=1e-12)
        for c in (0, 17, 255):
            for cur, q in ((ie_t, 0.003), (ii_t, 0.0)):
                assert K._column_peak_periodic(offsets, drv, width, inject, cur, q, 0.025, b, c, n, sends,
                                               gap) == pytest.approx(
                    K._column_peak(offsets, drv, cyc, width, inject, cur, q, 0.025, b, c), rel=1e-12)
            want = K._column_excursion(offsets, drv, width, inject, ie_t, ii_t, 0.003, 0.002, 1.1, 0.9, b, c)
            got = K._column_excursion_periodic(offsets, drv, width, inject, ie_t, ii_t, 0.003, 0.002, 1.1, 0.9,
                                               b, c, n, sends)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert checked >= 4


def test_fast_path_with_digital_offsets_equals_reference():
    chip, sched, read = _linear_case(9, 0, num_vectors=3)
    rng = np.random.default_rng(9)
    chip.config.set_cadc_digital_offsets(0, rng.integers(-128, 128, 256))
    res = integrate_fast(chip, 0, sched, read)
    events = [events_of(sched, b) for b in range(3)]
    codes, _ = naive.expm_codes(chip, 0, events, read)
    assert np.array_equal(res.codes, codes)
    assert (res.codes == 0).any() and (res.codes == 255).any()


@pytest.mark.parametrize("ramp_start,ramp_slope", [(448, 512), (64, 200)])
def test_fast_path_equals_reference_at_ramp_ends(ramp_start, ramp_slope):
    # (448, 512): the ramp starts near the membrane, so some channels sit below
    # its first step (the comparator fires at tick 0); (64, 200): a shallow ramp
    # that does not reach some membranes (the count runs out at 255). Digital
    # offsets are then added to those end counts.
    chip, sched, read = _linear_case(10, 0, num_vectors=3)
    chip.config.set_capmem("cadc_ramp_start", ramp_start)
    chip.config.set_capmem("cadc_ramp_slope", ramp_slope)
    offsets = np.where(np.arange(256) % 2 == 0, 40, -40)
    chip.config.set_cadc_digital_offsets(0, offsets)
    res = integrate_fast(chip, 0, sched, read)
    events = [events_of(sched, b) for b in range(3)]
    codes, _ = naive.expm_codes(chip, 0, events, read)
    end = 40 if ramp_start == 448 else 255 - 40
    assert (codes == end).sum() > 10          # the end case does occur
    assert np.array_equal(res.codes, codes)


@pytest.mark.parametrize("preset,shared_seed", [("default", None), ("default", 99), ("harsh", 5),
                                                ("ideal", None)])
def test_fast_path_noise_equals_reference_with_naive_rng(preset, shared_seed):
    # The whole documented noise model bit for bit: per-column Gaussian (membrane
    # OU variance, read noise, kT/C), the quadrant's common noise, the slow noise
    # with its shared part, and the capmem ripple at the drawn refresh phase.
    chip, sched, read = _linear_case(5, 1, num_vectors=4, preset=preset)
    noise = TrialNoise(2024, start_index=11, shared_seed=shared_seed)
    res = integrate_fast(chip, 1, sched, read, noise=noise)
    assert noise.next_index == 15
    events = [events_of(sched, b) for b in range(4)]
    ref_noise = (2024, 11) if shared_seed is None else (2024, 11, shared_seed)
    codes, _ = naive.expm_codes(chip, 1, events, read, noise=ref_noise)
    quiet, _ = naive.expm_codes(chip, 1, events, read)
    assert np.array_equal(res.codes, codes)
    assert not np.array_equal(codes, quiet)
    if preset != "ideal":
        # The shared noise matters: leaving it out of the reference changes codes.
        cp = chip.operating_point(1).column_params
        add, _ = naive.shared_noise_mv(cp, 2024, noise.shared_seed, 11)
        assert np.abs(add).max() > 0.5 * cp[naive.CADC_STEP].min()


# --- trace path against the numpy RK4 reference --------------------------------

def _check_trace(chip, half, sched, read, substeps=8, record_every=None, noise=None):
    res = integrate_trace(chip, half, sched, read, substeps_per_cycle=substeps,
                          record_every=record_every,
                          noise=None if noise is None else TrialNoise(*noise[:2], shared_seed=(
                              noise[2] if len(noise) > 2 else None)))
    op = chip.operating_point(half)
    every = substeps if record_every is None else record_every
    for b in range(sched.num_vectors):
        ref = naive.rk4_trace(op, events_of(sched, b), int(np.broadcast_to(read, (sched.num_vectors,))[b]),
                              substeps=substeps, effects=chip.effects,
                              noise=None if noise is None else (noise[0], noise[1] + b) + tuple(noise[2:]))
        rec = res.membrane_v[b]
        valid = ~np.isnan(rec[:, 0])
        n = int(valid.sum())
        assert n > 10 and valid[:n].all()
        steps = np.arange(n) * every
        np.testing.assert_allclose(res.times_s[:n], steps * ref["dt"] * 1e-9, rtol=1e-12)
        np.testing.assert_allclose(rec[:n], ref["v"][steps] * 1e-3, rtol=0, atol=1e-6)
        np.testing.assert_allclose(res.syn_exc_c[b, :n], ref["xe"][steps] * 1e-15, rtol=0, atol=1e-18)
        np.testing.assert_allclose(res.syn_inh_c[b, :n], ref["xi"][steps] * 1e-15, rtol=0, atol=1e-18)
        np.testing.assert_allclose(res.membrane_at_read_v[b], ref["v_read"] * 1e-3, rtol=0, atol=1e-6)
        assert np.array_equal(res.codes[b], ref["codes"])
    return res


@pytest.mark.parametrize("preset", ["default", "ideal"])
def test_trace_path_equals_rk4_reference(preset):
    chip = Chip(12, preset=preset)
    rng = np.random.default_rng(12)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = irregular_schedule(rng, 2, 25, max_gap=6)
    res = _check_trace(chip, 0, sched, sched.last_cycle() + 7)
    assert np.nanmax(res.syn_exc_c) > 1e-15


def test_trace_path_equals_rk4_reference_saturating():
    # Dense maximal excitation on one half of the columns, inhibition on the
    # other: synaptic inputs pass the knee and the membrane hits both rails.
    chip = Chip(13)
    w = np.zeros((128, 256), np.int64)
    w[:, :128] = 63
    w[:, 128:] = -63
    chip.config.set_logical_weights(1, w)
    sched = EventSchedule.from_lists([[(d, 31, d // 2) for d in range(60)]])
    res = _check_trace(chip, 1, sched, 40, substeps=4, record_every=3)
    cp = chip.operating_point(1).column_params
    assert (np.nanmax(res.syn_exc_c[0, :, :128], axis=0) * 1e15 > cp[naive.KNEE_E, :128]).all()
    assert (np.nanmax(res.membrane_v[0], axis=0)[:128] == pytest.approx(cp[naive.RAIL_HI, :128] * 1e-3))
    assert (np.nanmin(res.membrane_v[0], axis=0)[128:] == pytest.approx(cp[naive.RAIL_LO, 128:] * 1e-3))


@pytest.mark.parametrize("preset,noise", [("default", (77, 5)), ("harsh", (77, 5, 1234)), ("ideal", (77, 5))])
def test_trace_path_noise_equals_rk4_reference(preset, noise):
    chip = Chip(14, preset=preset)
    rng = np.random.default_rng(14)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    sched = EventSchedule.from_inputs(sparse_inputs(rng, 2, 10), wait_between_events=2)
    _check_trace(chip, 0, sched, sched.last_cycle() + 3, substeps=2, noise=noise)


def _walk_one_column(offsets, drv, cyc, width, inject, ie, ii, qe, qi, tab, cp, rk, b, rc, c, seen):
    """Plain reference of the walk of one column below its knees: per interval,
    exact propagation from the tables where no trajectory can reach a knee or a
    rail, else Runge-Kutta steps of at most ``WALK_CYCLES`` cycles (the affine
    map) held within the rails; the event's charge added after. ``seen``
    counts the exact intervals, the steps and the steps that ended at a rail."""
    el, hi, lo = cp[K.E_LEAK, c], cp[K.RAIL_HI, c], cp[K.RAIL_LO, c]

    def entry(row, n):
        return tab[row, n, c] if n < tab.shape[1] else K._far_entry(cp, row, n, c, FPGA_CYCLE_NS)

    def propagate(xe, xi, v, n):
        while n > 0:
            top = max(v, el) + cp[K.GC_E, c] * xe
            bottom = min(v, el) - cp[K.GC_I, c] * xi
            if xe <= cp[K.KNEE_E, c] and xi <= cp[K.KNEE_I, c] and top < hi and bottom > lo:
                seen["exact"] += 1
                return (xe * entry(K.T_AE, n), xi * entry(K.T_AI, n),
                        el + (v - el) * entry(K.T_AM, n) + xe * entry(K.T_BE, n) - xi * entry(K.T_BI, n))
            step = min(K.WALK_CYCLES, n)
            a = rk[step - 1, :, c]
            v = a[K.RK_VV] * v + a[K.RK_VE] * xe - a[K.RK_VI] * xi + a[K.RK_V0]
            seen["steps"] += 1
            if v < lo or v > hi:
                seen["at_rail"] += 1
            v = lo if v < lo else (hi if v > hi else v)
            xe, xi = a[K.RK_EE] * xe, a[K.RK_II] * xi
            n -= step
        return xe, xi, v

    xe, xi, v, prev = np.float64(0.0), np.float64(0.0), np.float64(cp[K.V_RESET, c]), 0
    for k in range(offsets[b], offsets[b + 1]):
        xe, xi, v = propagate(xe, xi, v, cyc[k] - prev)
        prev = cyc[k]
        # float32 products, as the kernels form them from float32 widths and currents
        xe = xe + (width[k] * ie[drv[k], c] + inject[k] * qe[c])
        xi = xi + (width[k] * ii[drv[k], c] + inject[k] * qi[c])
    return propagate(xe, xi, v, rc - prev)


@pytest.mark.parametrize("seed,preset", [(0, "default"), (4, "harsh")])
def test_walk_side_by_side_equals_the_walk_of_each_column(seed, preset):
    # The fast path walks the columns proven below their knees several at a
    # time in one pass over the events; each column must get the bits of its
    # own walk, for any number of columns (groups and a last partial group),
    # with intervals of one step, of several steps, coincident events and
    # waits beyond the tables.
    chip = Chip(seed, preset=preset)
    rng = np.random.default_rng(seed)
    chip.config.set_logical_weights(0, rng.integers(-63, 64, (128, 256)))
    op = chip.operating_point(0)
    cp = np.ascontiguousarray(op.column_params)
    ie = np.ascontiguousarray(op.current_exc_ua)
    ii = np.ascontiguousarray(op.current_inh_ua)
    qe, qi = cp[K.QINJ_E].copy(), cp[K.QINJ_I].copy()
    tab = chip.propagator_tables(0, 100)
    rk = np.empty((K.WALK_CYCLES, K.RK_COEFFS, cp.shape[1]))
    for c in range(cp.shape[1]):
        for n in range(K.WALK_CYCLES):
            K._rk4_linear_coefficients(cp, c, (n + 1) * FPGA_CYCLE_NS, rk[n, :, c])
    counts = [0, 1, 40, 120, 60]
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    gaps = rng.choice([5, 5, 5, 5, 3, 0, 12, 150], offsets[-1])
    gaps[offsets[:-1][np.array(counts) > 0]] = rng.integers(1, 700, int(np.sum(np.array(counts) > 0)))
    cyc = np.concatenate([np.cumsum(gaps[offsets[b]:offsets[b + 1]]) for b in range(len(counts))]).astype(np.int64)
    drv = rng.integers(0, ie.shape[0], offsets[-1]).astype(np.int64)
    width = rng.uniform(0.0, 60.0, offsets[-1]).astype(np.float32)
    inject = (width > 5.0).astype(np.float32)
    seen = {"exact": 0, "steps": 0, "at_rail": 0}
    for b in range(len(counts)):
        last = cyc[offsets[b + 1] - 1] if counts[b] else 0
        rc = int(last + rng.choice([0, 4, 141, 400]))
        for m in (1, 3, 4, 6, 9, 13):
            lanes = rng.choice(cp.shape[1], m, replace=False).astype(np.int64)
            out = [np.full(cp.shape[1], np.nan) for _ in range(3)]
            K._walk_below_knees(lanes, m, offsets, drv, cyc, width, inject, ie, ii, qe, qi, tab, cp,
                                FPGA_CYCLE_NS, K.WALK_CYCLES, rk, b, rc, *out)
            for c in lanes:
                ref = _walk_one_column(offsets, drv, cyc, width, inject, ie, ii, qe, qi, tab, cp, rk, b, rc, c,
                                       seen)
                assert (out[0][c], out[1][c], out[2][c]) == ref, (b, m, c)
            others = np.setdiff1d(np.arange(cp.shape[1]), lanes)
            assert np.isnan(out[2][others]).all()        # nothing written outside the lanes
    # Both ways were taken, and rails were reached.
    assert seen["exact"] > 100 and seen["steps"] > 100 and seen["at_rail"] > 10, seen


@pytest.mark.parametrize("seed,preset,half", [(0, "default", 0), (3, "harsh", 1), (5, "ideal", 0)])
def test_synapse_dac_kernel_is_the_numpy_expression(seed, preset, half):
    # The DAC output per synapse (bow and the binary-weighted sources'
    # mismatch) against the expression written as numpy passes over all
    # synapses, bit for bit, with weights 0 and 63 among them.
    chip = Chip(seed, preset=preset)
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 64, (256, 256)).astype(np.uint8)
    weights[0], weights[1] = 0, 63
    bow = chip.truth.synapse_dac_bow[half]
    unit_rel = chip.effects.synapse_dac_unit_mismatch_rel
    w = weights.astype(np.float64)
    ref = w + bow * w * (63 - w) / 63
    bits = chip._effect_normals("synapse_dac_bits", (6,) + chip.truth.synapse_gain.shape)
    if unit_rel > 0:
        for i in range(6):
            ref = ref + ((weights >> i) & 1).astype(np.float64) * (2.0 ** i) * (unit_rel / np.sqrt(2.0 ** i)) \
                * bits[i, half]
        ref = np.maximum(ref, 0.0)
    got = np.empty((256, 256))
    K.synapse_dac_kernel(weights, bow, bits, half, float(unit_rel), 63, got)
    np.testing.assert_array_equal(got, ref)
    assert (unit_rel > 0) == (preset != "ideal")
    assert np.abs(got - w).max() > (1e-3 if preset != "ideal" else -1)   # the mismatch is in play
