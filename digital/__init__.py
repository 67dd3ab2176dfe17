"""Digital side of the BrainScaleS-2 model: the event interface that sequences
input vectors, the two embedded processors (PPUs), simulated chip time, and the
user-facing integer matmul / convolution API at two fidelities.
See ``digital/README.md``."""
from .accelerator import Accelerator, BehaviouralParams, unfold2d
from .events import PairedSchedule, paired_schedule
from .mapping import FaultyUnits
from .measure import MeasuredBehaviour, measure, measure_behaviour
from .ppu import PPU, PPUCostParams, add_sat, converting_relu, relu
from .timing import TimeLedger, TimingParams

__all__ = ["Accelerator", "BehaviouralParams", "unfold2d", "PairedSchedule", "paired_schedule",
           "MeasuredBehaviour", "measure", "measure_behaviour", "PPU", "PPUCostParams", "add_sat",
           "converting_relu", "relu", "TimeLedger", "TimingParams", "FaultyUnits"]
