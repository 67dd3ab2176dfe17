"""The calibration steps, in the chip makers' order [SW]:

1. CADC: ramp start and slope per quadrant so that a low and a high reference
   read about 20 and 220, then per-channel digital offsets so that every
   channel reads its quadrant's median at mid-range.
2. Synapse bias current per quadrant, matched to the weakest quadrant.
3. Synapse drivers: the ramp current per capmem block, then each driver's
   6-bit offset, so that all drivers give the median amplitude for a test input.
4. Neurons: reset and leak potentials so the resting read is about 120,
   excitatory and inhibitory input strengths matched to one amplitude, leak
   switched off for integration.

Each step is a measurement (configure, then read through :class:`ChipAccess`)
driven by a search from :mod:`.search`; the step returns a typed
:class:`StepResult`. A setting that cannot reach its target is reported by
name in ``failures``; the search leaves it at the end of its range.

Your own steps follow the same protocol (:class:`CalibrationStep`): a callable
``step(access, target)`` that configures and measures only through the
:class:`ChipAccess` it is given and returns a :class:`StepResult` or None (then
:func:`~bss2sim.experiments.calibration.calibrate` records what the step wrote
and counted). Its name is its ``name`` attribute, else its ``__name__``. Pass
it to ``calibrate(chip, steps=[...])`` beside or instead of the built-in names
of :data:`BUILTIN_STEPS`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_int, check_real

from .measurements import ChipAccess
from .search import binary_search, noise_tolerant_binary_search, windowed_search

H, C, D = K.NUM_HALVES, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF
QUADRANT_OF_COLUMN = np.arange(C) // K.COLUMNS_PER_QUADRANT


@dataclass(frozen=True)
class CalibrationTarget:
    """What a calibrated chip should read (the defaults follow the group's software [SW])."""

    cadc_read_range: tuple = (20, 220)
    """Codes the low and the high reference voltage should read."""
    cadc_reference_v: tuple = (0.2, 1.2)
    """Reference voltages of the two ends of the read range (*assumed*: 5 mV per code)."""
    resting_read: float = 120.0
    """CADC code of a neuron at rest (reset and leak potential)."""
    test_value: int = 15
    """Input value of the test activations."""
    test_weight: int = 63
    """Weight of the test activations."""
    neuron_amplitude_lsb: float | None = None
    """Amplitude every neuron's excitatory and inhibitory input is matched to,
    for the neuron test vector; None: the median before the step."""

    def __post_init__(self):
        # numpy scalars become Python numbers (the target id hashes the values as
        # JSON); Python numbers are kept as given, so ids of existing files stay.
        def plain(v):
            if isinstance(v, np.integer) and not isinstance(v, np.bool_):
                return int(v)
            if isinstance(v, np.floating):
                return float(v)
            if isinstance(v, list):
                return tuple(plain(x) for x in v)
            if isinstance(v, tuple):
                return tuple(plain(x) for x in v)
            return v
        for name, value in asdict(self).items():
            object.__setattr__(self, name, plain(value))
        for name, v in (("cadc_read_range", self.cadc_read_range),
                        ("cadc_reference_v", self.cadc_reference_v)):
            if not isinstance(v, (tuple, list)) or len(v) != 2:
                raise WrongTypeError(f"CalibrationTarget.{name}={v!r} must be a (low, high) pair")
        for i, v in enumerate(self.cadc_read_range):
            check_int(f"CalibrationTarget.cadc_read_range[{i}]", v, 0, K.CADC_MAX)
        for i, v in enumerate(self.cadc_reference_v):
            check_real(f"CalibrationTarget.cadc_reference_v[{i}]", v, 0.0, K.CAPMEM_VOLTAGE_FULL_SCALE_V, "V")
        check_real("CalibrationTarget.resting_read", self.resting_read, 0.0, K.CADC_MAX)
        check_int("CalibrationTarget.test_value", self.test_value, 1, K.INPUT_MAX)
        check_int("CalibrationTarget.test_weight", self.test_weight, 1, K.WEIGHT_MAX)
        if self.neuron_amplitude_lsb is not None:
            check_real("CalibrationTarget.neuron_amplitude_lsb", self.neuron_amplitude_lsb, 0.0,
                       K.CADC_MAX, "LSB", lo_open=True)
        lo, hi = self.cadc_read_range
        if not 0 <= lo < hi <= K.CADC_MAX:
            raise ValueError(f"cadc_read_range={self.cadc_read_range!r} must satisfy 0 <= low < high <= 255")
        vlo, vhi = self.cadc_reference_v
        if not 0 <= vlo < vhi <= K.CAPMEM_VOLTAGE_FULL_SCALE_V:
            raise ValueError(f"cadc_reference_v={self.cadc_reference_v!r} must lie within 0..1.6 V, low < high")
        if not lo <= self.resting_read <= hi:
            raise ValueError(f"resting_read={self.resting_read!r} must lie within the read range {lo}..{hi}")
        if not 1 <= self.test_value <= K.INPUT_MAX:
            raise ValueError(f"test_value={self.test_value!r} is out of range 1..{K.INPUT_MAX}")
        if not 1 <= self.test_weight <= K.WEIGHT_MAX:
            raise ValueError(f"test_weight={self.test_weight!r} is out of range 1..{K.WEIGHT_MAX}")

    @property
    def target_id(self) -> str:
        """Short stable name of this target set (for file names)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class StepResult:
    """Outcome of one calibration step."""

    name: str
    """Name of the step (unique within one calibration)."""
    settings: dict = field(default_factory=dict)
    """What the step wrote: 'capmem/<name>', 'driver_offset', 'cadc_digital_offset' -> arrays
    (filled from the access's record of writes when a step leaves it empty)."""
    before: dict = field(default_factory=dict)
    """Spread measures before the step: name -> float array (per quadrant (2, 2) or per half)."""
    after: dict = field(default_factory=dict)
    """The same measures after the step."""
    failures: list = field(default_factory=list)
    """Components that could not reach their target, by name."""
    measurements: int = 0
    """Analog reads the step made (one per half and vector); counted by the access."""
    capmem_writes: int = 0
    """Capmem writes that changed a cell; counted by the access."""
    silicon_time_s: float = 0.0
    """Time the step would take on silicon, s; counted by the access."""
    detail: dict = field(default_factory=dict)
    """Per-element values for plots (e.g. per-channel codes before and after)."""

    def apply(self, config):
        """Write this step's settings into a :class:`bss2sim.circuits.ChipConfig`."""
        for key, value in self.settings.items():
            if key.startswith("capmem/"):
                config.set_capmem(key.split("/", 1)[1], value)
            elif key == "driver_offset":
                for h in range(H):
                    config.set_driver_offsets(h, value[h])
            elif key == "cadc_digital_offset":
                for h in range(H):
                    config.set_cadc_digital_offsets(h, value[h])
            else:
                raise ValueError(f"unknown setting {key!r} in step {self.name!r}")


@runtime_checkable
class CalibrationStep(Protocol):
    """What ``calibrate(chip, steps=[...])`` accepts besides the built-in names.

    A callable taking the :class:`ChipAccess` (configure and measure only) and
    the :class:`CalibrationTarget`; it returns a :class:`StepResult`, or None
    for one made of what it wrote and counted. Plain functions qualify; their
    ``__name__`` names the step unless they carry a ``name`` attribute."""

    def __call__(self, access: ChipAccess, target: CalibrationTarget) -> "StepResult | None": ...


def voltage_setting(volts) -> np.ndarray:
    """Nominal capmem setting of a voltage (calibration does not know the cells' mismatch)."""
    return np.clip(np.round(np.asarray(volts) / K.CAPMEM_VOLTAGE_FULL_SCALE_V * K.CAPMEM_MAX),
                   0, K.CAPMEM_MAX).astype(np.int64)


def quadrant_median(values) -> np.ndarray:
    """(2, 256) per-channel values -> (2, 2) medians per quadrant (NaN-aware)."""
    out = np.empty((H, K.QUADRANTS_PER_HALF))
    for q in range(K.QUADRANTS_PER_HALF):
        out[:, q] = np.nanmedian(values[:, QUADRANT_OF_COLUMN == q], axis=1)
    return out


def quadrant_std(values) -> np.ndarray:
    out = np.empty((H, K.QUADRANTS_PER_HALF))
    for q in range(K.QUADRANTS_PER_HALF):
        out[:, q] = np.nanstd(values[:, QUADRANT_OF_COLUMN == q], axis=1)
    return out


class _Counter:
    """Counts the access's work during one step."""

    def __init__(self, access: ChipAccess):
        self.access = access
        self.m0, self.c0, self.t0 = access.measurements, access.capmem_writes, access.silicon_time_s

    def fill(self, result: StepResult) -> StepResult:
        a = self.access
        result.measurements = a.measurements - self.m0
        result.capmem_writes = a.capmem_writes - self.c0
        result.silicon_time_s = a.silicon_time_s - self.t0
        return result


def _quadrant_names(mask, what):
    return [f"{what} of quadrant {q} (half {h}, {'left' if q == 0 else 'right'})"
            for h, q in zip(*np.nonzero(mask))]


# --- recalibration from a previous calibration ---------------------------------------
CAPMEM_WINDOW = 7
"""Half-width of the window a recalibration searches a capmem setting in around
its previous value, capmem steps (*assumed*: 7 steps, about 11 mV or 7 nA, covers
what temperature and ageing move a calibrated setting; 15 settings take 4
halvings instead of the full range's 10). Where the window does not hold the
target the search widens to the full range."""
STRENGTH_WINDOW = 31
"""Half-width of the window around a previous bias or input-strength setting
(synapse bias, driver ramp, synaptic-input strengths), capmem steps (*assumed*:
one step of these currents moves an amplitude by only about 0.2 %, 0.09 LSB of
a 44 LSB amplitude; 31 steps, about 3 LSB, are three times the averaged read
noise of one neuron's amplitude, so noise alone rarely leaves the target
outside the window; 63 settings take 6 halvings instead of 10)."""
DRIVER_OFFSET_WINDOW = 3
"""Half-width of the window around a driver's previous coarse offset, offset
steps (*assumed*: 3 steps, 90 ps; 7 settings take 3 halvings instead of 6)."""


def _check_previous(previous):
    if previous is not None and not isinstance(previous, StepResult):
        raise WrongTypeError(f"previous={previous!r} must be the StepResult of the same step "
                             "from an earlier calibration, or None (calibrate from scratch)")
    return previous


def _previous_setting(previous, key, shape, source="settings"):
    """The previous calibration's setting ``key`` as int64 of ``shape``, or None
    where there is none (then the step searches the full range)."""
    if previous is None:
        return None
    value = (previous.settings if source == "settings" else previous.detail).get(key)
    if value is None:
        return None
    a = np.asarray(value)
    if a.shape != tuple(shape) or a.dtype.kind not in "iu":
        return None
    return a.astype(np.int64)


def _search(measure, lo, hi, target, *, increasing, shape, tolerance=0.0, start=None,
            window=CAPMEM_WINDOW, repeats=None):
    """The full-range search of a fresh calibration, or, with ``start`` (the
    previous settings), :func:`~.search.windowed_search` around them."""
    if start is not None:
        return windowed_search(measure, lo, hi, target, start=start, half_width=window,
                               increasing=increasing, shape=shape, tolerance=tolerance, repeats=repeats)
    if repeats is None:
        return binary_search(measure, lo, hi, target, increasing=increasing, shape=shape,
                             tolerance=tolerance)
    return noise_tolerant_binary_search(measure, lo, hi, target, increasing=increasing, shape=shape,
                                        repeats=repeats, tolerance=tolerance)


# --- 1. CADC -----------------------------------------------------------------------
def calibrate_cadc(access: ChipAccess, target: CalibrationTarget, repeats: int = 4,
                   previous: StepResult | None = None) -> StepResult:
    """Step 1 (see the module's docstring). ``previous``: this step's result of
    an earlier calibration of the chip; its ramp settings are the centres of
    narrow searches (:data:`CAPMEM_WINDOW`), and one pass of start and slope
    suffices where neither moves by more than two steps."""
    count = _Counter(access)
    _check_previous(previous)
    prev_start = _previous_setting(previous, "capmem/cadc_ramp_start", (H, 2))
    prev_slope = _previous_setting(previous, "capmem/cadc_ramp_slope", (H, 2))
    windowed = prev_start is not None and prev_slope is not None
    lo_code, hi_code = target.cadc_read_range
    v_lo, v_hi = target.cadc_reference_v
    v_mid = 0.5 * (v_lo + v_hi)
    access.set_cadc_input("reference")
    access.write_digital_offsets(np.zeros((H, C), np.int64))
    access.write_capmem("cadc_reference", voltage_setting(v_mid))
    mid_before = access.read_codes(repeats)

    def reading_at(name):
        def measure(settings):
            access.write_capmem(name, settings)
            return quadrant_median(access.read_codes(repeats))
        return measure

    failures = []
    # Start and slope interact (the code at the low end depends on both): twice.
    for n_pass in range(2):
        access.write_capmem("cadc_reference", voltage_setting(v_lo))
        start = _search(reading_at("cadc_ramp_start"), 0, K.CAPMEM_MAX, lo_code,
                        increasing=False, shape=(H, 2), tolerance=1.0,
                        start=prev_start if windowed else None)
        access.write_capmem("cadc_ramp_start", start.settings)
        access.write_capmem("cadc_reference", voltage_setting(v_hi))
        slope = _search(reading_at("cadc_ramp_slope"), 1, K.CAPMEM_MAX, hi_code,
                        increasing=False, shape=(H, 2), tolerance=1.0,
                        start=prev_slope if windowed else None)
        access.write_capmem("cadc_ramp_slope", slope.settings)
        if windowed:
            moved = max(np.abs(start.settings - prev_start).max(), np.abs(slope.settings - prev_slope).max())
            if moved <= 2:
                break          # the previous pair still holds (within read noise): no second pass
            prev_start, prev_slope = start.settings, slope.settings
    failures += _quadrant_names(~start.reached, "CADC ramp start")
    failures += _quadrant_names(~slope.reached, "CADC ramp slope")

    # Channels that do not follow their input cannot be calibrated.
    access.write_capmem("cadc_reference", voltage_setting(v_lo))
    low = access.read_codes(repeats)
    access.write_capmem("cadc_reference", voltage_setting(v_hi))
    high = access.read_codes(repeats)
    span = high - low
    dead = span < 0.5 * np.median(span)
    for h, c in zip(*np.nonzero(dead)):
        failures.append(f"CADC channel {c} of half {h}: reads {low[h, c]:.0f} at {v_lo} V and "
                        f"{high[h, c]:.0f} at {v_hi} V (stuck, does not follow its input)")

    access.write_capmem("cadc_reference", voltage_setting(v_mid))
    # Many reads: the offsets are integers, so the read noise must average well below 0.5 LSB.
    mid = access.read_codes(64 * repeats)
    med = quadrant_median(np.where(dead, np.nan, mid))
    offsets = np.round(med[:, QUADRANT_OF_COLUMN] - mid)
    offsets = np.where(dead, 0, offsets)
    clipped = (offsets < K.CADC_DIGITAL_OFFSET_MIN) | (offsets > K.CADC_DIGITAL_OFFSET_MAX)
    for h, c in zip(*np.nonzero(clipped & ~dead)):
        failures.append(f"CADC channel {c} of half {h}: needs digital offset {offsets[h, c]:.0f}, "
                        f"beyond {K.CADC_DIGITAL_OFFSET_MIN}..{K.CADC_DIGITAL_OFFSET_MAX}")
    offsets = np.clip(offsets, K.CADC_DIGITAL_OFFSET_MIN, K.CADC_DIGITAL_OFFSET_MAX).astype(np.int64)
    access.write_digital_offsets(offsets)
    mid_after = access.read_codes(64 * repeats)
    access.bad_channels = dead.copy()
    access.set_cadc_input("membrane")
    dev_before = mid_before - quadrant_median(mid_before)[:, QUADRANT_OF_COLUMN]
    dev_after = np.where(dead, np.nan, mid_after - quadrant_median(
        np.where(dead, np.nan, mid_after))[:, QUADRANT_OF_COLUMN])
    result = StepResult(
        name="cadc",
        settings={"capmem/cadc_ramp_start": start.settings, "capmem/cadc_ramp_slope": slope.settings,
                  "cadc_digital_offset": offsets},
        before={"channel_offset_std_lsb": quadrant_std(dev_before)},
        after={"channel_offset_std_lsb": quadrant_std(dev_after),
               "channel_offset_max_lsb": np.nanmax(np.abs(dev_after), axis=1),
               "low_read": quadrant_median(low), "high_read": quadrant_median(high)},
        failures=failures,
        detail={"mid_before": mid_before, "mid_after": mid_after, "dead_channels": dead})
    return count.fill(result)


# --- helpers for amplitude measurements ------------------------------------------------
def _train(drivers, value, wait=5):
    """Events of ``value`` on ``drivers`` one every ``wait`` cycles (a list for from_lists)."""
    return [(int(d), int(value), i * wait) for i, d in enumerate(drivers)]


def _repeat_train(driver, value, count, wait=8):
    return [(int(driver), int(value), i * wait) for i in range(count)]


NEURON_TEST_DRIVERS = np.arange(0, D, 4)
"""32 drivers spread over the array, for the quadrant and neuron test vectors."""


def _all_weights(weight):
    return np.full((H, K.LOGICAL_ROWS_PER_HALF, C), weight, np.int64)


# --- 2. synapse bias ----------------------------------------------------------------
def calibrate_synapse_bias(access: ChipAccess, target: CalibrationTarget, repeats: int = 6,
                           previous: StepResult | None = None) -> StepResult:
    """Step 2. ``previous``: as for :func:`calibrate_cadc` (search within
    :data:`STRENGTH_WINDOW` of the previous bias settings). ``repeats`` (default
    6): the quadrant's common conversion noise is the same on all its columns,
    so the quadrant median averages it only over repeats, not over columns."""
    count = _Counter(access)
    _check_previous(previous)
    prev = _previous_setting(previous, "capmem/synapse_bias", (H, 2))
    access.write_weights(_all_weights(target.test_weight))
    vec = [[_train(NEURON_TEST_DRIVERS, target.test_value)] for _ in range(H)]

    def measure(settings):
        access.write_capmem("synapse_bias", settings)
        return quadrant_median(access.amplitudes(vec, repeats)[:, 0])

    before = measure(access.read_capmem("synapse_bias") if prev is None else prev)
    goal = float(before.min())
    res = _search(measure, 0, K.CAPMEM_MAX, goal, increasing=True, shape=(H, 2), tolerance=0.5, start=prev,
                  window=STRENGTH_WINDOW)
    access.write_capmem("synapse_bias", res.settings)
    after = measure(res.settings)
    result = StepResult(
        name="synapse_bias", settings={"capmem/synapse_bias": res.settings},
        before={"quadrant_amplitude_lsb": before, "relative_spread": np.array(np.std(before) / np.mean(before))},
        after={"quadrant_amplitude_lsb": after, "relative_spread": np.array(np.std(after) / np.mean(after))},
        failures=_quadrant_names(~res.reached, "synapse bias"),
        detail={"target_lsb": goal})
    return count.fill(result)


# --- 3. drivers ------------------------------------------------------------------------
DRIVER_LOW_VALUE = 1
"""Low activation of the driver step's second pass: the smallest input that
sends an event. The driver's one offset knob shifts the pulse width at every
value alike, while the width's slope (the driver's gain) stays mismatched: set
at the high test value alone, the offsets leave about a tenth of the drivers
sending no charge at all at value 1 [model: 5 % gain spread over a 2.9 ns test
pulse is 0.14 ns, against a 0.2 ns pulse at value 1]."""
DRIVER_LOW_EVENTS = 64
"""Events per driver at the low activation (*assumed*: a 0.2 ns pulse gives a
fifteenth of the test value's amplitude; 64 events, one every 64 ns, give about
4-6 LSB, well above the noise of the mean over the middle 128 columns, read
with twice the test value's repeats)."""
DRIVER_REFINE_WINDOW = 3
"""Steps each driver's offset may move from its test-value setting towards
equal amplitudes at the low activation (*assumed*: one 30 ps step is about 1 %
of the 2.9 ns test pulse, so the test-value amplitude stays within about 3 %;
one step is 15 % of the 0.2 ns pulse at value 1)."""
DRIVER_LOW_FLOOR = 0.3
"""Fraction of the median low-activation amplitude below which a driver is
raised beyond :data:`DRIVER_REFINE_WINDOW` (*assumed*: an input that sends no
charge is a dead zone no training can undo, while a few percent of gain error
at the test value is a linear error it can)."""
DRIVER_LIFT_CHECKS = 4
"""Rounds of measuring the lifted drivers again and raising those still below
the floor by one step (*assumed*: the amplitude of a pulse of a few ps is not
yet linear in its width, so the search alone can stop a step short)."""
DRIVER_SILENT_FRACTION = 0.1
"""A driver below this fraction of the median low-activation amplitude even
after being raised sends (almost) no charge at value 1 and is reported (*assumed*)."""
DEAD_ROW_FRACTION = 0.25
"""A synapse row whose driver amplitude stays below this fraction of the
half's median is dead (*assumed*: a healthy row's median over 256 columns is
within a few percent of the others'; a driver at the end of its offset range
still gives more than half the median)."""


def calibrate_drivers(access: ChipAccess, target: CalibrationTarget, repeats: int = 2,
                      events_per_driver: int = 16, previous: StepResult | None = None) -> StepResult:
    """Step 3: the ramp current per capmem block, then each driver's 6-bit
    offset in two passes, as the chip group aligns drivers at a test activation:

    a. ramp current per block (median amplitude of the block's drivers);
    b. coarse offset at the high test value (``target.test_value``): binary
       search over the full 6-bit range to the median amplitude (the level
       of the VMM's gain);
    c. both rows of every driver at that setting: the excitatory row (weights
       +w) and the inhibitory row (weights -w); a row below
       :data:`DEAD_ROW_FRACTION` of the median is reported dead by name (both
       dead: the driver sends no pulse);
    d. refinement at the low activation :data:`DRIVER_LOW_VALUE`: each
       usable driver's offset moves within :data:`DRIVER_REFINE_WINDOW` steps
       of its coarse setting towards the median low amplitude; a driver still
       below :data:`DRIVER_LOW_FLOOR` of it is raised until it reaches the
       floor, and reported if it sends almost nothing even then.

    Amplitudes are medians over the 256 columns of a driver's row, in LSB.
    ``previous``: this step's result of an earlier calibration; the ramp and
    the coarse offsets are searched in narrow windows around its settings
    (:data:`STRENGTH_WINDOW`, :data:`DRIVER_OFFSET_WINDOW`), widening where
    those do not reach the target."""
    count = _Counter(access)
    _check_previous(previous)
    prev_ramp = _previous_setting(previous, "capmem/driver_ramp", (H, 2))
    prev_coarse = _previous_setting(previous, "driver_offset_coarse", (H, D), source="detail")
    if prev_coarse is None:
        prev_coarse = _previous_setting(previous, "driver_offset", (H, D))
    access.write_weights(_all_weights(target.test_weight))
    failures = []
    # 3a. Ramp current per capmem block: drivers 0..63 and 64..127 of each half.
    blocks = [np.arange(b * K.DRIVERS_PER_CAPMEM_BLOCK, (b + 1) * K.DRIVERS_PER_CAPMEM_BLOCK)[::2]
              for b in range(K.QUADRANTS_PER_HALF)]
    vec = [[_train(blk, target.test_value) for blk in blocks] for _ in range(H)]

    def block_amp(settings):
        access.write_capmem("driver_ramp", settings)
        return np.median(access.amplitudes(vec, repeats), axis=2)   # (2 halves, 2 blocks)

    block_before = block_amp(access.read_capmem("driver_ramp") if prev_ramp is None else prev_ramp)
    goal = float(np.median(block_before))
    ramp = _search(block_amp, 1, K.CAPMEM_MAX, goal, increasing=False, shape=(H, 2), tolerance=0.5,
                   start=prev_ramp, window=STRENGTH_WINDOW)
    access.write_capmem("driver_ramp", ramp.settings)
    block_after = block_amp(ramp.settings)
    failures += [f"driver ramp of block {b} (half {h})" for h, b in zip(*np.nonzero(~ramp.reached))]

    # 3b. Coarse offsets at the high test value: every driver alone, repeated events.
    dvec = [[_repeat_train(d, target.test_value, events_per_driver) for d in range(D)] for _ in range(H)]
    lvec = [[_repeat_train(d, DRIVER_LOW_VALUE, DRIVER_LOW_EVENTS) for d in range(D)] for _ in range(H)]

    def driver_amp(settings, schedules=dvec):
        access.write_driver_offsets(settings)
        return np.median(access.amplitudes(schedules, repeats), axis=2)  # (2, 128)

    def low_amp(settings):
        # Small amplitudes: the median of 256 columns' reads (averaged codes in
        # steps of 1 / repeats) is quantised, so the mean of the middle half of the
        # columns is taken instead (robust to stuck channels, not quantised).
        access.write_driver_offsets(settings)
        a = np.sort(access.amplitudes(lvec, 2 * repeats), axis=2)
        return a[:, :, C // 4: C - C // 4].mean(axis=2)

    start = np.full((H, D), 32, np.int64) if prev_coarse is None else prev_coarse
    drv_before = driver_amp(start)
    low_before = low_amp(start)
    goal_d = float(np.median(drv_before))
    offs = _search(driver_amp, 0, K.DRIVER_OFFSET_MAX, goal_d, increasing=True, shape=(H, D),
                   tolerance=max(0.5, 0.02 * goal_d), start=prev_coarse, window=DRIVER_OFFSET_WINDOW)
    coarse = offs.settings
    drv_coarse = offs.values

    # 3c. Both rows of every driver at its coarse setting.
    access.write_driver_offsets(coarse)
    access.write_weights(_all_weights(-target.test_weight))
    inh = -np.median(access.amplitudes(dvec, repeats), axis=2)
    access.write_weights(_all_weights(target.test_weight))
    med_exc = np.median(drv_coarse, axis=1, keepdims=True)
    med_inh = np.median(inh, axis=1, keepdims=True)
    dead_exc = drv_coarse < DEAD_ROW_FRACTION * med_exc
    dead_inh = inh < DEAD_ROW_FRACTION * med_inh
    no_pulse = dead_exc & dead_inh
    usable = offs.reached & ~dead_exc & ~dead_inh

    # 3d. Refinement at the low activation.
    low_coarse = low_amp(coarse)
    goal_low = float(np.median(low_coarse[usable])) if usable.any() else float(np.median(low_coarse))

    def shifted(base, mask):
        return lambda shift: low_amp(np.where(mask, np.clip(base + shift, 0, K.DRIVER_OFFSET_MAX), base))

    ref = binary_search(shifted(coarse, usable), -DRIVER_REFINE_WINDOW, DRIVER_REFINE_WINDOW, goal_low,
                        increasing=True, shape=(H, D))
    final = np.where(usable, np.clip(coarse + ref.settings, 0, K.DRIVER_OFFSET_MAX), coarse)
    low_final = np.where(usable, ref.values, low_coarse)
    floor = DRIVER_LOW_FLOOR * goal_low
    lift = usable & (low_final < floor)
    lifted = np.zeros((H, D), bool)
    for _ in range(2):              # a second round for those the first left just below
        if not lift.any():
            break
        up = binary_search(shifted(final, lift), 0, K.DRIVER_OFFSET_MAX, floor, increasing=True,
                           shape=(H, D))
        final = np.where(lift, np.clip(final + up.settings, 0, K.DRIVER_OFFSET_MAX), final)
        lifted |= lift
        lift = lift & (up.values < floor) & (final < K.DRIVER_OFFSET_MAX)
        if lift.any():
            final = np.where(lift, final + 1, final)
            lift = lift & (low_amp(final) < floor)
    low_after = low_amp(final)
    for _ in range(DRIVER_LIFT_CHECKS):
        # Checked by measurement: one more step for any still below the floor.
        lift = usable & (low_after < floor) & (final < K.DRIVER_OFFSET_MAX)
        if not lift.any():
            break
        final = np.where(lift, final + 1, final)
        lifted |= lift
        low_after = low_amp(final)
    lifted = int(lifted.sum())
    drv_after = driver_amp(final)
    silent = usable & (low_after < DRIVER_SILENT_FRACTION * goal_low)

    for h, d in zip(*np.nonzero(~usable | silent)):
        o, e, i = final[h, d], drv_coarse[h, d], inh[h, d]
        me, mi = float(med_exc[h, 0]), float(med_inh[h, 0])
        if no_pulse[h, d]:
            failures.append(f"driver {d} of half {h}: sends no pulse, neither of its synapse rows "
                            f"{2 * d} and {2 * d + 1} receives charge ({e:.1f} and {i:.1f} LSB at offset "
                            f"{o}, medians {me:.1f} and {mi:.1f} LSB)")
        elif dead_exc[h, d]:
            failures.append(f"driver {d} of half {h}: excitatory synapse row {2 * d} is dead "
                            f"({e:.1f} LSB at offset {o}, median {me:.1f} LSB; its inhibitory row "
                            f"{2 * d + 1} gives {i:.1f} LSB)")
        elif dead_inh[h, d]:
            failures.append(f"driver {d} of half {h}: inhibitory synapse row {2 * d + 1} is dead "
                            f"({i:.1f} LSB, median {mi:.1f} LSB; its excitatory row {2 * d} gives "
                            f"{e:.1f} LSB)")
        elif not offs.reached[h, d]:
            failures.append(f"driver {d} of half {h}: amplitude {e:.1f} LSB at offset {o}, target "
                            f"{goal_d:.1f} LSB (out of the offset's range)")
        else:
            failures.append(f"driver {d} of half {h}: sends almost no charge at input value "
                            f"{DRIVER_LOW_VALUE} ({low_after[h, d]:.2f} LSB at offset {o}, median "
                            f"{goal_low:.2f} LSB)")
    ok = usable & ~silent
    access.bad_drivers = ~ok

    def rel_spread(a, mask=None):
        a = a if mask is None else np.where(mask, a, np.nan)
        return np.nanstd(a, axis=-1) / np.nanmedian(a, axis=-1)

    result = StepResult(
        name="drivers",
        settings={"capmem/driver_ramp": ramp.settings, "driver_offset": final},
        before={"block_amplitude_lsb": block_before, "driver_relative_spread": rel_spread(drv_before),
                "driver_low_relative_spread": rel_spread(low_before)},
        after={"block_amplitude_lsb": block_after,
               "driver_relative_spread": rel_spread(drv_after, ok),
               "driver_low_relative_spread": rel_spread(low_after, ok)},
        failures=failures,
        detail={"driver_amplitude_before": drv_before, "driver_amplitude_after": drv_after,
                "driver_target_lsb": goal_d, "driver_reached": ok,
                "driver_offset_coarse": coarse, "driver_amplitude_coarse": drv_coarse,
                "driver_low_value": DRIVER_LOW_VALUE, "driver_low_target_lsb": goal_low,
                "driver_low_amplitude_before": low_before, "driver_low_amplitude_coarse": low_coarse,
                "driver_low_amplitude_after": low_after, "drivers_lifted": lifted,
                "inhibitory_amplitude": inh, "dead_excitatory_row": dead_exc,
                "dead_inhibitory_row": dead_inh, "no_pulse": no_pulse})
    return count.fill(result)


# --- 4. neurons ------------------------------------------------------------------------
LEAK_ON_SETTING = 512
"""Leak bias while the leak potential is calibrated (about 2 us membrane time constant)."""
LEAK_SETTLE_CYCLES = 2500
"""Wait for the membrane to settle at the leak potential: 20 us, about 10 time constants."""


def neuron_test_drivers(bad) -> list:
    """Per half, the drivers of the neuron test vector: each of
    :data:`NEURON_TEST_DRIVERS` or, where ``bad`` (bool (2, 128), the drivers
    the driver step found faulty) marks it, the first good one of the next
    three (its group of four), so that a dead row or driver does not weaken
    every neuron's test amplitude of its half; a group without a good driver
    is left out."""
    bad = np.asarray(bad, bool)
    out = []
    for h in range(H):
        chosen = []
        for d in NEURON_TEST_DRIVERS:
            for cand in range(d, min(d + 4, D)):
                if not bad[h, cand]:
                    chosen.append(int(cand))
                    break
        out.append(chosen)
    return out


def calibrate_neurons(access: ChipAccess, target: CalibrationTarget, repeats: int = 4,
                      previous: StepResult | None = None) -> StepResult:
    """Step 4. The test vector leaves out the drivers the driver step found
    faulty (:func:`neuron_test_drivers`). ``previous``: as for
    :func:`calibrate_cadc` (searches within :data:`CAPMEM_WINDOW` of the
    previous potentials and :data:`STRENGTH_WINDOW` of the input strengths)."""
    count = _Counter(access)
    _check_previous(previous)
    failures = []
    shape = (H, C)
    prev = {name: _previous_setting(previous, f"capmem/{name}", shape)
            for name in ("reset_potential", "leak_potential", "syn_strength_exc", "syn_strength_inh")}

    # Neurons read through a channel the CADC step found dead cannot be measured:
    # they were reported there and are left out here.
    bad = access.bad_channels

    def names(mask, what):
        return [f"{what} of neuron {c} (half {h})" for h, c in zip(*np.nonzero(mask & ~bad))]

    def good(a):
        return np.where(bad, np.nan, a)

    access.write_capmem("leak_bias", 0)
    rest_before = access.read_codes(repeats)

    def reset_read(settings):
        access.write_capmem("reset_potential", settings)
        return access.read_codes(repeats)

    reset = _search(reset_read, 0, K.CAPMEM_MAX, target.resting_read, increasing=True,
                    shape=shape, tolerance=1.0, start=prev["reset_potential"])
    access.write_capmem("reset_potential", reset.settings)
    failures += names(~reset.reached, "reset potential")
    reached = reset.reached.copy()     # neurons whose every setting reached its target

    access.write_capmem("leak_bias", LEAK_ON_SETTING)

    def leak_read(settings):
        access.write_capmem("leak_potential", settings)
        return access.read_codes(repeats, read_cycle=LEAK_SETTLE_CYCLES)

    leak = _search(leak_read, 0, K.CAPMEM_MAX, target.resting_read, increasing=True,
                   shape=shape, tolerance=1.0, start=prev["leak_potential"])
    access.write_capmem("leak_potential", leak.settings)
    failures += names(~leak.reached, "leak potential")
    reached &= leak.reached
    leak_rest = access.read_codes(repeats, read_cycle=LEAK_SETTLE_CYCLES)
    access.write_capmem("leak_bias", 0)

    # Excitatory and inhibitory strengths: one test vector, all weights +w, then -w.
    test_drivers = neuron_test_drivers(access.bad_drivers)
    vec = [[_train(test_drivers[h], target.test_value)] for h in range(H)]
    amps = {}
    strengths = {}
    for sign, name in ((1, "syn_strength_exc"), (-1, "syn_strength_inh")):
        access.write_weights(_all_weights(sign * target.test_weight))

        def amp(settings, _name=name, _sign=sign):
            access.write_capmem(_name, settings)
            return _sign * access.amplitudes(vec, 1)[:, 0]

        amps[name + "/before"] = amp(access.read_capmem(name) if prev[name] is None else prev[name])
    goal = target.neuron_amplitude_lsb
    if goal is None:
        goal = float(np.nanmedian(good(amps["syn_strength_exc/before"])))
    for sign, name in ((1, "syn_strength_exc"), (-1, "syn_strength_inh")):
        access.write_weights(_all_weights(sign * target.test_weight))

        def amp(settings, _name=name, _sign=sign):
            access.write_capmem(_name, settings)
            return _sign * access.amplitudes(vec, 1)[:, 0]

        res = _search(amp, 0, K.CAPMEM_MAX, goal, increasing=True, shape=shape,
                      repeats=2 * repeats, tolerance=1.0, start=prev[name], window=STRENGTH_WINDOW)
        access.write_capmem(name, res.settings)
        strengths[name] = res.settings
        failures += names(~res.reached, name.replace("syn_strength_", "synaptic input strength ("))
        reached &= res.reached
        amps[name + "/after"] = np.mean([amp(res.settings) for _ in range(2 * repeats)], axis=0)
    failures = [f.replace("(exc of", "(excitatory) of").replace("(inh of", "(inhibitory) of")
                for f in failures]
    rest_after = access.read_codes(repeats)

    def rel(a):
        a = good(a)
        return np.nanstd(a, axis=1) / np.nanmedian(a, axis=1)

    def std(a):
        return np.nanstd(good(a), axis=1)

    def mismatch(which):
        ratio = good(amps[f"syn_strength_exc/{which}"]) / good(amps[f"syn_strength_inh/{which}"])
        return np.nanstd(ratio - 1, axis=1)

    result = StepResult(
        name="neurons",
        settings={"capmem/reset_potential": reset.settings, "capmem/leak_potential": leak.settings,
                  "capmem/leak_bias": np.zeros(shape, np.int64),
                  "capmem/syn_strength_exc": strengths["syn_strength_exc"],
                  "capmem/syn_strength_inh": strengths["syn_strength_inh"]},
        before={"resting_read_std_lsb": std(rest_before),
                "exc_relative_spread": rel(amps["syn_strength_exc/before"]),
                "inh_relative_spread": rel(amps["syn_strength_inh/before"]),
                "exc_inh_mismatch_rel": mismatch("before")},
        after={"resting_read_std_lsb": std(rest_after),
               "resting_read_mean": np.nanmean(good(rest_after), axis=1),
               "leak_rest_std_lsb": std(leak_rest),
               "exc_relative_spread": rel(amps["syn_strength_exc/after"]),
               "inh_relative_spread": rel(amps["syn_strength_inh/after"]),
               "exc_inh_mismatch_rel": mismatch("after")},
        failures=failures,
        detail={"rest_before": rest_before, "rest_after": rest_after, "amplitude_target_lsb": goal,
                "neuron_test_drivers": [list(t) for t in test_drivers],
                "neuron_reached": reached & ~bad,
                **{k.replace("/", "_"): v for k, v in amps.items()}})
    return count.fill(result)


BUILTIN_STEPS = {"cadc": calibrate_cadc, "synapse_bias": calibrate_synapse_bias,
                 "drivers": calibrate_drivers, "neurons": calibrate_neurons}
"""The built-in steps by name, in the chip makers' order."""
DEFAULT_STEPS = tuple(BUILTIN_STEPS)
"""What ``calibrate`` runs when no ``steps`` are given: all built-in steps, in order."""
