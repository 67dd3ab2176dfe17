"""Private numba kernels of the analog integration of one chip half.

Internal units: time in ns, charge in fC, voltage in mV, current in uA
(uA x ns = fC), capacitance in pF (fC / pF = mV). The public functions in
:mod:`bss2sim.circuits.integrate` validate everything and convert from SI before any
kernel runs; nothing here checks its input.

State per column: ``xe``, ``xi`` (charge held on the excitatory / inhibitory
synaptic input, fC) and ``v`` (membrane, mV). Between events:

    dxe/dt = -lam_e xe + Ie_in(t)
    dv/dt  = gc_e lam_e f_e(xe) - gc_i lam_i f_i(xi) - lam_m (v - e_leak)

with ``f(x) = x`` up to the knee and a tanh approach to ``knee + headroom``
above it, and ``v`` held within the rails.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import constants as K
from .rng import add_normals, next_normal_box_muller, next_normal_pair as _normal_pair, next_uniform, \
    stream_key

# Rows of the per-column parameter pack (float64[NUM_COLUMN_PARAMS, columns]).
LAM_E, LAM_I, LAM_M, GC_E, GC_I, KNEE_E, KNEE_I, HEAD_E, HEAD_I, E_LEAK, V_RESET, \
    RAIL_LO, RAIL_HI, CADC_START, CADC_STEP, CADC_OFFSET, NOISE_MEM, NOISE_READ, \
    DIGITAL_OFFSET, CONV_AM, CONV_BE, CONV_BI, RESP_E, RESP_I, INV_STEP, LINEAR_OK, \
    QINJ_E, QINJ_I, NOISE_KTC, NOISE_CM, NOISE_LF, LF_SHARED, RIPPLE, PHASE_RESET, PHASE_LEAK, \
    PHASE_START = range(36)
NUM_COLUMN_PARAMS = 36
# RESP_E = gc_e lam_e / (lam_e - lam_m) (mV/fC), likewise RESP_I; INV_STEP = 1/CADC_STEP;
# QINJ_E / QINJ_I: charge each event injects into the column's inputs (fC);
# NOISE_KTC: kT/C noise of the reset (mV); NOISE_CM: rms of the quadrant's common
# conversion noise (mV), taken from the first column of the quadrant; NOISE_LF and
# LF_SHARED: slow noise (mV) and the variance fraction shared through the
# TrialNoise's shared seed; RIPPLE: capmem droop between refreshes (mV) with the
# reset, leak and ramp-start cells' phases PHASE_*.
# LINEAR_OK = 1 unless a synaptic rate equals the leak rate (then the closed form
# of pass 1 is degenerate and the column is always walked).

# Rows of the propagator tables: decay of (v - e_leak), of xe, of xi, and the
# membrane response to charge held on xe, on xi, after a given time.
T_AM, T_AE, T_AI, T_BE, T_BI = range(5)
NUM_TABLES = 5

CADC_LEVELS = 256
CADC_MAX_CODE = 255
_QUADRANT_COLUMNS = K.COLUMNS_PER_QUADRANT
_EFFECT_TAG = np.uint64(0x6566666563747321)
"""Tag ("effects!" in ASCII) of the stream of the shared noise draws."""

WALK_CYCLES = 5
"""Longest Runge-Kutta step (FPGA cycles, 40 ns) of a saturating column between events."""
CONVERT_TICKS_PER_STEP = 8
"""Ramp ticks (8 x 2.1 ns) per Runge-Kutta step of a saturating column's conversion."""
VECTORS_PER_BLOCK = 64
"""Vectors of the fast path that share one set of scratch arrays (one thread
runs a block); any value gives the same results."""


@njit(cache=True, inline="always")
def _knee(x, knee, head):
    """Effective charge of the saturating synaptic-input transconductance."""
    if x <= knee:
        return x
    return knee + head * np.tanh((x - knee) / head)


@njit(cache=True, inline="always")
def _derivs(xe, xi, v, ie_in, ii_in, lam_e, lam_i, lam_m, gce, gci, ke, ki, he, hi, el):
    dxe = -lam_e * xe + ie_in
    dxi = -lam_i * xi + ii_in
    dv = gce * lam_e * _knee(xe, ke, he) - gci * lam_i * _knee(xi, ki, hi) - lam_m * (v - el)
    return dxe, dxi, dv


@njit(cache=True, inline="always")
def rk4_step(xe, xi, v, ie_in, ii_in, dt, cp, c):
    """One classical Runge-Kutta step of one column, input currents constant
    over the step; the membrane is then held within its rails."""
    lam_e = cp[LAM_E, c]
    lam_i = cp[LAM_I, c]
    lam_m = cp[LAM_M, c]
    gce = cp[GC_E, c]
    gci = cp[GC_I, c]
    ke = cp[KNEE_E, c]
    ki = cp[KNEE_I, c]
    he = cp[HEAD_E, c]
    hi = cp[HEAD_I, c]
    el = cp[E_LEAK, c]
    a1, b1, c1 = _derivs(xe, xi, v, ie_in, ii_in, lam_e, lam_i, lam_m, gce, gci, ke, ki, he, hi, el)
    h = 0.5 * dt
    a2, b2, c2 = _derivs(xe + h * a1, xi + h * b1, v + h * c1, ie_in, ii_in,
                         lam_e, lam_i, lam_m, gce, gci, ke, ki, he, hi, el)
    a3, b3, c3 = _derivs(xe + h * a2, xi + h * b2, v + h * c2, ie_in, ii_in,
                         lam_e, lam_i, lam_m, gce, gci, ke, ki, he, hi, el)
    a4, b4, c4 = _derivs(xe + dt * a3, xi + dt * b3, v + dt * c3, ie_in, ii_in,
                         lam_e, lam_i, lam_m, gce, gci, ke, ki, he, hi, el)
    s = dt / 6.0
    xe = xe + s * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
    xi = xi + s * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
    v = v + s * (c1 + 2.0 * c2 + 2.0 * c3 + c4)
    if v < cp[RAIL_LO, c]:
        v = cp[RAIL_LO, c]
    elif v > cp[RAIL_HI, c]:
        v = cp[RAIL_HI, c]
    return xe, xi, v


@njit(cache=True, inline="always")
def _linear_safe(xe, xi, v, cp, c):
    """True when no trajectory from this state (without further input) can
    reach the knee or a rail: then the exact linear propagator is valid.
    Leak pulls towards e_leak, excitation adds at most gc_e xe, inhibition
    removes at most gc_i xi."""
    return _linear_safe_at(xe, xi, v, cp[E_LEAK, c], cp[KNEE_E, c], cp[KNEE_I, c], cp[GC_E, c], cp[GC_I, c],
                           cp[RAIL_HI, c], cp[RAIL_LO, c])


@njit(cache=True, inline="always")
def _linear_safe_at(xe, xi, v, el, knee_e, knee_i, gc_e, gc_i, rail_hi, rail_lo):
    """:func:`_linear_safe` with the column's values passed in."""
    top = max(v, el) + gc_e * xe
    bottom = min(v, el) - gc_i * xi
    # Branch-free (no early return), so the conversion's first pass vectorises.
    return (xe <= knee_e) & (xi <= knee_i) & (top < rail_hi) & (bottom > rail_lo)


@njit(cache=True)
def _far_entry(cp, row, n, c, cycle_ns):
    """Propagator table entry ``row`` of column c after ``n`` cycles, for the
    intervals beyond the tables: the same formula as the tables
    (``chip._propagators``), rounded to float32 as they are."""
    t = n * cycle_ns
    lam_m = cp[LAM_M, c]
    am = np.exp(-lam_m * t)
    if row == T_AM:
        return np.float32(am)
    exc = row == T_AE or row == T_BE
    lam = cp[LAM_E, c] if exc else cp[LAM_I, c]
    a = np.exp(-lam * t)
    if row == T_AE or row == T_AI:
        return np.float32(a)
    diff = lam - lam_m
    if abs(diff) <= 1e-6 * lam:
        b = lam * t * a
    else:
        b = lam / diff * (am - a)
    return np.float32((cp[GC_E, c] if exc else cp[GC_I, c]) * b)


@njit(cache=True, inline="always")
def _entry(tab, cp, row, n, c, cycle_ns):
    """Table entry where the tables reach (bit-identical to a table lookup),
    computed beyond them (intervals longer than ``tab.shape[1] - 1`` cycles)."""
    if n < tab.shape[1]:
        return tab[row, n, c]
    return _far_entry(cp, row, n, c, cycle_ns)


@njit(cache=True)
def _far_rows(cp, n, cycle_ns, out):
    """All columns' table rows after ``n`` cycles into ``out`` (5, columns)."""
    for r in range(NUM_TABLES):
        for c in range(out.shape[1]):
            out[r, c] = _far_entry(cp, r, n, c, cycle_ns)
    return out


@njit(cache=True, inline="always")
def _decay_rows(tab, cp, n, cycle_ns, far):
    """All columns' decays of xe, xi and (v - e_leak) after ``n`` cycles: table
    rows, or computed into ``far`` beyond the tables."""
    if n < tab.shape[1]:
        return tab[T_AE, n], tab[T_AI, n], tab[T_AM, n]
    _far_rows(cp, n, cycle_ns, far)
    return far[T_AE], far[T_AI], far[T_AM]


@njit(cache=True, inline="always")
def _propagate_exact(xe, xi, v, tab, n, c, el, cp, cycle_ns):
    am = _entry(tab, cp, T_AM, n, c, cycle_ns)
    v = el + (v - el) * am + xe * _entry(tab, cp, T_BE, n, c, cycle_ns) \
        - xi * _entry(tab, cp, T_BI, n, c, cycle_ns)
    xe = xe * _entry(tab, cp, T_AE, n, c, cycle_ns)
    xi = xi * _entry(tab, cp, T_AI, n, c, cycle_ns)
    return xe, xi, v


