"""A seeded chip instance: hidden ground truth, writable configuration, and the
operating point the kernels integrate.

* :class:`ChipTruth` holds every mismatch value of one chip, drawn from
  :class:`~bss2sim.circuits.params.MismatchParams` with the chip seed. It is what
  fabrication decided; tests may read it, calibration and training code may not.
* :class:`ChipConfig` is everything software can write on silicon: synapse
  weights and row signs, capmem settings, driver offsets and CADC digital
  offsets. Every write is validated.
* :class:`Chip` ties both together and derives, per half, the
  :class:`HalfOperatingPoint` (effective currents, pulse widths, time constants,
  CADC ramps) that the kernels use, cached until the configuration changes.
"""
from __future__ import annotations

import hashlib
import itertools
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import constants as K
from . import kernels as _k
from .checks import WrongTypeError, as_int_array, check_instance, check_int, check_real, check_seed
from .environment import DriftPattern, Environment
from .params import PRESETS, CircuitParams, DriftParams, EffectParams, MismatchParams, NoiseParams
from .params import preset as _preset   # the constructor's argument is named preset


@dataclass(frozen=True)
class CapmemParameter:
    """One kind of capmem cell: what it drives, its unit and its default setting."""

    name: str
    kind: str
    """'voltage' (V, full scale 1.6 V) or 'current' (A, full scale 1 uA)."""
    scope: str
    """'quadrant' (one cell per quadrant, shape (2, 2)) or 'neuron' (shape (2, 256))."""
    default: int
    doc: str

    @property
    def shape(self):
        if self.scope == "quadrant":
            return (K.NUM_HALVES, K.QUADRANTS_PER_HALF)
        return (K.NUM_HALVES, K.COLUMNS_PER_HALF)


CAPMEM_PARAMETERS = {p.name: p for p in [
    CapmemParameter("cadc_ramp_start", "voltage", "quadrant", 64,
                    "CADC ramp start voltage (code 0); default about 0.10 V."),
    CapmemParameter("cadc_ramp_slope", "current", "quadrant", 512,
                    "CADC ramp bias; the ramp step per code is proportional to it."),
    CapmemParameter("synapse_bias", "current", "quadrant", 512,
                    "Synapse DAC bias current; scales every synapse current of the quadrant."),
    CapmemParameter("driver_ramp", "current", "quadrant", 512,
                    "Pulse-shaping ramp current of the quadrant's driver block; pulse width "
                    "scales as 1/current."),
    CapmemParameter("cadc_reference", "voltage", "quadrant", 448,
                    "Voltage of the quadrant's CADC reference line, which the channels read "
                    "instead of the membranes when ChipConfig.cadc_input is 'reference' "
                    "(*assumed* calibration aid); default about 0.70 V."),
    CapmemParameter("reset_potential", "voltage", "neuron", 448,
                    "Membrane reset potential; default about 0.70 V."),
    CapmemParameter("leak_potential", "voltage", "neuron", 448,
                    "Leak reversal potential; default about 0.70 V."),
    CapmemParameter("leak_bias", "current", "neuron", 0,
                    "Leak conductance bias; 0 switches the leak off for integration "
                    "(a residual leak remains)."),
    CapmemParameter("syn_strength_exc", "current", "neuron", 512,
                    "Excitatory synaptic-input OTA bias; strength is proportional to it."),
    CapmemParameter("syn_strength_inh", "current", "neuron", 512,
                    "Inhibitory synaptic-input OTA bias; strength is proportional to it."),
    CapmemParameter("syn_tau_exc", "current", "neuron", 512,
                    "Bias of the excitatory synaptic input's resistor (as on silicon, its time "
                    "constant is set through a capmem current): tau_syn scales as the default "
                    "cell's current over this one's, so 512 gives about 0.32 us."),
    CapmemParameter("syn_tau_inh", "current", "neuron", 512,
                    "Bias of the inhibitory synaptic input's resistor, as syn_tau_exc."),
]}


