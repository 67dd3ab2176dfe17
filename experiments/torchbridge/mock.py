"""Behavioural ("mock") parameters from a measurement, as hxtorch's
``measure_mock_parameter`` [SW]: the gain and trial-to-trial noise that
:func:`bss2sim.digital.measure_behaviour` measured on a chip, through VMMs
only, become a behavioural :class:`bss2sim.digital.Accelerator`.
"""
from __future__ import annotations

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import check_instance
from bss2sim.digital import Accelerator, BehaviouralParams, FaultyUnits, MeasuredBehaviour, measure_behaviour

__all__ = ["mock_parameters", "behavioural_from_measurement", "measure_mock_accelerator"]


def mock_parameters(measured: MeasuredBehaviour) -> BehaviouralParams:
    """``BehaviouralParams(gain, sigma)`` of a measurement: gain in output LSB
    per unit of x*w per send (the median over neurons), sigma the pooled
    trial-to-trial noise in output LSB."""
    check_instance("measured", measured, MeasuredBehaviour, "bss2sim.digital.MeasuredBehaviour "
                   "(the result of measure_behaviour)")
    return measured.behavioural()


def behavioural_from_measurement(measured: MeasuredBehaviour, noise_seed: int | None = 0,
                                 faulty: FaultyUnits | None = None) -> Accelerator:
    """A behavioural accelerator with the measured gain and noise.

    measured : the result of :func:`bss2sim.digital.measure_behaviour`;
    noise_seed : seed of its trial-to-trial noise, 0..2**64-1 (default 0), or
    None for none; faulty : units to map around (default none; the tiling,
    and so the chip time it reports, then matches the chip's). Use the gain
    ``accelerator.behavioural.gain`` for the layers' linear model (the
    functional calls take it when ``gain=None``)."""
    return Accelerator(behavioural=mock_parameters(measured), noise_seed=noise_seed, faulty=faulty)


def measure_mock_accelerator(chip: Chip, noise_seed: int | None = 0, **measure_kwargs):
    """Measure ``chip`` (:func:`~bss2sim.digital.measure_behaviour` with
    ``measure_kwargs``) and return ``(accelerator, measured)``: the behavioural
    accelerator of :func:`behavioural_from_measurement` and the measurement."""
    measured = measure_behaviour(chip, **measure_kwargs)
    return behavioural_from_measurement(measured, noise_seed), measured