RK_COEFFS = 6
"""Coefficients of one Runge-Kutta step of a column below its knees (see
:func:`_rk4_linear_coefficients`)."""
RK_EE, RK_II, RK_VV, RK_VE, RK_VI, RK_V0 = range(RK_COEFFS)


@njit(cache=True)
def _rk4_linear_coefficients(cp, c, dt, out):
    """One classical Runge-Kutta step of ``dt`` ns of column c below both knees,
    as the affine map it is there: xe' = EE xe, xi' = II xi,
    v' = VV v + VE xe - VI xi + V0 (before the rails' clamp), into ``out``
    (``RK_COEFFS``). Below the knees the equations are linear, s' = M s + f, and
    a Runge-Kutta step is s + (Z + Z^2/2 + Z^3/6 + Z^4/24) s + dt (1 + Z/2 +
    Z^2/6 + Z^3/24) f with Z = dt M: the same step as :func:`rk4_step` up to
    rounding, in 6 multiply-adds instead of four derivative evaluations. M is
    lower triangular, so the membrane's entries are divided differences of that
    polynomial, summed term by term (no cancellation when rates are close)."""
    a = -cp[LAM_E, c] * dt
    b = -cp[LAM_I, c] * dt
    m = -cp[LAM_M, c] * dt
    out[RK_EE] = 1.0 + a * (1.0 + a * (0.5 + a * (1.0 / 6.0 + a / 24.0)))
    out[RK_II] = 1.0 + b * (1.0 + b * (0.5 + b * (1.0 / 6.0 + b / 24.0)))
    out[RK_VV] = 1.0 + m * (1.0 + m * (0.5 + m * (1.0 / 6.0 + m / 24.0)))
    for row, r, g in ((RK_VE, a, cp[GC_E, c] * cp[LAM_E, c] * dt), (RK_VI, b, cp[GC_I, c] * cp[LAM_I, c] * dt)):
        # sum over k of Z^k's (v, x) entry / k!: g times sum_{i<k} r^i m^(k-1-i) / k!.
        h1 = 1.0
        h2 = r + m
        h3 = r * r + r * m + m * m
        h4 = r * r * r + r * r * m + r * m * m + m * m * m
        out[row] = g * (h1 + h2 / 2.0 + h3 / 6.0 + h4 / 24.0)
    out[RK_V0] = cp[LAM_M, c] * dt * cp[E_LEAK, c] * (1.0 + m * (0.5 + m * (1.0 / 6.0 + m / 24.0)))


@njit(cache=True, inline="always")
def _propagate(xe, xi, v, n_cycles, tab, cp, c, cycle_ns, walk_cycles, rk, below_knee):
    """Advance one column by ``n_cycles`` without input: exact where linear,
    Runge-Kutta steps of at most ``walk_cycles`` cycles where it may saturate.
    The synaptic time constants (~320 ns) and the membrane's (~1 us) are long
    against a step of a few cycles (lam * h <= 0.15 for 40 ns), so one
    classical RK4 step per event interval keeps the local error near 1e-7.
    ``below_knee``: the column is proven to stay below its knees for the whole
    vector, so its steps are the affine maps ``rk[steps - 1, :, c]``
    (:func:`_rk4_linear_coefficients` of 1 .. ``walk_cycles`` cycles), the same
    steps to rounding."""
    remaining = n_cycles
    while remaining > 0:
        # Re-checked every step: once the column has decayed below the knee and
        # away from the rails, the rest of the interval is exact again.
        if _linear_safe(xe, xi, v, cp, c):
            return _propagate_exact(xe, xi, v, tab, remaining, c, cp[E_LEAK, c], cp, cycle_ns)
        step = walk_cycles if remaining > walk_cycles else remaining
        if below_knee:
            k = rk[step - 1]
            v = k[RK_VV, c] * v + k[RK_VE, c] * xe - k[RK_VI, c] * xi + k[RK_V0, c]
            xe = k[RK_EE, c] * xe
            xi = k[RK_II, c] * xi
            if v < cp[RAIL_LO, c]:
                v = cp[RAIL_LO, c]
            elif v > cp[RAIL_HI, c]:
                v = cp[RAIL_HI, c]
        else:
            xe, xi, v = rk4_step(xe, xi, v, 0.0, 0.0, step * cycle_ns, cp, c)
        remaining -= step
    return xe, xi, v


WALK_SIDE_BY_SIDE = 4
"""Columns walked below their knees together in one pass over the events
(:func:`_walk_below_knees`), so their dependency chains overlap. The walk is
written out for four columns (a register each for their states): this is its
group size, not a setting."""


@njit(cache=True, inline="always")
def _walk_event(xe, xi, v, n, tab, cp, c, cycle_ns, walk_cycles, rk):
    """:func:`_propagate` of column c by ``n`` cycles with ``below_knee``, the
    same arithmetic; an interval of at most one step within the tables (the
    usual spacing of events) is one choice instead of a branch: the exact
    propagation where the column is linear-safe, else one Runge-Kutta step
    held within the rails."""
    if n == 0:
        return xe, xi, v
    if n > walk_cycles or n >= tab.shape[1]:
        return _propagate(xe, xi, v, n, tab, cp, c, cycle_ns, walk_cycles, rk, True)
    r = n - 1
    safe = _linear_safe(xe, xi, v, cp, c)
    el = cp[E_LEAK, c]
    v_exact = el + (v - el) * tab[T_AM, n, c] + xe * tab[T_BE, n, c] - xi * tab[T_BI, n, c]
    v_step = rk[r, RK_VV, c] * v + rk[r, RK_VE, c] * xe - rk[r, RK_VI, c] * xi + rk[r, RK_V0, c]
    v_step = max(min(v_step, cp[RAIL_HI, c]), cp[RAIL_LO, c])
    return (xe * tab[T_AE, n, c] if safe else rk[r, RK_EE, c] * xe,
            xi * tab[T_AI, n, c] if safe else rk[r, RK_II, c] * xi,
            v_exact if safe else v_step)


@njit(cache=True, inline="always")
def _walk_constants(tab, cp, rk, n, c):
    """What one step of :func:`_walk_event` of column c over ``n`` cycles (at
    most one step, within the tables) reads, gathered once per walk for the
    vector's usual spacing: the linearity check's values, the table entries
    (float32, as the tables hold them) and the Runge-Kutta coefficients."""
    r = n - 1
    return (cp[E_LEAK, c], cp[KNEE_E, c], cp[KNEE_I, c], cp[GC_E, c], cp[GC_I, c], cp[RAIL_HI, c],
            cp[RAIL_LO, c], tab[T_AM, n, c], tab[T_AE, n, c], tab[T_AI, n, c], tab[T_BE, n, c],
            tab[T_BI, n, c], rk[r, RK_VV, c], rk[r, RK_VE, c], rk[r, RK_VI, c], rk[r, RK_V0, c],
            rk[r, RK_EE, c], rk[r, RK_II, c])


@njit(cache=True, inline="always")
def _walk_known(xe, xi, v, kc):
    """:func:`_walk_event` with the constants of :func:`_walk_constants`."""
    el = kc[0]
    safe = _linear_safe_at(xe, xi, v, el, kc[1], kc[2], kc[3], kc[4], kc[5], kc[6])
    v_exact = el + (v - el) * kc[7] + xe * kc[10] - xi * kc[11]
    v_step = kc[12] * v + kc[13] * xe - kc[14] * xi + kc[15]
    v_step = max(min(v_step, kc[5]), kc[6])
    return (xe * kc[8] if safe else kc[16] * xe, xi * kc[9] if safe else kc[17] * xi,
            v_exact if safe else v_step)


