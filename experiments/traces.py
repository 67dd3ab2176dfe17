"""``bss2sim traces``: membrane traces of a few columns during one VMM.

One half of a chip gets random signed weights. Two input vectors are sent:
a weak, sparse one at ``wait_between_events=5`` and a dense, strong one at the
8 ns hardware limit that drives synaptic inputs past their knee and membranes
into their rails. The time-stepped path records V(t); the fast path
integrates the same events; the figure marks the events and the CADC read.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import Chip, EventSchedule, integrate_fast, integrate_trace
from bss2sim.circuits import constants as K

from .common import emit_json, note, plots_dir, save_figure

POST_EVENT_WAIT_CYCLES = 125
"""Wait between the last event and the CADC read: 1 us, as the group's software does [SW]."""


def _inputs(seed):
    rng = np.random.default_rng(seed)
    weak = rng.integers(1, 16, K.DRIVERS_PER_HALF) * (rng.random(K.DRIVERS_PER_HALF) < 0.5)
    strong = np.full(K.DRIVERS_PER_HALF, K.INPUT_MAX)
    strong[64:] = 0
    return weak.astype(np.int64), strong.astype(np.int64)


def run(seed: int = 0, half: int = 0, columns=(3, 70, 130, 200), plots="plots", as_json=False):
    """Run the experiment; returns the figures as a dict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chip = Chip(seed)
    rng = np.random.default_rng(seed + 1)
    weights = rng.integers(-K.WEIGHT_MAX, K.WEIGHT_MAX + 1, (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF))
    # Make the plotted columns clearly excitatory or inhibitory so the traces show both.
    weights[:, columns[0]] = np.abs(weights[:, columns[0]])
    weights[:, columns[1]] = -np.abs(weights[:, columns[1]])
    chip.config.set_logical_weights(half, weights)
    weak, strong = _inputs(seed)
    cases = [("weak input, wait 5 (40 ns)", weak, 5), ("saturating input, wait 1 (8 ns)", strong, 1)]

    note("integrating (first run compiles the numba kernels, about half a minute)...")
    fig, axes = plt.subplots(len(cases), 1, figsize=(9, 7.5), sharex=False)
    result = {"seed": seed, "half": half, "columns": list(columns), "cases": []}
    for ax, (label, x, wait) in zip(axes, cases):
        sched = EventSchedule.from_inputs(x[None, :], wait)
        read = int(sched.last_cycle()[0]) + POST_EVENT_WAIT_CYCLES
        tr = integrate_trace(chip, half, sched, read)
        fast = integrate_fast(chip, half, sched, read)
        dev = fast.codes.astype(int) - tr.codes.astype(int)
        t_us = tr.times_s * 1e6
        for c in columns:
            ax.plot(t_us, tr.membrane_v[0, :, c], lw=1.2,
                    label=f"column {c}: code {tr.codes[0, c]} (fast {fast.codes[0, c]})")
        op = chip.operating_point(half)
        cp = op.column_params
        # Where the CADC ramp sits for the first plotted column (it counts up from the read).
        from bss2sim.circuits import kernels as _k
        c0 = columns[0]
        t_read = read * K.FPGA_CYCLE_S * 1e6
        ticks = np.arange(K.CADC_RAMP_STEPS)
        ramp_t = t_read + ticks * K.CADC_TICK_S * 1e6
        ramp_v = (cp[_k.CADC_START, c0] + (ticks + 1) * cp[_k.CADC_STEP, c0]) * 1e-3
        ax.plot(ramp_t, ramp_v, color="0.6", lw=0.8, ls="--", label=f"CADC ramp (column {c0})")
        ax.axvspan(t_read, t_read + K.CADC_CONVERSION_S * 1e6, color="0.85", zorder=0,
                   label="CADC conversion")
        ev_t = np.asarray(sched.cycle) * K.FPGA_CYCLE_S * 1e6
        lo = min(np.nanmin(tr.membrane_v[0][:, list(columns)]), 0.25)
        ax.plot(ev_t, np.full(ev_t.shape, lo), "|", color="k", ms=8, label=f"{len(ev_t)} events")
        ax.set_ylim(lo - 0.03, max(1.2, np.nanmax(tr.membrane_v[0][:, list(columns)]) + 0.05))
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("membrane V (V)")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        result["cases"].append({
            "label": label, "wait_between_events": wait, "num_events": int(sched.num_events),
            "read_cycle": read, "codes_trace": tr.codes[0].tolist(), "codes_fast": fast.codes[0].tolist(),
            "fast_vs_trace_rms_lsb": float(np.sqrt(np.mean(dev.astype(float) ** 2))),
            "fast_vs_trace_max_lsb": int(np.abs(dev).max()),
            "stepped_columns": int(fast.stepped_columns.sum()),
        })
    axes[-1].set_xlabel("time after reset (us)")
    fig.suptitle(f"Chip seed {seed}, half {half}: membrane traces during one VMM", fontsize=11)
    fig.tight_layout()
    out = plots_dir(plots) / "membrane_traces.png"
    save_figure(fig, out)
    plt.close(fig)
    result["figure"] = str(out)
    for case in result["cases"]:
        print(f"{case['label']}: {case['num_events']} events, read at cycle {case['read_cycle']}, "
              f"fast vs trace {case['fast_vs_trace_rms_lsb']:.3f} LSB rms, "
              f"{case['fast_vs_trace_max_lsb']} LSB max; codes of plotted columns "
              f"{[case['codes_trace'][c] for c in columns]}")
    print(f"wrote {out}")
    if as_json:
        emit_json(result)
    return result
