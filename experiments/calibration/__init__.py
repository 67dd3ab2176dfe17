"""Calibration of simulated chips: searches (``search``), chip access that only
configures and measures (``measurements``), the built-in steps and the step
protocol (``steps``), the whole-chip run (``run``), versioned files
(``persistence``) and the calibration store shared by every command
(``store``)."""
from .measurements import ChipAccess
from .run import ChipCalibration, calibrate, load_into, save
from .steps import BUILTIN_STEPS, DEFAULT_STEPS, CalibrationStep, CalibrationTarget, StepResult

__all__ = ["BUILTIN_STEPS", "DEFAULT_STEPS", "CalibrationStep", "CalibrationTarget", "ChipAccess",
           "ChipCalibration", "StepResult", "calibrate", "load_into", "save"]
