"""``bss2sim timeline``: one vector pair of a VMM on one time axis.

Co-simulates one batch entry of a sequence (:mod:`bss2sim.digital.sequences`)
on a chip: the FPGA's playback instructions, both PPUs running the VMM command
loop (when they are awake and how many instructions they execute), the events
of each half, the membranes of a few columns (time-stepped path over the same
events, from each reset to its conversion) and the CADC conversions. Writes
``timeline.png`` and reports the chip time of every phase.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import EventSchedule, Monitor, TrialNoise, integrate_trace
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_seed
from bss2sim.circuits.rng import derive_seed

from .common import DEFAULT_OUTPUT_DIR, emit_json, note

FIGURE = "timeline.png"
SHOWN_COLUMNS = (0, 1, 2)
"""Columns of each half whose membranes are drawn (the first made excitatory,
the second inhibitory, the third mixed)."""
DENSITY = (0.4, 0.15)
"""Fraction of non-zero inputs of the top and the bottom vector (*assumed*:
an uneven pair, so that the shorter stream's late start shows)."""
WAIT = 5
"""Event spacing of the example, FPGA cycles (hxtorch's default)."""
PHASE_NAMES = {1: "reset_neurons", 2: "baseline_read", 3: "read"}


def example(seed: int):
    """Inputs (2, 128) and signed weights (2, 128, 256) of the example pair."""
    rng = np.random.default_rng(derive_seed(seed, 0x74696D65))
    x = np.zeros((K.NUM_HALVES, K.DRIVERS_PER_HALF), np.int64)
    for h, d in enumerate(DENSITY):
        n = int(round(d * K.DRIVERS_PER_HALF))
        x[h, rng.choice(K.DRIVERS_PER_HALF, n, replace=False)] = rng.integers(1, K.INPUT_MAX + 1, n)
    w = rng.integers(-20, 21, (K.NUM_HALVES, K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF))
    w[:, :, SHOWN_COLUMNS[0]] = np.abs(w[:, :, SHOWN_COLUMNS[0]])
    w[:, :, SHOWN_COLUMNS[1]] = -np.abs(w[:, :, SHOWN_COLUMNS[1]])
    return x, w


def phases(program, spans):
    """Named phases ``(name, start, end)`` in FPGA cycles: from each command to
    the next, the events and the result reads."""
    from bss2sim.digital import playback as pb
    out, current = [], None
    for (i, a, b, cat), ins in zip(spans, program.instructions):
        if isinstance(ins, pb.WritePPUWord) and ins.ppu == 0:
            name = PHASE_NAMES.get(ins.value, f"command {ins.value}")
        elif cat == "event_phase":
            name = "events"
        elif cat == "result_reads":
            name = "result_reads"
        elif current is not None and current[0] == "events":
            name = "after_events"
        else:
            name = None
        if name is not None and (current is None or current[0] != name):
            if current is not None:
                out.append(tuple(current))
            current = [name, a, b]
        elif current is not None:
            current[2] = b
    if current is not None:
        out.append(tuple(current))
    return out


def run(seed: int = 0, sequence: str = "published", plots=DEFAULT_OUTPUT_DIR, as_json: bool = False,
        calibration=None, noise_seed: int = 0):
    """Co-simulate and draw one vector pair; returns the figures as a dict.

    Parameters
    ----------
    seed : int
        Chip seed and seed of the example inputs and weights.
    sequence : str
        One of :data:`bss2sim.digital.sequences.VMM_SEQUENCES`.
    plots : folder of ``timeline.png``.
    calibration : None, "none" or a path (as every command; see
        :func:`bss2sim.experiments.calibration.store.chip_with_calibration`).
    noise_seed : int
        Seed of the conversions' trial-to-trial noise.
    """
    from pathlib import Path

    from bss2sim.digital import playback as pb
    from bss2sim.digital import sequences as sq
    from bss2sim.digital.cosim import CoSimulation

    from .calibration.store import chip_with_calibration, describe
    seed = check_seed("seed", seed)
    sequence = sq.check_sequence(sequence, sq.VMM_SEQUENCES)
    noise_seed = check_seed("noise_seed", noise_seed)
    x, w = example(seed)
    chip, loaded = chip_with_calibration(seed, calibration)
    print(f"calibration: {describe(loaded)}")
    for h in range(K.NUM_HALVES):
        chip.config.set_logical_weights(h, w[h])
    sources = [lambda k, h=h: TrialNoise(derive_seed(noise_seed, h, k), 0) for h in range(K.NUM_HALVES)]
    sim = CoSimulation(chip, sq.ppu_program(sequence), sources)
    b = pb.PlaybackBuilder()
    sq.add_entry(b, sequence, list(x), WAIT, 1)
    program = b.build()
    note("co-simulating one entry...")
    res = sim.run(program)
    results = sq.results_from_reads(res.reads, 1)
    us = 1e6 * K.FPGA_CYCLE_S
    named = phases(program, res.spans)

    # Membranes of the shown columns: from each reset burst to its conversion.
    monitor = Monitor(columns=SHOWN_COLUMNS)
    traces = []
    for h in range(K.NUM_HALVES):
        resets = sq._bursts([c for k, c in res.analog_log[h] if k == "reset"])
        convs = [c for k, c in res.analog_log[h] if k == "convert"]
        segs = []
        for r, c in zip(resets, convs):
            r_f, c_f = r // 2, c // 2
            ev = [(d, a, t - r_f) for d, a, t in res.events[h] if r_f <= t <= c_f]
            tr = integrate_trace(chip, h, EventSchedule.from_lists([ev]), c_f - r_f, monitor=monitor,
                                 substeps_per_cycle=1)
            segs.append((r_f, tr))
        traces.append(segs)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"event_phase": "tab:red", "waits": "0.8", "cadc_conversions": "tab:purple", "ppu": "tab:blue",
              "weight_writes": "tab:brown", "result_reads": "tab:green", "transfers": "tab:olive"}
    fig, ax = plt.subplots(4, 1, figsize=(11, 9), sharex=True,
                           gridspec_kw={"height_ratios": [1.1, 1.2, 1.6, 2.4]})
    for i, a, bnd, cat in res.spans:
        ax[0].broken_barh([(a * us, max(bnd - a, 1) * us)], (0, 1), color=colors[cat])
    for k, (name, a, bnd) in enumerate(named):
        ax[0].text((a + bnd) / 2 * us, 1.1 + 0.35 * (k % 2), name.replace("_", " "), ha="center", fontsize=7)
    ax[0].set_ylim(0, 2.9)
    ax[0].set_yticks([])
    ax[0].set_ylabel("playback")
    for cat, c in colors.items():
        if res.category_cycles.get(cat):
            ax[0].plot([], [], color=c, lw=6, label=f"{cat.replace('_', ' ')} "
                                                     f"{res.category_cycles[cat] / K.PPU_CLOCK_HZ * 1e6:.2f} us")
    ax[0].legend(fontsize=7, ncol=5, loc="upper center")
    for h in range(K.NUM_HALVES):
        for (a, bnd), n in zip(res.ppu_busy[h], res.ppu_instructions[h]):
            ax[1].broken_barh([(a / 2 * us, (bnd - a) / 2 * us)], (h - 0.35, 0.7), color="tab:blue")
            ax[1].text((a + bnd) / 4 * us, h - 0.45, f"{n} instr.", fontsize=6, ha="center")
        for kind, c in res.analog_log[h]:
            ax[1].plot(c / 2 * us, h, "v" if kind == "convert" else "|", color="k" if kind == "reset" else "tab:purple",
                       ms=8)
    ax[1].set_yticks([0, 1], ["PPU top", "PPU bottom"])
    ax[1].set_ylim(1.8, -0.6)
    ax[1].set_ylabel("PPUs awake\n(| reset, v CADC)", fontsize=8)
    for h, marker in ((0, "o"), (1, "s")):
        if res.events[h]:
            t = np.array([e[2] for e in res.events[h]]) * us
            d = np.array([e[0] for e in res.events[h]])
            ax[2].scatter(t, d, s=6, marker=marker, label=f"{('top', 'bottom')[h]}: {len(t)} events")
    ax[2].set_ylabel("driver")
    ax[2].legend(fontsize=7, loc="upper left")
    for h, ls in ((0, "-"), (1, "--")):
        for k, (r_f, tr) in enumerate(traces[h]):
            for j, col in enumerate(SHOWN_COLUMNS):
                ax[3].plot((r_f + tr.times_s / K.FPGA_CYCLE_S) * us, tr.membrane_v[0, :, j], ls=ls,
                           color=f"C{j}", lw=1,
                           label=f"{('top', 'bottom')[h]} column {col}: result {results[h][0, col]}"
                           if k == 1 else None)
    ax[3].set_ylabel("membrane (V)")
    ax[3].set_xlabel("time since the entry's start (us)")
    ax[3].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(f"one vector pair, sequence {sequence!r}, chip {seed}: {res.cycles * us:.2f} us", fontsize=10)
    fig.tight_layout()
    out_dir = Path(plots)
    out_dir.mkdir(parents=True, exist_ok=True)
    from .common import save_figure
    path = out_dir / FIGURE
    save_figure(fig, path)
    plt.close(fig)
    out = {"chip_seed": seed, "sequence": sequence, "entry_us": res.cycles * us,
           "category_us": {c: v / K.PPU_CLOCK_HZ * 1e6 for c, v in res.category_cycles.items()},
           "phases_us": [{"phase": n, "start_us": a * us, "end_us": e * us, "duration_us": (e - a) * us}
                         for n, a, e in named],
           "ppu_instructions": [int(sum(v)) for v in res.ppu_instructions],
           "events": [len(e) for e in res.events],
           "playback_instructions": len(program), "figure": str(path)}
    for p_ in out["phases_us"]:
        print(f"{p_['phase']:>14s}: {p_['start_us']:8.2f} .. {p_['end_us']:8.2f} us ({p_['duration_us']:.2f} us)")
    print(f"entry: {out['entry_us']:.2f} us; by category: " +
          ", ".join(f"{c} {v:.2f}" for c, v in out["category_us"].items() if v))
    print(f"wrote {path}")
    if as_json:
        emit_json(out)
    return out

