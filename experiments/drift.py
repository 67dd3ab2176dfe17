"""``bss2sim drift``: what temperature and hours of operation cost the MNIST
network on calibrated chips, and what recalibration or a short
hardware-in-the-loop refresh wins back.

On every chip seed the study

1. gives the chip its calibration as every command does (the store, the
   shipped one, else calibrated now and saved; ``--calibration``): the chip's
   condition at calibration is the reference, 25 degrees C and hour 0;
2. takes two networks: ``shipped``, the noise-aware software-trained network
   the package ships (``data/mnist_net.npz``; ``bss2sim train`` fine-tuned it
   on chip 0, so on other chips it was never tuned to them), and
   ``fine_tuned``, that network fine-tuned in the loop on this chip right
   after calibration (the pipeline's fine-tuning: one epoch over
   ``--fine-tune-images`` training images, Adam at ``train.HIL_LR``, shifted
   images, the images drawn as ``bss2sim train`` draws them for the chip);
3. evaluates both on the first ``--images`` test images (the shipped test set)
   at the baseline (25 degrees C, hour 0) and at every condition: each hour of
   ``--hours`` at the reference temperature, and each temperature offset of
   ``--temperatures`` at hour 0, under three treatments:

   * ``no_recalibration``: the hour-0 calibration as it is;
   * ``recalibrated``: the chip recalibrated at the condition, starting from the
     hour-0 calibration's settings where ``calibrate`` takes ``previous=``
     (:func:`previous_from_settings`; else a fresh calibration; the results say
     which), units it names faulty routed around;
   * ``refreshed``: no recalibration, each network fine-tuned in the loop once
     more at the condition, one epoch over ``--refresh-images`` training images.

Every evaluation uses the trial-to-trial noise seed :data:`EVAL_NOISE_SEED`
(the demo's) and every fine-tuning :data:`HIL_NOISE_SEED` (the pipeline's),
whatever the chip, condition or treatment: so the results are the same for
the same arguments, and differences between conditions are the chip's, not
another draw of the noise. The condition (hour 0, +0 K) without recalibration
is the baseline itself and is not measured twice (``reuse_baseline=False``
measures it again).

:func:`drift_study` returns the figures; :func:`run` is the command: a text
table, ``drift_accuracy.png`` (accuracy against hours and against
temperature, one line per treatment and network, mean and min..max over the
chips), ``--json``.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import WrongTypeError, check_int, check_seed
from bss2sim.circuits.environment import MAX_HOURS, TEMPERATURE_RANGE_C
from bss2sim.circuits.params import PRESETS, DriftParams
from bss2sim.digital import Accelerator, FaultyUnits

from .calibration import DEFAULT_STEPS, CalibrationTarget, ChipCalibration, StepResult, calibrate
from .calibration.persistence import CAPMEM_PREFIX, calibration_settings
from .calibration.store import NO_CALIBRATION, chip_with_calibration, describe, find_calibration
from .common import (DEFAULT_OUTPUT_DIR, as_path, check_reals, emit_json, int_range, note, parse_reals,
                     plots_dir, save_figure, seed_list)
from .demo import wilson_interval
from .datasets.mnist import find_data_dir, load_mnist, load_test_set, random_shift
from .progress import Progress
from .train import (AUGMENT_SHIFT, BATCH_SIZE, HIL_IMAGES, HIL_LR, HIL_LR_DECAY, NETWORK_FILE,
                    PACKAGE_DATA)
from .training.checkpoint import load_checkpoint
from .training.fit import fit
from .training.optim import Adam

__all__ = ["TREATMENTS", "NETWORKS", "DEFAULT_SEEDS", "DEFAULT_HOURS", "DEFAULT_TEMPERATURES_K",
           "DEFAULT_REFRESH_IMAGES", "FIGURE", "drift_study", "run", "check_arguments",
           "parse_reals", "parse_seeds", "int_range", "summarise", "fine_tune", "recalibrate",
           "previous_from_settings", "temperature_range_k"]

TREATMENTS = ("no_recalibration", "recalibrated", "refreshed")
"""The treatments of every condition (keys of the results)."""
TREATMENT_LABELS = {"no_recalibration": "without recalibration",
                    "recalibrated": "recalibrated at the condition",
                    "refreshed": "HIL refresh, no recalibration"}
NETWORKS = ("shipped", "fine_tuned")
"""The networks (keys of the results)."""
NETWORK_LABELS = {"shipped": "shipped (software-trained)", "fine_tuned": "fine-tuned at hour 0"}
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_HOURS = (0.0, 1.0, 4.0, 24.0, 168.0)
"""Hours of operation since calibration, at the reference temperature."""
DEFAULT_TEMPERATURES_K = (0.0, 2.0, 5.0, 10.0)
"""Temperature offsets from the reference (K), at hour 0."""
DEFAULT_REFRESH_IMAGES = 1_000
"""Training images of the hardware-in-the-loop refresh (1,000-2,000 suggested)."""
MAX_SEEDS = 100
"""Most chip seeds of one study (*assumed*: a bound against a mistyped range)."""
MAX_VALUES = 20
"""Most hours or temperatures of one study (*assumed*: the same kind of bound)."""
EVAL_NOISE_SEED = 0
"""Trial-to-trial noise seed of every evaluation (that of ``bss2sim demo``)."""
HIL_NOISE_SEED = 3
"""Noise seed of every fine-tuning and refresh (that of ``train.fine_tune_on_chip``);
the shuffling generator and the augmentation are keyed by it as there."""
CALIBRATION_NOISE_SEED = 0
"""Noise seed of every recalibration (that of the calibrations in the store)."""
FINE_TUNE_IMAGE_SEED = 100
"""The fine-tuning images of chip ``s``: ``default_rng(s + 100).permutation(n)``, as ``bss2sim train``."""
REFRESH_IMAGE_SEED = 300
"""The refresh images of chip ``s``: ``default_rng(s + 300).permutation(n)`` (the same at every condition)."""
BATCH = 500
"""Test images per call of the network (results do not depend on it)."""
FIGURE = "drift_accuracy.png"
MNIST_TRAIN_IMAGES = 60_000
MNIST_TEST_IMAGES = 10_000
"""Sizes of MNIST's training and test sets (the bounds of the image options)."""


