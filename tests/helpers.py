"""Shared helpers of the analog-core tests (schedule builders, comparisons)."""
from __future__ import annotations

import numpy as np
from bss2sim.circuits import EventSchedule

def events_of(schedule: EventSchedule, b: int):
    """Events of vector b as a list of (driver, value, cycle) tuples."""
    d, a, c = schedule.vector(b)
    return [(int(x), int(y), int(z)) for x, y, z in zip(d, a, c)]


def sparse_inputs(rng, num_vectors, active, low=1, high=31):
    """Inputs (num_vectors, 128) with ``active`` random non-zero entries per row."""
    x = np.zeros((num_vectors, 128), np.int64)
    for b in range(num_vectors):
        idx = rng.choice(128, size=active, replace=False)
        x[b, idx] = rng.integers(low, high + 1, size=active)
    return x


def irregular_schedule(rng, num_vectors, events_per_vector, max_gap=12, p_same=0.3,
                       low=1, high=31, drivers=None):
    """Random schedule with irregular gaps: after each event the next one comes
    0 cycles later (another driver, same cycle) with probability ``p_same``,
    otherwise 1..max_gap cycles later."""
    drivers = np.arange(128) if drivers is None else np.asarray(drivers)
    vectors = []
    for _ in range(num_vectors):
        events, cycle, used = [], int(rng.integers(0, 5)), set()
        for _ in range(events_per_vector):
            free = [d for d in drivers if d not in used]
            if not free or rng.random() >= p_same:
                cycle += int(rng.integers(1, max_gap + 1))
                used = set()
                free = list(drivers)
            d = int(rng.choice(free))
            used.add(d)
            events.append((d, int(rng.integers(low, high + 1)), cycle))
        vectors.append(events)
    return EventSchedule.from_lists(vectors)


def rms_and_max(a, b):
    d = np.asarray(a, np.int64) - np.asarray(b, np.int64)
    return float(np.sqrt(np.mean(d.astype(float) ** 2))), int(np.abs(d).max())


def one_driver_logical(driver, weight, columns=slice(None)):
    """Logical weights with a single non-zero row."""
    w = np.zeros((128, 256), np.int64)
    w[driver, columns] = weight
    return w
