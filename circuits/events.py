"""Event schedules: what reaches the synapse drivers of one half during one
integration, for a batch of vectors.

An event is (driver, 5-bit value, FPGA clock cycle counted from the membrane
reset). A schedule holds a batch of event lists in CSR form; it is validated
once, when it is built, so the kernels never see bad input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import constants as K
from .checks import WrongTypeError, as_int_array, check_int


def _as_int_array(name, values, lo, hi):
    a = as_int_array(name, values, lo, hi)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {a.shape}")
    return a


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)


@dataclass(frozen=True)
class EventSchedule:
    """A batch of event lists for one half, in CSR form.

    Every constructor validates (the plain one too), so the kernels never see
    a bad schedule; ``ValueError`` names the field, the bad entry and the range.

    Attributes
    ----------
    offsets : int64 (num_vectors + 1,)
        Events of vector b are ``offsets[b]:offsets[b+1]``.
    driver : int64 (num_events,)
        Synapse driver 0..127.
    value : int64 (num_events,)
        5-bit input value 1..31 (zero inputs send no event).
    cycle : int64 (num_events,)
        FPGA cycle (8 ns) after the reset at which the event reaches the driver,
        0..``constants.MAX_CYCLE``; non-decreasing within a vector; a driver takes at most one event per cycle.
    """

    offsets: np.ndarray
    driver: np.ndarray
    value: np.ndarray
    cycle: np.ndarray

    @property
    def num_vectors(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_events(self) -> int:
        return len(self.driver)

    def last_cycle(self) -> np.ndarray:
        """Cycle of the last event of each vector (0 for a vector without events)."""
        counts = np.diff(self.offsets)
        last = np.zeros(self.num_vectors, np.int64)
        has = counts > 0
        last[has] = self.cycle[self.offsets[1:][has] - 1]
        return last

    def vector(self, b):
        """(driver, value, cycle) arrays of vector b."""
        b = check_int("b", b, 0, self.num_vectors - 1)
        s = slice(self.offsets[b], self.offsets[b + 1])
        return self.driver[s], self.value[s], self.cycle[s]

    def slice(self, start, stop) -> "EventSchedule":
        """Vectors start..stop-1 as a new schedule."""
        start = check_int("start", start)
        stop = check_int("stop", stop)
        if not 0 <= start <= stop <= self.num_vectors:
            raise ValueError(f"slice {start}:{stop} is outside 0..{self.num_vectors}: start must be in "
                             f"0..stop and stop in start..{self.num_vectors}")
        a, b = self.offsets[start], self.offsets[stop]
        return EventSchedule._trusted(self.offsets[start:stop + 1] - a, self.driver[a:b],
                                      self.value[a:b], self.cycle[a:b])

    def __post_init__(self):
        # Every schedule is validated once, when it is built, whichever
        # constructor built it: the kernels index tables with these values.
        driver = _as_int_array("driver", self.driver, 0, K.DRIVERS_PER_HALF - 1)
        value = _as_int_array("value", self.value, 1, K.INPUT_MAX)
        cycle = _as_int_array("cycle", self.cycle, 0, K.MAX_CYCLE)
        n = len(driver)
        if len(value) != n or len(cycle) != n:
            raise ValueError(f"driver, value and cycle must have equal lengths; got "
                             f"{len(driver)}, {len(value)}, {len(cycle)}")
        offsets = _as_int_array("offsets", self.offsets, 0, n)
        if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n:
            raise ValueError(f"offsets must start at 0 and end at the number of events {n}; "
                             f"got {offsets[:1]}..{offsets[-1:]}")
        if np.any(np.diff(offsets) < 0):
            i = int(np.argmax(np.diff(offsets) < 0))
            raise ValueError(f"offsets[{i + 1}]={offsets[i + 1]} is below offsets[{i}]={offsets[i]}; "
                             "offsets must be non-decreasing")
        if n:
            vec = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            same_vec = vec[1:] == vec[:-1]
            back = same_vec & (cycle[1:] < cycle[:-1])
            if back.any():
                i = int(np.argmax(back)) + 1
                raise ValueError(f"cycle[{i}]={cycle[i]} is earlier than cycle[{i - 1}]={cycle[i - 1]} "
                                 f"in vector {vec[i]}; events must be in time order (non-decreasing cycles)")
            # A driver accepts one event per cycle: find repeats of (vector, cycle, driver).
            key = (vec * (K.MAX_CYCLE + 1) + cycle) * K.DRIVERS_PER_HALF + driver
            order = np.argsort(key, kind="stable")
            ks = key[order]
            dup = ks[1:] == ks[:-1]
            if dup.any():
                i = int(order[int(np.argmax(dup)) + 1])
                raise ValueError(
                    f"driver[{i}]={driver[i]} is busy: it already has an event at cycle {cycle[i]} "
                    f"in vector {vec[i]}; a driver accepts at most one event per "
                    f"{K.FPGA_CYCLE_S * 1e9:.0f} ns cycle")
        # as_int_array copied every array, so freezing never touches the caller's.
        for name, a in (("offsets", offsets), ("driver", driver), ("value", value), ("cycle", cycle)):
            _frozen(a)
            object.__setattr__(self, name, a)

    @classmethod
    def _trusted(cls, offsets, driver, value, cycle) -> "EventSchedule":
        """A schedule from int64 arrays that are valid by construction (the
        builders below and the event interface); skips the checks."""
        out = object.__new__(cls)
        for name, a in (("offsets", offsets), ("driver", driver), ("value", value), ("cycle", cycle)):
            _frozen(a)
            object.__setattr__(out, name, a)
        return out

    @classmethod
    def from_arrays(cls, offsets, driver, value, cycle) -> "EventSchedule":
        """Validated schedule from CSR arrays; raises ``ValueError`` naming the
        parameter, the bad value and the allowed range (as the constructor does)."""
        return cls(offsets, driver, value, cycle)

    @classmethod
    def from_lists(cls, vectors) -> "EventSchedule":
        """Schedule from a list (one item per vector) of lists of
        (driver, value, cycle) tuples."""
        if isinstance(vectors, (str, bytes, dict)) or not hasattr(vectors, "__len__") \
                or any(isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__") for v in vectors):
            raise WrongTypeError(f"vectors={vectors!r:.80} must be a list (one item per vector) of "
                                 "lists of (driver, value, cycle) tuples")
        counts = [len(v) for v in vectors]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = [e for v in vectors for e in v]
        if not flat:
            empty = np.zeros(0, np.int64)
            return cls.from_arrays(offsets, empty, empty, empty)
        try:
            arr = np.asarray(flat)
        except ValueError:
            arr = None
        if arr is None or arr.ndim != 2 or arr.shape[1] != 3:
            i = next((i for i, e in enumerate(flat) if not hasattr(e, "__len__") or len(e) != 3), 0)
            raise ValueError(f"event {i} is {flat[i]!r}; expected (driver, value, cycle)")
        if arr.dtype.kind not in "iu":
            for j, name in enumerate(("driver", "value", "cycle")):
                for e in flat:
                    x = e[j]
                    if isinstance(x, (bool, np.bool_, float, np.floating)) or \
                            not isinstance(x, (int, np.integer)):
                        raise ValueError(f"{name}={x!r} is not an integer")
            raise ValueError(f"events have dtype {arr.dtype}; expected integers")
        return cls.from_arrays(offsets, arr[:, 0], arr[:, 1], arr[:, 2])

    @classmethod
    def from_inputs(cls, inputs, wait_between_events: int = 5, start_cycle: int = 0) -> "EventSchedule":
        """Sequential schedule of input vectors: the non-zero entries of each row
        of ``inputs`` (num_vectors x 128, integers 0..31) leave in driver order,
        one every ``wait_between_events`` cycles from ``start_cycle``; zeros send
        nothing and take no time [SW]."""
        x = as_int_array("inputs", inputs, 0, K.INPUT_MAX)
        if x.ndim != 2 or x.shape[1] != K.DRIVERS_PER_HALF:
            raise ValueError(f"inputs has shape {x.shape}; expected (num_vectors, {K.DRIVERS_PER_HALF})")
        wait = check_int("wait_between_events", wait_between_events,
                         K.DRIVER_MIN_EVENT_INTERVAL_CYCLES, K.MAX_CYCLE, "FPGA cycles (8 ns)")
        start_cycle = check_int("start_cycle", start_cycle, 0, K.MAX_CYCLE, "FPGA cycles (8 ns)")
        nz = x != 0
        counts = nz.sum(axis=1)
        longest = int(counts.max(initial=0))
        if longest and start_cycle + (longest - 1) * wait > K.MAX_CYCLE:
            raise ValueError(f"wait_between_events={wait} with start_cycle={start_cycle} puts the last of "
                             f"{longest} events at cycle {start_cycle + (longest - 1) * wait}, beyond "
                             f"the latest cycle {K.MAX_CYCLE} (FPGA cycles of 8 ns)")
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        vec, drv = np.nonzero(nz)
        rank = np.arange(len(vec)) - offsets[vec]
        cycle = start_cycle + rank * wait
        return cls._trusted(offsets, drv.astype(np.int64), x[vec, drv].astype(np.int64), cycle.astype(np.int64))
