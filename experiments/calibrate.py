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

:func:`validate` is the one place that reads ``chip.truth``: it compares the
settings the calibration chose with the optimum computed from the ground truth
(CADC digital offsets, reset and leak potentials, driver offsets), checks the
stated targets (:data:`RESIDUAL_TARGETS`) on every seed, and injects faults into
one chip to show that each is reported by name. Figure:
``calibration_validation.png``.
"""
from __future__ import annotations

import re
import textwrap
import time
from dataclasses import dataclass

import numpy as np

from bss2sim.circuits import Chip, Faults
from bss2sim.circuits import constants as K
from bss2sim.circuits import kernels as _k
from bss2sim.circuits.chip import value_to_width_shape
from bss2sim.digital import measure_behaviour

from .calibration import CalibrationTarget, calibrate, save
from .calibration.steps import QUADRANT_OF_COLUMN, quadrant_median, voltage_setting
from .common import emit_json, note, plots_dir, save_figure
from .vmm import SILICON_GAIN_BAND

H, C, D = K.NUM_HALVES, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF
Q = K.QUADRANTS_PER_HALF
DRIVER_BLOCK = np.arange(D) // K.DRIVERS_PER_CAPMEM_BLOCK
HALF_NAMES = ("top", "bottom")
SIDE_NAMES = ("left", "right")

SILICON_NOISE_LSB = 2.0
"""Trial-to-trial noise of one VMM result on calibrated silicon, about 2 LSB [SW]."""
SILICON_LINEAR_RANGE_LSB = 80
"""Linear range of calibrated silicon, about +-80 LSB [SW]."""


@dataclass(frozen=True)
class ResidualTarget:
    """A stated target for one residual spread of ``ChipCalibration.residuals()``."""

    step: str
    key: str
    limit: float
    label: str
    unit: str
    reason: str
    centre: str | None = None
    """Name of a ``CalibrationTarget`` field: the residual is |value - that field|."""

    def value(self, residuals: dict, target: CalibrationTarget) -> float:
        """Worst value over halves / quadrants (NaN if the residual is missing)."""
        try:
            a = np.asarray(residuals[self.step][self.key], float)
        except KeyError:
            return float("nan")
        if self.centre is not None:
            a = np.abs(a - getattr(target, self.centre))
        # A residual the calibration could not compute (NaN, e.g. 0/0 on a dead channel)
        # is not a met target.
        return float(np.max(a)) if a.size and np.isfinite(a).all() else float("nan")


RESIDUAL_TARGETS = {
    "cadc_channel_offset": ResidualTarget(
        "cadc", "channel_offset_max_lsb", 1.0, "CADC channel offset, max |deviation|", "LSB",
        "integer digital offsets leave up to 0.5 LSB and the 64-read mean about 0.15 LSB of noise"),
    "synapse_quadrant_spread": ResidualTarget(
        "synapse_bias", "relative_spread", 0.02, "quadrant synapse amplitude, relative spread", "",
        "one bias step is 0.2 % of the amplitude; 2 % keeps quadrant borders below the neuron spread"),
    "driver_spread": ResidualTarget(
        "drivers", "driver_relative_spread", 0.02, "driver amplitude, relative spread (reached)", "",
        "one offset step (30 ps) is 1 % of the 2.9 ns test pulse; the search stops within 2 %"),
    "resting_read_std": ResidualTarget(
        "neurons", "resting_read_std_lsb", 1.5, "resting read, std", "LSB",
        "1 LSB search tolerance and 0.6 LSB noise of a 4-read mean add to about 1.2 LSB"),
    "resting_read_mean": ResidualTarget(
        "neurons", "resting_read_mean", 1.0, "resting read, |mean - 120|", "LSB",
        "a shift of the rest shifts every VMM output's zero; the search tolerance is 1 LSB",
        centre="resting_read"),
    "exc_spread": ResidualTarget(
        "neurons", "exc_relative_spread", 0.04, "excitatory amplitude, relative spread", "",
        "1 LSB search tolerance on a ~44 LSB amplitude (2.3 %) plus averaged read noise"),
    "inh_spread": ResidualTarget(
        "neurons", "inh_relative_spread", 0.04, "inhibitory amplitude, relative spread", "",
        "as the excitatory input: 1 LSB of a ~44 LSB amplitude plus averaged read noise"),
    "exc_inh_mismatch": ResidualTarget(
        "neurons", "exc_inh_mismatch_rel", 0.05, "exc/inh mismatch, std of exc/inh - 1", "",
        "exc and inh are matched separately: two ~2.5 % errors give ~3.5 %; +w and -w must agree"),
}
"""Stated targets of the residual spreads after calibration, each with its reason."""


def check_targets(residuals: dict, target: CalibrationTarget) -> dict:
    """name -> {value, limit, met} for every entry of :data:`RESIDUAL_TARGETS`."""
    out = {}
    for name, t in RESIDUAL_TARGETS.items():
        v = t.value(residuals, target)
        out[name] = {"value": v, "limit": t.limit, "met": bool(np.isfinite(v) and v <= t.limit)}
    return out


def _fmt(t: ResidualTarget, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.2f}" if t.unit else f"{v * 100:.1f} %"


def _fmt_limit(t: ResidualTarget) -> str:
    return f"{t.limit:g} {t.unit}" if t.unit else f"{t.limit * 100:g} %"


# --- what the calibration measured (no truth) ------------------------------------------

def _before_residuals(cal) -> dict:
    """The residual measures before each step, completed from the steps' details
    where a step records only per-element values before it."""
    out = {s.name: {k: np.asarray(v) for k, v in s.before.items()} for s in cal.steps}
    cd = cal.step("cadc").detail
    dev = cd["mid_before"] - quadrant_median(cd["mid_before"])[:, QUADRANT_OF_COLUMN]
    out["cadc"]["channel_offset_max_lsb"] = np.nanmax(np.abs(dev), axis=1)
    out["neurons"]["resting_read_mean"] = np.mean(cal.step("neurons").detail["rest_before"], axis=1)
    return out


def _neuron_residuals(detail, exclude) -> dict:
    """The neuron step's residual measures recomputed without the ``exclude``d
    channels (the same formulas as the step, NaN-aware)."""
    rest = np.where(exclude, np.nan, detail["rest_after"])
    exc = np.where(exclude, np.nan, detail["syn_strength_exc_after"])
    inh = np.where(exclude, np.nan, detail["syn_strength_inh_after"])

    def rel(a):
        return np.nanstd(a, axis=1) / np.nanmedian(a, axis=1)

    return {"resting_read_std_lsb": np.nanstd(rest, axis=1), "resting_read_mean": np.nanmean(rest, axis=1),
            "exc_relative_spread": rel(exc), "inh_relative_spread": rel(inh),
            "exc_inh_mismatch_rel": np.nanstd(exc / inh - 1, axis=1)}


def _residuals_excluding_dead(cal) -> dict:
    """``cal.residuals()`` with the neuron measures recomputed without the CADC
    channels the calibration itself found dead (the other steps already use
    medians or exclude what they flagged)."""
    res = cal.residuals()
    dead = np.asarray(cal.step("cadc").detail["dead_channels"], bool)
    if dead.any():
        res["neurons"].update({k: np.asarray(v).tolist() for k, v in
                               _neuron_residuals(cal.step("neurons").detail, dead).items()})
    return res


# --- figures of one calibration ----------------------------------------------------------

def _hist_pair(ax, before, after, bins, label_before, label_after, color="C0"):
    before = np.asarray(before, float)
    after = np.asarray(after, float)
    ax.hist(before[np.isfinite(before)], bins=bins, color="0.6", alpha=0.75, label=label_before)
    ax.hist(after[np.isfinite(after)], bins=bins, color=color, alpha=0.85, label=label_after)


def _edges(values, width, pad=1.0):
    """Bin edges of ``width`` centred on multiples of ``width``, covering ``values``."""
    v = np.concatenate([np.asarray(a, float).ravel() for a in values])
    v = v[np.isfinite(v)]
    lo, hi = v.min() - pad * width, v.max() + pad * width
    return (np.arange(np.floor(lo / width), np.ceil(hi / width) + 1) + 0.5) * width


def _quantised_edges(lo, hi, quantum, to_display):
    """Edges in display units of bins one ``quantum`` wide in the measured unit,
    centred on its multiples (the values a mean of reads can take), covering lo..hi."""
    k = np.arange(np.floor(lo / quantum) - 1, np.ceil(hi / quantum) + 2)
    return to_display((k + 0.5) * quantum)


def _density(ax, values, edges, **kw):
    """Histogram as neurons (or drivers) per display unit, values beyond the edges
    counted in the outermost bins; returns how many were beyond."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    lo, hi = edges[0], edges[-1]
    beyond = int(np.sum((v < lo) | (v > hi)))
    eps = 1e-9 * (hi - lo)
    counts, _ = np.histogram(np.clip(v, lo + eps, hi - eps), bins=edges)
    ax.stairs(counts / np.diff(edges), edges, fill=True, **kw)
    return beyond


