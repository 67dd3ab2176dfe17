"""Counter-based random streams for trial-to-trial noise.

Noise must be bit-identical whatever the numba thread count and however a
batch is split. Every vector therefore owns a stream keyed by
``(seed, global vector index)``: the kernels never share a generator between
vectors, so the order in which threads run them cannot matter. The stream is
SplitMix64 (Steele, Lea & Flood 2014), which passes BigCrush as a generator and
is a good 64-bit mixer for deriving keys; normals come from the Box-Muller
transform.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .checks import check_int, check_seed

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_PI = 2.0 * np.pi
_INV_2_53 = 1.0 / 9007199254740992.0
_SHARED_TAG = 0x736C6F77
"""Tag ("slow" in ASCII) deriving the default shared seed of a TrialNoise."""


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64 finaliser: a bijective 64-bit hash."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def stream_key(seed, index):
    """Starting state of the stream of vector ``index`` under ``seed`` (both uint64)."""
    return mix64(mix64(seed + _GOLDEN) ^ (index * _GOLDEN + _MIX1))


@njit(cache=True, inline="always")
def next_uniform(state):
    """Uniform in (0, 1); ``state`` is a length-1 uint64 array advanced in place."""
    state[0] = state[0] + _GOLDEN
    bits = mix64(state[0]) >> _S11
    return (np.float64(bits) + 0.5) * _INV_2_53


@njit(cache=True, inline="always")
def next_normal(state):
    """Standard normal from two uniforms (Box-Muller, cosine branch)."""
    u1 = next_uniform(state)
    u2 = next_uniform(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


def derive_seed(seed: int, *tags: int) -> int:
    """A new 64-bit seed from ``seed`` and integer tags (SplitMix64 mixing), for
    independent noise of different purposes under one user seed."""
    mask = (1 << 64) - 1
    z = int(seed) & mask
    for t in tags:
        z = (z + 0x9E3779B97F4A7C15 + (int(t) & mask)) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
    return z


class TrialNoise:
    """A seeded source of trial-to-trial noise for analog runs.

    Each vector integrated with this source consumes one stream index; the
    counter advances by the batch size on every call. Integrating a batch in one
    call or in consecutive slices therefore gives the same noise bit for bit.

    Parameters
    ----------
    seed : int
        Any integer in 0 .. 2**64 - 1.
    start_index : int
        Stream index of the next vector (default 0).
    shared_seed : int or None
        Seed of the slow noise that two integrations share when they give the
        same ``shared_seed`` and vector indices (the baseline read and the read
        of one VMM, see ``EffectParams.low_frequency_shared_fraction``). None
        (the default) derives it from ``seed``, so independent sources share
        nothing.
    """

    def __init__(self, seed: int, start_index: int = 0, shared_seed: int | None = None):
        self.seed = check_seed("seed", seed)
        self.next_index = check_int("start_index", start_index, 0, 2**63 - 1)
        self.shared_seed = derive_seed(self.seed, _SHARED_TAG) if shared_seed is None \
            else check_seed("shared_seed", shared_seed)

    def take(self, count: int) -> tuple[np.uint64, np.uint64]:
        """Reserve ``count`` stream indices; returns (seed, first index) as uint64."""
        count = check_int("count", count, 0, 2**63 - 1 - self.next_index)
        first = self.next_index
        self.next_index += int(count)
        return np.uint64(self.seed), np.uint64(first)

    def __repr__(self):
        return f"TrialNoise(seed={self.seed}, next_index={self.next_index}, shared_seed={self.shared_seed})"


@njit(cache=True, parallel=True)
def _normal_rows(seed, first_index, out):
    rows, cols = out.shape
    for r in prange(rows):
        key = stream_key(seed, first_index + np.uint64(r))
        # Draw n of a stream is mix64(key + (n + 1) * golden): counter-based, so the
        # pairs are independent and need no state. Box-Muller uses both branches.
        for j in range((cols + 1) // 2):
            n1 = np.uint64(2 * j + 1)
            u1 = (np.float64(mix64(key + n1 * _GOLDEN) >> _S11) + 0.5) * _INV_2_53
            u2 = (np.float64(mix64(key + (n1 + np.uint64(1)) * _GOLDEN) >> _S11) + 0.5) * _INV_2_53
            rad = np.sqrt(-2.0 * np.log(u1))
            out[r, 2 * j] = rad * np.cos(_TWO_PI * u2)
            if 2 * j + 1 < cols:
                out[r, 2 * j + 1] = rad * np.sin(_TWO_PI * u2)


def keyed_normals(noise: "TrialNoise", rows: int, cols: int) -> np.ndarray:
    """Standard normals (rows, cols); row r comes from stream ``noise.next_index + r``,
    so the values do not depend on threads or on how rows are split across calls.
    Columns 2j and 2j + 1 are the cosine and sine branches of Box-Muller on
    draws 2j and 2j + 1 of the row's stream."""
    seed, first = noise.take(rows)
    out = np.empty((rows, cols))
    if rows and cols:
        _normal_rows(seed, first, out)
    return out