# --- arguments ---------------------------------------------------------------------

parse_seeds = seed_list(MAX_SEEDS)
"""argparse type of ``--seeds`` (:func:`~bss2sim.experiments.common.seed_list`)."""


def _check_values(option, values, lo, hi, unit):
    return check_reals(option, values, lo, hi, unit, MAX_VALUES)


def _reference_c() -> float:
    return float(DriftParams().reference_temperature_c)


def temperature_range_k() -> tuple:
    """Temperature offsets allowed (K): the chip's range around the reference."""
    ref = _reference_c()
    return TEMPERATURE_RANGE_C[0] - ref, TEMPERATURE_RANGE_C[1] - ref


@dataclass(frozen=True)
class Settings:
    """The checked arguments of a study."""

    seeds: tuple
    hours: tuple
    temperatures_k: tuple
    images: int
    fine_tune_images: int
    refresh_images: int
    treatments: tuple
    calibration: object
    data_dir: object
    reuse_baseline: bool
    conditions: tuple = field(default=())
    preset: str = "default"
    """The chips' effect preset (``Chip(seed, preset=...)``)."""
    """(hours, temperature offset K) pairs, hours first, then temperatures; each once."""

    def to_dict(self) -> dict:
        return {"hours_h": list(self.hours), "temperature_offsets_k": list(self.temperatures_k),
                "reference_temperature_c": _reference_c(), "images": self.images,
                "fine_tune_images": self.fine_tune_images, "fine_tune_epochs": 1,
                "refresh_images": self.refresh_images, "refresh_epochs": 1,
                "treatments": list(self.treatments), "hil_lr": HIL_LR, "hil_lr_decay": HIL_LR_DECAY,
                "augment_shift": AUGMENT_SHIFT, "batch_size": BATCH_SIZE,
                "eval_noise_seed": EVAL_NOISE_SEED, "hil_noise_seed": HIL_NOISE_SEED,
                "calibration_noise_seed": CALIBRATION_NOISE_SEED,
                "fine_tune_image_seed": f"chip seed + {FINE_TUNE_IMAGE_SEED}",
                "refresh_image_seed": f"chip seed + {REFRESH_IMAGE_SEED}",
                "reuse_baseline": self.reuse_baseline, "preset": self.preset,
                "calibration_option": None if self.calibration is None else str(self.calibration),
                "conditions": [{"hours_h": h, "temperature_offset_k": t} for h, t in self.conditions]}


