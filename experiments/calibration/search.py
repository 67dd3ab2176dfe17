"""Search algorithms of the calibration, independent of any chip.

Each search drives many settings at once (one per capmem cell, driver or
channel): it is given a ``measure(settings) -> values`` function and a target,
and returns the settings. It never knows what it calibrates, in the manner of
the chip group's calibration library, where a calibration is a measurement
kept apart from the algorithm that drives it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a search over integer settings."""

    settings: np.ndarray
    """int64: the chosen setting of each element."""
    values: np.ndarray
    """float: the measured value at the chosen setting."""
    reached: np.ndarray
    """bool: the target lies within the setting's range (otherwise the setting
    sits at the end of its range that comes closest)."""
    steps: int
    """Measurements of the whole array made by the search."""


def _as_target(target, shape):
    t = np.broadcast_to(np.asarray(target, float), shape).astype(float)
    if not np.all(np.isfinite(t)):
        raise ValueError("target contains NaN or infinity")
    return t


def binary_search(measure, lo: int, hi: int, target, *, increasing: bool, shape,
                  tolerance: float = 0.0) -> SearchResult:
    """Binary search with extra steps, as calibration software does on silicon:
    ``ceil(log2(hi - lo + 1))`` halvings, then two extra steps that test the
    neighbours of the result and keep whichever setting lands closest [SW].

    Parameters
    ----------
    measure : callable
        ``measure(settings int64 array of ``shape``) -> float array of ``shape````.
    lo, hi : int
        Allowed settings (inclusive).
    target : float or array of ``shape``
    increasing : bool
        Whether the measured value grows with the setting.
    tolerance : float
        A result within this distance of the target counts as reached even when
        the target lies beyond the end of the range.
    """
    if not lo < hi:
        raise ValueError(f"lo={lo} must be below hi={hi}")
    target = _as_target(target, shape)
    low = np.full(shape, lo, np.int64)
    high = np.full(shape, hi, np.int64)
    sign = 1.0 if increasing else -1.0
    steps = 0
    for _ in range(math.ceil(math.log2(hi - lo + 1))):
        mid = (low + high) // 2
        v = measure(mid)
        steps += 1
        below = sign * (v - target) < 0
        low = np.where(below, mid + 1, low)
        high = np.where(below, high, mid)
    best = np.clip(low, lo, hi)
    best_v = measure(best)
    steps += 1
    # Whether the target lies within the range is decided here, where the halvings
    # ended: at an end of the range with the value there still short of the target,
    # it does not. The extra steps below must not change that verdict: with noise,
    # a neighbour one step inside can read closer to an unreachable target.
    reached = _reached(best, best_v, target, lo, hi, sign, tolerance)
    end, end_v = best, best_v
    # Extra steps: the neighbour on the other side of the target may be closer.
    for delta in (-1, 1):
        cand = np.clip(best + delta, lo, hi)
        v = measure(cand)
        steps += 1
        better = np.abs(v - target) < np.abs(best_v - target)
        best = np.where(better, cand, best)
        best_v = np.where(better, v, best_v)
    # A target outside the range leaves the setting at the end that comes closest.
    best = np.where(reached, best, end)
    best_v = np.where(reached, best_v, end_v)
    return SearchResult(best, best_v, reached, steps)


