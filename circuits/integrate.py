"""Public entry points of the analog integration of one half (the façade in
front of the numba kernels).

Both paths start from a membrane reset at cycle 0, take an
:class:`~bss2sim.circuits.events.EventSchedule`, and end with a CADC conversion that
starts at ``read_cycle`` and returns 8-bit codes; the membrane keeps moving
while the ramp runs.

* :func:`integrate_fast`: event-driven; exact where the circuit is linear,
  Runge-Kutta substeps where a synaptic input passes its knee or the membrane
  may touch a rail.
* :func:`integrate_trace`: time-stepped at ``8 ns / substeps_per_cycle``,
  recording the membrane and synaptic-input states (all columns, or what a
  :class:`~bss2sim.circuits.monitors.Monitor` chooses).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import constants as K
from . import kernels as _k
from .checks import as_int_array, check_bool, check_instance, check_int, short_repr
from .chip import PROPAGATOR_TABLE_CYCLES, Chip, check_half, leak_decay
from .events import EventSchedule
from .monitors import DEFAULT_QUANTITIES, FIELDS, Monitor, check_record_every
from .rng import TrialNoise

MAX_READ_CYCLE = K.MAX_CYCLE
"""Latest read accepted, FPGA cycles after the reset (17.2 s): any integration
the event interface can produce (up to 128 events x 255 cycles x 64 sends) and
far beyond. The fast path looks propagators up in tables up to
``chip.PROPAGATOR_TABLE_CYCLES`` and computes longer intervals per column."""
MAX_TRACE_BYTES = 2 * 1024**3
"""Largest recording ``integrate_trace`` allocates, bytes (2 GiB; *assumed*: a
guard against a call that would exhaust a workstation's memory, counted from
the arrays actually recorded: 8 bytes x vectors x samples x columns x quantities)."""


@dataclass(frozen=True)
class IntegrationResult:
    """Outcome of one batch of integrations on one half."""

    codes: np.ndarray
    """uint8 (num_vectors, 256): CADC codes, digital offset included, clipped to 0..255."""
    membrane_at_read_v: np.ndarray | None
    """float64 (num_vectors, 256), V: membrane voltage when the conversion starts
    (in the fast path without trial-to-trial noise, but with the capmem
    droop at the read's refresh phase, which is drawn with the noise); None
    from ``integrate_fast(..., voltages=False)``."""
    read_cycle: np.ndarray
    """int64 (num_vectors,): FPGA cycle at which each conversion started."""
    stepped_columns: np.ndarray | None = None
    """bool (num_vectors, 256), fast path only: columns that could not be proven
    linear and were walked event by event."""


@dataclass(frozen=True)
class TraceResult(IntegrationResult):
    """An integration with recorded state (time-stepped path).

    The recorded arrays hold the columns :attr:`columns` (in that order) on
    their last axis; a quantity that was not monitored is None. Samples after
    the end of a vector's conversion (a vector that reads earlier than the
    batch's latest) are NaN. See :mod:`bss2sim.circuits.monitors`."""

    times_s: np.ndarray | None = None
    """float64 (num_samples,), s: sample times after the reset (sample 0 at the reset)."""
    membrane_v: np.ndarray | None = None
    """float64 (num_vectors, num_samples, len(columns)), V: membrane voltage
    (None when not monitored)."""
    syn_exc_c: np.ndarray | None = None
    """float64 (num_vectors, num_samples, len(columns)), C: charge held on the
    excitatory input (None when not monitored)."""
    syn_inh_c: np.ndarray | None = None
    """float64 (num_vectors, num_samples, len(columns)), C: charge held on the
    inhibitory input (None when not monitored)."""
    cadc_ramp_v: np.ndarray | None = None
    """float64 (num_vectors, num_samples, len(columns)), V: the CADC comparator's
    ramp as the conversion uses it, ``CADC_START + (m + 1) CADC_STEP`` of the
    latest ramp tick m at or before the sample; NaN before the read (None when
    not monitored, the default)."""
    columns: np.ndarray | None = None
    """int64 (len(columns),): the column each index of the recorded arrays' last
    axis holds (all 256 in order unless a Monitor chose others)."""

    def trace(self, quantity: str, column: int, vector: int = 0) -> np.ndarray:
        """float64 (num_samples,): one recorded quantity (``"membrane"``,
        ``"syn_exc"``, ``"syn_inh"``, ``"cadc_ramp"``; unit as its field) of one
        recorded column of one vector."""
        if not isinstance(quantity, str) or quantity not in FIELDS:
            raise ValueError(f"quantity={quantity!r} is unknown: allowed {', '.join(FIELDS)}")
        data = getattr(self, FIELDS[quantity])
        if data is None:
            raise ValueError(f"quantity={quantity!r} was not recorded (see Monitor(quantities=...))")
        cols = [] if self.columns is None else [int(c) for c in self.columns]
        if isinstance(column, (bool, np.bool_)) or not isinstance(column, (int, np.integer)) \
                or int(column) not in cols:
            raise ValueError(f"column={column!r} was not recorded; recorded: {short_repr(cols)}")
        vector = check_int("vector", vector, 0, data.shape[0] - 1)
        return data[vector, :, cols.index(int(column))]


def _check_common(chip, half, schedule, read_cycle, noise):
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    half = check_half(half)
    check_instance("schedule", schedule, EventSchedule,
                   "bss2sim.circuits.EventSchedule (build one with EventSchedule.from_inputs / "
                   "from_lists / from_arrays)")
    if noise is not None:
        check_instance("noise", noise, TrialNoise, "bss2sim.circuits.TrialNoise or None (noise off)")
    rc = as_int_array("read_cycle", read_cycle)
    if rc.ndim == 0:
        rc = np.full(schedule.num_vectors, int(rc), np.int64)
    if rc.shape != (schedule.num_vectors,):
        raise ValueError(f"read_cycle has shape {rc.shape}; expected a scalar or "
                         f"({schedule.num_vectors},)")
    rc = as_int_array("read_cycle", rc, 0, MAX_READ_CYCLE)   # names the vector of a bad read
    last = schedule.last_cycle()
    if rc.size:
        early = rc < last
        if early.any():
            i = int(np.argmax(early))
            raise ValueError(f"read_cycle[{i}]={rc[i]} is before the last event of vector {i} "
                             f"(cycle {last[i]}); allowed: {last[i]}..{MAX_READ_CYCLE}")
    return half, rc


def _ro(a, dtype=None):
    """A read-only C-contiguous view (a copy only where the layout or dtype
    needs one) of a kernel input. Every input reaches the kernels read-only,
    so each kernel compiles for one signature, whether a caller's array was
    writable or frozen (schedules, cached tables)."""
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.flags.writeable = False
    return v


def recovered_widths(width_ns, schedule, depth, tau_s):
    """Pulse widths after driver recovery: a pulse ``dt`` after the same
    driver's previous pulse in the same vector (start to start) loses
    ``depth exp(-dt / tau)`` of its width. ``width_ns`` (num_events,) float;
    returns float64 (num_events,)."""
    return _recovered(np.array(width_ns, np.float64), schedule, depth, tau_s)


def _recovered(width, schedule, depth, tau_s):
    """``width`` (num_events,) after driver recovery, in its own dtype (rounded
    once from the float64 product); ``width`` itself where nothing recovers."""
    if depth > 0 and schedule.num_events > 1:
        out = np.empty_like(width)
        _k.recovery_kernel(_ro(schedule.offsets), _ro(schedule.driver), _ro(schedule.cycle), _ro(width),
                           float(depth), float(tau_s / K.FPGA_CYCLE_S), K.DRIVERS_PER_HALF, out)
        return out
    return width


def _event_arrays(chip, op, schedule):
    """Event arrays of the kernels: offsets, drivers, cycles, pulse widths (ns,
    float32, driver recovery applied) and the injection flag (1.0 where a pulse
    exists, so charge injection applies)."""
    fx = chip.effects
    # float32 as the tables hold them; the recovery's float64 product is rounded
    # to float32 once.
    width = np.empty(schedule.num_events, np.float32)
    _k.pulse_widths_kernel(_ro(schedule.driver), _ro(schedule.value), _ro(op.pulse_width_ns), width)
    width = _recovered(width, schedule, fx.driver_recovery_depth, fx.driver_recovery_tau_s)
    inject = (width > 0).astype(np.float32)
    return (np.ascontiguousarray(schedule.offsets), np.ascontiguousarray(schedule.driver),
            np.ascontiguousarray(schedule.cycle), np.ascontiguousarray(width), inject)


def _longest_table_interval(offsets, cycle, read_cycle):
    """Longest interval (FPGA cycles) the fast path looks up in the tables: between
    two events of a vector, or from a vector's last event to its read."""
    return int(_k.longest_interval_kernel(_ro(offsets, np.int64), _ro(cycle, np.int64),
                                          _ro(read_cycle, np.int64)))


def coincident_corrections(ie, ii, offsets, driver, cycle, width, inject, beta):
    """Column-line IR drop of events in the same cycle, for the fast path.

    Pulses that start together are on together for the shorter one's width.
    A synapse of event j keeps ``1 / (1 + L_j)`` of its charge, with
    ``L_j = beta sum_{k != j} I_k min(w_j, w_k) / w_j`` (``beta`` per uA, the
    others' current on its column's input line weighted by the time they are
    on together; first order ``beta I`` for a weak load, bounded for any).
    The loss of a group is added as one pseudo event after the group (its own
    current row, width 1 ns, no injection): returns the event arrays and the
    (drivers + groups, columns) current matrices extended so, or the inputs
    unchanged when no two events of a vector share a cycle."""
    if beta <= 0 or len(cycle) < 2:
        return ie, ii, offsets, driver, cycle, width, inject
    # Events k - 1 and k share a cycle and a vector (the first event of a vector
    # never pairs with the last of the one before).
    same = cycle[1:] == cycle[:-1]
    starts = offsets[1:-1]
    same[starts[(starts > 0) & (starts < len(cycle))] - 1] = False
    if not same.any():
        return ie, ii, offsets, driver, cycle, width, inject
    vec = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    # Groups: runs of events of one vector in one cycle (cycles never decrease).
    start = np.flatnonzero(np.r_[True, ~same])
    stop = np.r_[start[1:], len(cycle)]
    groups = [(a, b) for a, b in zip(start, stop) if b - a > 1]
    ie64 = ie.astype(np.float64)
    ii64 = ii.astype(np.float64)
    extra_e = np.zeros((len(groups), ie.shape[1]))
    extra_i = np.zeros((len(groups), ie.shape[1]))
    for g, (a, b) in enumerate(groups):
        for j in range(a, b):
            wj = float(width[j])
            if wj <= 0:
                continue
            load_e = np.zeros(ie.shape[1])
            load_i = np.zeros(ie.shape[1])
            for k in range(a, b):
                if k != j:
                    both_on = min(wj, float(width[k]))
                    load_e += beta * both_on / wj * ie64[driver[k]]
                    load_i += beta * both_on / wj * ii64[driver[k]]
            extra_e[g] -= wj * ie64[driver[j]] * load_e / (1.0 + load_e)
            extra_i[g] -= wj * ii64[driver[j]] * load_i / (1.0 + load_i)
    insert_after = np.array([b for _, b in groups])        # index of the first event after each group
    pos = insert_after + np.arange(len(groups))            # positions in the new arrays
    n_new = len(cycle) + len(groups)
    keep = np.ones(n_new, bool)
    keep[pos] = False
    new_driver = np.empty(n_new, np.int64)
    new_cycle = np.empty(n_new, np.int64)
    new_width = np.empty(n_new, np.float32)
    new_inject = np.empty(n_new, np.float32)
    new_driver[keep], new_cycle[keep], new_width[keep], new_inject[keep] = driver, cycle, width, inject
    new_driver[pos] = ie.shape[0] + np.arange(len(groups))
    new_cycle[pos] = cycle[insert_after - 1]
    new_width[pos] = 1.0
    new_inject[pos] = 0.0
    group_vec = vec[insert_after - 1]
    new_offsets = offsets + np.r_[0, np.cumsum(np.bincount(group_vec, minlength=len(offsets) - 1))]
    return (np.ascontiguousarray(np.vstack([ie, extra_e.astype(np.float32)])),
            np.ascontiguousarray(np.vstack([ii, extra_i.astype(np.float32)])),
            new_offsets.astype(np.int64), new_driver, new_cycle, new_width, new_inject)


def _apply_stuck(op, codes):
    """A stuck channel (an injected fault) reports the same code whatever it sees."""
    stuck = op.stuck_codes >= 0
    if stuck.any():
        codes[:, stuck] = op.stuck_codes[stuck]


def _noise_args(noise, count):
    if noise is None:
        return False, np.uint64(0), np.uint64(0), np.uint64(0)
    seed, first = noise.take(count)
    return True, seed, np.uint64(noise.shared_seed), first


def integrate_fast(chip: Chip, half: int, schedule: EventSchedule, read_cycle,
                   noise: TrialNoise | None = None, columns: int | None = None,
                   voltages: bool = True) -> IntegrationResult:
    """Integrate a batch of event schedules on one half with the event-driven path.

    Parameters
    ----------
    chip : Chip
    half : int
        0 (top) or 1 (bottom).
    schedule : EventSchedule
        Events per vector, cycles counted from the membrane reset.
    read_cycle : int or int array (num_vectors,)
        FPGA cycle (8 ns) at which the CADC conversion starts; not before the last event.
    noise : TrialNoise or None
        Seeded trial-to-trial noise (membrane and read noise); None switches it off.
    columns : int or None
        Integrate only the first ``columns`` columns (1..256; default all), e.g. when
        the others hold no weights that matter. The others read code 0 and NaN
        volts. The integrated columns get exactly the values a full run gives.
    voltages : bool
        False leaves ``membrane_at_read_v`` out (None) when only the codes are
        wanted: 8 bytes per vector and column less to allocate. The codes are
        the same either way.
    """
    half, rc = _check_common(chip, half, schedule, read_cycle, noise)
    n = K.COLUMNS_PER_HALF if columns is None else columns
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
            or not 1 <= n <= K.COLUMNS_PER_HALF:
        raise ValueError(f"columns={columns!r} is out of range 1..{K.COLUMNS_PER_HALF}")
    n = int(n)
    voltages = check_bool("voltages", voltages)
    op = chip.operating_point(half)
    B = schedule.num_vectors
    codes = np.zeros((B, K.COLUMNS_PER_HALF), np.uint8)
    stepped = np.zeros((B, K.COLUMNS_PER_HALF), np.bool_)
    if voltages:
        v_read = np.empty((B, K.COLUMNS_PER_HALF))
        v_read[:, n:] = np.nan
    else:
        v_read = np.empty((0, K.COLUMNS_PER_HALF))
    noise_on, seed, shared_seed, first = _noise_args(noise, B)
    if B:
        ctab = chip.conversion_tables(half)
        offsets, drv, cyc, width, inject = _event_arrays(chip, op, schedule)
        # The tables serve the intervals between events and from the last event to
        # the read; the leak's decay from the reset to the read comes from its own
        # one-row table (or, for reads beyond it, is computed once per distinct
        # read cycle by the same formula). Longer intervals than the tables hold are
        # computed by the tables' formula, equal to float32 rounding.
        tab = chip.propagator_tables(half, _longest_table_interval(offsets, cyc, rc) + 1)
        if rc.max() < PROPAGATOR_TABLE_CYCLES:
            am_read, read_slot = chip.leak_decay_table(half, int(rc.max()) + 1), rc
        else:
            reads, read_slot = np.unique(rc, return_inverse=True)
            am_read = leak_decay(op.column_params, reads * K.FPGA_CYCLE_S * 1e9).astype(np.float32)
        ie, ii, offsets, drv, cyc, width, inject = coincident_corrections(
            op.current_exc_ua, op.current_inh_ua, offsets, drv, cyc, width, inject,
            chip.effects.column_ir_drop_rel_per_ua)
        cp = op.column_params
        part = slice(0, n)

        def cols(a):
            return _ro(a[..., part])

        # The bounds use the whole half's slowest and fastest rates, so a partial
        # run takes the same paths (and gives the same bits) as a full one. The
        # kernel writes the first n columns of the outputs in place.
        _k.integrate_fast_kernel(_ro(offsets), _ro(drv), _ro(cyc), _ro(width), _ro(inject), cols(ie), cols(ii),
                                 _ro(ie.T[part]), _ro(ii.T[part]), cols(cp),
                                 _ro(tab) if n == K.COLUMNS_PER_HALF else cols(tab), _ro(ctab[part]),
                                 _ro(op.current_exc_ua.max(axis=0)[part], np.float64),
                                 _ro(op.current_inh_ua.max(axis=0)[part], np.float64),
                                 float(cp[_k.LAM_E].min() * K.FPGA_CYCLE_S * 1e9),
                                 float(cp[_k.LAM_I].min() * K.FPGA_CYCLE_S * 1e9),
                                 float(cp[_k.LAM_M].max()),
                                 _ro(rc), cols(am_read), _ro(read_slot.astype(np.int64)), K.FPGA_CYCLE_S * 1e9,
                                 K.CADC_TICK_S * 1e9, _k.WALK_CYCLES, noise_on, seed, shared_seed, first,
                                 _ro(chip.conversion_tick_slopes(half)[part]), codes, v_read, stepped)
    _apply_stuck(op, codes)
    return IntegrationResult(codes=codes, membrane_at_read_v=v_read if voltages else None, read_cycle=rc,
                             stepped_columns=stepped)


def integrate_trace(chip: Chip, half: int, schedule: EventSchedule, read_cycle,
                    noise: TrialNoise | None = None, substeps_per_cycle: int = 8,
                    record_every: int | None = None, record: bool = True,
                    monitor: Monitor | None = None) -> TraceResult:
    """Integrate with the time-stepped path and record V(t) and the synaptic inputs.

    Parameters are those of :func:`integrate_fast`, and

    substeps_per_cycle : int
        Integration steps per 8 ns FPGA cycle, 1..64 (default 8: 1 ns steps).
    record_every : int or None
        Record every this many steps (default ``substeps_per_cycle``: clock
        resolution). With a ``monitor``, give it there instead.
    record : bool
        False skips recording (codes and the voltage at the read only).
    monitor : Monitor or None
        Which columns and quantities to record (:class:`~bss2sim.circuits.monitors.Monitor`).
        None records what it always did: membrane, excitatory and inhibitory
        charge of all 256 columns.

    The recording takes ``8 bytes x vectors x samples x columns x quantities``
    (at most ``MAX_TRACE_BYTES``); what is recorded does not change the codes
    or the membrane at the read, and recorded values are bit-identical to the
    same columns of a full recording.
    """
    half, rc = _check_common(chip, half, schedule, read_cycle, noise)
    if isinstance(substeps_per_cycle, (bool, np.bool_)) or \
            not isinstance(substeps_per_cycle, (int, np.integer)) or not 1 <= substeps_per_cycle <= 64:
        raise ValueError(f"substeps_per_cycle={substeps_per_cycle!r} is out of range 1..64")
    record = check_bool("record", record)
    if monitor is not None:
        check_instance("monitor", monitor, Monitor, "bss2sim.circuits.Monitor or None (the default recording)")
        if record_every is not None:
            raise ValueError(f"record_every={record_every!r} is given beside monitor=...: "
                             "give it as Monitor(record_every=...) instead")
        if not record:
            raise ValueError("record=False is given with a monitor: pass monitor=None to record nothing")
        record_every = monitor.record_every
        quantities = monitor.quantities
        rec_cols = monitor.column_indices()
    else:
        record_every = check_record_every(record_every)
        quantities = DEFAULT_QUANTITIES
        rec_cols = np.arange(K.COLUMNS_PER_HALF, dtype=np.int64)
    if record_every is None:
        record_every = int(substeps_per_cycle)
    op = chip.operating_point(half)
    B = schedule.num_vectors
    dt_ns = K.FPGA_CYCLE_S * 1e9 / substeps_per_cycle
    total_steps = int(rc.max(initial=0)) * substeps_per_cycle \
        + int(np.ceil(_k.CADC_LEVELS * K.CADC_TICK_S * 1e9 / dt_ns)) + 1
    n_rec = total_steps // record_every + 1 if record else 0
    n_cols = len(rec_cols)
    nbytes = 8 * len(quantities) * B * n_rec * n_cols
    if nbytes > MAX_TRACE_BYTES:
        raise ValueError(f"recording {B} vectors x {n_rec} samples x {n_cols} columns x "
                         f"{len(quantities)} quantities needs {nbytes / 1e9:.1f} GB "
                         f"(limit MAX_TRACE_BYTES = {MAX_TRACE_BYTES / 1e9:.1f} GB); raise record_every, "
                         "pass fewer vectors, monitor fewer columns or quantities, or record=False")
    codes = np.zeros((B, K.COLUMNS_PER_HALF), np.uint8)
    v_read = np.zeros((B, K.COLUMNS_PER_HALF))
    shape = (B, n_rec, n_cols)
    unused = np.empty((0, 0, 0))
    rec = {q: (np.full(shape, np.nan) if q in quantities else None) for q in FIELDS}
    noise_on, seed, shared_seed, first = _noise_args(noise, B)
    if B:
        offsets, drv, cyc, width, inject = _event_arrays(chip, op, schedule)
        args = [unused if rec[q] is None else rec[q] for q in ("membrane", "syn_exc", "syn_inh", "cadc_ramp")]
        _k.integrate_trace_kernel(_ro(offsets), _ro(drv), _ro(cyc), _ro(width), _ro(inject),
                                  _ro(op.current_exc_ua), _ro(op.current_inh_ua),
                                  _ro(op.column_params), float(chip.effects.column_ir_drop_rel_per_ua),
                                  _ro(rc), K.FPGA_CYCLE_S * 1e9, K.CADC_TICK_S * 1e9,
                                  int(substeps_per_cycle), int(record_every), noise_on, seed, shared_seed,
                                  first, codes, v_read, _ro(rec_cols), *args)
    _apply_stuck(op, codes)
    times = np.arange(n_rec) * record_every * dt_ns * 1e-9
    # Internal units (mV, fC) to SI in place: no second copy of a large recording.
    for q, scale in (("membrane", 1e-3), ("syn_exc", 1e-15), ("syn_inh", 1e-15), ("cadc_ramp", 1e-3)):
        if rec[q] is not None:
            rec[q] *= scale
    return TraceResult(codes=codes, membrane_at_read_v=v_read * 1e-3, read_cycle=rc,
                       times_s=times, membrane_v=rec["membrane"], syn_exc_c=rec["syn_exc"],
                       syn_inh_c=rec["syn_inh"], cadc_ramp_v=rec["cadc_ramp"], columns=rec_cols)
