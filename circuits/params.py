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

from .checks import check_real


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
