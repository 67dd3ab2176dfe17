"""Tunable parameters of the analog model: nominal circuit values, mismatch
distributions (fixed pattern) and trial-to-trial noise.

Every value not published in the facts sheet is an assumption: it has a unit,
a default and a one-line reason, and it can be changed. Three dataclasses keep
three kinds of numbers apart:

* :class:`CircuitParams`: nominal (mismatch-free) circuit values,
* :class:`MismatchParams`: spreads of fabrication mismatch, drawn once per chip seed,
* :class:`NoiseParams`: trial-to-trial noise, drawn per operation from a caller's seed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .checks import WrongTypeError, check_real


def _check_finite_nonneg(obj, names):
    for name in names:
        check_real(f"{type(obj).__name__}.{name}", getattr(obj, name), 0.0)


def _check_positive(obj, names):
    for name in names:
        check_real(f"{type(obj).__name__}.{name}", getattr(obj, name), 0.0, lo_open=True)


@dataclass(frozen=True)
class CircuitParams:
    """Nominal circuit values (no mismatch). Units in the field names."""

    pulse_width_per_value_s: float = 0.19e-9
    """Enable-pulse width per unit of the 5-bit input at the nominal driver ramp
    current; 0.19 ns gives about 5.9 ns for 31 (*assumed*: "a few ns" [TH], and the
    pulse must end before the driver's next 8 ns slot)."""
    pulse_nonlinearity: float = 0.10
    """Compressive curvature kappa of the value-to-width map
    ``w(a) = 31 (1 - exp(-kappa a / 31)) / (1 - exp(-kappa))``; 0.10 bends the curve by
    about 1.2 % of full scale at mid-range (*assumed*, "not perfectly linear" [TH])."""
    driver_offset_step_s: float = 0.03e-9
    """Pulse-width change per step of the 6-bit driver offset setting; centre code 32
    adds nothing, so the setting trims about +-1 ns, some 5 sigma of the drivers'
    offset and gain mismatch at mid-range inputs (*assumed*)."""
    driver_ramp_nominal_a: float = 0.5e-6
    """Driver ramp current at which the pulse width is nominal; the width scales as
    nominal / actual (*assumed*)."""
    synapse_bias_nominal_a: float = 0.5e-6
    """Per-quadrant synapse bias current at which a weight of 63 draws
    ``synapse_current_full_scale_a`` (*assumed*)."""
    synapse_current_full_scale_a: float = 0.49e-6
    """Synapse current at weight 63 and nominal bias (*assumed*: capmem currents are
    about 0-1 uA [TH])."""
    tau_syn_s: float = 0.32e-6
    """Synaptic-input time constant [TH]."""
    syn_strength_nominal: float = 10.0
    """Charge-transfer gain of the synaptic-input OTA (membrane charge per synaptic
    charge) at ``syn_strength_nominal_a`` bias; chosen so that a calibrated chip
    gives about 0.0015 LSB per unit of x*w per send [SW] (*assumed*)."""
    syn_strength_nominal_a: float = 0.5e-6
    """OTA bias current at which the strength is nominal; strength is proportional
    to bias (*assumed*)."""
    syn_knee_c: float = 40e-15
    """Synaptic-input charge up to which its transconductance is linear: about 14
    maximal events arriving at once, reached by dense strong inputs sent faster
    than every 40 ns (*assumed*)."""
    syn_saturation_headroom_c: float = 20e-15
    """Above the knee the effective charge approaches knee + headroom as a tanh
    (*assumed*)."""
    membrane_capacitance_f: float = 2.0e-12
    """Membrane capacitance at the largest setting (*assumed* about 2 pF in the facts)."""
    rail_low_v: float = 0.30
    """Lower limit of the membrane swing (*assumed*: 80 LSB below the 0.70 V rest,
    giving the linear range of about +-80 LSB seen on silicon [SW])."""
    rail_high_v: float = 1.10
    """Upper limit of the membrane swing (*assumed*, as ``rail_low_v``)."""
    residual_leak_tau_s: float = 300e-6
    """Membrane time constant of the pseudo-leak that remains with leak bias 0
    (*assumed*)."""
    leak_conductance_per_a: float = 2.0e-6 / 1.0e-6
    """Leak conductance per ampere of leak bias, in S/A: 1 uA bias gives 2 uS,
    i.e. tau_m = 1 us at 2 pF (*assumed*)."""
    cadc_step_nominal_v: float = 5.0e-3
    """CADC ramp step per code at ``cadc_slope_nominal_a`` (*assumed*: 256 codes over
    about 1.3 V)."""
    cadc_slope_nominal_a: float = 0.5e-6
    """Ramp-slope bias at which the step is nominal; the step is proportional to it."""

    def __post_init__(self):
        _check_positive(self, [
            "pulse_width_per_value_s", "driver_offset_step_s", "driver_ramp_nominal_a",
            "synapse_bias_nominal_a", "synapse_current_full_scale_a", "tau_syn_s",
            "syn_strength_nominal", "syn_strength_nominal_a", "syn_knee_c",
            "syn_saturation_headroom_c", "membrane_capacitance_f", "residual_leak_tau_s",
            "cadc_step_nominal_v", "cadc_slope_nominal_a"])
        _check_finite_nonneg(self, ["pulse_nonlinearity", "leak_conductance_per_a"])
        for name in ("rail_low_v", "rail_high_v"):
            check_real(f"CircuitParams.{name}", getattr(self, name))
        if not float(self.rail_low_v) < float(self.rail_high_v):
            raise ValueError(
                f"CircuitParams.rail_low_v={self.rail_low_v!r} must be below "
                f"rail_high_v={self.rail_high_v!r}")


@dataclass(frozen=True)
class MismatchParams:
    """Standard deviations of fixed-pattern mismatch, drawn once per chip seed.

    ``*_rel`` fields are relative (a log-normal factor ``exp(N(0, sigma))``),
    ``*_v``, ``*_s`` and ``*_a`` fields are absolute Gaussian offsets. All defaults are
    *assumed*; they are sized so that an uncalibrated chip shows the spreads
    calibration exists to remove.
    """

    synapse_gain_rel: float = 0.08
    """Per-synapse current-DAC gain."""
    synapse_dac_bow: float = 0.02
    """Per-synapse DAC nonlinearity: ``dac(w) = w + b w (63 - w) / 63``, ``b ~ N(0, .)``."""
    gradient_column_rel: float = 0.12
    """Synapse amplitude difference between the inner edge (columns next to the
    drivers in the middle of the half) and the outer edges [SW tutorials]."""
    gradient_row_rel: float = 0.04
    """Synapse amplitude difference between the first and the last row."""
    driver_gain_rel: float = 0.05
    """Per-driver gain of the value-to-width map."""
    driver_offset_s: float = 0.15e-9
    """Per-driver pulse-width offset, removed by the 6-bit offset setting."""
    quadrant_synapse_bias_rel: float = 0.08
    """Per-quadrant factor on the synapse bias current."""
    quadrant_driver_ramp_rel: float = 0.05
    """Per-quadrant factor on the drivers' ramp current."""
    capmem_gain_rel: float = 0.02
    """Per capmem cell gain."""
    capmem_offset_v: float = 5e-3
    """Per capmem voltage-cell offset."""
    capmem_offset_a: float = 5e-9
    """Per capmem current-cell offset."""
    tau_syn_rel: float = 0.05
    """Per column and input (excitatory, inhibitory) synaptic time constant."""
    syn_strength_rel: float = 0.08
    """Per column and input synaptic-input strength (calibration matches exc and inh)."""
    syn_knee_rel: float = 0.10
    """Per column and input knee of the synaptic-input saturation."""
    membrane_capacitance_rel: float = 0.03
    """Per column membrane capacitance."""
    rail_v: float = 0.010
    """Per column offset of each swing limit."""
    residual_leak_rel: float = 0.5
    """Per column spread of the residual-leak time constant."""
    neuron_potential_v: float = 0.015
    """Per column offset of the reset and leak potentials beyond the capmem cell."""
    cadc_gain_rel: float = 0.03
    """Per channel ramp gain of the CADC."""
    cadc_offset_v: float = 0.015
    """Per channel comparator offset (3 LSB)."""

    def __post_init__(self):
        _check_finite_nonneg(self, [f.name for f in dataclasses.fields(self)])

    @classmethod
    def none(cls) -> "MismatchParams":
        """A chip without any fixed-pattern mismatch (an ideal chip)."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})

    def scaled(self, factor: float) -> "MismatchParams":
        """All spreads multiplied by ``factor``."""
        factor = check_real("factor", factor, 0.0)
        return type(self)(**{f.name: getattr(self, f.name) * factor
                             for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class NoiseParams:
    """Trial-to-trial noise amplitudes (drawn per operation, never per chip)."""

    membrane_noise_v_per_sqrt_s: float = 2.0
    """Membrane voltage noise density, as a Wiener process with leak: about 5 mV
    (1 LSB) over a 6 us integration (*assumed*)."""
    cadc_read_noise_lsb: float = 1.2
    """Standard deviation of one CADC read in LSB; with the membrane noise, one
    baseline-subtracted VMM result has about 2 LSB of noise [SW] (*assumed*)."""

    def __post_init__(self):
        _check_finite_nonneg(self, ["membrane_noise_v_per_sqrt_s", "cadc_read_noise_lsb"])

    @classmethod
    def none(cls) -> "NoiseParams":
        return cls(0.0, 0.0)


@dataclass(frozen=True)
class DriftParams:
    """Temperature coefficients and slow drift: what moves a calibrated chip.

    Both are fixed pattern (drawn from the chip seed): each cell has its own
    temperature coefficient ``mean + spread N(0, 1)`` and its own drift
    trajectory over the hours of operation. At the reference temperature and at
    hour 0 neither changes anything, so a chip calibrated there is the chip
    drawn from :class:`MismatchParams`. The drift of every cell is a seeded
    random-walk-like process: a sum of sinusoids with random phases at
    log-spaced periods from 15 min to 2 years whose powers grow with the period,
    so the variance of the change grows about linearly with time (like a
    random walk) over that whole span (``bss2sim.circuits.environment``);
    ``*_drift_*`` fields give its rms after 24 hours.

    All values are *assumed* (the chip group recalibrates nightly or weekly
    and reports drift of calibrated setups qualitatively, not per cell); they
    are sized so that a day or a few kelvin move a calibrated VMM by a few LSB.
    """

    reference_temperature_c: float = 25.0
    """Temperature (degrees C) at which the mismatch of :class:`MismatchParams`
    holds and a default calibration is made."""
    capmem_voltage_tempco_mean_v_per_k: float = -0.1e-3
    """Mean temperature coefficient of a capmem voltage cell, V/K (a bandgap-
    referenced DAC: small and common to all cells)."""
    capmem_voltage_tempco_spread_v_per_k: float = 0.05e-3
    """Per-cell spread of that coefficient, V/K."""
    capmem_current_tempco_mean_rel_per_k: float = 0.003
    """Mean relative temperature coefficient of a capmem current cell (and so of
    every bias it sets: synapse DAC bias, driver ramp, OTA strengths, CADC ramp
    slope, synaptic time constants), 1/K: about PTAT."""
    capmem_current_tempco_spread_rel_per_k: float = 0.001
    """Per-cell spread of that coefficient, 1/K."""
    driver_width_tempco_spread_rel_per_k: float = 0.001
    """Per-driver relative temperature coefficient of the pulse width (its
    comparator and ramp capacitor), spread around 0, 1/K."""
    synapse_tempco_spread_rel_per_k: float = 0.0005
    """Per-synapse relative temperature coefficient of the DAC current, spread
    around 0, 1/K (the common part is the bias cell's)."""
    cadc_gain_tempco_spread_rel_per_k: float = 0.0005
    """Per-channel relative temperature coefficient of the CADC ramp gain, 1/K."""
    cadc_offset_tempco_spread_v_per_k: float = 0.05e-3
    """Per-channel temperature coefficient of the comparator offset, V/K."""
    rail_tempco_spread_v_per_k: float = 0.2e-3
    """Per-column temperature coefficient of the membrane swing limits, V/K."""
    residual_leak_tempco_rel_per_k: float = 0.07
    """Growth of the residual leak conductance per kelvin (subthreshold leakage
    about doubles every 10 K), 1/K; per column spread by a tenth of it."""
    capmem_voltage_drift_v: float = 1.0e-3
    """rms drift of a capmem voltage cell after 24 h, V."""
    capmem_current_drift_rel: float = 0.005
    """rms relative drift of a capmem current cell after 24 h."""
    driver_width_drift_rel: float = 0.003
    """rms relative drift of a driver's pulse width after 24 h."""
    synapse_drift_rel: float = 0.003
    """rms relative drift of the synapse currents of a column after 24 h (per
    column: the column's synapses share their bias line)."""
    cadc_offset_drift_v: float = 0.5e-3
    """rms drift of a CADC channel's comparator offset after 24 h, V."""
    rail_drift_v: float = 1.0e-3
    """rms drift of a column's swing limits after 24 h, V."""
    residual_leak_drift_rel: float = 0.05
    """rms relative drift of a column's residual leak after 24 h."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name in ("reference_temperature_c", "capmem_voltage_tempco_mean_v_per_k",
                          "capmem_current_tempco_mean_rel_per_k"):
                check_real(f"DriftParams.{f.name}", getattr(self, f.name))
            else:
                check_real(f"DriftParams.{f.name}", getattr(self, f.name), 0.0)

    def scaled(self, factor: float) -> "DriftParams":
        """Every coefficient and drift multiplied by ``factor`` (the reference
        temperature kept)."""
        factor = check_real("factor", factor, 0.0)
        return type(self)(**{f.name: getattr(self, f.name) * (1 if f.name == "reference_temperature_c" else factor)
                             for f in dataclasses.fields(self)})

    @classmethod
    def none(cls) -> "DriftParams":
        """No temperature dependence and no drift."""
        return cls().scaled(0.0)


@dataclass(frozen=True)
class EffectParams:
    """Second-order circuit effects that per-column calibration cannot remove.

    Each field switches one effect off at 0. All values are *assumed* (not
    published per circuit); each line says why its size is plausible.
    """

    cadc_common_noise_lsb: float = 0.5
    """rms of the noise each conversion shares across the 128 channels of a
    quadrant (the shared ramp and its references), LSB per read."""
    low_frequency_noise_lsb: float = 0.5
    """rms of a slow noise per channel (1/f noise of the comparator and the
    reference lines), LSB per read."""
    low_frequency_shared_fraction: float = 0.8
    """Fraction of that slow noise's variance that the baseline read and the
    read of one VMM share (they are some 30 us apart, far shorter than its
    correlation time); only the rest adds to the difference."""
    row_ir_drop_rel_per_ua: float = 2.5e-4
    """Relative loss of every synapse current of a row per uA that the whole row
    draws during the pulse (IR drop on the row's shared supply line): a row
    of 256 maximal weights (about 125 uA) loses about 3 %."""
    column_ir_drop_rel_per_ua: float = 0.01
    """Relative loss of the current a synapse sends into its column's input line
    per uA that the other synapses of that line send at the same time (events
    of several drivers in the same cycle)."""
    synapse_dac_unit_mismatch_rel: float = 0.03
    """Relative mismatch of one unit current source of the binary-weighted
    synapse DAC; bit i (2^i units) has sigma ``x / sqrt(2^i)`` (Pelgrom), so
    the step from 31 to 32 has a differential nonlinearity of about 0.2 LSB of
    the DAC."""
    charge_injection_exc_c: float = 0.004e-15
    """Charge each event injects into the excitatory input of every column of the
    half, whatever the weight (enable-pulse feedthrough), C."""
    charge_injection_inh_c: float = 0.003e-15
    """The same into the inhibitory input, C: the net of the two, about 0.001
    LSB per event, is an offset that grows with the number of events. Sized so
    that the group's VMMs of 128 inputs sent 100 times [SW] stay usable (about
    13 LSB of offset); ten times as much would saturate them."""
    charge_injection_spread_rel: float = 0.3
    """Per-column relative spread of both injected charges."""
    driver_recovery_depth: float = 0.2
    """Fraction of a pulse's width lost when the same driver fired just before
    (its pulse-shaping node has not recovered)."""
    driver_recovery_tau_s: float = 30e-9
    """Recovery time constant of that loss, s: the loss is
    ``depth exp(-dt / tau)`` for a pulse ``dt`` after the same driver's last."""
    reset_ktc_noise: bool = True
    """Sample kT/C noise on the membrane capacitance at each reset (45 uV rms on
    2 pF at 25 degrees C: about 0.01 LSB, a floor, not a term that matters)."""
    reset_residual_rel: float = 0.01
    """Mean fraction of the membrane's distance from the reset potential left
    after a reset (finite reset conductance over the reset time); per column
    spread by half of it. The VMM sequence resets from rest, so this shifts the
    start towards the leak potential."""
    capmem_settling_tau_s: float = 2e-3
    """Time constant of a capmem cell's approach to a new setting, s: the 20 ms
    that calibration software waits after a write is ten of them."""
    capmem_ripple_v: float = 1.0e-3
    """Droop of a capmem voltage cell between two refreshes, V peak to peak: the
    cell's value at a read falls by ``ripple x phase``, the phase in 0..1 of
    the refresh cycle (fixed per cell relative to the others, random per read)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name == "reset_ktc_noise":
                if not isinstance(self.reset_ktc_noise, (bool, np.bool_)):
                    raise WrongTypeError(f"EffectParams.reset_ktc_noise={self.reset_ktc_noise!r} "
                                         "must be True or False")
                continue
            check_real(f"EffectParams.{f.name}", getattr(self, f.name), 0.0)
        for name in ("low_frequency_shared_fraction", "driver_recovery_depth"):
            check_real(f"EffectParams.{name}", getattr(self, name), 0.0, 1.0)
        check_real("EffectParams.driver_recovery_tau_s", self.driver_recovery_tau_s, 0.0, lo_open=True)
        check_real("EffectParams.capmem_settling_tau_s", self.capmem_settling_tau_s, 0.0, lo_open=True)

    def scaled(self, factor: float) -> "EffectParams":
        """Every magnitude multiplied by ``factor`` (fractions capped at their
        range; time constants and switches kept)."""
        factor = check_real("factor", factor, 0.0)
        keep = ("low_frequency_shared_fraction", "driver_recovery_tau_s", "reset_ktc_noise",
                "capmem_settling_tau_s", "charge_injection_spread_rel")
        values = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            values[f.name] = v if f.name in keep else v * factor
        values["driver_recovery_depth"] = min(values["driver_recovery_depth"], 0.9)
        return type(self)(**values)

    def without_trial_noise(self) -> "EffectParams":
        """These effects without their trial-to-trial parts: no shared or slow
        conversion noise, no kT/C noise and no refresh ripple (whose phase is
        random per read); with ``NoiseParams.none()`` a run with noise on then
        equals one with noise off."""
        return dataclasses.replace(self, cadc_common_noise_lsb=0.0, low_frequency_noise_lsb=0.0,
                                   reset_ktc_noise=False, capmem_ripple_v=0.0)

    @classmethod
    def none(cls) -> "EffectParams":
        """Every effect off (the synaptic time constants still come from their capmem cells)."""
        return cls(**{f.name: (False if f.name == "reset_ktc_noise" else
                               getattr(cls, f.name) if f.name in ("low_frequency_shared_fraction",
                                                                  "driver_recovery_tau_s",
                                                                  "capmem_settling_tau_s")
                               else 0.0)
                      for f in dataclasses.fields(cls)})


PRESETS = ("ideal", "default", "harsh")
"""Names of the effect presets (:func:`preset`)."""
HARSH_FACTOR = 3.0
"""Factor of the ``"harsh"`` preset on every drift and effect magnitude (*assumed*:
an older setup, an uncontrolled room)."""


def preset(name: str) -> tuple:
    """``(DriftParams, EffectParams)`` of a named preset.

    * ``"ideal"``: no drift, no temperature dependence, none of the effects
      of :class:`EffectParams`.
    * ``"default"``: the defaults of both dataclasses.
    * ``"harsh"``: every drift, temperature coefficient and effect magnitude
      times :data:`HARSH_FACTOR`.
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; allowed: {', '.join(PRESETS)}")
    if name == "ideal":
        return DriftParams.none(), EffectParams.none()
    if name == "default":
        return DriftParams(), EffectParams()
    return DriftParams().scaled(HARSH_FACTOR), EffectParams().scaled(HARSH_FACTOR)
