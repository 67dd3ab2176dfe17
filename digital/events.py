"""The FPGA event interface: how input vectors become timed events on the
synapse drivers of both halves.

Facts [TH][SW]: the FPGA event timer runs at 125 MHz (8 ns per cycle); a
driver accepts at most one event every 8 ns; events for the two halves leave
in pairs, one slot every ``wait_between_events`` cycles; a zero input sends no
event and costs no time; ``num_sends`` repeats the whole vector to raise the
gain. A dense 128-row vector at ``wait_between_events=5`` thus spends
128 x 5 x 8 ns = 5.12 us per send in its event phase (about 5.1 us [SW]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import as_int_array, check_int
from bss2sim.circuits.events import EventSchedule

MAX_WAIT_BETWEEN_EVENTS = 255
"""Largest spacing accepted, in FPGA cycles (*assumed* 8-bit timer field)."""
MAX_NUM_SENDS = 256
"""Largest number of repetitions of a vector accepted: 256, as the chip group's
software offers (its tutorials use 100) [SW]."""
MAX_EVENT_PHASE_CYCLES = K.DRIVERS_PER_HALF * MAX_WAIT_BETWEEN_EVENTS * MAX_NUM_SENDS
"""Longest event phase of one vector: 128 events x 255 cycles x 64 sends =
8,355,840 FPGA cycles (67 ms)."""


def check_wait(wait_between_events, name="wait_between_events"):
    """Validate ``wait_between_events`` (FPGA cycles, 1..255)."""
    return check_int(name, wait_between_events, K.DRIVER_MIN_EVENT_INTERVAL_CYCLES,
                     MAX_WAIT_BETWEEN_EVENTS, "FPGA cycles (8 ns; a driver accepts at most one "
                     "event per cycle)")


def check_num_sends(num_sends, name="num_sends"):
    """Validate ``num_sends`` (1..256)."""
    return check_int(name, num_sends, 1, MAX_NUM_SENDS)


@dataclass(frozen=True)
class PairedSchedule:
    """Events of one batch of vector pairs (one vector per half) sent together.

    Attributes
    ----------
    halves : tuple of EventSchedule
        The schedule of each half, cycles counted from the membrane reset.
    event_phase_cycles : int64 (num_vectors,)
        FPGA cycles from the first slot to the end of the last slot of all sends,
        over both halves (the longer of the two).
    slots_per_send : int64 (num_vectors,)
        Event slots of one send: the larger non-zero count of the two halves.
    half_phase_cycles : int64 (2, num_vectors)
        Each half's own event phase: its non-zero count x wait x num_sends. Each
        half's PPU reads its CADC after its own phase, so a vector's result never
        depends on the vector the other half runs.
    """

    halves: tuple
    event_phase_cycles: np.ndarray
    slots_per_send: np.ndarray
    half_phase_cycles: np.ndarray


@njit(cache=True, parallel=True)
def _half_schedule_kernel(x, counts, start, wait, num_sends, offsets, driver, value, cycle):
    # Each vector writes its own range of the event arrays: any thread order
    # gives the same arrays.
    for b in prange(x.shape[0]):
        k = offsets[b]
        n = counts[b]
        if n == 0:
            continue
        # The first send's events, then copies of it num_sends - 1 times.
        for d in range(x.shape[1]):
            if x[b, d] != 0:
                driver[k] = d
                value[k] = x[b, d]
                k += 1
        first = offsets[b]
        for j in range(n, n * num_sends):
            driver[first + j] = driver[first + j - n]
            value[first + j] = value[first + j - n]
        for j in range(n * num_sends):
            cycle[first + j] = start[b] + j * wait


def _half_schedule(x, counts, start_cycle, wait, num_sends):
    """One half's schedule: a vector with n = ``counts[vector]`` non-zero inputs
    sends them in driver order, ``num_sends`` times back to back, so its j-th
    event (send j // n, rank j % n) leaves at ``start + j * wait``."""
    counts = np.ascontiguousarray(counts, np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts * num_sends, out=offsets[1:])
    total = int(offsets[-1])
    driver, value, cycle = (np.empty(total, np.int64) for _ in range(3))
    start = np.broadcast_to(np.asarray(start_cycle, np.int64), counts.shape)
    _half_schedule_kernel(np.ascontiguousarray(x), counts, np.ascontiguousarray(start), int(wait),
                          int(num_sends), offsets, driver, value, cycle)
    # Valid by construction (inputs checked, cycles bounded by the caller), so
    # the schedule skips the constructor's checks: this runs for every VMM.
    return EventSchedule._trusted(offsets, driver, value, cycle)


def end_aligned_schedule(x, counts, longest, first_slot_cycle, wait, num_sends):
    """One half's events for the VMM sequences: a vector with ``L = counts *
    num_sends`` events, in a pair whose longer half sends ``longest`` (per
    vector), starts ``longest - L`` slots late so that both halves' last events
    coincide; slot k leaves at ``first_slot_cycle + k * wait`` (FPGA cycles
    from the half's reset). Inputs are trusted (checked by the caller)."""
    start = first_slot_cycle + (longest - counts * num_sends) * wait
    return _half_schedule(x, counts, np.asarray(start, np.int64), wait, num_sends)


def paired_schedule(x_top, x_bottom, wait_between_events=5, num_sends=1, start_cycle=0) -> PairedSchedule:
    """Events for a batch of vector pairs, one vector per half.

    Events of the two halves leave in pairs: slot ``k`` carries the ``k``-th event
    of each half's stream, slots ``wait_between_events`` cycles apart. A half's
    stream is its vector's non-zero inputs in driver order, repeated
    ``num_sends`` times, so send ``s`` of a half starts ``s * nnz * wait`` cycles
    after ``start_cycle``; the event phase lasts as long as the longer stream.

    Parameters
    ----------
    x_top, x_bottom : int arrays (num_vectors, 128), values 0..31, or None
        Inputs of each half; None means that half sends nothing.
    """
    wait = check_wait(wait_between_events)
    sends = check_num_sends(num_sends)
    start_cycle = check_int("start_cycle", start_cycle, 0, K.MAX_CYCLE - MAX_EVENT_PHASE_CYCLES,
                            "FPGA cycles (8 ns)")
    xs = []
    shape = None
    for name, x in (("x_top", x_top), ("x_bottom", x_bottom)):
        if x is None:
            xs.append(None)
            continue
        x = as_int_array(name, x, 0, K.INPUT_MAX)
        if x.ndim != 2 or x.shape[1] != K.DRIVERS_PER_HALF:
            raise ValueError(f"{name} has shape {x.shape}; expected (num_vectors, {K.DRIVERS_PER_HALF})")
        if shape is not None and x.shape[0] != shape:
            raise ValueError(f"x_top and x_bottom hold {shape} and {x.shape[0]} vectors; they must match")
        shape = x.shape[0]
        xs.append(x.astype(np.int64))
    if shape is None:
        raise ValueError("x_top and x_bottom are both None; at least one half needs inputs")
    zeros = np.zeros((shape, K.DRIVERS_PER_HALF), np.int64)
    xs = [zeros if x is None else x for x in xs]
    counts = [np.count_nonzero(x, axis=1).astype(np.int64) for x in xs]
    slots = np.maximum(counts[0], counts[1])
    halves = tuple(_half_schedule(x, n, int(start_cycle), wait, sends) for x, n in zip(xs, counts))
    return PairedSchedule(halves=halves, event_phase_cycles=slots * wait * sends, slots_per_send=slots,
                          half_phase_cycles=np.stack(counts) * wait * sends)
