"""Property-based tests of the public API (hypothesis).

The contract checked for every call: it either returns a result of the
documented dtype, shape and range, or raises ``ValueError`` / ``TypeError``
whose message names the offending parameter. No other exception type may
escape. On top of that:

* a documented-valid call must succeed (at both fidelities of the accelerator),
* a call outside the documented ranges (wrong type, NaN, infinity, beyond a
  bound, wrong shape, ragged list, ...) must be refused,
* a refused call leaves no trace: configurations, ledgers, PPU cycle counters
  and noise counters are as before, so the next valid call gives what a fresh
  object gives.

Inputs are drawn as values inside, at and beyond every documented range, in
every numpy dtype, C / Fortran / strided / reversed layouts, as nested lists,
empty and 0-d. Each drawn value carries its expectation (``OK``: documented
valid, ``BAD``: must be refused, ``ANY``: not settled by the documentation,
e.g. integral floats for an integer array; either outcome is fine, but a
refusal must still name the parameter).

CI budget: the profile is derandomized (the same examples on every run, no
example database), every test has a fixed example count, and kernel-running
tests use few vectors and few columns (``columns=``). With a warm numba cache
the passing tests take about 20-40 s on two cores; failing ones take longer
(hypothesis shrinks them, and each hang costs HANG_S per attempt).
"""
from __future__ import annotations

import dataclasses
import math
import re
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import bss2sim
from bss2sim.circuits import (CAPMEM_PARAMETERS, Chip, ChipConfig, CircuitParams, EventSchedule,
                              Faults, MismatchParams, NoiseParams, TrialNoise, integrate_fast,
                              integrate_trace)
from bss2sim.circuits import integrate as _integrate
from bss2sim.digital import (PPU, Accelerator, BehaviouralParams, PPUCostParams, TimingParams,
                             add_sat, converting_relu, measure_behaviour, paired_schedule, relu)
from bss2sim.experiments.calibration import CalibrationTarget, calibrate
from bss2sim.experiments.training import Adam, Conv2d, ConvertingReLU, Linear, MnistNet

# --- settings ---------------------------------------------------------------------

BASE = settings(
    derandomize=True,            # reproducible in CI: same examples every run
    database=None,               # nothing written into the repository
    deadline=None,               # kernels may compile on the first call
    print_blob=False,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.large_base_example],
)


def cfg(n):
    """The CI profile with ``n`` examples."""
    return settings(BASE, max_examples=n)


# Documented limits (constants of the chip; read at run time where the library
# defines them, so the tests follow a change of the limit).
MAX_CYCLE = 2**31 - 1                      # EventSchedule: cycle 0..2**31-1
MAX_READ_CYCLE = getattr(_integrate, "MAX_READ_CYCLE", 32768)
SEED_MAX = 2**64 - 1
INPUT_MAX, WEIGHT_MAX, OUT_MIN, OUT_MAX, CADC_MAX = 31, 63, -128, 127, 255
ROWS, COLS = 128, 256
MAX_SENDS, MAX_WAIT = 256, 255
EVENT_PHASE_MAX = ROWS * MAX_WAIT * MAX_SENDS

OK, BAD, ANY = "ok", "bad", "any"

# Pure-Python calls that take longer than this are reported as hangs (a
# numba compile is never under this guard).
HANG_S = 30


class CallTimedOut(AssertionError):
    """A pure-Python call ran past ``HANG_S`` (an endless loop)."""


@contextmanager
def time_limit(seconds):
    if seconds is None:
        yield
        return

    def handler(signum, frame):
        raise CallTimedOut(f"call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- the contract ------------------------------------------------------------------

def combine(*expects):
    """Expectation of a call from those of its arguments."""
    if BAD in expects:
        return BAD
    return ANY if ANY in expects else OK


def names_any(message, names):
    """True if ``message`` names one of ``names`` as a whole word (``x`` is not
    found in ``x_top``); a name may also appear with spaces for underscores."""
    msg = message.lower()
    for n in names:
        for form in {n.lower(), n.lower().replace("_", " ")}:
            if re.search(rf"(?<![a-z0-9_]){re.escape(form)}(?![a-z0-9_])", msg):
                return True
    return False


def _short(x):
    text = repr(x)
    return text if len(text) <= 200 else text[:200] + "..."


def outcome(call, expect, names, limit=HANG_S, on_refusal=None):
    """Run ``call()`` under the contract; returns ``(True, result)`` or
    ``(False, exception)``. Any exception other than ValueError / TypeError
    propagates and fails the test. ``on_refusal()`` checks that a refused call
    left no trace; it runs first, so a state change is reported even when the
    message is also at fault."""
    try:
        with time_limit(limit):
            result = call()
    except (ValueError, TypeError) as e:
        _note(expect, "refused")
        if on_refusal is not None:
            on_refusal()
        assert expect != OK, f"documented-valid call refused: {type(e).__name__}: {e}"
        assert names_any(str(e), names), \
            f"{type(e).__name__} does not name any of {sorted(set(names))}: {e}"
        return False, e
    _note(expect, "returned")
    assert expect != BAD, f"invalid {'/'.join(names)} accepted; returned {_short(result)}"
    return True, result


def _note(expect, what):
    # Shown by --hypothesis-show-statistics: how often each side of the contract ran.
    if currently_in_test_context():
        event(f"{expect} -> {what}")


def pick_names(params):
    """Parameters a refusal may name: the invalid and the unsettled ones (the
    library may check either first), else all. ``params``: {name or tuple of
    aliases: expectation}."""
    hit = [n for n, e in params.items() if e != OK] or list(params)
    out = []
    for n in hit:
        out.extend(n if isinstance(n, tuple) else (n,))
    return out


def check(call, params, limit=HANG_S, on_refusal=None):
    """``outcome`` with the expectation and names taken from ``params``."""
    return outcome(call, combine(*params.values()), pick_names(params), limit, on_refusal)


def assert_int_array(a, dtype, shape, lo, hi):
    # A 0-d operation may return a numpy scalar, as numpy itself does.
    ok_type = isinstance(a, np.ndarray) or (isinstance(a, np.generic) and tuple(shape) == ())
    assert ok_type, f"result is {type(a).__name__}, not an ndarray"
    assert a.dtype == dtype, f"result dtype {a.dtype}, documented {np.dtype(dtype)}"
    assert a.shape == tuple(shape), f"result shape {a.shape}, expected {tuple(shape)}"
    if a.size:
        assert lo <= a.min() and a.max() <= hi, f"result values {a.min()}..{a.max()} outside {lo}..{hi}"


# --- scalar strategies -------------------------------------------------------------

INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
WRONG_TYPES = [None, "1", "", b"1", 1 + 0j, [1], (1,), {}, True, False, np.bool_(True)]


def _fits(t, v):
    info = np.iinfo(t)
    return info.min <= v <= info.max


def classify_int(v, lo, hi, none_ok=False):
    """Expectation for an integer parameter documented as ``lo..hi`` (None: unbounded)."""
    if v is None:
        return OK if none_ok else BAD
    if isinstance(v, (bool, np.bool_)):
        return BAD
    if isinstance(v, np.ndarray):
        # A 0-d integer array is not settled by the documentation.
        if v.ndim == 0 and v.dtype.kind in "iu":
            return ANY if classify_int(v[()], lo, hi) == OK else BAD
        return BAD
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return OK if (lo is None or v >= lo) and (hi is None or v <= hi) else BAD
    return BAD


@st.composite
def int_values(draw, lo, hi=None, inside_hi=None):
    """Raw values for an integer parameter: inside, at and beyond the range,
    numpy integers, floats (integral too), NaN, infinities and wrong types."""
    top = inside_hi if inside_hi is not None else (hi if hi is not None else lo + 1000)
    if hi is not None:
        top = min(top, hi)
    branch = draw(st.integers(0, 10))
    if branch <= 2:
        return draw(st.integers(lo, top))
    if branch == 10:
        return draw(st.sampled_from([True, False, np.bool_(True)]))     # bools are no integers here
    if branch == 3:
        return draw(st.sampled_from([lo, lo - 1] + ([hi, hi + 1] if hi is not None else [])))
    if branch == 4:
        v = draw(st.integers(lo, top))
        t = draw(st.sampled_from([t for t in INT_TYPES if _fits(t, v)]))
        return t(v)
    if branch == 5:
        below = draw(st.integers(max_value=lo - 1))
        above = draw(st.integers(min_value=hi + 1)) if hi is not None else below
        return draw(st.sampled_from([below, above, lo - 2**40, 2**64 if hi is not None else lo - 2**64]))
    if branch == 6:
        t = draw(st.sampled_from([t for t in INT_TYPES if _fits(t, lo - 1)] or [np.int64]))
        return t(lo - 1) if _fits(t, lo - 1) else np.int64(-1)
    if branch == 7:
        return draw(st.sampled_from([float(lo), lo + 0.5, float("nan"), float("inf"), -float("inf"),
                                     np.float64(lo), np.float32(lo)]))
    if branch == 8:
        return draw(st.sampled_from(WRONG_TYPES))
    return np.array(draw(st.integers(lo, top)))


def int_scalar(lo, hi=None, inside_hi=None, none_ok=False):
    """(value, expectation) pairs for an integer parameter ``lo..hi``."""
    vals = int_values(lo, hi, inside_hi)
    if none_ok:
        vals = st.one_of(vals, st.none())
    return vals.map(lambda v: (v, classify_int(v, lo, hi, none_ok)))


def classify_real(v, lo=None, hi=None, lo_open=False, hi_open=False, none_ok=False):
    """Expectation for a real parameter: a finite number (not a bool) within the bounds."""
    if v is None:
        return OK if none_ok else BAD
    if isinstance(v, (bool, np.bool_)):
        return BAD
    if isinstance(v, np.ndarray):
        if v.ndim == 0 and v.dtype.kind in "iuf":
            return ANY if classify_real(v[()], lo, hi, lo_open, hi_open) == OK else BAD
        return BAD
    if not isinstance(v, (int, float, np.integer, np.floating)):
        return BAD
    f = float(v)
    if not math.isfinite(f):
        return BAD
    if lo is not None and (f < lo or (lo_open and f == lo)):
        return BAD
    if hi is not None and (f > hi or (hi_open and f == hi)):
        return BAD
    return OK


@st.composite
def real_values(draw, lo=None, hi=None, inside=(None, None)):
    """Raw values for a real parameter: inside, at and beyond the bounds, tiny and
    huge magnitudes, numpy floats, ints, NaN, infinities and wrong types."""
    a = inside[0] if inside[0] is not None else (lo if lo is not None else -1e3)
    b = inside[1] if inside[1] is not None else (hi if hi is not None else a + 1e3)
    branch = draw(st.integers(0, 9))
    if branch <= 2:
        return draw(st.floats(a, b, allow_nan=False, allow_infinity=False))
    if branch == 9:
        return draw(st.sampled_from([True, False, np.bool_(False)]))    # bools are no numbers here
    if branch == 3:
        edges = [e for e in (lo, hi) if e is not None]
        near = [np.nextafter(e, d) for e in edges for d in (-np.inf, np.inf)]
        return draw(st.sampled_from(edges + near + [5e-324, -5e-324, 1e300, -1e300]))
    if branch == 4:
        v = draw(st.floats(a, b, allow_nan=False, allow_infinity=False))
        return draw(st.sampled_from([np.float64(v), np.float32(v), int(v), np.int64(int(v))]))
    if branch == 5:
        return draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), np.float64("nan"),
                                     np.float32("inf")]))
    if branch == 6:
        return draw(st.sampled_from(WRONG_TYPES))
    if branch == 7:
        return np.array(draw(st.floats(a, b, allow_nan=False, allow_infinity=False)))
    below = (lo - 1.0) if lo is not None else -1e6
    above = (hi + 1.0) if hi is not None else 1e6
    return draw(st.sampled_from([below, above]))


def real_scalar(lo=None, hi=None, lo_open=False, hi_open=False, inside=(None, None), none_ok=False):
    vals = real_values(lo, hi, inside)
    if none_ok:
        vals = st.one_of(vals, st.none())
    return vals.map(lambda v: (v, classify_real(v, lo, hi, lo_open, hi_open, none_ok)))


def bool_scalar():
    """(value, expectation) for a bool parameter: ints 0/1 are unsettled, other types refused."""
    return st.sampled_from([(True, OK), (False, OK), (np.bool_(True), OK), (np.bool_(False), OK),
                            (0, ANY), (1, ANY), ("no", BAD), ("", BAD), (None, BAD), (2, BAD),
                            (1.0, BAD), (np.array([True, False]), BAD)])


# --- array strategies --------------------------------------------------------------

FLOAT_TYPES = [np.float16, np.float32, np.float64]
ARRAY_DTYPES = INT_TYPES * 3 + FLOAT_TYPES + [np.bool_, np.object_, np.complex128, np.str_]
POKES = ["lo", "hi", "lo-1", "hi+1", "far-low", "far-high", "huge", "nan", "inf", "-inf", "half", "none"]
LAYOUTS = ["C", "C", "F", "strided", "reversed", "list", "readonly"]