@dataclass(frozen=True)
class Faults:
    """Defects injected into a chip's ground truth (for validating calibration).

    Each entry names its location; everything else of the chip is unchanged."""

    dead_synapse_rows: tuple = ()
    """(half, physical row) pairs whose synapses draw no current."""
    stuck_cadc_channels: tuple = ()
    """(half, column, raw code) triples: the channel's counter always stops at that code."""
    driver_offset_extra_s: tuple = ()
    """(half, driver, seconds) triples added to the driver's pulse-width offset."""

    def __post_init__(self):
        fields = {
            "dead_synapse_rows": (("half", 0, K.NUM_HALVES - 1), ("row", 0, K.SYNAPSE_ROWS_PER_HALF - 1)),
            "stuck_cadc_channels": (("half", 0, K.NUM_HALVES - 1), ("column", 0, K.COLUMNS_PER_HALF - 1),
                                    ("code", 0, K.CADC_MAX)),
            "driver_offset_extra_s": (("half", 0, K.NUM_HALVES - 1), ("driver", 0, K.DRIVERS_PER_HALF - 1),
                                      ("seconds", None, None)),
        }
        for name, parts in fields.items():
            entries = getattr(self, name)
            shape = "(" + ", ".join(p[0] for p in parts) + ")"
            if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, (tuple, list)):
                raise WrongTypeError(f"Faults.{name}={entries!r} must be a tuple of {shape} entries")
            checked = []
            for i, e in enumerate(entries):
                if not isinstance(e, (tuple, list)) or len(e) != len(parts):
                    raise WrongTypeError(f"Faults.{name}[{i}]={e!r} must be a {shape} tuple")
                checked.append(tuple(
                    check_real(f"Faults.{name}[{i}].{field}", v) if lo is None
                    else check_int(f"Faults.{name}[{i}].{field}", v, lo, hi)
                    for v, (field, lo, hi) in zip(e, parts)))
            object.__setattr__(self, name, tuple(checked))


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class ChipTruth:
    """Hidden ground truth of one chip (all fabrication mismatch).

    Shapes: synapses (2, 256, 256) [half, physical row, column]; drivers
    (2, 128); quadrants (2, 2) [half, left/right]; columns (2, 256).
    Relative factors are multiplicative (1 = nominal); offsets in SI units.
    """

    seed: int
    synapse_gain: np.ndarray
    """Per-synapse current factor, mismatch times the spatial gradient."""
    synapse_dac_bow: np.ndarray
    """Per-synapse DAC bow b: dac(w) = w + b w (63 - w) / 63."""
    driver_gain: np.ndarray
    driver_offset_s: np.ndarray
    quadrant_synapse_bias: np.ndarray
    quadrant_driver_ramp: np.ndarray
    capmem_gain: dict
    """Per capmem parameter name, the per-cell gain factor."""
    capmem_offset: dict
    """Per capmem parameter name, the per-cell offset (V or A)."""
    tau_syn_exc_s: np.ndarray
    tau_syn_inh_s: np.ndarray
    syn_strength_exc: np.ndarray
    syn_strength_inh: np.ndarray
    syn_knee_exc: np.ndarray
    syn_knee_inh: np.ndarray
    membrane_capacitance_f: np.ndarray
    rail_low_v: np.ndarray
    rail_high_v: np.ndarray
    residual_leak_tau_s: np.ndarray
    reset_offset_v: np.ndarray
    leak_offset_v: np.ndarray
    cadc_gain: np.ndarray
    cadc_offset_v: np.ndarray
    cadc_stuck_code: np.ndarray
    """int16 (2, 256): raw code of a stuck channel, -1 for a working one."""

    @classmethod
    def draw(cls, seed: int, mismatch: MismatchParams, circuit: CircuitParams,
             faults: "Faults | None" = None) -> "ChipTruth":
        """Draw a chip. Each quantity has its own stream keyed by (seed, name), so
        adding a quantity later does not change the others."""

        def rng(name):
            return np.random.default_rng([seed, zlib.crc32(name.encode())])

        def lognormal(name, sigma, shape):
            return np.exp(sigma * rng(name).standard_normal(shape))

        def normal(name, sigma, shape):
            return sigma * rng(name).standard_normal(shape)

        H, R, C, D = K.NUM_HALVES, K.SYNAPSE_ROWS_PER_HALF, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF
        col = (H, C)
        # Drivers sit in the middle of each half: the inner edge (columns 127/128)
        # is closest to them and gets the strongest synapses.
        centre = (C - 1) / 2.0
        inner = 1.0 - np.abs(np.arange(C) - centre) / centre
        row_pos = np.arange(R) / (R - 1)
        gradient = (1.0 + mismatch.gradient_column_rel * (inner - 0.5))[None, None, :] \
            * (1.0 + mismatch.gradient_row_rel * (0.5 - row_pos))[None, :, None]
        synapse_gain = lognormal("synapse_gain", mismatch.synapse_gain_rel, (H, R, C)) * gradient
        driver_offset = normal("driver_offset", mismatch.driver_offset_s, (H, D))
        stuck = np.full((H, C), -1, np.int16)
        if faults is not None:
            for h, r in faults.dead_synapse_rows:
                synapse_gain[h, r, :] = 0.0
            for h, c, code in faults.stuck_cadc_channels:
                stuck[h, c] = code
            for h, d, extra in faults.driver_offset_extra_s:
                driver_offset[h, d] += extra

        capmem_gain, capmem_offset = {}, {}
        for p in CAPMEM_PARAMETERS.values():
            capmem_gain[p.name] = _readonly(
                lognormal("capmem_gain/" + p.name, mismatch.capmem_gain_rel, p.shape))
            sigma = mismatch.capmem_offset_v if p.kind == "voltage" else mismatch.capmem_offset_a
            capmem_offset[p.name] = _readonly(normal("capmem_offset/" + p.name, sigma, p.shape))

        return cls(
            seed=int(seed),
            synapse_gain=_readonly(synapse_gain),
            synapse_dac_bow=_readonly(normal("synapse_dac_bow", mismatch.synapse_dac_bow, (H, R, C))),
            driver_gain=_readonly(lognormal("driver_gain", mismatch.driver_gain_rel, (H, D))),
            driver_offset_s=_readonly(driver_offset),
            quadrant_synapse_bias=_readonly(lognormal(
                "quadrant_synapse_bias", mismatch.quadrant_synapse_bias_rel, (H, 2))),
            quadrant_driver_ramp=_readonly(lognormal(
                "quadrant_driver_ramp", mismatch.quadrant_driver_ramp_rel, (H, 2))),
            capmem_gain=capmem_gain,
            capmem_offset=capmem_offset,
            tau_syn_exc_s=_readonly(circuit.tau_syn_s * lognormal("tau_syn_exc", mismatch.tau_syn_rel, col)),
            tau_syn_inh_s=_readonly(circuit.tau_syn_s * lognormal("tau_syn_inh", mismatch.tau_syn_rel, col)),
            syn_strength_exc=_readonly(lognormal("syn_strength_exc", mismatch.syn_strength_rel, col)),
            syn_strength_inh=_readonly(lognormal("syn_strength_inh", mismatch.syn_strength_rel, col)),
            syn_knee_exc=_readonly(lognormal("syn_knee_exc", mismatch.syn_knee_rel, col)),
            syn_knee_inh=_readonly(lognormal("syn_knee_inh", mismatch.syn_knee_rel, col)),
            membrane_capacitance_f=_readonly(circuit.membrane_capacitance_f * lognormal(
                "membrane_capacitance", mismatch.membrane_capacitance_rel, col)),
            rail_low_v=_readonly(circuit.rail_low_v + normal("rail_low", mismatch.rail_v, col)),
            rail_high_v=_readonly(circuit.rail_high_v + normal("rail_high", mismatch.rail_v, col)),
            residual_leak_tau_s=_readonly(circuit.residual_leak_tau_s * lognormal(
                "residual_leak", mismatch.residual_leak_rel, col)),
            reset_offset_v=_readonly(normal("reset_offset", mismatch.neuron_potential_v, col)),
            leak_offset_v=_readonly(normal("leak_offset", mismatch.neuron_potential_v, col)),
            cadc_gain=_readonly(lognormal("cadc_gain", mismatch.cadc_gain_rel, col)),
            cadc_offset_v=_readonly(normal("cadc_offset", mismatch.cadc_offset_v, col)),
            cadc_stuck_code=_readonly(stuck),
        )


