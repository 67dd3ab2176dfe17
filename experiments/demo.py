"""``bss2sim demo``: the shipped MNIST network on a simulated chip.

A chip (default seed 0) gets its calibration from the calibration store, the
shipped one (chip 0), or is calibrated now and stored (a few seconds; see
:mod:`bss2sim.experiments.calibration.store`); units the calibration names
faulty are routed around. The shipped network, trained and
fine-tuned on chip seed 0 by ``bss2sim train``, classifies the shipped MNIST
test set through the cycle-level model. Prints the accuracy, the simulated
chip time and energy per image, and writes ``mnist_confusion.png``,
``mnist_misclassified.png`` and ``mnist_accuracy_per_seed.png`` into the
output folder (default ``bss2sim-output``).
"""
from __future__ import annotations

import time

import numpy as np

from bss2sim.digital import Accelerator

from bss2sim.digital import FaultyUnits

from .calibration.store import chip_with_calibration, describe
from .common import DEFAULT_OUTPUT_DIR, emit_json, load_results, note, peak_memory_mib, plots_dir, save_figure
from .datasets.mnist import load_test_set
from .progress import Progress
from .train import NETWORK_FILE, PACKAGE_DATA, RESULTS_FILE
from .training.checkpoint import load_checkpoint


def _calibrating(seed):
    def progress(step):
        note(f"  calibrating chip seed {seed} (none stored for it): step {step}")
    return progress


