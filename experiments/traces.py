"""``bss2sim traces``: membrane traces of a few columns during one VMM.

By default one half of a chip gets random signed weights and two input vectors
are sent: a weak, sparse one at ``wait_between_events=5`` and a dense, strong
one at the 8 ns hardware limit that drives synaptic inputs past their knee and
membranes into their rails. Callers may instead give their own inputs, weights,
columns and chip (a calibrated one, say). The time-stepped path records, through
a :class:`~bss2sim.circuits.Monitor`, only the shown columns' membranes and
CADC ramps; the fast path integrates the same events; the figure marks the
events and the CADC read.

:func:`parse_columns` and :func:`load_array` turn command-line text into the
arguments of :func:`run`; :func:`check_arguments` checks them before any work
(a command line calls it before it builds or calibrates a chip).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bss2sim.circuits import Chip, EventSchedule, Monitor, integrate_fast, integrate_trace, plot_trace
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, as_int_array, check_instance, check_int, check_seed

from .calibration.store import chip_with_calibration, describe
from .common import DEFAULT_OUTPUT_DIR, emit_json, note, plots_dir, save_figure

POST_EVENT_WAIT_CYCLES = 125
"""Wait between the last event and the CADC read: 1 us, as the group's software does [SW]."""
DEFAULT_COLUMNS = (3, 70, 130, 200)
"""Columns shown by default: two in each quadrant of the half."""
MAX_COLUMNS = 16
"""Most columns one figure shows (*assumed*: beyond this the legend and the
lines of a panel cannot be told apart; a display limit, not a chip one)."""
MAX_VECTORS = 8
"""Most custom input vectors, one panel each (*assumed*: a display limit,
panels of about 3.5 cm height on a 9 inch wide figure)."""
CUSTOM_WAIT_CYCLES = 5
"""Default spacing of the events of custom inputs, FPGA cycles (40 ns), the
spacing of the built-in weak example."""
ARRAY_SUFFIXES = (".npy", ".txt", ".csv")
"""File types :func:`load_array` reads."""


# --- command-line text -------------------------------------------------------

def parse_columns(text, option: str = "--columns") -> list:
    """Column indices from text: comma-separated indices and inclusive ranges
    ``low-high``, e.g. ``"3,70,130"``, ``"0-15"`` or ``"0-3,200"``; each
    0..255, none twice. Errors (``ValueError``) name ``option`` and the bad part."""
    if not isinstance(text, str):
        raise WrongTypeError(f"{option}={text!r} is not allowed: got a {type(text).__name__}, must be "
                             "text such as 3,70,130 or 0-15")
    hi_col = K.COLUMNS_PER_HALF - 1
    out = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo.strip())
            b = int(hi.strip()) if sep else a
        except ValueError:
            raise ValueError(f"{option} {text!r}: {part!r} is not a column index or a range low-high "
                             f"(columns 0..{hi_col}, e.g. 3,70,130 or 0-15)") from None
        if not (0 <= a <= hi_col and 0 <= b <= hi_col):
            raise ValueError(f"{option} {text!r}: {part!r} is out of range: columns are 0..{hi_col}")
        if b < a:
            raise ValueError(f"{option} {text!r}: range {part!r} must be low-high with low <= high")
        for c in range(a, b + 1):
            if c in out:
                raise ValueError(f"{option} {text!r} names column {c} twice")
            out.append(c)
    return out


def load_array(option: str, path) -> np.ndarray:
    """An integer array (int64) from a file, for a command-line option such as
    ``--inputs``: ``.npy`` (numpy's format, no pickles), ``.txt`` (numbers
    separated by whitespace, one matrix row a line, ``#`` comments) or ``.csv``
    (comma-separated). Text files always give a 2-d array (one line: one row).
    Values must be integers (``3`` or ``3.0``). Errors (``ValueError``) name
    ``option``, the file and what is wrong."""
    p = Path(path)
    suffix = p.suffix.lower()
    where = f"{option} {str(path)!r}"
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"{where}: unknown file type {p.suffix or '(none)'!r}; allowed: "
                         f"{', '.join(ARRAY_SUFFIXES)}")
    if not p.exists():
        raise ValueError(f"{where}: no such file")
    if not p.is_file():
        raise ValueError(f"{where} is not a file")
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        else:
            a = np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=2, comments="#")
    except (ValueError, OSError, EOFError, TypeError) as e:
        kind = "a .npy file" if suffix == ".npy" else f"a table of numbers ({suffix})"
        raise ValueError(f"{where} cannot be read as {kind}: {' '.join(str(e).split())}") from None
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{where} does not hold one array")
    if a.size == 0:
        raise ValueError(f"{where} holds no values")
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind != "f":
        raise ValueError(f"{where} holds {a.dtype} values; expected integers")
    bad = ~np.isfinite(a) | (a != np.round(a))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: entry {list(idx)} = {float(a[idx])!r} is not an integer")
    return a.astype(np.int64)


# --- the experiment ----------------------------------------------------------

