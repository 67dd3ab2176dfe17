"""``bss2sim train``: the whole training pipeline on a calibrated chip, for
MNIST or any data set.

1. Calibrate the chip (seed ``--seed``) and measure its behavioural
   parameters through VMMs (gain, trial-to-trial noise).
2. Software pre-training in float (the chip's linear model at the measured
   gain), then noise-aware training with the behavioural model.
3. Evaluation on the test set: float, behavioural, and the
   software-trained network on the chip (cycle-level model) without fine-tuning.
4. Hardware-in-the-loop fine-tuning: forward pass through the cycle-level
   chip, backward pass through the linear model scaled by the measured gain
   [W20][SW]; evaluation on the chip again.
5. The same (without and with per-chip fine-tuning) on further chip seeds.

The data (:func:`load_data`): MNIST from its IDX folder (``--data-dir``,
else ``$BSS2SIM_MNIST_DIR``), or ``--data``: ``yinyang`` (the built-in
Yin-Yang generator, :mod:`bss2sim.experiments.datasets.yinyang`, train 5000
seed 42, test 1000 seed 40), an ``.npz`` file holding ``x_train``,
``y_train``, ``x_test``, ``y_test``, or a folder of IDX files named as
MNIST's of any image size and class count. Samples are uint8 images 0..255,
floats in 0..1 or integers 0..31 (chip inputs), labels integers 0..C-1.
28 x 28 images with 10 classes train the MNIST network
(:class:`~bss2sim.experiments.training.network.MnistNet`; with samples
that are not uint8, a :class:`~bss2sim.experiments.training.sequential.Sequential`
of the same architecture and initial weights); anything else a dense
network (``--hidden N`` units, default 128; inputs flattened and quantised
to 0..31). Images (2-d samples) are shifted at random in every stage
(``--augment-shift``); other samples are not.

Every stage runs :func:`bss2sim.experiments.training.fit.fit`, which writes a
checkpoint after every epoch to ``--out``; a stopped run started again with
the same arguments resumes from them and gives the same result.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_int
from bss2sim.digital import Accelerator, measure_behaviour
from bss2sim.digital.events import MAX_NUM_SENDS, MAX_WAIT_BETWEEN_EVENTS

from .calibration.store import NO_CALIBRATION, chip_with_calibration, describe
from .common import (RESULTS_KIND, TRAINING_RESULTS_KIND, as_path, atomic_write, emit_json,
                     load_results, load_test_images, note, save_results, save_test_images)
from .datasets import yinyang
from .datasets.mnist import FILES as IDX_FILES
from .datasets.mnist import load_idx, load_mnist, random_shift
from .progress import Progress
from .training.checkpoint import load_checkpoint, save_checkpoint
from .training.fit import fit
from .training.layers import DEFAULT_GAIN
from .training.network import DEFAULT_LR, DEFAULT_LR_DECAY, MnistNet
from .training.optim import Adam
from .training.sequential import QuantiseInput, Sequential, dense_network

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
NETWORK_FILE = "mnist_net.npz"
RESULTS_FILE = "mnist_results.json"
TEST_IMAGES_FILE = "mnist_test.npz"
OTHER_NETWORK_FILE = "network.npz"
"""The fine-tuned network of a run on a data set other than MNIST."""
OTHER_RESULTS_FILE = "results.json"
"""The results of a run on a data set other than MNIST."""
HIL_LR = 0.03
"""Adam learning rate of the hardware-in-the-loop fine-tuning (weight LSB).
Adam moves every weight by about the rate per step whatever its gradient, so
over 100 steps of noisy chip gradients a rate of 0.1 walks weights by about
one LSB at random: on the augmented, noise-aware network that cost 0.1-0.35
points on 4 of 6 chips. At 0.03 (and 0.01) the accuracy on chips 0 and 2
stayed within 0.05 points of the software-trained network's."""
HIL_LR_DECAY = 0.5
"""Learning-rate factor per fine-tuning epoch."""
AUGMENT_SHIFT = 2
"""Largest random shift (pixels, each direction) of the training images in every
stage; it lifts the float test accuracy from about 98.3 % to 98.7 % and leaves
the fine-tuning images something left to learn."""
HIL_IMAGES = 10_000
"""Training samples of the fine-tuning on each chip when not given (all of a
smaller training set)."""
DEFAULT_HIDDEN = 128
"""Hidden units of the dense network of data sets other than MNIST (*assumed*:
as many as MNIST's fc1; one tile's 128 rows hold the second layer)."""
MAX_HIDDEN = 4096
"""Most hidden units (*assumed*: 16 tiles of 256 columns, a bound against a
mistyped number)."""
MAX_CLASSES = 1024
"""Most classes of a data set (*assumed*: four tiles of 256 columns)."""
YINYANG = "yinyang"
"""``--data`` value of the built-in Yin-Yang data set."""
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""The arrays an ``.npz`` data file holds (no others)."""
RMS_CHUNK = 10_000
"""Samples quantised at a time when the input spread is measured (bounds memory)."""
BATCH_SIZE = 100
"""Samples per optimiser step in every stage."""
MNIST_STEPS_PER_EPOCH = 600
"""Optimiser steps of one MNIST epoch (60,000 images, batches of 100): the unit
the schedule of other data sets is scaled by."""
FLOAT_EPOCHS = 8
NOISE_EPOCHS = 2
"""Epochs of float and noise-aware training on MNIST (the command line's defaults)."""
MAX_SCALED_EPOCHS = 100
"""Most epochs a stage of a small data set gets by default (*assumed*: a bound on
the run time; Yin-Yang's 5000 samples need 96 for MNIST's 4,800 float steps)."""


def calibrated_and_measured(seed, calibration=None):
    """``(chip, loaded calibration or None, MeasuredBehaviour)``: chip ``seed``
    with its calibration (:func:`~bss2sim.experiments.calibration.store.chip_with_calibration`)
    and its gain and noise measured through VMMs, as every training pipeline
    starts; says which calibration it used."""
    chip, loaded = chip_with_calibration(seed, calibration)
    note(f"chip {seed}, calibration: {describe(loaded)}; measuring its behaviour...")
    meas = measure_behaviour(chip)
    note(f"gain {meas.gain:.5f} LSB per unit x*w, sigma {meas.sigma_trial:.2f} LSB (independent "
         f"{meas.sigma_independent:.2f}, shared by a quadrant's columns {meas.sigma_shared:.2f})")
    return chip, loaded, meas


def _atomic_json(path: Path, obj):
    """Write the results atomically as a checked JSON file
    (:func:`~bss2sim.experiments.common.save_results`): MNIST's kind for the
    MNIST results file, the general training kind for any other data set."""
    save_results(path, obj, RESULTS_KIND if path.name == RESULTS_FILE else TRAINING_RESULTS_KIND)


# --- the data -----------------------------------------------------------------------

@dataclass(frozen=True)
class DataSet:
    """A checked data set: training and test samples and labels."""

    name: str
    """``"MNIST"``, ``"Yin-Yang"`` or the path given."""
    source: str
    """``"mnist"`` (the MNIST IDX folder), ``"yinyang"``, ``"npz"`` or ``"idx"``."""
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    encoding: str
    """How the samples become chip inputs (:data:`~bss2sim.experiments.training.sequential.ENCODINGS`)."""
    classes: int
    """Number of classes C: labels are 0..C-1."""

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def mnist_network(self) -> bool:
        """28 x 28 images with 10 classes: the MNIST network trains on them."""
        return self.sample_shape in ((28, 28), (1, 28, 28)) and self.classes == 10

    @property
    def images(self) -> bool:
        """2-d samples (height, width), which the random shift augments."""
        return len(self.sample_shape) == 2

    def summary(self) -> dict:
        return {"name": self.name, "source": self.source, "train": int(len(self.y_train)),
                "test": int(len(self.y_test)), "sample_shape": list(self.sample_shape),
                "encoding": self.encoding, "classes": self.classes}


def _encoding_of(a, where, name):
    """The encoding of samples ``a`` (by dtype), their values checked."""
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        return "uint8"
    if kind == "f":
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: {name} holds NaN or infinity; samples must be uint8 images "
                             "0..255, floats in 0..1 or integers 0..31")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{where}: {name} holds floats {a.min():.6g}..{a.max():.6g}; floats must "
                             "be in 0..1 (or store uint8 images 0..255, or integers 0..31)")
        return "unit"
    if kind in "iu":
        if a.size and (a.min() < 0 or a.max() > K.INPUT_MAX):
            raise ValueError(f"{where}: {name} holds integers {a.min()}..{a.max()} of dtype {a.dtype}; "
                             f"integers other than uint8 must be chip inputs 0..{K.INPUT_MAX} "
                             "(store images 0..255 as uint8)")
        return "int5"
    raise ValueError(f"{where}: {name} has dtype {a.dtype}; samples must be uint8 images 0..255, "
                     "floats in 0..1 or integers 0..31")


