"""Digital side of the BrainScaleS-2 model: the event interface that sequences
input vectors, the FPGA's playback programs, the two embedded processors
(PPUs) and the VMM sequences they run, a co-simulation of all of them with the
analog halves, simulated chip time, and the user-facing integer matmul /
convolution API at two fidelities. See ``digital/README.md``."""
from .accelerator import Accelerator, BehaviouralParams, unfold2d
from .events import PairedSchedule, paired_schedule
from .mapping import FaultyUnits
from .measure import MeasuredBehaviour, measure, measure_behaviour
from .ppu import PPU, PPUCostParams, add_sat, converting_relu, relu
from .playback import PlaybackBuilder, PlaybackError, PlaybackProgram
from .sequences import SEQUENCES
from .timing import TimeLedger, TimingParams

__all__ = ["Accelerator", "BehaviouralParams", "unfold2d", "PairedSchedule", "paired_schedule",
           "MeasuredBehaviour", "measure", "measure_behaviour", "PPU", "PPUCostParams", "add_sat",
           "converting_relu", "relu", "TimeLedger", "TimingParams", "FaultyUnits", "PlaybackBuilder",
           "PlaybackError", "PlaybackProgram", "SEQUENCES"]
