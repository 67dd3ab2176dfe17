"""Search algorithms of the calibration (bss2sim.experiments.calibration.search) against
slow, obvious references on random monotonic functions.

The reference for every search is an exhaustive scan: measure every setting of
every element and take the setting whose value lies closest to the target.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bss2sim.experiments.calibration.search import (SearchResult, binary_search, linear_search,
                                            noise_tolerant_binary_search)


# --- random monotonic functions and the exhaustive reference ----------------------

class Table:
    """A random strictly monotonic function per element, tabulated over lo..hi.

    ``values[i, s - lo]`` is the value of element ``i`` at setting ``s``: an
    offset plus the running sum of random positive steps (each element has its
    own offset, mean slope and irregular local slopes). ``measure`` counts its
    calls and can add Gaussian noise."""

    def __init__(self, rng, shape, lo, hi, increasing, noise=0.0, curved=True):
        self.shape, self.lo, self.hi = tuple(shape), lo, hi
        n = int(np.prod(shape))
        size = hi - lo + 1
        self.slope = rng.uniform(0.2, 3.0, n)                     # mean step per setting
        self.offset = rng.uniform(-200.0, 200.0, n)
        if curved:
            steps = self.slope[:, None] * rng.uniform(0.5, 1.5, (n, size - 1))
        else:
            steps = np.repeat(self.slope[:, None], size - 1, axis=1)
        vals = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1) + self.offset[:, None]
        self.values = vals if increasing else -vals
        self.max_step = np.abs(np.diff(self.values, axis=1)).max(axis=1).reshape(self.shape)
        self.noise = noise
        self.rng = np.random.default_rng(rng.integers(1 << 32))
        self.calls = 0

    def exact(self, settings):
        s = np.asarray(settings)
        assert s.shape == self.shape
        assert s.dtype.kind == "i"
        assert np.all((s >= self.lo) & (s <= self.hi)), "search measured outside lo..hi"
        flat = s.reshape(-1) - self.lo
        return self.values[np.arange(flat.size), flat].reshape(self.shape)

    def measure(self, settings):
        self.calls += 1
        v = self.exact(settings)
        if self.noise:
            v = v + self.noise * self.rng.standard_normal(self.shape)
        return v

    def exhaustive(self, target):
        """Slow reference: the setting whose value lies closest to the target."""
        t = np.broadcast_to(np.asarray(target, float), self.shape).reshape(-1)
        best = np.empty(t.size, np.int64)
        for i in range(t.size):
            best[i] = self.lo + int(np.argmin(np.abs(self.values[i] - t[i])))
        return best.reshape(self.shape)

    def range_ends(self):
        """Smallest and largest value of every element over lo..hi."""
        v = self.values
        return (np.minimum(v[:, 0], v[:, -1]).reshape(self.shape),
                np.maximum(v[:, 0], v[:, -1]).reshape(self.shape))

    def outside_by(self, target):
        """How far the target lies outside the element's value range (0 inside)."""
        low, high = self.range_ends()
        t = np.broadcast_to(np.asarray(target, float), self.shape)
        return np.maximum(np.maximum(low - t, t - high), 0.0)


def _targets(rng, table, frac_outside=0.2, beyond=(5.0, 60.0)):
    """Targets mostly inside each element's range, some beyond either end."""
    low, high = table.range_ends()
    t = rng.uniform(low, high)
    out = rng.random(table.shape) < frac_outside
    up = rng.random(table.shape) < 0.5
    dist = rng.uniform(*beyond, table.shape)
    return np.where(out, np.where(up, high + dist, low - dist), t)


def _distance_at(table, settings, target):
    return np.abs(table.exact(settings) - target)


CASES = [
    # (seed, shape, lo, hi, increasing)
    (0, (2, 2), 0, 1023, True),
    (1, (2, 256), 0, 1023, True),
    (2, (2, 128), 0, 63, True),
    (3, (500,), 0, 63, False),
    (4, (3, 7, 11), 1, 1023, False),
    (5, (300,), -20, 37, True),
    (6, (300,), 5, 6, False),          # two settings
    (7, (300,), 0, 64, True),           # 65 settings: one more than a power of two
]


