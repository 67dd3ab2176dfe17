"""Calibration of simulated chips: searches (``search``), chip access that only
configures and measures (``measurements``), the built-in steps and the step
protocol (``steps``), the whole-chip run (``run``), versioned files
(``persistence``) and the calibration store shared by every command
(``store``)."""
from .measurements import ChipAccess
from .run import ChipCalibration, calibrate, load_into, save
from .steps import BUILTIN_STEPS, DEFAULT_STEPS, CalibrationStep, CalibrationTarget, StepResult
from .store import LoadedCalibration, default_store, find_calibration, load_calibration, store_calibration

__all__ = ["BUILTIN_STEPS", "DEFAULT_STEPS", "CalibrationStep", "CalibrationTarget", "ChipAccess",
           "ChipCalibration", "LoadedCalibration", "StepResult", "calibrate", "default_store",
           "find_calibration", "load_calibration", "load_into", "save", "store_calibration"]
