"""``bss2sim calibrate``: calibrate one chip, keep its calibration file and show
what each step did; ``bss2sim calibrate --validate N``: calibrate N chips and
judge the calibration against their hidden ground truth.

:func:`run` calibrates ``Chip(seed)`` (``bss2sim.experiments.calibration``, which only
configures and measures), saves the settings, and writes four figures of the
spread before and after each step, per quadrant, with the stated targets
marked:

* ``calibration_cadc.png``: per-channel CADC offsets at the mid reference;
* ``calibration_synapse_bias.png``: synapse amplitude per quadrant;
* ``calibration_drivers.png``: per-driver amplitudes per capmem block;
* ``calibration_neurons.png``: resting reads, excitatory and inhibitory
  amplitudes and their ratio per neuron.

It then measures the calibrated chip's behavioural parameters through VMMs
(``bss2sim.digital.measure_behaviour``) and prints them next to the silicon figures.

:func:`validate` judges the calibration of several chips against their
ground truth through :mod:`bss2sim.experiments.validation` (the one home of
every comparison that reads ``chip.truth``): the settings against the optimum
(CADC digital offsets, reset and leak potentials, driver offsets), the stated
targets (:data:`~bss2sim.experiments.validation.RESIDUAL_TARGETS`) on every
seed, and faults injected into one chip, each of which must be reported by
name. Figure: ``calibration_validation.png``. The figures themselves are drawn
by :mod:`bss2sim.experiments.calibration_figures`.
"""
from __future__ import annotations

import time

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K
from bss2sim.digital import measure_behaviour

from . import calibration_figures as figs
from .calibration import calibrate, store_calibration
from .calibration_figures import format_limit, format_value
from .common import DEFAULT_OUTPUT_DIR, emit_json, note, plots_dir, save_figure
from .validation import (RESIDUAL_TARGETS, check_targets, fault_report, residuals_before,
                         validate_chip)
from .vmm import SILICON_GAIN_BAND

SILICON_NOISE_LSB = 2.0
"""Trial-to-trial noise of one VMM result on calibrated silicon, about 2 LSB [SW]."""
SILICON_LINEAR_RANGE_LSB = 80
"""Linear range of calibrated silicon, about +-80 LSB [SW]."""


def _progress(prefix=""):
    names = {"cadc": "CADC ramps and channel offsets", "synapse_bias": "synapse bias per quadrant",
             "drivers": "driver ramps and offsets", "neurons": "neuron potentials and strengths"}
    counter = {"i": 0, "t": time.perf_counter()}

    def progress(name):
        counter["i"] += 1
        note(f"{prefix}step {counter['i']}/4 {name}: {names.get(name, name)} "
             f"({time.perf_counter() - counter['t']:.1f} s)")
    return progress


def _summary_lines(cal, checks, before):
    lines = [f"{'step':<13}{'residual':<46}{'before':>10}{'after':>10}{'target':>12}  met"]
    for name, t in RESIDUAL_TARGETS.items():
        vb = t.value(before, cal.target)
        c = checks[name]
        lines.append(f"{t.step:<13}{t.label + (' (' + t.unit + ')' if t.unit else ''):<46}"
                     f"{format_value(t, vb):>10}{format_value(t, c['value']):>10}{'<= ' + format_limit(t):>12}  "
                     f"{'yes' if c['met'] else 'NO'}")
    return lines