def check_arguments(seeds=DEFAULT_SEEDS, hours=DEFAULT_HOURS, temperatures=DEFAULT_TEMPERATURES_K,
                    images=None, fine_tune_images=HIL_IMAGES, refresh_images=DEFAULT_REFRESH_IMAGES,
                    treatments=TREATMENTS, calibration=None, data_dir=None,
                    reuse_baseline=True, preset="default") -> Settings:
    """Every argument of :func:`drift_study` checked (before any work); errors
    name the option, the bad value and what is allowed."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise WrongTypeError(f"--seeds {seeds!r} is not allowed: give a list of chip seeds "
                             "(integers 0..2**64-1)")
    seeds = tuple(check_seed("--seeds", s) for s in seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"--seeds gives {len(seeds)} chip seeds; allowed: 1..{MAX_SEEDS}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {list(seeds)} names a chip seed more than once")
    hours = _check_values("--hours", hours, 0.0, MAX_HOURS, "hours")
    t_lo, t_hi = temperature_range_k()
    temperatures = _check_values("--temperatures", temperatures, t_lo, t_hi,
                                 f"K from the reference {_reference_c():g} degrees C")
    n_test = MNIST_TEST_IMAGES
    images = n_test if images is None else check_int("--images", images, 1, n_test)
    fine_tune_images = check_int("--fine-tune-images", fine_tune_images, 1, MNIST_TRAIN_IMAGES)
    refresh_images = check_int("--refresh-images", refresh_images, 1, MNIST_TRAIN_IMAGES)
    if isinstance(treatments, (str, bytes)) or not hasattr(treatments, "__iter__"):
        raise WrongTypeError(f"--treatments {treatments!r} is not allowed: give a list of "
                             f"{', '.join(TREATMENTS)}")
    treatments = tuple(treatments)
    bad = [t for t in treatments if t not in TREATMENTS]
    if bad or not treatments or len(set(treatments)) != len(treatments):
        raise ValueError(f"--treatments {','.join(map(str, treatments)) or '(none)'} is not allowed: "
                         f"give each of {', '.join(TREATMENTS)} at most once, at least one")
    treatments = tuple(t for t in TREATMENTS if t in treatments)
    if not isinstance(reuse_baseline, (bool, np.bool_)):
        raise WrongTypeError(f"reuse_baseline={reuse_baseline!r} must be True or False")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not allowed: one of {', '.join(PRESETS)}")
    if calibration is not None and not (isinstance(calibration, str) and calibration == NO_CALIBRATION):
        path = as_path("--calibration", calibration).expanduser()
        if path.is_file() and len(seeds) > 1:
            raise ValueError(f"--calibration {str(calibration)!r} is one chip's calibration file, but "
                             f"--seeds names {len(seeds)} chips; give a folder holding each chip's "
                             "file, or leave --calibration out (the store)")
        for s in seeds:      # a path without a calibration of every chip is refused now
            find_calibration(s, path=path, preset=preset)
    conditions = []
    for c in [(h, 0.0) for h in hours] + [(0.0, t) for t in temperatures]:
        if c not in conditions:
            conditions.append(c)
    return Settings(seeds, hours, temperatures, images, fine_tune_images, refresh_images, treatments,
                    calibration, data_dir, bool(reuse_baseline), tuple(conditions), preset)


# --- the pieces ----------------------------------------------------------------------

def _accuracy(net, chip, x, y, faulty, bar=None, label=""):
    """Fraction of ``x`` classified correctly on ``chip`` through the cycle-level
    model, with the evaluation noise seed and ``faulty`` routed around."""
    acc = Accelerator(chip, noise_seed=EVAL_NOISE_SEED, faulty=faulty)
    correct = 0
    for i in range(0, len(y), BATCH):
        pred = net.predict(x[i:i + BATCH], "chip", acc, batch_size=BATCH)
        correct += int(np.sum(pred == y[i:i + BATCH]))
        if bar is not None:
            bar.update(len(pred), label)
    return correct / len(y)


def _shifted(x, rng):
    """The pipeline's augmentation of MNIST images (``train._augment``)."""
    return random_shift(x, AUGMENT_SHIFT, rng)


