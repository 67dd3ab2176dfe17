"""Behavioural ("mock") parameters from a measurement, as hxtorch's
``measure_mock_parameter`` [SW]: the gain and trial-to-trial noise that
:func:`bss2sim.digital.measure_behaviour` measured on a chip, through VMMs
only, become a behavioural :class:`bss2sim.digital.Accelerator`.

The behavioural model rounds each tile's result to the nearest integer by
default (``formula="unbiased"``), unbiased like the chip; ``formula="hxtorch"``
floors as hxtorch's mock does, ``floor(gain * x.W * num_sends + noise)``, which
lies 0.5 LSB per tile of 128 inputs below the chip on average.
"""
from __future__ import annotations

import dataclasses

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import check_instance
from bss2sim.digital import Accelerator, BehaviouralParams, FaultyUnits, MeasuredBehaviour, measure_behaviour

__all__ = ["mock_parameters", "behavioural_from_measurement", "measure_mock_accelerator"]


def mock_parameters(measured: MeasuredBehaviour, formula: str = "unbiased") -> BehaviouralParams:
    """``BehaviouralParams`` of a measurement: gain in output LSB per unit of
    x*w per send (the median over neurons), sigma the trial-to-trial noise
    independent between columns and sigma_shared the part the 128 columns of
    a quadrant share, both in output LSB (one output's total noise is the
    measured ``sigma_trial``); ``formula``: ``"unbiased"`` (default, round to
    nearest) or ``"hxtorch"`` (floor), see :class:`~bss2sim.digital.BehaviouralParams`."""
    check_instance("measured", measured, MeasuredBehaviour, "bss2sim.digital.MeasuredBehaviour "
                   "(the result of measure_behaviour)")
    return dataclasses.replace(measured.behavioural(), formula=formula)


def behavioural_from_measurement(measured: MeasuredBehaviour, noise_seed: int | None = 0,
                                 faulty: FaultyUnits | None = None, formula: str = "unbiased") -> Accelerator:
    """A behavioural accelerator with the measured gain and noise.

    measured : the result of :func:`bss2sim.digital.measure_behaviour`;
    noise_seed : seed of its trial-to-trial noise, 0..2**64-1 (default 0), or
    None for none; faulty : units to map around (default none; the tiling,
    and so the chip time it reports, then matches the chip's); formula :
    ``"unbiased"`` (default) or ``"hxtorch"`` (see :func:`mock_parameters`).
    Use the gain ``accelerator.behavioural.gain`` for the layers' linear model
    (the functional calls take it when ``gain=None``)."""
    return Accelerator(behavioural=mock_parameters(measured, formula), noise_seed=noise_seed, faulty=faulty)


def measure_mock_accelerator(chip: Chip, noise_seed: int | None = 0, **measure_kwargs):
    """Measure ``chip`` (:func:`~bss2sim.digital.measure_behaviour` with
    ``measure_kwargs``) and return ``(accelerator, measured)``: the behavioural
    accelerator of :func:`behavioural_from_measurement` and the measurement."""
    measured = measure_behaviour(chip, **measure_kwargs)
    return behavioural_from_measurement(measured, noise_seed), measured