# --- binary search ----------------------------------------------------------------

@pytest.mark.parametrize("seed,shape,lo,hi,increasing", CASES)
def test_binary_search_matches_exhaustive_scan(seed, shape, lo, hi, increasing):
    rng = np.random.default_rng(seed)
    table = Table(rng, shape, lo, hi, increasing)
    target = _targets(rng, table)
    res = binary_search(table.measure, lo, hi, target, increasing=increasing, shape=shape)
    assert isinstance(res, SearchResult)
    assert res.settings.shape == shape and res.settings.dtype == np.int64
    assert np.all((res.settings >= lo) & (res.settings <= hi))
    best = table.exhaustive(target)
    got = _distance_at(table, res.settings, target)
    ref = _distance_at(table, best, target)
    # Within one setting's step of the exhaustive optimum...
    assert np.all(got <= ref + table.max_step + 1e-9)
    # ...and on a strictly monotonic function, with the extra neighbour steps,
    # exactly as close as the optimum.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    # The reported values are the function's values at the chosen settings.
    np.testing.assert_allclose(res.values, table.exact(res.settings), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed,shape,lo,hi,increasing", CASES)
def test_binary_search_measurement_count(seed, shape, lo, hi, increasing):
    rng = np.random.default_rng(100 + seed)
    table = Table(rng, shape, lo, hi, increasing)
    res = binary_search(table.measure, lo, hi, _targets(rng, table), increasing=increasing, shape=shape)
    # Halvings over hi - lo + 1 settings, the measurement of the result and two
    # extra steps at its neighbours, each of the whole array at once.
    expected = math.ceil(math.log2(hi - lo + 1)) + 1 + 2
    assert res.steps == expected
    assert table.calls == expected


def test_binary_search_measurement_count_known_values():
    # Independent of the formula: 1024 settings take 10 halvings, 64 take 6, 65 take 7, 2 take 1.
    for lo, hi, halvings in ((0, 1023, 10), (1, 1023, 10), (0, 63, 6), (0, 64, 7), (5, 6, 1)):
        table = Table(np.random.default_rng(hi), (4,), lo, hi, True)
        res = binary_search(table.measure, lo, hi, 0.0, increasing=True, shape=(4,))
        assert res.steps == table.calls == halvings + 3


@pytest.mark.parametrize("increasing", [True, False])
def test_binary_search_reached_flags(increasing):
    rng = np.random.default_rng(11 if increasing else 12)
    shape = (3, 200)
    lo, hi, tol = 0, 1023, 2.0
    table = Table(rng, shape, lo, hi, increasing)
    low, high = table.range_ends()
    # Inside, just outside (within the tolerance) and far outside, at both ends.
    kind = rng.integers(0, 5, shape)
    within = rng.uniform(0.0, 0.9 * tol, shape)
    far = rng.uniform(1.1 * tol, 50.0, shape)
    target = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                       [rng.uniform(low, high), high + within, low - within, high + far], low - far)
    res = binary_search(table.measure, lo, hi, target, increasing=increasing, shape=shape,
                        tolerance=tol)
    expected_unreached = table.outside_by(target) > tol
    assert expected_unreached.sum() > 50 and (~expected_unreached).sum() > 300
    np.testing.assert_array_equal(res.reached, ~expected_unreached)
    # An element whose target lies beyond its range sits at the end that comes closest.
    best = table.exhaustive(target)
    beyond = table.outside_by(target) > 0
    np.testing.assert_array_equal(res.settings[beyond], best[beyond])
    assert np.all(np.isin(res.settings[beyond], (lo, hi)))