def classify_values(value, valid):
    """Expectation from the dtype and values of an integer array parameter;
    ``valid(int64 array) -> bool array``. Shapes are checked by the caller."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        return BAD                                   # ragged nesting
    k = a.dtype.kind
    if k in "iu":
        if k == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            return BAD
        return OK if valid(a.astype(np.int64)).all() else BAD
    if k == "b":
        return ANY if valid(a.astype(np.int64)).all() else BAD
    if k == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.rint(a)):
            return BAD
        if a.size and float(np.abs(a).max()) > 2.0**62:
            return BAD
        return ANY if valid(a.astype(np.int64)).all() else BAD
    if k == "O":
        flat = a.ravel().tolist()
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in flat):
            return ANY if valid(np.array([int(v) for v in flat] or [0], np.int64)[:len(flat)]).all() \
                else BAD
        return BAD
    return BAD


def in_range(lo, hi):
    return lambda a: (a >= lo) & (a <= hi)


def _layout(a, layout):
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed" and a.ndim:
        return np.flip(np.flip(a).copy())
    if layout == "list":
        return a.tolist()
    if layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
    return a


@st.composite
def int_arrays(draw, shape, lo, hi, valid=None, wrong_shapes=True, dtypes=ARRAY_DTYPES, pokes=True,
               choices=None):
    """(value, expectation) for an integer array parameter of ``shape`` with values
    ``lo..hi``: any dtype and layout, (``pokes``) a few values at or beyond the
    bounds, NaN and infinities, and (``wrong_shapes``) other shapes, empty and 0-d.
    ``choices``: the values a random fill draws from (default lo..hi)."""
    valid = valid or in_range(lo, hi)
    shape = tuple(shape)
    right_shape = True
    if wrong_shapes and draw(st.integers(0, 3)) == 0:
        cands = {shape[:-1], shape + (1,), (1,) + shape, (), (0,) + shape[1:],
                 shape[:-1] + (max(shape[-1] - 1, 0),) if shape else (1,), shape[::-1]}
        cands.discard(shape)
        shape = draw(st.sampled_from(sorted(cands)))
        right_shape = False
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["zeros", "random", "random", "low", "high"]))
    rand = rng.integers(lo, hi + 1, shape) if choices is None else rng.choice(choices, shape)
    base = {"zeros": np.zeros(shape, np.int64), "random": rand,
            "low": np.full(shape, lo, np.int64), "high": np.full(shape, hi, np.int64)}[fill]
    # Half of the arrays keep their (valid) fill; the others get up to 3 special values.
    n_pokes = draw(st.sampled_from([0, 0, 0, 1, 2, 3])) if pokes else 0
    pokes = draw(st.lists(st.tuples(st.integers(0, 2**31), st.sampled_from(POKES)),
                          min_size=n_pokes, max_size=n_pokes))
    special = {"lo": lo, "hi": hi, "lo-1": lo - 1, "hi+1": hi + 1, "far-low": lo - 1000,
               "far-high": hi + 1000, "huge": 2**40, "nan": float("nan"), "inf": float("inf"),
               "-inf": -float("inf"), "half": lo + 0.5, "none": None}
    with np.errstate(all="ignore"):
        if dtype in INT_TYPES:
            info = np.iinfo(dtype)
            a = np.clip(base, max(info.min, -2**62), min(info.max, 2**62)).astype(dtype)
            for pos, p in pokes:
                v = special[p]
                if a.size and isinstance(v, int) and _fits(dtype, v):
                    a.flat[pos % a.size] = v
        elif dtype in FLOAT_TYPES or dtype is np.complex128:
            a = base.astype(dtype)
            for pos, p in pokes:
                if a.size and special[p] is not None:
                    a.flat[pos % a.size] = special[p]
        elif dtype is np.bool_:
            a = base != 0
        elif dtype is np.object_:
            a = base.astype(object)               # elements become Python ints
            for pos, p in pokes:
                if a.size:
                    a.flat[pos % a.size] = special[p]
        else:
            a = base.astype(str)
    value = _layout(a, draw(st.sampled_from(LAYOUTS)))
    expect = classify_values(value, valid) if right_shape else BAD
    return value, expect


def classify_real_array(value, shape):
    """Expectation for a real-valued array parameter (gradients, float-mode inputs):
    integers and finite floats are valid; NaN, infinities, bools and objects are
    not settled; strings and complex numbers are refused."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        return BAD
    if a.shape != tuple(shape):
        return BAD
    if a.dtype.kind in "iu":
        return OK
    if a.dtype.kind == "f":
        return OK if np.all(np.isfinite(a)) else ANY
    return ANY if a.dtype.kind in "bO" else BAD


def seed_scalar():
    """(value, expectation) for a seed documented as an integer >= 0: seeds above
    2**64 - 1 (the library's seed width) are not settled."""
    return int_scalar(0, None, inside_hi=SEED_MAX).map(
        lambda p: (p[0], ANY if p[1] == OK and int(p[0]) > SEED_MAX else p[1]))


def ragged(rows, cols):
    """Ragged nested lists (the last row one short): never a valid array."""
    return st.integers(0, INPUT_MAX).map(
        lambda v: ([[v] * cols for _ in range(max(rows - 1, 1))] + [[v] * (cols - 1)], BAD))


def or_ragged(arrays, rows, cols):
    """``arrays``, and now and then a ragged nested list instead."""
    return st.one_of(arrays, arrays, arrays, ragged(rows, cols))


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chip():
    """One chip for the whole module (its weights change between tests)."""
    return Chip(0)


BEHAVIOURAL = BehaviouralParams(gain=0.0015, sigma=2.0)


def assert_same(got, want, what):
    assert got == want, what


def make_acc(fidelity, chip, noise_seed=7):
    if fidelity == "chip":
        return Accelerator(chip, noise_seed=noise_seed)
    return Accelerator(behavioural=BEHAVIOURAL, noise_seed=noise_seed)


def acc_state(acc):
    """Everything a refused call must leave alone."""
    return (acc.report(), [(p.cycles, p.stream_seconds) for p in acc.ppus],
            None if acc.chip is None else acc.chip.config.version)


def probe(acc):
    """A small valid matmul (its result depends on the vector-id noise counter)."""
    x = np.zeros((2, 6), np.int64)
    x[0, :3] = [5, 31, 2]
    x[1, 2:] = 17
    w = np.arange(18).reshape(6, 3) - 9
    return acc.matmul(x, w, num_sends=2), acc.report()


def assert_untouched(acc, before, fidelity, chip):
    """A refused call changed nothing: same state, and the next valid call gives
    what it gives on a fresh accelerator."""
    assert acc_state(acc) == before, "refused call changed the accelerator's state"
    got = probe(acc)
    want = probe(make_acc(fidelity, chip))
    assert np.array_equal(got[0], want[0]), "after a refused call the next result differs from a fresh one"
    assert got[1] == want[1], "after a refused call the report differs from a fresh one"


# ==================================================================================
# bss2sim top level
# ==================================================================================

def test_toplevel_names_resolve():
    for name in bss2sim.__all__:
        assert getattr(bss2sim, name) is not None
    with pytest.raises(AttributeError):
        bss2sim.no_such_name  # noqa: B018


# ==================================================================================
# circuits: Chip, Faults, params, TrialNoise
# ==================================================================================

@cfg(60)
@given(seed=seed_scalar())
def test_chip_seed(seed):
    value, expect = seed
    ok, c = outcome(lambda: Chip(value), expect, ["seed"])
    if ok:
        assert c.seed == int(value) and type(c.seed) is int


PARAM_OBJECTS = {"mismatch": MismatchParams, "circuit": CircuitParams, "noise": NoiseParams,
                 "faults": Faults}
OTHER_OBJECTS = ["none", "off", 3, 1.5, True, {}, [], (), MismatchParams, CircuitParams(),
                 NoiseParams(), Faults(), MismatchParams.none(), np.float64(0.0)]


@pytest.mark.parametrize("name", list(PARAM_OBJECTS))
@cfg(15)
@given(data=st.data())
def test_chip_parameter_objects(name, data):
    cls = PARAM_OBJECTS[name]
    value = data.draw(st.sampled_from([None] + OTHER_OBJECTS), label=name)
    expect = OK if value is None or type(value) is cls else BAD
    ok, c = outcome(lambda: Chip(0, **{name: value}), expect, [name])
    if ok and value is not None:
        assert getattr(c, name) is value


# Faults: each field is a sequence of tuples; (kind, lo, hi) per tuple element.
FAULT_FIELDS = {
    "dead_synapse_rows": (("int", 0, 1), ("int", 0, 255)),
    "stuck_cadc_channels": (("int", 0, 1), ("int", 0, 255), ("int", 0, CADC_MAX)),
    "driver_offset_extra_s": (("int", 0, 1), ("int", 0, 127), ("real", None, None)),
}
FAULT_ALIASES = {"dead_synapse_rows": ("dead_synapse_rows", "dead synapse row"),
                 "stuck_cadc_channels": ("stuck_cadc_channels", "stuck cadc"),
                 "driver_offset_extra_s": ("driver_offset_extra_s", "driver offset extra")}


@st.composite
def fault_entries(draw, spec):
    """(entry, expectation): a tuple per spec, sometimes of the wrong length or no tuple."""
    parts, expects = [], []
    for kind, lo, hi in spec:
        if kind == "int":
            v, e = draw(int_scalar(lo, hi))
        else:
            v, e = draw(real_scalar(inside=(-2e-9, 2e-9)))
        parts.append(v)
        expects.append(e)
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return tuple(parts[:-1]), BAD
    if shape == 1:
        return tuple(parts) + (0,), BAD
    if shape == 2:
        return draw(st.sampled_from([5, None, "ab", 1.5])), BAD
    if shape == 3:
        return list(parts), combine(*expects)
    return tuple(parts), combine(*expects)


@pytest.mark.parametrize("field", list(FAULT_FIELDS))
@cfg(40)
@given(data=st.data())
def test_faults(field, data):
    spec = FAULT_FIELDS[field]
    kind = data.draw(st.integers(0, 5), label="container")
    if kind == 0:
        value, expect = data.draw(st.sampled_from([None, 5, "ab", 1.5, {}])), BAD
    else:
        pairs = data.draw(st.lists(fault_entries(spec), max_size=3), label="entries")
        value = tuple(p[0] for p in pairs) if kind % 2 else [p[0] for p in pairs]
        expect = combine(*(p[1] for p in pairs))
    ok, f = outcome(lambda: Faults(**{field: value}), expect, FAULT_ALIASES[field])
    if not ok:
        return
    # An accepted fault must build a chip, and show in its ground truth.
    c = outcome(lambda: Chip(0, faults=f), OK, ["faults"])[1]
    for entry in value:
        if field == "dead_synapse_rows":
            assert np.all(c.truth.synapse_gain[entry[0], entry[1]] == 0)
        elif field == "stuck_cadc_channels":
            assert c.truth.cadc_stuck_code[entry[0], entry[1]] >= 0


def _real_fields():
    """(class, field, bounds) of every real-valued dataclass field; bounds:
    (lo, lo_open, hi); rails are bounded by the other rail's default."""
    out = []
    positive = {"pulse_width_per_value_s", "driver_offset_step_s", "driver_ramp_nominal_a",
                "synapse_bias_nominal_a", "synapse_current_full_scale_a", "tau_syn_s",
                "syn_strength_nominal", "syn_strength_nominal_a", "syn_knee_c",
                "syn_saturation_headroom_c", "membrane_capacitance_f", "residual_leak_tau_s",
                "cadc_step_nominal_v", "cadc_slope_nominal_a"}
    for f in dataclasses.fields(CircuitParams):
        if f.name == "rail_low_v":
            out.append((CircuitParams, f.name, (None, False, CircuitParams().rail_high_v, True)))
        elif f.name == "rail_high_v":
            out.append((CircuitParams, f.name, (CircuitParams().rail_low_v, True, None, False)))
        else:
            out.append((CircuitParams, f.name, (0.0, f.name in positive, None, False)))
    for cls in (MismatchParams, NoiseParams, TimingParams, BehaviouralParams):
        out += [(cls, f.name, (0.0, False, None, False)) for f in dataclasses.fields(cls)
                if f.name != "formula"]          # BehaviouralParams.formula: a name, not a number
    out.append((PPUCostParams, "link_bytes_per_s", (0.0, True, None, False)))
    out.append((PPUCostParams, "link_latency_s", (0.0, False, None, False)))
    return out


REAL_FIELDS = _real_fields()
# Upper limits the library may enforce without a documented bound (none today).
SOFT_MAX = {}


def _make_params(cls, **kw):
    if cls is BehaviouralParams:
        kw = {"gain": 0.0015, "sigma": 2.0, **kw}
    return cls(**kw)


@pytest.mark.parametrize("cls,field,bounds", REAL_FIELDS,
                         ids=[f"{c.__name__}.{f}" for c, f, _ in REAL_FIELDS])
@cfg(40)
@given(data=st.data())
def test_params_real_fields(cls, field, bounds, data):
    lo, lo_open, hi, hi_open = bounds
    inside = (lo if lo is not None else -2.0, (lo if lo is not None else 0.0) + 2.0)
    if hi is not None:
        inside = (hi - 2.0, hi)
    value = data.draw(real_values(lo, hi, inside), label=field)
    expect = classify_real(value, lo, hi, lo_open, hi_open)
    if expect == OK and field in SOFT_MAX and float(value) > SOFT_MAX[field]:
        expect = ANY
    ok, p = outcome(lambda: _make_params(cls, **{field: value}), expect, [field])
    if ok:
        assert getattr(p, field) == value


