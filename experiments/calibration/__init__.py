"""Calibration of simulated chips: searches (``search``), chip access that only
configures and measures (``measurements``), the four steps (``steps``), the
whole-chip run (``run``) and versioned files (``persistence``)."""
from .run import ChipCalibration, calibrate, load_into, save
from .steps import CalibrationTarget, StepResult

__all__ = ["ChipCalibration", "calibrate", "load_into", "save", "CalibrationTarget", "StepResult"]
