"""``bss2sim sweep``: a Monte-Carlo sweep over chip seeds on Dask.

Every chip seed is one Dask task, :func:`run_seed`, a pure function of the seed
and the result settings (:meth:`SweepSettings.result_settings`):

1. ``Chip(seed, preset=...)`` is calibrated from scratch (never from or into the
   calibration store: the result must not depend on what is stored), with the
   calibration noise seed of the store's calibrations; its wall time and
   silicon time, the residuals against the stated targets
   (:func:`~bss2sim.experiments.validation.check_targets`) and the settings
   against the hidden ground truth
   (:func:`~bss2sim.experiments.validation.compare_with_truth`) are recorded;
2. the shipped MNIST network classifies the first ``--images`` images of the
   shipped test set (default all 10,000) on a fresh ``Chip(seed)`` given that
   calibration, routed around the units it names faulty, with the demo's
   noise seed and batch: the accuracy is the one ``bss2sim demo --seed N``
   reports on the same calibration;
3. another fresh chip with that calibration is measured through VMMs
   (:func:`~bss2sim.digital.measure_behaviour`, with the defaults
   ``bss2sim calibrate`` and ``bss2sim train`` use): gain, trial-to-trial and
   shared noise, fixed-pattern spreads, linear range;
4. with ``--drift``, the drift study of :mod:`bss2sim.experiments.drift` for
   that chip alone, on this calibration (written to a temporary folder and
   read back as ``--calibration`` would), with smaller defaults of its own.

Each part starts from the calibrated settings, so no part depends on another
having run, and every noise is seeded: a seed's result is the same, bit for
bit, whatever the number of workers, the order the tasks run in or the
worker that runs them (only the ``measured`` columns, :data:`MEASURED_COLUMNS`:
wall times, peak memory, worker, differ between runs).

Threads: each task sets the numba kernels' thread count itself
(``numba.set_num_threads`` runs inside the task, in the worker's thread that
executes it, since numba's setting is per thread, and is restored after it):
1 by default (:data:`DEFAULT_WORKER_THREADS`; the sweep's parallelism is its
workers, one per core by default), ``--worker-threads N`` otherwise. The count
changes the speed only, never a result. The local cluster runs one process per
worker with one Dask thread each; Dask's nanny starts each with numpy's BLAS
on one thread (``distributed.nanny.pre-spawn-environ``), but not with the
``MALLOC_TRIM_THRESHOLD_`` it also sets, which made the model about 2 x slower
here (a calibration 10.9 s against 4.0-5.6 s); workers of a ``--scheduler``
cluster that run with it are named in a note.

The table
---------
One CSV file, ``<out>/sweep.csv``, one row per chip seed sorted by seed.
Its first line is ``# `` followed by a JSON header: ``kind``
(:data:`TABLE_KIND`), ``format_version`` (:data:`TABLE_FORMAT_VERSION`),
``settings`` (everything that affects a result: options, fixed seeds and
sizes, the SHA-256 of the shipped network and test images and of the MNIST
training images under ``--drift``, and the versions of bss2sim, numpy, numba,
scipy and Python), ``columns`` (name and type of every column), ``runs`` (each
run that wrote to the table: when, on what cluster, with which dask and
distributed versions and source code, how many seeds it computed) and
``sha256``, the project's content checksum
(:func:`~bss2sim.experiments.common.content_checksum`) over the header and
every column's values. The second line names the columns; then the rows.
Floats are written as Python's shortest repr, which reads back to the same
float. Read it with :func:`read_table`, or ``pandas.read_csv(path,
skiprows=1)``. CSV rather than Parquet: the rows are a few dozen scalars per
chip, exact in text; the header travels inside the same file, so it is
replaced with the rows in one atomic write; and it needs no pyarrow.

Each row also records ``code_sha256``, the SHA-256 of the source files that
compute a result (:func:`code_fingerprint`: the model, calibration, training,
data sets, validation, the drift study and this module) as the worker process
loaded them; every worker must have this run's code before any task starts.

Every finished seed rewrites the table atomically
(:func:`~bss2sim.experiments.common.atomic_write`), so a killed sweep loses
only the tasks that were running. A sweep started again on the same folder
with the same settings skips the seeds the table holds; with other settings it
is refused, naming each setting that differs (use another ``--out`` for a new
table), and so is a table holding rows of other source code, unless
``--allow-code-change``. Seeds may be added: the table collects every seed
swept with its settings. A table that is corrupt, truncated, edited or of
another kind is refused with an error naming the file. While a sweep writes a
table it holds a lock (``.sweep.csv.lock``, left in place), and a second sweep
on the same folder is refused.

Figures (``sweep_accuracy.png``, ``sweep_residuals.png``, with ``--drift``
``sweep_drift.png``) and the printed summary (:func:`summarise`) cover the
seeds of the run's ``--seeds`` (all of them in the table once the run ends).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import WrongTypeError, check_int, check_real, check_seed
from bss2sim.circuits.environment import MAX_HOURS
from bss2sim.circuits.params import PRESETS
from bss2sim.digital import Accelerator, measure_behaviour

from . import drift as drift_module
from .calibration import CalibrationTarget, calibrate, save
from .common import (DEFAULT_OUTPUT_DIR, as_path, atomic_write, canonical_json, no_duplicate_keys,
                     check_reals, content_checksum,
                     emit_json, int_range, note, parse_reals, peak_memory_mib, save_figure, seed_list)
from .datasets.mnist import SHIPPED_TEST_SET, find_data_dir, load_mnist, load_test_set
from .progress import Progress
from .train import NETWORK_FILE, PACKAGE_DATA
from .training.checkpoint import load_checkpoint
from .validation import RESIDUAL_TARGETS, check_targets, compare_with_truth

__all__ = ["TABLE_KIND", "TABLE_FORMAT_VERSION", "TABLE_FILE", "DEFAULT_OUT", "MEASURED_COLUMNS",
           "SweepSettings", "SweepTable", "SweepError", "add_arguments", "check_arguments",
           "parse_seed_list", "read_table", "write_table", "run_seed", "run", "run_from_args",
           "summarise", "table_columns", "code_fingerprint", "versions", "worker_environment"]

TABLE_KIND = "bss2sim-sweep"
"""``kind`` of a sweep table."""
TABLE_FORMAT_VERSION = 1
"""Layout of the table this code writes and reads."""
TABLE_FILE = "sweep.csv"
FIGURE_ACCURACY = "sweep_accuracy.png"
FIGURE_RESIDUALS = "sweep_residuals.png"
FIGURE_DRIFT = "sweep_drift.png"
DEFAULT_OUT = str(Path(DEFAULT_OUTPUT_DIR) / "sweep")
"""Default output folder (``./bss2sim-output/sweep``)."""
HEADER_PREFIX = "# "
"""The table's first line: this prefix, then the header as JSON."""

MAX_SEEDS = 10_000
"""Most chip seeds of one sweep (*assumed*: a bound against a mistyped range;
the table, about 2.6 KB a row, is rewritten whole after every seed, about
26 MB a write at 10,000 rows, and 10,000 chips at about a minute each are a
week of one core)."""
MAX_WORKERS = 256
"""Most workers of a local cluster (*assumed*: a bound against a typo; a
machine with more cores than this is rare)."""
MAX_WORKER_THREADS = 256
"""Most numba threads of one task (*assumed*: the same kind of bound)."""
DEFAULT_WORKER_THREADS = 1
"""numba threads of each task by default. The sweep's parallelism is its
workers (by default one per core); on this 2-core machine, shared with other
jobs, a calibration took 5.0-5.6 s with one thread and 19-20 s with two
(measured in a worker and in a plain process), so the threads of several
workers, or of one worker with busy neighbours, only compete."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""How long to wait for a ``--scheduler`` and its first worker, s (*assumed*: a
scheduler on the local network answers in milliseconds; 10 s leaves room for
a busy one without making a typo wait long)."""
MNIST_TEST_IMAGES = 10_000
"""Images of the shipped MNIST test set (the bound of ``--images``)."""
CALIBRATION_NOISE_SEED = 0
"""Noise seed of every calibration (that of the store's and shipped calibrations)."""
EVAL_NOISE_SEED = 0
"""Trial-to-trial noise seed of the MNIST evaluation (that of ``bss2sim demo``)."""
EVAL_BATCH = 500
"""Test images per call of the network (the demo's; results do not depend on it)."""
MEASURE = {"num_vectors": 96, "repeats": 6, "num_sends": 1, "wait_between_events": 5,
           "noise_seed": 1, "seed": 0, "ramp_steps": 33}
"""Arguments of :func:`~bss2sim.digital.measure_behaviour`: its defaults, which
``bss2sim calibrate`` and ``bss2sim train`` use."""

DRIFT_TREATMENTS = ("no_recalibration", "recalibrated", "refreshed")
"""The drift study's treatments (:data:`bss2sim.experiments.drift.TREATMENTS`)."""
DRIFT_NETWORKS = ("shipped", "fine_tuned")
"""The drift study's networks (:data:`bss2sim.experiments.drift.NETWORKS`)."""
DRIFT_DEFAULT_HOURS = (0.0, 168.0)
"""Hours of operation of the drift part (*assumed*: hour 0 and one week, the
ends of ``bss2sim drift``'s default 0, 1, 4, 24, 168, to keep the cost per
chip down: with these defaults the drift part of chip 5 took 142 s here,
against 76 s for its evaluation on all 10,000 test images)."""
DRIFT_DEFAULT_TEMPERATURES_K = (0.0, 10.0)
"""Temperature offsets of the drift part, K (*assumed*: the reference and the
largest offset of ``bss2sim drift``'s default 0, 2, 5, 10, for the same reason)."""
DRIFT_DEFAULT_IMAGES = 1_000
"""Test images of each drift evaluation (*assumed*: a 95 % binomial interval
of about +-0.9 points at 98 % per chip; the spread over many chips is what a
sweep looks at)."""
DRIFT_DEFAULT_FINE_TUNE_IMAGES = 1_000
"""Training images of the per-chip fine-tuning at hour 0 (*assumed*: a tenth
of ``bss2sim train``'s 10,000, for the cost per chip; the README measured
that the full fine-tuning moves a calibrated chip's accuracy by only -0.03 to
+0.07 points)."""
DRIFT_DEFAULT_REFRESH_IMAGES = 200
"""Training images of each in-the-loop refresh (*assumed*: a fifth of
``bss2sim drift``'s 1,000, for the same cost reason)."""
MNIST_TRAIN_IMAGES = 60_000