def check_half(half):
    """``half`` as an int 0 (top) or 1 (bottom); anything else is refused naming it."""
    return check_int("half", half, 0, K.NUM_HALVES - 1, "(0 top, 1 bottom)")


def _check_int_array(name, values, shape, lo, hi):
    """Validate an integer array: exact shape, integer dtype, within lo..hi."""
    a = as_int_array(name, values, lo, hi)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}; expected {tuple(shape)}")
    return a


_CONFIG_VERSIONS = itertools.count(1)


class ChipConfig:
    """Everything software may write: weights, row signs, capmem settings,
    driver offsets and CADC digital offsets. Arrays are exposed read-only;
    writes go through the ``set_*`` methods, which validate and give the
    configuration a new :attr:`version` so derived operating points are recomputed."""

    def __init__(self):
        H, R, C, D = K.NUM_HALVES, K.SYNAPSE_ROWS_PER_HALF, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF
        self._weights = np.zeros((H, R, C), np.uint8)
        signs = np.where(np.arange(R) % 2 == 0, 1, -1).astype(np.int8)
        self._row_sign = np.tile(signs, (H, 1))
        self._driver_offset = np.full((H, D), 32, np.uint8)
        self._cadc_digital_offset = np.zeros((H, C), np.int16)
        self._cadc_input = np.zeros(H, np.int8)
        self._capmem = {p.name: np.full(p.shape, p.default, np.int16)
                        for p in CAPMEM_PARAMETERS.values()}
        self._touch()

    # --- read access -----------------------------------------------------
    @staticmethod
    def _view(a):
        v = a.view()
        v.setflags(write=False)
        return v

    @property
    def weights(self):
        """Physical 6-bit weights, uint8 (2, 256, 256) [half, row, column]."""
        return self._view(self._weights)

    @property
    def row_sign(self):
        """+1 (excitatory) or -1 (inhibitory) per physical row, int8 (2, 256)."""
        return self._view(self._row_sign)

    @property
    def driver_offset(self):
        """6-bit per-driver offset settings, uint8 (2, 128); 32 is neutral."""
        return self._view(self._driver_offset)

    @property
    def cadc_digital_offset(self):
        """Per-channel digital offsets added to each CADC code, int16 (2, 256)."""
        return self._view(self._cadc_digital_offset)

    @property
    def cadc_input(self):
        """Per half: 0 = the CADC reads the membranes, 1 = the quadrant's reference line."""
        return self._view(self._cadc_input)

    def capmem(self, name):
        """10-bit settings of one capmem parameter (see ``CAPMEM_PARAMETERS``)."""
        return self._view(self._capmem[self._param(name).name])

    # --- all-or-nothing calls ------------------------------------------------
    def _snapshot(self):
        """Copies of everything written here and the version, for :meth:`_restore`."""
        return (self._weights.copy(), self._row_sign.copy(), self._driver_offset.copy(),
                self._cadc_digital_offset.copy(), self._cadc_input.copy(),
                {k: v.copy() for k, v in self._capmem.items()}, self.version)

    def _restore(self, snap):
        """Put back a :meth:`_snapshot` (after a call that failed half-way); the
        version too, so operating points cached for it are valid again."""
        (self._weights, self._row_sign, self._driver_offset, self._cadc_digital_offset,
         self._cadc_input, self._capmem, self.version) = snap

    # --- writes ----------------------------------------------------------
    def _touch(self):
        # Versions are unique across all configurations, so a chip whose config
        # is replaced never mistakes a cached operating point for a current one.
        self.version = next(_CONFIG_VERSIONS)

    @staticmethod
    def _param(name):
        if not isinstance(name, str) or name not in CAPMEM_PARAMETERS:
            raise ValueError(f"capmem parameter {name!r} is unknown; allowed: "
                             f"{', '.join(CAPMEM_PARAMETERS)}")
        return CAPMEM_PARAMETERS[name]

    def set_weights(self, half, weights):
        """Write the physical weights of one half: integers 0..63, shape (256, 256)."""
        half = check_half(half)
        w = _check_int_array("weights", weights, (K.SYNAPSE_ROWS_PER_HALF, K.COLUMNS_PER_HALF),
                             0, K.WEIGHT_MAX)
        self._weights[half] = w
        self._touch()

    def set_logical_weights(self, half, weights):
        """Write signed weights -63..63 of shape (128, 256): logical row i goes to
        physical rows 2i (holds max(w, 0)) and 2i + 1 (holds max(-w, 0)), and the
        row signs are set to excitatory / inhibitory accordingly [W20][SW]."""
        half = check_half(half)
        w = _check_int_array("weights", weights, (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF),
                             -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int16)
        phys = np.empty((K.SYNAPSE_ROWS_PER_HALF, K.COLUMNS_PER_HALF), np.uint8)
        phys[0::2] = np.maximum(w, 0)
        phys[1::2] = np.maximum(-w, 0)
        self._weights[half] = phys
        self._row_sign[half] = np.where(np.arange(K.SYNAPSE_ROWS_PER_HALF) % 2 == 0, 1, -1)
        self._touch()

    def set_row_signs(self, half, signs):
        """Row signs of one half: +1 (excitatory) or -1 (inhibitory), shape (256,)."""
        half = check_half(half)
        s = _check_int_array("row_sign", signs, (K.SYNAPSE_ROWS_PER_HALF,), -1, 1)
        if np.any(s == 0):
            raise ValueError(f"row_sign[{int(np.argmax(s == 0))}]=0 is not allowed: must be +1 or -1")
        self._row_sign[half] = s
        self._touch()

    def set_driver_offsets(self, half, offsets):
        """6-bit driver offset settings of one half, shape (128,), 0..63."""
        half = check_half(half)
        self._driver_offset[half] = _check_int_array(
            "driver_offset", offsets, (K.DRIVERS_PER_HALF,), 0, K.DRIVER_OFFSET_MAX)
        self._touch()

    def set_cadc_digital_offsets(self, half, offsets):
        """Digital offsets of one half's CADC channels, shape (256,), -128..127."""
        half = check_half(half)
        self._cadc_digital_offset[half] = _check_int_array(
            "cadc_digital_offset", offsets, (K.COLUMNS_PER_HALF,),
            K.CADC_DIGITAL_OFFSET_MIN, K.CADC_DIGITAL_OFFSET_MAX)
        self._touch()

    def set_cadc_input(self, half, source):
        """Connect one half's CADC channels to the membranes ('membrane') or to the
        quadrant's reference line ('reference', a calibration aid)."""
        half = check_half(half)
        if not isinstance(source, str) or source not in ("membrane", "reference"):
            raise ValueError(f"source={source!r} is not allowed: 'membrane' or 'reference'")
        self._cadc_input[half] = 0 if source == "membrane" else 1
        self._touch()

    def set_capmem(self, name, values):
        """Write all cells of one capmem parameter (shape (2, 2) or (2, 256)), 0..1023.
        A scalar is broadcast to every cell."""
        p = self._param(name)
        a = np.asarray(values)
        if a.ndim == 0:
            a = np.broadcast_to(a, p.shape)
        self._capmem[name] = _check_int_array(name, a, p.shape, 0, K.CAPMEM_MAX).astype(np.int16)
        self._touch()

    def copy(self) -> "ChipConfig":
        other = ChipConfig()
        other._weights = self._weights.copy()
        other._row_sign = self._row_sign.copy()
        other._driver_offset = self._driver_offset.copy()
        other._cadc_digital_offset = self._cadc_digital_offset.copy()
        other._cadc_input = self._cadc_input.copy()
        other._capmem = {k: v.copy() for k, v in self._capmem.items()}
        other._touch()
        return other