def fine_tune(net, chip, x, y, faulty, label="fine-tuning"):
    """A copy of ``net`` fine-tuned in the loop on ``chip`` for one epoch over
    ``(x, y)``: the pipeline's fine-tuning (``train.fine_tune_on_chip``: Adam at
    ``HIL_LR``, decay ``HIL_LR_DECAY``, batches of ``BATCH_SIZE``, images shifted
    by up to ``AUGMENT_SHIFT`` pixels, noise seed, shuffling and augmentation
    keyed by :data:`HIL_NOISE_SEED`), without checkpoints and progress bars of
    its own."""
    acc = Accelerator(chip, noise_seed=HIL_NOISE_SEED, faulty=faulty)
    tuned = net.clone()
    fit(tuned, x, y, "chip", epochs=1, optimizer=Adam(tuned.parameters(), lr=HIL_LR),
        batch_size=BATCH_SIZE, rng=np.random.default_rng(HIL_NOISE_SEED), accelerator=acc,
        checkpoint=None, lr_decay=HIL_LR_DECAY, augment=_shifted,
        augment_seed=HIL_NOISE_SEED + 2, progress=False, label=label)
    return tuned


def previous_from_settings(seed: int, config) -> ChipCalibration:
    """The hour-0 calibration as ``calibrate(previous=...)`` takes it, made from
    the calibrated settings of ``config`` (what a calibration file holds):
    every built-in step gets them all as its settings (``'capmem/<name>'``,
    ``'driver_offset'``, ``'cadc_digital_offset'``) and picks its own. A
    calibration read from the store and one made in this run (whose details
    are not in the file) so recalibrate alike."""
    settings = {(CAPMEM_STEP_PREFIX + k[len(CAPMEM_PREFIX):] if k.startswith(CAPMEM_PREFIX) else k): v
                for k, v in calibration_settings(config).items()}
    return ChipCalibration(chip_seed=seed, target=CalibrationTarget(),
                           steps=[StepResult(name=n, settings=dict(settings)) for n in DEFAULT_STEPS])


CAPMEM_STEP_PREFIX = "capmem/"
"""How a step's settings name a capmem parameter (:class:`StepResult`)."""


def recalibration_mode(calibrated: bool) -> str:
    """How :func:`recalibrate` recalibrates a chip: ``"from_previous"`` where the
    chip had a calibration at hour 0, else ``"fresh"``."""
    return "from_previous" if calibrated else "fresh"


def recalibration_note(calibrated: bool) -> str:
    if recalibration_mode(calibrated) == "from_previous":
        return ("recalibrated at each condition starting from the hour-0 calibration's settings "
                "(calibrate(..., previous=))")
    return "calibrated from scratch at each condition (the chip had no calibration at hour 0)"


def recalibrate(seed, base_config, hours, temperature_c, previous=None, preset="default"):
    """``(chip, ChipCalibration)``: a new chip ``seed`` with the hour-0 settings
    ``base_config``, run at the condition and recalibrated there (from
    ``previous``, a ChipCalibration; None: fresh)."""
    chip = Chip(seed, preset=preset)
    chip.config = base_config.copy()
    chip.set_environment(temperature_c=temperature_c, hours=hours)
    with np.errstate(invalid="ignore", divide="ignore"):
        cal = calibrate(chip, noise_seed=CALIBRATION_NOISE_SEED, previous=previous)
    return chip, cal


def _versions() -> dict:
    import numba

    from bss2sim import __version__
    return {"bss2sim": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__}


