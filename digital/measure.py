"""Measure the behavioural parameters of a chip the way one would on silicon.

Only VMMs and their int8 results are used, against an integer-exact reference
``x . W``; the chip's ground truth is never read. The measurement separates
trial-to-trial noise (spread of repeated reads of the same vectors) from
fixed-pattern spread (differences of gain and offset between neurons), and
the trial-to-trial noise into a part independent between columns and a part
shared by the 128 columns of a quadrant (:func:`noise_structure`).
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
QUADRANT = K.COLUMNS_PER_QUADRANT
NUM_QUADRANTS = NEURONS // QUADRANT


@dataclass(frozen=True)
class MeasuredBehaviour:
    """Behavioural parameters of one chip, measured through VMMs only."""

    gain: float
    """Median per-neuron gain, output LSB per unit of x*w per send."""
    sigma_trial: float
    """Trial-to-trial noise of one output (LSB), pooled over all neurons: the
    total of the independent and the shared part (``sigma_independent``,
    ``sigma_shared``)."""
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
    sigma_independent: float = None
    """Part of ``sigma_trial`` independent between columns (LSB);
    ``sigma_independent**2 + sigma_shared**2 == sigma_trial**2``. It includes
    the rounding of the int8 results (about 1/12 LSB^2). None: not measured
    (then :meth:`behavioural` takes all of ``sigma_trial`` as independent)."""
    sigma_shared: float = None
    """Part of ``sigma_trial`` shared by all columns of one quadrant of 128
    columns in one read (common-mode noise, LSB); None: not measured."""
    noise_correlation_same_quadrant: float = None
    """Mean Pearson correlation of the trial-to-trial noise of two different
    columns of one quadrant (dimensionless, -1..1), over all such pairs."""
    noise_correlation_other_quadrant: float = None
    """The same for two columns of different quadrants (any two of the four:
    the other quadrant of the half or one of the other half)."""

    def behavioural(self) -> BehaviouralParams:
        """The behavioural model with this gain and noise: ``sigma`` the
        independent part and ``sigma_shared`` the part a quadrant shares, so
        that one output's total noise is ``sigma_trial``."""
        if self.sigma_independent is None or self.sigma_shared is None:
            return BehaviouralParams(gain=float(self.gain), sigma=float(self.sigma_trial))
        return BehaviouralParams(gain=float(self.gain), sigma=float(self.sigma_independent),
                                 sigma_shared=float(self.sigma_shared))

    def summary(self) -> dict:
        """JSON-ready figures; every key names its unit (``_rel``: a fraction,
        ``noise_correlation_*``: a correlation coefficient, dimensionless)."""
        return {"gain_lsb_per_xw": self.gain, "noise_trial_lsb": self.sigma_trial,
                "noise_independent_lsb": _float_or_none(self.sigma_independent),
                "noise_shared_quadrant_lsb": _float_or_none(self.sigma_shared),
                "noise_correlation_same_quadrant": _float_or_none(self.noise_correlation_same_quadrant),
                "noise_correlation_other_quadrant": _float_or_none(self.noise_correlation_other_quadrant),
                "gain_spread_fixed_pattern_rel": self.sigma_fixed_pattern,
                "offset_spread_fixed_pattern_lsb": self.offset_fixed_pattern_lsb,
                "linear_range_lsb": list(self.linear_range),
                "saturation_unreliable_neurons": [int(np.sum(~self.saturation_low_reliable)),
                                                  int(np.sum(~self.saturation_high_reliable))],
                "num_vmms": self.num_vmms,
                "chip_time_s": self.chip_time_s, "num_sends": self.num_sends,
                "wait_between_events_cycles": self.wait_between_events}


def _float_or_none(v):
    """A float for JSON, None for None or NaN (JSON has no NaN)."""
    return None if v is None or not np.isfinite(v) else float(v)