@njit(cache=True, inline="always")
def _walk_below_knees(lanes, m, offsets, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii, qe, qi, tab, cp,
                      cycle_ns, walk_cycles, rk, b, rc, xe_out, xi_out, v_out):
    """Walk vector b's events for the ``m`` columns ``lanes[:m]``, all proven
    below their knees (only a rail may be reached): the steps of
    :func:`_propagate` with ``below_knee``, the same bits, for
    ``WALK_SIDE_BY_SIDE`` columns in one pass over the events (a last group
    of fewer repeats its first column and discards the copies). The state at
    the read goes to ``xe_out``, ``xi_out``, ``v_out`` [column]."""
    k0 = offsets[b]
    k1 = offsets[b + 1]
    for g in range(0, m, WALK_SIDE_BY_SIDE):
        c0 = lanes[g]
        c1 = lanes[g + 1] if g + 1 < m else c0
        c2 = lanes[g + 2] if g + 2 < m else c0
        c3 = lanes[g + 3] if g + 3 < m else c0
        e0 = 0.0
        e1 = 0.0
        e2 = 0.0
        e3 = 0.0
        i0 = 0.0
        i1 = 0.0
        i2 = 0.0
        i3 = 0.0
        v0 = cp[V_RESET, c0]
        v1 = cp[V_RESET, c1]
        v2 = cp[V_RESET, c2]
        v3 = cp[V_RESET, c3]
        # The vector's usual spacing (that of its first two events): its steps'
        # constants are gathered once, so a step reads no table.
        usual = ev_cycle[k0 + 1] - ev_cycle[k0] if k1 - k0 >= 2 else 0
        if usual < 1 or usual > walk_cycles or usual >= tab.shape[1]:
            usual = 1
        kc0 = _walk_constants(tab, cp, rk, usual, c0)
        kc1 = _walk_constants(tab, cp, rk, usual, c1)
        kc2 = _walk_constants(tab, cp, rk, usual, c2)
        kc3 = _walk_constants(tab, cp, rk, usual, c3)
        prev = 0
        for k in range(k0, k1):
            n = ev_cycle[k] - prev
            if n == usual:
                e0, i0, v0 = _walk_known(e0, i0, v0, kc0)
                e1, i1, v1 = _walk_known(e1, i1, v1, kc1)
                e2, i2, v2 = _walk_known(e2, i2, v2, kc2)
                e3, i3, v3 = _walk_known(e3, i3, v3, kc3)
            else:
                e0, i0, v0 = _walk_event(e0, i0, v0, n, tab, cp, c0, cycle_ns, walk_cycles, rk)
                e1, i1, v1 = _walk_event(e1, i1, v1, n, tab, cp, c1, cycle_ns, walk_cycles, rk)
                e2, i2, v2 = _walk_event(e2, i2, v2, n, tab, cp, c2, cycle_ns, walk_cycles, rk)
                e3, i3, v3 = _walk_event(e3, i3, v3, n, tab, cp, c3, cycle_ns, walk_cycles, rk)
            prev = ev_cycle[k]
            w = ev_width[k]
            f = ev_inject[k]
            d = ev_driver[k]
            e0 += w * ie[d, c0] + f * qe[c0]
            i0 += w * ii[d, c0] + f * qi[c0]
            e1 += w * ie[d, c1] + f * qe[c1]
            i1 += w * ii[d, c1] + f * qi[c1]
            e2 += w * ie[d, c2] + f * qe[c2]
            i2 += w * ii[d, c2] + f * qi[c2]
            e3 += w * ie[d, c3] + f * qe[c3]
            i3 += w * ii[d, c3] + f * qi[c3]
        n = rc - prev
        xe_out[c0], xi_out[c0], v_out[c0] = _walk_event(e0, i0, v0, n, tab, cp, c0, cycle_ns, walk_cycles, rk)
        if g + 1 < m:
            xe_out[c1], xi_out[c1], v_out[c1] = _walk_event(e1, i1, v1, n, tab, cp, c1, cycle_ns, walk_cycles, rk)
        if g + 2 < m:
            xe_out[c2], xi_out[c2], v_out[c2] = _walk_event(e2, i2, v2, n, tab, cp, c2, cycle_ns, walk_cycles, rk)
        if g + 3 < m:
            xe_out[c3], xi_out[c3], v_out[c3] = _walk_event(e3, i3, v3, n, tab, cp, c3, cycle_ns, walk_cycles, rk)


@njit(cache=True, inline="always")
def _cadc_fires(v, m, cp, c, comparator_noise):
    """Comparator of channel c at ramp tick m: the count stops once the ramp
    passes the membrane (plus comparator offset and read noise)."""
    ramp = cp[CADC_START, c] + (m + 1) * cp[CADC_STEP, c]
    return ramp > v + cp[CADC_OFFSET, c] + comparator_noise


@njit(cache=True, inline="always")
def _finish_code(m, cp, c):
    """Tick count m plus the channel's digital offset, clamped to the 8-bit code
    (branch-free: the offset is integral, so the sum is exact)."""
    return np.int64(min(max(m + cp[DIGITAL_OFFSET, c], 0.0), np.float64(CADC_MAX_CODE)))


@njit(cache=True, inline="always")
def _conversion_window(xe, xi, v, cp, c, extra):
    """The ticks a linear column's conversion can end in: (base, u, first, last),
    with ``base`` the comparator's margin over the ramp's start (mV) and ``u``
    that margin in ramp steps, as the membrane stands at the read. The
    membrane's largest rise and fall during the whole ramp bound the tick from
    both sides; where ``first == last`` the code is settled without evaluating
    the membrane at any tick. Branch-free, so a loop over columns vectorises."""
    el = cp[E_LEAK, c]
    inv_step = cp[INV_STEP, c]
    base = v + cp[CADC_OFFSET, c] + extra - cp[CADC_START, c]
    u = base * inv_step
    rise = xe * cp[CONV_BE, c] + max(0.0, (el - v) * (1.0 - cp[CONV_AM, c]))
    fall = xi * cp[CONV_BI, c] + max(0.0, (v - el) * (1.0 - cp[CONV_AM, c]))
    lo = np.floor(u - fall * inv_step)
    hi = np.floor(u + rise * inv_step)
    # The comparator cannot fire before tick lo and fires at tick hi at the latest.
    first = np.int64(min(max(lo, 0.0), CADC_MAX_CODE))
    last = np.int64(min(max(hi, 0.0), CADC_MAX_CODE))
    return base, u, first, last


@njit(cache=True, inline="always")
def _convert_linear(xe, xi, v, ctab, cp, c, extra, tick_slope):
    """``ctab`` is laid out [column, tick, table row] so one column's search stays in cache.
    CADC conversion while the column evolves linearly: the first tick at which
    the comparator fires, within the bounds the membrane's largest rise and
    fall during the ramp allow.

    ``tick_slope`` (columns, 3): the largest change per ramp tick of the three
    table rows (AM, BE, BI). Where they bound the membrane's change per tick
    below half a ramp step, the comparator, once fired, stays fired: the
    search then starts at the tick where the ramp passes the membrane as it
    stands there and walks one way (two or three evaluations). Otherwise the
    ticks are scanned from the earliest possible one. Both give the same tick."""
    el = cp[E_LEAK, c]
    inv_step = cp[INV_STEP, c]
    base, u, first, last = _conversion_window(xe, xi, v, cp, c, extra)
    if last - first <= 2:
        for m in range(first, last):
            vm = el + (v - el) * ctab[c, m, T_AM] + xe * ctab[c, m, T_BE] - xi * ctab[c, m, T_BI]
            if _cadc_fires(vm, m, cp, c, extra):
                return m
        return last
    per_tick = abs(v - el) * tick_slope[c, 0] + abs(xe) * tick_slope[c, 1] + abs(xi) * tick_slope[c, 2]
    if per_tick >= 0.5 * cp[CADC_STEP, c]:
        for m in range(first, last):
            vm = el + (v - el) * ctab[c, m, T_AM] + xe * ctab[c, m, T_BE] - xi * ctab[c, m, T_BI]
            if _cadc_fires(vm, m, cp, c, extra):
                return m
        return last
    # Monotone: start where the ramp passes the membrane at the static estimate.
    m0 = np.int64(min(max(np.floor(u), np.float64(first)), np.float64(last - 1)))
    vm = el + (v - el) * ctab[c, m0, T_AM] + xe * ctab[c, m0, T_BE] - xi * ctab[c, m0, T_BI]
    guess = np.floor((vm - v + base) * inv_step)
    m = np.int64(min(max(guess, np.float64(first)), np.float64(last)))
    if m < last:
        vm = el + (v - el) * ctab[c, m, T_AM] + xe * ctab[c, m, T_BE] - xi * ctab[c, m, T_BI]
        if _cadc_fires(vm, m, cp, c, extra):
            while m > first:
                vm = el + (v - el) * ctab[c, m - 1, T_AM] + xe * ctab[c, m - 1, T_BE] \
                    - xi * ctab[c, m - 1, T_BI]
                if not _cadc_fires(vm, m - 1, cp, c, extra):
                    break
                m -= 1
            return m
        m += 1
    while m < last:
        vm = el + (v - el) * ctab[c, m, T_AM] + xe * ctab[c, m, T_BE] - xi * ctab[c, m, T_BI]
        if _cadc_fires(vm, m, cp, c, extra):
            return m
        m += 1
    return last


@njit(cache=True)
def _convert_stepped(xe, xi, v, cp, c, extra, tick_ns, ticks_per_step):
    """CADC conversion of a saturating column: one Runge-Kutta step per
    ``ticks_per_step`` ramp ticks, the membrane interpolated linearly between
    steps for the comparator (it moves slowly against a step of ~17 ns)."""
    dt = tick_ns * ticks_per_step
    v_prev = v
    base = 0
    xe, xi, v = rk4_step(xe, xi, v, 0.0, 0.0, dt, cp, c)
    for m in range(CADC_MAX_CODE):
        if m - base > ticks_per_step:
            base += ticks_per_step
            v_prev = v
            xe, xi, v = rk4_step(xe, xi, v, 0.0, 0.0, dt, cp, c)
        vm = v_prev + (m - base) / ticks_per_step * (v - v_prev)
        if _cadc_fires(vm, m, cp, c, extra):
            return m
    return CADC_MAX_CODE


@njit(cache=True)
def synapse_dac_kernel(weights, bow, bits, half, unit_rel, weight_max, out):
    """Output of each synapse's current DAC of one half in LSB currents, into
    ``out`` (rows, columns): the 6-bit weight ``w`` with its bow,
    ``w + bow w (weight_max - w) / weight_max``, and where ``unit_rel`` > 0 the
    mismatch of the binary-weighted sources, each set bit i adding
    ``2^i unit_rel / sqrt(2^i)`` times its standard normal ``bits[i, half]``,
    floored at zero. The arithmetic of the plain numpy expression, in its
    order, compiled: a few passes over the synapses instead of numpy's
    temporaries for every term."""
    rows, cols = weights.shape
    for r in range(rows):
        for c in range(cols):
            w = np.float64(weights[r, c])
            out[r, c] = w + bow[r, c] * w * (weight_max - w) / weight_max
    if unit_rel > 0:
        # Bit by bit over all synapses (contiguous, so the loops vectorise); each
        # synapse still adds its terms in bit order.
        for i in range(bits.shape[0]):
            sources = 2.0 ** i
            spread = unit_rel / np.sqrt(2.0 ** i)
            for r in range(rows):
                for c in range(cols):
                    on = np.float64((weights[r, c] >> i) & 1)
                    out[r, c] = out[r, c] + on * sources * spread * bits[i, half, r, c]
        for r in range(rows):
            for c in range(cols):
                out[r, c] = max(out[r, c], 0.0)