def check_data(name, source, x_train, y_train, x_test, y_test, where) -> DataSet:
    """Check a data set (shapes, dtypes, value and label ranges, empty sets)
    and return it; every problem is a one-line ``ValueError`` that starts
    with ``where`` (the option and its value)."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for k, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{where}: {k} is a {type(a).__name__}, not an array")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or x.ndim > 4:
            raise ValueError(f"{where}: x_{split} has shape {x.shape}; expected (samples, features) "
                             "or (samples, height, width) (1..3 dimensions per sample)")
        if len(x) == 0:
            raise ValueError(f"{where}: x_{split} holds no samples; both sets must be non-empty")
        if any(d == 0 for d in x.shape[1:]):
            raise ValueError(f"{where}: x_{split} has shape {x.shape}; a sample needs at least one value")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{where}: y_{split} has shape {y.shape}; expected ({len(x)},), one label "
                             f"per sample of x_{split}")
        if y.dtype.kind not in "iu":
            raise ValueError(f"{where}: y_{split} has dtype {y.dtype}; labels must be integers 0..C-1")
        if y.min() < 0:
            i = int(np.argmax(y < 0))
            raise ValueError(f"{where}: y_{split} holds label {int(y[i])} at index {i}; labels must be "
                             "integers 0..C-1")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{where}: x_train samples have shape {x_train.shape[1:]} but x_test samples "
                         f"{x_test.shape[1:]}; they must agree")
    enc = _encoding_of(x_train, where, "x_train")
    enc_test = _encoding_of(x_test, where, "x_test")
    if enc != enc_test:
        raise ValueError(f"{where}: x_train is {enc} ({x_train.dtype}) but x_test is {enc_test} "
                         f"({x_test.dtype}); both must be encoded alike")
    classes = int(y_train.max()) + 1
    if classes < 2:
        raise ValueError(f"{where}: y_train holds only label 0; a classifier needs at least 2 classes")
    if classes > MAX_CLASSES:
        raise ValueError(f"{where}: y_train holds labels up to {classes - 1}; at most {MAX_CLASSES} "
                         "classes (0..1023) are allowed")
    if y_test.max() >= classes:
        i = int(np.argmax(y_test >= classes))
        raise ValueError(f"{where}: y_test holds label {int(y_test[i])} at index {i}, but y_train only "
                         f"0..{classes - 1}; labels must be 0..C-1 with C set by the training set")
    return DataSet(name, source, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                   enc, classes)


def _load_npz(path: Path, where: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            missing = [k for k in NPZ_KEYS if k not in names]
            extra = sorted(set(names) - set(NPZ_KEYS))
            if missing or extra:
                raise ValueError(f"{where} holds the arrays {sorted(names)}; expected exactly "
                                 f"{', '.join(NPZ_KEYS)} (missing {missing}, unexpected {extra})")
            return {k: z[k] for k in NPZ_KEYS}
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where} cannot be read as an .npz of plain arrays: {e}") from None
    except (OSError, EOFError, KeyError) as e:
        raise ValueError(f"{where} is not a readable .npz file (truncated or corrupt?): {e}") from None
    except Exception as e:          # zipfile.BadZipFile, zlib.error, ... from a damaged archive
        raise ValueError(f"{where} is not a readable .npz file: {type(e).__name__}: {e}") from None


def load_data(data=None, data_dir=None) -> DataSet:
    """The data set of a run (see the module docstring), checked.

    ``data`` None: MNIST from ``data_dir`` (or ``$BSS2SIM_MNIST_DIR``);
    ``"yinyang"``; a path to an ``.npz`` file or to a folder of IDX files.
    Errors name ``--data`` (or the MNIST folder) in one line."""
    if data is not None and data_dir is not None:
        raise ValueError("--data and --data-dir are both given; use one (--data-dir is the MNIST folder)")
    if data is None:
        train_x, train_y = load_mnist("train", data_dir)
        test_x, test_y = load_mnist("test", data_dir)
        if len(train_y) == 0 or len(test_y) == 0:
            raise ValueError(f"the MNIST folder holds {len(train_y)} training and {len(test_y)} test "
                             "images; both sets must be non-empty")
        return DataSet("MNIST", "mnist", train_x, train_y, test_x, test_y, "uint8", 10)
    if isinstance(data, str) and data == YINYANG:
        x_tr, y_tr = yinyang.load_split("train")
        x_te, y_te = yinyang.load_split("test")
        return check_data("Yin-Yang", "yinyang", x_tr, y_tr, x_te, y_te, "--data yinyang")
    try:
        path = as_path("--data", data)
    except WrongTypeError as e:
        raise ValueError(str(e)) from None
    where = f"--data {str(path)!r}"
    if path.is_dir():
        what = f"IDX ({path.name})"
        x_tr, y_tr = load_idx("train", path, image_shape=None, num_classes=None, what=what)
        x_te, y_te = load_idx("test", path, image_shape=None, num_classes=None, what=what)
        return check_data(str(path), "idx", x_tr, y_tr, x_te, y_te, where)
    if not path.exists():
        raise ValueError(f"{where} does not exist: give {YINYANG!r}, an .npz file holding "
                         f"{', '.join(NPZ_KEYS)}, or a folder of IDX files ({IDX_FILES['train'][0]}[.gz], ...)")
    if path.suffix != ".npz":
        raise ValueError(f"{where} is neither an .npz file nor a folder of IDX files")
    arrays = _load_npz(path, where)
    return check_data(str(path), "npz", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                      arrays["y_test"], where)


def input_rms(data: DataSet) -> float:
    """Root mean square of the quantised training inputs (LSB, 0..31), the
    input spread the first layer's gain-aware initialisation assumes."""
    layer = QuantiseInput(data.sample_shape, data.encoding)
    total = 0.0
    for i in range(0, len(data.x_train), RMS_CHUNK):
        q = layer.forward(data.x_train[i:i + RMS_CHUNK]).astype(np.float64)
        total += float(np.sum(q * q))
    count = len(data.x_train) * math.prod(data.sample_shape)
    return float(min(max(math.sqrt(total / count), 1e-3), K.INPUT_MAX))