def run(seed: int = 0, out=None, plots=DEFAULT_OUTPUT_DIR, as_json=False) -> dict:
    """Calibrate ``Chip(seed)``, save its calibration into ``out`` (None: the
    calibration store; a folder; or a ``.npz`` file name), write four figures
    into ``plots`` and measure the calibrated chip's behaviour."""
    t_start = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chip = Chip(seed)
    note(f"calibrating chip seed {seed} (the first run compiles the numba kernels, about half a minute)...")
    cal = calibrate(chip, progress=_progress("  "))
    path = store_calibration(cal, chip, out)
    note(f"saved {path}")

    out_dir = plots_dir(plots)
    figures = []
    for name, make in (("calibration_cadc.png", figs.figure_cadc),
                       ("calibration_synapse_bias.png", figs.figure_synapse_bias),
                       ("calibration_drivers.png", figs.figure_drivers),
                       ("calibration_neurons.png", figs.figure_neurons)):
        fig = make(plt, seed, cal)
        p = out_dir / name
        save_figure(fig, p)
        plt.close(fig)
        figures.append(str(p))

    note("measuring the calibrated chip's behaviour through VMMs (96 vectors x 6 repeats, 33-step ramp)...")
    m = measure_behaviour(chip)
    behaviour = m.summary()

    residuals = cal.residuals()
    checks = check_targets(residuals, cal.target)
    before = residuals_before(cal)
    settling = cal.capmem_writes * K.CAPMEM_SETTLING_S
    result = {
        "chip_seed": seed, "target_id": cal.target.target_id,
        "residuals": residuals,
        "targets": {name: {**checks[name], "label": t.label, "unit": t.unit, "reason": t.reason}
                    for name, t in RESIDUAL_TARGETS.items()},
        "all_targets_met": all(c["met"] for c in checks.values()),
        "failures": cal.failures,
        "faulty_units": cal.faulty_units().to_dict(),
        "measurements": cal.measurements, "capmem_writes": cal.capmem_writes,
        "steps": [{"name": s.name, "measurements": s.measurements, "capmem_writes": s.capmem_writes,
                   "silicon_time_s": s.silicon_time_s, "failures": s.failures} for s in cal.steps],
        "calibration_wall_time_s": cal.wall_time_s, "silicon_time_s": cal.silicon_time_s,
        "capmem_settling_s": settling,
        "calibration": {"chip_seed": seed, "target_id": cal.target.target_id, "origin": "calibrated",
                        "path": str(path), "faulty_units": cal.faulty_units().to_dict()},
        "behaviour": behaviour,
        "figures": figures,
    }
    result["wall_time_s"] = time.perf_counter() - t_start

    print(f"chip seed {seed}, calibration target {cal.target.target_id} (CADC {cal.target.cadc_read_range[0]}/"
          f"{cal.target.cadc_read_range[1]} at {cal.target.cadc_reference_v[0]}/{cal.target.cadc_reference_v[1]} V, "
          f"rest {cal.target.resting_read:g}, test value {cal.target.test_value} x weight {cal.target.test_weight})")
    print("residual spreads (worst half / quadrant) against the stated targets:")
    for line in _summary_lines(cal, checks, before):
        print("  " + line)
    print(f"targets met: {sum(c['met'] for c in checks.values())}/{len(checks)}")
    if cal.failures:
        print(f"failures ({len(cal.failures)}):")
        for f in cal.failures:
            print(f"  {f}")
    else:
        print("failures: none")
    print("per step: " + "; ".join(f"{s.name} {s.measurements:,} reads, {s.capmem_writes} capmem writes, "
                                   f"{s.silicon_time_s:.2f} s" for s in cal.steps))
    print(f"measurements: {cal.measurements:,} analog reads; capmem writes: {cal.capmem_writes}")
    print(f"silicon time: {cal.silicon_time_s:.2f} s ({settling:.2f} s capmem settling at "
          f"{K.CAPMEM_SETTLING_S * 1e3:.0f} ms per write, {cal.silicon_time_s - settling:.3f} s reads and "
          f"SRAM writes); wall time of the calibration: {cal.wall_time_s:.1f} s")
    print(f"calibration file: {path}")
    lo, hi = m.linear_range
    in_band = SILICON_GAIN_BAND[0] <= m.gain <= SILICON_GAIN_BAND[1]
    print("behaviour after calibration (bss2sim.digital.measure_behaviour)   this chip        calibrated silicon [SW]")
    print(f"  gain (LSB per unit of x*w, median)                     {m.gain:<16.5f} "
          f"{SILICON_GAIN_BAND[0]:g}-{SILICON_GAIN_BAND[1]:g} ({'inside' if in_band else 'OUTSIDE'})")
    print(f"  trial-to-trial noise sigma_trial (LSB)                 {m.sigma_trial:<16.2f} "
          f"about {SILICON_NOISE_LSB:g}")
    print(f"  fixed-pattern gain spread sigma_fixed_pattern          {f'{m.sigma_fixed_pattern * 100:.1f} %':<16} -")
    print(f"  fixed-pattern offset spread (LSB)                      {m.offset_fixed_pattern_lsb:<16.2f} -")
    print(f"  linear range (LSB)                                     {f'{lo:.0f} .. {hi:.0f}':<16} "
          f"about +-{SILICON_LINEAR_RANGE_LSB}")
    for f in figures:
        print(f"wrote {f}")
    print(f"wall time {result['wall_time_s']:.1f} s (calibration {cal.wall_time_s:.1f} s)")
    if as_json:
        emit_json(result)
    return result