@njit(cache=True, parallel=True)
def pulse_widths_kernel(driver, value, width_table, out):
    """Pulse width of each event, ``width_table[driver, value]`` (ns), into ``out``."""
    for k in prange(driver.shape[0]):
        out[k] = width_table[driver[k], value[k]]


@njit(cache=True)
def longest_interval_kernel(offsets, cycle, read_cycle):
    """Longest interval (FPGA cycles, at least 1) between two events of a vector,
    or from a vector's last event to its read ``read_cycle[b]``; one pass."""
    longest = 1
    for b in range(offsets.shape[0] - 1):
        k0 = offsets[b]
        k1 = offsets[b + 1]
        if k1 > k0:
            tail = read_cycle[b] - cycle[k1 - 1]
            if tail > longest:
                longest = tail
            for k in range(k0 + 1, k1):
                gap = cycle[k] - cycle[k - 1]
                if gap > longest:
                    longest = gap
    return longest


@njit(cache=True, parallel=True)
def recovery_kernel(offsets, driver, cycle, width, depth, tau_cycles, num_drivers, out):
    """Pulse widths after driver recovery (see ``integrate.recovered_widths``):
    per vector, each driver remembers the cycle of its last pulse. Vectors run
    in blocks that share one memory of last pulses, cleared after each vector
    (only the drivers it used), so many short vectors cost no allocations."""
    num_vectors = offsets.shape[0] - 1
    num_blocks = (num_vectors + VECTORS_PER_BLOCK - 1) // VECTORS_PER_BLOCK
    for blk in prange(num_blocks):
        last = np.full(num_drivers, -1, np.int64)
        known_gap = -1
        kept = 1.0
        for b in range(blk * VECTORS_PER_BLOCK, min(num_vectors, (blk + 1) * VECTORS_PER_BLOCK)):
            for k in range(offsets[b], offsets[b + 1]):
                d = driver[k]
                w = np.float64(width[k])
                if last[d] >= 0:
                    gap = cycle[k] - last[d]
                    if gap != known_gap:
                        # Trains mostly repeat one spacing: one exponential per spacing.
                        known_gap = gap
                        kept = 1.0 - depth * np.exp(-gap / tau_cycles)
                    w *= kept
                last[d] = cycle[k]
                out[k] = w
            for k in range(offsets[b], offsets[b + 1]):
                last[driver[k]] = -1


@njit(cache=True, inline="always")
def _saw(x):
    """Fractional part: the phase of a capmem cell in its refresh cycle."""
    return x - np.floor(x)


@njit(cache=True, inline="always")
def _scalar_peak(offsets, ev_width, ev_cycle, b, lam):
    """Peak over the events of vector b of the running width sum
    sum_j w_j exp(-lam (t_k - t_j)): with the slowest decay rate of the half and
    each column's largest driver current, it bounds every column's peak charge."""
    run = 0.0
    peak = 0.0
    last = 0
    known_gap = -1
    decay = 1.0
    for k in range(offsets[b], offsets[b + 1]):
        gap = ev_cycle[k] - last
        if gap != known_gap:
            known_gap = gap
            decay = np.exp(-lam * gap)
        run = run * decay + ev_width[k]
        last = ev_cycle[k]
        if run > peak:
            peak = run
    return peak


@njit(cache=True)
def _column_peak(offsets, ev_driver, ev_cycle, ev_width, ev_inject, cur_t, q, lam_cycle, b, c):
    """Exact peak of the charge held on one synaptic input of one column
    (``cur_t`` is the current matrix transposed: [column, driver]; ``q`` the
    charge each event with ``ev_inject`` 1 injects)."""
    run = 0.0
    peak = 0.0
    last = 0
    cur_c = cur_t[c]
    known_gap = -1
    decay = 1.0
    for k in range(offsets[b], offsets[b + 1]):
        gap = ev_cycle[k] - last
        if gap != known_gap:
            # Schedules mostly repeat one spacing: one exponential per column.
            known_gap = gap
            decay = np.exp(-lam_cycle * gap)
        run *= decay
        run += ev_width[k] * cur_c[ev_driver[k]] + ev_inject[k] * q
        last = ev_cycle[k]
        if run > peak:
            peak = run
    return peak


@njit(cache=True)
def _column_excursion(offsets, ev_driver, ev_width, ev_inject, ie_t, ii_t, qe, qi, gce, gci, b, c):
    """Largest and smallest running difference gc_e * (excitatory charge arrived)
    - gc_i * (inhibitory charge arrived) over the events of vector b, column c.
    The membrane's excursion lies within these plus the charge still held on the
    inputs: a bound on reaching the rails that is tight when exc and inh mix."""
    run = 0.0
    hi = 0.0
    lo = 0.0
    ie_c = ie_t[c]
    ii_c = ii_t[c]
    for k in range(offsets[b], offsets[b + 1]):
        d = ev_driver[k]
        run += ev_width[k] * (gce * ie_c[d] - gci * ii_c[d]) + ev_inject[k] * (gce * qe - gci * qi)
        if run > hi:
            hi = run
        elif run < lo:
            lo = run
    return hi, lo


@njit(cache=True)
def _shared_noise(extra, cp, lf_scale, noise_on, seed, shared_seed, index, state):
    """Add to ``extra`` (the comparator's noise, mV, per column) what the
    columns share: the quadrant's common conversion noise and the shared part
    of the slow noise (``lf_scale``, from :func:`_lf_scale`, times the c-th
    normal of the TrialNoise's shared stream). The slow noise's own part is
    independent per column and read, so the callers add it to their per-column
    Gaussian.
    Returns the read's capmem refresh phase (uniform in [0, 1); 0 with noise
    off). Drawn from streams of their own, so the draws do not depend on how
    many columns run; both paths call this with the same arguments and get the
    same values."""
    ncol = extra.shape[0]
    if noise_on:
        # ``state``: a length-1 uint64 scratch array of the caller's.
        state[0] = stream_key(seed ^ _EFFECT_TAG, index)
        q0, q1 = _normal_pair(state)
        u = next_uniform(state)
        for c in range(ncol):
            extra[c] += cp[NOISE_CM, c] * (q0 if c < _QUADRANT_COLUMNS else q1)
        if ncol > 0 and cp[NOISE_LF, 0] > 0.0:
            state[0] = stream_key(shared_seed, index)     # the effect stream is done with
            add_normals(state, extra, lf_scale)
    else:
        u = 0.0
    return u


@njit(cache=True)
def _lf_scale(cp):
    """Per column: the scale of the slow noise's shared part, ``sqrt(LF_SHARED)
    NOISE_LF`` (mV per standard normal)."""
    out = np.empty(cp.shape[1])
    for c in range(cp.shape[1]):
        out[c] = cp[NOISE_LF, c] * np.sqrt(cp[LF_SHARED, c])
    return out


@njit(cache=True, inline="always")
def _own_slow_variance(cp, c):
    """Variance (mV^2) of the slow noise's own part, independent per column."""
    return (1.0 - cp[LF_SHARED, c]) * cp[NOISE_LF, c] ** 2


@njit(cache=True)
def _ripple_at_comparator(extra, cp, am, u, v_read_row):
    """The capmem droop of the reset, leak and ramp-start cells at refresh
    phase ``u``, exact where the column is linear: a lower reset or leak
    potential lowers the membrane at the read (``v_read_row``, mV, and the
    comparator's input), a lower ramp start makes the ramp pass it later."""
    for c in range(extra.shape[0]):
        r = cp[RIPPLE, c]
        if r > 0.0:
            a = np.float64(am[c])
            mem = -r * (a * _saw(u + cp[PHASE_RESET, c]) + (1.0 - a) * _saw(u + cp[PHASE_LEAK, c]))
            # A membrane held at a rail is not moved by the droop of its potentials.
            if cp[RAIL_LO, c] < v_read_row[c] < cp[RAIL_HI, c]:
                v_read_row[c] = min(max(v_read_row[c] + mem, cp[RAIL_LO, c]), cp[RAIL_HI, c])
            else:
                mem = 0.0
            extra[c] += mem + r * _saw(u + cp[PHASE_START, c])


MIN_PERIODIC_SENDS = 3
"""Sends from which a repeated vector's later sends are summed geometrically
instead of swept event by event (with two, both are swept anyway)."""


@njit(cache=True)
def _periodic_stream(offsets, ev_driver, ev_cycle, ev_width, ev_inject, b, ntab):
    """(n, sends, gap) when vector b's events are one block of n events sent
    ``sends`` >= MIN_PERIODIC_SENDS times back to back, every event ``gap``
    cycles after the one before (gap within the tables), and every send after
    the first equal to the second in drivers, widths and injection (the first
    may differ: its drivers had recovered fully); else (0, 0, 0). A block ends
    where the driver order restarts (a send lists its drivers in increasing
    order)."""
    k0 = offsets[b]
    num = offsets[b + 1] - k0
    if num < 2 * MIN_PERIODIC_SENDS:
        return 0, 0, 0
    gap = ev_cycle[k0 + 1] - ev_cycle[k0]
    if gap < 1 or gap >= ntab:
        return 0, 0, 0
    n = num
    for k in range(k0 + 1, k0 + num):
        if ev_driver[k] <= ev_driver[k - 1]:
            n = k - k0
            break
    if num % n != 0 or num // n < MIN_PERIODIC_SENDS:
        return 0, 0, 0
    for k in range(k0 + 1, k0 + num):
        if ev_cycle[k] - ev_cycle[k - 1] != gap:
            return 0, 0, 0
    for k in range(k0 + n, k0 + 2 * n):
        if ev_driver[k] != ev_driver[k - n]:
            return 0, 0, 0
    for k in range(k0 + 2 * n, k0 + num):
        if ev_driver[k] != ev_driver[k - n] or ev_width[k] != ev_width[k - n] \
                or ev_inject[k] != ev_inject[k - n]:
            return 0, 0, 0
    return n, num // n, gap


