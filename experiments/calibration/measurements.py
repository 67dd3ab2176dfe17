"""What calibration may do with a chip: write its configuration and measure
through CADC reads and VMM-like event trains, as on silicon.

A :class:`ChipAccess` wraps a :class:`bss2sim.circuits.Chip` and never touches its
ground truth. It counts every measurement and the time the same work would
take on silicon, capmem settling included.

It is all a calibration step gets (see :mod:`.steps` for the protocol): the
chip and its configuration are kept private, so a step cannot read the hidden
truth or write a setting around the counters by accident. What the step has
written it may read back (``read_capmem``, ``read_driver_offsets``,
``read_digital_offsets``), as host software knows what it wrote.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import Chip, ChipConfig, EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_instance, check_int, check_real, check_seed
from bss2sim.circuits.rng import derive_seed

SRAM_WRITE_S = 10e-6
"""Time to write one half's SRAM settings (driver or CADC offsets) from the
host (*assumed*)."""
READ_OVERHEAD_S = 2e-6
"""Host round trip per batch of reads (*assumed*)."""
RESET_SETTLE_CYCLES = 63
"""Wait after a reset before a read: about 0.5 us (*assumed*, as bss2sim.digital.TimingParams)."""
MAX_REPEATS = 100_000
"""Most repeats of one measurement call (a bound against mistakes, not physics)."""
POST_EVENT_WAIT_CYCLES = 125
"""Wait after the last event before the read: 1 us [SW]."""
_SHARED_NOISE_TAG = 0x5348_4152_4544
"""Tag that keeps the shared-noise seeds apart from the reads' own noise seeds
(an arbitrary constant, not physics)."""


class ChipAccess:
    """Configure-and-measure access to a chip, with counters.

    Parameters
    ----------
    chip : Chip
    noise_seed : int
        Seed of the trial-to-trial noise of the reads.
    """

    def __init__(self, chip: Chip, noise_seed: int = 0, capmem_wait_s: float = K.CAPMEM_SETTLING_S):
        check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
        self._chip = chip
        self._noise_seed = check_seed("noise_seed", noise_seed)
        self.capmem_wait_s = check_real("capmem_wait_s", capmem_wait_s, 0.0, 10.0)
        """Wait after each capmem write, s (default 20 ms, as the group's software
        waits): the chip's clock advances by it, and a shorter wait lets reads
        see cells that have not settled (``EffectParams.capmem_settling_tau_s``)."""
        self._draws = 0
        self.measurements = 0
        """Analog reads (one per neuron-half and vector)."""
        self.bad_channels = np.zeros((K.NUM_HALVES, K.COLUMNS_PER_HALF), bool)
        """CADC channels found not to follow their input (set by the CADC step);
        later steps leave the neurons behind them out."""
        self.bad_drivers = np.zeros((K.NUM_HALVES, K.DRIVERS_PER_HALF), bool)
        """Drivers found faulty (set by the driver step: a dead row, no pulse, an
        offset out of range); later steps measure without them."""
        self.capmem_writes = 0
        """Capmem writes that changed a cell (each waits for the capmem to settle)."""
        self.silicon_time_s = 0.0
        """Time the same work would take on silicon, s (settling, reads, SRAM writes)."""
        self._written = {}
        # Setting name ('capmem/<name>', 'driver_offset', 'cadc_digital_offset') ->
        # the values last written: the settings a step chose, for its StepResult.

    def __getattr__(self, name):
        # Only reached for attributes that do not exist: say why instead of a bare
        # AttributeError when a step looks for the chip or its configuration.
        if name in ("chip", "config", "configuration"):
            raise AttributeError(
                f"ChipAccess has no attribute {name!r}: a calibration step configures only "
                "through write_capmem / write_driver_offsets / write_digital_offsets / "
                "write_weights / set_cadc_input and measures only through read_codes / "
                "amplitudes, as on silicon; read_capmem etc. return what was written")
        raise AttributeError(f"ChipAccess has no attribute {name!r}")

    @property
    def _config(self):
        return self._chip.config

    def written_settings(self) -> dict:
        """Copies of every calibration setting written through this access so
        far, by setting name (``'capmem/<name>'``, ``'driver_offset'`` (2, 128),
        ``'cadc_digital_offset'`` (2, 256)). Weights and the CADC input source
        are not calibration settings and are not listed."""
        return {k: v.copy() for k, v in self._written.items()}

    # --- what was written (the host knows it) ----------------------------------
    def read_capmem(self, name) -> np.ndarray:
        """Current settings of a capmem parameter (a read-only copy, the
        parameter's shape; see ``bss2sim.circuits.chip.CAPMEM_PARAMETERS``)."""
        a = np.array(self._config.capmem(name))
        a.setflags(write=False)
        return a

    def read_driver_offsets(self) -> np.ndarray:
        """Driver offset settings of both halves, int (2, 128), read-only copy."""
        a = np.array(self._config.driver_offset)
        a.setflags(write=False)
        return a

    def read_digital_offsets(self) -> np.ndarray:
        """CADC digital offsets of both halves, int (2, 256), read-only copy."""
        a = np.array(self._config.cadc_digital_offset)
        a.setflags(write=False)
        return a

    def _noise(self, shared_seed=None):
        self._draws += 1
        return TrialNoise(derive_seed(self._noise_seed, self._draws), shared_seed=shared_seed)

    def _shared_seed(self):
        """A fresh seed of the slow noise that the two integrations of one
        amplitude measurement (baseline and signal) share, as on silicon where
        they follow each other within microseconds. Keyed by the number of the
        next draw (the baseline's), so it is unique per measurement and the
        reads' own noise is drawn as before."""
        return derive_seed(self._noise_seed, self._draws + 1, _SHARED_NOISE_TAG)

    # --- writes ----------------------------------------------------------------
    def write_capmem(self, name, values):
        """Write a capmem parameter and wait for it to settle (20 ms on silicon).
        Writing the values the cells already hold is skipped, as software does."""
        current = self._config.capmem(name)
        if np.array_equal(np.broadcast_to(np.asarray(values), current.shape), current):
            self._written[f"capmem/{name}"] = np.array(current)
            return
        self._config.set_capmem(name, values)
        self._written[f"capmem/{name}"] = np.array(self._config.capmem(name))
        self.capmem_writes += 1
        self._spend(self.capmem_wait_s)

    def _write_halves(self, what, write, values):
        """Write a per-half setting of both halves with ``write(config, half,
        values)``, all or nothing: checked on a scratch configuration first, so
        a bad value changes neither half."""
        a = np.asarray(values)
        if a.ndim < 1 or a.shape[0] != K.NUM_HALVES:
            raise ValueError(f"{what} have shape {a.shape}: the first axis must hold the "
                             f"{K.NUM_HALVES} halves")
        scratch = ChipConfig()
        for h in range(K.NUM_HALVES):
            write(scratch, h, a[h])
        for h in range(K.NUM_HALVES):
            write(self._config, h, a[h])

    def write_driver_offsets(self, offsets):
        """Driver offset settings of both halves, (2, 128)."""
        self._write_halves("driver offsets", ChipConfig.set_driver_offsets, offsets)
        self._written["driver_offset"] = np.array(self._config.driver_offset)
        self._spend(2 * SRAM_WRITE_S)

    def write_digital_offsets(self, offsets):
        """CADC digital offsets of both halves, (2, 256)."""
        self._write_halves("digital offsets", ChipConfig.set_cadc_digital_offsets, offsets)
        self._written["cadc_digital_offset"] = np.array(self._config.cadc_digital_offset)
        self._spend(2 * SRAM_WRITE_S)

    def write_weights(self, logical):
        """Signed weights (2, 128, 256) of both halves."""
        self._write_halves("weights", ChipConfig.set_logical_weights, logical)
        self._spend(2 * K.SYNAPSE_ROWS_PER_HALF * SRAM_WRITE_S / 16)

    def set_cadc_input(self, source):
        """Connect both halves' CADC channels to the membranes (``'membrane'``)
        or to the quadrants' reference lines (``'reference'``)."""
        for h in range(K.NUM_HALVES):
            self._config.set_cadc_input(h, source)
        self._spend(2 * SRAM_WRITE_S)

    # --- measurements ----------------------------------------------------------
    def read_codes(self, repeats: int, read_cycle: int = RESET_SETTLE_CYCLES) -> np.ndarray:
        """CADC codes of every channel after a reset and ``read_cycle`` cycles of
        waiting, ``repeats`` times: float (2, 256), the mean over repeats.

        repeats : int, 1..100000; read_cycle : FPGA cycles (8 ns) after the reset,
        0..2**31-1 (default 63, about 0.5 us)."""
        repeats = check_int("repeats", repeats, 1, MAX_REPEATS)
        read_cycle = check_int("read_cycle", read_cycle, 0, K.MAX_CYCLE)
        empty = EventSchedule(np.zeros(repeats + 1, np.int64), *(np.zeros(0, np.int64) for _ in range(3)))
        out = np.empty((K.NUM_HALVES, K.COLUMNS_PER_HALF))
        for h in range(K.NUM_HALVES):
            out[h] = integrate_fast(self._chip, h, empty, read_cycle, noise=self._noise(),
                                    voltages=False).codes.mean(axis=0)
        self._count(repeats, read_cycle)
        return out

    def amplitudes(self, schedules, repeats: int) -> np.ndarray:
        """Baseline-subtracted response to event trains, averaged over repeats.

        ``schedules``: per half, a list of event lists [(driver, value, cycle), ...]
        (one per test vector; all halves the same length). Returns float
        (2, num_vectors, 256) in LSB. repeats : int, 1..100000."""
        repeats = check_int("repeats", repeats, 1, MAX_REPEATS)
        if not isinstance(schedules, (list, tuple)) or len(schedules) != K.NUM_HALVES \
                or len({len(s) for s in schedules}) != 1 or not len(schedules[0]):
            raise ValueError("schedules must hold one list of event lists per half, both of "
                             "the same non-zero length")
        n = len(schedules[0])
        out = np.empty((K.NUM_HALVES, n, K.COLUMNS_PER_HALF))
        for h in range(K.NUM_HALVES):
            vecs = [v for v in schedules[h] for _ in range(repeats)]
            sched = EventSchedule.from_lists(vecs)
            read = sched.last_cycle() + POST_EVENT_WAIT_CYCLES
            empty = EventSchedule(np.zeros(len(vecs) + 1, np.int64),
                                  *(np.zeros(0, np.int64) for _ in range(3)))
            # Baseline and signal share their slow noise: one shared seed, and vector
            # i of the baseline has the stream index of vector i of the signal (both
            # sources start at index 0 and hold the same number of vectors).
            shared = self._shared_seed()
            base = integrate_fast(self._chip, h, empty, RESET_SETTLE_CYCLES,
                                  noise=self._noise(shared_seed=shared), voltages=False).codes
            sig = integrate_fast(self._chip, h, sched, read, noise=self._noise(shared_seed=shared),
                                 voltages=False).codes
            diff = sig.astype(float) - base.astype(float)
            out[h] = diff.reshape(n, repeats, K.COLUMNS_PER_HALF).mean(axis=1)
            self._count(len(vecs), int(read.max(initial=0)))
        return out

    def _count(self, reads, read_cycle):
        self.measurements += K.NUM_HALVES * reads
        # Both halves convert at once: per read a reset, the wait and two conversions.
        self._spend(reads * (read_cycle * K.FPGA_CYCLE_S + 2 * K.CADC_CONVERSION_S) \
            + READ_OVERHEAD_S)

    def _spend(self, seconds):
        """Count silicon time and advance the chip's clock by it (capmem
        cells written before settle along it)."""
        self.silicon_time_s += seconds
        self._chip.advance_time(seconds)
