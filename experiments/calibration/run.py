"""Calibrate a whole chip: the four steps in order, a typed result that applies
itself to a configuration, and the files it is kept in."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import WrongTypeError, check_instance

from .measurements import ChipAccess
from .persistence import calibration_filename, load_calibration, save_calibration
from .steps import (CalibrationTarget, StepResult, calibrate_cadc, calibrate_drivers,
                    calibrate_neurons, calibrate_synapse_bias)

STEPS = (("cadc", calibrate_cadc), ("synapse_bias", calibrate_synapse_bias),
         ("drivers", calibrate_drivers), ("neurons", calibrate_neurons))


@dataclass
class ChipCalibration:
    """All steps of one chip's calibration."""

    chip_seed: int
    target: CalibrationTarget
    steps: list = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def failures(self) -> list:
        return [f"{s.name}: {f}" for s in self.steps for f in s.failures]

    @property
    def measurements(self) -> int:
        return sum(s.measurements for s in self.steps)

    @property
    def silicon_time_s(self) -> float:
        return sum(s.silicon_time_s for s in self.steps)

    @property
    def capmem_writes(self) -> int:
        return sum(s.capmem_writes for s in self.steps)

    def step(self, name) -> StepResult:
        for s in self.steps:
            if s.name == name:
                return s
        raise ValueError(f"no step {name!r}; steps: {[s.name for s in self.steps]}")

    def apply(self, config):
        """Write every step's settings into a configuration (weights untouched)."""
        for s in self.steps:
            s.apply(config)

    def residuals(self) -> dict:
        """The residual spreads after each step (JSON-ready)."""
        return {s.name: {k: np.asarray(v).tolist() for k, v in s.after.items()} for s in self.steps}

    def summary(self) -> dict:
        return {"chip_seed": self.chip_seed, "target_id": self.target.target_id,
                "residuals": self.residuals(), "failures": self.failures,
                "measurements": self.measurements, "capmem_writes": self.capmem_writes,
                "wall_time_s": self.wall_time_s, "silicon_time_s": self.silicon_time_s}


def calibrate(chip: Chip, target: CalibrationTarget | None = None, noise_seed: int = 0,
              progress=None) -> ChipCalibration:
    """Calibrate ``chip`` in place (its configuration ends calibrated) and
    return what was done. Only configures and measures; never reads the truth.

    ``progress``: optional callable taking a step name, called before each step."""
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    target = target if target is not None else CalibrationTarget()
    check_instance("target", target, CalibrationTarget, "CalibrationTarget or None (the default)")
    if progress is not None and not callable(progress):
        raise WrongTypeError(f"progress={progress!r} must be a callable taking a step name, or None")
    access = ChipAccess(chip, noise_seed=noise_seed)
    cal = ChipCalibration(chip_seed=chip.seed, target=target)
    t = time.perf_counter()
    for name, fn in STEPS:
        if progress is not None:
            progress(name)
        cal.steps.append(fn(access, target))
    cal.wall_time_s = time.perf_counter() - t
    return cal


def save(cal: ChipCalibration, chip: Chip, folder) -> Path:
    """Write the calibrated settings of ``chip`` (calibrated by ``cal``) into
    ``folder`` as one versioned file per chip seed and target set."""
    check_instance("cal", cal, ChipCalibration, "ChipCalibration")
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    check_instance("folder", folder, (str, os.PathLike), "folder path (str or pathlib.Path)")
    path = Path(folder) / calibration_filename(cal.chip_seed, cal.target.target_id)
    return save_calibration(path, chip.config, chip_seed=cal.chip_seed, target_id=cal.target.target_id,
                            metadata=cal.summary())


def load_into(chip: Chip, folder, target: CalibrationTarget | None = None):
    """Apply the stored calibration of ``chip``'s seed and the target set to its configuration."""
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    check_instance("folder", folder, (str, os.PathLike), "folder path (str or pathlib.Path)")
    target = target if target is not None else CalibrationTarget()
    check_instance("target", target, CalibrationTarget, "CalibrationTarget or None (the default)")
    path = Path(folder) / calibration_filename(chip.seed, target.target_id)
    f = load_calibration(path, chip_seed=chip.seed, target_id=target.target_id)
    f.apply(chip.config)
    return f