@njit(cache=True, inline="always")
def _power_and_sum(a, m):
    """(a**m, 1 + a + ... + a**(m - 1)) by repeated squaring (float64)."""
    p = 1.0
    g = 0.0
    bp = a
    bg = 1.0
    while m > 0:
        if m & 1:
            g = g * bp + bg
            p = p * bp
        bg = bg * bp + bg
        bp = bp * bp
        m >>= 1
    return p, g


@njit(cache=True, inline="always")
def _repeat_sends(st, st2, tab, gap, n, sends):
    """State at the last event of ``sends`` sends, from ``st`` (the first send
    alone, at its last event) and ``st2`` (one later send alone): each send
    decays by a**n (a the decay over one gap) until the end, so the total is
    st a**(n (sends-1)) + st2 (1 + a**n + ... + a**(n (sends-2)))."""
    for c in range(st.shape[1]):
        pe, ge = _power_and_sum(_power_and_sum(np.float64(tab[T_AE, gap, c]), n)[0], sends - 1)
        pi, gi = _power_and_sum(_power_and_sum(np.float64(tab[T_AI, gap, c]), n)[0], sends - 1)
        pm, gm = _power_and_sum(_power_and_sum(np.float64(tab[T_AM, gap, c]), n)[0], sends - 1)
        st[0, c] = np.float32(st[0, c] * pe + st2[0, c] * ge)
        st[1, c] = np.float32(st[1, c] * pi + st2[1, c] * gi)
        st[2, c] = np.float32(st[2, c] * pm + st2[2, c] * gm)
        st[3, c] = np.float32(st[3, c] * pm + st2[3, c] * gm)


@njit(cache=True, inline="always")
def _scalar_peak_periodic(offsets, ev_width, b, lam, n, sends, gap):
    """:func:`_scalar_peak` of a vector sent ``sends`` times (see
    :func:`_periodic_stream`), from two sends: within send j > 1 the running sum
    at its i-th event is (that send's prefix from zero) + decay**(i + 1) x (the
    sum at the end of send j - 1), and the sums at the ends of sends approach
    their limit monotonically, so the largest is at the first or the last."""
    k0 = offsets[b]
    decay = np.exp(-lam * gap)
    run = 0.0
    peak = 0.0
    for k in range(k0, k0 + n):
        run = run * decay + ev_width[k]
        if run > peak:
            peak = run
    first_end = run
    run = 0.0
    for k in range(k0 + n, k0 + 2 * n):
        run = run * decay + ev_width[k]
    p, g = _power_and_sum(_power_and_sum(decay, n)[0], sends - 2)
    run = max(first_end, first_end * p + run * g)
    for k in range(k0 + n, k0 + 2 * n):
        run = run * decay + ev_width[k]
        if run > peak:
            peak = run
    return peak


@njit(cache=True)
def _column_peak_periodic(offsets, ev_driver, ev_width, ev_inject, cur_t, q, lam_cycle, b, c, n, sends,
                          gap):
    """:func:`_column_peak` of a vector sent ``sends`` times, from two sends (as
    :func:`_scalar_peak_periodic`)."""
    k0 = offsets[b]
    cur_c = cur_t[c]
    decay = np.exp(-lam_cycle * gap)
    run = 0.0
    peak = 0.0
    for k in range(k0, k0 + n):
        run = run * decay + (ev_width[k] * cur_c[ev_driver[k]] + ev_inject[k] * q)
        if run > peak:
            peak = run
    first_end = run
    run = 0.0
    for k in range(k0 + n, k0 + 2 * n):
        run = run * decay + (ev_width[k] * cur_c[ev_driver[k]] + ev_inject[k] * q)
    p, g = _power_and_sum(_power_and_sum(decay, n)[0], sends - 2)
    run = max(first_end, first_end * p + run * g)
    for k in range(k0 + n, k0 + 2 * n):
        run = run * decay + (ev_width[k] * cur_c[ev_driver[k]] + ev_inject[k] * q)
        if run > peak:
            peak = run
    return peak


@njit(cache=True)
def _column_excursion_periodic(offsets, ev_driver, ev_width, ev_inject, ie_t, ii_t, qe, qi, gce, gci, b, c,
                               n, sends):
    """:func:`_column_excursion` of a vector sent ``sends`` times, from two
    sends: send j > 1 starts where the first ended plus j - 2 later sends'
    totals, so its extremes are the second send's prefix extremes shifted by
    that, largest (smallest) at j = 2 or j = sends."""
    k0 = offsets[b]
    ie_c = ie_t[c]
    ii_c = ii_t[c]
    inj = gce * qe - gci * qi
    run = 0.0
    hi = 0.0
    lo = 0.0
    for k in range(k0, k0 + n):
        d = ev_driver[k]
        run += ev_width[k] * (gce * ie_c[d] - gci * ii_c[d]) + ev_inject[k] * inj
        if run > hi:
            hi = run
        elif run < lo:
            lo = run
    first_end = run
    run = 0.0
    hi2 = 0.0
    lo2 = 0.0
    for k in range(k0 + n, k0 + 2 * n):
        d = ev_driver[k]
        run += ev_width[k] * (gce * ie_c[d] - gci * ii_c[d]) + ev_inject[k] * inj
        if run > hi2:
            hi2 = run
        elif run < lo2:
            lo2 = run
    later = (sends - 2) * run                 # what the sends between add
    hi = max(hi, first_end + hi2 + max(later, 0.0))
    lo = min(lo, first_end + lo2 + min(later, 0.0))
    return hi, lo


@njit(cache=True, inline="always")
def _sweep(st, k, k_end, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii, qe, qi, tab, cp, cycle_ns,
           far_gap):
    """Events k .. k_end - 1 of one vector, from a zero state, into ``st``
    (run_e, run_i, mem_e, mem_i per column, float32; overwritten); returns the
    cycle of the last event (0, ``st`` untouched, without events). Two events per sweep over the columns
    (four where their spacings are equal, as in every schedule with one wait)
    cut the state and table traffic; the arithmetic is the same sequence as one
    event at a time."""
    ncol = st.shape[1]
    ntab = tab.shape[1]
    last = 0
    if k < k_end:
        # Nothing to decay before the first event (whatever its distance).
        w1 = ev_width[k]
        f1 = ev_inject[k]
        ie1 = ie[ev_driver[k]]
        ii1 = ii[ev_driver[k]]
        for c in range(ncol):
            pe1 = w1 * ie1[c] + f1 * qe[c]
            pi1 = w1 * ii1[c] + f1 * qi[c]
            st[0, c] = pe1
            st[1, c] = pi1
            st[2, c] = pe1
            st[3, c] = pi1
        last = ev_cycle[k]
        k += 1
    while k < k_end:
        gap1 = ev_cycle[k] - last
        gap2 = ev_cycle[k + 1] - ev_cycle[k] if k + 1 < k_end else 0
        if k + 1 == k_end or gap1 >= ntab or gap2 >= ntab:
            # The last event, or an interval beyond the tables: one event alone.
            w1 = ev_width[k]
            f1 = ev_inject[k]
            last = ev_cycle[k]
            ie1 = ie[ev_driver[k]]
            ii1 = ii[ev_driver[k]]
            ge1, gi1, gm1 = _decay_rows(tab, cp, gap1, cycle_ns, far_gap)
            for c in range(ncol):
                pe1 = w1 * ie1[c] + f1 * qe[c]
                pi1 = w1 * ii1[c] + f1 * qi[c]
                st[0, c] = st[0, c] * ge1[c] + pe1
                st[1, c] = st[1, c] * gi1[c] + pi1
                st[2, c] = st[2, c] * gm1[c] + pe1
                st[3, c] = st[3, c] * gm1[c] + pi1
            k += 1
            continue
        if k + 3 < k_end and gap2 == gap1 and ev_cycle[k + 2] - ev_cycle[k + 1] == gap1 \
                and ev_cycle[k + 3] - ev_cycle[k + 2] == gap1:
            w1 = ev_width[k]
            w2 = ev_width[k + 1]
            w3 = ev_width[k + 2]
            w4 = ev_width[k + 3]
            f1 = ev_inject[k]
            f2 = ev_inject[k + 1]
            f3 = ev_inject[k + 2]
            f4 = ev_inject[k + 3]
            last = ev_cycle[k + 3]
            ie1 = ie[ev_driver[k]]
            ii1 = ii[ev_driver[k]]
            ie2 = ie[ev_driver[k + 1]]
            ii2 = ii[ev_driver[k + 1]]
            ie3 = ie[ev_driver[k + 2]]
            ii3 = ii[ev_driver[k + 2]]
            ie4 = ie[ev_driver[k + 3]]
            ii4 = ii[ev_driver[k + 3]]
            ge = tab[T_AE, gap1]
            gi = tab[T_AI, gap1]
            gm = tab[T_AM, gap1]
            for c in range(ncol):
                pe1 = w1 * ie1[c] + f1 * qe[c]
                pi1 = w1 * ii1[c] + f1 * qi[c]
                pe2 = w2 * ie2[c] + f2 * qe[c]
                pi2 = w2 * ii2[c] + f2 * qi[c]
                pe3 = w3 * ie3[c] + f3 * qe[c]
                pi3 = w3 * ii3[c] + f3 * qi[c]
                pe4 = w4 * ie4[c] + f4 * qe[c]
                pi4 = w4 * ii4[c] + f4 * qi[c]
                a = ge[c]
                st[0, c] = (((st[0, c] * a + pe1) * a + pe2) * a + pe3) * a + pe4
                a = gi[c]
                st[1, c] = (((st[1, c] * a + pi1) * a + pi2) * a + pi3) * a + pi4
                a = gm[c]
                st[2, c] = (((st[2, c] * a + pe1) * a + pe2) * a + pe3) * a + pe4
                st[3, c] = (((st[3, c] * a + pi1) * a + pi2) * a + pi3) * a + pi4
            k += 4
            continue
        w1 = ev_width[k]
        w2 = ev_width[k + 1]
        f1 = ev_inject[k]
        f2 = ev_inject[k + 1]
        last = ev_cycle[k + 1]
        ie1 = ie[ev_driver[k]]
        ii1 = ii[ev_driver[k]]
        ie2 = ie[ev_driver[k + 1]]
        ii2 = ii[ev_driver[k + 1]]
        ge1 = tab[T_AE, gap1]
        gi1 = tab[T_AI, gap1]
        gm1 = tab[T_AM, gap1]
        ge2 = tab[T_AE, gap2]
        gi2 = tab[T_AI, gap2]
        gm2 = tab[T_AM, gap2]
        for c in range(ncol):
            pe1 = w1 * ie1[c] + f1 * qe[c]
            pi1 = w1 * ii1[c] + f1 * qi[c]
            pe2 = w2 * ie2[c] + f2 * qe[c]
            pi2 = w2 * ii2[c] + f2 * qi[c]
            st[0, c] = (st[0, c] * ge1[c] + pe1) * ge2[c] + pe2
            st[1, c] = (st[1, c] * gi1[c] + pi1) * gi2[c] + pi2
            st[2, c] = (st[2, c] * gm1[c] + pe1) * gm2[c] + pe2
            st[3, c] = (st[3, c] * gm1[c] + pi1) * gm2[c] + pi2
        k += 2
    return last