class HalfOperatingPoint(NamedTuple):
    """Derived values of one half that the kernels integrate (internal units:
    ns, fC, mV, uA, pF). Built from truth and configuration by :class:`Chip`."""

    pulse_width_ns: np.ndarray
    """float32 (128, 32): enable-pulse width per driver and input value."""
    current_exc_ua: np.ndarray
    """float32 (128, 256): current into the excitatory input per driver and column."""
    current_inh_ua: np.ndarray
    """float32 (128, 256): current into the inhibitory input per driver and column."""
    column_params: np.ndarray
    """float64 (NUM_COLUMN_PARAMS, 256): see the row names in ``bss2sim.circuits.kernels``."""
    stuck_codes: np.ndarray
    """int16 (256,): code a stuck channel reports (digital offset included), -1 if working."""


PROPAGATOR_TABLE_CYCLES = 32769
"""Longest interval (FPGA cycles, 0..32768 = 262 us) whose propagators are
kept in a table per half (5 x 4 bytes x 256 columns per cycle: 168 MB at
most); the fast path computes longer ones per column from the same formula."""
MAX_PULSE_WIDTH_NS = K.FPGA_CYCLE_S * 1e9
"""The enable pulse ends at the latest with the driver's next 8 ns slot (*assumed*)."""
CAPMEM_SETTLED_FRACTION = 1e-4
"""A capmem transient counts as settled once less than this fraction of its
step remains (*assumed*: 0.16 mV of a full 1.6 V step, 0.03 LSB; the 20 ms that
calibration waits leave 5e-5 at the default time constant, so waiting software
never pays for rebuilding the operating point at every read)."""
_BOLTZMANN = 1.380649e-23
"""Boltzmann constant, J/K (exact, SI 2019)."""
_TAU_DEFAULT_A = CAPMEM_PARAMETERS["syn_tau_exc"].default * K.CAPMEM_CURRENT_FULL_SCALE_A / K.CAPMEM_MAX
"""Nominal current of a synaptic time-constant cell at its default setting, A:
the truth's tau_syn holds there."""


def capmem_value(param: CapmemParameter, setting, gain, offset):
    """Analog value of capmem cells (V or A) from their 10-bit settings.
    Currents cannot go below zero."""
    fs = K.CAPMEM_VOLTAGE_FULL_SCALE_V if param.kind == "voltage" else K.CAPMEM_CURRENT_FULL_SCALE_A
    value = np.asarray(setting, np.float64) * (fs / K.CAPMEM_MAX) * gain + offset
    if param.kind == "current":
        value = np.maximum(value, 0.0)
    return value


def value_to_width_shape(values, nonlinearity):
    """Compressive value-to-width curve w(a) normalised so that w(31) = 31."""
    a = np.asarray(values, np.float64)
    if nonlinearity == 0:
        return a
    return K.INPUT_MAX * np.expm1(-nonlinearity * a / K.INPUT_MAX) / np.expm1(-nonlinearity)


