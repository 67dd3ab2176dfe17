"""The Yin-Yang data set of Kriener, Göltz and Petrovici (2021,
arXiv:2102.08211 [KGP21]): a small, hard-to-separate task in two dimensions.

Points ``(x, y)`` are drawn uniformly in the square ``[0, 2R]^2`` (``R = r_big
= 0.5``) and kept only inside the circle of radius ``R`` around ``(R, R)``.
With ``r_small = 0.1``, ``d_right`` the distance to ``(1.5 R, R)`` and
``d_left`` the distance to ``(0.5 R, R)``, a point's class is

* 2 ("dot") if ``d_right < r_small`` or ``d_left < r_small``;
* else 1 ("yin") if ``d_right <= r_small`` or ``r_small < d_left <= 0.5 R``
  or (``y > R`` and ``d_right > 0.5 R``);
* else 0 ("yang").

The classes are balanced by rejection sampling, as the authors do: for each
sample the goal class is drawn uniformly from 0..2 first, then points are
drawn until one of that class comes. Each sample's features are ``(x, y,
1 - x, 1 - y)``, all in 0..1: the mirrored pair lets a network without
biases (the chip has none) place its boundaries anywhere.

The random numbers come from our own generator, ``numpy.random.default_rng(seed)``
(PCG64; for each sample one ``integers(3)`` for the goal class, then pairs
``random(2)`` scaled by ``2 R`` for the points), not from the authors'
``numpy.random.RandomState``: the samples therefore differ from the authors'
files, the distribution is the same. The standard splits use the authors'
sizes and seeds (their example: train 5000 samples, seed 42; validation
1000, seed 41; test 1000, seed 40).

The authors' code lists the class names as ``['yin', 'yang', 'dot']``
while the criterion it calls ``is_yin`` gives label 1; the labels here are
theirs, named by that criterion.

Published software accuracies [KGP21]: an ANN 4-30-3 reaches 97.6 +- 1.5 %,
a shallow network (no hidden layer) 63.8 +- 1.0 %.
"""
from __future__ import annotations

import math

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_int, check_seed

__all__ = ["R_BIG", "R_SMALL", "CLASS_NAMES", "SPLITS", "NUM_CLASSES", "NUM_FEATURES", "MAX_SIZE",
           "which_class", "yin_yang", "quantise_features", "load_split", "standard_splits"]

R_BIG = 0.5
"""Radius of the whole yin-yang circle (``r_big`` [KGP21]); the square is [0, 2 R_BIG]^2."""
R_SMALL = 0.1
"""Radius of the two dots (``r_small`` [KGP21])."""
CLASS_NAMES = ("yang", "yin", "dot")
"""Name of each label 0, 1, 2 (by the criteria of the module docstring)."""
NUM_CLASSES = 3
NUM_FEATURES = 4
"""Features per sample: x, y, 1 - x, 1 - y."""
SPLITS = {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
"""(size, seed) of each standard split, as in the authors' example [KGP21]."""
MAX_SIZE = 10_000_000
"""Largest ``size`` of :func:`yin_yang` (*assumed*: a bound against a mistyped
number; 10 million samples take about a minute)."""


def which_class(x, y, r_small: float = R_SMALL, r_big: float = R_BIG) -> np.ndarray:
    """Class (0 yang, 1 yin, 2 dot) of points ``(x, y)`` (arrays of one shape,
    or scalars), by the criteria of the module docstring; int64."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    d_right = np.sqrt((x - 1.5 * r_big) ** 2 + (y - r_big) ** 2)
    d_left = np.sqrt((x - 0.5 * r_big) ** 2 + (y - r_big) ** 2)
    yin = (d_right <= r_small) | ((d_left > r_small) & (d_left <= 0.5 * r_big)) \
        | ((y > r_big) & (d_right > 0.5 * r_big))
    dot = (d_right < r_small) | (d_left < r_small)
    return np.where(dot, 2, yin.astype(np.int64)).astype(np.int64)


def _class_of(x: float, y: float) -> int:
    """:func:`which_class` of one point, in plain floats (the generator's inner loop)."""
    d_right = math.sqrt((x - 1.5 * R_BIG) ** 2 + (y - R_BIG) ** 2)
    d_left = math.sqrt((x - 0.5 * R_BIG) ** 2 + (y - R_BIG) ** 2)
    if d_right < R_SMALL or d_left < R_SMALL:
        return 2
    return int(d_right <= R_SMALL or R_SMALL < d_left <= 0.5 * R_BIG
               or (y > R_BIG and d_right > 0.5 * R_BIG))


def yin_yang(size: int, seed: int):
    """``size`` samples of the Yin-Yang data set drawn with ``default_rng(seed)``.

    Parameters
    ----------
    size : samples, 1..:data:`MAX_SIZE`
    seed : 0..2**64-1

    Returns
    -------
    features : float64 (size, 4), ``(x, y, 1 - x, 1 - y)``, each in 0..1
    labels : int64 (size,), 0 (yang), 1 (yin), 2 (dot)
    """
    size = check_int("size", size, 1, MAX_SIZE)
    seed = check_seed("seed", seed)
    rng = np.random.default_rng(seed)
    xs = np.empty(size)
    ys = np.empty(size)
    labels = np.empty(size, np.int64)
    span = 2.0 * R_BIG
    for i in range(size):
        goal = int(rng.integers(3))
        while True:
            x, y = rng.random(2) * span
            x, y = float(x), float(y)
            if math.sqrt((x - R_BIG) ** 2 + (y - R_BIG) ** 2) > R_BIG:
                continue
            if _class_of(x, y) == goal:
                break
        xs[i], ys[i], labels[i] = x, y, goal
    features = np.stack([xs, ys, 1.0 - xs, 1.0 - ys], axis=1)
    return features, labels


def quantise_features(features) -> np.ndarray:
    """Features in 0..1 to chip inputs 0..31: ``round(f * 31)`` (half to even), int64."""
    a = np.asarray(features)
    if a.dtype.kind != "f":
        raise ValueError(f"features have dtype {a.dtype}; expected floats in 0..1")
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
        raise ValueError("features must be finite floats in 0..1")
    return np.rint(a.astype(np.float64) * K.INPUT_MAX).astype(np.int64)


def load_split(name: str):
    """``(features, labels)`` of a standard split: "train", "validation" or "test"
    (:data:`SPLITS`)."""
    if name not in SPLITS:
        raise ValueError(f"split={name!r} is not allowed: use one of {', '.join(SPLITS)}")
    size, seed = SPLITS[name]
    return yin_yang(size, seed)


def standard_splits() -> dict:
    """All three standard splits: ``{"train": (x, y), "validation": ..., "test": ...}``."""
    return {name: load_split(name) for name in SPLITS}