MEASURED_COLUMNS = ("task_wall_time_s", "calibration_wall_time_s", "mnist_wall_time_s",
                    "measure_wall_time_s", "drift_wall_time_s", "peak_rss_mib", "peak_rss_method",
                    "numba_threads", "worker", "host", "finished_utc")
"""Columns that are measurements of the run itself, not results of the chip:
they differ between runs (wall times in s, the worker process's peak resident
set size in MiB and how it was measured, the numba threads, the worker's
address and host, when the task finished, UTC). Every other column is the
same, bit for bit, whenever a seed is computed with the same settings."""

_TYPES = ("uint64", "int64", "float64", "bool", "str")
_SUFFIX = {"LSB": "_lsb", "": "_rel"}
_POSIX_LOCK = os.name == "posix"


class SweepError(RuntimeError):
    """Some seeds of a sweep failed (the others are in the table)."""


# --- arguments ---------------------------------------------------------------------

parse_seed_list = seed_list(MAX_SEEDS)
"""argparse type of ``--seeds`` (:func:`~bss2sim.experiments.common.seed_list`)."""
_int_option = int_range
_reals_option = parse_reals


def _check_reals(option, values, lo, hi, unit):
    return check_reals(option, values, lo, hi, unit)


def _timeout_option(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--connect-timeout {text!r} is not a number of seconds; "
                                         "allowed: 0.1..3600") from None
    if not (math.isfinite(v) and 0.1 <= v <= 3600):
        raise argparse.ArgumentTypeError(f"--connect-timeout {text} is not allowed: must be a number "
                                         "of seconds in 0.1..3600")
    return v


def _default_workers() -> int:
    """Cores this process may run on (the default of ``--workers``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_WORKERS))


@dataclass(frozen=True)
class DriftOptions:
    """The drift part's checked options (see :func:`check_arguments`)."""

    hours: tuple
    temperatures_k: tuple
    images: int
    fine_tune_images: int
    refresh_images: int
    treatments: tuple
    data_dir: Path
    conditions: tuple
    """(hours, temperature offset K) of the study, in the drift study's order."""


@dataclass(frozen=True)
class SweepSettings:
    """The checked arguments of a sweep."""

    seeds: tuple
    images: int
    preset: str
    out: Path
    scheduler: str | None
    workers: int | None
    """Workers of the local cluster (None with ``scheduler``)."""
    worker_threads: int
    """numba threads per task (default :data:`DEFAULT_WORKER_THREADS`)."""
    connect_timeout_s: float
    drift: DriftOptions | None

    def result_settings(self, fingerprints: dict | None = None) -> dict:
        """Everything that affects a seed's result, as plain JSON: what the
        table's header records and what a resumed sweep must match.
        ``fingerprints``: :func:`fingerprints_of` (computed when None)."""
        fp = fingerprints if fingerprints is not None else fingerprints_of(self)
        d = self.drift
        return {
            "images": self.images, "preset": self.preset,
            "calibration_target_id": CalibrationTarget().target_id,
            "calibration_noise_seed": CALIBRATION_NOISE_SEED,
            "residual_limits": {name: t.limit for name, t in RESIDUAL_TARGETS.items()},
            "mnist_noise_seed": EVAL_NOISE_SEED, "mnist_batch": EVAL_BATCH, "fault_mapping": True,
            "measure": dict(MEASURE),
            "drift": d is not None,
            "drift_hours_h": None if d is None else list(d.hours),
            "drift_temperature_offsets_k": None if d is None else list(d.temperatures_k),
            "drift_images": None if d is None else d.images,
            "drift_fine_tune_images": None if d is None else d.fine_tune_images,
            "drift_refresh_images": None if d is None else d.refresh_images,
            "drift_treatments": None if d is None else list(d.treatments),
            **fp,
        }


_SETTING_NAMES = {
    "images": "--images", "preset": "--preset", "drift": "--drift", "drift_hours_h": "--drift-hours",
    "drift_temperature_offsets_k": "--drift-temperatures", "drift_images": "--drift-images",
    "drift_fine_tune_images": "--drift-fine-tune-images",
    "drift_refresh_images": "--drift-refresh-images", "drift_treatments": "--drift-treatments",
    "drift_training_data_sha256": "the MNIST training images of --data-dir (their content)",
    "network_sha256": "the shipped network (data/mnist_net.npz)",
    "test_images_sha256": "the shipped test images (data/mnist_test.npz)",
}
"""How an error names each setting of :meth:`SweepSettings.result_settings`."""