def _fig_cadc(plt, seed, cal):
    step = cal.step("cadc")
    d = step.detail
    dead = np.asarray(d["dead_channels"], bool)
    dev_b = d["mid_before"] - quadrant_median(d["mid_before"])[:, QUADRANT_OF_COLUMN]
    mid_a = np.where(dead, np.nan, d["mid_after"])
    dev_a = mid_a - quadrant_median(mid_a)[:, QUADRANT_OF_COLUMN]
    lim = RESIDUAL_TARGETS["cadc_channel_offset"].limit
    bins = _edges([dev_b, dev_a[np.isfinite(dev_a)], [-lim, lim]], 0.25)
    low, high = np.asarray(step.after["low_read"]), np.asarray(step.after["high_read"])
    lo_code, hi_code = cal.target.cadc_read_range
    fig, axes = plt.subplots(H, Q, figsize=(13, 8.2), sharex=True)
    for h in range(H):
        for q in range(Q):
            ax = axes[h, q]
            cols = QUADRANT_OF_COLUMN == q
            b, a = dev_b[h, cols], dev_a[h, cols]
            ax.axvspan(-lim, lim, color="C2", alpha=0.15, label=f"target: max |deviation| <= {lim:g} LSB")
            _hist_pair(ax, b, a, bins,
                       f"before: std {np.std(b):.2f}, max |dev| {np.max(np.abs(b)):.1f} LSB",
                       f"after: std {np.nanstd(a):.2f}, max |dev| {np.nanmax(np.abs(a)):.2f} LSB")
            nd = int(dead[h, cols].sum())
            if nd:
                ax.plot([], [], " ", label=f"{nd} dead channel(s) excluded: "
                        + ", ".join(str(c) for c in np.flatnonzero(dead[h] & cols)))
            ax.set_title(f"{HALF_NAMES[h]} half, {SIDE_NAMES[q]} quadrant (channels "
                         f"{q * K.COLUMNS_PER_QUADRANT}-{(q + 1) * K.COLUMNS_PER_QUADRANT - 1}): "
                         f"references read {low[h, q]:.1f} / {high[h, q]:.1f} (target {lo_code} / {hi_code})",
                         fontsize=9)
            ax.set_ylabel("channels")
            ax.legend(fontsize=7.5, loc="upper left")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("code at the mid reference minus the quadrant's median (LSB)")
    v_mid = 0.5 * sum(cal.target.cadc_reference_v)
    fig.suptitle(f"Chip seed {seed}: CADC calibration, per-channel offsets at the {v_mid:.2f} V reference "
                 f"before (ramp and digital offsets at default) and after", fontsize=11)
    fig.tight_layout()
    return fig