class Chip:
    """One simulated BrainScaleS-2 chip.

    Parameters
    ----------
    seed : int
        Chip seed (>= 0); the same seed is the same chip on every machine.
    mismatch : MismatchParams
        Spreads of fabrication mismatch; ``MismatchParams.none()`` gives an ideal chip.
    circuit : CircuitParams
        Nominal circuit values.
    noise : NoiseParams
        Trial-to-trial noise amplitudes (used only when a run is given a
        :class:`~bss2sim.circuits.rng.TrialNoise`).
    faults : Faults, optional
        Defects injected into the ground truth.
    preset : str
        ``"default"`` (the default), ``"ideal"`` or ``"harsh"``: the drift and
        effect parameters used where ``drift`` or ``effects`` is not given
        (:func:`bss2sim.circuits.params.preset`).
    drift : DriftParams, optional
        Temperature coefficients and slow drift (fixed pattern from the seed).
    effects : EffectParams, optional
        Second-order effects (shared noise, IR drop, DAC bits, charge
        injection, driver recovery, reset, capmem settling and ripple).

    The chip runs at :attr:`environment` (temperature, hours of operation; set
    with :meth:`set_environment`) and keeps a clock :attr:`time_s` that
    software which waits advances with :meth:`advance_time` (capmem writes
    settle along it).
    """

    def __init__(self, seed: int = 0, mismatch: MismatchParams | None = None,
                 circuit: CircuitParams | None = None, noise: NoiseParams | None = None,
                 faults: Faults | None = None, *, preset: str = "default",
                 drift: DriftParams | None = None, effects: EffectParams | None = None):
        self.seed = check_seed("seed", seed)
        for name, value, cls in (("mismatch", mismatch, MismatchParams), ("circuit", circuit, CircuitParams),
                                 ("noise", noise, NoiseParams), ("faults", faults, Faults),
                                 ("drift", drift, DriftParams), ("effects", effects, EffectParams)):
            if value is not None:
                check_instance(name, value, cls, f"bss2sim.circuits.{cls.__name__} or None (the default)")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; allowed: {', '.join(PRESETS)}")
        preset_drift, preset_effects = _preset(preset)
        self.preset = preset
        self.mismatch = mismatch if mismatch is not None else MismatchParams()
        self.circuit = circuit if circuit is not None else CircuitParams()
        self.noise = noise if noise is not None else NoiseParams()
        self.drift = drift if drift is not None else preset_drift
        self.effects = effects if effects is not None else preset_effects
        self.faults = faults
        self.truth = ChipTruth.draw(self.seed, self.mismatch, self.circuit, faults)
        self.config = ChipConfig()
        self._cache = {}
        self._tables = {}
        self._table_key_memo = {}
        self._drift_pattern = DriftPattern(self.seed, self.drift)
        self._environment = Environment(temperature_c=self.drift.reference_temperature_c)
        self._effect_draws = {}
        self.time_s = 0.0
        """The chip's clock, s: advanced by :meth:`advance_time` only."""
        self._capmem_seen = {n: np.array(self.config.capmem(n)) for n in CAPMEM_PARAMETERS}
        self._capmem_transients = {}

    # --- operating condition -------------------------------------------------
    @property
    def environment(self) -> Environment:
        """Temperature and hours of operation the chip runs at."""
        return self._environment

    def set_environment(self, temperature_c: float | None = None, hours: float | None = None) -> Environment:
        """Run the chip at ``temperature_c`` (degrees C, -40..125) and ``hours``
        of operation since its reference time (0..1e6); either left None keeps
        its value. Everything downstream (operating points, both integration
        paths, calibration reads) sees the new condition. Returns the new
        :class:`Environment`; a bad value changes nothing."""
        env = Environment(self._environment.temperature_c if temperature_c is None else temperature_c,
                          self._environment.hours if hours is None else hours)
        self._environment = env
        return env

    def advance_time(self, seconds: float) -> float:
        """Advance the chip's clock by ``seconds`` (>= 0) and return it. Capmem
        settings changed since the last call start settling now, so software
        that waits after a write (as calibration does) is modelled by writing
        and then advancing; a read before the wait has passed sees the cells
        on their way. Settings first noticed by an integration, without an
        advance in between, count as written long ago (settled)."""
        seconds = check_real("seconds", seconds, 0.0)
        self._notice_capmem(settling=True)
        self.time_s += seconds
        return self.time_s

    def _notice_capmem(self, settling):
        """Record capmem cells whose settings changed since last seen; with
        ``settling`` their transient starts at the current clock."""
        tau = self.effects.capmem_settling_tau_s
        # Every write gives the configuration a new version (restored with the
        # settings it belongs to): for the configuration object and version last
        # compared, nothing can have changed. The object is kept too, as a
        # configuration unpickled from another process may repeat a version.
        seen_at = self.__dict__.get("_capmem_seen_at")
        unchanged = seen_at is not None and seen_at[0] is self.config and seen_at[1] == self.config.version
        for name in () if unchanged else CAPMEM_PARAMETERS:
            now = self.config.capmem(name)
            seen = self._capmem_seen[name]
            if np.array_equal(now, seen):
                continue
            if settling:
                # The cell starts from where it was (it may itself be settling).
                self._capmem_transients[name] = (self._capmem_value(name, seen), self.time_s)
            else:
                self._capmem_transients.pop(name, None)
            self._capmem_seen[name] = np.array(now)
        self._capmem_seen_at = (self.config, self.config.version)
        for name, (_, t0) in list(self._capmem_transients.items()):
            if self.time_s - t0 > -np.log(CAPMEM_SETTLED_FRACTION) * tau:
                del self._capmem_transients[name]

    def __repr__(self):
        return f"Chip(seed={self.seed})"

    def _capmem_value(self, name, settings):
        """Analog value of a parameter's cells for ``settings`` at the current
        condition (temperature and drift), without a settling transient."""
        p = CAPMEM_PARAMETERS[name]
        value = capmem_value(p, settings, self.truth.capmem_gain[name], self.truth.capmem_offset[name])
        state = self._drift_state()
        if state is not None:
            how, amount = state.capmem[name]
            value = value + amount if how == "shift" else value * amount
            if p.kind == "current":
                value = np.maximum(value, 0.0)
        return value

    def _capmem(self, name):
        value = self._capmem_value(name, self.config.capmem(name))
        if name in self._capmem_transients:
            start, t0 = self._capmem_transients[name]
            frac = np.exp(-(self.time_s - t0) / self.effects.capmem_settling_tau_s)
            value = value + (start - value) * frac
        return value

    def _drift_state(self):
        key = ("drift", self._environment)
        if key not in self._effect_draws:
            # One condition kept: a study moves through conditions one at a time.
            self._effect_draws = {k: v for k, v in self._effect_draws.items() if k[0] != "drift"}
            self._effect_draws[key] = self._drift_pattern.at(self._environment)
        return self._effect_draws[key]

    def _effect_draw(self, kind, name, shape):
        """Fixed-pattern draws of an effect, keyed by (chip seed, name): standard
        normals (``kind`` "normals") or uniforms in [0, 1) ("uniforms")."""
        key = (kind, name, shape)
        if key not in self._effect_draws:
            rng = np.random.default_rng([self.seed, zlib.crc32(("effect/" + name).encode())])
            self._effect_draws[key] = rng.standard_normal(shape) if kind == "normals" else rng.random(shape)
        return self._effect_draws[key]

    def _effect_normals(self, name, shape):
        return self._effect_draw("normals", name, shape)

    def _effect_uniforms(self, name, shape):
        return self._effect_draw("uniforms", name, shape)

    def _state_key(self):
        self._notice_capmem(settling=False)
        transient = self.time_s if self._capmem_transients else None
        return (self.config.version, self._environment, transient)

    def operating_point(self, half: int) -> HalfOperatingPoint:
        """Effective per-driver and per-column values of one half for the
        current configuration, condition and clock (cached until one changes)."""
        half = check_half(half)
        state = self._state_key()
        key = ("op", half, state)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[2] == state}
            self._cache[key] = self._build_operating_point(half)
        return self._cache[key]

    def _build_operating_point(self, half):
        t, cfg, cp_, fx = self.truth, self.config, self.circuit, self.effects
        C = K.COLUMNS_PER_HALF
        quadrant_of_col = np.arange(C) // K.COLUMNS_PER_QUADRANT
        block_of_driver = np.arange(K.DRIVERS_PER_HALF) // K.DRIVERS_PER_CAPMEM_BLOCK
        drift = self._drift_state()

        # Pulse width per driver and value.
        ramp = self._capmem("driver_ramp")[half] * t.quadrant_driver_ramp[half]
        scale = cp_.driver_ramp_nominal_a / np.maximum(ramp, 1e-15)
        shape = value_to_width_shape(np.arange(K.INPUT_MAX + 1), cp_.pulse_nonlinearity)
        width = (t.driver_gain[half][:, None] * cp_.pulse_width_per_value_s * shape[None, :]
                 + t.driver_offset_s[half][:, None]
                 + (cfg.driver_offset[half].astype(np.float64)[:, None] - 32) * cp_.driver_offset_step_s)
        width = width * scale[block_of_driver][:, None]
        if drift is not None:
            width = width * drift.driver_width[half][:, None]
        width = np.clip(width * 1e9, 0.0, MAX_PULSE_WIDTH_NS)
        width[:, 0] = 0.0

        # Synapse currents, summed per driver into the excitatory / inhibitory input.
        # The DAC's bow, and its binary-weighted sources: bit i switches 2^i unit
        # sources, each with its own mismatch; a larger source matches better
        # (Pelgrom). One compiled pass (this runs after every weight write).
        unit_rel = float(fx.synapse_dac_unit_mismatch_rel)
        bits = self._effect_normals("synapse_dac_bits", (K.WEIGHT_BITS,) + t.synapse_gain.shape) \
            if unit_rel > 0 else _NO_DAC_BITS
        dac = np.empty(cfg.weights[half].shape)
        _k.synapse_dac_kernel(cfg.weights[half], t.synapse_dac_bow[half], bits, half, unit_rel, K.WEIGHT_MAX, dac)
        bias = self._capmem("synapse_bias")[half] * t.quadrant_synapse_bias[half]
        bias_col = (bias / cp_.synapse_bias_nominal_a)[quadrant_of_col]
        gain = t.synapse_gain[half] if drift is None else t.synapse_gain[half] * drift.synapse[half]
        current = cp_.synapse_current_full_scale_a * 1e6 * dac / K.WEIGHT_MAX \
            * gain * bias_col[None, :]
        if fx.row_ir_drop_rel_per_ua > 0:
            # The whole row draws its current through one supply line while the
            # pulse lasts: its IR drop lowers every synapse of the row alike.
            current = current / (1.0 + fx.row_ir_drop_rel_per_ua * current.sum(axis=1, keepdims=True))
        exc = cfg.row_sign[half] > 0
        cur_e = np.where(exc[:, None], current, 0.0)
        cur_i = np.where(exc[:, None], 0.0, current)
        cur_e = cur_e[0::2] + cur_e[1::2]
        cur_i = cur_i[0::2] + cur_i[1::2]

        # Per-column values.
        cap_pf = t.membrane_capacitance_f[half] * 1e12
        gce = cp_.syn_strength_nominal * self._capmem("syn_strength_exc")[half] \
            / cp_.syn_strength_nominal_a * t.syn_strength_exc[half] / cap_pf
        gci = cp_.syn_strength_nominal * self._capmem("syn_strength_inh")[half] \
            / cp_.syn_strength_nominal_a * t.syn_strength_inh[half] / cap_pf
        residual = t.membrane_capacitance_f[half] / t.residual_leak_tau_s[half]
        if drift is not None:
            residual = residual * drift.leak_conductance[half]
        g_leak = residual + cp_.leak_conductance_per_a * self._capmem("leak_bias")[half]
        ramp_start = self._capmem("cadc_ramp_start")[half][quadrant_of_col]
        slope = self._capmem("cadc_ramp_slope")[half][quadrant_of_col]
        cadc_gain = t.cadc_gain[half] if drift is None else t.cadc_gain[half] * drift.cadc_gain[half]
        step = cp_.cadc_step_nominal_v * slope / cp_.cadc_slope_nominal_a / cadc_gain
        step = np.maximum(step, 1e-9)
        # The synaptic time constants are set through capmem biases, as on
        # silicon: tau scales as the default cell's nominal current over the cell's.
        tau_ref_a = _TAU_DEFAULT_A
        tau_e = t.tau_syn_exc_s[half] * tau_ref_a / np.maximum(self._capmem("syn_tau_exc")[half], 1e-12)
        tau_i = t.tau_syn_inh_s[half] * tau_ref_a / np.maximum(self._capmem("syn_tau_inh")[half], 1e-12)
        rail_lo = t.rail_low_v[half] if drift is None else t.rail_low_v[half] + drift.rail_low_v[half]
        rail_hi = t.rail_high_v[half] if drift is None else t.rail_high_v[half] + drift.rail_high_v[half]
        cadc_off = t.cadc_offset_v[half] if drift is None else t.cadc_offset_v[half] + drift.cadc_offset_v[half]
        cp = np.zeros((_k.NUM_COLUMN_PARAMS, C))
        cp[_k.LAM_E] = 1e-9 / tau_e
        cp[_k.LAM_I] = 1e-9 / tau_i
        cp[_k.LAM_M] = 1e-9 * g_leak / t.membrane_capacitance_f[half]
        cp[_k.GC_E] = gce
        cp[_k.GC_I] = gci
        cp[_k.KNEE_E] = cp_.syn_knee_c * 1e15 * t.syn_knee_exc[half]
        cp[_k.KNEE_I] = cp_.syn_knee_c * 1e15 * t.syn_knee_inh[half]
        cp[_k.HEAD_E] = cp_.syn_saturation_headroom_c * 1e15 * t.syn_knee_exc[half]
        cp[_k.HEAD_I] = cp_.syn_saturation_headroom_c * 1e15 * t.syn_knee_inh[half]
        cp[_k.E_LEAK] = 1e3 * (self._capmem("leak_potential")[half] + t.leak_offset_v[half])
        cp[_k.V_RESET] = 1e3 * (self._capmem("reset_potential")[half] + t.reset_offset_v[half])
        cp[_k.RAIL_LO] = 1e3 * rail_lo
        cp[_k.RAIL_HI] = 1e3 * rail_hi
        cp[_k.CADC_START] = 1e3 * ramp_start
        cp[_k.CADC_STEP] = 1e3 * step
        cp[_k.CADC_OFFSET] = 1e3 * cadc_off
        # Noise density in mV per sqrt(ns); read noise in mV (LSB x step).
        cp[_k.NOISE_MEM] = 1e3 * self.noise.membrane_noise_v_per_sqrt_s / np.sqrt(1e9)
        cp[_k.NOISE_READ] = self.noise.cadc_read_noise_lsb * cp[_k.CADC_STEP]
        cp[_k.NOISE_CM] = fx.cadc_common_noise_lsb * cp[_k.CADC_STEP]
        cp[_k.NOISE_LF] = fx.low_frequency_noise_lsb * cp[_k.CADC_STEP]
        cp[_k.LF_SHARED] = fx.low_frequency_shared_fraction
        if fx.reset_ktc_noise:
            kelvin = self._environment.temperature_c + 273.15
            cp[_k.NOISE_KTC] = 1e3 * np.sqrt(_BOLTZMANN * kelvin / t.membrane_capacitance_f[half])
        cp[_k.DIGITAL_OFFSET] = cfg.cadc_digital_offset[half]
        if fx.charge_injection_exc_c > 0 or fx.charge_injection_inh_c > 0:
            spread = fx.charge_injection_spread_rel
            for row, q, name in ((_k.QINJ_E, fx.charge_injection_exc_c, "charge_injection_exc"),
                                 (_k.QINJ_I, fx.charge_injection_inh_c, "charge_injection_inh")):
                n = self._effect_normals(name, (K.NUM_HALVES, C))[half]
                cp[row] = 1e15 * q * np.maximum(1.0 + spread * n, 0.0)
        # Reset and leak potentials are held within the rails like the membrane.
        cp[_k.V_RESET] = np.clip(cp[_k.V_RESET], cp[_k.RAIL_LO], cp[_k.RAIL_HI])
        if fx.reset_residual_rel > 0:
            # A finite reset leaves part of the distance from rest (where the
            # sequence resets from) to the reset potential.
            frac = fx.reset_residual_rel * np.maximum(
                1.0 + 0.5 * self._effect_normals("reset_residual", (K.NUM_HALVES, C))[half], 0.0)
            cp[_k.V_RESET] = cp[_k.V_RESET] + frac * (cp[_k.E_LEAK] - cp[_k.V_RESET])
        if fx.capmem_ripple_v > 0:
            cp[_k.RIPPLE] = 1e3 * fx.capmem_ripple_v
            phase_n = self._effect_uniforms("ripple_phase_neuron", (2, K.NUM_HALVES, C))
            phase_q = self._effect_uniforms("ripple_phase_quadrant", (K.NUM_HALVES, K.QUADRANTS_PER_HALF))
            cp[_k.PHASE_RESET] = phase_n[0, half]
            cp[_k.PHASE_LEAK] = phase_n[1, half]
            cp[_k.PHASE_START] = phase_q[half][quadrant_of_col]
        if cfg.cadc_input[half] == 1:
            # The channels read the quadrant's reference line: a constant, quiet voltage.
            ref = 1e3 * self._capmem("cadc_reference")[half][quadrant_of_col]
            cp[_k.V_RESET] = cp[_k.E_LEAK] = ref
            cp[_k.GC_E] = cp[_k.GC_I] = 0.0
            cp[_k.NOISE_MEM] = 0.0
            cp[_k.NOISE_KTC] = 0.0
            cp[_k.QINJ_E] = cp[_k.QINJ_I] = 0.0
            # The line is one capmem cell: its droop has one phase.
            cp[_k.PHASE_RESET] = cp[_k.PHASE_LEAK] = self._effect_uniforms(
                "ripple_phase_reference", (K.NUM_HALVES, K.QUADRANTS_PER_HALF))[half][quadrant_of_col]
            cp[_k.RAIL_LO] = np.minimum(cp[_k.RAIL_LO], ref - 1.0)
            cp[_k.RAIL_HI] = np.maximum(cp[_k.RAIL_HI], ref + 1.0)
        # Propagators over a whole CADC ramp bound how far the membrane can move
        # during one conversion.
        conv_end = _propagators(cp, [K.CADC_CONVERSION_S * 1e9])[:, 0, :]
        cp[_k.CONV_AM] = conv_end[_k.T_AM]
        cp[_k.CONV_BE] = conv_end[_k.T_BE]
        cp[_k.CONV_BI] = conv_end[_k.T_BI]
        cp[_k.INV_STEP] = 1.0 / cp[_k.CADC_STEP]
        ok = np.ones(C, bool)
        for lam_row, gc_row, resp_row in ((_k.LAM_E, _k.GC_E, _k.RESP_E), (_k.LAM_I, _k.GC_I, _k.RESP_I)):
            diff = cp[lam_row] - cp[_k.LAM_M]
            close = np.abs(diff) <= 1e-6 * cp[lam_row]
            ok &= ~close
            cp[resp_row] = np.where(close, 0.0, cp[gc_row] * cp[lam_row] / np.where(close, 1.0, diff))
        cp[_k.LINEAR_OK] = ok
        return HalfOperatingPoint(
            pulse_width_ns=_readonly(width.astype(np.float32)),
            current_exc_ua=_readonly(np.ascontiguousarray(cur_e, np.float32)),
            current_inh_ua=_readonly(np.ascontiguousarray(cur_i, np.float32)),
            column_params=_readonly(cp),
            stuck_codes=_readonly(np.where(
                t.cadc_stuck_code[half] >= 0,
                np.clip(t.cadc_stuck_code[half] + cfg.cadc_digital_offset[half], 0, K.CADC_MAX),
                -1).astype(np.int16)),
        )

    def _table_key(self, kind, half):
        """Tables depend only on the rates and strengths of the columns: key them by
        those values, so writes that leave them alone (weights, offsets, potentials,
        CADC ramps) reuse the tables."""
        op = self.operating_point(half)
        memos = self.__dict__.setdefault("_table_key_memo", {})   # absent in chips pickled before it
        memo = memos.get(half)
        if memo is None or memo[0] is not op:
            # One hash per operating point (they are rebuilt when the configuration
            # changes), not one per table lookup.
            rows = op.column_params[[_k.LAM_E, _k.LAM_I, _k.LAM_M, _k.GC_E, _k.GC_I]]
            memo = (op, hashlib.blake2b(rows.tobytes(), digest_size=16).digest())
            memos[half] = memo
        return (kind, memo[1])

    def _table_store(self, key, tab):
        tab.setflags(write=False)
        self._tables[key] = tab
        while len(self._tables) > 12:
            self._tables.pop(next(iter(self._tables)))
        return tab

    def _grown_table(self, kind, half, num_cycles, axis, build):
        """A cached table over 0 .. n-1 FPGA cycles along ``axis``, built by
        ``build(column_params, t_ns)``, grown (doubling) on demand to at least
        ``num_cycles``, at most :data:`PROPAGATOR_TABLE_CYCLES`."""
        half = check_half(half)
        num_cycles = min(check_int("num_cycles", num_cycles, 1, K.MAX_CYCLE + 1), PROPAGATOR_TABLE_CYCLES)
        key = self._table_key(kind, half)
        tab = self._tables.get(key)
        if tab is None or tab.shape[axis] < num_cycles:
            size = min(PROPAGATOR_TABLE_CYCLES, max(num_cycles, 64 if tab is None else 2 * tab.shape[axis]))
            cp = self.operating_point(half).column_params
            tab = self._table_store(key, build(cp, np.arange(size) * K.FPGA_CYCLE_S * 1e9).astype(np.float32))
        return tab

    def propagator_tables(self, half: int, num_cycles: int) -> np.ndarray:
        """float32 (5, n, 256) propagators for 0 .. n-1 FPGA cycles (cached, grown
        on demand), n at most :data:`PROPAGATOR_TABLE_CYCLES`: the kernels
        compute longer intervals, so a result never depends on the table size."""
        return self._grown_table("tab", half, num_cycles, 1, _propagators)

    def leak_decay_table(self, half: int, num_cycles: int) -> np.ndarray:
        """float32 (n, 256): the leak's decay exp(-lam_m t) after 0 .. n-1 FPGA
        cycles (the propagator tables' first row, kept longer: reads lie far
        after the reset while events lie close together); cached, grown on
        demand, n at most :data:`PROPAGATOR_TABLE_CYCLES`."""
        return self._grown_table("am", half, num_cycles, 0, leak_decay)

    def conversion_tables(self, half: int) -> np.ndarray:
        """float64 (256 columns, 256 ticks, 5) propagators for the CADC ramp ticks."""
        key = self._table_key("ctab", half)
        if key not in self._tables:
            t = np.arange(_k.CADC_LEVELS) * K.CADC_TICK_S * 1e9
            cp = self.operating_point(half).column_params
            self._table_store(key, np.ascontiguousarray(_propagators(cp, t).transpose(2, 1, 0)))
        return self._tables[key]

    def conversion_tick_slopes(self, half: int) -> np.ndarray:
        """float64 (256 columns, 3): the largest change from one CADC ramp tick to
        the next of the conversion tables' rows AM, BE and BI (no unit, mV/fC,
        mV/fC). They bound how far a linear membrane moves per tick, which tells
        the fast path when the comparator cannot fire and then release."""
        key = self._table_key("cslope", half)
        if key not in self._tables:
            ctab = self.conversion_tables(half)
            d = np.abs(np.diff(ctab[:, :, [_k.T_AM, _k.T_BE, _k.T_BI]], axis=1)).max(axis=1)
            self._table_store(key, np.ascontiguousarray(d))
        return self._tables[key]