def _stats(values) -> dict:
    a = np.asarray(values, float)
    return {"mean_rel": float(a.mean()), "std_rel": float(a.std(ddof=1)) if len(a) > 1 else None,
            "min_rel": float(a.min()), "max_rel": float(a.max()), "chips": int(len(a))}


def summarise(chips: list, settings: Settings) -> dict:
    """Mean, sample standard deviation (None for one chip), min and max over
    the chips of every condition, treatment and network: ``"vs_hours"`` (at
    +0 K) and ``"vs_temperature"`` (at hour 0), plus the baseline."""
    def entry(h, t):
        out = {"hours_h": h, "temperature_offset_k": t}
        for tr in settings.treatments:
            out[tr] = {}
            for n in NETWORKS:
                vals = [next(c for c in ch["conditions"]
                             if c["hours_h"] == h and c["temperature_offset_k"] == t)["accuracy_rel"][tr][n]
                        for ch in chips]
                out[tr][n] = _stats(vals)
        return out
    return {"baseline": {n: _stats([ch["baseline_accuracy_rel"][n] for ch in chips]) for n in NETWORKS},
            "vs_hours": [entry(h, 0.0) for h in settings.hours],
            "vs_temperature": [entry(0.0, t) for t in settings.temperatures_k]}


# --- the study -----------------------------------------------------------------------

def _work_per_chip(s: Settings) -> int:
    """Images the study runs per chip (the progress bar's unit)."""
    n = s.fine_tune_images + 2 * s.images
    for c in s.conditions:
        for tr in s.treatments:
            if tr == "no_recalibration" and c == (0.0, 0.0) and s.reuse_baseline:
                continue
            n += 2 * s.images + (2 * s.refresh_images if tr == "refreshed" else 0)
    return n


def _calibrating(seed):
    def progress(step):
        note(f"  calibrating chip seed {seed} (none stored for it): step {step}")
    return progress


