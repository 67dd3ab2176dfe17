"""Analog core of the BrainScaleS-2 model: chip instances, event schedules and
the numba-compiled integration of synapses, synaptic inputs, membranes and the
column ADC. See ``circuits/README.md`` for the physics."""
from . import constants
from .chip import CAPMEM_PARAMETERS, Chip, ChipConfig, ChipTruth, Faults, HalfOperatingPoint
from .events import EventSchedule
from .integrate import IntegrationResult, TraceResult, integrate_fast, integrate_trace
from .monitors import Monitor, plot_trace
from .environment import Environment
from .params import PRESETS, CircuitParams, DriftParams, EffectParams, MismatchParams, NoiseParams, preset
from .rng import TrialNoise

__all__ = [
    "constants", "CAPMEM_PARAMETERS", "Chip", "ChipConfig", "ChipTruth", "Faults", "HalfOperatingPoint",
    "EventSchedule", "IntegrationResult", "TraceResult", "integrate_fast", "integrate_trace",
    "CircuitParams", "MismatchParams", "NoiseParams", "DriftParams", "EffectParams", "Environment",
    "PRESETS", "preset", "TrialNoise",
    "Monitor", "plot_trace",
]
