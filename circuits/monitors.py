"""What the time-stepped path records: :class:`Monitor`, and :func:`plot_trace`.

A :class:`Monitor` names the columns, the quantities and the decimation of a
recording of :func:`~bss2sim.circuits.integrate_trace`; the result's arrays then
hold only those (shape ``(num_vectors, num_samples, len(columns))``, float64,
8 bytes per value), and ``TraceResult.columns`` says which column each last
index holds. Recording changes nothing in the integration: the codes and the
membrane at the read are those of a run that records nothing, and the recorded
values are bit-identical to the same columns of a full recording.

Quantities (name: result field, unit):

* ``"membrane"``: ``membrane_v``, V, the membrane voltage;
* ``"syn_exc"``: ``syn_exc_c``, C, the charge held on the excitatory synaptic input;
* ``"syn_inh"``: ``syn_inh_c``, C, the charge held on the inhibitory synaptic input;
* ``"cadc_ramp"``: ``cadc_ramp_v``, V, the CADC comparator's ramp as the
  conversion uses it: ``CADC_START + (m + 1) * CADC_STEP`` of the latest ramp
  tick ``m`` at or before the sample (tick 0 at the read, one tick per
  ``constants.CADC_TICK_S``), NaN before the first tick. The comparator fires
  when this passes the membrane plus the channel's comparator offset (and, with
  noise, its read noise), so the ramp crosses the membrane trace about one
  offset away from where the count stops.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import constants as K
from .checks import WrongTypeError, check_bool, check_instance, check_int, short_repr

QUANTITIES = ("membrane", "syn_exc", "syn_inh", "cadc_ramp")
"""Quantities a :class:`Monitor` can record, in the order of the result's fields."""
FIELDS = {"membrane": "membrane_v", "syn_exc": "syn_exc_c", "syn_inh": "syn_inh_c",
          "cadc_ramp": "cadc_ramp_v"}
"""Result field (of :class:`~bss2sim.circuits.TraceResult`) of each quantity."""
UNITS = {"membrane": "V", "syn_exc": "C", "syn_inh": "C", "cadc_ramp": "V"}
"""SI unit of each quantity's recorded values."""
DEFAULT_QUANTITIES = ("membrane", "syn_exc", "syn_inh")
"""What ``integrate_trace`` records without a monitor (all 256 columns)."""
BYTES_PER_VALUE = 8
"""float64 per recorded value (column x quantity x sample x vector)."""


def _check_columns(columns):
    """None, or a non-empty sequence of distinct column indices 0..255, as a tuple of ints."""
    if columns is None:
        return None
    allowed = (f"None (all {K.COLUMNS_PER_HALF} columns) or a non-empty sequence of distinct "
               f"integers in 0..{K.COLUMNS_PER_HALF - 1}")
    is_sequence = (isinstance(columns, np.ndarray) and columns.ndim == 1) or \
        (isinstance(columns, Sequence) and not isinstance(columns, (str, bytes)))
    if not is_sequence:
        hint = " (one column is written [c])" if isinstance(columns, (int, np.integer)) else ""
        raise WrongTypeError(f"columns={short_repr(columns)} is not allowed: got a "
                             f"{type(columns).__name__}{hint}, must be {allowed}")
    out = []
    for i, c in enumerate(columns):
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise WrongTypeError(f"columns[{i}]={short_repr(c)} is not allowed: got a "
                                 f"{type(c).__name__}, must be an integer in 0..{K.COLUMNS_PER_HALF - 1}")
        if not 0 <= int(c) < K.COLUMNS_PER_HALF:
            raise ValueError(f"columns[{i}]={int(c)} is out of range: must be an integer in "
                             f"0..{K.COLUMNS_PER_HALF - 1}")
        if int(c) in out:
            raise ValueError(f"columns[{i}]={int(c)} is not allowed: column {int(c)} is named twice "
                             f"(first at columns[{out.index(int(c))}]); must be {allowed}")
        out.append(int(c))
    if not out:
        raise ValueError(f"columns=[] is not allowed: must be {allowed} "
                         "(to record nothing, pass record=False to integrate_trace)")
    return tuple(out)