@njit(cache=True, inline="always")
def _charge_bounds(st, c, growth, width_sum, inject_sum, cur_max_e, cur_max_i, qe, qi, peak_e, peak_i,
                   peak_ne, peak_ni):
    """Column c's bounds on the charge its inputs take in (fC): the leak-free
    total (exc, inh) and the peak held at once (exc, inh)."""
    if width_sum > 0.0:
        tot_e = cur_max_e[c] * width_sum + qe[c] * inject_sum
        tot_i = cur_max_i[c] * width_sum + qi[c] * inject_sum
    else:
        tot_e = st[2, c] * growth
        tot_i = st[3, c] * growth
    # Injected charge: at most q per event, so its peak is at most q times the
    # peak of the decayed event count.
    be = cur_max_e[c] * peak_e + qe[c] * peak_ne
    bi = cur_max_i[c] * peak_i + qi[c] * peak_ni
    return tot_e, tot_i, be, bi


@njit(cache=True)
def _read_constants(cp, am_rc, t0, v_free, sigma):
    """What a read at ``t0`` ns after the reset (leak decay ``am_rc``) gives
    every vector alike, per column: the membrane relaxed from the reset towards
    the leak (mV, into ``v_free``), and the spread of the comparator's Gaussian
    (mV, into ``sigma``): the membrane noise integrated from the reset (an
    Ornstein-Uhlenbeck variance), the read noise, the reset's kT/C sample
    (decaying with the leak like any start offset) and the slow noise's own part."""
    for c in range(cp.shape[1]):
        el = cp[E_LEAK, c]
        v_free[c] = el + (cp[V_RESET, c] - el) * am_rc[c]
        lam_m = cp[LAM_M, c]
        a = np.float64(am_rc[c])
        small = lam_m * t0 < 1e-6
        var_mem = cp[NOISE_MEM, c] ** 2 * (t0 if small else (1.0 - a * a) / (2.0 * (lam_m + 1e-300)))
        var_ktc = (cp[NOISE_KTC, c] * a) ** 2
        sigma[c] = np.sqrt(var_mem + cp[NOISE_READ, c] ** 2 + var_ktc + _own_slow_variance(cp, c))


