"""Validation of scalar arguments, shared by every public function.

Each check names the caller's parameter, the bad value and the allowed range,
and runs before any kernel or any change of state. A value of the wrong type
raises :class:`WrongTypeError`, which is both a ``TypeError`` and a
``ValueError`` (as numpy's ``AxisError`` is both an ``IndexError`` and a
``ValueError``), so callers may catch either.
"""
from __future__ import annotations

import numbers

import numpy as np


class WrongTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float, bool or string where an integer
    is expected, an object of another class, ...)."""


def _is_integer(value) -> bool:
    """True for Python and numpy integers, never for bools (``True`` is no seed)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, unit: str = "") -> int:
    """``value`` as a Python int within ``lo..hi`` (either bound may be None).

    Floats are refused even when integral (``1.0``): a seed or a cycle count
    given as a float is most often a mistake, and silent truncation hides it.
    """
    suffix = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        allowed = f"an integer in {lo}..{hi}{suffix}"
    elif lo is not None:
        allowed = f"an integer >= {lo}{suffix}"
    elif hi is not None:
        allowed = f"an integer <= {hi}{suffix}"
    else:
        allowed = f"an integer{suffix}"
    if not _is_integer(value):
        raise WrongTypeError(f"{name}={short_repr(value)} is not allowed: got a {type(value).__name__}, "
                             f"must be {allowed}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}={v} is not allowed: must be {allowed}")
    return v


SEED_MAX = 2**64 - 1
"""Seeds are 64-bit unsigned integers (SplitMix64 state)."""


def check_seed(name: str, value) -> int:
    """A seed: an integer in 0..2**64-1 (not a float, bool or string)."""
    if not _is_integer(value):
        raise WrongTypeError(f"{name}={short_repr(value)} is not allowed: got a {type(value).__name__}, "
                             f"a seed must be an integer in 0..2**64-1")
    v = int(value)
    if not 0 <= v <= SEED_MAX:
        raise ValueError(f"{name}={v} is not allowed: a seed must be an integer in 0..2**64-1")
    return v


def check_real(name: str, value, lo: float | None = None, hi: float | None = None,
               unit: str = "", lo_open: bool = False) -> float:
    """``value`` as a finite float within ``lo..hi`` (``lo`` excluded when
    ``lo_open``); bools and strings are refused."""
    suffix = f" {unit}" if unit else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise WrongTypeError(f"{name}={short_repr(value)} is not allowed: got a {type(value).__name__}, "
                             f"must be a finite number{suffix}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}={value!r} is not allowed: must be a finite number{suffix}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name}={value!r} is out of range: must be {'>' if lo_open else '>='} {lo}"
                         + (f" and <= {hi}" if hi is not None else "") + suffix)
    if hi is not None and v > hi:
        raise ValueError(f"{name}={value!r} is out of range: must be <= {hi}{suffix}")
    return v


def check_bool(name: str, value) -> bool:
    """A bool (Python or numpy), nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise WrongTypeError(f"{name}={short_repr(value)} is not allowed: got a {type(value).__name__}, "
                             "must be True or False")
    return bool(value)


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (arrays and long lists in messages)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_instance(name: str, value, cls, what: str | None = None):
    """``value`` if it is an instance of ``cls``; otherwise a WrongTypeError."""
    if not isinstance(value, cls):
        expected = what or (cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls))
        raise WrongTypeError(f"{name}={short_repr(value)} is not allowed: got a {type(value).__name__}, "
                             f"must be a {expected}")
    return value


def as_int_array(name: str, values, lo: int | None = None, hi: int | None = None,
                 dtype=np.int64) -> np.ndarray:
    """``values`` as an integer array (a copy, int64 unless ``dtype`` names a
    narrower type that ``lo..hi`` fits) with every entry within ``lo..hi``.

    Lists are accepted when they form a regular array; a ragged nested list,
    strings, objects, floats, bools and complex values are refused with the
    parameter's name (a float array is refused even when integral, as for
    scalars).
    """
    rng = f" in {lo}..{hi}" if lo is not None and hi is not None else ""
    if isinstance(values, (str, bytes)):
        raise WrongTypeError(f"{name} is a {type(values).__name__}; expected an integer array{rng}")
    try:
        a = np.asarray(values)
    except (ValueError, TypeError) as err:      # ragged nested lists
        raise ValueError(f"{name} is not a regular array ({err}); expected an integer array{rng}") from None
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinity; expected integers{rng}")
        if a.dtype.kind == "O":
            raise WrongTypeError(f"{name} holds Python objects (a ragged or mixed list?); "
                                 f"expected an integer array{rng}")
        raise WrongTypeError(f"{name} has dtype {a.dtype}; expected integers{rng}")
    if a.size and ((lo is not None and a.min() < lo) or (hi is not None and a.max() > hi)):
        bad = np.zeros(a.shape, bool)
        if lo is not None:
            bad |= a < lo
        if hi is not None:
            bad |= a > hi
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = list(idx) if idx else ""
        raise ValueError(f"{name}{where}={a[idx]} is out of range {lo}..{hi}")
    return a.astype(dtype)