PPU_INT_FIELDS = [f.name for f in dataclasses.fields(PPUCostParams)
                  if f.name not in ("link_bytes_per_s", "link_latency_s")]


@pytest.mark.parametrize("field", PPU_INT_FIELDS)
@cfg(20)
@given(data=st.data())
def test_ppu_cost_int_fields(field, data):
    hi = 16 * 1024 - 1 if field == "reserved_bytes" else None
    value, expect = data.draw(int_scalar(0, hi, inside_hi=1000), label=field)
    ok, p = outcome(lambda: PPUCostParams(**{field: value}), expect, [field])
    if ok:
        assert getattr(p, field) == value


@cfg(40)
@given(factor=real_scalar(0.0, None, inside=(0.0, 100.0)))
def test_mismatch_scaled(factor):
    value, expect = factor
    base = MismatchParams()
    ok, m = outcome(lambda: base.scaled(value), expect, ["factor"])
    if ok:
        for f in dataclasses.fields(m):
            assert getattr(m, f.name) == pytest.approx(getattr(base, f.name) * float(value))


@cfg(50)
@given(data=st.data())
def test_trial_noise(data):
    which = data.draw(st.sampled_from(["seed", "start_index"]))
    seed, e_seed = data.draw(int_scalar(0, SEED_MAX, inside_hi=SEED_MAX)) if which == "seed" else (3, OK)
    start, e_start = data.draw(int_scalar(0, 2**63 - 1, inside_hi=2**63 - 1)) \
        if which == "start_index" else (0, OK)
    ok, n = check(lambda: TrialNoise(seed, start), {"seed": e_seed, "start_index": e_start})
    if ok:
        assert (n.seed, n.next_index) == (int(seed), int(start))
        s, first = n.take(4)
        assert (s, first) == (np.uint64(int(seed)), np.uint64(int(start)))
        assert isinstance(s, np.uint64) and isinstance(first, np.uint64)
        assert n.next_index == int(start) + 4


@cfg(40)
@given(count=int_scalar(0, 2**63 - 11, inside_hi=1000))
def test_trial_noise_take(count):
    value, expect = count
    n = TrialNoise(5, 10)
    ok, _ = outcome(lambda: n.take(value), expect, ["count"],
                    on_refusal=lambda: assert_same(n.next_index, 10, "refused take moved the counter"))
    if ok:
        assert n.next_index == 10 + int(value), "take must advance the counter by count"


# ==================================================================================
# circuits: ChipConfig
# ==================================================================================

def config_snapshot(c):
    return (c.version, c.weights.copy(), c.row_sign.copy(), c.driver_offset.copy(),
            c.cadc_digital_offset.copy(), c.cadc_input.copy(),
            {n: c.capmem(n).copy() for n in CAPMEM_PARAMETERS})


def snapshots_equal(a, b):
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1:6], b[1:6])) \
        and all(np.array_equal(a[6][n], b[6][n]) for n in a[6])


def assert_config_unchanged(c, before):
    assert snapshots_equal(config_snapshot(c), before), "refused write changed the configuration"


def _sign_ok(a):
    return (a == 1) | (a == -1)


# setter -> (aliases of the array parameter, shape, lo, hi, value predicate, fill values)
SETTERS = {
    "set_weights": (("weights",), (256, 256), 0, 63, None, None),
    "set_logical_weights": (("weights",), (128, 256), -63, 63, None, None),
    "set_row_signs": (("signs", "row_sign"), (256,), -1, 1, _sign_ok, [-1, 1]),
    "set_driver_offsets": (("offsets", "driver_offset"), (128,), 0, 63, None, None),
    "set_cadc_digital_offsets": (("offsets", "cadc_digital_offset"), (256,), -128, 127, None, None),
}


def _read_back(c, setter, half):
    if setter in ("set_weights", "set_logical_weights"):
        return c.weights[half]
    return {"set_row_signs": c.row_sign, "set_driver_offsets": c.driver_offset,
            "set_cadc_digital_offsets": c.cadc_digital_offset}[setter][half]


@pytest.mark.parametrize("setter", list(SETTERS))
@cfg(40)
@given(data=st.data())
def test_config_array_setters(setter, data):
    aliases, shape, lo, hi, pred, choices = SETTERS[setter]
    arrays = int_arrays(shape, lo, hi, valid=pred, choices=choices)
    if len(shape) == 2:
        arrays = or_ragged(arrays, *shape)
    values, e_values = data.draw(arrays, label="values")
    half, e_half = data.draw(st.one_of(st.sampled_from([(0, OK), (1, OK)]), int_scalar(0, 1)),
                             label="half")
    c = ChipConfig()
    before = config_snapshot(c)
    ok, _ = check(lambda: getattr(c, setter)(half, values), {aliases: e_values, "half": e_half},
                  on_refusal=lambda: assert_config_unchanged(c, before))
    if not ok:
        return
    h = int(half)
    want = np.asarray(values).astype(np.int64)
    got = _read_back(c, setter, h).astype(np.int64)
    if setter == "set_logical_weights":
        assert np.array_equal(got[0::2], np.maximum(want, 0))
        assert np.array_equal(got[1::2], np.maximum(-want, 0))
        assert np.array_equal(c.row_sign[h], np.where(np.arange(256) % 2 == 0, 1, -1))
    else:
        assert np.array_equal(got, want)
    assert c.version != before[0], "a write must give the configuration a new version"
    other = 1 - h
    assert np.array_equal(c.weights[other], before[1][other]), "a write changed the other half"


NAME_VALUES = [(n, OK) for n in CAPMEM_PARAMETERS] + [
    (np.str_("synapse_bias"), OK), ("no_such", BAD), ("", BAD), (None, BAD), (3, BAD),
    (["synapse_bias"], BAD), (b"synapse_bias", BAD), ("SYNAPSE_BIAS", BAD)]


@cfg(50)
@given(data=st.data())
def test_config_capmem(data):
    name, e_name = data.draw(st.sampled_from(NAME_VALUES), label="name")
    shape = CAPMEM_PARAMETERS[name].shape if e_name == OK else (2, 2)
    # A scalar (or 0-d array) is broadcast to every cell; other shapes are refused.
    given_shape = data.draw(st.sampled_from([shape, shape, (), (2, 3), (256,), (2, 2) if shape != (2, 2)
                                             else (2, 256)]))
    values, e_values = data.draw(st.one_of(int_scalar(0, 1023),
                                           int_arrays(given_shape, 0, 1023, wrong_shapes=False)),
                                 label="values")
    if np.ndim(np.asarray(values, dtype=object)) not in (0, len(shape)) or \
            (np.ndim(np.asarray(values, dtype=object)) and np.shape(np.asarray(values, dtype=object)) != shape):
        e_values = BAD
    c = ChipConfig()
    before = config_snapshot(c)
    aliases = ("values", str(name)) if e_name == OK else ("values",)
    ok, _ = check(lambda: c.set_capmem(name, values), {("name", "capmem parameter"): e_name,
                                                       aliases: e_values},
                  on_refusal=lambda: assert_config_unchanged(c, before))
    if ok:
        assert np.array_equal(c.capmem(name), np.broadcast_to(np.asarray(values).astype(np.int64), shape))
    # Reading a parameter validates the name too.
    ok, got = outcome(lambda: c.capmem(name), e_name, ["name", "capmem parameter"])
    if ok:
        assert got.shape == CAPMEM_PARAMETERS[str(name)].shape and not got.flags.writeable


SOURCES = [("membrane", OK), ("reference", OK), (np.str_("reference"), OK), ("Membrane", BAD),
           ("", BAD), (None, BAD), (0, BAD), (1, BAD), (b"membrane", BAD), (["membrane"], BAD),
           (np.array(["membrane"]), BAD), (np.array("membrane"), ANY), (True, BAD)]


@cfg(30)
@given(src=st.sampled_from(SOURCES), half=int_scalar(0, 1))
def test_config_cadc_input(src, half):
    (source, e_source), (h, e_half) = src, half
    c = ChipConfig()
    before = config_snapshot(c)
    ok, _ = check(lambda: c.set_cadc_input(h, source), {"source": e_source, "half": e_half},
                  on_refusal=lambda: assert_config_unchanged(c, before))
    if ok:
        assert c.cadc_input[int(h)] == (0 if str(source) == "membrane" else 1)


@cfg(30)
@given(half=int_scalar(0, 1), cycles=int_scalar(1, None, inside_hi=300))
def test_chip_tables(chip, half, cycles):
    (h, e_half), (n, e_n) = half, cycles
    if isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and e_n == BAD:
        e_n = ANY                          # integers below 1 are not settled (a minimal table)
    ok, op = outcome(lambda: chip.operating_point(h), e_half, ["half"])
    if ok:
        assert op.pulse_width_ns.shape == (128, 32) and op.column_params.shape[1] == 256
    ok, tab = check(lambda: chip.propagator_tables(h, n), {"half": e_half, "num_cycles": e_n})
    if ok:
        assert tab.dtype == np.float32 and tab.shape[0] == 5 and tab.shape[2] == 256
        assert tab.shape[1] >= min(int(n), 32769) and np.all(np.isfinite(tab))


# ==================================================================================
# circuits: EventSchedule
# ==================================================================================

@st.composite
def event_lists(draw, max_vectors=4, max_events=6, max_gap=40):
    """Valid event lists: per vector, (driver, value, cycle) with non-decreasing
    cycles and at most one event per driver and cycle."""
    vectors = []
    for _ in range(draw(st.integers(0, max_vectors))):
        cycle, used, events = draw(st.integers(0, 20)), set(), []
        for _ in range(draw(st.integers(0, max_events))):
            if events and draw(st.booleans()):
                cycle += draw(st.integers(1, max_gap))
                used = set()
            d = draw(st.integers(0, 127).filter(lambda d: d not in used))
            used.add(d)
            events.append((d, draw(st.integers(1, INPUT_MAX)), cycle))
        vectors.append(events)
    return vectors


def csr(vectors):
    counts = [len(v) for v in vectors]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.array([e for v in vectors for e in v], np.int64).reshape(-1, 3)
    return offsets, flat[:, 0].copy(), flat[:, 1].copy(), flat[:, 2].copy()


FIELDS = ("offsets", "driver", "value", "cycle")


@st.composite
def csr_cases(draw):
    """(arrays dict, expectation, names): a valid schedule, possibly with one
    field re-typed (fine) or corrupted (must be refused, naming the field)."""
    vectors = draw(event_lists())
    arrs = dict(zip(FIELDS, csr(vectors)))
    n = len(arrs["driver"])
    mutation = draw(st.sampled_from(["none", "retype", "range", "dtype", "offsets", "length",
                                     "order", "busy", "ndim", "ragged"]))
    field = draw(st.sampled_from(FIELDS[1:]))
    if mutation == "retype":
        # Any integer dtype that holds the values, any layout: still valid.
        name = draw(st.sampled_from(FIELDS))
        a = arrs[name]
        t = draw(st.sampled_from([t for t in INT_TYPES if a.size == 0 or
                                  (_fits(t, int(a.min())) and _fits(t, int(a.max())))]))
        arrs[name] = _layout(a.astype(t), draw(st.sampled_from(["C", "strided", "reversed", "list",
                                                                "readonly"])))
        return arrs, OK, [name]
    if mutation == "range" and n:
        bad = {"driver": [-1, 128, 2**40], "value": [0, 32, -1], "cycle": [-1, MAX_CYCLE + 1]}[field]
        arrs[field][draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
        return arrs, BAD, [field]
    if mutation == "dtype":
        name = draw(st.sampled_from(FIELDS))
        a = arrs[name].astype(draw(st.sampled_from([np.float64, np.float32, np.object_, np.str_,
                                                    np.bool_, np.complex128])))
        if a.dtype.kind in "fc" and a.size and draw(st.booleans()):
            a[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, 0.5]))
        arrs[name] = a
        # Integral floats or bools holding valid values are not settled; bools
        # collapse the values, so any field may then be the one refused.
        if a.dtype.kind == "b":
            return arrs, ANY, list(FIELDS)
        return arrs, classify_values(a, lambda x: np.ones(x.shape, bool)), [name]
    if mutation == "offsets":
        o = arrs["offsets"].copy()
        how = draw(st.sampled_from(["start", "end", "down", "empty", "2d", "none"]))
        if how == "start":
            o[0] = 1 if o[0] == 0 else 0
        elif how == "end":
            o[-1] += 1
        elif how == "down" and len(o) >= 3 and o[-1] > 0:
            o[1] = o[-1]
            o[2] = 0 if o[-1] else o[2]
            if np.all(np.diff(o) >= 0):
                return arrs, OK, ["offsets"]
        elif how == "empty":
            o = o[:0]
        elif how == "2d":
            o = o[None, :]
        elif how == "none":
            o = None
        else:
            return arrs, OK, ["offsets"]
        arrs["offsets"] = o
        return arrs, BAD, ["offsets"]
    if mutation == "length" and n:
        arrs[field] = arrs[field][:-1]
        return arrs, BAD, list(FIELDS[1:])
    if mutation == "order":
        for i in range(1, n):
            same = np.searchsorted(arrs["offsets"], i, side="right") == \
                np.searchsorted(arrs["offsets"], i - 1, side="right")
            if same and arrs["cycle"][i] > arrs["cycle"][i - 1]:
                arrs["cycle"][i], arrs["cycle"][i - 1] = arrs["cycle"][i - 1], arrs["cycle"][i]
                return arrs, BAD, ["cycle"]
    if mutation == "busy":
        for i in range(1, n):
            same = np.searchsorted(arrs["offsets"], i, side="right") == \
                np.searchsorted(arrs["offsets"], i - 1, side="right")
            if same:
                arrs["driver"][i] = arrs["driver"][i - 1]
                arrs["cycle"][i] = arrs["cycle"][i - 1]
                return arrs, BAD, ["driver"]
    if mutation == "ndim":
        arrs[field] = arrs[field][None, :]
        return arrs, BAD, [field]
    if mutation == "ragged":
        name = draw(st.sampled_from(FIELDS))
        arrs[name] = [[0], [0, 1]]
        return arrs, BAD, [name]
    return arrs, OK, list(FIELDS)