def noise_tolerant_binary_search(measure, lo: int, hi: int, target, *, increasing: bool, shape,
                                 repeats: int = 4, tolerance: float = 0.0) -> SearchResult:
    """Binary search whose every decision averages ``repeats`` measurements, for
    measurements whose trial-to-trial noise is comparable to one setting step."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")

    def averaged(settings):
        return np.mean([measure(settings) for _ in range(repeats)], axis=0)

    res = binary_search(averaged, lo, hi, target, increasing=increasing, shape=shape,
                        tolerance=tolerance)
    return SearchResult(res.settings, res.values, res.reached, res.steps * repeats)


def windowed_search(measure, lo: int, hi: int, target, *, start, half_width: int, increasing: bool,
                    shape, tolerance: float = 0.0, repeats: int | None = None) -> SearchResult:
    """Search a narrow window around known settings first, the whole range only
    where that window does not hold the target: for recalibrating a chip from
    its previous calibration.

    Each element searches the settings ``start - half_width .. start + half_width``
    (clipped to ``lo..hi``) with :func:`binary_search` (or, with ``repeats``,
    :func:`noise_tolerant_binary_search`); an element whose window ends short of
    its target is searched again over ``lo..hi`` while the others keep their
    result (their settings are written unchanged during that search).

    Parameters
    ----------
    measure, lo, hi, target, increasing, shape, tolerance
        As for :func:`binary_search`.
    start : int array of ``shape``
        Centre of each element's window (clipped to ``lo..hi``).
    half_width : int
        Settings each side of ``start``, >= 1.
    repeats : int or None
        Measurements averaged per decision (None: one, plain binary search).

    ``steps`` counts the measurements of the whole array of both searches.
    """
    if not lo < hi:
        raise ValueError(f"lo={lo} must be below hi={hi}")
    if isinstance(half_width, bool) or not isinstance(half_width, (int, np.integer)) or half_width < 1:
        raise ValueError(f"half_width={half_width!r} must be an integer >= 1 (settings each side)")
    target = _as_target(target, shape)
    centre = np.clip(np.broadcast_to(np.asarray(start, np.int64), shape), lo, hi).astype(np.int64)

    def search(fn, a, b):
        if repeats is None:
            return binary_search(fn, a, b, target, increasing=increasing, shape=shape, tolerance=tolerance)
        return noise_tolerant_binary_search(fn, a, b, target, increasing=increasing, shape=shape,
                                            repeats=repeats, tolerance=tolerance)

    def at_shift(shift):
        return np.clip(centre + shift, lo, hi)

    win = search(lambda shift: measure(at_shift(shift)), -int(half_width), int(half_width))
    settings, values = at_shift(win.settings), win.values
    # The window's ends count as ends of the range: short there means "widen"; at
    # the range's own end the full search below says so again.
    need = ~win.reached
    steps = win.steps
    if not need.any():
        return SearchResult(settings, values, np.ones(shape, bool), steps)
    full = search(lambda s: measure(np.where(need, s, settings)), lo, hi)
    steps += full.steps
    return SearchResult(np.where(need, full.settings, settings), np.where(need, full.values, values),
                        np.where(need, full.reached, True), steps)


def linear_search(measure, lo: int, hi: int, target, *, increasing: bool, shape,
                  step: int = 1, start=None, tolerance: float = 0.0) -> SearchResult:
    """Walk the settings from ``start`` (default: the middle) one ``step`` at a
    time towards the target until the measured value crosses it; keeps the
    setting closest to the target. Suited to small corrections near a known
    good setting."""
    if step < 1:
        raise ValueError(f"step={step} must be >= 1")
    if not lo < hi:
        raise ValueError(f"lo={lo} must be below hi={hi}")
    target = _as_target(target, shape)
    sign = 1.0 if increasing else -1.0
    cur = np.full(shape, (lo + hi) // 2 if start is None else 0, np.int64)
    if start is not None:
        cur = np.clip(np.broadcast_to(np.asarray(start, np.int64), shape), lo, hi).astype(np.int64)
    v = measure(cur)
    steps = 1
    best, best_v = cur.copy(), v.copy()
    direction = np.where(sign * (v - target) < 0, step, -step)
    active = np.ones(shape, bool)
    for _ in range((hi - lo) // step + 1):
        nxt = np.clip(cur + direction, lo, hi)
        active &= nxt != cur
        if not active.any():
            break
        cur = np.where(active, nxt, cur)
        v = measure(cur)
        steps += 1
        better = active & (np.abs(v - target) < np.abs(best_v - target))
        best = np.where(better, cur, best)
        best_v = np.where(better, v, best_v)
        crossed = np.sign(v - target) * np.sign(direction) * sign >= 0
        active &= ~crossed
        if not active.any():
            break
    reached = _reached(best, best_v, target, lo, hi, sign, tolerance)
    return SearchResult(best, best_v, reached, steps)


def _reached(best, value, target, lo, hi, sign, tolerance):
    """A setting at an end of its range whose value still falls short of the
    target (by more than the tolerance) has not reached it."""
    short = sign * (value - target)
    at_top = (best == hi) & (short < -tolerance)
    at_bottom = (best == lo) & (short > tolerance)
    return ~(at_top | at_bottom)