_NO_DAC_BITS = np.zeros((0, 1, 1, 1))
"""The DAC's bit draws where the unit-source mismatch is off (none are read)."""


def leak_decay(cp, t_ns):
    """exp(-lam_m t) per time (rows) and column: the decay of (v - e_leak) after
    ``t_ns`` nanoseconds, the tables' first row."""
    return np.exp(-cp[_k.LAM_M][None, :] * np.asarray(t_ns, np.float64)[:, None])


def _propagators(cp, t_ns):
    """Exact propagators of the linear circuit after times ``t_ns`` per column.

    For charge x held on a synaptic input with rate lam and a membrane with
    leak rate lam_m, the membrane response is
    gc * lam / (lam - lam_m) * (exp(-lam_m t) - exp(-lam t)),
    and gc * lam * t * exp(-lam t) in the degenerate case lam = lam_m."""
    t = np.asarray(t_ns, np.float64)[:, None]
    lam_m = cp[_k.LAM_M][None, :]
    am = leak_decay(cp, t_ns)
    out = np.empty((_k.NUM_TABLES, t.shape[0], cp.shape[1]))
    out[_k.T_AM] = am
    for a_row, b_row, lam_row, gc_row in ((_k.T_AE, _k.T_BE, _k.LAM_E, _k.GC_E),
                                          (_k.T_AI, _k.T_BI, _k.LAM_I, _k.GC_I)):
        lam = cp[lam_row][None, :]
        a = np.exp(-lam * t)
        diff = lam - lam_m
        close = np.abs(diff) <= 1e-6 * lam
        safe = np.where(close, 1.0, diff)
        b = np.where(close, lam * t * a, lam / safe * (am - a))
        out[a_row] = a
        out[b_row] = cp[gc_row][None, :] * b
    return out
