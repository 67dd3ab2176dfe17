"""Fault-aware mapping: which neurons (CADC channels) and synapse drivers of a
chip the :class:`~bss2sim.digital.Accelerator` must not use.

Calibration or a test run names faulty units (a stuck CADC channel, a dead
synapse row); :class:`FaultyUnits` lists them, and an accelerator built with
``faulty=`` maps the logical inputs of a weight tile onto the healthy drivers
and its logical outputs onto the healthy columns of each half, in increasing
order (see :class:`~bss2sim.digital.Accelerator`).

A dead physical synapse row ``r`` (``Faults.dead_synapse_rows``) belongs to
driver ``r // 2``: a logical row drives the two physical rows ``2 d`` and
``2 d + 1`` of its driver ``d`` (excitatory and inhibitory part), so the
driver is the unit to leave out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_int, short_repr

__all__ = ["FaultyUnits"]

_FIELDS = {
    # field: (name of the second index, its largest value)
    "columns": ("column", K.COLUMNS_PER_HALF - 1),
    "drivers": ("driver", K.DRIVERS_PER_HALF - 1),
}


def _normalise(field, entries):
    """``entries`` as a sorted tuple of distinct ``(half, index)`` int pairs;
    errors name the field, the bad entry and the allowed range."""
    what, hi = _FIELDS[field]
    shape = f"(half, {what}) pairs with half in 0..{K.NUM_HALVES - 1} and {what} in 0..{hi}"
    if isinstance(entries, (str, bytes, dict)) or not isinstance(entries, (tuple, list)):
        raise WrongTypeError(f"FaultyUnits.{field}={short_repr(entries)} is not allowed: got a "
                             f"{type(entries).__name__}, must be a tuple of {shape}")
    pairs = set()
    for i, e in enumerate(entries):
        if not isinstance(e, (tuple, list)) or len(e) != 2:
            raise WrongTypeError(f"FaultyUnits.{field}[{i}]={short_repr(e)} is not allowed: "
                                 f"must be a (half, {what}) pair, half in 0..{K.NUM_HALVES - 1}, "
                                 f"{what} in 0..{hi}")
        half = check_int(f"FaultyUnits.{field}[{i}].half", e[0], 0, K.NUM_HALVES - 1, "(0 top, 1 bottom)")
        index = check_int(f"FaultyUnits.{field}[{i}].{what}", e[1], 0, hi)
        pairs.add((half, index))
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class FaultyUnits:
    """Units of a chip that an :class:`~bss2sim.digital.Accelerator` leaves unused.

    Entries may be given as lists or tuples in any order and with repeats;
    they are kept as sorted tuples of distinct ``(half, index)`` int pairs.
    ``FaultyUnits()`` (nothing faulty) is the default and maps every logical
    input and output onto the driver and column of the same index.
    """

    columns: tuple = ()
    """(half, column) pairs of neurons / CADC channels not to use: half 0..1
    (0 top, 1 bottom), column 0..255. They get weight 0 and are never returned."""
    drivers: tuple = ()
    """(half, driver) pairs of synapse drivers not to use: half 0..1, driver
    0..127 (driver d feeds physical synapse rows 2d and 2d + 1). They get no
    events and their synapse rows weight 0."""

    def __post_init__(self):
        for field in _FIELDS:
            object.__setattr__(self, field, _normalise(field, getattr(self, field)))

    def _healthy(self, field, half, count):
        half = check_int("half", half, 0, K.NUM_HALVES - 1, "(0 top, 1 bottom)")
        bad = np.array([i for h, i in getattr(self, field) if h == half], np.int64)
        keep = np.ones(count, bool)
        keep[bad] = False
        return np.nonzero(keep)[0].astype(np.int64)

    def healthy_columns(self, half: int) -> np.ndarray:
        """Columns (neurons, CADC channels) of ``half`` (0..1) that may be used,
        increasing, int64; 256 entries when none is faulty."""
        return self._healthy("columns", half, K.COLUMNS_PER_HALF)

    def healthy_drivers(self, half: int) -> np.ndarray:
        """Synapse drivers of ``half`` (0..1) that may be used, increasing,
        int64; 128 entries when none is faulty."""
        return self._healthy("drivers", half, K.DRIVERS_PER_HALF)

    def to_dict(self) -> dict:
        """JSON-able form ``{"columns": [[h, c], ...], "drivers": [[h, d], ...]}``
        (sorted, no repeats); :meth:`from_dict` reads it back."""
        return {field: [[int(h), int(i)] for h, i in getattr(self, field)] for field in _FIELDS}

    @classmethod
    def from_dict(cls, d) -> "FaultyUnits":
        """Read :meth:`to_dict`'s form. Strict: a dict with exactly the keys
        ``"columns"`` and ``"drivers"``, each a list of ``[half, index]`` pairs
        of integers (no floats, no bools) within the ranges of the fields."""
        if not isinstance(d, dict):
            raise WrongTypeError(f"FaultyUnits.from_dict: d={short_repr(d)} is not allowed: got a "
                                 f"{type(d).__name__}, must be a dict with keys 'columns' and 'drivers'")
        keys = set(d)
        if keys != set(_FIELDS):
            missing = sorted(set(_FIELDS) - keys)
            extra = sorted(map(repr, keys - set(_FIELDS)))
            raise ValueError(f"FaultyUnits.from_dict: keys {sorted(map(repr, keys))} are not allowed: "
                             f"expected exactly 'columns' and 'drivers'"
                             + (f" (missing {', '.join(missing)})" if missing else "")
                             + (f" (unknown {', '.join(extra)})" if extra else ""))
        for field in _FIELDS:
            # JSON has lists only: a tuple here means the dict did not come from JSON
            # or to_dict; refuse it so that the form stays one.
            if not isinstance(d[field], list) or not all(isinstance(e, list) for e in d[field]):
                raise WrongTypeError(f"FaultyUnits.from_dict: {field}={short_repr(d[field])} is not "
                                     f"allowed: must be a list of [half, index] lists")
        return cls(columns=d["columns"], drivers=d["drivers"])
