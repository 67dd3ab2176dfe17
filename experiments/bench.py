"""``bss2sim bench``: speed of the cycle-level model against numpy, measured
in the same run (figures, not assertions).

Analog core: 10,000 random 128-row input vectors at 50 % density through one
full half (128 signed rows x 256 columns), fast path with every non-ideality
and trial-to-trial noise on, against a numpy float32 matmul of the same
shapes; and the time-stepped trace path's time per vector.
"""
from __future__ import annotations

import time

import numpy as np

from circuits import Chip, EventSchedule, TrialNoise, integrate_fast, integrate_trace
from circuits import constants as K

from .common import emit_json, note

POST_EVENT_WAIT_CYCLES = 125


def _best_of(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_analog(num_vectors=10_000, density=0.5, wait_between_events=5, trace_vectors=4,
                 repeats=3, seed=0):
    chip = Chip(seed)
    rng = np.random.default_rng(seed)
    w = rng.integers(-K.WEIGHT_MAX, K.WEIGHT_MAX + 1, (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF))
    chip.config.set_logical_weights(0, w)
    x = rng.integers(1, K.INPUT_MAX + 1, (num_vectors, K.DRIVERS_PER_HALF))
    x *= rng.random(x.shape) < density
    note("compiling / loading kernels...")
    small = EventSchedule.from_inputs(x[:2], wait_between_events)
    integrate_fast(chip, 0, small, small.last_cycle() + POST_EVENT_WAIT_CYCLES, noise=TrialNoise(0))
    integrate_trace(chip, 0, small.slice(0, 1), small.last_cycle()[:1] + POST_EVENT_WAIT_CYCLES,
                    record=False)

    t_sched, sched = _best_of(lambda: EventSchedule.from_inputs(x, wait_between_events), repeats)
    read = sched.last_cycle() + POST_EVENT_WAIT_CYCLES
    t_fast, res = _best_of(lambda: integrate_fast(chip, 0, sched, read, noise=TrialNoise(1)), repeats)
    xf = x.astype(np.float32)
    wf = w.astype(np.float32)
    t_mm, _ = _best_of(lambda: xf @ wf, max(repeats, 5))
    tsched = sched.slice(0, trace_vectors)
    t_trace, _ = _best_of(lambda: integrate_trace(chip, 0, tsched, read[:trace_vectors],
                                                  noise=TrialNoise(2), record=False), 1)
    chip_time = float(np.sum(read * K.FPGA_CYCLE_S + K.CADC_CONVERSION_S))
    return {
        "vectors": num_vectors, "density": density, "wait_between_events": wait_between_events,
        "schedule_build_s": t_sched,
        "fast_path_s": t_fast,
        "numpy_matmul_float32_s": t_mm,
        "fast_over_matmul": t_fast / t_mm,
        "fast_stepped_column_fraction": float(res.stepped_columns.mean()),
        "trace_path_s_per_vector": t_trace / trace_vectors,
        "simulated_integration_time_s": chip_time,
        "simulated_over_wall_fast": chip_time / t_fast,
    }


def run(num_vectors=10_000, as_json=False, seed=0):
    import numba
    analog = bench_analog(num_vectors=num_vectors, seed=seed)
    a = analog
    print(f"analog core, one half (128 signed rows x 256 columns), {a['vectors']} vectors at "
          f"{a['density']:.0%} density, wait {a['wait_between_events']}, "
          f"{numba.get_num_threads()} threads:")
    print(f"  fast path, all non-idealities and noise on : {a['fast_path_s'] * 1e3:9.1f} ms")
    print(f"  numpy float32 matmul, same shapes          : {a['numpy_matmul_float32_s'] * 1e3:9.1f} ms")
    print(f"  ratio fast / matmul                        : {a['fast_over_matmul']:9.1f}")
    print(f"  schedule building (not in the above)       : {a['schedule_build_s'] * 1e3:9.1f} ms")
    print(f"  columns walked event by event              : {a['fast_stepped_column_fraction']:9.2%}")
    print(f"  trace path per vector (1 ns steps)         : {a['trace_path_s_per_vector'] * 1e3:9.1f} ms")
    print(f"  simulated integration time / wall (fast)   : {a['simulated_over_wall_fast']:9.3f}")
    out = {"threads": numba.get_num_threads(), "analog": analog}
    if as_json:
        emit_json(out)
    return out