def check_arguments(seeds, images=None, out=DEFAULT_OUT, scheduler=None, workers=None,
                    worker_threads=DEFAULT_WORKER_THREADS, preset="default", drift=False,
                    drift_hours=DRIFT_DEFAULT_HOURS, drift_temperatures=DRIFT_DEFAULT_TEMPERATURES_K,
                    drift_images=DRIFT_DEFAULT_IMAGES,
                    drift_fine_tune_images=DRIFT_DEFAULT_FINE_TUNE_IMAGES,
                    drift_refresh_images=DRIFT_DEFAULT_REFRESH_IMAGES, drift_treatments=DRIFT_TREATMENTS,
                    data_dir=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT_S) -> SweepSettings:
    """Every argument of :func:`run` checked before any work; each error names
    the option, the bad value and what is allowed."""
    if isinstance(seeds, str):                  # the command line's form, "0-99" or "3,7,20-29"
        try:
            seeds = parse_seed_list(seeds)
        except argparse.ArgumentTypeError as e:
            raise ValueError(str(e)) from None
    if isinstance(seeds, bytes) or not hasattr(seeds, "__iter__"):
        raise WrongTypeError(f"--seeds {seeds!r} is not allowed: give a list of chip seeds (integers "
                             "0..2**64-1)")
    seeds = tuple(check_seed("--seeds", s) for s in seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"--seeds gives {len(seeds)} chip seeds; allowed: 1..{MAX_SEEDS}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("--seeds names a chip seed more than once")
    images = MNIST_TEST_IMAGES if images is None else check_int("--images", images, 1, MNIST_TEST_IMAGES)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not allowed: one of {', '.join(PRESETS)}")
    out = as_path("--out", out).expanduser()
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ValueError(f"--scheduler {scheduler!r} is not allowed: give the address of a running "
                             "dask scheduler, e.g. tcp://10.0.0.5:8786")
        if workers is not None:
            raise ValueError(f"--workers {workers} is not allowed with --scheduler: it sizes the local "
                             "cluster only; the workers of the cluster at --scheduler run the sweep")
        scheduler = scheduler.strip()
    else:
        workers = _default_workers() if workers is None else check_int("--workers", workers, 1, MAX_WORKERS)
    worker_threads = check_int("--worker-threads", worker_threads, 1, MAX_WORKER_THREADS)
    connect_timeout = check_real("--connect-timeout", connect_timeout, 0.1, 3600.0, "s")
    if not isinstance(drift, (bool, np.bool_)):
        raise WrongTypeError(f"--drift {drift!r} must be True or False")
    d = None
    if drift:
        hours = _check_reals("--drift-hours", drift_hours, 0.0, MAX_HOURS, "hours")
        t_lo, t_hi = drift_module.temperature_range_k()
        temps = _check_reals("--drift-temperatures", drift_temperatures, t_lo, t_hi, "K")
        d_images = check_int("--drift-images", drift_images, 1, MNIST_TEST_IMAGES)
        ft = check_int("--drift-fine-tune-images", drift_fine_tune_images, 1, MNIST_TRAIN_IMAGES)
        rf = check_int("--drift-refresh-images", drift_refresh_images, 1, MNIST_TRAIN_IMAGES)
        if isinstance(drift_treatments, (str, bytes)) or not hasattr(drift_treatments, "__iter__"):
            raise WrongTypeError(f"--drift-treatments {drift_treatments!r} is not allowed: give a list of "
                                 f"{', '.join(DRIFT_TREATMENTS)}")
        tr = tuple(drift_treatments)
        if not tr or len(set(tr)) != len(tr) or any(t not in DRIFT_TREATMENTS for t in tr):
            raise ValueError(f"--drift-treatments {','.join(map(str, tr)) or '(none)'} is not allowed: "
                             f"give each of {', '.join(DRIFT_TREATMENTS)} at most once, at least one")
        tr = tuple(t for t in DRIFT_TREATMENTS if t in tr)
        try:
            folder = find_data_dir(data_dir)
        except ValueError as e:
            raise ValueError(f"--drift needs the MNIST training images (--data-dir): {e}") from None
        s = drift_module.check_arguments(seeds=(0,), hours=hours, temperatures=temps, images=d_images,
                                         fine_tune_images=ft, refresh_images=rf, treatments=tr,
                                         preset=preset)
        d = DriftOptions(hours, temps, d_images, ft, rf, tr, folder.resolve(), tuple(s.conditions))
    elif data_dir is not None:
        raise ValueError(f"--data-dir {str(data_dir)!r} is only used by --drift (the MNIST training "
                         "images of its fine-tuning); the sweep's test images are the shipped ones")
    return SweepSettings(seeds, images, preset, out, scheduler, workers, worker_threads,
                         connect_timeout, d)


# --- fingerprints ---------------------------------------------------------------------

def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _code_files() -> list:
    """The package's source files that compute a sweep's results: the model
    (circuits, digital), calibration, training, data sets, validation, the
    drift study (and the pipeline constants it takes) and this module."""
    import bss2sim.circuits
    import bss2sim.digital
    exp = Path(__file__).resolve().parent
    roots = [Path(bss2sim.circuits.__file__).resolve().parent, Path(bss2sim.digital.__file__).resolve().parent,
             exp / "calibration", exp / "training", exp / "datasets"]
    files = [p for r in roots for p in sorted(r.rglob("*.py"))]
    files += [exp / n for n in ("validation.py", "drift.py", "train.py", "common.py", "sweep.py")]
    return files


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (hex) over the source code that computes a sweep's results
    (each file's path below its package folder and its bytes), read once per
    process: this module computes it when it is imported, together with the
    modules it names, so it stays the code this process runs when the files
    change later."""
    h = hashlib.sha256()
    for p in _code_files():
        name = "/".join(p.parts[-2:]).encode("utf-8")
        data = p.read_bytes()
        for b in (name, data):
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def versions() -> dict:
    """Versions of bss2sim, numpy, numba, scipy, dask, distributed and Python
    here (dask and distributed: None when not installed)."""
    import numba
    import scipy

    from bss2sim import __version__
    out = {"bss2sim": __version__, "numpy": np.__version__, "numba": numba.__version__,
           "scipy": scipy.__version__, "python": platform.python_version()}
    for name in ("dask", "distributed"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


RESULT_VERSIONS = ("bss2sim", "numpy", "numba", "scipy", "python")
"""The versions that may change a result (part of the result settings)."""


def _training_data_sha256(data_dir) -> str:
    x, y = load_mnist("train", data_dir)
    return content_checksum({"what": "MNIST training images"}, {"images": x, "labels": y})


def fingerprints_of(settings: SweepSettings | None = None, data_dir=None) -> dict:
    """The part of the result settings that is measured rather than given: the
    SHA-256 of the shipped network and test images and of the MNIST training
    images (with the drift part), and the versions that may change a result
    (``<name>_version``). The source code is recorded per row
    (``code_sha256``, :func:`code_fingerprint`)."""
    if settings is not None and settings.drift is not None:
        data_dir = settings.drift.data_dir
    v = versions()
    return {"network_sha256": _file_sha256(PACKAGE_DATA / NETWORK_FILE),
            "test_images_sha256": _file_sha256(SHIPPED_TEST_SET),
            "drift_training_data_sha256": None if data_dir is None else _training_data_sha256(data_dir),
            **{f"{k}_version": v[k] for k in RESULT_VERSIONS}}


def worker_environment(data_dir=None) -> dict:
    """What a worker would compute with: :func:`fingerprints_of` there, the
    dask versions, the host and the numba thread limit. Run on every worker
    before a sweep (``Client.run``) so that a worker with other code or data
    is refused before any work."""
    import numba
    return {"fingerprints": {**fingerprints_of(None, data_dir), "code_sha256": code_fingerprint()},
            "versions": versions(), "host": socket.gethostname(),
            "numba_max_threads": int(numba.config.NUMBA_NUM_THREADS),
            "malloc_trim_threshold": os.environ.get(MALLOC_TRIM)}


# --- the table's columns ------------------------------------------------------------

def _condition_tag(hours, dt) -> str:
    return f"{hours:g}h_{dt:+g}k"


TRUTH_COLUMNS = (
    ("truth_cadc_fraction_within_1_rel", ("cadc", "fraction_within_1")),
    ("truth_cadc_fraction_exact_rel", ("cadc", "fraction_exact")),
    ("truth_cadc_max_abs_difference_codes", ("cadc", "max_abs_difference")),
    ("truth_cadc_residual_max_lsb", ("cadc", "truth_residual_max_lsb")),
    ("truth_cadc_residual_std_lsb", ("cadc", "truth_residual_std_lsb")),
    *[(f"truth_{p}_{k}{u}", ("potentials", f"{p}_potential", key))
      for p in ("reset", "leak")
      for k, key, u in (("median_abs_difference", "median_abs_difference_steps", "_steps"),
                        ("p95_abs_difference", "p95_abs_difference_steps", "_steps"),
                        ("mean_difference", "mean_difference_steps", "_steps"),
                        ("fraction_within_1_step", "fraction_within_1_step_of_rounded", "_rel"))],
    ("truth_capmem_steps_per_lsb", ("potentials", "capmem_steps_per_lsb")),
    *[(f"truth_driver_{kind}_{k}{u}", ("drivers", kind, key))
      for kind in ("width", "amplitude")
      for k, key, u in (("median_abs_difference", "median_abs_difference_steps", "_steps"),
                        ("p95_abs_difference", "p95_abs_difference_steps", "_steps"),
                        ("fraction_within_1_step", "fraction_within_1_step_of_rounded", "_rel"))],
    ("truth_driver_row_factor_spread_steps", ("drivers", "row_factor_spread_steps")),
)
"""(column, path into :func:`compare_with_truth`'s result) of the float
comparisons with the ground truth; a per-half list is reduced to its largest
value (the worse half)."""


def _residual_column(name) -> str:
    """Column of a residual of :data:`~bss2sim.experiments.validation.RESIDUAL_TARGETS`,
    its unit as the suffix (``_lsb``, ``_rel`` for a fraction)."""
    unit = RESIDUAL_TARGETS[name].unit
    return f"residual_{name}{_SUFFIX.get(unit, '_' + unit.lower())}"


def table_columns(result_settings: dict) -> list:
    """``[(name, type), ...]`` of a table with these result settings, in order;
    types are ``uint64``, ``int64``, ``float64``, ``bool`` and ``str``."""
    cols = [("chip_seed", "uint64"), ("code_sha256", "str"),
            ("calibration_silicon_time_s", "float64"), ("calibration_measurements", "int64"),
            ("calibration_capmem_writes", "int64"), ("calibration_failures", "int64"),
            ("calibration_failure_text", "str"), ("faulty_columns", "int64"), ("faulty_drivers", "int64"),
            ("faulty_units", "str")]
    for name in RESIDUAL_TARGETS:
        cols += [(_residual_column(name), "float64"), (f"residual_{name}_met", "bool")]
    cols += [("targets_met", "int64"), ("all_targets_met", "bool")]
    cols += [(c, "float64") for c, _ in TRUTH_COLUMNS]
    cols += [("truth_driver_compared", "int64"), ("truth_driver_optimum_out_of_range", "int64"),
             ("truth_driver_flagged", "int64")]
    cols += [("mnist_images", "int64"), ("mnist_correct", "int64"), ("mnist_accuracy_rel", "float64"),
             ("mnist_chip_time_per_image_s", "float64"), ("mnist_asic_energy_per_image_j", "float64")]
    cols += [(c, "float64") for c in (
        "gain_lsb_per_xw", "gain_spread_fixed_pattern_rel", "offset_spread_fixed_pattern_lsb",
        "noise_trial_lsb", "noise_independent_lsb", "noise_shared_quadrant_lsb",
        "noise_correlation_same_quadrant", "noise_correlation_other_quadrant",
        "linear_range_low_lsb", "linear_range_high_lsb")]
    cols += [("saturation_unreliable_low", "int64"), ("saturation_unreliable_high", "int64"),
             ("measurement_vmms", "int64"), ("measurement_chip_time_s", "float64")]
    if result_settings.get("drift"):
        for c in _drift_columns(result_settings):
            cols.append((c, "float64"))
    for c in MEASURED_COLUMNS:
        if c == "drift_wall_time_s" and not result_settings.get("drift"):
            continue
        cols.append((c, "str" if c in ("peak_rss_method", "worker", "host", "finished_utc")
                     else "int64" if c == "numba_threads" else "float64"))
    return cols


def _drift_conditions(rs: dict) -> tuple:
    s = drift_module.check_arguments(seeds=(0,), hours=rs["drift_hours_h"],
                                     temperatures=rs["drift_temperature_offsets_k"],
                                     images=rs["drift_images"], fine_tune_images=rs["drift_fine_tune_images"],
                                     refresh_images=rs["drift_refresh_images"],
                                     treatments=rs["drift_treatments"], preset=rs["preset"])
    return tuple(s.conditions)


def _drift_columns(rs: dict) -> list:
    cols = [f"drift_baseline_{n}_rel" for n in DRIFT_NETWORKS]
    for h, dt in _drift_conditions(rs):
        tag = _condition_tag(h, dt)
        for tr in rs["drift_treatments"]:
            cols += [f"drift_{tag}_{tr}_{n}_rel" for n in DRIFT_NETWORKS]
        if "recalibrated" in rs["drift_treatments"]:
            cols.append(f"drift_{tag}_recalibration_silicon_time_s")
    return cols


# --- peak memory ---------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux: ``5`` into
    ``/proc/self/clear_refs``); False where that is not possible."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(was_reset: bool):
    """``(MiB, method)``: the process's peak resident set size since the reset
    (``VmHWM`` of ``/proc/self/status``), else since it started (``ru_maxrss``)."""
    if was_reset:
        try:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.M)
            if m:
                return int(m[1]) / 1024, "VmHWM since the task started (worker process)"
        except OSError:
            pass                    # no /proc here: the lifetime peak below
    peak = peak_memory_mib()
    if math.isnan(peak):
        return peak, "unavailable"
    return peak, "ru_maxrss since the worker process started (an upper bound)"


# --- one seed -------------------------------------------------------------------------

def _worker_info():
    """(address, Dask threads of the worker) of the worker running this task,
    or ("local", 1) outside a worker."""
    try:
        from distributed import get_worker
        w = get_worker()
    except (ImportError, ValueError):
        return "local", 1
    return str(w.address), int(getattr(w, "nthreads", 1) or 1)


def _worst(a) -> float:
    a = np.asarray(a, float)
    return float(np.max(a)) if a.size else float("nan")


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def run_seed(seed: int, result_settings: dict, data_dir=None, threads: int | None = 1) -> dict:
    """One chip of the sweep (the Dask task): calibrate ``Chip(seed)`` afresh,
    judge it against its ground truth, classify the MNIST test images on it,
    measure its behaviour and, with the drift part, run the drift study on it
    (see the module docstring). Returns the table row (a dict of the columns
    of :func:`table_columns`).

    ``result_settings``: :meth:`SweepSettings.result_settings`; the result is
    a pure function of ``seed`` and these (bar :data:`MEASURED_COLUMNS`).
    ``data_dir``: the MNIST folder of the drift part's training images (their
    content is in the settings). ``threads``: numba threads of this task (set
    here, in the thread that runs the task; None: all the process may use);
    it changes the speed only."""
    import numba

    t_task = time.perf_counter()
    worker, dask_threads = _worker_info()
    # With several tasks at once in one process a reset would cut another's peak short.
    was_reset = _reset_peak_rss() if dask_threads == 1 else False
    rs = result_settings
    seed = check_seed("seed", seed)
    limit = int(numba.config.NUMBA_NUM_THREADS)
    n_threads = limit if threads is None else max(1, min(int(threads), limit))
    before = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        row = _compute(seed, rs, data_dir)
    finally:
        numba.set_num_threads(before)
    peak, method = _peak_rss_mib(was_reset)
    row.update({"task_wall_time_s": time.perf_counter() - t_task, "peak_rss_mib": float(peak),
                "peak_rss_method": method, "numba_threads": n_threads, "worker": worker,
                "host": socket.gethostname(),
                "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    return row


def _compute(seed, rs, data_dir) -> dict:
    row = {"chip_seed": seed, "code_sha256": code_fingerprint()}
    target = CalibrationTarget()
    if target.target_id != rs["calibration_target_id"]:
        raise ValueError(f"the calibration target here is {target.target_id}, the sweep's "
                         f"{rs['calibration_target_id']}")
    # 1. Calibration, from scratch (0/0 on a dead channel is reported by the step, not warned).
    chip = Chip(seed, preset=rs["preset"])
    with np.errstate(invalid="ignore", divide="ignore"):
        cal = calibrate(chip, target=target, noise_seed=rs["calibration_noise_seed"])
    faulty = cal.faulty_units()
    row.update({"calibration_wall_time_s": cal.wall_time_s, "calibration_silicon_time_s": cal.silicon_time_s,
                "calibration_measurements": cal.measurements, "calibration_capmem_writes": cal.capmem_writes,
                "calibration_failures": len(cal.failures),
                "calibration_failure_text": json.dumps(list(cal.failures)),
                "faulty_columns": len(faulty.columns), "faulty_drivers": len(faulty.drivers),
                "faulty_units": json.dumps(faulty.to_dict(), sort_keys=True)})
    checks = check_targets(cal.residuals(), cal.target)
    for name, c in checks.items():
        if c["limit"] != rs["residual_limits"][name]:
            raise ValueError(f"the residual target {name} has limit {c['limit']} here, the sweep's "
                             f"{rs['residual_limits'][name]}")
        row[_residual_column(name)] = c["value"]
        row[f"residual_{name}_met"] = c["met"]
    row["targets_met"] = sum(c["met"] for c in checks.values())
    row["all_targets_met"] = all(c["met"] for c in checks.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        opt = compare_with_truth(chip, cal)
    for col, path in TRUTH_COLUMNS:
        row[col] = _worst(_get(opt, path))
    amp = opt["drivers"]["amplitude"]
    row.update({"truth_driver_compared": amp["compared_drivers"],
                "truth_driver_optimum_out_of_range": len(amp["optimum_out_of_range"]),
                "truth_driver_flagged": len(opt["drivers"]["flagged_drivers"])})

    def calibrated_chip():
        c = Chip(seed, preset=rs["preset"])
        cal.apply(c.config)
        return c

    # 2. MNIST on a fresh chip with the calibration, as bss2sim demo runs it.
    t0 = time.perf_counter()
    net = load_checkpoint(PACKAGE_DATA / NETWORK_FILE, expect_metadata={"stage": "fine-tuned"}).make_network()
    x, y = load_test_set()
    x, y = x[:rs["images"]], y[:rs["images"]]
    if not rs["fault_mapping"]:
        raise ValueError("the sweep always routes around the faulty units (fault_mapping True)")
    acc = Accelerator(calibrated_chip(), noise_seed=rs["mnist_noise_seed"], faulty=faulty)
    batch = rs["mnist_batch"]
    correct = 0
    for i in range(0, len(y), batch):
        correct += int(np.sum(net.predict(x[i:i + batch], "chip", acc, batch_size=batch) == y[i:i + batch]))
    rep = acc.report()
    row.update({"mnist_images": int(len(y)), "mnist_correct": correct, "mnist_accuracy_rel": correct / len(y),
                "mnist_chip_time_per_image_s": rep["total_s"] / len(y),
                "mnist_asic_energy_per_image_j": rep["asic_j"] / len(y),
                "mnist_wall_time_s": time.perf_counter() - t0})

    # 3. Behaviour through VMMs, on another fresh calibrated chip.
    t0 = time.perf_counter()
    m = measure_behaviour(calibrated_chip(), **rs["measure"])
    nan = float("nan")
    row.update({"gain_lsb_per_xw": m.gain, "gain_spread_fixed_pattern_rel": m.sigma_fixed_pattern,
                "offset_spread_fixed_pattern_lsb": m.offset_fixed_pattern_lsb,
                "noise_trial_lsb": m.sigma_trial,
                "noise_independent_lsb": nan if m.sigma_independent is None else m.sigma_independent,
                "noise_shared_quadrant_lsb": nan if m.sigma_shared is None else m.sigma_shared,
                "noise_correlation_same_quadrant": nan if m.noise_correlation_same_quadrant is None
                else m.noise_correlation_same_quadrant,
                "noise_correlation_other_quadrant": nan if m.noise_correlation_other_quadrant is None
                else m.noise_correlation_other_quadrant,
                "linear_range_low_lsb": m.linear_range[0], "linear_range_high_lsb": m.linear_range[1],
                "saturation_unreliable_low": int(np.sum(~np.asarray(m.saturation_low_reliable, bool))),
                "saturation_unreliable_high": int(np.sum(~np.asarray(m.saturation_high_reliable, bool))),
                "measurement_vmms": m.num_vmms, "measurement_chip_time_s": m.chip_time_s,
                "measure_wall_time_s": time.perf_counter() - t0})

    # 4. The drift study on this calibration, read back from a file as --calibration would.
    if rs["drift"]:
        row.update(_drift_part(seed, rs, chip, cal, data_dir))
    return row


def _drift_part(seed, rs, chip, cal, data_dir) -> dict:
    if data_dir is None:
        raise ValueError("the drift part needs the MNIST training images (data_dir)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bss2sim-sweep-") as folder:
        save(cal, chip, folder)
        with contextlib.redirect_stderr(io.StringIO()):    # the study's notes; the sweep has its own bar
            res = drift_module.drift_study(
                seeds=(seed,), hours=tuple(rs["drift_hours_h"]),
                temperatures=tuple(rs["drift_temperature_offsets_k"]), images=rs["drift_images"],
                fine_tune_images=rs["drift_fine_tune_images"], refresh_images=rs["drift_refresh_images"],
                treatments=tuple(rs["drift_treatments"]), calibration=folder, data_dir=data_dir,
                progress=False, preset=rs["preset"])
    (c,) = res["chips"]
    out = {f"drift_baseline_{n}_rel": c["baseline_accuracy_rel"][n] for n in DRIFT_NETWORKS}
    for cond in c["conditions"]:
        tag = _condition_tag(cond["hours_h"], cond["temperature_offset_k"])
        for tr in rs["drift_treatments"]:
            for n in DRIFT_NETWORKS:
                out[f"drift_{tag}_{tr}_{n}_rel"] = cond["accuracy_rel"][tr][n]
        if "recalibrated" in rs["drift_treatments"]:
            out[f"drift_{tag}_recalibration_silicon_time_s"] = cond["recalibration"]["silicon_time_s"]
    out["drift_wall_time_s"] = time.perf_counter() - t0
    return out


# --- reading and writing the table ------------------------------------------------------

@dataclass
class SweepTable:
    """A sweep table: its header fields and its rows by chip seed."""

    settings: dict
    columns: list
    runs: list
    rows: dict
    """chip seed -> row (a dict of every column, typed as ``columns`` says)."""


_HEADER_FIELDS = ("kind", "format_version", "settings", "columns", "runs", "sha256")


def _coerce(value, typ, name, where):
    """A row value as the Python type of its column (the form it reads back as)."""
    try:
        if typ in ("uint64", "int64"):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"not an integer: {value!r}")
            v = int(value)
            lo, hi = (0, 2**64 - 1) if typ == "uint64" else (-2**63, 2**63 - 1)
            if not lo <= v <= hi:
                raise ValueError(f"{v} is outside {typ}")
            return v
        if typ == "float64":
            if isinstance(value, (bool, np.bool_, str)) or value is None:
                raise TypeError(f"not a number: {value!r}")
            return float(value)
        if typ == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"not a bool: {value!r}")
            return bool(value)
        if not isinstance(value, str):
            raise TypeError(f"not a string: {value!r}")
        return value
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: column {name!r} ({typ}): {e}") from None


def _text(value, typ) -> str:
    if typ == "float64":
        return repr(float(value))
    if typ == "bool":
        return "true" if value else "false"
    return str(value)


def _parse(text, typ, name, where):
    try:
        if typ in ("uint64", "int64"):
            if not re.fullmatch(r"-?\d+", text):
                raise ValueError(f"{text!r} is not an integer")
            return _coerce(int(text), typ, name, where)
        if typ == "float64":
            if text not in ("nan", "inf", "-inf") and not re.fullmatch(
                    r"-?(\d+\.\d*|\d*\.\d+|\d+)(e[-+]?\d+)?", text):
                raise ValueError(f"{text!r} is not a float as this code writes it")
            return float(text)
        if typ == "bool":
            if text not in ("true", "false"):
                raise ValueError(f"{text!r} is not true or false")
            return text == "true"
        return text
    except ValueError as e:
        raise ValueError(f"{where}: column {name!r} ({typ}): {e}") from None


def _column_arrays(columns, rows: dict) -> dict:
    """Every column's values (rows in seed order) as a numpy array, for the
    checksum; a string column as one uint8 stream of length-prefixed UTF-8
    (so that no dtype width enters)."""
    seeds = sorted(rows)
    dtype = {"uint64": np.uint64, "int64": np.int64, "float64": np.float64, "bool": np.bool_}
    out = {}
    for name, typ in columns:
        values = [rows[s][name] for s in seeds]
        if typ == "str":
            data = b"".join(len(b).to_bytes(8, "little") + b for b in (v.encode("utf-8") for v in values))
            out[name] = np.frombuffer(data, np.uint8)
        else:
            out[name] = np.array(values, dtype=dtype[typ]).reshape(len(values))
    return out


def _checksum(header: dict, rows: dict) -> str:
    return content_checksum({k: v for k, v in header.items() if k != "sha256"},
                            _column_arrays(header["columns"], rows))


def write_table(path, table: SweepTable) -> Path:
    """Write a sweep table atomically (rows in seed order, with the checksum)."""
    path = as_path("path", path)
    columns = [[n, t] for n, t in table.columns]
    header = json.loads(json.dumps({"kind": TABLE_KIND, "format_version": TABLE_FORMAT_VERSION,
                                    "settings": table.settings, "columns": columns, "runs": table.runs}))
    rows = {}
    for seed, r in table.rows.items():
        where = f"row of chip seed {seed}"
        if set(r) != {n for n, _ in columns}:
            missing = sorted({n for n, _ in columns} - set(r))
            extra = sorted(set(r) - {n for n, _ in columns})
            raise ValueError(f"{where} does not fit the table's columns (missing {missing}, extra {extra})")
        rows[seed] = {n: _coerce(r[n], t, n, where) for n, t in columns}
        if rows[seed]["chip_seed"] != seed:
            raise ValueError(f"{where} holds chip_seed {rows[seed]['chip_seed']}")
    header["sha256"] = _checksum(header, rows)
    buf = io.StringIO()
    buf.write(HEADER_PREFIX + json.dumps(header, sort_keys=True, ensure_ascii=True) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([n for n, _ in columns])
    for seed in sorted(rows):
        w.writerow([_text(rows[seed][n], t) for n, t in columns])
    data = buf.getvalue().encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def read_table(path) -> SweepTable:
    """Read and check a table written by :func:`write_table`. Anything wrong
    (missing, empty, not a sweep table, another kind or format version, fields
    or columns that do not fit, an unreadable value, a seed twice, a checksum
    that does not match) is a ``ValueError`` naming the file."""
    path = as_path("path", path)
    where = f"sweep table {str(path)!r}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except OSError as e:
        raise ValueError(f"{where} cannot be read: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not UTF-8 text ({e}): it is not a bss2sim sweep table") from None
    if not text.strip():
        raise ValueError(f"{where} is empty")
    first, _, rest = text.partition("\n")
    if not first.startswith(HEADER_PREFIX + "{"):
        raise ValueError(f"{where} does not start with a bss2sim header line ('# {{...}}'): it is not a "
                         "sweep table written by bss2sim sweep (or it is damaged)")

    try:
        header = json.loads(first[len(HEADER_PREFIX):], object_pairs_hook=no_duplicate_keys)
    except ValueError as e:
        raise ValueError(f"{where}: its header line is not valid JSON ({e}): damaged or truncated") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: its header is not a JSON object")
    kind = header.get("kind")
    if kind != TABLE_KIND:
        raise ValueError(f"{where} is a file of kind {kind!r}, not {TABLE_KIND!r} (a sweep table); another "
                         "kind of file was given (or copied over this one)")
    v = header.get("format_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: format_version {v!r} is not an integer")
    if v != TABLE_FORMAT_VERSION:
        newer = v > TABLE_FORMAT_VERSION
        raise ValueError(f"{where} has format_version {v}, which is {'newer' if newer else 'older'} than "
                         f"this code reads (only version {TABLE_FORMAT_VERSION}); "
                         + ("update bss2sim to read it" if newer else "sweep again into another --out"))
    missing = [k for k in _HEADER_FIELDS if k not in header]
    extra = sorted(set(header) - set(_HEADER_FIELDS))
    if missing or extra:
        raise ValueError(f"{where}: the header " + (f"lacks {', '.join(missing)}" if missing else "")
                         + ("; " if missing and extra else "")
                         + (f"has unexpected field(s) {', '.join(extra)}" if extra else ""))
    settings, columns, runs = header["settings"], header["columns"], header["runs"]
    if not isinstance(settings, dict) or not isinstance(runs, list) or not isinstance(columns, list):
        raise ValueError(f"{where}: the header's settings, columns or runs are malformed")
    if not (isinstance(header["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", header["sha256"])):
        raise ValueError(f"{where}: the header's sha256 {header['sha256']!r} is not a SHA-256 hex digest")
    if any(not (isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and c[1] in _TYPES)
           for c in columns):
        raise ValueError(f"{where}: the header's columns are malformed")
    try:
        expected = [list(c) for c in table_columns(settings)]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: the header's settings are malformed ({type(e).__name__}: {e})") from None
    if columns != expected:
        raise ValueError(f"{where}: its columns are not those a sweep with its settings writes (another "
                         "version of bss2sim wrote it, or it was edited)")
    names = [c[0] for c in columns]
    reader = csv.reader(io.StringIO(rest))
    try:
        lines = list(reader)
    except csv.Error as e:
        raise ValueError(f"{where} is not readable CSV: {e}") from None
    if not lines or lines[0] != names:
        raise ValueError(f"{where}: its second line does not name the header's columns (damaged?)")
    rows = {}
    for i, cells in enumerate(lines[1:], start=3):
        at = f"{where}, line {i}"
        if len(cells) != len(columns):
            raise ValueError(f"{at} has {len(cells)} values, not {len(columns)} (truncated or damaged)")
        r = {n: _parse(cell, t, n, at) for cell, (n, t) in zip(cells, columns)}
        if r["chip_seed"] in rows:
            raise ValueError(f"{at}: chip seed {r['chip_seed']} occurs twice")
        rows[r["chip_seed"]] = r
    if _checksum(header, rows) != header["sha256"]:
        raise ValueError(f"{where} is corrupt: the SHA-256 checksum of its header and rows does not match "
                         "the one it records (damaged, truncated, or edited after it was written)")
    return SweepTable(settings=settings, columns=[tuple(c) for c in columns], runs=runs, rows=rows)


def _differences(table: dict, wanted: dict) -> list:
    """'name: the table has A, this run B' for every result setting that differs."""
    out = []
    for k in sorted(set(table) | set(wanted)):
        a, b = table.get(k, "(not recorded)"), wanted.get(k, "(not recorded)")
        if canonical_json(a) != canonical_json(b):
            label = _SETTING_NAMES.get(k)
            if label is None:
                label = (f"the installed {k[:-len('_version')]} version" if k.endswith("_version")
                         else f"the sweep's fixed setting {k!r}")
            out.append(f"{label}: the table has {json.dumps(a)}, this run {json.dumps(b)}")
    return out


@contextlib.contextmanager
def _table_lock(path: Path):
    """Hold an exclusive lock on ``<table>.lock`` while a sweep writes the table;
    another sweep on the same folder is refused."""
    lock = path.parent / f".{path.name}.lock"
    try:
        f = open(lock, "a+")
    except OSError as e:
        raise ValueError(f"--out {str(path.parent)!r} cannot be written ({e.strerror or e})") from None
    try:
        if _POSIX_LOCK:
            import fcntl
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"another bss2sim sweep is writing the table {str(path)!r} (it holds "
                                 f"{str(lock)!r}); wait for it to end or give another --out") from None
            except OSError:
                pass                # a file system without locks
        yield
    finally:
        f.close()


# --- the cluster ----------------------------------------------------------------------

def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ValueError("bss2sim sweep needs dask's distributed scheduler: pip install "
                         "'dask[distributed]' (or the package's 'sweep' extra)") from None
    return distributed


PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"
MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


@contextlib.contextmanager
def _client(s: SweepSettings):
    """A dask Client: connected to ``s.scheduler``, or to a new local cluster of
    ``s.workers`` processes with one thread each."""
    distributed = _import_distributed()
    if s.scheduler is not None:
        try:
            client = distributed.Client(s.scheduler, timeout=s.connect_timeout_s)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise ValueError(f"--scheduler {s.scheduler!r} cannot be reached within "
                             f"{s.connect_timeout_s:g} s ({type(e).__name__}: {e}); give the address of a "
                             "running dask scheduler, e.g. tcp://10.0.0.5:8786") from None
        try:
            try:
                client.wait_for_workers(1, timeout=s.connect_timeout_s)
            except (TimeoutError, OSError):
                raise ValueError(f"--scheduler {s.scheduler!r} has no workers (waited "
                                 f"{s.connect_timeout_s:g} s); start some with dask worker "
                                 f"{s.scheduler}") from None
            yield client, f"scheduler {s.scheduler}"
        finally:
            client.close()
        return
    import logging

    import dask
    # The nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's
    # mmap threshold and made the model 2.2 x slower here (a calibration 10.9 s
    # against 4.0-5.6 s, one thread); the other variables it sets (BLAS threads 1) stay.
    with dask.config.set({f"{PRE_SPAWN_ENVIRON}.{MALLOC_TRIM}": None}):
        cluster = distributed.LocalCluster(n_workers=s.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = distributed.Client(cluster)
        try:
            yield client, f"local cluster of {s.workers} worker process(es)"
        finally:
            client.close()
    finally:
        cluster.close()


def _check_workers(client, s: SweepSettings, wanted: dict, code: str) -> dict:
    """Every worker's code, data and versions must be this run's; returns the
    environment of each worker by address."""
    data_dir = None if s.drift is None else str(s.drift.data_dir)
    try:
        envs = client.run(worker_environment, data_dir)
    except Exception as e:  # noqa: BLE001 -- any failure there means the worker cannot run the sweep
        raise ValueError(f"the cluster's workers cannot run the sweep ({type(e).__name__}: {e}); they "
                         "need this bss2sim installed, and with --drift the --data-dir folder") from None
    mine = {**wanted, "code_sha256": code}
    for address, env in sorted(envs.items()):
        theirs = env["fingerprints"]
        diffs = [f"{_SETTING_NAMES.get(k, k)}: here {json.dumps(mine.get(k))}, there {json.dumps(theirs[k])}"
                 for k in sorted(theirs) if canonical_json(mine.get(k)) != canonical_json(theirs[k])]
        if diffs:
            raise ValueError(f"worker {address} ({env['host']}) would compute with other code, data or "
                             f"versions than this run: {'; '.join(diffs)}; install the same bss2sim there")
    slow = sorted(a for a, env in envs.items() if env.get("malloc_trim_threshold") is not None)
    if slow:
        note(f"note: {len(slow)} worker(s) run with {MALLOC_TRIM}={envs[slow[0]]['malloc_trim_threshold']} "
             "(the dask nanny's default), which made the model about 2 x slower here; start them without "
             "it: a dask config file on the workers (e.g. ~/.config/dask/bss2sim.yaml) holding "
             "'distributed: {nanny: {pre-spawn-environ: {MALLOC_TRIM_THRESHOLD_: null}}}'")
    return envs


# --- summary and figures --------------------------------------------------------------

def _stats(values) -> dict:
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    if not a.size:
        return {"median": None, "min": None, "max": None, "mean": None}
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "mean": float(a.mean())}


def summarise(rows: list, result_settings: dict) -> dict:
    """Figures over chips (rows of the table, seeds in order): MNIST accuracy
    (fractions 0..1: median, min, max, mean; the worst and best chip),
    each residual against its target (median, max, limit, chips meeting it),
    calibration wall and silicon time (s), peak memory per task (MiB) and,
    with the drift part, each condition's accuracy (mean, min, max)."""
    rows = sorted(rows, key=lambda r: r["chip_seed"])
    if not rows:
        return {"chips": 0}
    accs = np.array([r["mnist_accuracy_rel"] for r in rows])
    seeds = [r["chip_seed"] for r in rows]
    worst = int(np.argmin(accs))
    best = int(np.argmax(accs))
    out = {"chips": len(rows), "images": result_settings["images"],
           "accuracy_rel": {**_stats(accs), "worst_seed": seeds[worst], "best_seed": seeds[best],
                            "std": float(np.std(accs, ddof=1)) if len(rows) > 1 else None},
           "all_targets_met_chips": int(sum(r["all_targets_met"] for r in rows)),
           "residuals": {}, "calibration_wall_time_s": _stats([r["calibration_wall_time_s"] for r in rows]),
           "calibration_silicon_time_s": _stats([r["calibration_silicon_time_s"] for r in rows]),
           "task_wall_time_s": _stats([r["task_wall_time_s"] for r in rows]),
           "peak_rss_mib": _stats([r["peak_rss_mib"] for r in rows]),
           "gain_lsb_per_xw": _stats([r["gain_lsb_per_xw"] for r in rows]),
           "noise_trial_lsb": _stats([r["noise_trial_lsb"] for r in rows]),
           "faulty_units": int(sum(r["faulty_columns"] + r["faulty_drivers"] for r in rows))}
    for name, t in RESIDUAL_TARGETS.items():
        vals = [r[_residual_column(name)] for r in rows]
        st = _stats(vals)
        out["residuals"][name] = {"median": st["median"], "max": st["max"], "limit": t.limit,
                                  "unit": t.unit or "relative",
                                  "chips_meeting": int(sum(r[f"residual_{name}_met"] for r in rows))}
    if result_settings.get("drift"):
        drift = {n: _stats([r[f"drift_baseline_{n}_rel"] for r in rows]) for n in DRIFT_NETWORKS}
        conds = []
        for h, dt in _drift_conditions(result_settings):
            tag = _condition_tag(h, dt)
            conds.append({"hours_h": h, "temperature_offset_k": dt,
                          **{tr: {n: _stats([r[f"drift_{tag}_{tr}_{n}_rel"] for r in rows])
                                  for n in DRIFT_NETWORKS} for tr in result_settings["drift_treatments"]}})
        out["drift"] = {"baseline": drift, "conditions": conds}
    return out


def _seed_text(seeds) -> str:
    seeds = sorted(seeds)
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    text = ",".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


def _paragraph(summ: dict, res: dict) -> str:
    a = summ["accuracy_rel"]
    n = summ["chips"]
    lines = [f"Sweep over {n} chip(s) (seeds {_seed_text(res['chip_seeds_done'])}), the shipped MNIST network on "
             f"{summ['images']} test images each, every chip calibrated afresh: accuracy median "
             f"{a['median']:.2%}, min {a['min']:.2%} (chip {a['worst_seed']}, the worst), max {a['max']:.2%} "
             f"(chip {a['best_seed']})" + (f", std {a['std']:.2%}" if a["std"] is not None else "") + "."]
    missed = {k: n - v["chips_meeting"] for k, v in summ["residuals"].items() if v["chips_meeting"] < n}
    lines.append(f"{summ['all_targets_met_chips']} of {n} chip(s) meet every stated calibration target"
                 + (" (missed: " + ", ".join(f"{k} on {m}" for k, m in missed.items()) + ")" if missed else "")
                 + f"; {summ['faulty_units']} faulty unit(s) in all, routed around.")
    cw, cs = summ["calibration_wall_time_s"], summ["calibration_silicon_time_s"]
    lines.append(f"Calibration took {cw['median']:.1f} s of wall time per chip (median; max {cw['max']:.1f} s) "
                 f"and {cs['median']:.2f} s of silicon time; a whole task "
                 f"{summ['task_wall_time_s']['median']:.1f} s "
                 f"(median), peak memory of a task up to {summ['peak_rss_mib']['max']:.0f} MiB.")
    if "drift" in summ:
        b = summ["drift"]["baseline"]
        lines.append(f"Drift part: baseline shipped {b['shipped']['mean']:.2%}, fine-tuned "
                     f"{b['fine_tuned']['mean']:.2%} (mean over chips; per condition in the table and "
                     f"{FIGURE_DRIFT}).")
    if res["rows_of_other_code"]:
        lines.append(f"{res['rows_of_other_code']} row(s) of the table were computed with other source code "
                     "(their code_sha256 column says which).")
    where = f"on {res['cluster']}" if res["computed_seeds"] or res["failed"] else "no cluster needed"
    lines.append(f"{len(res['computed_seeds'])} seed(s) computed now, {len(res['skipped_seeds'])} taken from "
                 f"the table ({res['table_rows']} row(s) in all), {where}; {res['wall_time_s']:.1f} s of wall "
                 f"time. Table {res['table']}.")
    return " ".join(lines)


def _figures(rows: list, rs: dict, out: Path) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .demo import wilson_interval

    rows = sorted(rows, key=lambda r: r["chip_seed"])
    seeds = [r["chip_seed"] for r in rows]
    acc = np.array([r["mnist_accuracy_rel"] for r in rows])
    n_img = rs["images"]
    paths = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.6]})
    ax1.hist(acc * 100, bins=max(5, min(40, int(np.sqrt(len(acc))) * 2)), color="C0", alpha=0.8)
    ax1.axvline(np.median(acc) * 100, color="k", lw=1, label=f"median {np.median(acc):.2%}")
    ax1.axvline(98.0, color="k", ls="--", lw=1, label="98.0 % on silicon [W20]")
    ax1.set_xlabel("MNIST test accuracy (%)")
    ax1.set_ylabel("chips")
    ax1.legend(fontsize=8)
    pos = np.arange(len(rows))
    lo, hi = wilson_interval(acc, n_img)
    if len(rows) <= 200:
        # Clipped at 0: at 100 % the upper bound is 1 only up to rounding.
        ax2.errorbar(pos, acc * 100, yerr=[np.maximum(acc - lo, 0) * 100, np.maximum(hi - acc, 0) * 100],
                     fmt="o", ms=3, capsize=2,
                     label=f"chip, 95 % binomial interval ({n_img} images)")
    else:
        ax2.plot(pos, acc * 100, "o", ms=2, label="chip")
    w = int(np.argmin(acc))
    ax2.plot(pos[w], acc[w] * 100, "o", color="C3", ms=7, mfc="none", label=f"worst: chip {seeds[w]}")
    ax2.axhline(98.0, color="k", ls="--", lw=1)
    if len(rows) <= 30:
        ax2.set_xticks(pos)
        ax2.set_xticklabels([str(s) for s in seeds], fontsize=7, rotation=90 if len(rows) > 15 else 0)
        ax2.set_xlabel("chip seed")
    else:
        ax2.set_xlabel(f"chip (seeds {_seed_text(seeds)}, in order)")
    ax2.set_ylabel("MNIST test accuracy (%)")
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"The shipped MNIST network on {len(rows)} simulated chips, each calibrated afresh "
                 f"({n_img} test images, preset {rs['preset']})", fontsize=10)
    fig.tight_layout()
    paths.append(out / FIGURE_ACCURACY)
    save_figure(fig, paths[-1])
    plt.close(fig)

    names = list(RESIDUAL_TARGETS)
    ratios = [np.array([r[_residual_column(n)] for r in rows]) / RESIDUAL_TARGETS[n].limit for n in names]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    finite = [v[np.isfinite(v)] for v in ratios]
    ax.boxplot([v if v.size else [np.nan] for v in finite], positions=range(len(names)), widths=0.5,
               showfliers=False)
    rng = np.random.default_rng(0)          # jitter of the points only
    for i, v in enumerate(finite):
        ax.plot(i + rng.uniform(-0.15, 0.15, v.size), v, "o", ms=3, alpha=0.5, color="C0")
        bad = int(np.sum(~np.asarray([r[f"residual_{names[i]}_met"] for r in rows])))
        if bad:
            ax.annotate(f"{bad} miss", (i, np.nanmax(v) if v.size else 1.0), fontsize=7, color="C3",
                        ha="center", va="bottom")
    ax.axhline(1.0, color="C3", ls="--", lw=1, label="stated target (validation.RESIDUAL_TARGETS)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{RESIDUAL_TARGETS[n].label}\n(limit {RESIDUAL_TARGETS[n].limit:g}"
                        f"{' ' + RESIDUAL_TARGETS[n].unit if RESIDUAL_TARGETS[n].unit else ''})"
                        for n in names], fontsize=6.5, rotation=20, ha="right")
    ax.set_ylabel("residual after calibration / its target")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    met = sum(r["all_targets_met"] for r in rows)
    ax.set_title(f"Calibration residuals on {len(rows)} chips (worst half or quadrant of each chip); "
                 f"{met} meet every target", fontsize=10)
    fig.tight_layout()
    paths.append(out / FIGURE_RESIDUALS)
    save_figure(fig, paths[-1])
    plt.close(fig)

    if rs.get("drift"):
        conds = _drift_conditions(rs)
        trs = rs["drift_treatments"]
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
        for ax, n in zip(axes, DRIFT_NETWORKS):
            data, labels = [np.array([r[f"drift_baseline_{n}_rel"] for r in rows]) * 100], ["baseline"]
            for h, dt in conds:
                for tr in trs:
                    data.append(np.array([r[f"drift_{_condition_tag(h, dt)}_{tr}_{n}_rel"] for r in rows]) * 100)
                    labels.append(f"{h:g} h, {dt:+g} K\n{tr.replace('_', ' ')}")
            ax.boxplot(data, positions=range(len(data)), widths=0.5, showfliers=False)
            for i, v in enumerate(data):
                ax.plot(i + rng.uniform(-0.15, 0.15, v.size), v, "o", ms=3, alpha=0.5, color="C0")
            ax.set_xticks(range(len(data)))
            ax.set_xticklabels(labels, fontsize=6, rotation=60, ha="right")
            ax.set_title(f"{n.replace('_', ' ')} network", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        axes[0].set_ylabel(f"MNIST accuracy (%), {rs['drift_images']} test images")
        fig.suptitle(f"Drift part on {len(rows)} chip(s): accuracy across chips per condition and treatment",
                     fontsize=10)
        fig.tight_layout()
        paths.append(out / FIGURE_DRIFT)
        save_figure(fig, paths[-1])
        plt.close(fig)
    return paths


# --- the command ---------------------------------------------------------------------

def run(seeds, images=None, out=DEFAULT_OUT, scheduler=None, workers=None,
        worker_threads=DEFAULT_WORKER_THREADS,
        preset="default", drift=False, drift_hours=DRIFT_DEFAULT_HOURS,
        drift_temperatures=DRIFT_DEFAULT_TEMPERATURES_K, drift_images=DRIFT_DEFAULT_IMAGES,
        drift_fine_tune_images=DRIFT_DEFAULT_FINE_TUNE_IMAGES, drift_refresh_images=DRIFT_DEFAULT_REFRESH_IMAGES,
        drift_treatments=DRIFT_TREATMENTS, data_dir=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT_S,
        allow_code_change=False, as_json=False, progress=True, figures=True) -> dict:
    """``bss2sim sweep``: every chip seed of ``seeds`` not yet in the table
    ``<out>/sweep.csv`` as one Dask task (:func:`run_seed`), each row saved as
    its task finishes; then the figures and the summary over ``seeds``.

    Parameters
    ----------
    seeds : chip seeds (1..10,000 distinct integers 0..2**64-1), or their
        command-line form (``"0-99"``, ``"3,7,20-29"``)
    images : test images per chip, the first of the shipped test set (1..10000; None: all)
    out : folder of the table and figures (default ``./bss2sim-output/sweep``)
    scheduler : address of a running dask scheduler (None: a local cluster)
    workers : processes of the local cluster, one thread each (1..256; default
        the cores; not with ``scheduler``)
    worker_threads : numba threads of each task (1..256; default 1, see
        :data:`DEFAULT_WORKER_THREADS`); never changes a result
    preset : the chips' effect preset (``default``, ``ideal``, ``harsh``)
    drift : also run the drift study on every chip, with ``drift_hours``
        (hours, 0..1e6), ``drift_temperatures`` (offsets from 25 degrees C, K),
        ``drift_images`` (1..10000), ``drift_fine_tune_images`` and
        ``drift_refresh_images`` (1..60000), ``drift_treatments`` and the
        MNIST training images of ``data_dir`` (default ``$BSS2SIM_MNIST_DIR``)
    connect_timeout : seconds to wait for ``scheduler`` and its first worker (0.1..3600)
    allow_code_change : resume a table whose rows were computed with other
        source code of the model (default False: refused)
    as_json : print the summary as one JSON object (last line of stdout)
    progress : show a progress bar on stderr
    figures : write the figures

    Returns
    -------
    dict: ``table`` (path), ``figures``, ``chip_seeds`` (asked for),
    ``computed_seeds`` (computed by this run), ``skipped_seeds`` (found in the
    table), ``failed`` ({seed: error}), ``table_rows``, ``summary``
    (:func:`summarise` over ``seeds``), ``settings`` (the result settings),
    ``versions``, ``cluster``, ``code_sha256`` (this run's code),
    ``rows_of_other_code`` (rows of the table computed with other code),
    ``wall_time_s``. Raises :class:`SweepError` after the figures and
    summary when some seeds failed.
    """
    t_start = time.perf_counter()
    s = check_arguments(seeds, images, out, scheduler, workers, worker_threads, preset, drift, drift_hours,
                        drift_temperatures, drift_images, drift_fine_tune_images, drift_refresh_images,
                        drift_treatments, data_dir, connect_timeout)
    _import_distributed()
    if not isinstance(progress, bool) or not isinstance(figures, bool) or not isinstance(as_json, bool):
        raise WrongTypeError("progress, figures and as_json must be True or False")
    if not isinstance(allow_code_change, bool):
        raise WrongTypeError(f"allow_code_change={allow_code_change!r} must be True or False")
    wanted = s.result_settings()
    code = code_fingerprint()
    try:
        s.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {str(s.out)!r} cannot be created ({e.strerror or e})") from None
    if not s.out.is_dir():
        raise ValueError(f"--out {str(s.out)!r} is not a folder")
    path = s.out / TABLE_FILE
    with _table_lock(path):
        if path.exists():
            table = read_table(path)
            diffs = _differences(table.settings, wanted)
            if diffs:
                raise ValueError(f"sweep table {str(path)!r} was written with other settings, and its "
                                 f"rows cannot be mixed with this run's: {'; '.join(diffs)}. Run with the "
                                 "table's settings to resume it, or give another --out for a new table")
        else:
            table = SweepTable(settings=wanted, columns=table_columns(wanted), runs=[], rows={})
        todo = [seed for seed in s.seeds if seed not in table.rows]
        skipped = [seed for seed in s.seeds if seed in table.rows]
        other = sorted({r["code_sha256"] for r in table.rows.values()} - {code})
        n_other = sum(r["code_sha256"] != code for r in table.rows.values())
        if todo and other and not allow_code_change:        # new rows would join rows of other code
            raise ValueError(f"sweep table {str(path)!r} holds {n_other} row(s) computed with other source "
                             f"code of the model (code_sha256 {', '.join(o[:12] for o in other)}, this code "
                             f"{code[:12]}): the results of two versions of the model would mix. Give "
                             "another --out for a new table, or --allow-code-change to add rows computed "
                             "with this code anyway (each row records its code_sha256)")
        computed, failed = [], {}
        cluster_text = "no cluster (every seed was in the table)"
        if todo or s.scheduler is not None:
            computed, failed, cluster_text = _sweep(s, wanted, code, table, path, todo, progress)
    rows = [table.rows[seed] for seed in s.seeds if seed in table.rows]
    res = {"table": str(path), "figures": [], "chip_seeds": list(s.seeds), "chip_seeds_done":
           [r["chip_seed"] for r in rows], "computed_seeds": sorted(computed), "skipped_seeds": skipped,
           "failed": {str(k): v for k, v in sorted(failed.items())}, "table_rows": len(table.rows),
           "settings": wanted, "versions": versions(), "cluster": cluster_text, "code_sha256": code,
           "rows_of_other_code": n_other}
    res["summary"] = summarise(rows, wanted)
    if rows and figures:
        res["figures"] = [str(p) for p in _figures(rows, wanted, s.out)]
    res["wall_time_s"] = time.perf_counter() - t_start
    if rows:
        print(_paragraph(res["summary"], res))
    else:
        print(f"no seed of --seeds is in the table {path} (every one failed)")
    if res["figures"]:
        print(f"figures: {', '.join(res['figures'])}")
    if as_json:
        emit_json(res)
    if failed:
        raise SweepError(f"{len(failed)} of {len(s.seeds)} seed(s) failed (the others are in {path}; run "
                         "again to retry them): "
                         + "; ".join(f"seed {k}: {v}" for k, v in sorted(failed.items())[:5])
                         + (" ..." if len(failed) > 5 else ""))
    return res


def _sweep(s: SweepSettings, wanted: dict, code: str, table: SweepTable, path: Path, todo: list,
           progress: bool):
    """Run the seeds ``todo`` on the cluster, saving the table after each."""
    distributed = _import_distributed()
    computed, failed = [], {}
    with _client(s) as (client, cluster_text):
        envs = _check_workers(client, s, wanted, code)
        threads = s.worker_threads
        v = versions()
        entry = {"started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "cluster": cluster_text, "workers": len(envs),
                 "worker_threads": threads,
                 "dask_version": v["dask"], "distributed_version": v["distributed"], "code_sha256": code,
                 "seeds_computed": 0}
        if not todo:
            return computed, failed, cluster_text
        table.runs.append(entry)
        data_dir = None if s.drift is None else str(s.drift.data_dir)
        token = hashlib.sha256(canonical_json(wanted)).hexdigest()[:10]
        futures = {}
        for seed in todo:
            fut = client.submit(run_seed, seed, wanted, data_dir, threads,
                                key=f"bss2sim-sweep-{token}-{seed}", pure=False)
            futures[fut] = seed
        bar = Progress(f"sweep: {len(todo)} chip(s) on {cluster_text}", len(todo), unit="chip") \
            if progress else None
        try:
            for fut in distributed.as_completed(list(futures)):
                seed = futures[fut]
                try:
                    row = fut.result()
                except Exception as e:  # noqa: BLE001 -- a failed seed is reported, the others go on
                    failed[seed] = f"{type(e).__name__}: {' '.join(str(e).split())}"
                    if bar is not None:
                        bar.update(1, f"chip {seed} FAILED")
                    continue
                if row.get("chip_seed") != seed or row.get("code_sha256") != code:
                    failed[seed] = ("the task returned the row of chip seed "
                                    f"{row.get('chip_seed')!r}, code_sha256 {row.get('code_sha256')!r} "
                                    "(the source code changed on the worker during the sweep?)")
                    if bar is not None:
                        bar.update(1, f"chip {seed} FAILED")
                    continue
                table.rows[seed] = row
                computed.append(seed)
                entry["seeds_computed"] = len(computed)
                write_table(path, table)
                if bar is not None:
                    bar.update(1, f"chip {seed}: {row['mnist_accuracy_rel']:.2%}")
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    return computed, failed, cluster_text


# --- command line ---------------------------------------------------------------------

def add_arguments(parser, with_json: bool = True):
    """Add the options of ``bss2sim sweep`` to an argparse parser and return
    it; ``--json`` too unless ``with_json`` is False (where the caller adds
    it). The numba threads of a sweep are ``--worker-threads``, set inside
    each task, not the client's."""
    t_lo, t_hi = drift_module.temperature_range_k()
    parser.add_argument("--seeds", type=parse_seed_list, required=True, metavar="SEEDS",
                        help="chip seeds: one seed, a range or a list such as 0-99 or 3,7,20-29 (a bare "
                             f"number is that one chip); at most {MAX_SEEDS}")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a running dask scheduler (e.g. tcp://10.0.0.5:8786) whose "
                             "workers run the sweep; default: a local cluster on this machine")
    parser.add_argument("--workers", type=_int_option("--workers", 1, MAX_WORKERS), default=None, metavar="N",
                        help=f"worker processes of the local cluster, one thread each (default: the "
                             f"cores, {_default_workers()} here; 1..{MAX_WORKERS}; not with --scheduler)")
    parser.add_argument("--worker-threads", type=_int_option("--worker-threads", 1, MAX_WORKER_THREADS),
                        default=DEFAULT_WORKER_THREADS, metavar="N",
                        help=f"numba threads of each task, set inside the task (default "
                             f"{DEFAULT_WORKER_THREADS}: the sweep's parallelism is its workers; "
                             f"1..{MAX_WORKER_THREADS}); results do not depend on it")
    parser.add_argument("--connect-timeout", type=_timeout_option, default=DEFAULT_CONNECT_TIMEOUT_S,
                        metavar="S", help=f"seconds to wait for --scheduler and its first worker "
                                          f"(default {DEFAULT_CONNECT_TIMEOUT_S:g}; 0.1..3600)")
    parser.add_argument("--images", type=_int_option("--images", 1, MNIST_TEST_IMAGES), default=None, metavar="N",
                        help="classify the first N test images on each chip (default: all 10,000)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"folder of the table ({TABLE_FILE}) and figures (default {DEFAULT_OUT}); a "
                             "table there with the same settings is resumed")
    parser.add_argument("--preset", default="default", choices=list(PRESETS),
                        help="effect preset of the chips (default 'default')")
    parser.add_argument("--drift", action="store_true",
                        help="also run the drift study on each chip (needs the MNIST training images: "
                             "--data-dir or $BSS2SIM_MNIST_DIR)")
    parser.add_argument("--drift-hours", type=_reals_option("--drift-hours", 0.0, MAX_HOURS, "hours"),
                        default=DRIFT_DEFAULT_HOURS, metavar="H,H,...",
                        help="hours of operation of the drift part, at 25 degrees C (default "
                             f"{','.join(f'{h:g}' for h in DRIFT_DEFAULT_HOURS)}; 0..1e6)")
    parser.add_argument("--drift-temperatures", type=_reals_option("--drift-temperatures", t_lo, t_hi, "K"),
                        default=DRIFT_DEFAULT_TEMPERATURES_K, metavar="DT,DT,...",
                        help="temperature offsets of the drift part from 25 degrees C, K (default "
                             f"{','.join(f'{t:g}' for t in DRIFT_DEFAULT_TEMPERATURES_K)}; {t_lo:g}..{t_hi:g}; "
                             "negative ones as --drift-temperatures=-5,0)")
    parser.add_argument("--drift-images", type=_int_option("--drift-images", 1, MNIST_TEST_IMAGES),
                        default=DRIFT_DEFAULT_IMAGES, metavar="N",
                        help=f"test images of each drift evaluation (default {DRIFT_DEFAULT_IMAGES}; 1..10000)")
    parser.add_argument("--drift-fine-tune-images", type=_int_option("--drift-fine-tune-images", 1,
                                                                      MNIST_TRAIN_IMAGES),
                        default=DRIFT_DEFAULT_FINE_TUNE_IMAGES, metavar="N",
                        help="training images of the per-chip fine-tuning at hour 0 (default "
                             f"{DRIFT_DEFAULT_FINE_TUNE_IMAGES}; 1..60000)")
    parser.add_argument("--drift-refresh-images", type=_int_option("--drift-refresh-images", 1,
                                                                    MNIST_TRAIN_IMAGES),
                        default=DRIFT_DEFAULT_REFRESH_IMAGES, metavar="N",
                        help="training images of each in-the-loop refresh (default "
                             f"{DRIFT_DEFAULT_REFRESH_IMAGES}; 1..60000)")
    parser.add_argument("--drift-treatments", default=",".join(DRIFT_TREATMENTS), metavar="T,T,...",
                        help=f"treatments of the drift part (default all: {','.join(DRIFT_TREATMENTS)})")
    parser.add_argument("--data-dir", default=None, metavar="FOLDER",
                        help="MNIST folder of the drift part's training images (default: the environment "
                             "variable BSS2SIM_MNIST_DIR)")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="resume a table although some of its rows were computed with other source "
                             "code of the model (each row records its code_sha256; default: refused)")
    if with_json:
        parser.add_argument("--json", action="store_true",
                            help="print only the summary as one JSON object on stdout (the human text "
                                 "goes to stderr)")
    return parser


def run_from_args(args) -> dict:
    """Run :func:`run` with the options :func:`add_arguments` parsed."""
    return run(seeds=args.seeds, images=args.images, out=args.out, scheduler=args.scheduler,
               workers=args.workers, worker_threads=args.worker_threads, preset=args.preset,
               drift=bool(args.drift), drift_hours=args.drift_hours, drift_temperatures=args.drift_temperatures,
               drift_images=args.drift_images, drift_fine_tune_images=args.drift_fine_tune_images,
               drift_refresh_images=args.drift_refresh_images,
               drift_treatments=tuple(t.strip() for t in args.drift_treatments.split(",")),
               data_dir=args.data_dir, connect_timeout=args.connect_timeout,
               allow_code_change=bool(args.allow_code_change), as_json=bool(args.json))


code_fingerprint()      # at import, with the modules above: the code this process runs
