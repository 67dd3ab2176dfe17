"""Operating conditions of a chip and what they do to it: temperature and
the slow drift over hours of operation.

A :class:`Environment` is the condition a chip runs at: its temperature and
the hours of operation since the chip's reference time (for the drift study:
its first calibration). :class:`DriftPattern` is the fixed pattern of one chip
(drawn from the chip seed, like the mismatch): every cell's temperature
coefficient and its drift trajectory. :meth:`DriftPattern.at` turns both into
the factors and shifts that :class:`~bss2sim.circuits.chip.Chip` applies when it
derives the operating point, so the fast and the trace path see the same chip.

The drift of one cell is a Gaussian process

    d(t) = sum_j s_j (c_j sin(w_j t) + e_j (cos(w_j t) - 1)),   c_j, e_j ~ N(0, 1),

over periods ``DRIFT_PERIODS_H`` (15 min to about 2 years, a factor 4 apart)
with ``s_j^2`` proportional to the period: the variance of ``d(t) - d(0)`` is
``sum_j 2 s_j^2 (1 - cos w_j t)``, which grows about linearly with t between
the shortest and the longest period, like a random walk, and is normalised to 1
at 24 hours. ``d(0) = 0`` exactly, and ``d`` can be evaluated at any hour
without simulating the hours before.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from . import constants as K
from .checks import check_real
from .params import DriftParams

DRIFT_PERIODS_H = 0.25 * 4.0 ** np.arange(8)
"""Periods of the drift's components, hours (0.25 .. 4096; *assumed*: from the
shortest interval a user waits between runs to the life of a setup)."""
DRIFT_NORM_HOURS = 24.0
"""Time at which a drift's rms equals its ``*_drift_*`` parameter, hours."""
MAX_HOURS = 1e6
"""Latest hour of operation accepted (about 114 years: a bound against unit mistakes)."""
TEMPERATURE_RANGE_C = (-40.0, 125.0)
"""Temperatures accepted, degrees C (the industrial range of a CMOS chip)."""


def _component_scales():
    w = 2 * np.pi / DRIFT_PERIODS_H
    s2 = DRIFT_PERIODS_H / DRIFT_PERIODS_H.sum()
    var24 = np.sum(2 * s2 * (1 - np.cos(w * DRIFT_NORM_HOURS)))
    return w, np.sqrt(s2 / var24)


_OMEGA, _SCALE = _component_scales()


@dataclass(frozen=True)
class Environment:
    """Where and when a chip runs."""

    temperature_c: float = 25.0
    """Chip temperature, degrees C (default the calibration reference, 25)."""
    hours: float = 0.0
    """Hours of operation since the chip's reference time (0: when the drift is
    zero, e.g. its first calibration)."""

    def __post_init__(self):
        object.__setattr__(self, "temperature_c", check_real(
            "temperature_c", self.temperature_c, *TEMPERATURE_RANGE_C))
        object.__setattr__(self, "hours", check_real("hours", self.hours, 0.0, MAX_HOURS))


def drift_trajectory(normals: np.ndarray, hours: float) -> np.ndarray:
    """d(hours) of cells whose components are ``normals`` (8, 2, *shape):
    unit rms at 24 hours, exactly 0 at hour 0."""
    if hours == 0.0:
        return np.zeros(normals.shape[2:])
    wt = _OMEGA * hours
    sin = (_SCALE * np.sin(wt)).reshape((-1,) + (1,) * (normals.ndim - 2))
    cos = (_SCALE * (np.cos(wt) - 1.0)).reshape(sin.shape)
    return np.sum(normals[:, 0] * sin + normals[:, 1] * cos, axis=0)


