"""Measure the behavioural parameters of a chip the way one would on silicon.

Only VMMs and their int8 results are used, against an integer-exact reference
``x . W``; the chip's ground truth is never read. The measurement separates
trial-to-trial noise (spread of repeated reads of the same vectors) from
fixed-pattern spread (differences of gain and offset between neurons).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_instance, check_int, check_seed

from .accelerator import Accelerator, BehaviouralParams
from .events import check_num_sends, check_wait

NEURONS = K.NUM_NEURONS


@dataclass(frozen=True)
class MeasuredBehaviour:
    """Behavioural parameters of one chip, measured through VMMs only."""

    gain: float
    """Median per-neuron gain, output LSB per unit of x*w per send."""
    sigma_trial: float
    """Trial-to-trial noise of one output (LSB), pooled over all neurons."""
    sigma_fixed_pattern: float
    """Relative spread (std / mean) of the per-neuron gains."""
    offset_fixed_pattern_lsb: float
    """Spread (std) of the per-neuron offsets at x*w = 0, in LSB."""
    gain_per_neuron: np.ndarray
    """float (512,): gain of each neuron (top half first)."""
    offset_per_neuron: np.ndarray
    """float (512,): output at x*w = 0 of each neuron (LSB)."""
    saturation_low: np.ndarray
    """float (512,): most negative output still on the neuron's line (LSB)."""
    saturation_high: np.ndarray
    """float (512,): most positive output still on the neuron's line (LSB)."""
    linear_range: tuple
    """(median saturation_low, median saturation_high) in LSB, over the neurons
    whose estimate is reliable (all neurons when none is)."""
    num_vmms: int
    """Analog passes used by the measurement."""
    chip_time_s: float
    """Simulated chip time of the measurement."""
    num_sends: int
    wait_between_events: int
    saturation_low_reliable: np.ndarray = None
    """bool (512,): saturation_low is a measured saturation point. False where
    the ramp is too coarse to say: fewer than three ramp outputs within +-40
    LSB to fit the direction's line (the main fit's line is used instead), the
    departure from the line at the ramp's first two steps, or no departure at
    all (the value is then a lower bound of the range, not a saturation point)."""
    saturation_high_reliable: np.ndarray = None
    """bool (512,): the same for saturation_high."""

    def behavioural(self) -> BehaviouralParams:
        """The behavioural model with this gain and noise."""
        return BehaviouralParams(gain=float(self.gain), sigma=float(self.sigma_trial))

    def summary(self) -> dict:
        """JSON-ready figures; every key names its unit (``_rel``: a fraction)."""
        return {"gain_lsb_per_xw": self.gain, "noise_trial_lsb": self.sigma_trial,
                "gain_spread_fixed_pattern_rel": self.sigma_fixed_pattern,
                "offset_spread_fixed_pattern_lsb": self.offset_fixed_pattern_lsb,
                "linear_range_lsb": list(self.linear_range),
                "saturation_unreliable_neurons": [int(np.sum(~self.saturation_low_reliable)),
                                                  int(np.sum(~self.saturation_high_reliable))],
                "num_vmms": self.num_vmms,
                "chip_time_s": self.chip_time_s, "num_sends": self.num_sends,
                "wait_between_events_cycles": self.wait_between_events}


def _fit_lines(ideal, y, mask):
    """Least-squares line per column on the masked points: returns (gain, offset)."""
    gains = np.full(y.shape[1], np.nan)
    offsets = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        m = mask[:, c]
        if m.sum() < 3 or np.ptp(ideal[m, c]) == 0:
            continue
        a = np.vstack([ideal[m, c], np.ones(m.sum())]).T
        (g, b), *_ = np.linalg.lstsq(a, y[m, c], rcond=None)
        gains[c], offsets[c] = g, b
    return gains, offsets


