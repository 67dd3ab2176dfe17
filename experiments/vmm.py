"""``bss2sim vmm``: characterisation of one chip as a vector-matrix
multiplier, through integer matmuls only.

The chip ``Chip(seed)``, with its calibration from the store by default
(``--calibration none``: as fabricated, uncalibrated), is measured the way one would on silicon: int8 results against the integer-exact
reference ``x . W``, never the hidden ground truth. The text output and the
JSON (``noise_correlation_same_quadrant``, ``noise_correlation_other_quadrant``,
``noise_shared_quadrant_lsb``, ``noise_independent_lsb``) report how much of
the trial-to-trial noise the columns of a quadrant share. Six figures:

* ``vmm_linearity.png``: output against ``x . W`` for random vectors on all 512
  neurons with the fitted line, and for inputs strong enough to saturate;
* ``vmm_gain_histogram.png``: per-neuron gains against the published silicon
  band of 0.0012-0.002 LSB per unit of x*w [SW];
* ``vmm_noise.png``: trial-to-trial noise next to the fixed-pattern spread;
* ``vmm_saturation.png``: saturation points of every neuron;
* ``vmm_gain_map.png``: gain per block of 16 synapse drivers and column;
* ``vmm_gain_vs_wait.png``: gain against the event spacing ``wait_between_events``.
"""
from __future__ import annotations

import time

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.digital import Accelerator, measure_behaviour

from .calibration.store import chip_with_calibration, describe
from .common import DEFAULT_OUTPUT_DIR, emit_json, note, plots_dir, save_figure

ROWS = K.LOGICAL_ROWS_PER_HALF
COLS = K.COLUMNS_PER_HALF
NEURONS = K.NUM_NEURONS
DRIVERS_PER_BLOCK = 16
ROW_BLOCKS = K.DRIVERS_PER_HALF // DRIVERS_PER_BLOCK
SILICON_GAIN_BAND = (0.0012, 0.002)
"""Gain of calibrated silicon, LSB per unit of x*w per send [SW]."""
DEFAULT_WAIT = 5
FIT_WINDOW_LSB = 60
"""Repeat means within +-60 LSB enter the line fits, as in bss2sim.digital.measure."""

SIZES = {
    False: dict(main_vectors=96, main_repeats=6, ramp_steps=33,
                lin_vectors=128, lin_repeats=4, strong_vectors=128,
                map_vectors=12, map_repeats=2,
                waits=(1, 2, 3, 5, 8, 12), wait_vectors=32, wait_repeats=3),
    # The saturation ramp is cheap (33 vectors per sign) and a coarser one cannot
    # locate the bend on most neurons (17 steps: 435 of 512 unreliable on chip 0),
    # so the quick run keeps the full ramp.
    True: dict(main_vectors=16, main_repeats=2, ramp_steps=33,
               lin_vectors=24, lin_repeats=2, strong_vectors=24,
               map_vectors=3, map_repeats=2,
               waits=(1, 5, 12), wait_vectors=8, wait_repeats=2),
}
"""Measurement sizes of the default and the quick run. ``map_vectors`` is per
row block and weight sign (both signs are measured)."""


# --- measurements -----------------------------------------------------------------

def _fit_columns(ideal, y, mask):
    """Least-squares line ``y = gain * ideal + offset`` per column over the masked
    points (vectorised); NaN where fewer than 3 points or no spread."""
    m = mask.astype(float)
    n = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (m * ideal).sum(axis=0) / n
        my = (m * y).sum(axis=0) / n
        dx = (ideal - mx) * m
        sxx = (dx * dx).sum(axis=0)
        sxy = (dx * (y - my)).sum(axis=0)
        gain = sxy / sxx
    bad = (n < 3) | (sxx <= 0)
    gain = np.where(bad, np.nan, gain)
    offset = np.where(bad, np.nan, my - gain * mx)
    return gain, offset


