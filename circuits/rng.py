"""Counter-based random streams for trial-to-trial noise.

Noise must be bit-identical whatever the numba thread count and however a
batch is split. Every vector therefore owns a stream keyed by
``(seed, global vector index)``: the kernels never share a generator between
vectors, so the order in which threads run them cannot matter. The stream is
SplitMix64 (Steele, Lea & Flood 2014), which passes BigCrush as a generator and
is a good 64-bit mixer for deriving keys; normals come from the ziggurat of
Marsaglia & Tsang (2000) (the fast path, the behavioural model), Marsaglia's
polar method (the quadrants' common noise) or the Box-Muller transform (the
trace path's per-step membrane noise).
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
def next_normal_box_muller(state):
    """Standard normal from two uniforms (Box-Muller, cosine branch): the trace
    path's per-step membrane noise, which its reference draws in bulk."""
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


@njit(cache=True, inline="always")
def next_normal_pair(state):
    """Two independent standard normals (Marsaglia's polar method): pairs of
    uniforms in (-1, 1)^2 are drawn from ``state`` until one falls inside the
    unit circle (78.5 % of the time). No sine or cosine: about half the cost
    of Box-Muller per normal."""
    while True:
        a = 2.0 * next_uniform(state) - 1.0
        b = 2.0 * next_uniform(state) - 1.0
        r = a * a + b * b
        if 0.0 < r < 1.0:
            f = np.sqrt(-2.0 * np.log(r) / r)
            return a * f, b * f


# --- Gaussian draws: the ziggurat -------------------------------------------------
# Marsaglia & Tsang (2000), "The ziggurat method for generating random
# variables", J. Stat. Softw. 5(8): 128 layers of equal area, tail beyond r.
# Published constants of the 128-layer normal ziggurat: the start of the tail
# r and the area of one layer v.
ZIGGURAT_R = 3.442619855899
ZIGGURAT_V = 9.91256303526217e-3
_INV_R = 1.0 / ZIGGURAT_R


def _ziggurat_tables():
    """Layer tables of the 128-layer ziggurat on 32-bit signed draws: accept
    thresholds ``kn`` (a draw |h| < kn[i] is inside layer i's rectangle),
    scales ``wn`` (x = h wn[i]) and densities ``fn`` (exp(-x^2 / 2) at the
    layer edges), as in the paper's set-up routine."""
    m1 = 2.0 ** 31
    dn = tn = ZIGGURAT_R
    q = ZIGGURAT_V / np.exp(-0.5 * dn * dn)
    kn = np.zeros(128, np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    kn[0] = np.int64((dn / q) * m1)
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = np.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = np.sqrt(-2.0 * np.log(ZIGGURAT_V / dn + np.exp(-0.5 * dn * dn)))
        kn[i + 1] = np.int64((dn / tn) * m1)
        tn = dn
        fn[i] = np.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()
_LOW7 = np.uint64(127)
_S32 = np.uint64(32)


@njit(cache=True, inline="always")
def next_normal(state):
    """Standard normal by the ziggurat; ``state`` (length-1 uint64) advanced in
    place by one draw (98.8 % of the time) or a few more.

    One 64-bit draw gives the layer (its low 7 bits) and a signed 32-bit
    magnitude (its high 32 bits): separate bits, so the layer and the value
    are independent (the original 32-bit version used the same bits for both).
    Rejections draw uniforms (:func:`next_uniform`) from the same stream."""
    while True:
        state[0] = state[0] + _GOLDEN
        z = mix64(state[0])
        layer = np.int64(z & _LOW7)
        h = np.int64(z >> _S32)
        if h >= 2147483648:
            h -= 4294967296
        if abs(h) < _ZIG_K[layer]:
            return h * _ZIG_W[layer]
        if layer == 0:
            # The tail beyond r (Marsaglia 1964): exponential proposals.
            while True:
                x = -np.log(next_uniform(state)) * _INV_R
                y = -np.log(next_uniform(state))
                if y + y >= x * x:
                    break
            return ZIGGURAT_R + x if h > 0 else -ZIGGURAT_R - x
        x = h * _ZIG_W[layer]
        if _ZIG_F[layer] + next_uniform(state) * (_ZIG_F[layer - 1] - _ZIG_F[layer]) < np.exp(-0.5 * x * x):
            return x


@njit(cache=True, inline="always")
def add_normals(state, out, scale):
    """``out[j] += scale[j] * n_j`` for the next ``len(out)`` standard normals of
    ``state`` (advanced in place): the same values as ``next_normal`` called
    once per entry, with the stream's position kept in a register on the
    ziggurat's fast path (about a third faster per draw than calling it)."""
    s = state[0]
    for j in range(out.shape[0]):
        s_next = s + _GOLDEN
        z = mix64(s_next)
        layer = np.int64(z & _LOW7)
        h = np.int64(np.int32(np.uint32(z >> _S32)))     # the high 32 bits, signed
        if abs(h) < _ZIG_K[layer]:
            out[j] += scale[j] * (h * _ZIG_W[layer])
            s = s_next
        else:
            # Rejected by the rectangle test: the full draw from the same position.
            state[0] = s
            out[j] += scale[j] * next_normal(state)
            s = state[0]
    state[0] = s


@njit(cache=True, parallel=True)
def _add_normal_rows(seed, first_index, out, scale):
    rows, cols = out.shape
    for r in prange(rows):
        # Each row is its own stream: the values do not depend on the thread
        # that runs it, nor on how the rows are split across calls.
        state = np.zeros(1, np.uint64)
        state[0] = stream_key(seed, first_index + np.uint64(r))
        for j in range(cols):
            out[r, j] += scale * next_normal(state)


def keyed_normals(noise: "TrialNoise", rows: int, cols: int) -> np.ndarray:
    """Standard normals (rows, cols); row r comes from stream ``noise.next_index + r``,
    so the values do not depend on threads or on how rows are split across calls.
    Column c is the c-th normal of the row's stream (:func:`next_normal`), the
    same whatever ``cols``. (Drawn as ``0 + 1 * z``: exactly z, the ziggurat
    never returns -0.)"""
    return add_keyed_normals(noise, np.zeros((rows, cols)), 1.0)


def add_keyed_normals(noise: "TrialNoise", out: np.ndarray, scale: float) -> np.ndarray:
    """``out += scale * keyed_normals(noise, *out.shape)`` in place, without the
    temporary array (same values bit for bit). ``out``: float64, C-contiguous."""
    if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.ndim == 2
            and out.flags.c_contiguous):
        raise ValueError("out must be a C-contiguous float64 array of two dimensions")
    seed, first = noise.take(out.shape[0])
    if out.size:
        _add_normal_rows(seed, first, out, float(scale))
    return out