def schedule(n_train: int, float_epochs=None, noise_epochs=None) -> dict:
    """Epochs and learning-rate decay per epoch of a training set of ``n_train``
    samples: MNIST's schedule per optimiser step. One MNIST epoch is
    :data:`MNIST_STEPS_PER_EPOCH` steps; with ``s`` steps per epoch the decay
    per epoch is ``DEFAULT_LR_DECAY ** (s / 600)`` (MNIST: 0.75) and an epoch
    count not given is as many steps as MNIST's default (8 float, 2
    noise-aware epochs), at least 1 and at most :data:`MAX_SCALED_EPOCHS`."""
    steps = -(-n_train // BATCH_SIZE)
    if steps == MNIST_STEPS_PER_EPOCH:
        decay, scale = DEFAULT_LR_DECAY, 1.0
    else:
        scale = steps / MNIST_STEPS_PER_EPOCH
        decay = DEFAULT_LR_DECAY ** scale

    def epochs(given, default):
        if given is not None:
            return given
        return int(min(max(round(default / scale), 1), MAX_SCALED_EPOCHS))

    return {"float_epochs": epochs(float_epochs, FLOAT_EPOCHS),
            "noise_epochs": epochs(noise_epochs, NOISE_EPOCHS), "lr_decay": decay,
            "steps_per_epoch": steps}


# --- the network --------------------------------------------------------------------

def _check_layer_values(num_sends, wait_between_events):
    """The values of the per-layer settings, before it is known how many layers
    there are: one value (int or None) or a list of them."""
    for name, v, lo, hi, none_ok in (("num_sends", num_sends, 1, MAX_NUM_SENDS, True),
                                     ("wait_between_events", wait_between_events, 1, MAX_WAIT_BETWEEN_EVENTS,
                                      False)):
        values = v if isinstance(v, (tuple, list)) else [v]
        if not values:
            raise ValueError(f"{name}=[] is not allowed: give one value or one per MAC layer")
        for x in values:
            if x is None and none_ok:
                continue
            check_int(name, x, lo, hi)


def _layer_list(name, v, names, default):
    """One value per MAC layer (named ``names``) from one value or a list."""
    if v is None:
        v = default
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            v = v[0]
        elif len(v) != len(names):
            raise ValueError(f"{name}={list(v)} is not allowed: give one value or one per MAC layer "
                             f"({len(names)}: {' '.join(names)})")
        else:
            return tuple(v)
    return (v,) * len(names)


def make_network(data: DataSet, gain: float, seed: int, hidden: int = DEFAULT_HIDDEN, num_sends=None,
                 wait_between_events=5, rms=None):
    """The network a data set trains (see the module docstring), weights drawn
    from ``seed``; ``rms`` is the training inputs' spread (:func:`input_rms`)."""
    if data.mnist_network:
        names = ("conv", "fc1", "fc2")
        ns = _layer_list("num_sends", num_sends, names, None)
        waits = _layer_list("wait_between_events", wait_between_events, names, 5)
        net = MnistNet(gain=gain, seed=seed, num_sends=ns, wait_between_events=waits)
        if data.encoding == "uint8":
            return net
        spec = net.spec()
        spec["layers"][0]["encoding"] = data.encoding
        return Sequential.from_config(spec)
    names = ("fc1", "fc2") if hidden else ("fc1",)
    return dense_network(data.sample_shape, hidden, data.classes, encoding=data.encoding, gain=gain,
                         seed=seed, input_rms=rms,
                         num_sends=_layer_list("num_sends", num_sends, names, None),
                         wait_between_events=_layer_list("wait_between_events", wait_between_events,
                                                         names, 5))


def _architecture(net) -> list:
    """The layers and their sizes, without what training or the chip set."""
    skip = {"num_sends", "wait_between_events", "gain", "input_rms", "target_std"}
    return [{k: v for k, v in layer.items() if k not in skip} for layer in net.spec()["layers"]]


# --- training stages -----------------------------------------------------------------

def _augment(data_is_images, shift):
    if not data_is_images:
        return None
    return lambda x, rng: random_shift(x, shift, rng)


def _train(net, opt, rng, images, labels, mode, epochs, ckpt, label, acc=None, batch_size=BATCH_SIZE,
           lr_decay=DEFAULT_LR_DECAY, augment_shift=AUGMENT_SHIFT, augment_seed=0, images_2d=True):
    """Epochs up to ``epochs`` through :func:`~bss2sim.experiments.training.fit.fit`,
    with a checkpoint after each (resumed from it when it exists). Each epoch sees
    2-d images shifted by :func:`bss2sim.experiments.datasets.mnist.random_shift`
    with a generator keyed by (augment_seed, epoch), so a resumed run sees the same images."""
    return fit(net, images, labels, mode, epochs=epochs, optimizer=opt, batch_size=batch_size, rng=rng,
               accelerator=acc, checkpoint=ckpt, resume=True, metadata={"stage": label},
               lr_decay=lr_decay, augment=_augment(images_2d, augment_shift), augment_seed=augment_seed,
               progress=True, label=label)


def _evaluate(net, images, labels, mode, acc=None, label="", batch=500):
    correct = 0
    with Progress(f"evaluating {label}", len(images), unit="image") as bar:
        for i in range(0, len(images), batch):
            pred = net.predict(images[i:i + batch], mode, acc, batch_size=batch)
            correct += int(np.sum(pred == labels[i:i + batch]))
            bar.update(len(pred), f"{correct / min(i + batch, len(images)):.2%}")
    return correct / len(images)


def _resume_or_new(ckpt: Path, make, acc=None, stage=None):
    """(network, optimizer, rng, epochs done) from a checkpoint if it exists; a
    checkpoint of another stage (a file renamed over this one) is refused."""
    if ckpt.exists():
        c = load_checkpoint(ckpt, expect_metadata=None if stage is None else {"stage": stage})
        net, opt, rng = c.build(accelerator=acc)
        note(f"resuming {ckpt.name} after epoch {c.epoch}")
        return net, opt, rng, c.epoch
    net, opt, rng = make()
    return net, opt, rng, 0


def fine_tune_on_chip(net, chip, images, labels, out: Path, tag: str, epochs=1, noise_seed=3,
                      augment_shift=AUGMENT_SHIFT, images_2d=True):
    """Hardware-in-the-loop fine-tuning of a copy of ``net`` on ``chip``."""
    ckpt = out / f"ckpt_hil_{tag}.npz"
    acc = Accelerator(chip, noise_seed=noise_seed)

    def make():
        n2 = net.clone()
        return n2, Adam(n2.parameters(), lr=HIL_LR), np.random.default_rng(noise_seed)

    tuned, opt, rng, _ = _resume_or_new(ckpt, make, acc, stage=f"fine-tuning on chip {tag}")
    _train(tuned, opt, rng, images, labels, "chip", epochs, ckpt, f"fine-tuning on chip {tag}", acc,
           lr_decay=HIL_LR_DECAY, augment_shift=augment_shift, augment_seed=noise_seed + 2,
           images_2d=images_2d)
    return tuned


def _check_resumed_layers(net, num_sends, wait_between_events, out):
    """A resumed run keeps its network's layer settings: refuse other requested ones."""
    names = net.mac_names
    have_ns = tuple(l.num_sends for l in net.mac_layers)
    have_wait = tuple(l.wait_between_events for l in net.mac_layers)
    for name, given, have in (("num_sends", _layer_list("num_sends", num_sends, names, None), have_ns),
                              ("wait_between_events",
                               _layer_list("wait_between_events", wait_between_events, names, 5),
                               have_wait)):
        for layer, g, h in zip(names, given, have):
            if g is not None and g != h:
                raise ValueError(f"{name}={list(given)} differs from the run in {str(out)!r}, which "
                                 f"has {name}={list(have)} ({layer}); use another --out folder")


def run(data_dir=None, seed=0, out="mnist_run", float_epochs=None, noise_epochs=None, hil_images=None,
        hil_epochs=1, extra_seeds=(1, 2, 3, 4, 5), extra_hil_images=None, test_images=None,
        augment_shift=None, num_sends=None, wait_between_events=5, ship=False, as_json=False,
        calibration=None, data=None, hidden=DEFAULT_HIDDEN):
    """Run the pipeline; returns the results dict (also written to ``out``).

    ``data_dir``: the MNIST folder; ``data``: instead, ``"yinyang"``, an
    ``.npz`` file or an IDX folder (see :func:`load_data`). ``hidden``: hidden
    units of the dense network of data other than 28 x 28 images with 10
    classes (0..4096; 0: one dense layer).

    ``calibration``: where each chip's calibration comes from: None (the store,
    then the shipped one, else calibrate now and store), ``"none"``
    (uncalibrated chips) or a path (a file for chip ``seed``, or a folder
    holding the files of every chip of the run).

    ``float_epochs``, ``noise_epochs``: epochs of float and noise-aware
    training; default 8 and 2 on MNIST, and on other data as many optimiser
    steps (:func:`schedule`, whose per-step learning-rate decay every data set
    shares).

    ``hil_images``, ``extra_hil_images``: training samples of the fine-tuning
    on chip ``seed`` and on each further chip (default: 10,000, or all of a
    smaller training set). ``augment_shift``: largest random shift of 2-d
    images, pixels (default 2; other samples are not shifted and take only 0).

    ``num_sends`` and ``wait_between_events`` (FPGA cycles): one value, or one
    per MAC layer (conv, fc1, fc2 of the MNIST network; fc1, fc2 of the dense
    one); a None send count is chosen by the gain-aware initialisation.
    Everything is checked before anything runs."""
    # Fail on bad settings now, not after the data are loaded and the chip calibrated.
    _check_layer_values(num_sends, wait_between_events)
    if data is None:
        names = ("conv", "fc1", "fc2")
        MnistNet(num_sends=_layer_list("num_sends", num_sends, names, None),
                 wait_between_events=_layer_list("wait_between_events", wait_between_events, names, 5))
    hidden = check_int("hidden", hidden, 0, MAX_HIDDEN)
    if ship and data is not None:
        raise ValueError("--ship copies the MNIST network into the package; it takes the MNIST folder "
                         "(--data-dir), not --data")
    t_start = time.perf_counter()
    out = Path(out)
    dataset = load_data(data, data_dir)
    train_x, train_y = dataset.x_train, dataset.y_train
    test_x, test_y = dataset.x_test, dataset.y_test
    n_train = len(train_y)
    for option, n, have in (("--hil-images", hil_images, n_train),
                            ("--further-hil-images", extra_hil_images, n_train),
                            ("--test-images", test_images, len(test_y))):
        if n is not None and n > have:
            raise ValueError(f"{option} {n} is more than the {have} "
                             f"{'images' if dataset.images else 'samples'} there are")
    for option, n in (("--float-epochs", float_epochs), ("--noise-epochs", noise_epochs)):
        if n is not None:
            check_int(option, n, 0, 100_000)
    sched = schedule(n_train, float_epochs, noise_epochs)
    float_epochs, noise_epochs, lr_decay = sched["float_epochs"], sched["noise_epochs"], sched["lr_decay"]
    hil_images = min(HIL_IMAGES, n_train) if hil_images is None else hil_images
    extra_hil_images = min(HIL_IMAGES, n_train) if extra_hil_images is None else extra_hil_images
    if augment_shift is None:
        augment_shift = AUGMENT_SHIFT if dataset.images else 0
    elif augment_shift and not dataset.images:
        raise ValueError(f"--augment-shift {augment_shift} shifts images, but the samples have shape "
                         f"{dataset.sample_shape}; use 0")
    elif dataset.images and augment_shift >= min(dataset.sample_shape):
        raise ValueError(f"--augment-shift {augment_shift} is not allowed: the images are "
                         f"{dataset.sample_shape[0]} x {dataset.sample_shape[1]} pixels, so at most "
                         f"{min(dataset.sample_shape) - 1}")
    rms = None if dataset.mnist_network else input_rms(dataset)
    # The whole network once with the default gain: its layer counts and sizes are checked now.
    make_network(dataset, DEFAULT_GAIN, seed, hidden, num_sends, wait_between_events, rms)
    if test_images is not None:
        test_x, test_y = test_x[:test_images], test_y[:test_images]
    is_mnist = dataset.source == "mnist"
    network_file = NETWORK_FILE if is_mnist else OTHER_NETWORK_FILE
    results_file = RESULTS_FILE if is_mnist else OTHER_RESULTS_FILE
    out.mkdir(parents=True, exist_ok=True)
    res = {"chip_seed": seed, "test_images": int(len(test_y)),
           "settings": {"float_epochs": float_epochs, "noise_epochs": noise_epochs,
                        "hil_images": hil_images, "hil_epochs": hil_epochs,
                        "further_hil_images": extra_hil_images, "augment_shift": augment_shift}}
    if not is_mnist:
        res["data"] = dataset.summary()
        res["settings"].update(lr_decay=lr_decay, steps_per_epoch=sched["steps_per_epoch"])

    # A calibration file belongs to one chip; the further chips look in the store.
    further_calibration = calibration
    if calibration not in (None, NO_CALIBRATION) and Path(calibration).is_file():
        further_calibration = None
    chip, loaded, meas = calibrated_and_measured(seed, calibration)
    beh = meas.behavioural()
    res["calibration"] = None if loaded is None else loaded.to_dict()
    res["behaviour"] = meas.summary()

    def make():
        net = make_network(dataset, beh.gain, seed, hidden, num_sends, wait_between_events, rms)
        return net, Adam(net.parameters(), lr=DEFAULT_LR), np.random.default_rng(seed)

    net, opt, rng, done = _resume_or_new(out / "ckpt_float.npz", make, stage="float training")
    _check_resumed_layers(net, num_sends, wait_between_events, out)
    if done:
        fresh = make()[0]
        if type(net) is not type(fresh) or _architecture(net) != _architecture(fresh):
            raise ValueError(f"the checkpoints in {str(out)!r} belong to another network "
                             f"({net.describe()}); this run trains {fresh.describe()}: use another "
                             "--out folder")
    if not is_mnist:
        res["network"] = net.describe()
    res["settings"].update(num_sends=[l.num_sends for l in net.mac_layers],
                           wait_between_events=[l.wait_between_events for l in net.mac_layers])
    images_2d = dataset.images
    _train(net, opt, rng, train_x, train_y, "float", float_epochs, out / "ckpt_float.npz",
           "float training", lr_decay=lr_decay, augment_shift=augment_shift, augment_seed=0,
           images_2d=images_2d)
    res["float"] = _evaluate(net, test_x, test_y, "float", label="float")
    beh_acc = Accelerator(behavioural=beh, noise_seed=1)
    res["behavioural_after_float"] = _evaluate(net, test_x, test_y, "behavioural", beh_acc, "behavioural")

    if noise_epochs > 0:
        ckpt = out / "ckpt_noise.npz"
        train_acc = Accelerator(behavioural=beh, noise_seed=2)
        if ckpt.exists():
            net, opt, rng, done = _resume_or_new(ckpt, None, train_acc, stage="noise-aware training")
        else:
            opt.lr = DEFAULT_LR * lr_decay ** float_epochs
        _train(net, opt, rng, train_x, train_y, "behavioural", noise_epochs, ckpt,
               "noise-aware training", train_acc, lr_decay=lr_decay, augment_shift=augment_shift,
               augment_seed=1, images_2d=images_2d)
    res["float_final"] = _evaluate(net, test_x, test_y, "float", label="float")
    res["behavioural"] = _evaluate(net, test_x, test_y, "behavioural",
                                   Accelerator(behavioural=beh, noise_seed=1), "behavioural")
    save_checkpoint(out / "software_net.npz", net, opt, 0, rng, metadata={"stage": "software"})

    res["chip_without_fine_tuning"] = _evaluate(net, test_x, test_y, "chip",
                                                Accelerator(chip, noise_seed=4), f"chip {seed}")
    hil_idx = np.random.default_rng(seed + 100).permutation(n_train)[:hil_images]
    tuned = fine_tune_on_chip(net, chip, train_x[hil_idx], train_y[hil_idx], out, f"seed{seed}",
                              epochs=hil_epochs, augment_shift=augment_shift, images_2d=images_2d)
    ev_acc = Accelerator(chip, noise_seed=4)
    res["chip_after_fine_tuning"] = _evaluate(tuned, test_x, test_y, "chip", ev_acc, f"chip {seed} tuned")
    rep = ev_acc.report()
    res["chip_time_per_image_s"] = rep["total_s"] / len(test_y)
    res["asic_energy_per_image_j"] = rep["asic_j"] / len(test_y)
    save_checkpoint(out / network_file, tuned, Adam(tuned.parameters(), lr=HIL_LR), 0,
                    np.random.default_rng(0), metadata={"stage": "fine-tuned", "chip_seed": seed,
                                                        "accuracy_on_chip": res["chip_after_fine_tuning"]})
    _atomic_json(out / results_file, res)

    res["further_chips"] = []
    for s in extra_seeds:
        c, loaded_s = chip_with_calibration(s, further_calibration)
        note(f"further chip {s}, calibration: {describe(loaded_s)}")
        pre = _evaluate(net, test_x, test_y, "chip", Accelerator(c, noise_seed=4), f"chip {s}")
        idx = np.random.default_rng(s + 100).permutation(n_train)[:extra_hil_images]
        t = fine_tune_on_chip(net, c, train_x[idx], train_y[idx], out, f"seed{s}", epochs=hil_epochs,
                              augment_shift=augment_shift, images_2d=images_2d)
        post = _evaluate(t, test_x, test_y, "chip", Accelerator(c, noise_seed=4), f"chip {s} tuned")
        res["further_chips"].append({"chip_seed": s, "without_fine_tuning": pre, "with_fine_tuning": post,
                                     "calibration": None if loaded_s is None else loaded_s.to_dict(),
                                     "test_images": int(len(test_y)), "hil_images": len(idx)})
        _atomic_json(out / results_file, res)
    res["wall_time_s"] = time.perf_counter() - t_start
    _atomic_json(out / results_file, res)
    if ship:
        # Ship only what this run wrote and checks: its fine-tuned network, its
        # results and the test set, each written atomically and loaded back.
        load_checkpoint(out / NETWORK_FILE, expect_metadata={"stage": "fine-tuned", "chip_seed": seed})
        load_results(out / RESULTS_FILE)
        PACKAGE_DATA.mkdir(exist_ok=True)
        for name in (NETWORK_FILE, RESULTS_FILE):
            content = (out / name).read_bytes()
            atomic_write(PACKAGE_DATA / name, lambda f: f.write(content))
        tx, ty = load_mnist("test", data_dir)
        save_test_images(PACKAGE_DATA / TEST_IMAGES_FILE, tx, ty,
                         source="MNIST test set (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)")
        load_checkpoint(PACKAGE_DATA / NETWORK_FILE)
        load_results(PACKAGE_DATA / RESULTS_FILE)
        load_test_images(PACKAGE_DATA / TEST_IMAGES_FILE)
    print(("" if is_mnist else f"{dataset.name}, ") + f"chip seed {seed}: float {res['float_final']:.2%}, "
          f"behavioural {res['behavioural']:.2%}, "
          f"chip without fine-tuning {res['chip_without_fine_tuning']:.2%}, "
          f"after fine-tuning {res['chip_after_fine_tuning']:.2%}")
    for f in res["further_chips"]:
        print(f"chip seed {f['chip_seed']}: {f['without_fine_tuning']:.2%} -> {f['with_fine_tuning']:.2%}")
    print(f"wall time {res['wall_time_s']:.0f} s")
    if as_json:
        emit_json(res)
    return res
