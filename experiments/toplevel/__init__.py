"""bss2sim: a cycle-level model of the BrainScaleS-2 analog inference chip in
vector-matrix-multiply mode.

The package has three parts (see their READMEs for the physics and the design):

- :mod:`bss2sim.circuits`: the analog core (chip instances with hidden ground
  truth, event schedules, the numba integration of synapses, membranes and
  the column ADC);
- :mod:`bss2sim.digital`: event interface, embedded processors, chip time and
  energy, and the integer ``matmul`` / ``conv`` API at two fidelities;
- :mod:`bss2sim.experiments`: calibration, training, benchmarks and the
  ``bss2sim`` command line (also ``python -m bss2sim``).

The names used most are importable from here::

    import bss2sim
    chip = bss2sim.Chip(0)
    bss2sim.load_calibration(chip)     # the store, the shipped one, or calibrate now
    acc = bss2sim.Accelerator(chip, noise_seed=1)

The subpackages are imported on first use of one of their names, so
``import bss2sim`` alone stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_EXPORTS = {
    "Chip": "bss2sim.circuits",
    "ChipConfig": "bss2sim.circuits",
    "Faults": "bss2sim.circuits",
    "EventSchedule": "bss2sim.circuits",
    "TrialNoise": "bss2sim.circuits",
    "integrate_fast": "bss2sim.circuits",
    "integrate_trace": "bss2sim.circuits",
    "CircuitParams": "bss2sim.circuits",
    "MismatchParams": "bss2sim.circuits",
    "NoiseParams": "bss2sim.circuits",
    "DriftParams": "bss2sim.circuits",
    "EffectParams": "bss2sim.circuits",
    "Environment": "bss2sim.circuits",
    "Accelerator": "bss2sim.digital",
    "BehaviouralParams": "bss2sim.digital",
    "measure_behaviour": "bss2sim.digital",
    "calibrate": "bss2sim.experiments.calibration",
    "CalibrationTarget": "bss2sim.experiments.calibration",
    "ChipCalibration": "bss2sim.experiments.calibration",
    "load_calibration": "bss2sim.experiments.calibration",
    "FaultyUnits": "bss2sim.digital",
    "MnistNet": "bss2sim.experiments.training",
}
_SUBPACKAGES = ("circuits", "digital", "experiments")

__all__ = ["__version__", *_SUBPACKAGES, *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"bss2sim.{name}")
    else:
        raise AttributeError(f"module 'bss2sim' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
