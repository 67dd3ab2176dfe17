"""Slow, obvious reference implementations that the tests compare the model against.

Nothing here calls the numba kernels or reuses the model's helpers: every
quantity is recomputed from its documented definition (pure Python integers,
plain numpy loops, ``scipy.linalg.expm``). The operating point of a chip
(``chip.operating_point(half)``) is an *input* of the circuit references; the
operating point itself is checked separately against :func:`synapse_current_ua`
and :func:`column_params`. Fixed-pattern draws are read from the chip as its
truth is (``chip.truth``, ``chip._effect_normals/_effect_uniforms``, the drift
pattern's normals and ``chip._drift_state()`` for non-capmem factors); all the
arithmetic on them is recomputed here. Capmem values are the settled ones
(no write transient).

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
QINJ_E, QINJ_I, NOISE_KTC, NOISE_CM, NOISE_LF, LF_SHARED, RIPPLE, PHASE_RESET, PHASE_LEAK, \
    PHASE_START = range(26, 36)
ROW_NAMES = ("LAM_E", "LAM_I", "LAM_M", "GC_E", "GC_I", "KNEE_E", "KNEE_I", "HEAD_E", "HEAD_I",
             "E_LEAK", "V_RESET", "RAIL_LO", "RAIL_HI", "CADC_START", "CADC_STEP", "CADC_OFFSET",
             "NOISE_MEM", "NOISE_READ", "DIGITAL_OFFSET", "QINJ_E", "QINJ_I", "NOISE_KTC",
             "NOISE_CM", "NOISE_LF", "LF_SHARED", "RIPPLE", "PHASE_RESET", "PHASE_LEAK",
             "PHASE_START")

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


ZIG_R = 3.442619855899          # Marsaglia & Tsang 2000: tail start of 128 layers
ZIG_V = 9.91256303526217e-3     # and the area of each layer


def _ziggurat_layers():
    """(thresholds, scales, densities) per layer, walking down from the tail:
    each layer edge x_i solves f(x_i) = V / x_{i+1} + f(x_{i+1}), f = exp(-x^2/2);
    on 2^31-scaled signed draws, thresholds are x_{i-1} / x_i (layer 0: the base
    strip's share of its rectangle)."""
    scale = float(2**31)
    f = lambda x: math.exp(-x * x / 2)  # noqa: E731
    edges = [ZIG_R]
    for _ in range(126):
        edges.append(math.sqrt(-2 * math.log(ZIG_V / edges[-1] + f(edges[-1]))))
    # edges[j] is x at layer 127 - j; layer i's outer edge is x_i.
    x = {127 - j: e for j, e in enumerate(edges)}
    base_width = ZIG_V / f(ZIG_R)
    thresholds = [int(ZIG_R / base_width * scale), 0] + [int(x[i - 1] / x[i] * scale) for i in range(2, 128)]
    scales = [base_width / scale] + [x[i] / scale for i in range(1, 128)]
    dens = [1.0] + [f(x[i]) for i in range(1, 128)]
    return thresholds, scales, dens


ZIGGURAT = _ziggurat_layers()


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

    def normal_ziggurat(self) -> float:
        """Marsaglia & Tsang's 128-layer ziggurat: one draw's low 7 bits pick
        the layer, its high 32 bits (two's complement) the signed magnitude."""
        while True:
            self.state = (self.state + GOLDEN) & MASK64
            z = mix64(self.state)
            layer = z & 127
            h = z >> 32
            if h >= 2**31:
                h -= 2**32
            k, w, f = ZIGGURAT[0][layer], ZIGGURAT[1][layer], ZIGGURAT[2]
            if abs(h) < k:
                return h * w
            if layer == 0:
                while True:
                    x = -math.log(self.uniform()) / ZIG_R
                    y = -math.log(self.uniform())
                    if 2 * y >= x * x:
                        break
                return ZIG_R + x if h > 0 else -(ZIG_R + x)
            x = h * w
            if f[layer] + self.uniform() * (f[layer - 1] - f[layer]) < math.exp(-x * x / 2):
                return x

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


def derive_seed(seed: int, *tags: int) -> int:
    """A seed from ``seed`` and tags: per tag, add the golden gamma and the tag,
    then the SplitMix64 finaliser (as ``TrialNoise`` derives its shared seed)."""
    z = seed & MASK64
    for t in tags:
        z = mix64((z + GOLDEN + (t & MASK64)) & MASK64)
    return z


SHARED_TAG = int.from_bytes(b"slow", "big")
"""Tag of the default shared seed of a TrialNoise."""
EFFECT_TAG = int.from_bytes(b"effects!", "big")
"""Tag xor-ed into the trial seed for the stream of the shared conversion noise."""


def default_shared_seed(seed: int) -> int:
    return derive_seed(seed, SHARED_TAG)


# --- drift and temperature ------------------------------------------------------

DRIFT_PERIODS_H = [0.25 * 4.0 ** j for j in range(8)]
"""Periods of the drift components, hours (documented in circuits/environment.py)."""
KELVIN_OFFSET = 273.15
BOLTZMANN = 1.380649e-23


def drift_walk(normals, hours):
    """The documented drift process of cells whose components are ``normals``
    (8, 2, *shape): sum_j s_j (c_j sin(w_j t) + e_j (cos(w_j t) - 1)) with
    s_j^2 proportional to the period and the variance normalised to 1 at 24 h."""
    normals = np.asarray(normals, np.float64)
    w = [2.0 * math.pi / p for p in DRIFT_PERIODS_H]
    var24 = sum(2.0 * p * (1.0 - math.cos(wj * 24.0)) for p, wj in zip(DRIFT_PERIODS_H, w))
    out = np.zeros(normals.shape[2:])
    for j, (p, wj) in enumerate(zip(DRIFT_PERIODS_H, w)):
        s = math.sqrt(p / var24)
        out = out + s * (normals[j, 0] * math.sin(wj * hours) + normals[j, 1] * (math.cos(wj * hours) - 1.0))
    return out


def _drift_inputs(chip):
    env, p = chip.environment, chip.drift
    return float(env.temperature_c) - float(p.reference_temperature_c), float(env.hours), p


def drift_capmem(chip, name):
    """('shift', V) or ('factor', 1) arrays of one capmem parameter at the chip's
    environment, recomputed from the pattern's normals and the DriftParams
    documentation; None at the reference temperature and hour 0."""
    dt, h, p = _drift_inputs(chip)
    if dt == 0.0 and h == 0.0:
        return None
    shape = np.shape(chip.config.capmem(name))
    pattern = chip._drift_pattern
    n = pattern._draw("tempco/capmem/" + name, shape)
    walk = drift_walk(pattern._draw("walk/capmem/" + name, (8, 2) + shape), h)
    if CAPMEM_KINDS[name] == "voltage":
        return "shift", dt * (p.capmem_voltage_tempco_mean_v_per_k + p.capmem_voltage_tempco_spread_v_per_k * n) \
            + p.capmem_voltage_drift_v * walk
    return "factor", (1.0 + dt * (p.capmem_current_tempco_mean_rel_per_k
                                  + p.capmem_current_tempco_spread_rel_per_k * n)) \
        * (1.0 + p.capmem_current_drift_rel * walk)


# --- capmem and synapse currents ----------------------------------------------

CAPMEM_KINDS = {"cadc_ramp_start": "voltage", "cadc_ramp_slope": "current", "synapse_bias": "current",
                "driver_ramp": "current", "cadc_reference": "voltage", "reset_potential": "voltage",
                "leak_potential": "voltage", "leak_bias": "current", "syn_strength_exc": "current",
                "syn_strength_inh": "current", "syn_tau_exc": "current", "syn_tau_inh": "current"}
TAU_REFERENCE_A = 512 * 1.0e-6 / 1023
"""Nominal current of a synaptic time-constant cell at its default setting 512."""


def capmem_value(setting, gain, offset, kind):
    fs = 1.6 if kind == "voltage" else 1.0e-6
    value = float(setting) * fs / 1023.0 * float(gain) + float(offset)
    if kind == "current":
        value = max(value, 0.0)
    return value


def capmem_cell(chip, name, idx, setting=None):
    """Settled analog value of one capmem cell (V or A) at the chip's environment:
    the 10-bit setting through the cell's gain and offset, then the drift's
    shift (voltage) or factor (current); currents never below zero."""
    kind = CAPMEM_KINDS[name]
    t = chip.truth
    s = chip.config.capmem(name)[idx] if setting is None else setting
    value = capmem_value(s, t.capmem_gain[name][idx], t.capmem_offset[name][idx], kind)
    d = drift_capmem(chip, name)
    if d is not None:
        how, amount = d
        value = value + float(amount[idx]) if how == "shift" else value * float(amount[idx])
        if kind == "current":
            value = max(value, 0.0)
    return value


def _undropped_synapse_ua(chip, half, row, column, bias_rel, bits, drift_syn):
    t, cfg, cp, fx = chip.truth, chip.config, chip.circuit, chip.effects
    w_int = int(cfg.weights[half, row, column])
    w = float(w_int)
    bow = float(t.synapse_dac_bow[half, row, column])
    dac = w + bow * w * (63.0 - w) / 63.0
    if bits is not None:
        # Bit i switches 2^i unit sources of relative mismatch x each: sigma x / sqrt(2^i) on 2^i.
        x = fx.synapse_dac_unit_mismatch_rel
        for i in range(6):
            if (w_int >> i) & 1:
                dac += 2.0 ** i * x / math.sqrt(2.0 ** i) * float(bits[i, half, row, column])
        dac = max(dac, 0.0)
    gain = float(t.synapse_gain[half, row, column])
    if drift_syn is not None:
        gain *= float(drift_syn[half, row, column])
    return cp.synapse_current_full_scale_a * 1e6 * dac / 63.0 * gain * bias_rel[column // 128]


def synapse_current_ua(chip, half, driver, column):
    """(exc, inh) current in uA that driver ``driver`` sends into ``column``,
    summed over its two physical rows, one synapse at a time: the bowed DAC
    with its bit mismatch, the synapse gain (and its drift), the quadrant bias
    cell, then the row's IR drop ``current / (1 + alpha * row_total)`` where
    row_total sums the undropped currents of the row's 256 columns."""
    t, cfg, cp, fx = chip.truth, chip.config, chip.circuit, chip.effects
    bias_rel = [capmem_cell(chip, "synapse_bias", (half, q)) * float(t.quadrant_synapse_bias[half, q])
                / cp.synapse_bias_nominal_a for q in (0, 1)]
    bits = chip._effect_normals("synapse_dac_bits", (6,) + t.synapse_gain.shape) \
        if fx.synapse_dac_unit_mismatch_rel > 0 else None
    state = chip._drift_state()
    drift_syn = None if state is None else state.synapse
    alpha = fx.row_ir_drop_rel_per_ua
    exc = inh = 0.0
    for row in (2 * driver, 2 * driver + 1):
        current = _undropped_synapse_ua(chip, half, row, column, bias_rel, bits, drift_syn)
        if alpha > 0:
            total = 0.0
            for c in range(256):
                total += _undropped_synapse_ua(chip, half, row, c, bias_rel, bits, drift_syn)
            current = current / (1.0 + alpha * total)
        if cfg.row_sign[half, row] > 0:
            exc += current
        else:
            inh += current
    return exc, inh


def column_params(chip, half, col):
    """Expected entries {row: value} of the column-parameter pack of one column
    (membrane input, settled capmem, internal units), recomputed from the
    truth, the capmem cells, the drift state and the EffectParams docs."""
    t, cfg, c, fx, nz = chip.truth, chip.config, chip.circuit, chip.effects, chip.noise
    state = chip._drift_state()
    q = col // 128
    hc = (half, col)
    cap = float(t.membrane_capacitance_f[hc])
    out = {}
    for row, name, tau in ((LAM_E, "syn_tau_exc", t.tau_syn_exc_s), (LAM_I, "syn_tau_inh", t.tau_syn_inh_s)):
        # tau scales as the default cell's nominal current over the cell's current.
        out[row] = 1e-9 / (float(tau[hc]) * TAU_REFERENCE_A / max(capmem_cell(chip, name, hc), 1e-12))
    residual = cap / float(t.residual_leak_tau_s[hc])
    if state is not None:
        residual *= float(state.leak_conductance[hc])
    g = residual + c.leak_conductance_per_a * capmem_cell(chip, "leak_bias", hc)
    out[LAM_M] = 1e-9 * g / cap
    out[GC_E] = c.syn_strength_nominal * capmem_cell(chip, "syn_strength_exc", hc) / c.syn_strength_nominal_a \
        * float(t.syn_strength_exc[hc]) / (cap * 1e12)
    out[GC_I] = c.syn_strength_nominal * capmem_cell(chip, "syn_strength_inh", hc) / c.syn_strength_nominal_a \
        * float(t.syn_strength_inh[hc]) / (cap * 1e12)
    out[KNEE_E] = c.syn_knee_c * 1e15 * float(t.syn_knee_exc[hc])
    out[KNEE_I] = c.syn_knee_c * 1e15 * float(t.syn_knee_inh[hc])
    out[HEAD_E] = c.syn_saturation_headroom_c * 1e15 * float(t.syn_knee_exc[hc])
    out[HEAD_I] = c.syn_saturation_headroom_c * 1e15 * float(t.syn_knee_inh[hc])
    lo = float(t.rail_low_v[hc]) + (0.0 if state is None else float(state.rail_low_v[hc]))
    hi = float(t.rail_high_v[hc]) + (0.0 if state is None else float(state.rail_high_v[hc]))
    out[RAIL_LO], out[RAIL_HI] = 1e3 * lo, 1e3 * hi
    out[E_LEAK] = 1e3 * (capmem_cell(chip, "leak_potential", hc) + float(t.leak_offset_v[hc]))
    v0 = 1e3 * (capmem_cell(chip, "reset_potential", hc) + float(t.reset_offset_v[hc]))
    v0 = min(max(v0, out[RAIL_LO]), out[RAIL_HI])
    if fx.reset_residual_rel > 0:
        frac = fx.reset_residual_rel * max(1.0 + 0.5 * float(
            chip._effect_normals("reset_residual", (2, 256))[hc]), 0.0)
        v0 = v0 + frac * (out[E_LEAK] - v0)
    out[V_RESET] = v0
    out[CADC_START] = 1e3 * capmem_cell(chip, "cadc_ramp_start", (half, q))
    gain = float(t.cadc_gain[hc]) * (1.0 if state is None else float(state.cadc_gain[hc]))
    step = max(c.cadc_step_nominal_v * capmem_cell(chip, "cadc_ramp_slope", (half, q))
               / c.cadc_slope_nominal_a / gain, 1e-9)
    out[CADC_STEP] = 1e3 * step
    out[CADC_OFFSET] = 1e3 * (float(t.cadc_offset_v[hc]) + (0.0 if state is None else float(state.cadc_offset_v[hc])))
    out[NOISE_MEM] = 1e3 * nz.membrane_noise_v_per_sqrt_s / math.sqrt(1e9)
    out[NOISE_READ] = nz.cadc_read_noise_lsb * out[CADC_STEP]
    out[NOISE_CM] = fx.cadc_common_noise_lsb * out[CADC_STEP]
    out[NOISE_LF] = fx.low_frequency_noise_lsb * out[CADC_STEP]
    out[LF_SHARED] = fx.low_frequency_shared_fraction
    out[NOISE_KTC] = 1e3 * math.sqrt(BOLTZMANN * (chip.environment.temperature_c + KELVIN_OFFSET) / cap) \
        if fx.reset_ktc_noise else 0.0
    out[DIGITAL_OFFSET] = float(cfg.cadc_digital_offset[hc])
    for row, charge, name in ((QINJ_E, fx.charge_injection_exc_c, "charge_injection_exc"),
                              (QINJ_I, fx.charge_injection_inh_c, "charge_injection_inh")):
        n = float(chip._effect_normals(name, (2, 256))[hc]) if charge > 0 else 0.0
        out[row] = 1e15 * charge * max(1.0 + fx.charge_injection_spread_rel * n, 0.0)
    out[RIPPLE] = 1e3 * fx.capmem_ripple_v
    if fx.capmem_ripple_v > 0:
        phase_n = chip._effect_uniforms("ripple_phase_neuron", (2, 2, 256))
        out[PHASE_RESET] = float(phase_n[0, half, col])
        out[PHASE_LEAK] = float(phase_n[1, half, col])
        out[PHASE_START] = float(chip._effect_uniforms("ripple_phase_quadrant", (2, 2))[half, q])
    else:
        out[PHASE_RESET] = out[PHASE_LEAK] = out[PHASE_START] = 0.0
    return out


# --- events: driver recovery and charge injection --------------------------------

def recovered_events(op, events, effects=None):
    """[(driver, width_ns, cycle)] of a vector's events. With ``effects``, a
    pulse dt after the same driver's previous pulse of the vector (start to
    start) loses ``depth exp(-dt / tau)`` of its width; widths are float32 as
    the kernels receive them."""
    out, last = [], {}
    depth = 0.0 if effects is None else effects.driver_recovery_depth
    for d, a, cyc in events:
        w = float(op.pulse_width_ns[d, a])
        if depth > 0 and d in last:
            dt_s = (cyc - last[d]) * CYCLE_NS * 1e-9
            w = float(np.float32(w * (1.0 - depth * math.exp(-dt_s / effects.driver_recovery_tau_s))))
        last[d] = cyc
        out.append((int(d), w, int(cyc)))
    return out


def saw(x):
    return x - np.floor(x)


def shared_noise_mv(cp, seed, shared_seed, index):
    """The comparator noise the columns share, per the kernels' stream order:
    the stream ``(seed ^ EFFECT_TAG, index)`` gives a polar pair (quadrant 0,
    quadrant 1 common noise) and then the read's refresh phase u; with slow
    noise on, per column one ziggurat normal from the stream
    ``(shared_seed, index)``, times ``sqrt(rho) NOISE_LF`` (the shared part;
    the own part is in the per-column Gaussian). Returns (mV per column, u)."""
    n = cp.shape[1]
    rng = SplitMix(stream_key(seed ^ EFFECT_TAG, index))
    q0, q1 = rng.normal_pair_polar()
    u = rng.uniform()
    add = np.where(np.arange(n) < 128, cp[NOISE_CM] * q0, cp[NOISE_CM] * q1)
    if n > 0 and cp[NOISE_LF, 0] > 0:
        shared = SplitMix(stream_key(shared_seed, index))
        for c in range(n):
            add[c] += cp[NOISE_LF, c] * math.sqrt(cp[LF_SHARED, c]) * shared.normal_ziggurat()
    return add, u


def own_slow_variance(cp):
    """Variance (mV^2) per column of the slow noise's own (unshared) part."""
    return (1.0 - cp[LF_SHARED]) * cp[NOISE_LF] ** 2


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
    """Per-column linear reference (no knee, no rails) with expm propagators.

    ``effects`` (the chip's EffectParams) switches on driver recovery and the
    column-line IR drop of pulses in the same cycle; the
    charge injection comes from the QINJ rows of the operating point (0 on an
    ideal chip)."""

    def __init__(self, op, effects=None):
        self.op = op
        self.effects = effects
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
        Returns (256, 3) state (xe, xi, v - e_leak) at read_cycle. Each pulse
        of width w > 0 adds w I (per input) plus the injected charge q."""
        op = self.op
        y = np.zeros((self.cp.shape[1], 3))
        y[:, 2] = self.cp[V_RESET] - self.cp[E_LEAK]
        now = 0
        ie = op.current_exc_ua.astype(np.float64)
        ii = op.current_inh_ua.astype(np.float64)
        beta = 0.0 if self.effects is None else self.effects.column_ir_drop_rel_per_ua
        same_cycle = []

        def column_drop(group):
            # Column-line IR drop of pulses in one cycle: the synapse of pulse j keeps
            # 1 / (1 + L_j) of its charge, L_j = beta sum_k I_k min(w_j, w_k) / w_j.
            for j, (dj, wj, _) in enumerate(group):
                if wj <= 0:
                    continue
                load_e = np.zeros(ie.shape[1])
                load_i = np.zeros(ie.shape[1])
                for k, (dk, wk, _) in enumerate(group):
                    if k != j:
                        load_e += beta * min(wj, wk) / wj * ie[dk]
                        load_i += beta * min(wj, wk) / wj * ii[dk]
                y[:, 0] -= wj * ie[dj] * load_e / (1 + load_e)
                y[:, 1] -= wj * ii[dj] * load_i / (1 + load_i)

        for driver, width, cycle in recovered_events(op, events, self.effects):
            if same_cycle and same_cycle[0][2] != cycle:
                if beta > 0 and len(same_cycle) > 1:
                    column_drop(same_cycle)
                same_cycle = []
            if cycle > now:
                y = np.einsum("cij,cj->ci", self.propagator((cycle - now) * CYCLE_NS), y)
                now = cycle
            y[:, 0] += width * ie[driver]
            y[:, 1] += width * ii[driver]
            if width > 0:
                y[:, 0] += self.cp[QINJ_E]
                y[:, 1] += self.cp[QINJ_I]
            same_cycle.append((driver, width, cycle))
        if beta > 0 and len(same_cycle) > 1:
            column_drop(same_cycle)
        if read_cycle > now:
            y = np.einsum("cij,cj->ci", self.propagator((read_cycle - now) * CYCLE_NS), y)
        return y

    def membrane_at_read_mv(self, events, read_cycle, u=0.0):
        """Membrane at the read with the capmem droop at refresh phase u (0: as
        the chip reports it with noise off)."""
        return self.state_at_read(events, read_cycle)[:, 2] + self.cp[E_LEAK] - self.droop_mv(read_cycle, u)

    def decay_at(self, read_cycle):
        """exp(-lam_m t) of the membrane from the reset to the read, rounded to
        float32 as the propagator tables hold it."""
        t0 = read_cycle * CYCLE_NS
        return np.exp(-self.cp[LAM_M] * t0).astype(np.float32).astype(np.float64)

    def droop_mv(self, read_cycle, u=0.0):
        """How far the capmem droop at refresh phase u lowers the membrane at
        the read: a reset potential lower by r saw(u + phase_reset) (decayed by
        a) and a leak potential lower by r saw(u + phase_leak) (its 1 - a share)."""
        cp = self.cp
        a = self.decay_at(read_cycle)
        return cp[RIPPLE] * (a * saw(u + cp[PHASE_RESET]) + (1.0 - a) * saw(u + cp[PHASE_LEAK]))

    def ripple_mv(self, read_cycle, u=0.0):
        """Capmem droop at refresh phase u referred to the comparator: the ramp
        start lower by r saw(u + phase_start) (the ramp passes later) less the
        membrane's droop (:meth:`droop_mv`)."""
        return self.cp[RIPPLE] * saw(u + self.cp[PHASE_START]) - self.droop_mv(read_cycle, u)

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


def comparator_noise_mv(cp, read_cycle, noise, b):
    """The fast path's documented noise at the comparator of vector b with
    ``noise`` = (seed, first_index[, shared_seed]): one Gaussian per column
    (ziggurat normals, column by column, from stream (seed, first + b))
    with the Ornstein-Uhlenbeck variance from the reset, the read noise, the
    reset's kT/C sample decayed with the leak and the slow noise's own part;
    then the shared noise
    (:func:`shared_noise_mv`). Returns (mV per column, refresh phase u)."""
    seed, first = noise[0], noise[1]
    shared_seed = noise[2] if len(noise) > 2 else default_shared_seed(seed)
    rng = SplitMix(stream_key(seed, first + b))
    t0 = read_cycle * CYCLE_NS
    lam = cp[LAM_M]
    a = np.exp(-lam * t0).astype(np.float32).astype(np.float64)
    var_mem = cp[NOISE_MEM] ** 2 * (1.0 - a * a) / (2.0 * lam)
    sd = np.sqrt(var_mem + cp[NOISE_READ] ** 2 + (cp[NOISE_KTC] * a) ** 2 + own_slow_variance(cp))
    z = np.array([rng.normal_ziggurat() for _ in range(cp.shape[1])])
    add, u = shared_noise_mv(cp, seed, shared_seed, first + b)
    return sd * z + add, u


def expm_codes(chip, half, events_per_vector, read_cycles, noise=None):
    """Codes (B, 256) and membrane at read (B, 256, mV) of the linear reference.

    Driver recovery and charge injection as the chip's effects say; the
    capmem ripple referred to the comparator at refresh phase 0 (noise off)
    or at the phase the noise stream draws. With ``noise`` = (seed,
    first_index[, shared_seed]) the fast path's documented noise model is
    reproduced (:func:`comparator_noise_mv`). The membrane returned has the
    droop at the read's refresh phase and no noise (as the fast path reports it)."""
    op = chip.operating_point(half)
    circ = ExpmCircuit(op, chip.effects)
    cp = circ.cp
    codes, vs = [], []
    for b, (events, rc) in enumerate(zip(events_per_vector, read_cycles)):
        y = circ.state_at_read(events, rc)
        if noise is not None:
            extra, u = comparator_noise_mv(cp, rc, noise, b)
        else:
            extra, u = np.zeros(cp.shape[1]), 0.0
        extra = extra + circ.ripple_mv(rc, u)
        counts = circ.convert(y, extra)
        codes.append(finish_codes(counts, cp))
        vs.append(y[:, 2] + cp[E_LEAK] - circ.droop_mv(rc, u))
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


def rk4_trace(op, events, read_cycle, substeps=8, noise=None, effects=None):
    """Time-stepped reference of one vector, vectorised over the 256 columns.

    Each step of 8 ns / substeps sees a constant input current: the charge of
    the overlap of every rectangular enable pulse [cycle * 8 ns, + width) with
    the step, divided by the step, plus the pulse's injected charge in
    proportion to the overlap. Classical RK4, then the membrane is clipped to
    the rails. The capmem droop at the read's refresh phase u (0 with noise
    off) lowers the reset and leak potentials and the ramp start. With
    ``noise`` = (seed, index[, shared_seed]): a read-noise offset per column
    (read noise and the slow noise's own part in one Gaussian) is drawn first
    (Box-Muller, two uniforms per normal), then the reset's
    kT/C sample per column, then membrane noise after every step
    (Euler-Maruyama, clipped again); the shared noise comes from its own
    streams (:func:`shared_noise_mv`). ``effects`` switches on driver recovery
    and the column-line IR drop: while two pulses overlap within a step, each
    synapse loses beta x the other's current (per input line).

    Returns dict: v (steps + 1, 256) mV at t = s * dt, xe, xi (fC), dt,
    read_steps, counts (raw CADC counts), codes, v_read (mV)."""
    cp = np.asarray(op.column_params, np.float64)
    n = cp.shape[1]
    dt = CYCLE_NS / substeps
    read_steps = read_cycle * substeps
    total_steps = read_steps + int(math.ceil(LEVELS * TICK_NS / dt)) + 1
    ev = [(d, w, c * CYCLE_NS) for d, w, c in recovered_events(op, events, effects)]
    ie = op.current_exc_ua.astype(np.float64)
    ii = op.current_inh_ua.astype(np.float64)
    beta = 0.0 if effects is None else effects.column_ir_drop_rel_per_ua
    normals = None
    u_phase = 0.0
    ktc_on = cp[NOISE_KTC] > 0
    if noise is not None:
        seed, index = noise[0], noise[1]
        shared_seed = noise[2] if len(noise) > 2 else default_shared_seed(seed)
        u = uniforms_numpy(stream_key(seed, index), 2 * n * (total_steps + 2))
        normals = np.sqrt(-2.0 * np.log(u[0::2])) * np.cos(2.0 * np.pi * u[1::2])
        extra = np.sqrt(cp[NOISE_READ] ** 2 + own_slow_variance(cp)) * normals[:n]
        add, u_phase = shared_noise_mv(cp, seed, shared_seed, index)
        extra = extra + add
        ktc = normals[n:n + int(ktc_on.sum())]
        step0 = n + int(ktc_on.sum())
    else:
        extra = np.zeros(n)
    cpv = cp.copy()
    cpv[V_RESET] -= cp[RIPPLE] * saw(u_phase + cp[PHASE_RESET])
    cpv[E_LEAK] -= cp[RIPPLE] * saw(u_phase + cp[PHASE_LEAK])
    cpv[CADC_START] -= cp[RIPPLE] * saw(u_phase + cp[PHASE_START])
    xe = np.zeros(n)
    xi = np.zeros(n)
    v = cpv[V_RESET].copy()
    if normals is not None:
        v[ktc_on] += cp[NOISE_KTC][ktc_on] * ktc
    vs, xes, xis = [v.copy()], [xe.copy()], [xi.copy()]
    for s in range(total_steps):
        t_a, t_b = s * dt, (s + 1) * dt
        in_e = np.zeros(n)
        in_i = np.zeros(n)
        for j, (d, width, start) in enumerate(ev):
            overlap = min(t_b, start + width) - max(t_a, start)
            if overlap > 0:
                in_e += overlap / dt * ie[d] + overlap / (width * dt) * cp[QINJ_E]
                in_i += overlap / dt * ii[d] + overlap / (width * dt) * cp[QINJ_I]
                if beta > 0:
                    # This pulse keeps 1 / (1 + L) of its current while others are on,
                    # L = beta x their current weighted by the time on together.
                    load_e = np.zeros(n)
                    load_i = np.zeros(n)
                    others = False
                    for j2, (d2, w2, start2) in enumerate(ev):
                        both = min(t_b, start + width, start2 + w2) - max(t_a, start, start2)
                        if j2 != j and both > 0:
                            others = True
                            load_e += beta * both / overlap * ie[d2]
                            load_i += beta * both / overlap * ii[d2]
                    if others:
                        in_e -= overlap / dt * ie[d] * load_e / (1 + load_e)
                        in_i -= overlap / dt * ii[d] * load_i / (1 + load_i)
        a1, b1, c1 = _derivs(xe, xi, v, in_e, in_i, cpv)
        h = dt / 2
        a2, b2, c2 = _derivs(xe + h * a1, xi + h * b1, v + h * c1, in_e, in_i, cpv)
        a3, b3, c3 = _derivs(xe + h * a2, xi + h * b2, v + h * c2, in_e, in_i, cpv)
        a4, b4, c4 = _derivs(xe + dt * a3, xi + dt * b3, v + dt * c3, in_e, in_i, cpv)
        xe = xe + dt / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
        xi = xi + dt / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        v = np.clip(v + dt / 6 * (c1 + 2 * c2 + 2 * c3 + c4), cp[RAIL_LO], cp[RAIL_HI])
        if normals is not None:
            z = normals[step0 + n * s:step0 + n * (s + 1)]
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
        fires = ~done & (cpv[CADC_START] + (m + 1) * cp[CADC_STEP] > vm + cp[CADC_OFFSET] + extra)
        counts[fires] = m
        done |= fires
    return dict(v=vs, xe=np.array(xes), xi=np.array(xis), dt=dt, read_steps=read_steps,
                counts=counts, codes=finish_codes(counts, cp), v_read=vs[read_steps])