def test_binary_search_reached_without_tolerance():
    rng = np.random.default_rng(13)
    table = Table(rng, (400,), 0, 255, True)
    target = _targets(rng, table, frac_outside=0.5, beyond=(0.01, 10.0))
    res = binary_search(table.measure, 0, 255, target, increasing=True, shape=(400,))
    np.testing.assert_array_equal(res.reached, table.outside_by(target) == 0)


def test_binary_search_scalar_target_broadcasts():
    rng = np.random.default_rng(14)
    table = Table(rng, (2, 64), 0, 1023, True)
    low, high = table.range_ends()
    target = float(np.median((low + high) / 2))
    res = binary_search(table.measure, 0, 1023, target, increasing=True, shape=(2, 64))
    got = _distance_at(table, res.settings, target)
    ref = _distance_at(table, table.exhaustive(target), target)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_binary_search_linear_function_within_one_step():
    # A plain line per element: the result is the rounded inverse.
    rng = np.random.default_rng(15)
    shape = (1000,)
    table = Table(rng, shape, 0, 1023, True, curved=False)
    s_true = rng.uniform(0.0, 1023.0, shape)
    target = table.offset + table.slope * s_true
    res = binary_search(table.measure, 0, 1023, target, increasing=True, shape=shape)
    assert np.all(np.abs(res.settings - s_true) <= 0.5 + 1e-9)
    assert np.all(res.reached)


# --- noise-tolerant binary search -------------------------------------------------