def drift_study(seeds=DEFAULT_SEEDS, hours=DEFAULT_HOURS, temperatures=DEFAULT_TEMPERATURES_K,
                images=None, fine_tune_images=HIL_IMAGES, refresh_images=DEFAULT_REFRESH_IMAGES,
                treatments=TREATMENTS, calibration=None, data_dir=None, reuse_baseline=True,
                progress=True, preset="default") -> dict:
    """Accuracy of the shipped and the per-chip fine-tuned MNIST network under
    drift and temperature, without recalibration, recalibrated and refreshed
    (see the module docstring).

    Parameters
    ----------
    seeds : chip seeds (1..100 distinct integers)
    hours : hours of operation since calibration, at the reference temperature (0..1e6)
    temperatures : temperature offsets from the reference 25 degrees C, K, at hour 0
        (the chip's range -40..125 degrees C)
    images : test images, the first of the shipped test set (1..10000; None: all)
    fine_tune_images : training images of the fine-tuning at hour 0 (1..60000;
        default 10,000 as ``bss2sim train``)
    refresh_images : training images of each refresh (1..60000; default 1,000)
    treatments : a subset of :data:`TREATMENTS` (default all)
    calibration : None (the store, the shipped one, else calibrate now and
        store), ``"none"`` (uncalibrated chips) or a path (a file for one chip,
        or a folder of every chip's file)
    data_dir : the MNIST folder of the training images (default ``$BSS2SIM_MNIST_DIR``)
    reuse_baseline : take the baseline for (hour 0, +0 K) without
        recalibration instead of measuring it again (default True)
    progress : show a progress bar on stderr
    preset : the chips' effect preset, ``"default"``, ``"ideal"`` or ``"harsh"``
        (calibrations are stored per preset)

    Returns
    -------
    dict: ``settings``, ``chip_seeds``, ``chips`` (per chip: its calibration,
    how it was recalibrated, the baseline and every condition's accuracies,
    fractions 0..1, and wall times), ``summary`` (:func:`summarise`),
    ``versions``, ``wall_time_s``. Everything is checked before any work.
    """
    s = check_arguments(seeds, hours, temperatures, images, fine_tune_images, refresh_images,
                        treatments, calibration, data_dir, reuse_baseline, preset)
    t_start = time.perf_counter()
    train_x, train_y = load_mnist("train", find_data_dir(data_dir))
    for option, n in (("--fine-tune-images", s.fine_tune_images), ("--refresh-images", s.refresh_images)):
        if n > len(train_y):
            raise ValueError(f"{option} {n} is more than the {len(train_y)} training images there are")
    x, y = load_test_set()
    if s.images > len(y):
        raise ValueError(f"--images {s.images} is more than the {len(y)} images of the shipped test set")
    x, y = x[:s.images], y[:s.images]
    net_path = PACKAGE_DATA / NETWORK_FILE
    if not net_path.exists():
        raise ValueError(f"the shipped network ({net_path.name}) is missing; run bss2sim train --ship")
    ck = load_checkpoint(net_path, expect_metadata={"stage": "fine-tuned"})
    shipped = ck.make_network()
    ref = _reference_c()

    # Every chip's calibration first, so that a missing or refused one stops the
    # study before the long part.
    prepared = []
    for seed in s.seeds:
        t0 = time.perf_counter()
        chip, loaded = chip_with_calibration(seed, s.calibration, progress=_calibrating(seed), preset=s.preset)
        note(f"chip {seed}, calibration: {describe(loaded)}")
        prepared.append((seed, chip, loaded, time.perf_counter() - t0))

    chips = []
    bar = Progress(f"drift study on {len(s.seeds)} chip(s)", _work_per_chip(s) * len(s.seeds),
                   unit="image") if progress else None
    try:
        for seed, chip, loaded, cal_wall in prepared:
            chips.append(_one_chip(s, seed, chip, loaded, cal_wall, shipped, x, y, train_x, train_y,
                                   ref, bar))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return {"chip_seeds": list(s.seeds), "images": s.images, "settings": s.to_dict(),
            "network": {"file": NETWORK_FILE, "format_version": ck.format_version,
                        "metadata": {k: v for k, v in ck.metadata.items() if k != "history"},
                        "describe": shipped.describe()},
            "treatments": {t: TREATMENT_LABELS[t] for t in s.treatments},
            "networks": {"shipped": "the shipped network (data/mnist_net.npz: noise-aware "
                                    "software training, then fine-tuned on chip 0 by bss2sim train)",
                         "fine_tuned": "the shipped network fine-tuned in the loop on each chip at "
                                       "hour 0, 25 degrees C, right after its calibration"},
            "chips": chips, "summary": summarise(chips, s), "versions": _versions(),
            "wall_time_s": time.perf_counter() - t_start}