def _fig_synapse_bias(plt, seed, cal):
    step = cal.step("synapse_bias")
    before = np.asarray(step.before["quadrant_amplitude_lsb"])
    after = np.asarray(step.after["quadrant_amplitude_lsb"])
    goal = float(step.detail["target_lsb"])
    lim = RESIDUAL_TARGETS["synapse_quadrant_spread"].limit
    names = [f"{HALF_NAMES[h]} half\n{SIDE_NAMES[q]} quadrant" for h in range(H) for q in range(Q)]
    x = np.arange(H * Q)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    bb = ax.bar(x - 0.2, before.ravel(), 0.38, color="0.6", label="before (bias at default)")
    ba = ax.bar(x + 0.2, after.ravel(), 0.38, color="C0", label="after")
    for bars in (bb, ba):
        for b in bars:
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{b.get_height():.2f}",
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(goal, color="k", lw=1.2, ls="--", label=f"goal {goal:.2f} LSB (weakest quadrant before)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("median amplitude of the quadrant's neurons (LSB)")
    ax.set_ylim(0, max(before.max(), after.max()) * 1.35)
    ax.set_title("amplitude per quadrant: 32 drivers x value "
                 f"{cal.target.test_value}, weights +{cal.target.test_weight}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax = axes[1]
    rb = 100 * (before / before.mean() - 1)
    ra = 100 * (after / after.mean() - 1)
    ax.axhspan(-100 * lim, 100 * lim, color="C2", alpha=0.15,
               label=f"target: relative spread <= {100 * lim:g} % (band +-{100 * lim:g} %)")
    ax.plot(x, rb.ravel(), "o", ms=9, color="0.5",
            label=f"before: spread {100 * float(step.before['relative_spread']):.2f} %")
    ax.plot(x, ra.ravel(), "D", ms=8, color="C0",
            label=f"after: spread {100 * float(step.after['relative_spread']):.2f} %")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlim(-0.6, H * Q - 0.4)
    m = max(np.abs(rb).max(), np.abs(ra).max(), 100 * lim) * 1.6
    ax.set_ylim(-m, m)
    ax.set_ylabel("deviation from the mean over quadrants (%)")
    ax.set_title("relative deviation per quadrant", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(f"Chip seed {seed}: synapse bias calibration, one capmem current per quadrant", fontsize=11)
    fig.tight_layout()
    return fig


def _fig_drivers(plt, seed, cal):
    step = cal.step("drivers")
    d = step.detail
    goal = float(d["driver_target_lsb"])
    ok = np.asarray(d["driver_reached"], bool)
    rb = 100 * (np.asarray(d["driver_amplitude_before"]) / goal - 1)
    ra = 100 * (np.asarray(d["driver_amplitude_after"]) / goal - 1)
    lim = RESIDUAL_TARGETS["driver_spread"].limit
    # Amplitudes are medians of 2-read means: before in steps of 0.5 LSB, after of
    # 0.25 LSB (the offset search reads them more finely): one bin per step, drawn
    # as drivers per % so that both compare.
    a_raw_b = np.asarray(d["driver_amplitude_before"])
    a_raw_a = np.asarray(d["driver_amplitude_after"])
    lo = min(a_raw_b.min(), a_raw_a.min(), goal * (1 - 1.5 * lim))
    hi = max(a_raw_b.max(), a_raw_a.max(), goal * (1 + 1.5 * lim))

    def to_pct(a):
        return 100 * (np.asarray(a) / goal - 1)

    edges_b = _quantised_edges(lo, hi, 0.5, to_pct)
    edges_a = _quantised_edges(lo, hi, 0.25, to_pct)
    blk_b = np.asarray(step.before["block_amplitude_lsb"])
    blk_a = np.asarray(step.after["block_amplitude_lsb"])
    fig, axes = plt.subplots(H, Q, figsize=(13, 8.2), sharex=True)
    for h in range(H):
        for b in range(Q):
            ax = axes[h, b]
            sel = DRIVER_BLOCK == b
            ax.axvspan(-100 * lim, 100 * lim, color="C2", alpha=0.15,
                       label=f"target: relative spread <= {100 * lim:g} % (band +-{100 * lim:g} %)")
            a_ok = np.where(ok[h, sel], ra[h, sel], np.nan)
            _density(ax, rb[h, sel], edges_b, color="0.6", alpha=0.75,
                     label=f"before (offsets 32): std {np.std(rb[h, sel]):.1f} %")
            _density(ax, a_ok, edges_a, color="C0", alpha=0.85,
                     label=f"after: std {np.nanstd(a_ok):.2f} % (reached drivers)")
            bad = np.flatnonzero(~ok[h] & sel)
            if bad.size:
                _density(ax, ra[h, bad], edges_a, color="C3",
                         label="not reached (failure): driver " + ", ".join(str(i) for i in bad))
            ax.set_title(f"{HALF_NAMES[h]} half, capmem block {b} (drivers {b * K.DRIVERS_PER_CAPMEM_BLOCK}-"
                         f"{(b + 1) * K.DRIVERS_PER_CAPMEM_BLOCK - 1}): block amplitude "
                         f"{blk_b[h, b]:.2f} -> {blk_a[h, b]:.2f} LSB", fontsize=9)
            ax.set_ylabel("drivers per % of amplitude")
            ax.legend(fontsize=7.5, loc="upper left")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.5)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(f"driver amplitude relative to the goal {goal:.2f} LSB (%)")
    fig.suptitle(f"Chip seed {seed}: synapse driver calibration (ramp per block, then 6-bit offset per driver); "
                 f"each driver alone, 16 events of value {cal.target.test_value}", fontsize=11)
    fig.tight_layout()
    return fig


def _fig_neurons(plt, seed, cal):
    step = cal.step("neurons")
    d = step.detail
    goal = float(d["amplitude_target_lsb"])
    rest_goal = cal.target.resting_read
    t = RESIDUAL_TARGETS

    def rest_disp(x):
        return np.asarray(x) - rest_goal

    def amp_disp(x):
        return 100 * (np.asarray(x) / goal - 1)

    ratio_b = d["syn_strength_exc_before"] / d["syn_strength_inh_before"]
    ratio_a = d["syn_strength_exc_after"] / d["syn_strength_inh_after"]
    # (label, before, after, display transform, quantum before, after (measured unit;
    # None: continuous, 1 % bins), band half-width, band label, unit). Resting reads are
    # 4-read means (0.25 LSB); amplitudes one read before (1 LSB) and 4-read means after.
    rows = [
        ("resting read - target (LSB)", d["rest_before"], d["rest_after"], rest_disp, 0.25, 0.25,
         t["resting_read_std"].limit,
         f"target {rest_goal:g}: |mean - {rest_goal:g}| <= {t['resting_read_mean'].limit:g}, "
         f"std <= {t['resting_read_std'].limit:g} LSB (band)", "LSB"),
        (f"excitatory amplitude / goal {goal:.1f} LSB - 1 (%)", d["syn_strength_exc_before"],
         d["syn_strength_exc_after"], amp_disp, 1.0, 0.25, 100 * t["exc_spread"].limit,
         f"target: relative spread <= {100 * t['exc_spread'].limit:g} % (band)", "%"),
        (f"inhibitory amplitude / goal {goal:.1f} LSB - 1 (%)", d["syn_strength_inh_before"],
         d["syn_strength_inh_after"], amp_disp, 1.0, 0.25, 100 * t["inh_spread"].limit,
         f"target: relative spread <= {100 * t['inh_spread'].limit:g} % (band)", "%"),
        ("excitatory / inhibitory amplitude - 1 (%)", ratio_b, ratio_a, lambda x: 100 * (np.asarray(x) - 1),
         None, None, 100 * t["exc_inh_mismatch"].limit,
         f"target: std <= {100 * t['exc_inh_mismatch'].limit:g} % (band)", "%"),
    ]
    fig, axes = plt.subplots(len(rows), H * Q, figsize=(17, 14))
    for r, (xlabel, raw_b, raw_a, disp, qb, qa, band, band_label, unit) in enumerate(rows):
        before, after = disp(raw_b), disp(raw_a)
        allv = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
        # The axis covers the 0.5th..99.5th percentile (a dead channel would stretch it);
        # values beyond are counted in the outermost bins.
        dlo, dhi = np.percentile(allv, [0.5, 99.5])
        dlo, dhi = min(dlo, -1.5 * band), max(dhi, 1.5 * band)
        if qb is None:
            edges_b = edges_a = _edges([[dlo, dhi]], 1.0, pad=0)
        else:
            inv = (lambda x: np.asarray(x) + rest_goal) if disp is rest_disp else \
                (lambda x: goal * (1 + np.asarray(x) / 100))
            edges_b = _quantised_edges(inv(dlo), inv(dhi), qb, disp)
            edges_a = _quantised_edges(inv(dlo), inv(dhi), qa, disp)
        for h in range(H):
            for q in range(Q):
                ax = axes[r, h * Q + q]
                cols = QUADRANT_OF_COLUMN == q
                b, a = before[h, cols], after[h, cols]
                ax.axvspan(-band, band, color="C2", alpha=0.15, label=band_label if h == q == 0 else None)
                ax.axvline(0, color="k", lw=0.8)
                nb = _density(ax, b, edges_b, color="0.6", alpha=0.75,
                              label=f"before: mean {np.nanmean(b):+.1f}, std {np.nanstd(b):.2f} {unit}")
                na = _density(ax, a, edges_a, color=f"C{r}", alpha=0.85,
                              label=f"after: mean {np.nanmean(a):+.2f}, std {np.nanstd(a):.2f} {unit}")
                if nb or na:
                    ax.plot([], [], " ", label=f"beyond the axis, in the edge bins: {nb} before, {na} after")
                if r == 0:
                    ax.set_title(f"{HALF_NAMES[h]} half, {SIDE_NAMES[q]} quadrant\n(neurons {q * 128}-{q * 128 + 127} "
                                 f"of the half)", fontsize=9)
                ax.set_xlim(min(edges_b[0], edges_a[0]), max(edges_b[-1], edges_a[-1]))
                ax.set_xlabel(xlabel, fontsize=8)
                if h == q == 0:
                    ax.set_ylabel(f"neurons per {unit}")
                ax.legend(fontsize=6.5, loc="upper left")
                ax.set_ylim(0, ax.get_ylim()[1] * (1.75 if h == q == 0 else 1.45))
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
    fig.suptitle(f"Chip seed {seed}: neuron calibration (reset and leak potentials, excitatory and inhibitory "
                 f"strengths), before and after, per quadrant", fontsize=11)
    fig.tight_layout()
    return fig


# --- run -------------------------------------------------------------------------------

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
                     f"{_fmt(t, vb):>10}{_fmt(t, c['value']):>10}{'<= ' + _fmt_limit(t):>12}  "
                     f"{'yes' if c['met'] else 'NO'}")
    return lines


def run(seed: int = 0, out="calibrations", plots="plots", as_json=False) -> dict:
    """Calibrate ``Chip(seed)``, save its calibration file into ``out``, write four
    figures into ``plots`` and measure the calibrated chip's behaviour."""
    t_start = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chip = Chip(seed)
    note(f"calibrating chip seed {seed} (the first run compiles the numba kernels, about half a minute)...")
    cal = calibrate(chip, progress=_progress("  "))
    path = save(cal, chip, out)
    note(f"saved {path}")

    out_dir = plots_dir(plots)
    figures = []
    for name, make in (("calibration_cadc.png", _fig_cadc), ("calibration_synapse_bias.png", _fig_synapse_bias),
                       ("calibration_drivers.png", _fig_drivers), ("calibration_neurons.png", _fig_neurons)):
        fig = make(plt, seed, cal)
        p = out_dir / name
        save_figure(fig, p)
        plt.close(fig)
        figures.append(str(p))

    note("measuring the calibrated chip's behaviour through VMMs (96 vectors x 6 repeats, 33-step ramp)...")
    m = measure_behaviour(chip)
    behaviour = {"gain": m.gain, "sigma_trial": m.sigma_trial, "sigma_fixed_pattern": m.sigma_fixed_pattern,
                 "offset_fixed_pattern_lsb": m.offset_fixed_pattern_lsb, "linear_range": list(m.linear_range)}

    residuals = cal.residuals()
    checks = check_targets(residuals, cal.target)
    before = _before_residuals(cal)
    settling = cal.capmem_writes * K.CAPMEM_SETTLING_S
    result = {
        "seed": seed, "target_id": cal.target.target_id,
        "residuals": residuals,
        "targets": {name: {**checks[name], "label": t.label, "unit": t.unit, "reason": t.reason}
                    for name, t in RESIDUAL_TARGETS.items()},
        "all_targets_met": all(c["met"] for c in checks.values()),
        "failures": cal.failures,
        "measurements": cal.measurements, "capmem_writes": cal.capmem_writes,
        "steps": [{"name": s.name, "measurements": s.measurements, "capmem_writes": s.capmem_writes,
                   "silicon_time_s": s.silicon_time_s, "failures": s.failures} for s in cal.steps],
        "wall_time_s": cal.wall_time_s, "silicon_time_s": cal.silicon_time_s,
        "capmem_settling_s": settling,
        "calibration_file": str(path),
        "behaviour": behaviour,
        "figures": figures,
    }
    result["total_wall_time_s"] = time.perf_counter() - t_start

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
    print(f"wall time {result['total_wall_time_s']:.1f} s (calibration {cal.wall_time_s:.1f} s)")
    if as_json:
        emit_json(result)
    return result


# --- validation against the ground truth (reads chip.truth) -----------------------------

def _column_params(chip, edit=None) -> np.ndarray:
    """float (2, rows, 256): the operating point's column parameters of both halves
    for the chip's configuration, or for a copy of it changed by ``edit``."""
    saved = chip.config
    try:
        if edit is not None:
            chip.config = saved.copy()
            edit(chip.config)
        return np.stack([np.asarray(chip.operating_point(h).column_params) for h in range(H)])
    finally:
        chip.config = saved


def _cadc_optimum(chip, cal) -> dict:
    """Digital offsets against the truth optimum. A channel reads
    floor(u + noise) + offset with u = (V + comparator offset - ramp start) / step;
    the optimum cancels each channel's u at the mid reference relative to its
    quadrant's median."""
    v_mid = 0.5 * sum(cal.target.cadc_reference_v)

    def to_reference(cfg):
        for h in range(H):
            cfg.set_cadc_input(h, "reference")
        cfg.set_capmem("cadc_reference", voltage_setting(v_mid))

    cp = _column_params(chip, to_reference)
    u = (cp[:, _k.V_RESET] + cp[:, _k.CADC_OFFSET] - cp[:, _k.CADC_START]) / cp[:, _k.CADC_STEP]
    stuck = np.asarray(chip.truth.cadc_stuck_code) >= 0
    u = np.where(stuck, np.nan, u)
    optimum = np.round(quadrant_median(u)[:, QUADRANT_OF_COLUMN] - u)
    chosen = np.asarray(chip.config.cadc_digital_offset, float)
    diff = (chosen - optimum)[~stuck]
    read = u + chosen
    resid = read - quadrant_median(read)[:, QUADRANT_OF_COLUMN]
    return {"fraction_within_1": float(np.mean(np.abs(diff) <= 1)), "fraction_exact": float(np.mean(diff == 0)),
            "max_abs_difference": float(np.max(np.abs(diff))),
            "truth_residual_max_lsb": np.nanmax(np.abs(resid), axis=1).tolist(),
            "truth_residual_std_lsb": np.nanstd(resid, axis=1).tolist(),
            "differences": diff.astype(int)}


def _potential_optimum(chip, cal) -> dict:
    """Reset and leak potential settings against the settings whose truth voltage
    reads ``resting_read`` on average: mean code = u - 0.5 + digital offset, so the
    voltage is ramp start + (code + 0.5 - offset) x step - comparator offset,
    inverted through the truth capmem gain and offset and the neuron's offset."""
    cp = _column_params(chip)
    code = cal.target.resting_read
    v_star = 1e-3 * (cp[:, _k.CADC_START] + (code + 0.5 - cp[:, _k.DIGITAL_OFFSET]) * cp[:, _k.CADC_STEP]
                     - cp[:, _k.CADC_OFFSET])
    per_step = K.CAPMEM_VOLTAGE_FULL_SCALE_V / K.CAPMEM_MAX
    lsb_steps = cp[:, _k.CADC_STEP] * 1e-3 / per_step
    stuck = np.asarray(chip.truth.cadc_stuck_code) >= 0
    t = chip.truth
    out = {}
    for name, neuron_offset in (("reset_potential", t.reset_offset_v), ("leak_potential", t.leak_offset_v)):
        optimum = (v_star - neuron_offset - t.capmem_offset[name]) / (t.capmem_gain[name] * per_step)
        diff = (np.asarray(chip.config.capmem(name), float) - optimum)[~stuck]
        out[name] = {"median_abs_difference_steps": float(np.median(np.abs(diff))),
                     "p95_abs_difference_steps": float(np.percentile(np.abs(diff), 95)),
                     "mean_difference_steps": float(np.mean(diff)),
                     "fraction_within_1_step_of_rounded": float(np.mean(np.abs(
                         np.asarray(chip.config.capmem(name), float)[~stuck] - np.round(optimum[~stuck])) <= 1)),
                     "differences": diff}
    out["capmem_steps_per_lsb"] = float(np.median(lsb_steps))
    return out


def _driver_optimum(chip, cal) -> dict:
    """Driver offsets against the settings that equalise the truth pulse widths at
    the test value within each capmem block (the common level of a block is set by
    the amplitude goal, not by the widths: it is taken from the calibrated widths).

    ``width``: pulse widths alone; ``amplitude``: widths times the driver's
    excitatory synapse row's current relative to its columns, which is what the
    calibration's amplitude measurement equalises."""
    t, cpar = chip.truth, chip.circuit
    value = cal.target.test_value
    shape = value_to_width_shape(np.arange(K.INPUT_MAX + 1), cpar.pulse_nonlinearity)[value]
    base = t.driver_gain * cpar.pulse_width_per_value_s * shape + t.driver_offset_s        # (2, 128) s
    step = cpar.driver_offset_step_s
    chosen = np.asarray(chip.config.driver_offset, float)
    width = base + (chosen - 32) * step
    reached = np.asarray(cal.step("drivers").detail["driver_reached"], bool)
    sg = np.asarray(t.synapse_gain)[:, 0::2, :]          # excitatory row 2d of driver d
    col_ref = np.median(sg, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_factor = np.median(sg / col_ref, axis=2)     # (2, 128)
    out = {}
    for kind, factor in (("width", np.ones((H, D))), ("amplitude", row_factor)):
        optimum = np.full((H, D), np.nan)
        for h in range(H):
            for b in range(Q):
                sel = (DRIVER_BLOCK == b) & reached[h] & (factor[h] > 0)
                level = np.median(width[h, sel] * factor[h, sel])
                blk = (DRIVER_BLOCK == b) & (factor[h] > 0)
                optimum[h, blk] = 32 + (level / factor[h, blk] - base[h, blk]) / step
        in_range = np.isfinite(optimum) & (optimum >= -0.5) & (optimum <= K.DRIVER_OFFSET_MAX + 0.5)
        cmp = reached & in_range
        diff = (chosen - optimum)[cmp]
        rounded = np.clip(np.round(optimum), 0, K.DRIVER_OFFSET_MAX)
        out[kind] = {"median_abs_difference_steps": float(np.median(np.abs(diff))),
                     "p95_abs_difference_steps": float(np.percentile(np.abs(diff), 95)),
                     "fraction_within_1_step_of_rounded": float(np.mean(np.abs(chosen[cmp] - rounded[cmp]) <= 1)),
                     "compared_drivers": int(cmp.sum()),
                     "optimum_out_of_range": [[int(h), int(d)] for h, d in zip(*np.nonzero(~in_range))],
                     "differences": diff}
        if kind == "amplitude":
            flagged = []
            for h, d in zip(*np.nonzero(~reached)):
                opt = optimum[h, d]
                flagged.append({"half": int(h), "driver": int(d),
                                "optimum_steps": float(opt) if np.isfinite(opt) else None,
                                "optimum_in_range": bool(in_range[h, d])})
            out["flagged_drivers"] = flagged
    # How far the row factor alone moves the optimum: its spread in offset steps.
    with np.errstate(divide="ignore"):
        out["row_factor_spread_steps"] = float(np.nanstd(
            np.where(row_factor > 0, (1 / row_factor - 1) * np.median(width) / step, np.nan)))
    return out


def _optimum(chip, cal) -> dict:
    return {"cadc": _cadc_optimum(chip, cal), "potentials": _potential_optimum(chip, cal),
            "drivers": _driver_optimum(chip, cal)}


FAULTS = Faults(dead_synapse_rows=((0, 40),), stuck_cadc_channels=((1, 17, 200),),
                driver_offset_extra_s=((0, 90, 3e-9),))
"""Faults injected into one validation chip."""
FAULT_EXPECTATIONS = (
    ("dead synapse row 40 of half 0 (excitatory row of driver 20)", r"driver 20 of half 0\b", None),
    ("CADC channel 17 of half 1 stuck at code 200", r"CADC channel 17 of half 1\b", r"neuron 17 \(half 1\)"),
    ("driver 90 of half 0 with +3 ns pulse-width offset", r"driver 90 of half 0\b", None),
)
"""(fault, pattern of the failure that must name it, pattern of consequential failures)."""


def _fault_run(seed) -> dict:
    chip = Chip(seed, faults=FAULTS)
    # The stuck channel's amplitudes are 0, so the neuron step's exc/inh ratio divides 0 by 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        cal = calibrate(chip, progress=_progress(f"  faults, seed {seed}: "))
    failures = cal.failures
    faults, explained = [], set()
    for what, primary, related in FAULT_EXPECTATIONS:
        named = [f for f in failures if re.search(primary, f)]
        rel = [f for f in failures if related is not None and re.search(related, f)]
        explained.update(named)
        explained.update(rel)
        faults.append({"fault": what, "reported": bool(named), "reported_as": named,
                       "consequential_failures": rel})
    other = [f for f in failures if f not in explained]
    as_reported = check_targets(cal.residuals(), cal.target)
    excluding = check_targets(_residuals_excluding_dead(cal), cal.target)
    return {"seed": seed, "faults": faults, "all_reported": all(f["reported"] for f in faults),
            "other_failures": other, "failures": failures,
            "targets_as_reported": as_reported,
            "targets_excluding_flagged": excluding,
            "rest_meets_targets": all(c["met"] for c in excluding.values()),
            "wall_time_s": cal.wall_time_s, "silicon_time_s": cal.silicon_time_s,
            "optimum": _strip(_optimum(chip, cal))}


def _strip(opt):
    """The optimum comparison without its per-element arrays (for JSON and lists)."""
    if isinstance(opt, dict):
        return {k: _strip(v) for k, v in opt.items() if k != "differences"}
    return opt


def _fig_validation(plt, seeds, per_seed, fault, diffs):
    fig = plt.figure(figsize=(16, 10.5))
    gs = fig.add_gridspec(2, 3, height_ratios=[1.05, 1])
    ax = fig.add_subplot(gs[0, :])
    names = list(RESIDUAL_TARGETS)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        vals = np.array([r["targets"][name]["value"] for r in per_seed]) / RESIDUAL_TARGETS[name].limit
        met = vals <= 1
        x = i + rng.uniform(-0.18, 0.18, len(vals))
        ax.plot(x[met], vals[met], "o", ms=5, color="C0", alpha=0.8,
                label=f"seeds {min(seeds)}-{max(seeds)}: target met" if i == 0 else None)
        ax.plot(x[~met], vals[~met], "o", ms=6, color="C3", mec="k",
                label="target missed" if i == 0 else None)
        if (~met).any():
            missed = [str(r["seed"]) for r, m_ in zip(per_seed, met) if not m_]
            ax.text(i, np.nanmax(vals) * 1.12, textwrap.fill("missed: seed " + ", ".join(missed), 22),
                    color="C3", fontsize=7, ha="center", va="bottom")
        if name == "cadc_channel_offset":
            truth = np.array([max(r["optimum"]["cadc"]["truth_residual_max_lsb"]) for r in per_seed]) \
                / RESIDUAL_TARGETS[name].limit
            ax.plot(x, truth, "v", ms=4, color="k", alpha=0.6,
                    label="CADC: noise-free truth residual of the same chips")
        fv = fault["targets_as_reported"][name]["value"] / RESIDUAL_TARGETS[name].limit
        fx = fault["targets_excluding_flagged"][name]["value"] / RESIDUAL_TARGETS[name].limit
        ax.plot(i + 0.3, fv, "x", ms=9, mew=2, color="C1",
                label=f"fault chip (seed {fault['seed']}), as reported" if i == 0 else None)
        if not np.isfinite(fv):
            ax.text(i + 0.3, 1.25, "fault chip\nas reported:\nNaN", color="C1", fontsize=7, ha="center",
                    va="bottom")
        ax.plot(i + 0.3, fx, "+", ms=11, mew=2, color="C2",
                label="fault chip, dead CADC channels excluded" if i == 0 else None)
        ax.text(i, -0.02, f"{int(np.sum(met))}/{len(vals)} met", ha="center", va="top", fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.axhline(1, color="k", ls="--", lw=1.2, label="stated target")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [textwrap.fill(f"{RESIDUAL_TARGETS[n].label} (<= "
                                                    f"{_fmt_limit(RESIDUAL_TARGETS[n])})", 26)
                                      for n in names], fontsize=8)
    ax.tick_params(axis="x", pad=14)
    ax.set_xlim(-0.5, len(names) - 0.3)
    ax.set_ylabel("residual / stated target (log)")
    ax.set_title("residual spreads after calibration, worst half or quadrant of each chip, relative to "
                 "the stated targets", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", ncol=3)
    ax.grid(alpha=0.3, which="both")

    ax = fig.add_subplot(gs[1, 0])
    d = diffs["cadc"]
    vals, counts = np.unique(d, return_counts=True)
    ax.bar(vals, counts / d.size * 100, color="C0", width=0.8)
    for v, c in zip(vals, counts):
        ax.text(v, c / d.size * 100, f"{c / d.size * 100:.1f} %", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(vals)
    ax.set_xlabel("calibrated - truth-optimal digital offset (codes)")
    ax.set_ylabel(f"channels (%), {d.size:,} working channels")
    ax.set_ylim(0, 115)
    ax.set_title(f"(a) CADC digital offsets: {np.mean(np.abs(d) <= 1) * 100:.2f} % within 1 code, "
                 f"{np.mean(d == 0) * 100:.1f} % exact", fontsize=10)

    ax = fig.add_subplot(gs[1, 1])
    r, lk = diffs["reset_potential"], diffs["leak_potential"]
    lim = np.percentile(np.abs(np.concatenate([r, lk])), 99.8)
    bins = np.linspace(-lim, lim, 41)
    ax.hist(r, bins=bins, color="C0", alpha=0.7, label=f"reset: median |diff| {np.median(np.abs(r)):.2f} steps")
    ax.hist(lk, bins=bins, histtype="step", lw=1.5, color="C3",
            label=f"leak: median |diff| {np.median(np.abs(lk)):.2f} steps")
    spl = diffs["capmem_steps_per_lsb"]
    ax.axvspan(-spl / 2, spl / 2, color="C2", alpha=0.12, label=f"+-0.5 LSB of the read ({spl:.1f} steps per LSB)")
    ax.set_xlabel("calibrated - truth setting reading 120 (capmem steps)")
    ax.set_ylabel("neurons")
    ax.set_title("(b) reset and leak potentials", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)

    ax = fig.add_subplot(gs[1, 2])
    w, a = diffs["driver_width"], diffs["driver_amplitude"]
    lim = np.percentile(np.abs(np.concatenate([w, a])), 99.8)
    bins = np.linspace(-lim, lim, 41)
    ax.hist(w, bins=bins, color="C0", alpha=0.7,
            label=f"equal pulse widths: median |diff| {np.median(np.abs(w)):.2f}")
    ax.hist(a, bins=bins, histtype="step", lw=1.5, color="C3",
            label=f"equal width x synapse row: median |diff| {np.median(np.abs(a)):.2f}")
    ax.set_xlabel("calibrated - truth-optimal driver offset (offset-setting steps), per block")
    ax.set_ylabel("drivers (reached, optimum in range)")
    ax.set_title("(c) driver offsets at the test value", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    for a_ in fig.axes[1:]:
        a_.grid(alpha=0.3)
    fig.suptitle(f"Calibration validated on chip seeds {min(seeds)}-{max(seeds)} ({len(seeds)} chips) against "
                 f"their ground truth; settings pooled over all chips", fontsize=11)
    fig.tight_layout()
    return fig


def validate(seeds=range(20), plots="plots", as_json=False) -> dict:
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
    target = None
    for i, seed in enumerate(seeds):
        chip = Chip(seed)
        cal = calibrate(chip, progress=_progress(f"  seed {seed} ({i + 1}/{len(seeds)}): "))
        target = cal.target
        residuals = cal.residuals()
        checks = check_targets(residuals, cal.target)
        opt = _optimum(chip, cal)
        pooled["cadc"].append(opt["cadc"]["differences"])
        pooled["reset_potential"].append(opt["potentials"]["reset_potential"]["differences"])
        pooled["leak_potential"].append(opt["potentials"]["leak_potential"]["differences"])
        pooled["driver_width"].append(opt["drivers"]["width"]["differences"])
        pooled["driver_amplitude"].append(opt["drivers"]["amplitude"]["differences"])
        spl.append(opt["potentials"]["capmem_steps_per_lsb"])
        per_seed.append({"seed": seed, "residuals": residuals, "targets": checks,
                         "all_met": all(c["met"] for c in checks.values()),
                         "failures": cal.failures, "measurements": cal.measurements,
                         "capmem_writes": cal.capmem_writes, "wall_time_s": cal.wall_time_s,
                         "silicon_time_s": cal.silicon_time_s, "optimum": _strip(opt)})
        missed = [n for n, c in checks.items() if not c["met"]]
        note(f"  seed {seed}: {cal.wall_time_s:.1f} s, targets met {len(checks) - len(missed)}/{len(checks)}"
             + (f" (missed: {', '.join(missed)})" if missed else "")
             + f", {len(cal.failures)} failure(s)")
    note(f"fault injection on chip seed {seeds[0]}...")
    fault = _fault_run(seeds[0])

    diffs = {k: np.concatenate(v) for k, v in pooled.items()}
    diffs["capmem_steps_per_lsb"] = float(np.median(spl))
    out_dir = plots_dir(plots)
    fig = _fig_validation(plt, seeds, per_seed, fault, diffs)
    path = out_dir / "calibration_validation.png"
    save_figure(fig, path)
    plt.close(fig)
    figures = [str(path)]

    pass_counts = {n: int(sum(r["targets"][n]["met"] for r in per_seed)) for n in RESIDUAL_TARGETS}
    worst = {n: float(np.nanmax([r["targets"][n]["value"] for r in per_seed])) for n in RESIDUAL_TARGETS}
    median = {n: float(np.nanmedian([r["targets"][n]["value"] for r in per_seed])) for n in RESIDUAL_TARGETS}
    flagged = [dict(f, seed=r["seed"]) for r in per_seed
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
        "seeds": seeds, "target_id": target.target_id,
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
    print(f"calibration validated on {n} chip seed(s) {seeds[0]}..{seeds[-1]}, target {target.target_id}")
    print(f"  {'stated target':<52}{'limit':>9}{'median':>10}{'worst':>10}{'met':>8}")
    for name, t in RESIDUAL_TARGETS.items():
        print(f"  {t.label + (' (' + t.unit + ')' if t.unit else ''):<52}{_fmt_limit(t):>9}"
              f"{_fmt(t, median[name]):>10}{_fmt(t, worst[name]):>10}{f'{pass_counts[name]}/{n}':>8}")
    print(f"  all targets met on {result['all_met_count']}/{n} chips")
    for r in per_seed:
        missed = [f"{nm} {_fmt(RESIDUAL_TARGETS[nm], c['value'])}" for nm, c in r["targets"].items() if not c["met"]]
        if missed:
            print(f"    seed {r['seed']}: missed {', '.join(missed)}")
    nfail = sum(len(r["failures"]) for r in per_seed)
    print(f"failures reported: {nfail} on {sum(bool(r['failures']) for r in per_seed)}/{n} chips")
    for r in per_seed:
        for f in r["failures"]:
            print(f"    seed {r['seed']}: {f}")
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
              f"{len(inr)}" + (": " + ", ".join(f"seed {f['seed']} driver {f['driver']} half {f['half']} "
                                                f"(optimum {f['optimum_steps']:.1f})" for f in inr) if inr else "")
              + "; optimum of the others: " + ", ".join(
                  f"{f['optimum_steps']:.1f}" if f["optimum_steps"] is not None else "none (dead row)"
                  for f in flagged if not f["optimum_in_range"]))
    print(f"fault injection on chip seed {fault['seed']}:")
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