def validate(seeds=range(20), plots=DEFAULT_OUTPUT_DIR, as_json=False) -> dict:
    """Calibrate every chip seed in ``seeds``, check the stated targets, compare the
    chosen settings with the optimum from each chip's ground truth, and inject
    faults into the first seed's chip. Writes ``calibration_validation.png``."""
    t_start = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one chip seed")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must all be >= 0")
    note(f"validating the calibration on {len(seeds)} chip(s) (the first run compiles the numba kernels)...")
    per_seed = []
    pooled = {k: [] for k in ("cadc", "reset_potential", "leak_potential", "driver_width", "driver_amplitude")}
    spl = []
    target_id = None
    for i, seed in enumerate(seeds):
        r = validate_chip(seed, progress=_progress(f"  seed {seed} ({i + 1}/{len(seeds)}): "))
        target_id = r["target_id"]
        d = r.pop("differences")
        for k in pooled:
            pooled[k].append(d[k])
        spl.append(d["capmem_steps_per_lsb"])
        r.pop("target_id")
        per_seed.append(r)
        checks = r["targets"]
        missed = [n for n, c in checks.items() if not c["met"]]
        note(f"  seed {seed}: {r['wall_time_s']:.1f} s, targets met {len(checks) - len(missed)}/{len(checks)}"
             + (f" (missed: {', '.join(missed)})" if missed else "")
             + f", {len(r['failures'])} failure(s)")
    note(f"fault injection on chip seed {seeds[0]}...")
    fault = fault_report(seeds[0], progress=_progress(f"  faults, seed {seeds[0]}: "))

    diffs = {k: np.concatenate(v) for k, v in pooled.items()}
    diffs["capmem_steps_per_lsb"] = float(np.median(spl))
    out_dir = plots_dir(plots)
    fig = figs.figure_validation(plt, seeds, per_seed, fault, diffs)
    path = out_dir / "calibration_validation.png"
    save_figure(fig, path)
    plt.close(fig)
    figures = [str(path)]

    pass_counts = {n: int(sum(r["targets"][n]["met"] for r in per_seed)) for n in RESIDUAL_TARGETS}
    worst = {n: float(np.nanmax([r["targets"][n]["value"] for r in per_seed])) for n in RESIDUAL_TARGETS}
    median = {n: float(np.nanmedian([r["targets"][n]["value"] for r in per_seed])) for n in RESIDUAL_TARGETS}
    flagged = [dict(f, chip_seed=r["chip_seed"]) for r in per_seed
               for f in r["optimum"]["drivers"]["flagged_drivers"]]
    optimum_summary = {
        "cadc_fraction_within_1": float(np.mean(np.abs(diffs["cadc"]) <= 1)),
        "cadc_fraction_exact": float(np.mean(diffs["cadc"] == 0)),
        "cadc_truth_residual_max_lsb": float(max(max(r["optimum"]["cadc"]["truth_residual_max_lsb"])
                                                 for r in per_seed)),
        "reset_median_abs_difference_steps": float(np.median(np.abs(diffs["reset_potential"]))),
        "reset_p95_abs_difference_steps": float(np.percentile(np.abs(diffs["reset_potential"]), 95)),
        "reset_mean_difference_steps": float(np.mean(diffs["reset_potential"])),
        "leak_median_abs_difference_steps": float(np.median(np.abs(diffs["leak_potential"]))),
        "leak_mean_difference_steps": float(np.mean(diffs["leak_potential"])),
        "capmem_steps_per_lsb": diffs["capmem_steps_per_lsb"],
        "driver_width_median_abs_difference_steps": float(np.median(np.abs(diffs["driver_width"]))),
        "driver_width_p95_abs_difference_steps": float(np.percentile(np.abs(diffs["driver_width"]), 95)),
        "driver_amplitude_median_abs_difference_steps": float(np.median(np.abs(diffs["driver_amplitude"]))),
        "driver_amplitude_p95_abs_difference_steps": float(np.percentile(np.abs(diffs["driver_amplitude"]), 95)),
        "flagged_drivers": flagged,
    }
    walls = [r["wall_time_s"] for r in per_seed]
    result = {
        "chip_seeds": seeds, "target_id": target_id,
        "targets": {n: {"step": t.step, "key": t.key, "limit": t.limit, "label": t.label, "unit": t.unit,
                        "reason": t.reason} for n, t in RESIDUAL_TARGETS.items()},
        "per_seed": per_seed,
        "pass_counts": pass_counts, "worst": worst, "median": median,
        "all_met_count": int(sum(r["all_met"] for r in per_seed)),
        "optimum": optimum_summary,
        "fault_report": fault,
        "calibration_wall_time_s": {"mean": float(np.mean(walls)), "min": float(np.min(walls)),
                                    "max": float(np.max(walls)), "total": float(np.sum(walls))},
        "silicon_time_s_mean": float(np.mean([r["silicon_time_s"] for r in per_seed])),
        "figures": figures,
    }
    result["wall_time_s"] = time.perf_counter() - t_start

    n = len(seeds)
    print(f"calibration validated on {n} chip seed(s) {seeds[0]}..{seeds[-1]}, target {target_id}")
    print(f"  {'stated target':<52}{'limit':>9}{'median':>10}{'worst':>10}{'met':>8}")
    for name, t in RESIDUAL_TARGETS.items():
        print(f"  {t.label + (' (' + t.unit + ')' if t.unit else ''):<52}{format_limit(t):>9}"
              f"{format_value(t, median[name]):>10}{format_value(t, worst[name]):>10}{f'{pass_counts[name]}/{n}':>8}")
    print(f"  all targets met on {result['all_met_count']}/{n} chips")
    for r in per_seed:
        missed = [f"{nm} {format_value(RESIDUAL_TARGETS[nm], c['value'])}" for nm, c in r["targets"].items() if not c["met"]]
        if missed:
            print(f"    seed {r['chip_seed']}: missed {', '.join(missed)}")
    nfail = sum(len(r["failures"]) for r in per_seed)
    print(f"failures reported: {nfail} on {sum(bool(r['failures']) for r in per_seed)}/{n} chips")
    for r in per_seed:
        for f in r["failures"]:
            print(f"    seed {r['chip_seed']}: {f}")
    o = optimum_summary
    print("settings against the truth optimum (pooled over all chips):")
    print(f"  (a) CADC digital offsets: {o['cadc_fraction_within_1'] * 100:.2f} % within 1 code of the optimum, "
          f"{o['cadc_fraction_exact'] * 100:.1f} % exact; truth residual max |deviation| "
          f"{o['cadc_truth_residual_max_lsb']:.2f} LSB (worst chip and half)")
    print(f"  (b) reset potential: median |setting - optimum| {o['reset_median_abs_difference_steps']:.2f} "
          f"capmem steps "
          f"(95th percentile {o['reset_p95_abs_difference_steps']:.2f}, mean {o['reset_mean_difference_steps']:+.2f}); "
          f"leak potential: median {o['leak_median_abs_difference_steps']:.2f} (mean "
          f"{o['leak_mean_difference_steps']:+.2f}); {o['capmem_steps_per_lsb']:.1f} capmem steps per LSB")
    print(f"  (c) driver offsets: median |setting - optimum| {o['driver_width_median_abs_difference_steps']:.2f} steps "
          f"against equal pulse widths (95th percentile {o['driver_width_p95_abs_difference_steps']:.2f}), "
          f"{o['driver_amplitude_median_abs_difference_steps']:.2f} against equal width x synapse-row current "
          f"(95th {o['driver_amplitude_p95_abs_difference_steps']:.2f})")
    if flagged:
        inr = [f for f in flagged if f["optimum_in_range"]]
        print(f"      drivers reported as failures: {len(flagged)}; truth optimum (width x row) inside 0..63 for "
              f"{len(inr)}" + (": " + ", ".join(f"seed {f['chip_seed']} driver {f['driver']} half {f['half']} "
                                                f"(optimum {f['optimum_steps']:.1f})" for f in inr) if inr else "")
              + "; optimum of the others: " + ", ".join(
                  f"{f['optimum_steps']:.1f}" if f["optimum_steps"] is not None else "none (dead row)"
                  for f in flagged if not f["optimum_in_range"]))
    print(f"fault injection on chip seed {fault['chip_seed']}:")
    for f in fault["faults"]:
        print(f"  {f['fault']}: {'reported' if f['reported'] else 'NOT REPORTED'}"
              + (f" as \"{f['reported_as'][0]}\"" if f["reported_as"] else "")
              + (f" (+{len(f['consequential_failures'])} consequential: "
                 + "; ".join(f["consequential_failures"]) + ")" if f["consequential_failures"] else ""))
    print(f"  other failures: {'; '.join(fault['other_failures']) if fault['other_failures'] else 'none'}")
    miss_rep = [n for n, c in fault["targets_as_reported"].items() if not c["met"]]
    miss_exc = [n for n, c in fault["targets_excluding_flagged"].items() if not c["met"]]
    print(f"  targets missed as reported: {', '.join(miss_rep) if miss_rep else 'none'}; with the dead "
          f"CADC channels excluded: {', '.join(miss_exc) if miss_exc else 'none (the rest meets every target)'}")
    w = result["calibration_wall_time_s"]
    print(f"calibration wall time per chip {w['mean']:.1f} s (min {w['min']:.1f}, max {w['max']:.1f}); "
          f"silicon time per chip {result['silicon_time_s_mean']:.2f} s")
    for f in figures:
        print(f"wrote {f}")
    print(f"wall time {result['wall_time_s']:.1f} s")
    if as_json:
        emit_json(result)
    return result