def assert_schedule(s, arrs):
    for name in FIELDS:
        a = getattr(s, name)
        assert isinstance(a, np.ndarray) and a.dtype == np.int64 and a.ndim == 1, \
            f"schedule.{name} is {type(a).__name__} {getattr(a, 'dtype', '')}, not 1-D int64"
        assert np.array_equal(a, np.asarray(arrs[name]).astype(np.int64))
    assert s.num_vectors == len(s.offsets) - 1 and s.num_events == len(s.driver)
    last = s.last_cycle()
    assert last.shape == (s.num_vectors,) and last.dtype == np.int64


@pytest.mark.parametrize("build", ["from_arrays", "constructor"])
@cfg(60)
@given(case=csr_cases())
def test_schedule_from_arrays(build, case):
    arrs, expect, names = case
    make = EventSchedule.from_arrays if build == "from_arrays" else EventSchedule
    ok, s = outcome(lambda: make(*(arrs[f] for f in FIELDS)), expect, names)
    if ok:
        assert_schedule(s, arrs)


def _malformed_event(draw):
    return draw(st.sampled_from([(1, 2), (1, 2, 3, 4), (0, 1.5, 3), (0, 1, None), ("0", 1, 2),
                                 (True, 1, 2), (0, 1, float("nan")), 5, None, "abc", (0, 1, 2**70)]))


@st.composite
def list_cases(draw):
    vectors = draw(event_lists())
    how = draw(st.sampled_from(["plain", "plain", "numpy", "arrays", "bad_event", "bad_vector",
                                "bad_container", "range"]))
    if how == "numpy":
        t = draw(st.sampled_from([np.int16, np.int32, np.int64, np.uint8]))
        return [[tuple(t(x) for x in e) for e in v] for v in vectors], OK
    if how == "arrays":
        return [np.array(v, np.int64).reshape(-1, 3) for v in vectors], ANY
    if how == "bad_event":
        vectors.append([(1, 1, 1), _malformed_event(draw)])
        return vectors, BAD
    if how == "bad_vector":
        return vectors + [draw(st.sampled_from([5, None, 1.5]))], BAD
    if how == "bad_container":
        return draw(st.sampled_from([None, 5, 1.5, "abc", {0: [(1, 1, 1)]}])), BAD
    if how == "range":
        vectors.append([draw(st.sampled_from([(128, 1, 0), (0, 0, 0), (0, 32, 0), (0, 1, -1),
                                              (-1, 1, 0), (0, 1, MAX_CYCLE + 1)]))])
        return vectors, BAD
    return vectors, OK


@cfg(60)
@given(case=list_cases())
def test_schedule_from_lists(case):
    vectors, expect = case
    ok, s = outcome(lambda: EventSchedule.from_lists(vectors), expect,
                    ["vectors", "event", "events", "driver", "value", "cycle"])
    if ok:
        assert s.num_vectors == len(vectors)
        assert_schedule(s, dict(zip(FIELDS, csr([[tuple(int(x) for x in e) for e in v]
                                                  for v in vectors]))))


@cfg(60)
@given(data=st.data())
def test_schedule_from_inputs(data):
    b = data.draw(st.integers(0, 3), label="num_vectors")
    inputs, e_in = data.draw(or_ragged(int_arrays((b, 128), 0, INPUT_MAX), b, 128), label="inputs")
    wait, e_wait = data.draw(st.one_of(st.just((5, OK)), int_scalar(1, None, inside_hi=MAX_CYCLE)),
                             label="wait_between_events")
    start, e_start = data.draw(st.one_of(st.just((0, OK)), int_scalar(0, MAX_CYCLE, inside_hi=MAX_CYCLE)),
                               label="start_cycle")
    if combine(e_in, e_wait, e_start) == OK:
        # Valid only while the last event stays within the documented cycle range.
        longest = int(np.count_nonzero(np.asarray(inputs), axis=1).max(initial=0))
        if longest and int(start) + (longest - 1) * int(wait) > MAX_CYCLE:
            e_wait = e_start = BAD
    ok, s = check(lambda: EventSchedule.from_inputs(inputs, wait, start),
                  {"inputs": e_in, "wait_between_events": e_wait, "start_cycle": e_start})
    if not ok:
        return
    x = np.asarray(inputs).astype(np.int64)
    vec, drv = np.nonzero(x)
    want = {"driver": drv, "value": x[vec, drv]}
    counts = np.count_nonzero(x, axis=1)
    want["offsets"] = np.concatenate([[0], np.cumsum(counts)])
    rank = np.arange(len(vec)) - want["offsets"][vec]
    want["cycle"] = int(start) + rank * int(wait)
    assert_schedule(s, want)
    # What from_inputs builds must pass the validating constructor.
    outcome(lambda: EventSchedule.from_arrays(s.offsets, s.driver, s.value, s.cycle), OK, [])


@cfg(40)
@given(vectors=event_lists(), start=int_scalar(0, 6, inside_hi=6), stop=int_scalar(0, 6, inside_hi=6),
       b=int_scalar(0, 6, inside_hi=6))
def test_schedule_slice_and_vector(vectors, start, stop, b):
    s = EventSchedule.from_lists(vectors)
    nv = s.num_vectors
    (v0, e0), (v1, e1), (vb, eb) = start, stop, b
    if e0 == OK and e1 == OK:
        e0 = e1 = OK if int(v0) <= int(v1) <= nv else BAD
    ok, part = check(lambda: s.slice(v0, v1), {"start": e0, "stop": e1})
    if ok:
        assert part.num_vectors == int(v1) - int(v0)
        for i in range(part.num_vectors):
            for got, want in zip(part.vector(i), s.vector(int(v0) + i)):
                assert np.array_equal(got, want)
    if eb == OK and int(vb) >= nv:
        eb = BAD
    if eb == BAD and isinstance(vb, (int, np.integer)) and not isinstance(vb, (bool, np.bool_)) \
            and -nv <= int(vb) < 0:
        eb = ANY                                      # a negative index, as Python sequences take
    ok, ev = outcome(lambda: s.vector(vb), eb, ["b", "vector"])
    if ok:
        assert len(ev) == 3 and all(a.dtype == np.int64 for a in ev)


# ==================================================================================
# circuits: integrate_fast / integrate_trace (kernel calls: small batches)
# ==================================================================================

@st.composite
def read_cycles(draw, schedule, hi_inside=200):
    """(read_cycle, expectation) for a schedule: scalars and per-vector arrays,
    before the last event, at and beyond the range, wrong dtypes and shapes."""
    last = schedule.last_cycle()
    top = int(last.max(initial=0))
    b = schedule.num_vectors
    branch = draw(st.integers(0, 7))
    if branch <= 1:
        v = top + draw(st.integers(0, hi_inside))
        return draw(st.sampled_from([v, np.int32(v), np.uint32(v), np.int64(v), np.array(v)])), OK
    if branch == 2:
        a = last + np.array(draw(st.lists(st.integers(0, hi_inside), min_size=b, max_size=b)), np.int64)
        t = draw(st.sampled_from([np.int64, np.int32, np.uint16, np.uint64]))
        return _layout(a.astype(t), draw(st.sampled_from(["C", "list", "strided", "readonly"]))), OK
    if branch == 3:
        return draw(st.sampled_from([(-1, BAD), (MAX_READ_CYCLE + 1, BAD), (2**63, BAD),
                                     (np.int64(-5), BAD), (MAX_READ_CYCLE, OK)]))
    if branch == 4 and top > 0:
        return top - 1, BAD
    if branch == 5:
        return draw(st.sampled_from([(float(top), BAD), (np.float64(top), BAD), (np.nan, BAD),
                                     (np.inf, BAD), (str(top), BAD), (None, BAD), (True, BAD),
                                     (np.array([top] * (b + 1)), BAD), (np.full((1, b), top), BAD),
                                     (np.full(b, float(top)), BAD if b else ANY)]))
    if branch == 6:
        return np.full(b, top, bool) if b else np.zeros(0, bool), ANY
    return top, OK


NOT_A_CHIP = [None, 0, "chip", ChipConfig()]
NOT_A_SCHEDULE = [None, [[(0, 1, 0)]], np.zeros((1, 128), np.int64), "schedule"]
NOT_NOISE = [3, "on", True, np.random.default_rng(0), NoiseParams(), 1.5]


@st.composite
def integrate_args(draw, columns_param=True):
    """Arguments of integrate_fast / integrate_trace with at most one corrupted."""
    sched = EventSchedule.from_lists(draw(event_lists(max_vectors=3, max_events=5)))
    bad = draw(st.sampled_from([None, None, "half", "read_cycle", "noise", "schedule", "chip"]
                               + (["columns"] if columns_param else [])))
    args = {"chip": (None, OK), "half": (draw(st.integers(0, 1)), OK), "schedule": (sched, OK),
            "noise": (draw(st.sampled_from([None, TrialNoise(11, 3)])), OK),
            "columns": (draw(st.integers(1, 6)), OK)}
    args["read_cycle"] = draw(read_cycles(sched)) if bad == "read_cycle" else \
        (int(sched.last_cycle().max(initial=0)) + draw(st.integers(0, 150)), OK)
    if bad == "half":
        args["half"] = draw(int_scalar(0, 1))
    elif bad == "noise":
        args["noise"] = (draw(st.sampled_from(NOT_NOISE)), BAD)
    elif bad == "schedule":
        args["schedule"] = (draw(st.sampled_from(NOT_A_SCHEDULE)), BAD)
    elif bad == "chip":
        args["chip"] = (draw(st.sampled_from(NOT_A_CHIP)), BAD)
    elif bad == "columns":
        args["columns"] = draw(st.one_of(int_scalar(1, 256, inside_hi=8), st.just((None, OK)),
                                         st.just((256, OK))))
    return sched, args


def assert_noise_unchanged(args, before):
    assert _noise_index(args) == before, "refused call advanced the noise counter"


def _noise_index(args):
    n = args["noise"][0]
    return n.next_index if isinstance(n, TrialNoise) else None


@cfg(50)
@given(case=integrate_args())
def test_integrate_fast(chip, case):
    sched, args = case
    if args["chip"][1] == OK:
        args["chip"] = (chip, OK)
    noise_before = _noise_index(args)
    kw = {k: v for k, (v, _) in args.items()}
    ok, r = check(lambda: integrate_fast(kw["chip"], kw["half"], kw["schedule"], kw["read_cycle"],
                                         noise=kw["noise"], columns=kw["columns"]),
                  {k: e for k, (_, e) in args.items()}, limit=None,
                  on_refusal=lambda: assert_noise_unchanged(args, noise_before))
    b = sched.num_vectors
    if not ok:
        return
    n = 256 if kw["columns"] is None else int(kw["columns"])
    assert_int_array(r.codes, np.uint8, (b, 256), 0, CADC_MAX)
    assert r.membrane_at_read_v.dtype == np.float64 and r.membrane_at_read_v.shape == (b, 256)
    assert np.all(np.isfinite(r.membrane_at_read_v[:, :n])), "integrated columns must have finite volts"
    assert np.all(r.codes[:, n:] == 0) and np.all(np.isnan(r.membrane_at_read_v[:, n:])), \
        "columns beyond `columns` must read code 0 and NaN volts"
    assert r.read_cycle.dtype == np.int64 and r.read_cycle.shape == (b,)
    assert np.array_equal(r.read_cycle, np.broadcast_to(np.asarray(kw["read_cycle"]).astype(np.int64), (b,)))
    if noise_before is not None:
        assert _noise_index(args) == noise_before + b, "noise counter must advance by the batch size"


@cfg(20)
@given(case=integrate_args(columns_param=False), data=st.data())
def test_integrate_trace(chip, case, data):
    sched, args = case
    if args["chip"][1] == OK:
        args["chip"] = (chip, OK)
    # Trace cost grows with read_cycle x substeps: keep valid reads short.
    rc = args["read_cycle"][0]
    if args["read_cycle"][1] != BAD and np.asarray(rc).dtype.kind in "iu" and np.max(rc, initial=0) > 400:
        return
    which = data.draw(st.sampled_from([None, "substeps_per_cycle", "record_every", "record"]))
    sub, e_sub = data.draw(int_scalar(1, 64, inside_hi=8)) if which == "substeps_per_cycle" \
        else (data.draw(st.sampled_from([1, 2, 8])), OK)
    rec_every, e_re = data.draw(int_scalar(1, None, inside_hi=64, none_ok=True)) \
        if which == "record_every" else (None, OK)
    record, e_rec = data.draw(bool_scalar()) if which == "record" else (True, OK)
    params = {k: e for k, (_, e) in args.items() if k != "columns"}
    params.update({"substeps_per_cycle": e_sub, "record_every": e_re, "record": e_rec})
    kw = {k: v for k, (v, _) in args.items()}
    noise_before = _noise_index(args)
    ok, r = check(lambda: integrate_trace(kw["chip"], kw["half"], kw["schedule"], kw["read_cycle"],
                                          noise=kw["noise"], substeps_per_cycle=sub,
                                          record_every=rec_every, record=record),
                  params, limit=None, on_refusal=lambda: assert_noise_unchanged(args, noise_before))
    if not ok:
        return
    b = sched.num_vectors
    assert_int_array(r.codes, np.uint8, (b, 256), 0, CADC_MAX)
    n_rec = len(r.times_s)
    assert r.membrane_v.shape == r.syn_exc_c.shape == r.syn_inh_c.shape == (b, n_rec, 256)
    assert (n_rec == 0) == (not record)
    if n_rec:
        assert r.times_s[0] == 0 and np.all(np.diff(r.times_s) > 0)