class DriftPattern:
    """Temperature coefficients and drift trajectories of one chip (fixed
    pattern: one stream per quantity keyed by (chip seed, name), drawn when
    first needed)."""

    def __init__(self, seed: int, params: DriftParams):
        self.seed = int(seed)
        self.params = params
        self._normals = {}

    def _draw(self, name, shape):
        key = (name, shape)
        if key not in self._normals:
            rng = np.random.default_rng([self.seed, zlib.crc32(("drift/" + name).encode())])
            self._normals[key] = rng.standard_normal(shape)
        return self._normals[key]

    def _tempco(self, name, shape):
        return self._draw("tempco/" + name, shape)

    def _walk(self, name, shape, hours):
        return drift_trajectory(self._draw("walk/" + name, (len(DRIFT_PERIODS_H), 2) + shape), hours)

    def at(self, env: Environment) -> "DriftState | None":
        """Factors and shifts at ``env``; None where nothing changes (at the
        reference temperature and hour 0, or with no drift parameters)."""
        p = self.params
        dt = float(env.temperature_c) - float(p.reference_temperature_c)
        h = float(env.hours)
        if dt == 0.0 and h == 0.0:
            return None
        H, C, D, R = K.NUM_HALVES, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF, K.SYNAPSE_ROWS_PER_HALF
        col = (H, C)

        def rel(name, shape, tc_mean, tc_spread, drift):
            return (1.0 + dt * (tc_mean + tc_spread * self._tempco(name, shape))) \
                * (1.0 + drift * self._walk(name, shape, h))

        def shift(name, shape, tc_mean, tc_spread, drift):
            return dt * (tc_mean + tc_spread * self._tempco(name, shape)) + drift * self._walk(name, shape, h)

        from .chip import CAPMEM_PARAMETERS   # late: chip imports this module
        capmem = {}
        for cp in CAPMEM_PARAMETERS.values():
            if cp.kind == "voltage":
                capmem[cp.name] = ("shift", shift("capmem/" + cp.name, cp.shape,
                                                  p.capmem_voltage_tempco_mean_v_per_k,
                                                  p.capmem_voltage_tempco_spread_v_per_k,
                                                  p.capmem_voltage_drift_v))
            else:
                capmem[cp.name] = ("factor", rel("capmem/" + cp.name, cp.shape,
                                                 p.capmem_current_tempco_mean_rel_per_k,
                                                 p.capmem_current_tempco_spread_rel_per_k,
                                                 p.capmem_current_drift_rel))
        leak_tc = p.residual_leak_tempco_rel_per_k * (1.0 + 0.1 * self._tempco("residual_leak", col))
        return DriftState(
            capmem=capmem,
            driver_width=rel("driver_width", (H, D), 0.0, p.driver_width_tempco_spread_rel_per_k,
                             p.driver_width_drift_rel),
            synapse=(1.0 + dt * p.synapse_tempco_spread_rel_per_k * self._tempco("synapse", (H, R, C)))
            * (1.0 + p.synapse_drift_rel * self._walk("synapse_column", col, h))[:, None, :],
            cadc_gain=rel("cadc_gain", col, 0.0, p.cadc_gain_tempco_spread_rel_per_k, 0.0),
            cadc_offset_v=shift("cadc_offset", col, 0.0, p.cadc_offset_tempco_spread_v_per_k,
                                p.cadc_offset_drift_v),
            rail_low_v=shift("rail_low", col, 0.0, p.rail_tempco_spread_v_per_k, p.rail_drift_v),
            rail_high_v=shift("rail_high", col, 0.0, p.rail_tempco_spread_v_per_k, p.rail_drift_v),
            leak_conductance=np.exp(leak_tc * dt) * np.maximum(
                1.0 + p.residual_leak_drift_rel * self._walk("residual_leak", col, h), 0.05),
        )


@dataclass(frozen=True)
class DriftState:
    """What temperature and drift change at one condition, per cell."""

    capmem: dict
    """Per capmem parameter: ('shift', V) for voltage cells, ('factor', 1) for current cells."""
    driver_width: np.ndarray
    """(2, 128) factor on each driver's pulse width."""
    synapse: np.ndarray
    """(2, 256, 256) factor on each synapse's current."""
    cadc_gain: np.ndarray
    """(2, 256) factor on each channel's ramp gain."""
    cadc_offset_v: np.ndarray
    """(2, 256) shift of each comparator's offset, V."""
    rail_low_v: np.ndarray
    """(2, 256) shift of each column's lower swing limit, V."""
    rail_high_v: np.ndarray
    """(2, 256) shift of each column's upper swing limit, V."""
    leak_conductance: np.ndarray
    """(2, 256) factor on each column's residual leak conductance."""