def _check_quantities(quantities):
    """A quantity name or a non-empty sequence of distinct names, as a tuple."""
    allowed = f"a non-empty sequence of distinct names out of {', '.join(QUANTITIES)}"
    if isinstance(quantities, str):
        quantities = (quantities,)
    if isinstance(quantities, (bytes, dict, set, frozenset)) or not hasattr(quantities, "__iter__"):
        raise WrongTypeError(f"quantities={short_repr(quantities)} is not allowed: got a "
                             f"{type(quantities).__name__}, must be {allowed}")
    out = []
    for i, q in enumerate(quantities):
        if not isinstance(q, str):
            raise WrongTypeError(f"quantities[{i}]={short_repr(q)} is not allowed: got a "
                                 f"{type(q).__name__}, must be one of {', '.join(QUANTITIES)}")
        if q not in QUANTITIES:
            raise ValueError(f"quantities[{i}]={q!r} is unknown: allowed {', '.join(QUANTITIES)}")
        if q in out:
            raise ValueError(f"quantities[{i}]={q!r} is named twice; must be {allowed}")
        out.append(q)
    if not out:
        raise ValueError(f"quantities=() is not allowed: must be {allowed} "
                         "(to record nothing, pass record=False to integrate_trace)")
    return tuple(out)


def check_record_every(value):
    """``record_every``: None, or an integer >= 1 (integration steps)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise WrongTypeError(f"record_every={value!r} must be an integer >= 1 (steps) or None "
                             f"(one sample per FPGA cycle); got a {type(value).__name__}")
    if value < 1:
        raise ValueError(f"record_every={value!r} must be an integer >= 1 (steps) or None "
                         "(one sample per FPGA cycle)")
    return int(value)


@dataclass(frozen=True)
class Monitor:
    """What :func:`~bss2sim.circuits.integrate_trace` records.

    Parameters
    ----------
    columns : None or sequence of int
        Columns (0..255, distinct, any order) to record; None records all 256.
        The result's arrays hold them in this order (``TraceResult.columns``).
    quantities : str or sequence of str
        Out of ``"membrane"`` (V), ``"syn_exc"``, ``"syn_inh"`` (C, charge held
        on the synaptic inputs) and ``"cadc_ramp"`` (V, the CADC comparator's
        ramp during the conversion); default the membrane only.
    record_every : int or None
        Record every this many integration steps (a step is
        ``8 ns / substeps_per_cycle``); None: once per FPGA cycle (8 ns).

    Everything is checked here, before any kernel runs; errors name the
    parameter, the bad value and what is allowed. A recording takes
    ``8 bytes x len(columns) x len(quantities)`` per sample and vector
    (:meth:`bytes_per_sample`).
    """

    columns: tuple | None = None
    quantities: tuple = ("membrane",)
    record_every: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "columns", _check_columns(self.columns))
        object.__setattr__(self, "quantities", _check_quantities(self.quantities))
        object.__setattr__(self, "record_every", check_record_every(self.record_every))

    def column_indices(self) -> np.ndarray:
        """int64 (n,): the recorded columns, in the order of the result's last axis."""
        if self.columns is None:
            return np.arange(K.COLUMNS_PER_HALF, dtype=np.int64)
        return np.array(self.columns, dtype=np.int64)

    def bytes_per_sample(self) -> int:
        """Bytes one sample of one vector takes (8 per column and quantity)."""
        n = K.COLUMNS_PER_HALF if self.columns is None else len(self.columns)
        return BYTES_PER_VALUE * n * len(self.quantities)


_AXIS_LABELS = {"V": "voltage (V)", "C": "charge on the synaptic input (fC)"}
_SCALE = {"V": 1.0, "C": 1e15}
_NAMES = {"membrane": "membrane", "syn_exc": "exc. input", "syn_inh": "inh. input",
          "cadc_ramp": "CADC ramp"}