def _linearity(chip, rng, cfg, noise_seed):
    """Random vectors (repeated) within the linear range and strong ones that saturate."""
    acc = Accelerator(chip, noise_seed=noise_seed)
    # Weak: weights with a small per-neuron bias, so that x . W covers most of the
    # linear range instead of clustering around zero.
    n = cfg["lin_vectors"]
    bias = rng.uniform(-25, 25, (1, NEURONS))
    w = np.clip(np.rint(bias + rng.normal(0, 30, (ROWS, NEURONS))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    density = rng.uniform(0.05, 0.6, (n, 1))
    x = rng.integers(1, K.INPUT_MAX + 1, (n, ROWS)) * (rng.random((n, ROWS)) < density)
    ys = np.stack([acc.matmul(x, w) for _ in range(cfg["lin_repeats"])]).astype(float)
    ideal = x @ w
    # Strong: larger per-neuron bias and denser, larger inputs drive the outputs
    # past the membrane rails and the int8 range.
    # Half the vectors go through W and half through -W, so that every neuron is
    # driven into both its lower and its upper saturation.
    n = cfg["strong_vectors"]
    bias = rng.uniform(20, K.WEIGHT_MAX, (1, NEURONS)) * rng.choice([-1, 1], (1, NEURONS))
    ws = np.clip(np.rint(bias + rng.normal(0, 15, (ROWS, NEURONS))), -K.WEIGHT_MAX, K.WEIGHT_MAX).astype(np.int64)
    density = rng.uniform(0.05, 1.0, (n, 1))
    xs = rng.integers(1, K.INPUT_MAX + 1, (n, ROWS)) * (rng.random((n, ROWS)) < density)
    half = n // 2
    ystrong = np.concatenate([acc.matmul(xs[:half], ws), acc.matmul(xs[half:], -ws)]).astype(float)
    ideal_strong = np.concatenate([xs[:half] @ ws, xs[half:] @ -ws])
    return {"ideal": ideal, "ys": ys, "ideal_strong": ideal_strong, "y_strong": ystrong}


def _gain_map(chip, rng, cfg, noise_seed):
    """Gain per (row block of 16 drivers, neuron): inputs only on that block, weights
    of one sign and random magnitude, measured for both signs; a line per neuron
    through the repeat means against x . W."""
    acc = Accelerator(chip, noise_seed=noise_seed)
    gains = np.full((ROW_BLOCKS, NEURONS), np.nan)
    n = cfg["map_vectors"]
    for b in range(ROW_BLOCKS):
        rows = slice(b * DRIVERS_PER_BLOCK, (b + 1) * DRIVERS_PER_BLOCK)
        mag = rng.integers(20, K.WEIGHT_MAX + 1, (DRIVERS_PER_BLOCK, NEURONS))
        ideal_all, y_all = [], []
        for sign in (1, -1):
            w = np.zeros((ROWS, NEURONS), np.int64)
            w[rows] = sign * mag
            density = rng.uniform(0.3, 1.0, (n, 1))
            x = np.zeros((n, ROWS), np.int64)
            x[:, rows] = rng.integers(1, K.INPUT_MAX + 1, (n, DRIVERS_PER_BLOCK)) * \
                (rng.random((n, DRIVERS_PER_BLOCK)) < density)
            y = np.stack([acc.matmul(x, w) for _ in range(cfg["map_repeats"])]).mean(axis=0)
            ideal_all.append(x @ w)
            y_all.append(y)
        ideal = np.concatenate(ideal_all).astype(float)
        y = np.concatenate(y_all)
        gains[b], _ = _fit_columns(ideal, y, np.abs(y) <= FIT_WINDOW_LSB)
    return gains


def _gain_vs_wait(chip, cfg, noise_seed, seed):
    """Median (and quartiles of) per-neuron gain for each event spacing."""
    rows = []
    for wait in cfg["waits"]:
        note(f"  wait_between_events={wait} ({wait * K.FPGA_CYCLE_S * 1e9:.0f} ns)...")
        mb = measure_behaviour(chip, num_vectors=cfg["wait_vectors"], repeats=cfg["wait_repeats"],
                               wait_between_events=wait, noise_seed=noise_seed, seed=seed, ramp_steps=3)
        g = mb.gain_per_neuron
        rows.append((int(wait), float(np.nanmedian(g)), float(np.nanpercentile(g, 25)),
                     float(np.nanpercentile(g, 75))))
    return rows


# --- figures ------------------------------------------------------------------------

def _fig_linearity(plt, who, m, lin, cfg):
    g = m.gain
    lo, hi = m.linear_range
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4))

    ax = axes[0]
    ideal = lin["ideal"].ravel()
    y0 = lin["ys"][0].ravel()
    ax.plot(ideal, y0, ".", ms=1.5, alpha=0.08, color="C0", rasterized=True)
    ax.plot([], [], ".", color="C0", label=f"single reads: {lin['ideal'].shape[0]} vectors x 512 neurons")
    xl = np.array([ideal.min(), ideal.max()])
    ax.plot(xl, g * xl, color="C3", lw=1.5, label=f"fit: {g:.5f} LSB x (x.W)  (median gain)")
    for v, txt in ((lo, "linear range"), (hi, None)):
        ax.axhline(v, color="k", ls="--", lw=0.9, label=None if txt is None else
                   f"measured linear range {lo:.0f}..{hi:.0f} LSB")
    ax.set_ylim(min(lo, y0.min()) - 12, max(hi, y0.max()) + 12)
    ax.set_title("within the linear range (random inputs, density 5-60 %)", fontsize=10)

    ax = axes[1]
    ideal_s = lin["ideal_strong"]
    ys = lin["y_strong"]
    ax.plot(ideal_s.ravel(), ys.ravel(), ".", ms=1.5, alpha=0.06, color="0.45", rasterized=True)
    ax.plot([], [], ".", color="0.45", label=f"single reads: {ideal_s.shape[0]} strong vectors x 512 neurons")
    xl = np.array([ideal_s.min(), ideal_s.max()])
    ax.plot(xl, np.clip(g * xl, K.OUTPUT_MIN - 20, K.OUTPUT_MAX + 20), color="C3", lw=1.2,
            label="median-gain line")
    # Three example neurons at the 5th, 50th and 95th percentile of the width of
    # their linear range; diamonds: their measured saturation points on their own line.
    width = m.saturation_high - m.saturation_low
    order = np.argsort(np.where(np.isfinite(width), width, np.inf))
    nfin = int(np.isfinite(width).sum())
    examples = [order[int(q * (nfin - 1))] for q in (0.05, 0.5, 0.95)]
    for k, nrn in enumerate(examples):
        s = np.argsort(ideal_s[:, nrn])
        ax.plot(ideal_s[s, nrn], ys[s, nrn], "-o", ms=2.5, lw=1.0, color=f"C{k}",
                label=f"neuron {nrn}: saturation points {m.saturation_low[nrn]:.0f} / "
                      f"{m.saturation_high[nrn]:.0f} LSB")
        gn, on = m.gain_per_neuron[nrn], m.offset_per_neuron[nrn]
        if np.isfinite(gn) and gn > 0:
            sat = np.array([m.saturation_low[nrn], m.saturation_high[nrn]])
            ax.plot((sat - on) / gn, sat, "D", ms=8, color=f"C{k}", mec="k", zorder=6)
    ax.axhspan(lo, hi, color="C2", alpha=0.08, label=f"measured linear range {lo:.0f}..{hi:.0f} LSB (median)")
    for v in (K.OUTPUT_MIN, K.OUTPUT_MAX):
        ax.axhline(v, color="k", lw=0.8, ls=":")
    ax.plot([], [], "k:", lw=0.8, label="int8 limits -128 / 127")
    ax.set_ylim(K.OUTPUT_MIN - 25, K.OUTPUT_MAX + 25)
    ax.set_title("strong inputs: saturation (dense inputs, weights biased per neuron, W and -W)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("ideal x.W (integer-exact, units of x*w)")
        ax.set_ylabel("VMM output (int8 LSB)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(3, 3), useMathText=True)
        ax.grid(alpha=0.3)
        leg = ax.legend(fontsize=7.5, loc="upper left")
        for h in leg.legend_handles:
            h.set_alpha(1)
    fig.suptitle(f"{who}: VMM output against the ideal x.W, all 512 neurons, "
                 f"wait {DEFAULT_WAIT} (40 ns), 1 send", fontsize=11)
    fig.tight_layout()
    return fig


def _fig_gain_histogram(plt, who, m):
    g = m.gain_per_neuron[np.isfinite(m.gain_per_neuron)]
    fig, ax = plt.subplots(figsize=(8, 5))
    lo_b, hi_b = SILICON_GAIN_BAND
    span = np.array([min(g.min(), lo_b), max(g.max(), hi_b)])
    bins = np.linspace(span[0] - 0.05 * np.ptp(span), span[1] + 0.05 * np.ptp(span), 60)
    ax.axvspan(lo_b, hi_b, color="C2", alpha=0.15,
               label=f"published calibrated silicon {lo_b:g}-{hi_b:g} [SW]")
    if len(g) == NEURONS:
        ax.hist([m.gain_per_neuron[:COLS], m.gain_per_neuron[COLS:]], bins=bins, stacked=True,
                color=["C0", "C1"], label=["top half (neurons 0-255)", "bottom half (neurons 256-511)"])
    else:
        ax.hist(g, bins=bins, color="C0", label="neurons")
    med = float(np.median(g))
    ax.axvline(med, color="k", lw=1.5, label=f"median {med:.5f}")
    inside = float(np.mean((g >= lo_b) & (g <= hi_b)))
    ax.set_xlabel("gain (output LSB per unit of x*w, one send)")
    ax.set_ylabel("neurons")
    ax.set_title(f"{who}: per-neuron VMM gain\n"
                 f"relative spread {m.sigma_fixed_pattern * 100:.1f} %, {inside * 100:.0f} % of "
                 f"neurons inside the silicon band", fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _noise_stats(m, lin):
    """Trial-to-trial deviations of single reads and fixed-pattern deviations per neuron."""
    ys = lin["ys"]
    r = ys.shape[0]
    inside = np.abs(ys).max(axis=0) < 100
    # A read minus the mean of its repeats, scaled by sqrt(R / (R - 1)) so that its
    # std estimates the trial-to-trial sigma of one read.
    scale = np.sqrt(r / (r - 1))
    trial_dev = ((ys - ys.mean(axis=0)) * scale)[:, inside].ravel()
    x_typ = float(np.median(np.abs(lin["ideal"])))
    g = m.gain_per_neuron
    off = m.offset_per_neuron
    dev_gain = (g - np.nanmedian(g)) * x_typ
    dev_offset = off - np.nanmedian(off)
    return {"trial_dev": trial_dev, "trial_step": scale / r, "repeats": r, "x_typ": x_typ,
            "dev_gain": dev_gain, "dev_offset": dev_offset, "dev_total": dev_gain + dev_offset}


def _fig_noise(plt, who, m, ns, cfg):
    fig, axes = plt.subplots(1, 3, figsize=(15.5, 5), gridspec_kw={"width_ratios": [1.1, 1.1, 0.9]})
    dt, dg, do = ns["dev_total"], ns["dev_gain"], ns["dev_offset"]
    td = ns["trial_dev"]
    lim = max(np.nanmax(np.abs(np.concatenate([dt, dg, do]))), 4 * m.sigma_trial) * 1.05
    ax = axes[0]
    # One bin per attainable value: reads are integers, so deviations come in steps.
    step = ns["trial_step"]
    edges = (np.arange(np.floor(-lim / step), np.ceil(lim / step) + 1) + 0.5) * step
    ax.hist(td, bins=edges, density=True, color="C0",
            label=f"{td.size:,} reads (std {td.std():.2f} LSB)")
    xs = np.linspace(-lim, lim, 300)
    ax.plot(xs, np.exp(-0.5 * (xs / m.sigma_trial) ** 2) / (np.sqrt(2 * np.pi) * m.sigma_trial), "k",
            lw=1.5, label=f"normal, sigma_trial = {m.sigma_trial:.2f} LSB\n(main measurement)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    ax.set_xlabel(f"read minus mean of its {ns['repeats']} repeats, x sqrt(R/(R-1)) (LSB)")
    ax.set_ylabel("probability density (1/LSB)")
    ax.set_title("trial-to-trial noise\n(same vector, same neuron, repeated reads)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[1]
    bins = np.linspace(-lim, lim, 45)
    ax.hist(dt[np.isfinite(dt)], bins=bins, color="C1", alpha=0.75,
            label=f"total (std {np.nanstd(dt):.2f} LSB)")
    ax.hist(dg[np.isfinite(dg)], bins=bins, histtype="step", color="C3", lw=1.4,
            label=f"gain part (std {np.nanstd(dg):.2f} LSB)")
    ax.hist(do[np.isfinite(do)], bins=bins, histtype="step", color="C4", lw=1.4,
            label=f"offset part (std {np.nanstd(do):.2f} LSB)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.set_xlabel("a neuron's line minus the median line (LSB)")
    ax.set_ylabel("neurons")
    ax.set_title(f"fixed-pattern spread between neurons\nat x.W = +{ns['x_typ']:.0f} (median |x.W| of "
                 f"the linearity vectors, {m.gain * ns['x_typ']:.0f} LSB)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")

    ax = axes[2]
    vals = [m.sigma_trial, np.nanstd(dg), m.offset_fixed_pattern_lsb, np.nanstd(dt)]
    labels = ["trial-to-trial\nsigma_trial", "fixed pattern:\ngain", "fixed pattern:\noffset",
              "fixed pattern:\ntotal"]
    bars = ax.bar(range(4), vals, color=["C0", "C3", "C4", "C1"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(4), labels, fontsize=8)
    ax.set_ylabel("standard deviation (LSB)")
    ax.set_ylim(0, max(vals) * 1.35)
    half_range = (m.linear_range[1] - m.linear_range[0]) / 4
    ax.text(0.5, 0.97, f"the gain part grows with |x.W|: {np.nanstd(m.gain_per_neuron) / m.gain * half_range:.1f} "
                       f"LSB\nat an output of {half_range:.0f} LSB (half the linear range)",
            transform=ax.transAxes, ha="center", va="top", fontsize=8)
    ax.set_title(f"comparison at x.W = +{ns['x_typ']:.0f}", fontsize=10)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(f"{who}: trial-to-trial noise versus fixed-pattern spread "
                 f"between neurons (outputs within +-100 LSB)", fontsize=11)
    fig.tight_layout()
    return fig


def _fig_saturation(plt, who, m):
    fig, ax = plt.subplots(figsize=(11, 5))
    idx = np.arange(NEURONS)
    for values, ok, color, name in ((m.saturation_high, m.saturation_high_reliable, "C3", "saturation_high (positive ramp)"),
                                    (m.saturation_low, m.saturation_low_reliable, "C0", "saturation_low (negative ramp)")):
        ax.plot(idx[ok], values[ok], ".", ms=3, color=color, label=name)
        if (~ok).any():
            ax.plot(idx[~ok], values[~ok], "o", ms=4, mfc="none", mec="0.5", lw=0,
                    label=f"{name.split()[0]}: {int((~ok).sum())} unreliable (ramp too coarse)")
    lo, hi = m.linear_range
    ax.axhline(hi, color="C3", lw=1.2, ls="--", label=f"median high {hi:.0f} LSB")
    ax.axhline(lo, color="C0", lw=1.2, ls="--", label=f"median low {lo:.0f} LSB")
    for v in (K.OUTPUT_MIN, K.OUTPUT_MAX):
        ax.axhline(v, color="k", lw=0.8, ls=":")
    ax.axvline(COLS - 0.5, color="0.5", lw=1)
    ax.text(COLS / 2, K.OUTPUT_MAX + 8, "top half", ha="center", fontsize=9)
    ax.text(COLS * 1.5, K.OUTPUT_MAX + 8, "bottom half", ha="center", fontsize=9)
    ax.set_xlim(-5, NEURONS + 5)
    ax.set_ylim(K.OUTPUT_MIN - 15, K.OUTPUT_MAX + 22)
    ax.set_xlabel("neuron index")
    ax.set_ylabel("last output on the neuron's line (int8 LSB)")
    ax.set_title(f"{who}: saturation point per neuron "
                 f"(ramp of inputs 31 on weights +-63; dotted: int8 limits)", fontsize=11)
    ax.legend(fontsize=8, loc="center right", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _fig_gain_map(plt, who, gmap, cfg):
    finite = gmap[np.isfinite(gmap)]
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    fig, axes = plt.subplots(2, 1, figsize=(13, 6.2), sharex=True)
    im = None
    for h, ax in enumerate(axes):
        im = ax.imshow(gmap[:, h * COLS:(h + 1) * COLS], aspect="auto", origin="upper", cmap="viridis",
                       vmin=vmin, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, COLS - 0.5, ROW_BLOCKS - 0.5, -0.5))
        ax.set_yticks(range(ROW_BLOCKS),
                      [f"{b * DRIVERS_PER_BLOCK}-{(b + 1) * DRIVERS_PER_BLOCK - 1}" for b in range(ROW_BLOCKS)],
                      fontsize=8)
        ax.set_ylabel("synapse drivers")
        ax.axvline(K.COLUMNS_PER_QUADRANT - 0.5, color="w", lw=0.8, ls="--")
        ax.axhline(ROW_BLOCKS / 2 - 0.5, color="w", lw=0.8, ls="--")
        half = gmap[:, h * COLS:(h + 1) * COLS]
        ax.set_title(f"{'top' if h == 0 else 'bottom'} half (neurons {h * COLS}-{(h + 1) * COLS - 1}): "
                     f"median {np.nanmedian(half):.5f}, row-block medians "
                     f"{np.nanmin(np.nanmedian(half, axis=1)):.5f}-{np.nanmax(np.nanmedian(half, axis=1)):.5f}",
                     fontsize=9)
    axes[-1].set_xlabel("column (neuron within the half); dashed: quadrant / capmem-block boundaries")
    cb = fig.colorbar(im, ax=axes, fraction=0.04, pad=0.02)
    cb.set_label("gain (LSB per unit of x*w)")
    fig.suptitle(f"{who}: gain per block of {DRIVERS_PER_BLOCK} drivers and column "
                 f"({2 * cfg['map_vectors']} vectors x {cfg['map_repeats']} repeats per block)", fontsize=11)
    return fig


def _fig_gain_vs_wait(plt, who, gw, cfg):
    waits = np.array([r[0] for r in gw])
    med = np.array([r[1] for r in gw])
    q1 = np.array([r[2] for r in gw])
    q3 = np.array([r[3] for r in gw])
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.axhspan(*SILICON_GAIN_BAND, color="C2", alpha=0.12, label="published calibrated silicon [SW]")
    ax.errorbar(waits, med, yerr=[med - q1, q3 - med], fmt="-o", color="C0", capsize=3,
                label="median over 512 neurons (bars: quartiles)")
    if DEFAULT_WAIT in waits:
        i = int(np.flatnonzero(waits == DEFAULT_WAIT)[0])
        ax.plot(waits[i], med[i], "*", ms=15, color="C3", zorder=5,
                label=f"default wait {DEFAULT_WAIT} (40 ns): {med[i]:.5f}")
    ax.axvline(DEFAULT_WAIT, color="C3", lw=0.8, ls="--")
    ax.set_xticks(waits)
    ax.set_xlabel("wait_between_events (FPGA cycles of 8 ns)")
    sec = ax.secondary_xaxis("top", functions=(lambda w: w * K.FPGA_CYCLE_S * 1e9,
                                               lambda t: t / (K.FPGA_CYCLE_S * 1e9)))
    sec.set_xlabel("event spacing (ns)")
    ax.set_ylabel("gain (LSB per unit of x*w)")
    lo = min(q1.min(), SILICON_GAIN_BAND[0])
    hi = max(q3.max(), SILICON_GAIN_BAND[1])
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.25 * (hi - lo))
    ax.set_title(f"{who}: gain against event spacing\n"
                 f"({cfg['wait_vectors']} random vectors of 5-60 % density x {cfg['wait_repeats']} repeats "
                 f"per point, 1 send)",
                 fontsize=11)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- entry point --------------------------------------------------------------------

def _fmt(v, spec):
    """A measured figure for the text output; "n/a" where there is none (None, NaN)."""
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def run(seed: int = 0, plots=DEFAULT_OUTPUT_DIR, as_json=False, quick=False, calibration=None) -> dict:
    """Characterise chip ``Chip(seed)``; writes six figures and returns the figures as a dict.

    ``calibration``: None (the store, then the shipped one, else calibrate now),
    ``"none"`` (uncalibrated) or a path; see
    :func:`bss2sim.experiments.calibration.store.chip_with_calibration`."""
    t_start = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = SIZES[bool(quick)]
    chip, loaded = chip_with_calibration(seed, calibration)
    state = "uncalibrated" if loaded is None else "calibrated"
    who = f"Chip seed {seed} ({state})"
    note(f"calibration: {describe(loaded)}")
    rng = np.random.default_rng(seed)
    # Independent seeds of each stage's inputs and trial-to-trial noise, all from `seed`.
    s = [int(v) for v in rng.integers(0, 2**31 - 1, 6)]

    note(f"1/5 main measurement: {cfg['main_vectors']} vectors x {cfg['main_repeats']} repeats and a "
         f"{cfg['ramp_steps']}-step saturation ramp (first run compiles the numba kernels, "
         f"about half a minute)...")
    m = measure_behaviour(chip, num_vectors=cfg["main_vectors"], repeats=cfg["main_repeats"],
                          ramp_steps=cfg["ramp_steps"], wait_between_events=DEFAULT_WAIT,
                          noise_seed=s[0], seed=s[1])
    note(f"2/5 linearity: {cfg['lin_vectors']} vectors x {cfg['lin_repeats']} repeats, "
         f"{cfg['strong_vectors']} saturating vectors...")
    lin = _linearity(chip, np.random.default_rng(s[2]), cfg, noise_seed=s[3])
    note(f"3/5 gain map: {ROW_BLOCKS} row blocks x 2 signs x {cfg['map_vectors']} vectors x "
         f"{cfg['map_repeats']} repeats...")
    gmap = _gain_map(chip, np.random.default_rng(s[4]), cfg, noise_seed=s[5])
    note(f"4/5 gain against wait_between_events {list(cfg['waits'])}...")
    gw = _gain_vs_wait(chip, cfg, noise_seed=s[0] + 1, seed=s[1] + 1)
    note("5/5 figures...")

    ns = _noise_stats(m, lin)
    out_dir = plots_dir(plots)
    figures = []
    for name, make in (
            ("vmm_linearity.png", lambda: _fig_linearity(plt, who, m, lin, cfg)),
            ("vmm_gain_histogram.png", lambda: _fig_gain_histogram(plt, who, m)),
            ("vmm_noise.png", lambda: _fig_noise(plt, who, m, ns, cfg)),
            ("vmm_saturation.png", lambda: _fig_saturation(plt, who, m)),
            ("vmm_gain_map.png", lambda: _fig_gain_map(plt, who, gmap, cfg)),
            ("vmm_gain_vs_wait.png", lambda: _fig_gain_vs_wait(plt, who, gw, cfg))):
        fig = make()
        path = out_dir / name
        save_figure(fig, path)
        plt.close(fig)
        figures.append(str(path))

    g = m.gain_per_neuron
    in_band = float(np.nanmean((g >= SILICON_GAIN_BAND[0]) & (g <= SILICON_GAIN_BAND[1])))
    map_mean = np.nanmean(gmap, axis=0)
    ok = np.isfinite(map_mean) & np.isfinite(g)
    map_vs_main = float(np.corrcoef(map_mean[ok], g[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    block_medians = [[float(np.nanmedian(gmap[b, h * COLS:(h + 1) * COLS])) for b in range(ROW_BLOCKS)]
                     for h in range(K.NUM_HALVES)]
    result = {
        "chip_seed": seed, "calibration": None if loaded is None else loaded.to_dict(), "quick": bool(quick),
        **m.summary(),
        "gain_fraction_in_silicon_band_rel": in_band,
        "fixed_pattern_lsb_at_typical": float(np.nanstd(ns["dev_total"])),
        "typical_abs_xw": ns["x_typ"],
        "chip_time_per_vmm_s": m.chip_time_s / m.num_vmms,
        "gain_vs_wait_cycles": [[w, gm] for w, gm, _, _ in gw],
        "gain_map_row_block_medians_lsb_per_xw": block_medians,
        "gain_map_vs_main_correlation": map_vs_main,
        "figures": figures,
    }
    result["wall_time_s"] = time.perf_counter() - t_start

    lo, hi = m.linear_range
    print(f"chip seed {seed} ({state}; calibration: {describe(loaded)}), wait {DEFAULT_WAIT} (40 ns), 1 send"
          f"{' [quick]' if quick else ''}")
    print(f"gain: median {m.gain:.5f} LSB per unit of x*w, per-neuron spread {m.sigma_fixed_pattern * 100:.1f} % "
          f"(silicon after calibration {SILICON_GAIN_BAND[0]:g}-{SILICON_GAIN_BAND[1]:g}; "
          f"{in_band * 100:.0f} % of neurons inside)")
    print(f"noise: trial-to-trial {m.sigma_trial:.2f} LSB; fixed pattern: offsets {m.offset_fixed_pattern_lsb:.2f} "
          f"LSB, gain+offset {result['fixed_pattern_lsb_at_typical']:.2f} LSB at |x.W| = {ns['x_typ']:.0f}")
    print(f"noise between columns: correlation {_fmt(m.noise_correlation_same_quadrant, '.3f')} within a "
          f"quadrant of {K.COLUMNS_PER_QUADRANT} columns, {_fmt(m.noise_correlation_other_quadrant, '.3f')} "
          f"between quadrants; shared by a quadrant {_fmt(m.sigma_shared, '.2f')} LSB, independent "
          f"{_fmt(m.sigma_independent, '.2f')} LSB")
    print(f"linear range: {lo:.0f} .. {hi:.0f} LSB (median saturation points)")
    print(f"chip time per VMM pass: {result['chip_time_per_vmm_s'] * 1e6:.2f} us "
          f"({m.num_vmms} passes in {m.chip_time_s * 1e3:.2f} ms)")
    print("gain vs wait_between_events: " + ", ".join(f"{w}: {gm:.5f}" for w, gm, _, _ in gw))
    for h in range(K.NUM_HALVES):
        print(f"gain map, {'top' if h == 0 else 'bottom'} half, row-block medians (drivers 0-15 ... 112-127): "
              + " ".join(f"{v:.5f}" for v in block_medians[h]))
    print(f"gain map (mean over blocks) vs main per-neuron gains: correlation {map_vs_main:.2f}")
    for f in figures:
        print(f"wrote {f}")
    print(f"wall time {result['wall_time_s']:.1f} s")
    if as_json:
        emit_json(result)
    return result