@njit(cache=True, parallel=True, error_model="numpy")
def integrate_fast_kernel(offsets, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii, ie_t, ii_t, cp, tab,
                          ctab, cur_max_e, cur_max_i, lam_slow_e, lam_slow_i, lam_m_max,
                          read_cycle, am_read, read_slot, cycle_ns, tick_ns, walk_cycles, noise_on, seed,
                          shared_seed, first_index, tick_slope, codes, v_read, stepped):
    """Event-driven fast path for a batch of vectors of one half.

    Pass 1 (all columns, vectorised over columns): per event, the charge held on
    each synaptic input decays and jumps (``run``), and a leak-weighted charge
    sum (``mem``) follows the membrane leak. At the read both give the exact
    linear state: x = run * A(gap), and the membrane moves by
    gc lam / (lam - lam_m) * (mem * Am(gap) - x).
    Linearity is proven per column: the peak synaptic charge stays below the
    knee (a per-vector scalar bound first, the exact per-column peak only where
    the bound fails) and the membrane cannot reach a rail even if all
    excitation (inhibition) arrived at once.
    Pass 2 (only columns not proven linear): walk that column's events with
    exact intervals where possible and Runge-Kutta steps where it saturates.
    ``am_read[read_slot[b]]``: the leak's decay from the reset to vector b's
    read (float32, as the tables hold it).
    """
    num_vectors = offsets.shape[0] - 1
    ncol = ie.shape[1]
    qe = cp[QINJ_E]
    qi = cp[QINJ_I]
    # The event sweep runs in float32 throughout (8 columns per AVX2 instruction):
    # its state is float32 anyway, and float64 injection charges would widen it.
    qe32 = qe.astype(np.float32)
    qi32 = qi.astype(np.float32)
    want_v = v_read.shape[0] > 0
    # Per-column constants of the bounds, hoisted out of the vector loop.
    v_top = np.empty(ncol)           # where the membrane starts and relaxes: max, min of reset and leak
    v_bottom = np.empty(ncol)
    knee_e = np.empty(ncol)          # the knees with the bounds' margin
    knee_i = np.empty(ncol)
    linear_ok = np.empty(ncol, np.bool_)
    status_idle = np.empty(ncol, np.int8)   # status of a vector without events
    for c in range(ncol):
        el = cp[E_LEAK, c]
        v0 = cp[V_RESET, c]
        v_top[c] = v0 if v0 > el else el
        v_bottom[c] = v0 if v0 < el else el
        knee_e[c] = 0.999 * cp[KNEE_E, c]
        knee_i[c] = 0.999 * cp[KNEE_I, c]
        linear_ok[c] = cp[LINEAR_OK, c] > 0.0
        status_idle[c] = 0 if linear_ok[c] and v_top[c] < cp[RAIL_HI, c] and v_bottom[c] > cp[RAIL_LO, c] \
            else 2
    # Runge-Kutta steps of 1 .. walk_cycles cycles below the knees, as affine maps.
    rk_lin = np.empty((walk_cycles, RK_COEFFS, ncol))
    for c in range(ncol):
        for n in range(walk_cycles):
            _rk4_linear_coefficients(cp, c, (n + 1) * cycle_ns, rk_lin[n, :, c])
    lf_scale = _lf_scale(cp)
    # Vectors run in blocks: each block's scratch arrays are allocated once and
    # reused (an allocation costs about as much as a column's arithmetic). A
    # vector's values never depend on its block: every array is reset or
    # overwritten before it is read.
    num_blocks = (num_vectors + VECTORS_PER_BLOCK - 1) // VECTORS_PER_BLOCK
    for blk in prange(num_blocks):
        st = np.empty((4, ncol), np.float32)   # run_e, run_i, mem_e, mem_i
        st2 = np.empty((4, ncol), np.float32)  # the same for one later send alone
        v_row = np.empty(ncol)                 # membrane at the read, mV
        # Table rows of intervals beyond the tables (long waits), computed.
        far_gap = np.empty((NUM_TABLES, ncol), np.float32)
        far_tail = np.empty((NUM_TABLES, ncol), np.float32)
        xe = np.empty(ncol)
        xi = np.empty(ncol)
        v = np.empty(ncol)
        status = np.empty(ncol, np.int8)   # 0 linear, 1 knee to check, 3 rails to check, 2 walk,
                                           # 4 walk below the knees (then 2)
        extra = np.empty(ncol)
        how = np.empty(ncol, np.int8)          # conversion: 0 settled without a search, 1 search, 2 stepped
        lanes = np.empty(ncol, np.int64)       # the columns walked below their knees
        state = np.zeros(1, np.uint64)
        # What depends only on the read cycle (slot): the relaxed membrane and the
        # spread of the comparator's Gaussian, recomputed when the slot changes.
        v_free = np.empty(ncol)
        sigma = np.empty(ncol)
        cached_slot = -1
        for b in range(blk * VECTORS_PER_BLOCK, min(num_vectors, (blk + 1) * VECTORS_PER_BLOCK)):
            st[:] = 0.0
            rc = read_cycle[b]
            k0 = offsets[b]
            n_block, n_sends, gap = _periodic_stream(offsets, ev_driver, ev_cycle, ev_width, ev_inject, b,
                                                     tab.shape[1])
            if n_block == 0:
                last = _sweep(st, k0, offsets[b + 1], ev_driver, ev_cycle, ev_width, ev_inject,
                              ie, ii, qe32, qi32, tab, cp, cycle_ns, far_gap)
            else:
                # A vector sent n_sends times at one spacing: the first send and one
                # later send (the later sends are alike: their drivers recovered
                # alike) are swept, the others follow as a geometric sum.
                _sweep(st, k0, k0 + n_block, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii,
                       qe32, qi32, tab, cp, cycle_ns, far_gap)
                _sweep(st2, k0 + n_block, k0 + 2 * n_block, ev_driver, ev_cycle, ev_width,
                       ev_inject, ie, ii, qe32, qi32, tab, cp, cycle_ns, far_gap)
                last = ev_cycle[offsets[b + 1] - 1]
                _repeat_sends(st, st2, tab, gap, n_block, n_sends)
            # Rows of the tail (from the last event; any row for a vector without
            # events, whose state is zero) and of the read (from the reset).
            tail = rc - last if offsets[b + 1] > k0 else 0
            at_e, at_i, at_m = _decay_rows(tab, cp, tail, cycle_ns, far_tail)
            am_rc = am_read[read_slot[b]]
            t0 = rc * cycle_ns
            if read_slot[b] != cached_slot:
                cached_slot = read_slot[b]
                _read_constants(cp, am_rc, t0, v_free, sigma)
            # Injected charge: at most q per event, so its peak is at most q times the
            # peak of the decayed event count.
            if n_block == 0:
                peak_e = _scalar_peak(offsets, ev_width, ev_cycle, b, lam_slow_e)
                peak_i = _scalar_peak(offsets, ev_width, ev_cycle, b, lam_slow_i)
                peak_ne = _scalar_peak(offsets, ev_inject, ev_cycle, b, lam_slow_e)
                peak_ni = _scalar_peak(offsets, ev_inject, ev_cycle, b, lam_slow_i)
            else:
                peak_e = _scalar_peak_periodic(offsets, ev_width, b, lam_slow_e, n_block, n_sends, gap)
                peak_i = _scalar_peak_periodic(offsets, ev_width, b, lam_slow_i, n_block, n_sends, gap)
                peak_ne = _scalar_peak_periodic(offsets, ev_inject, b, lam_slow_e, n_block, n_sends, gap)
                peak_ni = _scalar_peak_periodic(offsets, ev_inject, b, lam_slow_i, n_block, n_sends, gap)
            # The leak-free total charge is at most mem * exp(lam_m * t_last).
            growth = np.exp(lam_m_max * last * cycle_ns)
            # Beyond float range (events over ~1 ms): bound the total charge by the
            # column's largest current times the widths' sum instead.
            width_sum = 0.0
            inject_sum = 0.0
            if not np.isfinite(growth):
                for kk in range(offsets[b], offsets[b + 1]):
                    width_sum += ev_width[kk]
                    inject_sum += ev_inject[kk]
            # Stage 1: linear state at the read and the cheap bounds, in one loop
            # without calls (vectorised); the tighter excursion bound only where needed.
            any_check = False
            if k0 == offsets[b + 1]:
                # No events: no input, and the membrane only relaxes from the reset
                # towards the leak (the values the general case gives for a zero state).
                for c in range(ncol):
                    xe[c] = 0.0
                    xi[c] = 0.0
                    v[c] = v_free[c]
                    status[c] = status_idle[c]
                    any_check |= status_idle[c] != 0
            else:
                for c in range(ncol):
                    tot_e, tot_i, be, bi = _charge_bounds(st, c, growth, width_sum, inject_sum, cur_max_e,
                                                          cur_max_i, qe, qi, peak_e, peak_i, peak_ne, peak_ni)
                    xe[c] = st[0, c] * at_e[c]
                    xi[c] = st[1, c] * at_i[c]
                    me = st[2, c] * at_m[c]
                    mi = st[3, c] * at_m[c]
                    v[c] = v_free[c] + cp[RESP_E, c] * (me - xe[c]) - cp[RESP_I, c] * (mi - xi[c])
                    rails_ok = linear_ok[c] & (v_top[c] + cp[GC_E, c] * tot_e < cp[RAIL_HI, c]) \
                        & (v_bottom[c] - cp[GC_I, c] * tot_i > cp[RAIL_LO, c])
                    # The peak synaptic charge is at most the total charge, and at most the
                    # column's largest current times the per-vector width bound.
                    knee_ok = (min(tot_e, be) <= knee_e[c]) & (min(tot_i, bi) <= knee_i[c])
                    # 0 linear, 1 knee to check, 3 rails to check, 2 walk.
                    st_c = np.int8(0) if rails_ok & knee_ok else \
                        (np.int8(1) if rails_ok else (np.int8(3) if knee_ok & linear_ok[c] else np.int8(2)))
                    status[c] = st_c
                    any_check |= st_c != 0
            for c in range(ncol if any_check else 0):
                if status[c] == 3:
                    # Tighter: the running exc - inh difference, plus what the inputs
                    # still hold (at most their peak), plus the leak's pull over the run.
                    tot_e, tot_i, be, bi = _charge_bounds(st, c, growth, width_sum, inject_sum, cur_max_e,
                                                          cur_max_i, qe, qi, peak_e, peak_i, peak_ne, peak_ni)
                    if n_block == 0:
                        d_hi, d_lo = _column_excursion(offsets, ev_driver, ev_width, ev_inject, ie_t, ii_t,
                                                       qe[c], qi[c], cp[GC_E, c], cp[GC_I, c], b, c)
                    else:
                        d_hi, d_lo = _column_excursion_periodic(offsets, ev_driver, ev_width, ev_inject, ie_t,
                                                                ii_t, qe[c], qi[c], cp[GC_E, c], cp[GC_I, c],
                                                                b, c, n_block, n_sends)
                    up = d_hi + cp[GC_I, c] * min(tot_i, bi)
                    down = d_lo - cp[GC_E, c] * min(tot_e, be)
                    leak = 1.0 - am_rc[c]
                    rails_ok = v_top[c] + up - down * leak < cp[RAIL_HI, c] \
                        and v_bottom[c] + down - up * leak > cp[RAIL_LO, c]
                    status[c] = 0 if rails_ok else 4
            # Stage 2 (rare): exact peaks where the bound was not enough; walk the rest.
            num_lanes = 0
            for c in range(ncol if any_check else 0):
                if status[c] == 1 and n_block == 0:
                    ok = _column_peak(offsets, ev_driver, ev_cycle, ev_width, ev_inject, ie_t, qe[c],
                                      cp[LAM_E, c] * cycle_ns, b, c) <= knee_e[c] \
                        and _column_peak(offsets, ev_driver, ev_cycle, ev_width, ev_inject, ii_t, qi[c],
                                         cp[LAM_I, c] * cycle_ns, b, c) <= knee_i[c]
                    status[c] = 0 if ok else 2
                elif status[c] == 1:
                    ok = _column_peak_periodic(offsets, ev_driver, ev_width, ev_inject, ie_t, qe[c],
                                               cp[LAM_E, c] * cycle_ns, b, c, n_block, n_sends, gap) \
                        <= knee_e[c] \
                        and _column_peak_periodic(offsets, ev_driver, ev_width, ev_inject, ii_t, qi[c],
                                                  cp[LAM_I, c] * cycle_ns, b, c, n_block, n_sends, gap) \
                        <= knee_i[c]
                    status[c] = 0 if ok else 2
                if status[c] == 4:
                    # Below the knees throughout (proven), only a rail may be reached, so
                    # the Runge-Kutta steps are affine maps: walked together below.
                    lanes[num_lanes] = c
                    num_lanes += 1
                    status[c] = 2
                elif status[c] == 2:
                    below_knee = False
                    ye = 0.0
                    yi = 0.0
                    y = cp[V_RESET, c]
                    prev = 0
                    for k in range(offsets[b], offsets[b + 1]):
                        cyc = ev_cycle[k]
                        ye, yi, y = _propagate(ye, yi, y, cyc - prev, tab, cp, c, cycle_ns, walk_cycles, rk_lin,
                                               below_knee)
                        prev = cyc
                        ye += ev_width[k] * ie[ev_driver[k], c] + ev_inject[k] * qe[c]
                        yi += ev_width[k] * ii[ev_driver[k], c] + ev_inject[k] * qi[c]
                    xe[c], xi[c], v[c] = _propagate(ye, yi, y, rc - prev, tab, cp, c, cycle_ns, walk_cycles,
                                                    rk_lin, below_knee)
                    status[c] = 2
            if num_lanes > 0:
                _walk_below_knees(lanes, num_lanes, offsets, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii,
                                  qe, qi, tab, cp, cycle_ns, walk_cycles, rk_lin, b, rc, xe, xi, v)
            for c in range(ncol):
                stepped[b, c] = status[c] == 2
                v_row[c] = v[c]
            # Stage 3: trial-to-trial noise. Membrane noise integrated up to the read
            # (an Ornstein-Uhlenbeck variance from the reset), the comparator's read
            # noise, the reset's kT/C sample and the slow noise's own part all act at
            # the comparator: one Gaussian carries them all.
            extra[:] = 0.0
            if noise_on:
                state[0] = stream_key(seed, first_index + np.uint64(b))
                add_normals(state, extra, sigma)
            u = _shared_noise(extra, cp, lf_scale, noise_on, seed, shared_seed, first_index + np.uint64(b), state)
            _ripple_at_comparator(extra, cp, am_rc, u, v_row)
            if want_v:
                for c in range(ncol):
                    v_read[b, c] = v_row[c] * 1e-3      # mV to V, as the caller reports it
            # Stage 4: conversion. Most columns are settled by the drift bound alone:
            # a first pass over all columns (branch-free, vectorised) finds them and
            # writes their codes; the second searches the others.
            for c in range(ncol):
                _, _, first, last = _conversion_window(xe[c], xi[c], v[c], cp, c, extra[c])
                linear = (status[c] == 0) | _linear_safe(xe[c], xi[c], v[c], cp, c)
                how[c] = np.int8(0) if linear & (first == last) else (np.int8(1) if linear else np.int8(2))
                codes[b, c] = _finish_code(last, cp, c)
            for c in range(ncol):
                if how[c] == 0:
                    continue
                if how[c] == 1:
                    m = _convert_linear(xe[c], xi[c], v[c], ctab, cp, c, extra[c], tick_slope)
                else:
                    m = _convert_stepped(xe[c], xi[c], v[c], cp, c, extra[c], tick_ns, CONVERT_TICKS_PER_STEP)
                codes[b, c] = _finish_code(m, cp, c)