def _one_chip(s, seed, chip, loaded, cal_wall, shipped, x, y, train_x, train_y, ref, bar):
    t_chip = time.perf_counter()
    faulty = loaded.faulty if loaded is not None else FaultyUnits()
    base_config = chip.config.copy()
    previous = previous_from_settings(seed, base_config) if loaded is not None else None
    chip.set_environment(temperature_c=ref, hours=0.0)

    def tick(n, what):
        if bar is not None:
            bar.update(n, f"chip {seed}: {what}")

    t0 = time.perf_counter()
    idx = np.random.default_rng(seed + FINE_TUNE_IMAGE_SEED).permutation(len(train_y))[:s.fine_tune_images]
    nets = {"shipped": shipped,
            "fine_tuned": fine_tune(shipped, chip, train_x[idx], train_y[idx], faulty,
                                    f"fine-tuning on chip {seed}")}
    tick(s.fine_tune_images, "fine-tuned")
    fine_tune_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    baseline = {n: _accuracy(net, chip, x, y, faulty, bar, f"chip {seed}: baseline")
                for n, net in nets.items()}
    baseline_wall = time.perf_counter() - t0
    refresh_idx = np.random.default_rng(seed + REFRESH_IMAGE_SEED).permutation(len(train_y))
    refresh_idx = refresh_idx[:s.refresh_images]

    conditions = []
    for h, dt in s.conditions:
        temp = ref + dt
        where = f"{h:g} h, {dt:+g} K"
        cond = {"hours_h": h, "temperature_offset_k": dt, "temperature_c": temp, "accuracy_rel": {},
                "wall_time_s": {}}
        for tr in s.treatments:
            t0 = time.perf_counter()
            if tr == "no_recalibration":
                if (h, dt) == (0.0, 0.0) and s.reuse_baseline:
                    res = dict(baseline)
                    cond["baseline_reused"] = True
                else:
                    chip.set_environment(temperature_c=temp, hours=h)
                    res = {n: _accuracy(net, chip, x, y, faulty, bar, f"chip {seed}: {where}, {tr}")
                           for n, net in nets.items()}
            elif tr == "recalibrated":
                rchip, cal = recalibrate(seed, base_config, h, temp, previous, s.preset)
                rfaulty = cal.faulty_units()
                cond["recalibration"] = {"from_previous": bool(getattr(cal, "from_previous", False)),
                                         "faulty_units": rfaulty.to_dict(),
                                         "failures": list(cal.failures),
                                         "measurements": cal.measurements,
                                         "capmem_writes": cal.capmem_writes,
                                         "silicon_time_s": cal.silicon_time_s,
                                         "wall_time_s": cal.wall_time_s}
                res = {n: _accuracy(net, rchip, x, y, rfaulty, bar, f"chip {seed}: {where}, {tr}")
                       for n, net in nets.items()}
            else:
                chip.set_environment(temperature_c=temp, hours=h)
                res = {}
                for n, net in nets.items():
                    fresh = fine_tune(net, chip, train_x[refresh_idx], train_y[refresh_idx], faulty,
                                      f"refresh on chip {seed}")
                    tick(s.refresh_images, f"{where}, refreshed {n}")
                    res[n] = _accuracy(fresh, chip, x, y, faulty, bar, f"chip {seed}: {where}, {tr}")
            chip.set_environment(temperature_c=ref, hours=0.0)
            cond["accuracy_rel"][tr] = res
            cond["wall_time_s"][tr] = time.perf_counter() - t0
        conditions.append(cond)
    return {"chip_seed": seed, "calibration": None if loaded is None else loaded.to_dict(),
            "recalibration": recalibration_mode(loaded is not None) if "recalibrated" in s.treatments
            else None,
            "recalibration_note": recalibration_note(loaded is not None)
            if "recalibrated" in s.treatments else None,
            "baseline_accuracy_rel": baseline, "conditions": conditions,
            "wall_time_s": {"calibration": cal_wall, "fine_tune": fine_tune_wall,
                            "baseline": baseline_wall, "total": time.perf_counter() - t_chip + cal_wall}}


# --- output -----------------------------------------------------------------------------