# ==================================================================================
# digital: paired_schedule, Accelerator
# ==================================================================================

@cfg(50)
@given(data=st.data())
def test_paired_schedule(data):
    b = data.draw(st.integers(0, 3), label="num_vectors")
    which = data.draw(st.sampled_from([None, "x_top", "x_bottom", "wait_between_events", "num_sends",
                                       "start_cycle"]))

    def inputs(name):
        if which == name:
            return data.draw(st.one_of(or_ragged(int_arrays((b, 128), 0, INPUT_MAX), b, 128),
                                       st.just((None, OK))), label=name)
        return data.draw(int_arrays((b, 128), 0, INPUT_MAX, wrong_shapes=False, dtypes=INT_TYPES[:4]))

    (xt, e_t), (xb, e_b) = inputs("x_top"), inputs("x_bottom")
    if xt is None and xb is None:
        e_t = e_b = BAD
    wait, e_w = data.draw(int_scalar(1, MAX_WAIT)) if which == "wait_between_events" else (5, OK)
    sends, e_s = data.draw(int_scalar(1, MAX_SENDS)) if which == "num_sends" else (2, OK)
    start, e_c = data.draw(int_scalar(0, MAX_CYCLE, inside_hi=MAX_CYCLE)) if which == "start_cycle" \
        else (0, OK)
    if e_c == OK and int(start) > MAX_CYCLE - EVENT_PHASE_MAX:
        e_c = ANY                                    # fine if the events still fit in the cycle range
    ok, p = check(lambda: paired_schedule(xt, xb, wait, sends, start),
                  {"x_top": e_t, "x_bottom": e_b, "wait_between_events": e_w, "num_sends": e_s,
                   "start_cycle": e_c})
    if not ok:
        return
    xs = [np.zeros((b, 128), np.int64) if x is None else np.asarray(x).astype(np.int64) for x in (xt, xb)]
    nnz = np.stack([np.count_nonzero(x, axis=1) for x in xs])
    w, ns = int(wait), int(sends)
    assert np.array_equal(p.slots_per_send, nnz.max(axis=0))
    assert np.array_equal(p.event_phase_cycles, nnz.max(axis=0) * w * ns)
    assert np.array_equal(p.half_phase_cycles, nnz * w * ns)
    for h, s in enumerate(p.halves):
        # Each half's schedule must pass the validating constructor (cycle range included).
        outcome(lambda: EventSchedule.from_arrays(s.offsets, s.driver, s.value, s.cycle), OK, [])
        for v in range(b):
            d, val, cyc = s.vector(v)
            drivers = np.nonzero(xs[h][v])[0]
            assert np.array_equal(d, np.tile(drivers, ns))
            assert np.array_equal(val, np.tile(xs[h][v, drivers], ns))
            assert np.array_equal(cyc, int(start) + np.arange(len(d)) * w)


ACC_ARGS = {
    "noise_seed": lambda: int_scalar(0, SEED_MAX, inside_hi=SEED_MAX, none_ok=True),
    "chip": lambda: st.sampled_from([(c, BAD) for c in NOT_A_CHIP[1:]] + [(Chip, BAD)]),
    "behavioural": lambda: st.sampled_from([(0.0015, BAD), ({"gain": 1, "sigma": 1}, BAD),
                                            ((0.0015, 2.0), BAD), ("x", BAD)]),
    "timing": lambda: st.sampled_from([(TimingParams(), OK), (None, OK), (3, BAD), ("fast", BAD),
                                       (PPUCostParams(), BAD), ({}, BAD)]),
    "ppu_costs": lambda: st.sampled_from([(PPUCostParams(), OK), (None, OK), (3, BAD), ("x", BAD),
                                          (TimingParams(), BAD), ({}, BAD)]),
}


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
@pytest.mark.parametrize("param", list(ACC_ARGS))
@cfg(20)
@given(data=st.data())
def test_accelerator_constructor(chip, fidelity, param, data):
    value, expect = data.draw(ACC_ARGS[param](), label=param)
    kw = {"chip": chip} if fidelity == "chip" else {"behavioural": BEHAVIOURAL}
    kw[param] = value
    ok, acc = outcome(lambda: Accelerator(**kw), expect, [param])
    if ok:
        assert acc.fidelity == fidelity
        # An accepted accelerator must run (an unusable one would fail later).
        y, rep = outcome(lambda: probe(acc), OK, [], limit=None)[1]
        assert_int_array(y, np.int64, (2, 3), OUT_MIN, OUT_MAX)


@cfg(30)
@given(gain=real_scalar(0.0, None, inside=(0.0, 1.0)), sigma=real_scalar(0.0, None, inside=(0.0, 10.0)))
def test_behavioural_params(gain, sigma):
    (g, e_g), (s, e_s) = gain, sigma
    ok, p = check(lambda: BehaviouralParams(g, s), {"gain": e_g, "sigma": e_s})
    if ok:
        assert (p.gain, p.sigma) == (g, s)


def ref_matmul(x, w, gain, num_sends):
    """Documented behavioural semantics without noise: per 128 x 256 tile
    ``clamp(round(gain * num_sends * x . W))`` (round half to even, written
    out), tiles of a row summed and clamped."""
    x = np.asarray(x, np.int64)
    single = x.ndim == 1
    x = x[None] if single else x
    w = np.asarray(w, np.int64)
    acc = np.zeros((x.shape[0], w.shape[1]), np.int64)
    scale = gain * num_sends
    for r in range(0, w.shape[0], ROWS):
        part = (x[:, r:r + ROWS] @ w[r:r + ROWS]).astype(np.float64)
        v = part * scale
        f = np.floor(v)
        r = f + (v - f > 0.5) + ((v - f == 0.5) & (np.mod(f, 2) == 1))
        acc += np.clip(r, OUT_MIN, OUT_MAX).astype(np.int64)
    out = np.clip(acc, OUT_MIN, OUT_MAX)
    return out[0] if single else out


@st.composite
def matmul_operands(draw, max_k, max_n, corrupt=None):
    """(x, e_x, w, e_w): x (B, K) or (K,) and w (K, N), valid in any integer dtype
    and layout; ``corrupt`` ("x", "w" or "shapes") spoils one thing: values and
    dtypes of one operand, or the shapes (mismatched K, wrong ranks, ragged lists)."""
    b, k, n = draw(st.integers(0, 3)), draw(st.integers(1, max_k)), draw(st.integers(0, max_n))
    xshape = (k,) if draw(st.integers(0, 5)) == 0 else (b, k)
    x, e_x = draw(int_arrays(xshape, 0, INPUT_MAX, wrong_shapes=False, pokes=corrupt == "x",
                             dtypes=ARRAY_DTYPES if corrupt == "x" else INT_TYPES))
    w, e_w = draw(int_arrays((k, n), -WEIGHT_MAX, WEIGHT_MAX, wrong_shapes=False, pokes=corrupt == "w",
                             dtypes=ARRAY_DTYPES if corrupt == "w" else INT_TYPES))
    if corrupt == "shapes":
        how = draw(st.sampled_from(["k+1", "k-1", "x3d", "x0d", "w1d", "w3d", "xragged", "wragged"]))
        if how in ("k+1", "k-1"):
            kw = k + 1 if how == "k+1" else k - 1
            w, e_w = np.zeros((kw, n), np.int64), BAD
            e_x = BAD                                 # inner dimensions differ: either may be named
        elif how == "x3d":
            x, e_x = np.zeros((1,) + np.shape(x), np.int64), BAD
        elif how == "x0d":
            x, e_x = np.int64(3), BAD
        elif how == "w1d":
            w, e_w = np.zeros(k, np.int64), BAD
        elif how == "w3d":
            w, e_w = np.zeros((1, k, n), np.int64), BAD
        elif how == "xragged":
            x, e_x = [[1] * k, [1] * (k + 1)], BAD
        else:
            w, e_w = [[1] * n] * max(k - 1, 1) + [[1] * (n + 1)], BAD
    return x, e_x, w, e_w


@cfg(60)
@given(ops=matmul_operands(300, 300), num_sends=st.integers(1, MAX_SENDS),
       wait=st.integers(1, MAX_WAIT), gain=st.sampled_from([0.0015, 0.01, 0.5, 1.0, 0.0]))
def test_matmul_behavioural_semantics(ops, num_sends, wait, gain):
    x, e_x, w, e_w = ops
    assume(e_x == e_w == OK)                          # e.g. an empty list has dtype float
    acc = Accelerator(behavioural=BehaviouralParams(gain, 0.0), noise_seed=None)
    y = outcome(lambda: acc.matmul(x, w, num_sends, wait), OK, [])[1]
    want = ref_matmul(x, w, gain, num_sends)
    assert_int_array(y, np.int64, want.shape, OUT_MIN, OUT_MAX)
    assert np.array_equal(y, want)


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
@cfg(50)
@given(data=st.data())
def test_matmul_contract(chip, fidelity, data):
    max_n = 4 if fidelity == "chip" else 300
    bad = data.draw(st.sampled_from([None, None, "x", "w", "shapes", "num_sends", "wait_between_events"]),
                    label="corrupted")
    x, e_x, w, e_w = data.draw(matmul_operands(140, max_n, corrupt=bad), label="x, w")
    sends, e_s = data.draw(int_scalar(1, MAX_SENDS, inside_hi=8), label="num_sends") \
        if bad == "num_sends" else (data.draw(st.integers(1, 8)), OK)
    wait, e_wt = data.draw(int_scalar(1, MAX_WAIT, inside_hi=20), label="wait_between_events") \
        if bad == "wait_between_events" else (data.draw(st.integers(1, 20)), OK)
    acc = make_acc(fidelity, chip)
    before = acc_state(acc)
    ok, y = check(lambda: acc.matmul(x, w, num_sends=sends, wait_between_events=wait),
                  {"x": e_x, "w": e_w, "num_sends": e_s, "wait_between_events": e_wt}, limit=None,
                  on_refusal=lambda: assert_untouched(acc, before, fidelity, chip))
    if not ok:
        return
    xs, ws = np.shape(np.asarray(x)), np.shape(np.asarray(w))
    shape = (ws[1],) if len(xs) == 1 else (xs[0], ws[1])
    assert_int_array(y, np.int64, shape, OUT_MIN, OUT_MAX)


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
@cfg(12)
@given(ops=matmul_operands(140, 3), cut=st.integers(0, 3))
def test_matmul_split_batch(chip, fidelity, ops, cut):
    """Documented: one call on a batch and consecutive calls on its slices give
    identical results (noise included)."""
    x, e_x, w, e_w = ops
    assume(e_x == e_w == OK)
    x = np.asarray(x).astype(np.int64)
    if x.ndim == 1:
        x = x[None]
    cut = min(cut, len(x))
    whole = make_acc(fidelity, chip).matmul(x, w, num_sends=3)
    acc = make_acc(fidelity, chip)
    parts = np.concatenate([acc.matmul(x[:cut], w, num_sends=3), acc.matmul(x[cut:], w, num_sends=3)])
    assert np.array_equal(whole, parts)


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
@cfg(6)
@given(sends=st.sampled_from([1, 16, MAX_SENDS]), wait=st.sampled_from([1, 100, MAX_WAIT]),
       value=st.integers(1, INPUT_MAX), batch=st.integers(1, 2))
def test_matmul_long_integrations(chip, fidelity, sends, wait, value, batch):
    """Documented-valid extremes: dense 128-row inputs, num_sends up to 64 and
    wait_between_events up to 255 (an event phase of up to 16.7 ms)."""
    x = np.full((batch, ROWS), value, np.int64)
    w = np.zeros((ROWS, 2), np.int64)
    w[:, 0], w[::3, 1] = 1, -2
    acc = make_acc(fidelity, chip)
    y = outcome(lambda: acc.matmul(x, w, num_sends=sends, wait_between_events=wait), OK, [],
                limit=None)[1]
    assert_int_array(y, np.int64, (batch, 2), OUT_MIN, OUT_MAX)


def test_matmul_longest_documented_call(chip):
    """The single longest documented-valid VMM, at both fidelities."""
    x = np.full((1, ROWS), INPUT_MAX, np.int64)
    w = np.full((ROWS, 1), WEIGHT_MAX, np.int64)
    for fidelity in ("chip", "behavioural"):
        acc = make_acc(fidelity, chip)
        y = outcome(lambda: acc.matmul(x, w, num_sends=MAX_SENDS, wait_between_events=MAX_WAIT),
                    OK, [], limit=None)[1]
        assert_int_array(y, np.int64, (1, 1), OUT_MIN, OUT_MAX)