@njit(cache=True, parallel=True, error_model="numpy")
def integrate_trace_kernel(offsets, ev_driver, ev_cycle, ev_width, ev_inject, ie, ii, cp, column_ir_drop,
                           read_cycle,
                           cycle_ns, tick_ns, substeps, record_every, noise_on, seed, shared_seed,
                           first_index, codes, v_read, rec_cols, rec_v, rec_xe, rec_xi, rec_ramp):
    """Time-stepped path: Runge-Kutta steps of ``cycle_ns / substeps`` for all
    columns from the reset to the end of the CADC conversion. Enable pulses are
    rectangles of their real width (the current a step sees is the pulse's
    overlap with the step); the comparator is evaluated at each ramp tick on
    the membrane interpolated between steps; membrane noise enters every step
    (Euler-Maruyama).

    Recording (every ``record_every`` steps, sample 0 at the reset) covers only
    the columns ``rec_cols`` (int64, any order): ``rec_*[b, r, j]`` holds column
    ``rec_cols[j]``. A quantity whose array has no samples (``shape[1] == 0``)
    is not recorded. ``rec_ramp`` holds the comparator's ramp as the
    conversion uses it, ``CADC_START + (m + 1) CADC_STEP`` (mV) of the latest
    tick m evaluated at or before the sample (NaN before the first tick).
    What is recorded never changes the integration: codes and ``v_read`` are
    the same whatever is monitored."""
    num_vectors = offsets.shape[0] - 1
    ncol = ie.shape[1]
    dt = cycle_ns / substeps
    n_rc = rec_cols.shape[0]
    on_v = rec_v.shape[1] > 0
    on_xe = rec_xe.shape[1] > 0
    on_xi = rec_xi.shape[1] > 0
    on_ramp = rec_ramp.shape[1] > 0
    record = on_v or on_xe or on_xi or on_ramp
    n_rec = max(max(rec_v.shape[1], rec_xe.shape[1]), max(rec_xi.shape[1], rec_ramp.shape[1]))
    lf_scale = _lf_scale(cp)
    for b in prange(num_vectors):
        xe = np.zeros(ncol)
        xi = np.zeros(ncol)
        v = np.empty(ncol)
        v_prev = np.empty(ncol)
        in_e = np.zeros(ncol)
        in_i = np.zeros(ncol)
        drop_e = np.zeros(ncol)
        drop_i = np.zeros(ncol)
        extra = np.zeros(ncol)
        done = np.zeros(ncol, np.bool_)
        state = np.zeros(1, np.uint64)
        scratch = np.zeros(1, np.uint64)
        if noise_on:
            state[0] = stream_key(seed, first_index + np.uint64(b))
        for c in range(ncol):
            if noise_on:
                extra[c] = np.sqrt(cp[NOISE_READ, c] ** 2 + _own_slow_variance(cp, c)) \
                    * next_normal_box_muller(state)
        u = _shared_noise(extra, cp, lf_scale, noise_on, seed, shared_seed, first_index + np.uint64(b), scratch)
        # The capmem droop at this read's refresh phase moves the reset and leak
        # potentials and the ramp start themselves.
        cpv = cp.copy()
        for c in range(ncol):
            r = cp[RIPPLE, c]
            if r > 0.0:
                cpv[V_RESET, c] -= r * _saw(u + cp[PHASE_RESET, c])
                cpv[E_LEAK, c] -= r * _saw(u + cp[PHASE_LEAK, c])
                cpv[CADC_START, c] -= r * _saw(u + cp[PHASE_START, c])
        for c in range(ncol):
            v[c] = cpv[V_RESET, c]
            if noise_on and cp[NOISE_KTC, c] > 0.0:
                v[c] += cp[NOISE_KTC, c] * next_normal_box_muller(state)
        t0 = read_cycle[b] * cycle_ns
        read_steps = read_cycle[b] * substeps
        total_steps = read_steps + np.int64(np.ceil(CADC_LEVELS * tick_ns / dt)) + 1
        k_lo = offsets[b]
        k_end = offsets[b + 1]
        tick = 0
        if read_steps == 0:
            for c in range(ncol):
                v_read[b, c] = v[c]
        if record:
            for j in range(n_rc):
                c = rec_cols[j]
                if on_v:
                    rec_v[b, 0, j] = v[c]
                if on_xe:
                    rec_xe[b, 0, j] = 0.0
                if on_xi:
                    rec_xi[b, 0, j] = 0.0
                if on_ramp:
                    rec_ramp[b, 0, j] = np.nan   # no ramp tick before the first step
        for s in range(total_steps):
            t_a = s * dt
            t_b = (s + 1) * dt
            # Input current of this step: charge of overlapping pulses / dt.
            for c in range(ncol):
                in_e[c] = 0.0
                in_i[c] = 0.0
            while k_lo < k_end and ev_cycle[k_lo] * cycle_ns + ev_width[k_lo] <= t_a:
                k_lo += 1
            k = k_lo
            while k < k_end and ev_cycle[k] * cycle_ns < t_b:
                start = ev_cycle[k] * cycle_ns
                overlap = min(t_b, start + ev_width[k]) - max(t_a, start)
                if overlap > 0.0:
                    d = ev_driver[k]
                    scale = overlap / dt
                    # Injected charge arrives with the pulse, in proportion to its overlap.
                    inj = ev_inject[k] * overlap / (ev_width[k] * dt)
                    for c in range(ncol):
                        in_e[c] += scale * ie[d, c] + inj * cp[QINJ_E, c]
                        in_i[c] += scale * ii[d, c] + inj * cp[QINJ_I, c]
                    if column_ir_drop > 0.0:
                        # Column-line IR drop: while pulses are on together, a synapse
                        # keeps 1 / (1 + L) of its current, L = column_ir_drop x the
                        # others' current on its line (the same form as the fast path's).
                        end_k = start + ev_width[k]
                        any_other = False
                        for c in range(ncol):
                            drop_e[c] = 0.0
                            drop_i[c] = 0.0
                        j = k_lo
                        while j < k_end and ev_cycle[j] * cycle_ns < t_b:
                            start_j = ev_cycle[j] * cycle_ns
                            both = min(t_b, min(end_k, start_j + ev_width[j])) - max(t_a, max(start, start_j))
                            if j != k and both > 0.0:
                                any_other = True
                                dj = ev_driver[j]
                                f = column_ir_drop * both / overlap
                                for c in range(ncol):
                                    drop_e[c] += f * ie[dj, c]
                                    drop_i[c] += f * ii[dj, c]
                            j += 1
                        if any_other:
                            for c in range(ncol):
                                in_e[c] -= scale * ie[d, c] * drop_e[c] / (1.0 + drop_e[c])
                                in_i[c] -= scale * ii[d, c] * drop_i[c] / (1.0 + drop_i[c])
                k += 1
            for c in range(ncol):
                v_prev[c] = v[c]
                xe[c], xi[c], v[c] = rk4_step(xe[c], xi[c], v[c], in_e[c], in_i[c], dt, cpv, c)
                if noise_on:
                    v[c] += cp[NOISE_MEM, c] * np.sqrt(dt) * next_normal_box_muller(state)
                    if v[c] < cp[RAIL_LO, c]:
                        v[c] = cp[RAIL_LO, c]
                    elif v[c] > cp[RAIL_HI, c]:
                        v[c] = cp[RAIL_HI, c]
            if s + 1 == read_steps:
                for c in range(ncol):
                    v_read[b, c] = v[c]
            # Ramp ticks that fall inside this step (tick 0 is at the read time).
            while tick < CADC_LEVELS and t0 + tick * tick_ns <= t_b + 1e-9:
                t_tick = t0 + tick * tick_ns
                frac = (t_tick - t_a) / dt
                if frac < 0.0:
                    frac = 0.0
                for c in range(ncol):
                    if not done[c]:
                        vm = v_prev[c] + frac * (v[c] - v_prev[c])
                        if tick == CADC_MAX_CODE or _cadc_fires(vm, tick, cpv, c, extra[c]):
                            codes[b, c] = _finish_code(tick, cpv, c)
                            done[c] = True
                tick += 1
            # Recorded after the ticks of this step (they change no state) so the
            # ramp sample is the value in force at the end of the step.
            if record and (s + 1) % record_every == 0:
                r = (s + 1) // record_every
                if r < n_rec:
                    for j in range(n_rc):
                        c = rec_cols[j]
                        if on_v:
                            rec_v[b, r, j] = v[c]
                        if on_xe:
                            rec_xe[b, r, j] = xe[c]
                        if on_xi:
                            rec_xi[b, r, j] = xi[c]
                        if on_ramp:
                            # The ramp of the latest tick m = tick - 1, as _cadc_fires computes it.
                            rec_ramp[b, r, j] = cpv[CADC_START, c] + tick * cp[CADC_STEP, c] \
                                if tick > 0 else np.nan
            if tick >= CADC_LEVELS:
                break