def _figure(res: dict, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = res["summary"]
    treatments = list(res["treatments"])
    colours = {"no_recalibration": "C3", "recalibrated": "C0", "refreshed": "C2"}
    styles = {"shipped": ("-", "o"), "fine_tuned": ("--", "s")}
    n_chips = len(res["chip_seeds"])
    panels = [("vs_hours", "hours_h", "hours of operation since calibration (at 25 degrees C)"),
              ("vs_temperature", "temperature_offset_k",
               "temperature offset from 25 degrees C (K, at hour 0)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (key, xkey, xlabel) in zip(axes, panels):
        rows = summ[key]
        xs = np.array([r[xkey] for r in rows], float)
        for tr in treatments:
            for n in NETWORKS:
                mean = np.array([r[tr][n]["mean_rel"] for r in rows]) * 100
                lo = np.array([r[tr][n]["min_rel"] for r in rows]) * 100
                hi = np.array([r[tr][n]["max_rel"] for r in rows]) * 100
                ls, marker = styles[n]
                ax.plot(xs, mean, ls=ls, marker=marker, color=colours[tr], ms=4,
                        label=f"{TREATMENT_LABELS[tr]}, {NETWORK_LABELS[n]}")
                if n_chips > 1:
                    ax.fill_between(xs, lo, hi, color=colours[tr], alpha=0.08 if n == "shipped" else 0.05,
                                    lw=0)
        if key == "vs_hours" and len(xs) and xs.max() > 0:
            pos = xs[xs > 0]
            ax.set_xscale("symlog", linthresh=float(pos.min()) if len(pos) else 1.0)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{v:g}" for v in xs])
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MNIST test accuracy (%)")
    spread = f"mean of {n_chips} chips, band min..max" if n_chips > 1 else "1 chip"
    p = summ["baseline"]["shipped"]["mean_rel"]
    lo, hi = wilson_interval(p, res["images"])
    fig.suptitle(f"Drift and temperature, {res['images']} test images ({spread}); chip seeds "
                 f"{', '.join(map(str, res['chip_seeds']))}\none chip's accuracy at {p:.1%} has a 95 % "
                 f"binomial interval of {lo * 100:.2f}..{hi * 100:.2f} %", fontsize=10)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _table(res: dict) -> str:
    treatments = list(res["treatments"])
    cols = [(tr, n) for tr in treatments for n in NETWORKS]
    n_chips = len(res["chip_seeds"])
    head = ["hours", "dT (K)"] + [f"{TREATMENT_LABELS[tr]} / {NETWORK_LABELS[n]}" for tr, n in cols]
    lines = [f"MNIST accuracy (%) on {n_chips} chip(s) (seeds {', '.join(map(str, res['chip_seeds']))}), "
             f"{res['images']} test images; mean" + (" +- sample std, [min..max]" if n_chips > 1 else ""),
             " | ".join(head)]

    def cell(st):
        text = f"{st['mean_rel'] * 100:.2f}"
        if st["std_rel"] is not None:
            text += f" +- {st['std_rel'] * 100:.2f} [{st['min_rel'] * 100:.2f}..{st['max_rel'] * 100:.2f}]"
        return text
    b = res["summary"]["baseline"]
    lines.append("baseline (0 h, +0 K, hour-0 calibration): "
                 + ", ".join(f"{NETWORK_LABELS[n]} {cell(b[n])}" for n in NETWORKS))
    seen = set()
    for key in ("vs_hours", "vs_temperature"):
        for r in res["summary"][key]:
            c = (r["hours_h"], r["temperature_offset_k"])
            if c in seen:
                continue
            seen.add(c)
            lines.append(" | ".join([f"{c[0]:g}", f"{c[1]:+g}"] + [cell(r[tr][n]) for tr, n in cols]))
    return "\n".join(lines)


def run(seeds=DEFAULT_SEEDS, hours=DEFAULT_HOURS, temperatures=DEFAULT_TEMPERATURES_K, images=None,
        fine_tune_images=HIL_IMAGES, refresh_images=DEFAULT_REFRESH_IMAGES, treatments=TREATMENTS,
        calibration=None, data_dir=None, plots=DEFAULT_OUTPUT_DIR, as_json=False, preset="default"):
    """``bss2sim drift``: :func:`drift_study`, its table on stdout, the figure
    :data:`FIGURE` in ``plots`` and, with ``as_json``, one JSON object."""
    check_arguments(seeds, hours, temperatures, images, fine_tune_images, refresh_images, treatments,
                    calibration, data_dir, preset=preset)
    find_data_dir(data_dir)         # no MNIST folder: refused before any work
    res = drift_study(seeds, hours, temperatures, images, fine_tune_images, refresh_images, treatments,
                      calibration, data_dir, preset=preset)
    path = plots_dir(plots) / FIGURE
    _figure(res, path)
    res["figures"] = [str(path)]
    print(_table(res))
    modes = sorted({c["recalibration_note"] for c in res["chips"] if c["recalibration_note"]})
    for m in modes:
        print(f"recalibration: {m}")
    for c in res["chips"]:
        print(f"chip {c['chip_seed']}: calibration {describe_dict(c['calibration'])}")
    print(f"wall time {res['wall_time_s']:.0f} s; figure {path}")
    if as_json:
        emit_json(res)
    return res


def describe_dict(cal) -> str:
    if cal is None:
        return "none (uncalibrated)"
    return f"{cal['origin']}" + (f" {cal['path']}" if cal["path"] else "")