def wilson_interval(p, n, z=1.96):
    """Wilson score interval (95 % at z = 1.96) of accuracies ``p`` measured on
    ``n`` images; NaN accuracies give NaN bounds."""
    p = np.asarray(p, float)
    n = max(int(n), 1)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def run(seed=0, images=None, data_dir=None, plots=DEFAULT_OUTPUT_DIR, as_json=False, batch=500,
        calibration=None, fault_mapping=True, sequence="published"):
    """Classify the MNIST test set on chip ``seed``; returns the figures as a dict.

    ``calibration``: None (the store, then the shipped one, else calibrate
    now), ``"none"`` or a path (see
    :func:`bss2sim.experiments.calibration.store.chip_with_calibration`).
    ``fault_mapping``: route around the units the calibration names faulty.
    ``sequence``: the VMM sequence (:data:`bss2sim.digital.sequences.VMM_SEQUENCES`)."""
    from bss2sim.digital.sequences import VMM_SEQUENCES, check_sequence
    sequence = check_sequence(sequence, VMM_SEQUENCES)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = time.perf_counter()
    net_path = PACKAGE_DATA / NETWORK_FILE
    if not net_path.exists():
        raise ValueError(f"the shipped network ({net_path.name}) is missing; run bss2sim train --ship")
    net = load_checkpoint(net_path, expect_metadata={"stage": "fine-tuned"}).make_network()
    x, y = load_test_set(data_dir)
    where = f"the MNIST test set in {str(data_dir)!r}" if data_dir is not None else "the shipped test set"
    if len(y) == 0:
        raise ValueError(f"{where} holds no images")
    if images is not None:
        if images > len(y):
            raise ValueError(f"--images {images} is more than the {len(y)} images of {where}")
        x, y = x[:images], y[:images]
    chip, loaded = chip_with_calibration(seed, calibration, progress=_calibrating(seed))
    how = describe(loaded)
    note(f"calibration: {how}")
    faulty = loaded.faulty if (loaded is not None and fault_mapping) else FaultyUnits()
    acc = Accelerator(chip, noise_seed=0, faulty=faulty, sequence=sequence)
    pred = np.empty(len(y), np.int64)
    with Progress(f"classifying {len(y)} test images on chip {seed}", len(y), unit="image") as bar:
        for i in range(0, len(y), batch):
            pred[i:i + batch] = net.predict(x[i:i + batch], "chip", acc, batch_size=batch)
            bar.update(len(pred[i:i + batch]), f"{np.mean(pred[:i + batch] == y[:i + batch]):.2%}")
    wall = time.perf_counter() - t0
    accuracy = float(np.mean(pred == y))
    rep = acc.report()
    per_image = rep["total_s"] / len(y)

    out = plots_dir(plots)
    conf = np.zeros((10, 10), np.int64)
    np.add.at(conf, (y.astype(int), pred), 1)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    # Row fractions on a logarithmic scale, so that the off-diagonal cells (a
    # few in a thousand) are visible beside the diagonal; empty cells stay white.
    from matplotlib.colors import LogNorm
    frac = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(np.ma.masked_equal(frac, 0), cmap="Blues",
                   norm=LogNorm(vmin=min(1e-3, 0.5 / max(len(y), 1) * 10), vmax=1))
    for i in range(10):
        for j in range(10):
            if conf[i, j]:
                ax.text(j, i, conf[i, j], ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_title(f"MNIST on simulated chip {seed}: {accuracy:.2%} of {len(y)} test images", fontsize=10)
    fig.colorbar(im, ax=ax, label="fraction of the true digit (log scale; numbers: counts)")
    fig.tight_layout()
    save_figure(fig, out / "mnist_confusion.png")
    plt.close(fig)

    wrong = np.nonzero(pred != y)[0][:32]
    fig, axes = plt.subplots(4, 8, figsize=(9, 5))
    for ax, i in zip(axes.ravel(), list(wrong) + [None] * (32 - len(wrong))):
        ax.axis("off")
        if i is not None:
            ax.imshow(x[i], cmap="gray_r")
            ax.set_title(f"{y[i]} as {pred[i]}", fontsize=8)
    fig.suptitle(f"Misclassified test digits on chip {seed} (true as predicted), first {len(wrong)}",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "mnist_misclassified.png")
    plt.close(fig)

    results_path = PACKAGE_DATA / RESULTS_FILE
    shipped = load_results(results_path) if results_path.exists() else {}
    # The training run's figure for this chip before fine-tuning, where it trained on it.
    before = shipped.get("chip_without_fine_tuning", np.nan) if shipped.get("chip_seed") == seed else np.nan
    seeds, pre, post = [seed], [before], [accuracy]
    for f in shipped.get("further_chips", []):
        if f["chip_seed"] != seed:
            seeds.append(f["chip_seed"])
            pre.append(f["without_fine_tuning"])
            post.append(f["with_fine_tuning"])
    fig, ax = plt.subplots(figsize=(7, 4))
    pos = np.arange(len(seeds))
    n_train = int(shipped.get("test_images", 10_000))
    # Points with 95 % binomial (Wilson) intervals: at 10,000 images about
    # +-0.25 points; this run's own interval follows its own number of images.
    for offset, values, n, label, marker in (
            (-0.12, pre, n_train, f"software-trained, no fine-tuning (training run, {n_train} images)", "o"),
            (0.12, post[:1], len(y), f"this run, chip {seed} ({len(y)} images)", "s"),
            (0.12, post[1:], n_train, f"fine-tuned on each chip (training run, {n_train} images)", "D")):
        if not len(values):
            continue
        xs = pos[:len(values)] + offset if marker == "s" else pos[len(pos) - len(values):] + offset
        p = np.array(values, float)
        lo, hi = wilson_interval(p, n)
        # At 0 % or 100 % the interval's bound equals p up to rounding: no negative bars.
        yerr = np.maximum([(p - lo) * 100, (hi - p) * 100], 0.0)
        ax.errorbar(xs, p * 100, yerr=yerr, fmt=marker, capsize=3,
                    label=label)
    ax.axhline(98.0, color="k", ls="--", lw=1, label="98.0 % on silicon [W20]")
    if "float_final" in shipped:
        ax.axhline(shipped["float_final"] * 100, color="0.4", ls=":", lw=1,
                   label=f"float software, same network ({shipped['float_final']:.2%})")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"chip {s}" for s in seeds])
    ax.set_ylim(95, 100)
    ax.set_ylabel("test accuracy (%), axis from 95 %")
    ax.set_title("MNIST accuracy per simulated chip (95 % binomial intervals)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out / "mnist_accuracy_per_seed.png")
    plt.close(fig)

    res = {"chip_seed": seed, "calibration": None if loaded is None else loaded.to_dict(),
           "faulty_units_avoided": len(faulty.columns) + len(faulty.drivers),
           "images": int(len(y)), "accuracy": accuracy, "sequence": sequence,
           "chip_time_per_image_s": per_image,
           "chip_time_per_image_by_category_s": {k[:-2]: v / len(y) for k, v in rep.items()
                                                 if k.endswith("_s") and k != "total_s"}, "asic_energy_per_image_j": rep["asic_j"] / len(y),
           "system_energy_per_image_j": rep["system_j"] / len(y),
           "energy_assumption": rep["energy_assumption"], "wall_time_s": wall,
           "chip_time_over_wall": rep["total_s"] / wall,
           "peak_memory_mib": peak_memory_mib(),
           "figures": [str(out / n) for n in ("mnist_confusion.png", "mnist_misclassified.png",
                                               "mnist_accuracy_per_seed.png")]}
    print(f"MNIST on simulated chip {seed}: {accuracy:.2%} of {len(y)} test images")
    print(f"calibration: {how}" + (f"; routed around {res['faulty_units_avoided']} faulty unit(s)"
                                    if res["faulty_units_avoided"] else ""))
    print(f"chip time {per_image * 1e6:.0f} us per image, ASIC energy {res['asic_energy_per_image_j'] * 1e6:.0f} uJ "
          f"per image ({rep['energy_assumption']})")
    print(f"wall time {wall:.1f} s (the model runs at {res['chip_time_over_wall']:.3f} x the chip's speed); "
          f"peak memory {res['peak_memory_mib']:.0f} MiB")
    if as_json:
        emit_json(res)
    return res