def test_noise_tolerant_equals_binary_search_without_noise():
    rng = np.random.default_rng(20)
    shape = (2, 256)
    t1 = Table(np.random.default_rng(21), shape, 0, 1023, True)
    t2 = Table(np.random.default_rng(21), shape, 0, 1023, True)
    target = _targets(rng, t1)
    plain = binary_search(t1.measure, 0, 1023, target, increasing=True, shape=shape, tolerance=1.0)
    avg = noise_tolerant_binary_search(t2.measure, 0, 1023, target, increasing=True, shape=shape,
                                       repeats=3, tolerance=1.0)
    np.testing.assert_array_equal(avg.settings, plain.settings)
    np.testing.assert_allclose(avg.values, plain.values, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(avg.reached, plain.reached)
    assert avg.steps == 3 * plain.steps == t2.calls
    assert plain.steps == t1.calls == 10 + 3


@pytest.mark.parametrize("increasing", [True, False])
def test_noise_tolerant_search_converges_where_plain_search_does_not(increasing):
    shape = (2000,)
    lo, hi, repeats = 0, 1023, 16
    rng = np.random.default_rng(30 if increasing else 31)
    table = Table(rng, shape, lo, hi, increasing, curved=False)
    target = _targets(rng, table, frac_outside=0.0)
    best = table.exhaustive(target)
    # Noise of twice each element's step per setting: a single read cannot tell
    # neighbouring settings apart, the mean of 16 reads can (a quarter of it).
    noise_steps = 2.0
    noise_rng = np.random.default_rng(32)
    calls = []

    def noisy(settings):
        calls.append(1)
        return table.exact(settings) + noise_steps * table.slope * noise_rng.standard_normal(shape)

    res = noise_tolerant_binary_search(noisy, lo, hi, target, increasing=increasing, shape=shape,
                                       repeats=repeats)
    assert res.steps == len(calls) == repeats * (math.ceil(math.log2(hi - lo + 1)) + 3)
    err = np.abs(res.settings - best)
    assert np.mean(err) <= 0.5
    assert np.quantile(err, 0.99) <= 2
    assert np.all(err <= 4)
    # Noise may only make a target look out of reach right at an end of the range.
    inner = (best >= lo + 6) & (best <= hi - 6)
    assert inner.sum() > 1900
    assert np.all(res.reached[inner])
    # The returned values are the averages at the chosen settings.
    resid = np.abs(res.values - table.exact(res.settings)) / table.slope
    assert np.quantile(resid, 0.99) < 4 * noise_steps / np.sqrt(repeats)
    # Averaging is needed: one read per decision does clearly worse.
    plain = binary_search(noisy, lo, hi, target, increasing=increasing, shape=shape)
    err_plain = np.abs(plain.settings - best)
    assert np.mean(err_plain) > 2.0 * np.mean(err)
    assert np.quantile(err_plain, 0.99) > np.quantile(err, 0.99)


# --- linear search ----------------------------------------------------------------

def _first_crossing_moves(table, start, target, increasing, step):
    """Reference walk, element by element: moves from ``start`` (one ``step`` at a
    time) until the value reaches or passes the target or the range ends; the
    visited setting closest to the target."""
    sign = 1.0 if increasing else -1.0
    starts = np.broadcast_to(start, table.shape).reshape(-1)
    t = np.broadcast_to(np.asarray(target, float), table.shape).reshape(-1)
    moves = np.zeros(t.size, np.int64)
    best = np.zeros(t.size, np.int64)
    for i in range(t.size):
        s = int(np.clip(starts[i], table.lo, table.hi))
        vals = table.values[i]
        v = vals[s - table.lo]
        up = sign * (v - t[i]) < 0
        visited = [s]
        while True:
            nxt = min(max(s + (step if up else -step), table.lo), table.hi)
            if nxt == s:
                break
            s = nxt
            visited.append(s)
            moves[i] += 1
            v = vals[s - table.lo]
            if (v >= t[i]) == (up == increasing) or v == t[i]:
                break
        d = [abs(vals[x - table.lo] - t[i]) for x in visited]
        best[i] = visited[int(np.argmin(d))]
    return moves.reshape(table.shape), best.reshape(table.shape)


@pytest.mark.parametrize("increasing", [True, False])
def test_linear_search_finds_crossing_from_start(increasing):
    rng = np.random.default_rng(40 if increasing else 41)
    shape = (2, 128)
    lo, hi = 0, 63
    table = Table(rng, shape, lo, hi, increasing)
    start = rng.integers(lo, hi + 1, shape)
    low, high = table.range_ends()
    target = rng.uniform(low, high)
    res = linear_search(table.measure, lo, hi, target, increasing=increasing, shape=shape, start=start)
    best = table.exhaustive(target)
    got = _distance_at(table, res.settings, target)
    ref = _distance_at(table, best, target)
    # Walking one setting at a time over a crossing visits both of its sides.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert np.all(res.reached)
    # One measurement at the start plus one per move of the element that walks farthest.
    moves, _ = _first_crossing_moves(table, start, target, increasing, 1)
    assert res.steps == table.calls == 1 + int(moves.max())
    assert np.abs(best - start).max() <= moves.max() <= np.abs(best - start).max() + 1


def test_linear_search_default_start_is_middle():
    rng = np.random.default_rng(42)
    shape = (300,)
    t1 = Table(np.random.default_rng(43), shape, 0, 1023, True)
    t2 = Table(np.random.default_rng(43), shape, 0, 1023, True)
    low, high = t1.range_ends()
    target = rng.uniform(low, high)
    first = []

    def record(settings):
        if not first:
            first.append(np.array(settings))
        return t1.measure(settings)

    a = linear_search(record, 0, 1023, target, increasing=True, shape=shape)
    b = linear_search(t2.measure, 0, 1023, target, increasing=True, shape=shape, start=511)
    assert np.all(first[0] == 511)
    np.testing.assert_array_equal(a.settings, b.settings)
    assert a.steps == b.steps
    np.testing.assert_array_equal(a.settings, t1.exhaustive(target))


@pytest.mark.parametrize("step", [2, 3, 5])
def test_linear_search_with_larger_steps(step):
    rng = np.random.default_rng(50 + step)
    shape = (400,)
    lo, hi = 0, 255
    table = Table(rng, shape, lo, hi, True)
    start = rng.integers(lo, hi + 1, shape)
    low, high = table.range_ends()
    target = rng.uniform(low, high)
    res = linear_search(table.measure, lo, hi, target, increasing=True, shape=shape,
                        start=start, step=step)
    ref = _distance_at(table, table.exhaustive(target), target)
    got = _distance_at(table, res.settings, target)
    # Only every step-th setting is visited: within `step` settings' steps of the optimum.
    assert np.all(got <= ref + step * table.max_step + 1e-9)
    moves, best_visited = _first_crossing_moves(table, start, target, True, step)
    np.testing.assert_array_equal(res.settings, best_visited)
    assert res.steps == table.calls == 1 + int(moves.max())


def test_linear_search_target_beyond_range():
    rng = np.random.default_rng(60)
    shape = (500,)
    lo, hi, tol = 0, 63, 1.5
    table = Table(rng, shape, lo, hi, False)
    low, high = table.range_ends()
    kind = rng.integers(0, 4, shape)
    target = np.select([kind == 0, kind == 1, kind == 2],
                       [rng.uniform(low, high), high + rng.uniform(0, 0.9 * tol, shape),
                        low - rng.uniform(1.1 * tol, 20, shape)], high + rng.uniform(1.1 * tol, 20, shape))
    start = rng.integers(lo, hi + 1, shape)
    res = linear_search(table.measure, lo, hi, target, increasing=False, shape=shape, start=start,
                        tolerance=tol)
    np.testing.assert_array_equal(res.reached, ~(table.outside_by(target) > tol))
    np.testing.assert_array_equal(res.settings, table.exhaustive(target))
    # The walk ends at the end of the range at the latest.
    assert res.steps <= (hi - lo) + 2


def test_linear_search_start_is_clipped_into_range():
    table = Table(np.random.default_rng(61), (50,), 10, 40, True)
    low, high = table.range_ends()
    target = (low + high) / 2
    res = linear_search(table.measure, 10, 40, target, increasing=True, shape=(50,), start=1000)
    np.testing.assert_array_equal(res.settings, table.exhaustive(target))


# --- bad input --------------------------------------------------------------------

def _dummy(settings):
    return np.asarray(settings, float)


SEARCHES = {
    "binary": lambda **kw: binary_search(_dummy, increasing=True, shape=(3,), **kw),
    "noise_tolerant": lambda **kw: noise_tolerant_binary_search(_dummy, increasing=True, shape=(3,), **kw),
    "linear": lambda **kw: linear_search(_dummy, increasing=True, shape=(3,), **kw),
}


@pytest.mark.parametrize("name", sorted(SEARCHES))
@pytest.mark.parametrize("lo,hi", [(5, 5), (10, 3)])
def test_lo_not_below_hi_is_refused(name, lo, hi):
    with pytest.raises(ValueError):
        SEARCHES[name](lo=lo, hi=hi, target=4.0)


@pytest.mark.parametrize("name", sorted(SEARCHES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, [1.0, np.nan, 2.0]])
def test_non_finite_target_is_refused(name, bad):
    with pytest.raises(ValueError):
        SEARCHES[name](lo=0, hi=63, target=bad)


@pytest.mark.parametrize("repeats", [0, -1])
def test_noise_tolerant_repeats_below_one_is_refused(repeats):
    with pytest.raises(ValueError):
        noise_tolerant_binary_search(_dummy, 0, 63, 4.0, increasing=True, shape=(3,), repeats=repeats)


@pytest.mark.parametrize("step", [0, -2])
def test_linear_search_step_below_one_is_refused(step):
    with pytest.raises(ValueError):
        linear_search(_dummy, 0, 63, 4.0, increasing=True, shape=(3,), step=step)


def test_searches_accept_valid_minimal_input():
    # The counterpart of the refusals: the same calls with valid arguments work.
    for name, fn in SEARCHES.items():
        res = fn(lo=0, hi=63, target=np.array([4.2, 0.0, 80.0]))
        assert res.settings.tolist() == [4, 0, 63], name
        assert res.reached.tolist() == [True, True, False], name