def noise_structure(ys, inside=None) -> dict:
    """Split trial-to-trial noise into a part independent between columns and a
    part shared by the columns of a quadrant, from repeated reads.

    Parameters
    ----------
    ys : float array (repeats, vectors, 512)
        Reads of the same vectors, repeated, on all 512 neurons (top half
        first; quadrant ``c // 128``), in LSB; at least 2 repeats.
    inside : bool array (vectors, 512) or None
        Reads to use (e.g. not clamped); default all.

    Returns
    -------
    dict with ``sigma_trial`` (LSB: the pooled per-column noise, ``sqrt`` of the
    mean over used reads of the variance over repeats), ``sigma_shared`` (LSB),
    ``sigma_independent`` (LSB, ``sqrt(sigma_trial**2 - sigma_shared**2)``),
    ``correlation_same_quadrant`` and ``correlation_other_quadrant``
    (dimensionless; NaN where no pair has noise).

    Estimator: with ``s`` the shared and ``i`` the independent noise, the mean
    over a quadrant's ``n`` used columns of one read's residual (read minus
    the mean of its repeats) has variance ``s^2 + i^2 / n`` over repeats and
    one column ``s^2 + i^2``; per vector and quadrant ``s^2 = (n V_mean -
    V_column) / (n - 1)``, averaged over vectors and quadrants and clipped to
    ``0..sigma_trial^2``. Correlations: Pearson over the repeats' residuals of
    each pair of columns (the vectors both use), averaged over pairs.
    """
    ys = np.asarray(ys, np.float64)
    if ys.ndim != 3 or ys.shape[0] < 2 or ys.shape[2] != NEURONS:
        raise ValueError(f"ys has shape {ys.shape}; expected (repeats >= 2, vectors, {NEURONS})")
    R, V, _ = ys.shape
    inside = np.ones((V, NEURONS), bool) if inside is None else np.asarray(inside, bool)
    if inside.shape != (V, NEURONS):
        raise ValueError(f"inside has shape {inside.shape}; expected {(V, NEURONS)}")
    res = (ys - ys.mean(axis=0)) * inside
    var_col = (res ** 2).sum(axis=0) / (R - 1)                   # (V, 512)
    nan = float("nan")
    if not inside.any():
        return {"sigma_trial": nan, "sigma_shared": nan, "sigma_independent": nan,
                "correlation_same_quadrant": nan, "correlation_other_quadrant": nan}
    total = float(np.mean(var_col[inside]))
    m = inside.reshape(V, NUM_QUADRANTS, QUADRANT)
    n = m.sum(axis=2)                                             # (V, 4) used columns
    ok = n >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        qmean = res.reshape(R, V, NUM_QUADRANTS, QUADRANT).sum(axis=3) / n
        var_mean = (qmean ** 2).sum(axis=0) / (R - 1)             # s^2 + i^2 / n
        var_one = var_col.reshape(V, NUM_QUADRANTS, QUADRANT).sum(axis=2) / n   # s^2 + i^2
        shared = (n * var_mean - var_one) / (n - 1)
    s2 = float(np.clip(np.mean(shared[ok]), 0.0, total)) if ok.any() else 0.0
    # Pairwise correlations over the vectors both columns use.
    flat = res.reshape(R * V, NEURONS)
    cross = flat.T @ flat                                         # sum of e_i e_j
    sq = (res ** 2).sum(axis=0)                                   # (V, 512)
    mf = inside.astype(np.float64)
    own = sq.T @ mf                                               # [i, j]: sum of e_i^2 where j is used
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cross / np.sqrt(own * own.T)
    quadrant = np.arange(NEURONS) // QUADRANT
    same = quadrant[:, None] == quadrant[None, :]
    upper = np.triu(np.ones((NEURONS, NEURONS), bool), 1)

    def mean_of(mask):
        v = corr[mask & upper]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else nan

    return {"sigma_trial": float(np.sqrt(total)), "sigma_shared": float(np.sqrt(s2)),
            "sigma_independent": float(np.sqrt(total - s2)),
            "correlation_same_quadrant": mean_of(same), "correlation_other_quadrant": mean_of(~same)}


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


def measure_behaviour(chip: Chip | BehaviouralParams, num_vectors: int = 96, repeats: int = 6, num_sends: int = 1,
                      wait_between_events: int = 5, noise_seed: int = 1, seed: int = 0,
                      ramp_steps: int = 33) -> MeasuredBehaviour:
    """Estimate gain, noise, fixed-pattern spread and linear range of ``chip``.

    1. Random signed weights on both halves and ``num_vectors`` random inputs of
       varied density, each sent ``repeats`` times: the spread over repeats is the
       trial-to-trial noise, split into the part independent between columns and
       the part shared by a quadrant's columns (:func:`noise_structure`, on the
       reads within +-100 LSB); per-neuron lines fitted to the repeat means within
       +-60 LSB give per-neuron gains and offsets.
    2. A ramp of ever more inputs of value 31 on weights of +63, then -63: the
       last output that stays within 4 sigma + 2 LSB of the neuron's line for that
       direction (fitted on the ramp's outputs within +-40 LSB) is its saturation point.
       A coarse ramp (few ``ramp_steps``) cannot locate it on every neuron:
       ``saturation_*_reliable`` marks the neurons where it could.

    ``chip``: a :class:`~bss2sim.circuits.Chip` (cycle level; its configuration
    is overwritten (weights), nothing else is changed) or
    :class:`BehaviouralParams` (the behavioural model with these parameters and
    ``noise_seed``: the measurement of a model whose parameters are known).
    """
    if not isinstance(chip, BehaviouralParams):
        check_instance("chip", chip, Chip, "bss2sim.circuits.Chip or bss2sim.digital.BehaviouralParams")
    for name, v, lo, hi in (("num_vectors", num_vectors, 4, 100_000), ("repeats", repeats, 2, 1000),
                            ("ramp_steps", ramp_steps, 3, K.DRIVERS_PER_HALF + 1)):
        check_int(name, v, lo, hi)
    check_num_sends(num_sends)
    check_wait(wait_between_events)
    seed = check_seed("seed", seed)
    if isinstance(chip, BehaviouralParams):
        acc = Accelerator(behavioural=chip, noise_seed=noise_seed)
    else:
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
    structure = noise_structure(ys, inside)
    # The independent part from sigma_trial itself, so that the parts add up to it exactly.
    sigma_independent = float(np.sqrt(max(sigma_trial ** 2 - structure["sigma_shared"] ** 2, 0.0))) \
        if inside.any() else float("nan")
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
        num_sends=int(num_sends), wait_between_events=int(wait_between_events),
        sigma_independent=sigma_independent, sigma_shared=structure["sigma_shared"],
        noise_correlation_same_quadrant=structure["correlation_same_quadrant"],
        noise_correlation_other_quadrant=structure["correlation_other_quadrant"])


measure = measure_behaviour
"""Short name of :func:`measure_behaviour`."""
