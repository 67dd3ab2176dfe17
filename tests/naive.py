"""Slow, obvious reference implementations that the tests compare the model against.

Nothing here calls the numba kernels or reuses the model's helpers: every
quantity is recomputed from its documented definition (pure Python integers,
plain numpy loops, ``scipy.linalg.expm``). The operating point of a chip
(``chip.operating_point(half)``) is an *input* of the circuit references; the
operating point itself is checked separately against :func:`synapse_current_ua`.

Internal units as in the model: ns, fC, mV, uA (uA x ns = fC), mV/fC.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import expm

# Row indices of the per-column parameter pack, spelled out here on purpose
# (a test checks them against bss2sim.circuits.kernels).
LAM_E, LAM_I, LAM_M, GC_E, GC_I, KNEE_E, KNEE_I, HEAD_E, HEAD_I, E_LEAK, V_RESET, \
    RAIL_LO, RAIL_HI, CADC_START, CADC_STEP, CADC_OFFSET, NOISE_MEM, NOISE_READ, \
    DIGITAL_OFFSET = range(19)

CYCLE_NS = 8.0
TICK_NS = 540.0 / 256
LEVELS = 256
MAX_CODE = 255

# --- SplitMix64 in Python integers -------------------------------------------

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def mix64(z: int) -> int:
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, index: int) -> int:
    return mix64(mix64((seed + GOLDEN) & MASK64) ^ ((index * GOLDEN + MIX1) & MASK64))


class SplitMix:
    """One stream: ``uniform`` advances the state by the golden gamma and maps the
    top 53 bits of the mixed state to (0, 1)."""

    def __init__(self, state: int):
        self.state = state & MASK64

    def next_bits(self) -> int:
        self.state = (self.state + GOLDEN) & MASK64
        return mix64(self.state) >> 11

    def uniform(self) -> float:
        return (float(self.next_bits()) + 0.5) / 2.0**53

    def normal_box_muller(self) -> float:
        u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def normal_pair_polar(self):
        while True:
            a = 2.0 * self.uniform() - 1.0
            b = 2.0 * self.uniform() - 1.0
            r = a * a + b * b
            if 0.0 < r < 1.0:
                f = math.sqrt(-2.0 * math.log(r) / r)
                return a * f, b * f


def uniforms_numpy(key: int, count: int) -> np.ndarray:
    """The first ``count`` uniforms of a stream, vectorised with wrapping numpy
    uint64 arithmetic (draw j uses state key + (j + 1) * golden)."""
    j = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + j * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    bits = z >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) / 2.0**53


# --- capmem and synapse currents ----------------------------------------------

def capmem_value(setting, gain, offset, kind):
    fs = 1.6 if kind == "voltage" else 1.0e-6
    value = float(setting) * fs / 1023.0 * float(gain) + float(offset)
    if kind == "current":
        value = max(value, 0.0)
    return value


def synapse_current_ua(chip, half, driver, column):
    """(exc, inh) current in uA that driver ``driver`` sends into ``column``,
    summed over its two physical rows, one synapse at a time."""
    t, cfg, cp = chip.truth, chip.config, chip.circuit
    quadrant = column // 128
    bias = capmem_value(cfg.capmem("synapse_bias")[half, quadrant],
                        t.capmem_gain["synapse_bias"][half, quadrant],
                        t.capmem_offset["synapse_bias"][half, quadrant], "current") \
        * t.quadrant_synapse_bias[half, quadrant]
    exc = inh = 0.0
    for row in (2 * driver, 2 * driver + 1):
        w = float(cfg.weights[half, row, column])
        bow = float(t.synapse_dac_bow[half, row, column])
        dac = w + bow * w * (63.0 - w) / 63.0
        current = cp.synapse_current_full_scale_a * 1e6 * dac / 63.0 \
            * float(t.synapse_gain[half, row, column]) * bias / cp.synapse_bias_nominal_a
        if cfg.row_sign[half, row] > 0:
            exc += current
        else:
            inh += current
    return exc, inh


# --- linear circuit, exact (matrix exponential) -------------------------------

def system_matrices(cp):
    """(256, 3, 3) system matrices of the linear circuit, state (xe, xi, v - e_leak)."""
    n = cp.shape[1]
    a = np.zeros((n, 3, 3))
    a[:, 0, 0] = -cp[LAM_E]
    a[:, 1, 1] = -cp[LAM_I]
    a[:, 2, 0] = cp[GC_E] * cp[LAM_E]
    a[:, 2, 1] = -cp[GC_I] * cp[LAM_I]
    a[:, 2, 2] = -cp[LAM_M]
    return a


class ExpmCircuit:
    """Per-column linear reference (no knee, no rails) with expm propagators."""

    def __init__(self, op):
        self.op = op
        self.cp = np.asarray(op.column_params, np.float64)
        self.a = system_matrices(self.cp)
        self._cache = {}

    def propagator(self, t_ns):
        key = float(t_ns)
        if key not in self._cache:
            self._cache[key] = expm(self.a * key)
        return self._cache[key]

    def state_at_read(self, events, read_cycle):
        """events: iterable of (driver, value, cycle) in time order.
        Returns (256, 3) state (xe, xi, v - e_leak) at read_cycle."""
        op = self.op
        y = np.zeros((self.cp.shape[1], 3))
        y[:, 2] = self.cp[V_RESET] - self.cp[E_LEAK]
        now = 0
        for driver, value, cycle in events:
            if cycle > now:
                y = np.einsum("cij,cj->ci", self.propagator((cycle - now) * CYCLE_NS), y)
                now = cycle
            width = float(op.pulse_width_ns[driver, value])
            y[:, 0] += width * op.current_exc_ua[driver].astype(np.float64)
            y[:, 1] += width * op.current_inh_ua[driver].astype(np.float64)
        if read_cycle > now:
            y = np.einsum("cij,cj->ci", self.propagator((read_cycle - now) * CYCLE_NS), y)
        return y

    def membrane_at_read_mv(self, events, read_cycle):
        return self.state_at_read(events, read_cycle)[:, 2] + self.cp[E_LEAK]

    def convert(self, y, extra_mv=None):
        """Naive CADC: walk the ramp tick by tick from the read, evaluating the
        membrane with the one-tick propagator; returns raw counts before the
        digital offset (0..255; 255 when the comparator never fires)."""
        cp = self.cp
        n = cp.shape[1]
        extra = np.zeros(n) if extra_mv is None else np.asarray(extra_mv, np.float64)
        tick = self.propagator(TICK_NS)
        counts = np.full(n, MAX_CODE)
        done = np.zeros(n, bool)
        for m in range(MAX_CODE):
            v = y[:, 2] + cp[E_LEAK]
            ramp = cp[CADC_START] + (m + 1) * cp[CADC_STEP]
            fires = ~done & (ramp > v + cp[CADC_OFFSET] + extra)
            counts[fires] = m
            done |= fires
            if done.all():
                break
            y = np.einsum("cij,cj->ci", tick, y)
        return counts


def finish_codes(counts, cp):
    return np.clip(np.asarray(counts) + cp[DIGITAL_OFFSET].astype(np.int64), 0, MAX_CODE)


def expm_codes(chip, half, events_per_vector, read_cycles, noise=None):
    """Codes (B, 256) and membrane at read (B, 256, mV) of the linear reference.

    With ``noise`` = (seed, first_index) the fast path's documented noise model is
    reproduced: one Gaussian per column (polar method, pairs consumed column by
    column) with the Ornstein-Uhlenbeck variance from the reset plus read noise."""
    op = chip.operating_point(half)
    circ = ExpmCircuit(op)
    cp = circ.cp
    codes, vs = [], []
    for b, (events, rc) in enumerate(zip(events_per_vector, read_cycles)):
        y = circ.state_at_read(events, rc)
        extra = None
        if noise is not None:
            seed, first = noise
            rng = SplitMix(stream_key(seed, first + b))
            t0 = rc * CYCLE_NS
            lam = cp[LAM_M]
            a = np.exp(-lam * t0).astype(np.float32).astype(np.float64)
            var_mem = cp[NOISE_MEM] ** 2 * (1.0 - a * a) / (2.0 * lam)
            sd = np.sqrt(var_mem + cp[NOISE_READ] ** 2)
            z = []
            while len(z) < cp.shape[1]:
                z.extend(rng.normal_pair_polar())
            extra = sd * np.array(z[:cp.shape[1]])
        counts = circ.convert(y, extra)
        codes.append(finish_codes(counts, cp))
        vs.append(y[:, 2] + cp[E_LEAK])
    return np.array(codes), np.array(vs)


# --- time-stepped RK4 with rectangular pulses ---------------------------------

def _knee(x, knee, head):
    return np.where(x <= knee, x, knee + head * np.tanh((x - knee) / head))


def _derivs(xe, xi, v, ie, ii, cp):
    dxe = -cp[LAM_E] * xe + ie
    dxi = -cp[LAM_I] * xi + ii
    dv = cp[GC_E] * cp[LAM_E] * _knee(xe, cp[KNEE_E], cp[HEAD_E]) \
        - cp[GC_I] * cp[LAM_I] * _knee(xi, cp[KNEE_I], cp[HEAD_I]) \
        - cp[LAM_M] * (v - cp[E_LEAK])
    return dxe, dxi, dv


def rk4_trace(op, events, read_cycle, substeps=8, noise=None):
    """Time-stepped reference of one vector, vectorised over the 256 columns.

    Each step of 8 ns / substeps sees a constant input current: the charge of
    the overlap of every rectangular enable pulse [cycle * 8 ns, + width) with
    the step, divided by the step. Classical RK4, then the membrane is clipped
    to the rails. With ``noise`` = (seed, index), membrane noise enters after
    every step (Euler-Maruyama, clipped again) and a read-noise offset per
    column is drawn first (Box-Muller, two uniforms per normal).

    Returns dict: v (steps + 1, 256) mV at t = s * dt, xe, xi (fC), dt,
    read_steps, counts (raw CADC counts), codes, v_read (mV)."""
    cp = np.asarray(op.column_params, np.float64)
    n = cp.shape[1]
    dt = CYCLE_NS / substeps
    read_steps = read_cycle * substeps
    total_steps = read_steps + int(math.ceil(LEVELS * TICK_NS / dt)) + 1
    ev = [(int(d), float(op.pulse_width_ns[d, a]), int(c) * CYCLE_NS) for d, a, c in events]
    ie = op.current_exc_ua.astype(np.float64)
    ii = op.current_inh_ua.astype(np.float64)
    normals = None
    if noise is not None:
        seed, index = noise
        u = uniforms_numpy(stream_key(seed, index), 2 * n * (total_steps + 1))
        normals = np.sqrt(-2.0 * np.log(u[0::2])) * np.cos(2.0 * np.pi * u[1::2])
        extra = cp[NOISE_READ] * normals[:n]
    else:
        extra = np.zeros(n)
    xe = np.zeros(n)
    xi = np.zeros(n)
    v = cp[V_RESET].copy()
    vs, xes, xis = [v.copy()], [xe.copy()], [xi.copy()]
    for s in range(total_steps):
        t_a, t_b = s * dt, (s + 1) * dt
        in_e = np.zeros(n)
        in_i = np.zeros(n)
        for d, width, start in ev:
            overlap = min(t_b, start + width) - max(t_a, start)
            if overlap > 0:
                in_e += overlap / dt * ie[d]
                in_i += overlap / dt * ii[d]
        a1, b1, c1 = _derivs(xe, xi, v, in_e, in_i, cp)
        h = dt / 2
        a2, b2, c2 = _derivs(xe + h * a1, xi + h * b1, v + h * c1, in_e, in_i, cp)
        a3, b3, c3 = _derivs(xe + h * a2, xi + h * b2, v + h * c2, in_e, in_i, cp)
        a4, b4, c4 = _derivs(xe + dt * a3, xi + dt * b3, v + dt * c3, in_e, in_i, cp)
        xe = xe + dt / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
        xi = xi + dt / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        v = np.clip(v + dt / 6 * (c1 + 2 * c2 + 2 * c3 + c4), cp[RAIL_LO], cp[RAIL_HI])
        if normals is not None:
            z = normals[n * (s + 1):n * (s + 2)]
            v = np.clip(v + cp[NOISE_MEM] * math.sqrt(dt) * z, cp[RAIL_LO], cp[RAIL_HI])
        vs.append(v)
        xes.append(xe)
        xis.append(xi)
    vs = np.array(vs)
    # CADC: tick m at t0 + m * tick; the membrane is interpolated linearly
    # between the two steps around the tick; the count stops at 255 at the latest.
    t0 = read_cycle * CYCLE_NS
    counts = np.full(n, MAX_CODE)
    done = np.zeros(n, bool)
    for m in range(MAX_CODE):
        t = t0 + m * TICK_NS
        s = min(int(t // dt), total_steps - 1)
        if s > 0 and abs(t - s * dt) < 1e-9:
            s -= 1          # a tick on a step boundary uses the step that ends there
        frac = max((t - s * dt) / dt, 0.0)
        vm = vs[s] + frac * (vs[s + 1] - vs[s])
        fires = ~done & (cp[CADC_START] + (m + 1) * cp[CADC_STEP] > vm + cp[CADC_OFFSET] + extra)
        counts[fires] = m
        done |= fires
    return dict(v=vs, xe=np.array(xes), xi=np.array(xis), dt=dt, read_steps=read_steps,
                counts=counts, codes=finish_codes(counts, cp), v_read=vs[read_steps])