def pair_values(lo):
    """(value, expectation) for stride / padding: an int or a pair of ints >= lo."""
    return st.one_of(
        int_scalar(lo, None, inside_hi=lo + 3),
        st.tuples(st.integers(lo, lo + 3), st.integers(lo, lo + 3)).map(lambda p: (p, OK)),
        st.lists(st.integers(lo, lo + 3), min_size=2, max_size=2).map(lambda p: (p, OK)),
        st.sampled_from([((lo,), BAD), ((lo, lo, lo), BAD), ((float(lo), lo), BAD), ((lo, None), BAD),
                         ("ab", BAD), ((lo - 1, lo), BAD), ((True, lo), BAD),
                         (np.array([lo, lo]), ANY), ((2**62, lo), ANY), (2**40, ANY)]))


def ref_conv2d(x, w, stride, padding, gain, num_sends):
    """Naive im2col (batch, row, column) x (channel, kernel row, kernel column)
    onto the reference matmul."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    (sh, sw), (ph, pw) = stride, padding
    bsz, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.zeros((bsz, c, h + 2 * ph, wd + 2 * pw), np.int64)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    cols = np.array([xp[b_, :, i * sh:i * sh + kh, j * sw:j * sw + kw].ravel()
                     for b_ in range(bsz) for i in range(ho) for j in range(wo)], np.int64)
    cols = cols.reshape(bsz * ho * wo, c * kh * kw)
    y = ref_matmul(cols, w.reshape(co, c * kh * kw).T, gain, num_sends)
    return y.reshape(bsz, ho, wo, co).transpose(0, 3, 1, 2)


def as_pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


@pytest.mark.parametrize("dims", [1, 2])
@cfg(50)
@given(data=st.data())
def test_conv_behavioural(dims, data):
    bsz, c, co = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    size = tuple(data.draw(st.integers(0, 6)) for _ in range(dims))
    ksize = tuple(data.draw(st.integers(0, 4)) for _ in range(dims))
    # Shapes are free; validity is decided from the shapes actually passed.
    bad = data.draw(st.sampled_from([None, None, "x", "w", "shapes", "stride", "padding"]),
                    label="corrupted")
    xshape, wshape = (bsz, c) + size, (co, c) + ksize
    if bad == "shapes":
        xshape, wshape = data.draw(st.sampled_from([((c,) + size, wshape), ((bsz, c + 1) + size, wshape),
                                                    (xshape, (c,) + ksize), (xshape + (1,), wshape)]))
    x, e_x = data.draw(int_arrays(xshape, 0, INPUT_MAX, wrong_shapes=False, pokes=bad == "x",
                                  dtypes=ARRAY_DTYPES if bad == "x" else INT_TYPES), label="x")
    w, e_w = data.draw(int_arrays(wshape, -WEIGHT_MAX, WEIGHT_MAX, wrong_shapes=False, pokes=bad == "w",
                                  dtypes=ARRAY_DTYPES if bad == "w" else INT_TYPES), label="w")
    if dims == 2:
        stride, e_st = data.draw(pair_values(1), label="stride") if bad == "stride" \
            else (data.draw(st.integers(1, 3)), OK)
        pad, e_p = data.draw(pair_values(0), label="padding") if bad == "padding" \
            else (data.draw(st.integers(0, 2)), OK)
    else:
        stride, e_st = data.draw(int_scalar(1, None, inside_hi=4), label="stride") if bad == "stride" \
            else (data.draw(st.integers(1, 3)), OK)
        pad, e_p = data.draw(int_scalar(0, None, inside_hi=3), label="padding") if bad == "padding" \
            else (data.draw(st.integers(0, 2)), OK)
    if len(xshape) != dims + 2 or len(wshape) != dims + 2 or xshape[1] != wshape[1]:
        e_x = e_w = BAD
    elif combine(e_x, e_w) == OK:
        # Degenerate sizes (no channels, no outputs, an empty kernel) are not settled;
        # a kernel larger than the padded input must be refused.
        if c == 0 or co == 0 or 0 in ksize:
            e_x = e_w = ANY
        elif e_p == OK:
            p = as_pair(pad) if dims == 2 else (0, int(pad))
            sz = size if dims == 2 else (1,) + size
            ks = ksize if dims == 2 else (1,) + ksize
            if any(s + 2 * q < k for s, q, k in zip(sz, p, ks)):
                e_x = e_w = BAD
    acc = Accelerator(behavioural=BehaviouralParams(0.01, 0.0), noise_seed=None)
    before = acc_state(acc)
    call = (lambda: acc.conv2d(x, w, stride=stride, padding=pad, num_sends=2)) if dims == 2 else \
        (lambda: acc.conv1d(x, w, stride=stride, padding=pad, num_sends=2))
    ok, y = check(call, {"x": e_x, ("w", "kernel"): e_w, "stride": e_st, "padding": e_p},
                  on_refusal=lambda: assert_same(acc_state(acc), before, "refused call changed the ledger"))
    if not ok:
        return
    if e_st == ANY or e_p == ANY:
        assert y.dtype == np.int64 and y.ndim == dims + 2
        return                                        # huge strides / paddings: no reference
    xa, wa = np.asarray(x).astype(np.int64), np.asarray(w).astype(np.int64)
    if dims == 1:
        want = ref_conv2d(xa[:, :, None], wa[:, :, None], (1, int(stride)), (0, int(pad)), 0.01, 2)[:, :, 0]
    else:
        want = ref_conv2d(xa, wa, as_pair(stride), as_pair(pad), 0.01, 2)
    assert_int_array(y, np.int64, want.shape, OUT_MIN, OUT_MAX)
    assert np.array_equal(y, want)


@st.composite
def small_shapes(draw):
    return tuple(draw(st.lists(st.integers(0, 4), max_size=3)))


@cfg(40)
@given(data=st.data())
def test_accelerator_elementwise(data):
    """relu / converting_relu / add on the accelerator: PPU results in their
    dtype and range, cycles counted only for calls that succeed."""
    op = data.draw(st.sampled_from(["relu", "converting_relu", "add"]))
    shape = data.draw(small_shapes())
    a, e_a = data.draw(or_ragged(int_arrays(shape, OUT_MIN, OUT_MAX, wrong_shapes=False), 2, 3), label="a")
    if isinstance(a, list) and e_a == BAD:
        shape = ()                                    # ragged: no shape (the call must refuse)
    acc = Accelerator(behavioural=BEHAVIOURAL)
    before = acc_state(acc)
    untouched = lambda: assert_same(acc_state(acc), before, "refused call counted PPU cycles")  # noqa
    if op == "relu":
        ok, y = check(lambda: acc.relu(a), {"x": e_a}, on_refusal=untouched)
        want = lambda: np.maximum(np.asarray(a).astype(np.int64), 0)   # noqa: E731
        dtype, lo, hi = np.int8, 0, OUT_MAX
    elif op == "converting_relu":
        shift, e_s = data.draw(int_scalar(0, 7), label="shift")
        ok, y = check(lambda: acc.converting_relu(a, shift), {"x": e_a, "shift": e_s},
                      on_refusal=untouched)
        want = lambda: np.minimum(np.maximum(np.asarray(a).astype(np.int64), 0) >> int(shift), 31)  # noqa
        dtype, lo, hi = np.uint8, 0, INPUT_MAX
    else:
        bshape = data.draw(st.sampled_from([shape, shape[1:], (1,) * len(shape), shape + (2,)]))
        b, e_b = data.draw(int_arrays(bshape, OUT_MIN, OUT_MAX, wrong_shapes=False), label="b")
        try:
            np.broadcast_shapes(np.shape(np.asarray(a, dtype=object)), np.shape(np.asarray(b, dtype=object)))
        except ValueError:
            e_a = e_b = BAD                           # shapes that do not broadcast
        ok, y = check(lambda: acc.add(a, b), {"a": e_a, "b": e_b}, on_refusal=untouched)
        want = lambda: np.clip(np.asarray(a).astype(np.int64) + np.asarray(b).astype(np.int64),  # noqa
                               OUT_MIN, OUT_MAX)
        dtype, lo, hi = np.int8, OUT_MIN, OUT_MAX
    if not ok:
        return
    w = want()
    assert_int_array(y, dtype, w.shape, lo, hi)
    assert np.array_equal(y, w)


# ==================================================================================
# digital: PPU lane helpers and the PPU cost model
# ==================================================================================

BITS = st.sampled_from([(8, OK), (16, OK), (np.int64(8), OK), (32, BAD), (0, BAD), (8.0, BAD),
                        ("8", BAD), (True, BAD), (None, BAD)])
SIGNED = st.sampled_from([(True, OK), (False, OK), (np.bool_(True), OK), (1, BAD), ("yes", BAD),
                          (None, BAD)])


def lane(bits, signed):
    bits = int(bits)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1), \
        {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16, (16, False): np.uint16}[
            (bits, bool(signed))]


@cfg(50)
@given(data=st.data())
def test_ppu_add_sat(data):
    bits, e_bits = data.draw(st.one_of(st.just((8, OK)), BITS), label="bits")
    signed, e_sg = data.draw(st.one_of(st.just((True, OK)), SIGNED), label="signed")
    (lo, hi), _ = lane(bits, signed) if combine(e_bits, e_sg) != BAD else ((-128, 127), None)
    shape = data.draw(small_shapes())
    a, e_a = data.draw(int_arrays(shape, lo, hi, wrong_shapes=False), label="a")
    b, e_b = data.draw(int_arrays(shape[-1:], lo, hi, wrong_shapes=False), label="b")
    ok, y = check(lambda: add_sat(a, b, bits, signed),
                  {"a": e_a, "b": e_b, "bits": e_bits, "signed": e_sg})
    if ok:
        (lo, hi), dtype = lane(bits, signed)
        want = np.clip(np.asarray(a).astype(np.int64) + np.asarray(b).astype(np.int64), lo, hi)
        assert_int_array(y, dtype, want.shape, lo, hi)
        assert np.array_equal(y, want)


@cfg(40)
@given(data=st.data())
def test_ppu_relu(data):
    bits, e_bits = data.draw(st.one_of(st.just((8, OK)), BITS), label="bits")
    (lo, hi), _ = lane(bits, True) if e_bits != BAD else ((-128, 127), None)
    a, e_a = data.draw(int_arrays(data.draw(small_shapes()), lo, hi, wrong_shapes=False), label="a")
    ok, y = check(lambda: relu(a, bits), {"a": e_a, "bits": e_bits})
    if ok:
        (lo, hi), dtype = lane(bits, True)
        want = np.maximum(np.asarray(a).astype(np.int64), 0)
        assert_int_array(y, dtype, want.shape, 0, hi)
        assert np.array_equal(y, want)


@cfg(40)
@given(data=st.data())
def test_ppu_converting_relu(data):
    a, e_a = data.draw(int_arrays(data.draw(small_shapes()), OUT_MIN, OUT_MAX, wrong_shapes=False),
                       label="a")
    shift, e_s = data.draw(int_scalar(0, 7), label="shift")
    ok, y = check(lambda: converting_relu(a, shift), {"a": e_a, "shift": e_s})
    if ok:
        want = np.minimum(np.maximum(np.asarray(a).astype(np.int64), 0) >> int(shift), INPUT_MAX)
        assert_int_array(y, np.uint8, want.shape, 0, INPUT_MAX)
        assert np.array_equal(y, want)


@cfg(30)
@given(half=int_scalar(0, 1), params=st.sampled_from([(None, OK), (PPUCostParams(), OK), (3, BAD),
                                                      (TimingParams(), BAD), ("x", BAD)]))
def test_ppu_constructor(half, params):
    (h, e_h), (p, e_p) = half, params
    ok, ppu = check(lambda: PPU(h, p), {"half": e_h, "params": e_p})
    if ok:
        assert ppu.half == int(h) and ppu.cycles == 0 and ppu.stream_seconds == 0.0


def ppu_state(ppu):
    return ppu.cycles, ppu.stream_seconds


@cfg(60)
@given(data=st.data())
def test_ppu_counting_methods(data):
    """Counting methods: integers >= 0 (bools for flags); a refused call counts nothing."""
    ppu = PPU(0)
    method = data.draw(st.sampled_from(["vector_ops", "write_weight_rows", "stream", "count_postprocess"]))
    v, e = data.draw(int_scalar(0, None, inside_hi=10**6), label="value")
    before = ppu_state(ppu)
    untouched = lambda: assert_same(ppu_state(ppu), before, "refused call counted cycles or link time")  # noqa
    if method == "stream":
        v2, e2 = data.draw(int_scalar(0, None, inside_hi=10**6), label="bytes_out")
        ok, r = check(lambda: ppu.stream(v, v2), {"bytes_in": e, "bytes_out": e2}, on_refusal=untouched)
    elif method == "count_postprocess":
        flag, e_f = data.draw(st.one_of(st.just((False, OK)), bool_scalar()), label="relu")
        ok, r = check(lambda: ppu.count_postprocess(v, flag), {"batch": e, "relu": e_f},
                      on_refusal=untouched)
    else:
        name = {"vector_ops": "n", "write_weight_rows": "num_rows"}[method]
        ok, r = check(lambda: getattr(ppu, method)(v), {name: e}, on_refusal=untouched)
    if not ok:
        return
    assert ppu.cycles >= before[0] and ppu.stream_seconds >= before[1]
    assert math.isfinite(ppu.stream_seconds)


@cfg(50)
@given(data=st.data())
def test_ppu_vmm_postprocess(data):
    b = data.draw(st.sampled_from([None, 0, 1, 3]))
    shape = (256,) if b is None else (b, 256)
    read, e_r = data.draw(int_arrays(shape, 0, CADC_MAX), label="read_codes")
    base, e_b = data.draw(int_arrays(shape, 0, CADC_MAX, wrong_shapes=False), label="baseline_codes")
    shift, e_s = data.draw(st.one_of(st.just((None, OK)), int_scalar(0, 7)), label="relu_shift")
    if np.shape(np.asarray(read)) != shape:
        e_b = BAD                                     # the baseline no longer matches the read shape
    ppu = PPU(1)
    before = ppu_state(ppu)
    ok, y = check(lambda: ppu.vmm_postprocess(read, base, shift),
                  {"read_codes": e_r, "baseline_codes": e_b, "relu_shift": e_s},
                  on_refusal=lambda: assert_same(ppu_state(ppu), before, "refused call counted cycles"))
    if not ok:
        return
    d = np.clip(np.asarray(read).astype(np.int64) - np.asarray(base).astype(np.int64), OUT_MIN, OUT_MAX)
    if shift is None:
        assert_int_array(y, np.int8, shape, OUT_MIN, OUT_MAX)
        assert np.array_equal(y, d)
    else:
        assert_int_array(y, np.uint8, shape, 0, INPUT_MAX)
        assert np.array_equal(y, np.minimum(np.maximum(d, 0) >> int(shift), INPUT_MAX))
    if e_r == OK:
        ok, c = outcome(lambda: ppu.read_cadc(read), OK, [])
        assert_int_array(c, np.uint8, shape, 0, CADC_MAX)


# ==================================================================================
# digital: measure_behaviour (refusals only; a full measurement is slow)
# ==================================================================================

MEASURE_ARGS = {"num_vectors": lambda: int_scalar(4, None, inside_hi=4),
                "repeats": lambda: int_scalar(2, None, inside_hi=2),
                "ramp_steps": lambda: int_scalar(3, None, inside_hi=3),
                "num_sends": lambda: int_scalar(1, MAX_SENDS, inside_hi=1),
                "wait_between_events": lambda: int_scalar(1, MAX_WAIT, inside_hi=5),
                "noise_seed": lambda: int_scalar(0, SEED_MAX, inside_hi=5, none_ok=True),
                "seed": seed_scalar}


@pytest.mark.parametrize("param", list(MEASURE_ARGS))
@cfg(12)
@given(data=st.data())
def test_measure_behaviour_arguments(param, data):
    value, expect = data.draw(MEASURE_ARGS[param](), label=param)
    if expect == OK:
        return                  # valid runs cost ~0.5 s each; refusals are what is checked here
    c = Chip(2)
    version = c.config.version
    kw = {"num_vectors": 4, "repeats": 2, "ramp_steps": 3, param: value}
    outcome(lambda: measure_behaviour(c, **kw), expect, [param], limit=None,
            on_refusal=lambda: assert_same(c.config.version, version,
                                           "refused measurement changed the chip's configuration"))


# ==================================================================================
# training: Linear, Conv2d, ConvertingReLU, MnistNet, Adam
# ==================================================================================

POS = dict(lo=0.0, lo_open=True, inside=(1e-4, 100.0))
# The documented ranges of the gain-aware initialisation (layers.py): gain in
# LSB per unit of x*w per send, input rms and target spread in LSB.
INIT_RANGES = {"gain": (1e-6, 1.0), "input_rms": (1e-3, 31.0), "target_std": (1e-3, 508.0)}
LINEAR_ARGS = {
    "in_features": lambda: int_scalar(1, 1 << 20, inside_hi=64),
    "out_features": lambda: int_scalar(1, 1 << 20, inside_hi=64),
    "num_sends": lambda: int_scalar(1, MAX_SENDS, none_ok=True),
    "wait_between_events": lambda: int_scalar(1, MAX_WAIT),
    "gain": lambda: real_scalar(*INIT_RANGES["gain"], inside=(1e-4, 0.1)),
    "input_rms": lambda: real_scalar(*INIT_RANGES["input_rms"], inside=(0.01, 20.0)),
    "target_std": lambda: real_scalar(*INIT_RANGES["target_std"], inside=(0.01, 100.0)),
    "rng": lambda: st.sampled_from([(None, OK), (np.random.default_rng(1), OK), (3, BAD),
                                    (np.random.RandomState(0), BAD), ("rng", BAD)]),
}


@pytest.mark.parametrize("param", list(LINEAR_ARGS))
@cfg(40)
@given(data=st.data())
def test_linear_constructor(param, data):
    value, expect = data.draw(LINEAR_ARGS[param](), label=param)
    kw = {"in_features": 4, "out_features": 3, param: value}
    ok, layer = outcome(lambda: Linear(**kw), expect, [param])
    if ok:
        assert layer.weight.shape == (layer.in_features, layer.out_features)
        assert np.all(np.abs(layer.weight) <= WEIGHT_MAX) and np.all(np.isfinite(layer.weight))
        assert 1 <= layer.num_sends <= MAX_SENDS


MODES_AND_ACCS = [("float", None, OK)] * 3 + [("behavioural", "acc", OK)] * 3 + [("chip", "acc", BAD),
                  ("behavioural", None, BAD), ("behavioural", 3, BAD), ("FLOAT", None, BAD),
                  (None, None, BAD), (3, None, BAD)]


@cfg(50)
@given(data=st.data())
def test_linear_forward_backward(data):
    layer = Linear(5, 3, num_sends=2, rng=np.random.default_rng(0))
    mode, acc, e_mode = data.draw(st.sampled_from(MODES_AND_ACCS), label="mode")
    if acc == "acc":
        acc = Accelerator(behavioural=BEHAVIOURAL, noise_seed=1)
    b = data.draw(st.integers(0, 3))
    x, e_x = data.draw(or_ragged(int_arrays((b, 5), 0, INPUT_MAX), b, 5), label="x")
    if mode == "float" and e_x != OK:
        e_x = classify_real_array(x, (b, 5))          # float mode takes any real numbers
    names = {("mode", "accelerator"): e_mode, ("x", "input"): e_x}
    ok, y = check(lambda: layer.forward(x, mode, acc), names)
    if not ok:
        return
    if mode == "float":
        assert y.dtype == np.float64 and y.shape == (b, 3)
    else:
        assert_int_array(y, np.int64, (b, 3), OUT_MIN, OUT_MAX)
    g, _ = data.draw(int_arrays((b, 3), -100, 100, dtypes=INT_TYPES[:4] + FLOAT_TYPES + [np.str_]),
                     label="grad")
    e_g = classify_real_array(g, (b, 3))
    ok, gx = outcome(lambda: layer.backward(g), e_g, ["grad"])
    if ok:
        assert gx.shape == (b, 5) and gx.dtype == np.float64
        assert layer.grad_weight.shape == (5, 3)


CONV_ARGS = {
    "in_channels": lambda: int_scalar(1, 1 << 16, inside_hi=4),
    "out_channels": lambda: int_scalar(1, 1 << 16, inside_hi=4),
    "kernel_size": lambda: pair_values(1),
    "stride": lambda: pair_values(1),
    "padding": lambda: pair_values(0),
    "num_sends": lambda: int_scalar(1, MAX_SENDS, none_ok=True),
    "gain": lambda: real_scalar(*INIT_RANGES["gain"], inside=(1e-4, 0.1)),
}


@pytest.mark.parametrize("param", list(CONV_ARGS))
@cfg(30)
@given(data=st.data())
def test_conv2d_layer(param, data):
    value, expect = data.draw(CONV_ARGS[param](), label=param)
    if param in ("kernel_size", "stride", "padding") and expect == ANY:
        return                                        # huge pairs: allocation, not validation
    kw = {"in_channels": 2, "out_channels": 3, "kernel_size": 2, param: value}
    ok, layer = outcome(lambda: Conv2d(**kw), expect, [param])
    if not ok or layer.weight.size > 10_000:
        return                                        # forward passes of huge layers are slow
    assert layer.weight.shape == (layer.out_channels, layer.in_channels) + layer.kernel_size
    kh, kw_ = layer.kernel_size
    h, w = kh + 2, kw_ + 1
    x = np.random.default_rng(0).integers(0, 32, (2, layer.in_channels, h, w))
    ho, wo = layer.output_shape(h, w)
    y = outcome(lambda: layer.forward(x, "float"), OK, [])[1]
    assert y.shape == (2, layer.out_channels, ho, wo) and y.dtype == np.float64
    acc = Accelerator(behavioural=BEHAVIOURAL, noise_seed=2)
    y = outcome(lambda: layer.forward(x, "behavioural", acc), OK, [])[1]
    assert_int_array(y, np.int64, (2, layer.out_channels, ho, wo), OUT_MIN, OUT_MAX)
    g = outcome(lambda: layer.backward(np.ones(y.shape)), OK, [])[1]
    assert g.shape == x.shape


@cfg(50)
@given(data=st.data())
def test_converting_relu_layer(data):
    shift, e_s = data.draw(int_scalar(0, 7), label="shift")
    quantise, e_q = data.draw(st.one_of(st.just((False, OK)), bool_scalar()), label="quantise")
    ok, layer = check(lambda: ConvertingReLU(shift, quantise), {"shift": e_s, "quantise": e_q})
    if not ok:
        return
    mode = data.draw(st.sampled_from(["float", "behavioural"]))
    acc = Accelerator(behavioural=BEHAVIOURAL) if mode == "behavioural" else None
    y, e_y = data.draw(int_arrays(data.draw(small_shapes()), OUT_MIN, OUT_MAX, wrong_shapes=False),
                       label="y")
    if mode == "float":
        # Float mode takes any real numbers, but NaN cannot give an output in 0..31.
        e_y = classify_real_array(y, np.shape(np.asarray(y, dtype=object)))
        a = np.asarray(y)
        if a.dtype.kind == "f" and np.isnan(a).any():
            e_y = BAD
    ok, out = outcome(lambda: layer.forward(y, mode, acc), e_y, ["y"])
    if ok:
        out = np.asarray(out)
        assert out.shape == np.shape(np.asarray(y))
        if out.size:
            assert 0 <= out.min() and out.max() <= INPUT_MAX, f"output {out.min()}..{out.max()} outside 0..31"
        g = layer.backward(np.ones(out.shape))
        assert g.shape == out.shape and np.all(np.isfinite(g))


def triple(inner):
    """(value, expectation) for a per-layer argument: one value or three (a
    single None is not settled: the documentation speaks of None entries)."""
    single = inner.map(lambda p: (p[0], ANY) if p[0] is None else p)
    return st.one_of(single, st.tuples(inner, inner, inner).map(
        lambda t: (tuple(v for v, _ in t), combine(*(e for _, e in t)))),
        st.sampled_from([((5, 5), BAD), ((5, 5, 5, 5), BAD), ("555", BAD), ({}, BAD)]))


MNIST_ARGS = {
    "gain": lambda: real_scalar(*INIT_RANGES["gain"], inside=(1e-4, 0.1)),
    "seed": seed_scalar,
    "num_sends": lambda: triple(int_scalar(1, MAX_SENDS, none_ok=True)),
    "wait_between_events": lambda: triple(int_scalar(1, MAX_WAIT)),
    "shifts": lambda: st.one_of(st.tuples(int_scalar(0, 7), int_scalar(0, 7)).map(
        lambda t: ((t[0][0], t[1][0]), combine(t[0][1], t[1][1]))),
        st.sampled_from([(1, BAD), ((1,), BAD), ((1, 1, 1), BAD), ("11", BAD)])),
    "temperature": lambda: real_scalar(lo=0.0, lo_open=True, inside=(1e-3, 10.0)),
    "relu_quantise": bool_scalar,
    "clip_logits": bool_scalar,
}


@pytest.mark.parametrize("param", list(MNIST_ARGS))
@cfg(15)
@given(data=st.data())
def test_mnist_net(param, data):
    value, expect = data.draw(MNIST_ARGS[param](), label=param)
    ok, net = outcome(lambda: MnistNet(**{param: value}), expect, [param])
    if not ok:
        return
    images = np.random.default_rng(1).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    logits = outcome(lambda: net.forward(images), OK, [])[1]
    assert logits.shape == (2, 10) and logits.dtype == np.float64 and np.all(np.isfinite(logits))


@cfg(40)
@given(data=st.data())
def test_mnist_images(data):
    net = _mnist_net()
    b = data.draw(st.integers(0, 2))
    shape = data.draw(st.sampled_from([(b, 28, 28), (b, 1, 28, 28), (b, 28), (28, 28), (b, 2, 28, 28),
                                       (b, 28, 27), ()]))
    images, e = data.draw(int_arrays(shape, 0, 255, wrong_shapes=False), label="images")
    if shape not in ((b, 28, 28), (b, 1, 28, 28)):
        e = BAD
    ok, logits = outcome(lambda: net.forward(images), e, ["images"])
    if ok:
        assert logits.shape == (b, 10) and np.all(np.isfinite(logits))


_NET = []


def _mnist_net():
    if not _NET:
        _NET.append(MnistNet(seed=0))
    return _NET[0]


ADAM_ARGS = {"lr": lambda: real_scalar(lo=0.0, lo_open=True, inside=(1e-6, 10.0)),
             "eps": lambda: real_scalar(lo=0.0, lo_open=True, inside=(1e-12, 1.0)),
             "betas": lambda: st.one_of(
                 st.tuples(real_scalar(0.0, 1.0, hi_open=True), real_scalar(0.0, 1.0, hi_open=True)).map(
                     lambda t: ((t[0][0], t[1][0]), combine(t[0][1], t[1][1]))),
                 st.sampled_from([(0.9, BAD), ((0.9,), BAD), ((0.9, 0.9, 0.9), BAD), ("ab", BAD)]))}


@pytest.mark.parametrize("param", list(ADAM_ARGS))
@cfg(40)
@given(data=st.data())
def test_adam_constructor(param, data):
    value, expect = data.draw(ADAM_ARGS[param](), label=param)
    p = np.zeros(3)
    ok, opt = outcome(lambda: Adam([p], **{param: value}), expect, [param])
    if ok:
        opt.step([np.ones(3)])
        assert np.all(np.isfinite(p)) and opt.t == 1


@cfg(40)
@given(data=st.data())
def test_adam_step(data):
    params = [np.zeros((2, 3)), np.ones(4)]
    opt = Adam(params, lr=0.1)
    opt.step([np.ones((2, 3)), np.ones(4)])
    before = ([p.copy() for p in params], opt.t, [m.copy() for m in opt.m], [v.copy() for v in opt.v])
    g0, _ = data.draw(int_arrays((2, 3), -5, 5, dtypes=INT_TYPES[:4] + FLOAT_TYPES
                                 + [np.str_, np.object_, np.complex128]), label="grads[0]")
    e0 = classify_real_array(g0, (2, 3))
    def untouched():
        assert opt.t == before[1] and all(np.array_equal(p, q) for p, q in zip(params, before[0])), \
            "refused step changed the parameters or the step count"
        assert all(np.array_equal(m, q) for m, q in zip(opt.m, before[2])), \
            "refused step changed the moment estimates"

    ok, _ = outcome(lambda: opt.step([g0, np.ones(4)]), e0, ["grads", "gradient"], on_refusal=untouched)
    if ok:
        assert opt.t == 2 and all(np.all(np.isfinite(p)) for p in params)


# ==================================================================================
# calibration: calibrate and CalibrationTarget
# ==================================================================================

class _Started(Exception):
    """Raised from the progress callback: calibrate accepted its arguments."""


def _stop(_name):
    raise _Started


CAL_ARGS = {
    "noise_seed": lambda: int_scalar(0, SEED_MAX, inside_hi=5),
    "target": lambda: st.sampled_from([(None, OK), (CalibrationTarget(), OK), (3, BAD), ("x", BAD),
                                       ({}, BAD)]),
    "chip": lambda: st.sampled_from([(c, BAD) for c in NOT_A_CHIP]),
    "progress": lambda: st.sampled_from([(3, BAD), ("print", BAD), (True, BAD)]),
}


@pytest.mark.parametrize("param", list(CAL_ARGS))
@cfg(20)
@given(data=st.data())
def test_calibrate_arguments(chip, param, data):
    """A calibration takes minutes, so valid arguments stop at the first progress
    call; refusals must come before any step runs and leave the chip alone."""
    value, expect = data.draw(CAL_ARGS[param](), label=param)
    kw = {"chip": chip, "progress": _stop, param: value}
    version = chip.config.version
    try:
        ok, _ = outcome(lambda: calibrate(**kw), expect, [param],
                        on_refusal=lambda: assert_same(chip.config.version, version,
                                                       "refused calibration changed the configuration"))
    except _Started:
        assert expect != BAD, f"invalid {param}={value!r} accepted: calibration started"
        return
    assert ok is False, "calibrate returned without calling progress"


TARGET_ARGS = {
    "cadc_read_range": lambda: st.one_of(
        st.tuples(st.integers(0, 119), st.integers(121, CADC_MAX)).map(lambda t: (t, OK)),
        st.tuples(int_scalar(0, CADC_MAX), int_scalar(0, CADC_MAX)).map(
            lambda t: ((t[0][0], t[1][0]), combine(t[0][1], t[1][1]) if combine(t[0][1], t[1][1]) != OK
                       else (OK if int(t[0][0]) < int(t[1][0]) <= CADC_MAX and int(t[0][0]) <= 120 <= int(t[1][0])
                             else BAD))),
        st.sampled_from([((20,), BAD), ((20, 120, 220), BAD), ("ab", BAD), (None, BAD), (20, BAD)])),
    "cadc_reference_v": lambda: st.one_of(
        st.tuples(st.floats(0.0, 0.7), st.floats(0.8, 1.6)).map(lambda t: (t, OK)),
        st.tuples(real_scalar(0.0, 1.6), real_scalar(0.0, 1.6)).map(
            lambda t: ((t[0][0], t[1][0]), combine(t[0][1], t[1][1]) if combine(t[0][1], t[1][1]) != OK
                       else (OK if float(t[0][0]) < float(t[1][0]) else BAD))),
        st.sampled_from([((0.2,), BAD), ("ab", BAD), (None, BAD)])),
    "resting_read": lambda: real_scalar(20.0, 220.0),
    "test_value": lambda: int_scalar(1, INPUT_MAX),
    "test_weight": lambda: int_scalar(1, WEIGHT_MAX),
    # An amplitude above the 255 codes of the CADC cannot be met: not settled.
    "neuron_amplitude_lsb": lambda: real_scalar(lo=0.0, lo_open=True, inside=(1.0, 100.0), none_ok=True).map(
        lambda p: (p[0], ANY) if p[1] == OK and p[0] is not None and float(p[0]) > CADC_MAX else p),
}


# resting_read must lie within cadc_read_range: a refusal of either may name both.
TARGET_NAMES = {"cadc_read_range": ["cadc_read_range", "resting_read"],
                "resting_read": ["resting_read", "cadc_read_range"]}


@pytest.mark.parametrize("param", list(TARGET_ARGS))
@cfg(50)
@given(data=st.data())
def test_calibration_target(param, data):
    value, expect = data.draw(TARGET_ARGS[param](), label=param)
    ok, t = outcome(lambda: CalibrationTarget(**{param: value}), expect,
                    TARGET_NAMES.get(param, [param]))
    if ok:
        # Every accepted target must name itself (the calibration file name uses it).
        tid = outcome(lambda: t.target_id, OK, [])[1]
        assert isinstance(tid, str) and re.fullmatch(r"[0-9a-f]{10}", tid)


# ==================================================================================
# Edge values of scalar parameters, enumerated (hypothesis draws them only now
# and then): the bounds, one step beyond, the float neighbours of the bounds,
# the tiniest and largest floats, NaN, infinities, bools, strings and None.
# ==================================================================================

def int_edges(lo, hi):
    out = [lo, lo - 1, np.int64(lo), float(lo), lo + 0.5, float("nan"), float("inf"), True, False,
           None, str(lo), np.array(lo), lo - 2**64]
    if hi is not None:
        out += [hi, hi + 1, np.uint64(hi) if hi >= 0 else np.int64(hi), 2**64 + hi]
    return out


def real_edges(lo, hi):
    out = [5e-324, -5e-324, 1e300, -1e300, float("nan"), float("inf"), -float("inf"), True,
           np.bool_(False), None, "1", 1 + 0j]
    for e in (lo, hi):
        if e is not None:
            out += [e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), np.float32(e), int(e)]
    return out


def _edge_cases():
    """(id, build(value), values, classify(value), names)."""
    cases = []

    def ints(label, build, name, lo, hi, none_ok=False, soft_hi=None):
        def cls(v):
            e = classify_int(v, lo, hi, none_ok)
            return ANY if e == OK and soft_hi is not None and v is not None and int(v) > soft_hi else e
        cases.append((f"{label}:{name}", build, int_edges(lo, hi) + ([None] if none_ok else []), cls,
                      [name]))

    def reals(label, build, name, lo, hi=None, lo_open=False, hi_open=False, soft_hi=None, none_ok=False):
        def cls(v):
            e = classify_real(v, lo, hi, lo_open, hi_open, none_ok)
            return ANY if e == OK and soft_hi is not None and v is not None and float(v) > soft_hi else e
        cases.append((f"{label}:{name}", build, real_edges(lo, hi), cls, [name]))

    ints("Chip", lambda v: Chip(v), "seed", 0, None, soft_hi=SEED_MAX)
    ints("TrialNoise", lambda v: TrialNoise(v), "seed", 0, SEED_MAX)
    ints("TrialNoise", lambda v: TrialNoise(0, v), "start_index", 0, 2**63 - 1)
    ints("Accelerator", lambda v: Accelerator(behavioural=BEHAVIOURAL, noise_seed=v), "noise_seed", 0,
         SEED_MAX, none_ok=True)
    for cls_, field, (lo, lo_open, hi, hi_open) in REAL_FIELDS:
        reals(cls_.__name__, lambda v, c=cls_, f=field: _make_params(c, **{f: v}), field, lo, hi,
              lo_open, hi_open, soft_hi=SOFT_MAX.get(field))
    for field in PPU_INT_FIELDS:
        ints("PPUCostParams", lambda v, f=field: PPUCostParams(**{f: v}), field, 0,
             16 * 1024 - 1 if field == "reserved_bytes" else None)
    reals("MismatchParams.scaled", lambda v: MismatchParams().scaled(v), "factor", 0.0)
    acc_x, acc_w = np.ones((1, 3), np.int64), np.ones((3, 2), np.int64)
    ints("matmul", lambda v: Accelerator(behavioural=BEHAVIOURAL).matmul(acc_x, acc_w, num_sends=v),
         "num_sends", 1, MAX_SENDS)
    ints("matmul", lambda v: Accelerator(behavioural=BEHAVIOURAL).matmul(acc_x, acc_w, wait_between_events=v),
         "wait_between_events", 1, MAX_WAIT)
    x1 = np.zeros((1, 128), np.int64)
    x1[0, :2] = 3
    ints("paired_schedule", lambda v: paired_schedule(x1, None, num_sends=v), "num_sends", 1, MAX_SENDS)
    ints("paired_schedule", lambda v: paired_schedule(x1, None, wait_between_events=v),
         "wait_between_events", 1, MAX_WAIT)
    ints("PPU", lambda v: PPU(0).vector_ops(v), "n", 0, None)
    ints("PPU", lambda v: PPU(0).write_weight_rows(v), "num_rows", 0, None)
    ints("PPU", lambda v: PPU(0).stream(v, 0), "bytes_in", 0, None)
    ints("PPU", lambda v: PPU(0).count_postprocess(v), "batch", 0, None)
    ints("converting_relu", lambda v: converting_relu(np.arange(-3, 4), v), "shift", 0, 7)
    for name, lo, hi in (("in_features", 1, 1 << 20), ("out_features", 1, 1 << 20),
                         ("num_sends", 1, MAX_SENDS), ("wait_between_events", 1, MAX_WAIT)):
        ints("Linear", lambda v, n=name: Linear(**{"in_features": 4, "out_features": 3, n: v}), name, lo, hi,
             none_ok=name == "num_sends")
    for name in ("gain", "input_rms", "target_std"):
        reals("Linear", lambda v, n=name: Linear(4, 3, **{n: v}), name, *INIT_RANGES[name])
    for name, lo, hi in (("in_channels", 1, 1 << 16), ("out_channels", 1, 1 << 16)):
        ints("Conv2d", lambda v, n=name: Conv2d(**{"in_channels": 1, "out_channels": 1, "kernel_size": 1,
                                                  n: v}), name, lo, hi)
    ints("ConvertingReLU", lambda v: ConvertingReLU(v), "shift", 0, 7)
    ints("MnistNet", lambda v: MnistNet(seed=v), "seed", 0, None, soft_hi=SEED_MAX)
    reals("MnistNet", lambda v: MnistNet(gain=v), "gain", *INIT_RANGES["gain"])
    reals("MnistNet", lambda v: MnistNet(temperature=v), "temperature", 0.0, lo_open=True)
    for name in ("lr", "eps"):
        reals("Adam", lambda v, n=name: Adam([np.zeros(2)], **{n: v}), name, 0.0, lo_open=True)
    ints("CalibrationTarget", lambda v: CalibrationTarget(test_value=v).target_id, "test_value", 1, INPUT_MAX)
    ints("CalibrationTarget", lambda v: CalibrationTarget(test_weight=v).target_id, "test_weight", 1,
         WEIGHT_MAX)
    reals("CalibrationTarget", lambda v: CalibrationTarget(resting_read=v).target_id, "resting_read",
          20.0, 220.0)
    reals("CalibrationTarget", lambda v: CalibrationTarget(neuron_amplitude_lsb=v).target_id,
          "neuron_amplitude_lsb", 0.0, lo_open=True, soft_hi=CADC_MAX, none_ok=True)
    return cases


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("label,build,values,classify,names", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_scalar_edges(label, build, values, classify, names):
    failures = []
    for v in values:
        try:
            outcome(lambda: build(v), classify(v), names)
        except AssertionError as e:            # collect all values, report them together
            failures.append(f"{label}={v!r}: {str(e).splitlines()[0]}")
        except Exception as e:                 # an exception type outside the contract
            failures.append(f"{label}={v!r}: {type(e).__name__} escaped: {e}")
    assert not failures, "\n".join(failures)