def measure_behaviour(chip: Chip, num_vectors: int = 96, repeats: int = 6, num_sends: int = 1,
                      wait_between_events: int = 5, noise_seed: int = 1, seed: int = 0,
                      ramp_steps: int = 33) -> MeasuredBehaviour:
    """Estimate gain, noise, fixed-pattern spread and linear range of ``chip``.

    1. Random signed weights on both halves and ``num_vectors`` random inputs of
       varied density, each sent ``repeats`` times: the spread over repeats is the
       trial-to-trial noise; per-neuron lines fitted to the repeat means within
       +-60 LSB give per-neuron gains and offsets.
    2. A ramp of ever more inputs of value 31 on weights of +63, then -63: the
       last output that stays within 4 sigma + 2 LSB of the neuron's line for that
       direction (fitted on the ramp's outputs within +-40 LSB) is its saturation point.
       A coarse ramp (few ``ramp_steps``) cannot locate it on every neuron:
       ``saturation_*_reliable`` marks the neurons where it could.

    The chip's configuration is overwritten (weights); nothing else is changed.
    """
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    for name, v, lo, hi in (("num_vectors", num_vectors, 4, 100_000), ("repeats", repeats, 2, 1000),
                            ("ramp_steps", ramp_steps, 3, K.DRIVERS_PER_HALF + 1)):
        check_int(name, v, lo, hi)
    check_num_sends(num_sends)
    check_wait(wait_between_events)
    seed = check_seed("seed", seed)
    acc = Accelerator(chip, noise_seed=noise_seed)
    rng = np.random.default_rng(seed)
    rows = K.LOGICAL_ROWS_PER_HALF
    w = rng.integers(-K.WEIGHT_MAX, K.WEIGHT_MAX + 1, (rows, NEURONS))
    density = rng.uniform(0.05, 0.6, (num_vectors, 1))
    x = rng.integers(1, K.INPUT_MAX + 1, (num_vectors, rows)) * (rng.random((num_vectors, rows)) < density)
    ideal = (x @ w) * num_sends
    ys = np.stack([acc.matmul(x, w, num_sends=num_sends, wait_between_events=wait_between_events)
                   for _ in range(repeats)]).astype(float)
    mean = ys.mean(axis=0)
    inside = np.abs(ys).max(axis=0) < 100
    sigma_trial = float(np.sqrt(np.mean(ys.var(axis=0, ddof=1)[inside]))) if inside.any() else float("nan")
    gains, offsets = _fit_lines(ideal.astype(float), mean, np.abs(mean) <= 60)

    # Ramp: n inputs of 31 on weights of +63 on every neuron, then of -63.
    sat_lo = np.full(NEURONS, np.nan)
    sat_hi = np.full(NEURONS, np.nan)
    counts = np.unique(np.linspace(0, rows, ramp_steps).astype(int))
    xr = np.zeros((len(counts), rows), np.int64)
    for i, n in enumerate(counts):
        xr[i, :n] = K.INPUT_MAX
    tol = 4 * sigma_trial + 2
    reliable = {}
    for sign in (1, -1):
        wr = np.full((rows, NEURONS), sign * K.WEIGHT_MAX)
        yr = np.stack([acc.matmul(xr, wr, num_sends=num_sends, wait_between_events=wait_between_events)
                       for _ in range(2)]).mean(axis=0)
        ir = (xr @ wr) * num_sends
        # Excitatory and inhibitory inputs differ per neuron (until calibrated), so
        # each direction gets its own line, fitted on the ramp's small outputs.
        g_dir, b_dir = _fit_lines(ir.astype(float), yr, np.abs(yr) <= 40)
        fitted = np.isfinite(g_dir)
        g_dir = np.where(np.isfinite(g_dir), g_dir, gains)
        b_dir = np.where(np.isfinite(b_dir), b_dir, offsets)
        pred = g_dir[None, :] * ir + b_dir[None, :]
        on_line = np.abs(yr - pred) <= tol
        # Saturation point: the last ramp step before the first departure from the line.
        first_off = np.where(on_line.all(axis=0), len(counts), np.argmin(on_line, axis=0))
        last_on = np.clip(first_off - 1, 0, len(counts) - 1)
        value = yr[last_on, np.arange(NEURONS)]
        # Where the ramp cannot locate the bend, say so instead of reporting a number
        # that looks like a measurement.
        reliable[sign] = fitted & (first_off >= 2) & (first_off < len(counts))
        if sign > 0:
            sat_hi = value
        else:
            sat_lo = value
    rep = acc.report()

    def robust_median(values, ok):
        return float(np.nanmedian(values[ok] if ok.any() else values))

    return MeasuredBehaviour(
        gain=float(np.nanmedian(gains)), sigma_trial=sigma_trial,
        sigma_fixed_pattern=float(np.nanstd(gains) / np.nanmean(gains)),
        offset_fixed_pattern_lsb=float(np.nanstd(offsets)),
        gain_per_neuron=gains, offset_per_neuron=offsets,
        saturation_low=sat_lo, saturation_high=sat_hi,
        linear_range=(robust_median(sat_lo, reliable[-1]), robust_median(sat_hi, reliable[1])),
        saturation_low_reliable=reliable[-1], saturation_high_reliable=reliable[1],
        num_vmms=int(rep["vmm_passes"]), chip_time_s=float(rep["total_s"]),
        num_sends=int(num_sends), wait_between_events=int(wait_between_events))


measure = measure_behaviour
"""Short name of :func:`measure_behaviour`."""