def plot_trace(result, ax=None, vector: int = 0, quantities=None, columns=None, events=None,
               conversion: bool = True, label: str | None = None, **line_kwargs):
    """Plot a recording of :func:`~bss2sim.circuits.integrate_trace`.

    Parameters
    ----------
    result : TraceResult
    ax : matplotlib Axes or None
        Axes to draw on; None makes a new figure.
    vector : int
        Which vector of the batch (0..num_vectors-1).
    quantities : None, str or sequence of str
        Recorded quantities to draw (default: all recorded). Voltages
        (membrane, CADC ramp) go on ``ax`` in V; charges (synaptic inputs) on
        ``ax`` in fC when no voltage is drawn, else on a twin axis at the right
        (``ax.twinx()``, in ``ax.figure.axes``).
    columns : None or sequence of int
        Recorded columns to draw (default: all recorded).
    events : EventSchedule or None
        If given, its events of ``vector`` are marked at the bottom of the axes.
    conversion : bool
        Shade the CADC conversion (from ``result.read_cycle[vector]``, 0.54 us).
    label : str or None
        Legend label of each line, formatted with ``{column}``, ``{quantity}``
        and ``{code}`` (the column's CADC code); default
        ``"column {column} {quantity}"``.
    **line_kwargs
        Passed to ``Axes.plot`` (colour, line style, ...).

    Returns the Axes holding the voltages (or the charges when no voltage is drawn),
    x axis the time after the reset in us.
    """
    from .events import EventSchedule
    from .integrate import TraceResult     # here: integrate imports this module

    check_instance("result", result, TraceResult, "bss2sim.circuits.TraceResult (from integrate_trace)")
    if result.columns is None or result.times_s is None or len(result.times_s) == 0:
        raise ValueError("result holds no recording (integrate_trace was called with record=False)")
    recorded = [q for q in QUANTITIES if getattr(result, FIELDS[q]) is not None]
    num_vectors = result.codes.shape[0]
    if num_vectors == 0:
        raise ValueError("result holds no vectors")
    vector = check_int("vector", vector, 0, num_vectors - 1)
    if quantities is None:
        quantities = tuple(recorded)
    else:
        quantities = _check_quantities(quantities)
        missing = [q for q in quantities if q not in recorded]
        if missing:
            raise ValueError(f"quantities={list(quantities)!r}: {', '.join(missing)} not recorded; "
                             f"recorded: {', '.join(recorded)}")
    rec_cols = [int(c) for c in result.columns]
    if columns is None:
        columns = tuple(rec_cols)
    else:
        columns = _check_columns(columns)
        missing = [c for c in columns if c not in rec_cols]
        if missing:
            raise ValueError(f"columns={list(columns)!r}: column(s) {missing} not recorded; "
                             f"recorded: {short_repr(rec_cols)}")
    if events is not None:
        check_instance("events", events, EventSchedule, "bss2sim.circuits.EventSchedule or None")
        if events.num_vectors != num_vectors:
            raise ValueError(f"events holds {events.num_vectors} vectors; the result holds {num_vectors}")
    conversion = check_bool("conversion", conversion)
    if label is not None and not isinstance(label, str):
        raise WrongTypeError(f"label={short_repr(label)} is not allowed: got a {type(label).__name__}, "
                             "must be a format string or None")

    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=(8, 3.5))
    volts = [q for q in quantities if UNITS[q] == "V"]
    charges = [q for q in quantities if UNITS[q] == "C"]
    ax_c = (ax.twinx() if volts else ax) if charges else None
    t_us = np.asarray(result.times_s) * 1e6
    fmt = "column {column} {quantity}" if label is None else label
    for q in quantities:
        target = ax if UNITS[q] == "V" else ax_c
        data = getattr(result, FIELDS[q])[vector]
        for c in columns:
            j = rec_cols.index(c)
            text = fmt.format(column=c, quantity=_NAMES[q], code=int(result.codes[vector, c]))
            target.plot(t_us, data[:, j] * _SCALE[UNITS[q]], label=text, **line_kwargs)
    if volts:
        ax.set_ylabel(_AXIS_LABELS["V"])
    if charges:
        ax_c.set_ylabel(_AXIS_LABELS["C"])
    ax.set_xlabel("time after reset (us)")
    if conversion:
        t_read = float(result.read_cycle[vector]) * K.FPGA_CYCLE_S * 1e6
        ax.axvspan(t_read, t_read + K.CADC_CONVERSION_S * 1e6, color="0.85", zorder=0,
                   label="CADC conversion")
    if events is not None:
        _, _, cyc = events.vector(vector)
        ev_t = np.asarray(cyc) * K.FPGA_CYCLE_S * 1e6
        # x in data, y in axes coordinates: the marks sit at the bottom whatever the y range.
        ax.plot(ev_t, np.full(ev_t.shape, 0.03), "|", color="k", ms=8,
                transform=ax.get_xaxis_transform(), label=f"{len(ev_t)} events")
    return ax
