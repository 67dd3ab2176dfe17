"""What calibration may do with a chip: write its configuration and measure
through CADC reads and VMM-like event trains, as on silicon.

A :class:`ChipAccess` wraps a :class:`bss2sim.circuits.Chip` and never touches its
ground truth. It counts every measurement and the time the same work would
take on silicon, capmem settling included.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_instance, check_seed
from bss2sim.circuits.rng import derive_seed

SRAM_WRITE_S = 10e-6
"""Time to write one half's SRAM settings (driver or CADC offsets) from the
host (*assumed*)."""
READ_OVERHEAD_S = 2e-6
"""Host round trip per batch of reads (*assumed*)."""
RESET_SETTLE_CYCLES = 63
"""Wait after a reset before a read: about 0.5 us (*assumed*, as bss2sim.digital.TimingParams)."""
POST_EVENT_WAIT_CYCLES = 125
"""Wait after the last event before the read: 1 us [SW]."""


class ChipAccess:
    """Configure-and-measure access to a chip, with counters.

    Parameters
    ----------
    chip : Chip
    noise_seed : int
        Seed of the trial-to-trial noise of the reads.
    """

    def __init__(self, chip: Chip, noise_seed: int = 0):
        check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
        self.chip = chip
        self.config = chip.config
        self._noise_seed = check_seed("noise_seed", noise_seed)
        self._draws = 0
        self.measurements = 0
        """Analog reads (one per neuron-half and vector)."""
        self.bad_channels = np.zeros((K.NUM_HALVES, K.COLUMNS_PER_HALF), bool)
        """CADC channels found not to follow their input (set by the CADC step);
        later steps leave the neurons behind them out."""
        self.capmem_writes = 0
        self.silicon_time_s = 0.0

    def _noise(self):
        self._draws += 1
        return TrialNoise(derive_seed(self._noise_seed, self._draws))

    # --- writes ----------------------------------------------------------------
    def write_capmem(self, name, values):
        """Write a capmem parameter and wait for it to settle (20 ms on silicon).
        Writing the values the cells already hold is skipped, as software does."""
        current = self.config.capmem(name)
        if np.array_equal(np.broadcast_to(np.asarray(values), current.shape), current):
            return
        self.config.set_capmem(name, values)
        self.capmem_writes += 1
        self.silicon_time_s += K.CAPMEM_SETTLING_S

    def write_driver_offsets(self, offsets):
        """Driver offset settings of both halves, (2, 128)."""
        for h in range(K.NUM_HALVES):
            self.config.set_driver_offsets(h, offsets[h])
        self.silicon_time_s += 2 * SRAM_WRITE_S

    def write_digital_offsets(self, offsets):
        """CADC digital offsets of both halves, (2, 256)."""
        for h in range(K.NUM_HALVES):
            self.config.set_cadc_digital_offsets(h, offsets[h])
        self.silicon_time_s += 2 * SRAM_WRITE_S

    def write_weights(self, logical):
        """Signed weights (2, 128, 256) of both halves."""
        for h in range(K.NUM_HALVES):
            self.config.set_logical_weights(h, logical[h])
        self.silicon_time_s += 2 * K.SYNAPSE_ROWS_PER_HALF * SRAM_WRITE_S / 16

    def set_cadc_input(self, source):
        for h in range(K.NUM_HALVES):
            self.config.set_cadc_input(h, source)
        self.silicon_time_s += 2 * SRAM_WRITE_S

    # --- measurements ----------------------------------------------------------
    def read_codes(self, repeats: int, read_cycle: int = RESET_SETTLE_CYCLES) -> np.ndarray:
        """CADC codes of every channel after a reset and ``read_cycle`` cycles of
        waiting, ``repeats`` times: float (2, 256), the mean over repeats."""
        empty = EventSchedule(np.zeros(repeats + 1, np.int64), *(np.zeros(0, np.int64) for _ in range(3)))
        out = np.empty((K.NUM_HALVES, K.COLUMNS_PER_HALF))
        for h in range(K.NUM_HALVES):
            out[h] = integrate_fast(self.chip, h, empty, read_cycle, noise=self._noise()).codes.mean(axis=0)
        self._count(repeats, read_cycle)
        return out

    def amplitudes(self, schedules, repeats: int) -> np.ndarray:
        """Baseline-subtracted response to event trains, averaged over repeats.

        ``schedules``: per half, a list of event lists [(driver, value, cycle), ...]
        (one per test vector; all halves the same length). Returns float
        (2, num_vectors, 256) in LSB."""
        n = len(schedules[0])
        out = np.empty((K.NUM_HALVES, n, K.COLUMNS_PER_HALF))
        for h in range(K.NUM_HALVES):
            vecs = [v for v in schedules[h] for _ in range(repeats)]
            sched = EventSchedule.from_lists(vecs)
            read = sched.last_cycle() + POST_EVENT_WAIT_CYCLES
            empty = EventSchedule(np.zeros(len(vecs) + 1, np.int64),
                                  *(np.zeros(0, np.int64) for _ in range(3)))
            base = integrate_fast(self.chip, h, empty, RESET_SETTLE_CYCLES, noise=self._noise()).codes
            sig = integrate_fast(self.chip, h, sched, read, noise=self._noise()).codes
            diff = sig.astype(float) - base.astype(float)
            out[h] = diff.reshape(n, repeats, K.COLUMNS_PER_HALF).mean(axis=1)
            self._count(len(vecs), int(read.max(initial=0)))
        return out

    def _count(self, reads, read_cycle):
        self.measurements += K.NUM_HALVES * reads
        # Both halves convert at once: per read a reset, the wait and two conversions.
        self.silicon_time_s += reads * (read_cycle * K.FPGA_CYCLE_S + 2 * K.CADC_CONVERSION_S) \
            + READ_OVERHEAD_S
