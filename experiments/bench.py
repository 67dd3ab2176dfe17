"""``bss2sim bench``: speed of the model against numpy, measured in the same
run (figures, not assertions).

* Analog core: 10,000 random 128-row input vectors at 50 % density through one
  full half (128 signed rows x 256 columns), fast path with every non-ideality
  and trial-to-trial noise on, against a numpy float32 matmul of the same
  shapes; and the time-stepped trace path's time per vector.
* Dense network: 784 -> 128 -> 10 with a converting ReLU, on 10,000 inputs,
  through ``Accelerator.matmul`` at both fidelities, and the behavioural model
  against a plain numpy implementation of the same formula.
* Calibration: wall time of a full-chip calibration.
* MNIST: the shipped network on the test set through the cycle-level chip.
"""
from __future__ import annotations

import time

import numpy as np

from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast, integrate_trace
from bss2sim.circuits import constants as K
from bss2sim.digital import Accelerator, BehaviouralParams, converting_relu

from .calibration.store import chip_with_calibration, describe
from .common import emit_json, note, peak_memory_mib

POST_EVENT_WAIT_CYCLES = 125

# Speed targets the benchmark compares with (the project's goals, not
# published figures): each is a ratio to a reference measured in the same run.
TARGET_FAST_OVER_MATMUL = 5.0
"""Analog fast path, all effects and noise on, at most this many times a numpy
float32 matmul of the same shapes."""
TARGET_CYCLE_LEVEL_OVER_FORMULA = 0.5
"""784-128-10 network: cycle-level images per second at least this fraction
of the plain numpy formula's."""
TARGET_BEHAVIOURAL_OVER_FORMULA = 0.8
"""Behavioural fidelity: images per second at least this fraction of the formula's."""
TARGET_MNIST_WALL_S = 6.0
"""The shipped network on the 10,000 MNIST test images through the
cycle-level chip, wall seconds on two cores."""
TARGET_PEAK_MEMORY_MIB = 2048.0
"""Peak resident memory of the demo, the bench and a sweep worker, MiB."""


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _best_of(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_analog(num_vectors=10_000, density=0.5, wait_between_events=5, trace_vectors=4,
                 repeats=3, seed=0, chip=None):
    chip = chip if chip is not None else Chip(seed)
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


def _numpy_behavioural_layer(x, w, gain, sigma, rng):
    """The behavioural formula written plainly: per 128-row tile
    floor(gain x.W + N(0, sigma^2)) clamped to int8, tiles summed and clamped."""
    acc = np.zeros((x.shape[0], w.shape[1]), np.int64)
    for r in range(0, x.shape[1], K.LOGICAL_ROWS_PER_HALF):
        part = gain * (x[:, r:r + K.LOGICAL_ROWS_PER_HALF].astype(np.float64)
                       @ w[r:r + K.LOGICAL_ROWS_PER_HALF].astype(np.float64))
        part = part + sigma * rng.standard_normal(part.shape)
        acc += np.clip(np.floor(part), K.OUTPUT_MIN, K.OUTPUT_MAX).astype(np.int64)
    return np.clip(acc, K.OUTPUT_MIN, K.OUTPUT_MAX)


def bench_network(num_images=10_000, seed=0, shift=1, chip=None, repeats=3):
    """784 -> 128 -> 10 dense network at both fidelities and in plain numpy
    (cycle level on ``chip``, default ``Chip(seed)``). The three run in turn
    for ``repeats`` rounds, and each keeps its best wall time, so a passing
    load on the machine slows none of them more than the others."""
    chip = chip if chip is not None else Chip(seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(1, K.INPUT_MAX + 1, (num_images, 784)) * (rng.random((num_images, 784)) < 0.2)
    w1 = np.clip(np.round(rng.normal(0, 20, (784, 128))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    w2 = np.clip(np.round(rng.normal(0, 20, (128, 10))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    params = BehaviouralParams(gain=0.0015, sigma=2.0)

    def forward(acc, xs):
        h = converting_relu(acc.matmul(xs, w1), shift)
        return acc.matmul(h.astype(np.int64), w2)

    def formula():
        nrng = np.random.default_rng(1)
        h = converting_relu(_numpy_behavioural_layer(x, w1, params.gain, params.sigma, nrng), shift)
        _numpy_behavioural_layer(h.astype(np.int64), w2, params.gain, params.sigma, nrng)

    out = {"images": num_images, "repeats": repeats}
    note("network benchmark: cycle-level...")
    forward(Accelerator(chip, noise_seed=1), x[:4])
    forward(Accelerator(behavioural=params, noise_seed=1), x[:4])
    makers = {"cycle_level": lambda: Accelerator(chip, noise_seed=1),
              "behavioural": lambda: Accelerator(behavioural=params, noise_seed=1)}
    best = {name: float("inf") for name in (*makers, "numpy_formula")}
    reports = {}
    for _ in range(max(1, int(repeats))):
        for name, make in makers.items():
            acc = make()
            t = time.perf_counter()
            forward(acc, x)
            best[name] = min(best[name], time.perf_counter() - t)
            reports[name] = acc.report()      # the same every round (same seeds)
        t = time.perf_counter()
        formula()
        best["numpy_formula"] = min(best["numpy_formula"], time.perf_counter() - t)
    for name, rep in reports.items():
        wall = best[name]
        out[name] = {"wall_time_s": wall, "images_per_s": num_images / wall,
                     "chip_time_per_image_s": rep["total_s"] / num_images,
                     "asic_energy_per_image_j": rep["asic_j"] / num_images,
                     "chip_time_over_wall": rep["total_s"] / wall}
    note("network benchmark: done")
    wall = best["numpy_formula"]
    out["numpy_formula"] = {"wall_time_s": wall, "images_per_s": num_images / wall}
    out["cycle_level_over_behavioural"] = out["cycle_level"]["wall_time_s"] / out["behavioural"]["wall_time_s"]
    out["behavioural_over_numpy"] = out["behavioural"]["wall_time_s"] / wall
    # Throughput ratios (images per second against the formula's), the targets' form.
    out["cycle_level_speed_over_formula"] = wall / out["cycle_level"]["wall_time_s"]
    out["behavioural_speed_over_formula"] = wall / out["behavioural"]["wall_time_s"]
    return out


def bench_calibration(seed=0):
    """Wall time of a full-chip calibration (all four steps, both halves)."""
    from .calibration import calibrate
    note("calibration benchmark...")
    t = time.perf_counter()
    cal = calibrate(Chip(seed))
    wall = time.perf_counter() - t
    return {"wall_time_s": wall, "silicon_time_s": cal.silicon_time_s, "measurements": cal.measurements,
            "capmem_writes": cal.capmem_writes, "silicon_over_wall": cal.silicon_time_s / wall}


def bench_mnist(num_images=10_000, seed=0, calibration=None):
    """The shipped MNIST network on ``num_images`` test images through the
    cycle-level chip: wall time against simulated chip time."""
    from .demo import run as demo_run
    import os
    import tempfile
    note("MNIST benchmark (cycle-level model)...")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.devnull, "w") as devnull:
            import contextlib
            with contextlib.redirect_stdout(devnull):
                r = demo_run(seed=seed, images=num_images, plots=tmp, calibration=calibration)
    return {"images": r["images"], "wall_time_s": r["wall_time_s"], "accuracy": r["accuracy"],
            "chip_time_s": r["chip_time_per_image_s"] * r["images"],
            "chip_time_over_wall": r["chip_time_over_wall"]}


def bench_sequences(seed=0, calibration=None, chip=None, mnist_images=500, dense_images=1_000):
    """Chip time and ASIC energy per image under each VMM sequence, for the
    shipped MNIST network (cycle level, calibrated chip, first ``mnist_images``
    test images) and for the 784 -> 128 -> 10 network of :func:`bench_network`
    (cycle level on ``chip``, ``dense_images`` images)."""
    import contextlib
    import os
    import tempfile

    from bss2sim.digital.sequences import SEQUENCES, VMM_SEQUENCES

    from .demo import run as demo_run
    chip = chip if chip is not None else Chip(seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(1, K.INPUT_MAX + 1, (dense_images, 784)) * (rng.random((dense_images, 784)) < 0.2)
    w1 = np.clip(np.round(rng.normal(0, 20, (784, 128))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    w2 = np.clip(np.round(rng.normal(0, 20, (128, 10))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    out = {}
    # A Yin-Yang-shaped network (4 features repeated 16 times, 64 hidden units, 3
    # classes) that fits one tile, so the standalone sequence can run it too.
    yy_x = np.repeat(rng.integers(0, K.INPUT_MAX + 1, (dense_images, 4)), 16, axis=1)
    yy_layers = [(rng.integers(-20, 21, (64, 64)), 1), (rng.integers(-20, 21, (64, 3)), None)]
    for sequence in SEQUENCES:
        acc = Accelerator(chip, noise_seed=1, sequence=sequence)
        acc.run_network(yy_x, yy_layers, num_sends=4)
        rep = acc.report()
        out.setdefault(sequence, {})["yinyang_64_64_3"] = {
            "samples": dense_images, "chip_time_per_sample_s": rep["total_s"] / dense_images,
            "asic_energy_per_sample_j": rep["asic_j"] / dense_images,
            "by_category_s": {k[:-2]: v / dense_images for k, v in rep.items() if k.endswith("_s") and k != "total_s"}}
    for sequence in VMM_SEQUENCES:
        note(f"chip time under the {sequence!r} sequence...")
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull, \
                contextlib.redirect_stdout(devnull):
            r = demo_run(seed=seed, images=mnist_images, plots=tmp, calibration=calibration, sequence=sequence)
        acc = Accelerator(chip, noise_seed=1, sequence=sequence)
        acc.matmul(converting_relu(acc.matmul(x, w1), 1).astype(np.int64), w2)
        rep = acc.report()
        out[sequence].update({
            "mnist": {"images": r["images"], "accuracy": r["accuracy"],
                      "chip_time_per_image_s": r["chip_time_per_image_s"],
                      "asic_energy_per_image_j": r["asic_energy_per_image_j"],
                      "system_energy_per_image_j": r["system_energy_per_image_j"],
                      "by_category_s": r["chip_time_per_image_by_category_s"]},
            "dense_784_128_10": {"images": dense_images, "chip_time_per_image_s": rep["total_s"] / dense_images,
                                 "asic_energy_per_image_j": rep["asic_j"] / dense_images,
                                 "system_energy_per_image_j": rep["system_j"] / dense_images,
                                 "by_category_s": {k[:-2]: v / dense_images for k, v in rep.items()
                                                   if k.endswith("_s") and k != "total_s"}}})
    return out


def bench_ppu(num_vectors=10_000):
    """The PPU interpreter: instructions per second of the fast engine and the
    plain-Python reference on one thread (2,000 instructions per bench vector:
    20 million at the default), and the libnux speed tests on the model."""
    from bss2sim.digital.nux import run_speed_tests
    from bss2sim.digital.nux.fast import benchmark
    res = benchmark(n_instructions=max(20_000, 2_000 * num_vectors),
                    reference_instructions=max(2_000, min(20_000, 2 * num_vectors)))
    res["speed_tests"] = run_speed_tests()
    return res


def run(num_vectors=10_000, as_json=False, seed=0, calibration=None):
    """All benchmarks in one run. ``num_vectors`` sizes each of them (analog
    vectors, network and MNIST images, 2,000 PPU instructions per vector),
    except the calibration benchmark, which calibrates one whole chip."""
    import numba
    chip, loaded = chip_with_calibration(seed, calibration)
    note(f"calibration: {describe(loaded)}")
    print(f"benchmark size {num_vectors} (--vectors): analog vectors, network and MNIST images "
          f"(at most the 10,000 test images), {2_000 * num_vectors:,} PPU instructions; the calibration "
          "benchmark calibrates one whole chip whatever the size")
    ppu = bench_ppu(num_vectors=num_vectors)
    analog = bench_analog(num_vectors=num_vectors, seed=seed, chip=chip)
    network = bench_network(num_images=num_vectors, seed=seed, chip=chip)
    calib = bench_calibration(seed=seed)
    mnist = bench_mnist(num_images=min(num_vectors, 10_000), seed=seed, calibration=calibration)
    sequences = bench_sequences(seed=seed, calibration=calibration, chip=chip,
                                mnist_images=min(num_vectors, 500), dense_images=min(num_vectors, 1_000))
    a = analog
    print(f"analog core, one half (128 signed rows x 256 columns), {a['vectors']} vectors at "
          f"{a['density']:.0%} density, wait {a['wait_between_events']}, "
          f"{numba.get_num_threads()} threads:")
    print(f"  fast path, all non-idealities and noise on : {a['fast_path_s'] * 1e3:9.1f} ms")
    print(f"  numpy float32 matmul, same shapes          : {a['numpy_matmul_float32_s'] * 1e3:9.1f} ms")
    print(f"  ratio fast / matmul                        : {a['fast_over_matmul']:9.1f}   "
          f"(target at most {TARGET_FAST_OVER_MATMUL:g}: "
          f"{_verdict(a['fast_over_matmul'] <= TARGET_FAST_OVER_MATMUL)})")
    print(f"  schedule building (not in the above)       : {a['schedule_build_s'] * 1e3:9.1f} ms")
    print(f"  columns walked event by event              : {a['fast_stepped_column_fraction']:9.2%}")
    print(f"  trace path per vector (1 ns steps)         : {a['trace_path_s_per_vector'] * 1e3:9.1f} ms")
    print(f"  simulated integration time / wall (fast)   : {a['simulated_over_wall_fast']:9.3f}")
    n = network
    print(f"dense network 784 -> 128 -> 10 (converting ReLU), {n['images']} images "
          f"(each the best of {n['repeats']} rounds, run in turn):")
    for name in ("cycle_level", "behavioural"):
        r = n[name]
        print(f"  {name:<12}: {r['images_per_s']:10.0f} images/s, {r['wall_time_s']:7.2f} s wall, "
              f"{r['chip_time_per_image_s'] * 1e6:7.1f} us chip time/image, "
              f"{r['asic_energy_per_image_j'] * 1e6:6.1f} uJ/image (ASIC), "
              f"chip time / wall {r['chip_time_over_wall']:.3f}")
    print(f"  numpy formula: {n['numpy_formula']['images_per_s']:10.0f} images/s")
    cl, bh = n["cycle_level_speed_over_formula"], n["behavioural_speed_over_formula"]
    print(f"  speed / formula: cycle-level {cl:.2f} (target at least {TARGET_CYCLE_LEVEL_OVER_FORMULA:g}: "
          f"{_verdict(cl >= TARGET_CYCLE_LEVEL_OVER_FORMULA)}), behavioural {bh:.2f} (target at least "
          f"{TARGET_BEHAVIOURAL_OVER_FORMULA:g}: {_verdict(bh >= TARGET_BEHAVIOURAL_OVER_FORMULA)})")
    c = calib
    print(f"full-chip calibration (4 steps, 512 neurons): {c['wall_time_s']:.1f} s wall, "
          f"{c['silicon_time_s']:.1f} s on silicon incl. capmem settling, "
          f"{c['measurements']} reads, {c['capmem_writes']} capmem writes")
    m = mnist
    full = m["images"] >= 10_000
    print(f"MNIST, shipped network, {m['images']} test images through the cycle-level chip: "
          f"{m['wall_time_s']:.1f} s wall "
          + (f"(target at most {TARGET_MNIST_WALL_S:g} s: {_verdict(m['wall_time_s'] <= TARGET_MNIST_WALL_S)})"
             if full else f"(the target of {TARGET_MNIST_WALL_S:g} s is for all 10,000)")
          + f", {m['chip_time_s']:.2f} s chip time, chip time / wall {m['chip_time_over_wall']:.3f}, "
          f"accuracy {m['accuracy']:.2%}")
    print(f"PPU interpreter (one thread), {ppu['instructions']:,} instructions of a mixed loop: "
          f"{ppu['instructions_per_second'] / 1e6:.1f} M instructions/s wall "
          f"({ppu['instructions_per_cpu_second'] / 1e6:.1f} M/s of CPU time; target at least 20 M/s), "
          f"plain-Python reference {ppu['reference_instructions_per_second'] / 1e6:.2f} M/s, "
          f"ratio {ppu['speedup']:.0f}")
    print("  libnux speed tests on the model (PPU cycles):  " + ", ".join(
        f"{r['name']} {r['measured_cycles']} ({r['published_cycles']} +- {r['tolerance_cycles']})"
        for r in ppu["speed_tests"]))
    print("chip time and ASIC energy per image under each VMM sequence (Stradmann et al. 2022: 276 us and "
          "192 uJ per ECG sample on the mobile system, another network):")
    for name, r in sequences.items():
        y = r["yinyang_64_64_3"]
        line = f"  {name:<10}: "
        if "mnist" in r:
            m, d = r["mnist"], r["dense_784_128_10"]
            line += (f"MNIST network {m['chip_time_per_image_s'] * 1e6:7.1f} us, "
                     f"{m['asic_energy_per_image_j'] * 1e6:6.1f} uJ ({m['images']} images, {m['accuracy']:.2%}); "
                     f"784-128-10 {d['chip_time_per_image_s'] * 1e6:7.1f} us, "
                     f"{d['asic_energy_per_image_j'] * 1e6:6.1f} uJ; ")
        line += (f"64-64-3 {y['chip_time_per_sample_s'] * 1e6:6.1f} us, {y['asic_energy_per_sample_j'] * 1e6:5.1f} uJ"
                 + ("" if "mnist" in r else " (the others do not fit one tile)"))
        print(line)
    peak = peak_memory_mib()
    print(f"peak memory of this run: {peak:.0f} MiB (target at most {TARGET_PEAK_MEMORY_MIB:.0f}: "
          f"{_verdict(peak <= TARGET_PEAK_MEMORY_MIB)})")
    out = {"chip_seed": seed, "calibration": None if loaded is None else loaded.to_dict(),
           "threads": numba.get_num_threads(), "vectors": num_vectors, "analog": analog,
           "network": network, "calibration_benchmark": calib, "mnist": mnist, "ppu": ppu,
           "sequences": sequences,
           "peak_memory_mib": peak}
    if as_json:
        emit_json(out)
    return out