def _inputs(seed):
    rng = np.random.default_rng(seed)
    weak = rng.integers(1, 16, K.DRIVERS_PER_HALF) * (rng.random(K.DRIVERS_PER_HALF) < 0.5)
    strong = np.full(K.DRIVERS_PER_HALF, K.INPUT_MAX)
    strong[64:] = 0
    return weak.astype(np.int64), strong.astype(np.int64)


def _check_columns(columns):
    if columns is None:
        return list(DEFAULT_COLUMNS)
    cols = list(Monitor(columns=columns).columns)   # names "columns", the bad entry and 0..255
    if len(cols) > MAX_COLUMNS:
        raise ValueError(f"columns names {len(cols)} columns; at most {MAX_COLUMNS} can be shown")
    return cols


def _check_inputs(inputs):
    x = as_int_array("inputs", inputs, 0, K.INPUT_MAX)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != K.DRIVERS_PER_HALF or not 1 <= x.shape[0] <= MAX_VECTORS:
        raise ValueError(f"inputs has shape {x.shape}; expected (num_vectors, {K.DRIVERS_PER_HALF}) "
                         f"with 1..{MAX_VECTORS} vectors (one panel each), values 0..{K.INPUT_MAX}")
    return x


def _check_weights(weights):
    w = as_int_array("weights", weights, -K.WEIGHT_MAX, K.WEIGHT_MAX)
    shape = (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF)
    if w.shape != shape:
        raise ValueError(f"weights has shape {w.shape}; expected {shape} (logical rows x columns), "
                         f"values -{K.WEIGHT_MAX}..{K.WEIGHT_MAX}")
    return w


def check_arguments(columns=DEFAULT_COLUMNS, inputs=None, weights=None,
                    wait_between_events: int | None = None) -> dict:
    """Check the arguments :func:`run` takes from its caller (columns, inputs,
    weights, wait) without running anything, e.g. before a command line builds
    or calibrates a chip. Returns them normalised (lists, int64 arrays), as a
    dict of keyword arguments of :func:`run`; errors (``ValueError``, ``TypeError``)
    name the parameter, the bad value and what is allowed."""
    cols = _check_columns(columns)
    x = None if inputs is None else _check_inputs(inputs)
    w = None if weights is None else _check_weights(weights)
    if x is None and wait_between_events is not None:
        raise ValueError(f"wait_between_events={wait_between_events!r} applies to custom inputs only; "
                         "the built-in examples use their own (5 and 1)")
    if wait_between_events is not None:
        wait_between_events = check_int("wait_between_events", wait_between_events,
                                        K.DRIVER_MIN_EVENT_INTERVAL_CYCLES, 255, "FPGA cycles (8 ns)")
    return {"columns": cols, "inputs": x, "weights": w, "wait_between_events": wait_between_events}


