"""Figures of ``bss2sim calibrate``: what each calibration step did (spread
before and after, per quadrant, with the stated targets marked) and the
validation against the ground truth across chips.

Each function takes ``plt`` (matplotlib.pyplot, imported by the caller with a
non-interactive backend) and returns the figure; the caller saves it.
"""
from __future__ import annotations

import textwrap

import numpy as np

from bss2sim.circuits import constants as K

from .calibration.steps import QUADRANT_OF_COLUMN, quadrant_median
from .validation import RESIDUAL_TARGETS, ResidualTarget

H, C, D = K.NUM_HALVES, K.COLUMNS_PER_HALF, K.DRIVERS_PER_HALF
Q = K.QUADRANTS_PER_HALF
DRIVER_BLOCK = np.arange(D) // K.DRIVERS_PER_CAPMEM_BLOCK
HALF_NAMES = ("top", "bottom")
SIDE_NAMES = ("left", "right")


def format_value(t: ResidualTarget, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.2f}" if t.unit else f"{v * 100:.1f} %"


def format_limit(t: ResidualTarget) -> str:
    return f"{t.limit:g} {t.unit}" if t.unit else f"{t.limit * 100:g} %"


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


def figure_cadc(plt, seed, cal):
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


def figure_synapse_bias(plt, seed, cal):
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


def figure_drivers(plt, seed, cal):
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


def figure_neurons(plt, seed, cal):
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
    # One panel per quantity (2 x 2), legible at normal size: all neurons before
    # (grey), and after calibration one outline per quadrant, so quadrant
    # differences stay visible without 16 small panels.
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, (xlabel, raw_b, raw_a, disp, qb, qa, band, band_label, unit) in zip(axes.ravel(), rows):
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
        ax.axvspan(-band, band, color="C2", alpha=0.15, label=band_label)
        ax.axvline(0, color="k", lw=0.8)
        b = before.ravel()
        nb = _density(ax, b, edges_b, color="0.6", alpha=0.6,
                      label=f"before, all neurons: mean {np.nanmean(b):+.1f}, std {np.nanstd(b):.2f} {unit}")
        beyond = nb
        for h in range(H):
            for q in range(Q):
                a = after[h, QUADRANT_OF_COLUMN == q]
                clipped = np.clip(a[np.isfinite(a)], edges_a[0], edges_a[-1])
                counts, _ = np.histogram(clipped, bins=edges_a)
                beyond += int(np.sum((a < edges_a[0]) | (a > edges_a[-1])))
                ax.stairs(counts / np.diff(edges_a), edges_a, lw=1.6, color=f"C{h * Q + q + 3}",
                          label=f"after, {HALF_NAMES[h]} {SIDE_NAMES[q]}: mean {np.nanmean(a):+.2f}, "
                                f"std {np.nanstd(a):.2f} {unit}")
        if beyond:
            ax.plot([], [], " ", label=f"{beyond} value(s) beyond the axis, in the edge bins")
        ax.set_xlim(min(edges_b[0], edges_a[0]), max(edges_b[-1], edges_a[-1]))
        ax.set_xlabel(xlabel, fontsize=10)
        ax.set_ylabel(f"neurons per {unit}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.9)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Chip seed {seed}: neuron calibration (reset and leak potentials, excitatory and inhibitory "
                 f"strengths), before (all 512 neurons) and after (per quadrant of 128)", fontsize=11)
    fig.tight_layout()
    return fig


def figure_validation(plt, seeds, per_seed, fault, diffs):
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
            missed = [str(r["chip_seed"]) for r, m_ in zip(per_seed, met) if not m_]
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
                label=f"fault chip (seed {fault['chip_seed']}), as reported" if i == 0 else None)
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
                                                    f"{format_limit(RESIDUAL_TARGETS[n])})", 26)
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