def run(seed: int = 0, half: int = 0, columns=DEFAULT_COLUMNS, plots=DEFAULT_OUTPUT_DIR, as_json=False,
        inputs=None, weights=None, chip: Chip | None = None, wait_between_events: int | None = None,
        calibration=None):
    """Run the experiment; returns the figures as a dict.

    Parameters
    ----------
    seed : int
        Chip seed (``Chip(seed)``), and the seed of the built-in example weights
        and inputs. With ``chip`` given, no chip is made from it: it is reported only
        (and still draws the built-in examples).
    half : int
        0 (top) or 1 (bottom).
    columns : sequence of int or None
        Columns to show (0..255, distinct, at most ``MAX_COLUMNS``); None: the
        default four. Only these are recorded.
    plots : str or Path
        Folder of the figure ``membrane_traces.png``.
    as_json : bool
        Print the returned dict as JSON (last line of stdout).
    inputs : None or int array (num_vectors, 128), values 0..31
        None: the two built-in examples. Otherwise 1..``MAX_VECTORS`` vectors,
        one panel each, sent at ``wait_between_events``.
    weights : None or int array (128, 256), values -63..63
        Signed logical weights of the half. None: random weights drawn from
        ``seed + 1``, the first shown column made excitatory and the second inhibitory.
    chip : Chip or None
        A ready chip (e.g. calibrated) instead of ``Chip(seed)``. Its weights on
        ``half`` are set for the run and put back afterwards.
    wait_between_events : int or None
        Event spacing of custom ``inputs``, FPGA cycles of 8 ns (1..255; default 5).
        The built-in examples have their own (5 and 1) and refuse it.
    calibration : None, "none" or a path
        Calibration of ``Chip(seed)`` when no ``chip`` is given: None the
        store, then the shipped one, else calibrate now; ``"none"`` uncalibrated
        (see :func:`bss2sim.experiments.calibration.store.chip_with_calibration`).

    Everything is checked (:func:`check_arguments`) before a chip is made or
    touched. Returns a dict with ``seed``, ``half``, ``columns`` (the recorded
    columns), ``cases`` (one per panel: label, wait, events, read cycle, codes of
    both paths, their rms and largest difference in LSB, the number of columns the
    fast path walked) and ``figure`` (the file written).
    """
    seed = check_seed("seed", seed)
    half = check_int("half", half, 0, K.NUM_HALVES - 1)
    if chip is not None:
        check_instance("chip", chip, Chip, "bss2sim.circuits.Chip or None (a new Chip(seed))")
    checked = check_arguments(columns, inputs, weights, wait_between_events)
    cols, x_custom, w_custom = checked["columns"], checked["inputs"], checked["weights"]
    wait_custom = CUSTOM_WAIT_CYCLES if checked["wait_between_events"] is None \
        else checked["wait_between_events"]
    if w_custom is None:
        rng = np.random.default_rng(seed + 1)
        weights = rng.integers(-K.WEIGHT_MAX, K.WEIGHT_MAX + 1, (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF))
        # Make the plotted columns clearly excitatory or inhibitory so the traces show both.
        weights[:, cols[0]] = np.abs(weights[:, cols[0]])
        if len(cols) > 1:
            weights[:, cols[1]] = -np.abs(weights[:, cols[1]])
    else:
        weights = w_custom
    if x_custom is None:
        weak, strong = _inputs(seed)
        cases = [("weak input, wait 5 (40 ns)", weak[None, :], 5),
                 ("saturating input, wait 1 (8 ns)", strong[None, :], 1)]
    else:
        cases = [(f"input vector {i}, wait {wait_custom} ({wait_custom * 8} ns)", x_custom[i:i + 1], wait_custom)
                 for i in range(x_custom.shape[0])]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own_chip = chip is None
    loaded = None
    if own_chip:
        chip, loaded = chip_with_calibration(seed, calibration)
        print(f"calibration: {describe(loaded)}")
    else:
        saved = (chip.config.weights[half].copy(), chip.config.row_sign[half].copy())
    try:
        chip.config.set_logical_weights(half, weights)
        result = _integrate_and_plot(chip, seed, half, cols, cases, plots, plt)
    finally:
        if not own_chip:
            chip.config.set_weights(half, saved[0])
            chip.config.set_row_signs(half, saved[1])
    for case in result["cases"]:
        print(f"{case['label']}: {case['num_events']} events, read at cycle {case['read_cycle']}, "
              f"fast vs trace {case['fast_vs_trace_rms_lsb']:.3f} LSB rms, "
              f"{case['fast_vs_trace_max_lsb']} LSB max; codes of plotted columns "
              f"{[case['codes_trace'][c] for c in result['columns']]}")
    print(f"wrote {result['figure']}")
    result["calibration"] = None if loaded is None else loaded.to_dict()
    if as_json:
        emit_json(result)
    return result


def _integrate_and_plot(chip, seed, half, cols, cases, plots, plt):
    # Membrane and the CADC ramp of the shown columns only: 8 bytes x 2 x len(cols) per sample.
    monitor = Monitor(columns=cols, quantities=("membrane", "cadc_ramp"))
    note("integrating (first run compiles the numba kernels, about half a minute)...")
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 3.75 * len(cases)), sharex=False, squeeze=False)
    axes = axes[:, 0]
    result = {"chip_seed": seed, "half": half, "columns": [int(c) for c in cols], "cases": []}
    for ax, (label, x, wait) in zip(axes, cases):
        sched = EventSchedule.from_inputs(x, wait)
        read = int(sched.last_cycle()[0]) + POST_EVENT_WAIT_CYCLES
        tr = integrate_trace(chip, half, sched, read, monitor=monitor)
        fast = integrate_fast(chip, half, sched, read)
        dev = fast.codes.astype(int) - tr.codes.astype(int)
        result["columns"] = [int(c) for c in tr.columns]
        for c in cols:
            plot_trace(tr, ax, quantities="membrane", columns=[c], conversion=False, lw=1.2,
                       label=f"column {{column}}: code {{code}} (fast {fast.codes[0, c]})")
        # The ramp the first shown column's comparator sees (it counts up from the read).
        plot_trace(tr, ax, quantities="cadc_ramp", columns=[cols[0]], events=sched, color="0.6",
                   lw=0.8, ls="--", label="CADC ramp (column {column})")
        lo = min(np.nanmin(tr.membrane_v[0]), 0.25)
        ax.set_ylim(lo - 0.03, max(1.2, np.nanmax(tr.membrane_v[0]) + 0.05))
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("membrane, CADC ramp (V)")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        result["cases"].append({
            "label": label, "wait_between_events": wait, "num_events": int(sched.num_events),
            "read_cycle": read, "codes_trace": tr.codes[0].tolist(), "codes_fast": fast.codes[0].tolist(),
            "fast_vs_trace_rms_lsb": float(np.sqrt(np.mean(dev.astype(float) ** 2))),
            "fast_vs_trace_max_lsb": int(np.abs(dev).max()),
            "stepped_columns": int(fast.stepped_columns.sum()),
        })
    for ax in axes[:-1]:
        ax.set_xlabel("")
    fig.suptitle(f"Chip seed {seed}, half {half}: membrane traces during one VMM", fontsize=11)
    fig.tight_layout()
    out = plots_dir(plots) / "membrane_traces.png"
    save_figure(fig, out)
    plt.close(fig)
    result["figure"] = str(out)
    return result
