"""The MNIST pipeline of ``bss2sim train`` in PyTorch, through the bridge.

``python -m bss2sim.experiments.torchbridge.train_mnist --data-dir D [options]``

1. Chip ``--seed`` with its calibration (the store, the shipped one, else
   calibrate now), its gain and noise measured through VMMs
   (:func:`bss2sim.digital.measure_behaviour`).
2. Software training (``--float-epochs``), then noise-aware training on the
   behavioural model with the measured gain and noise (``--noise-epochs``);
   torch.optim.Adam at the numpy pipeline's rate 0.5 (weight LSB), decayed by
   0.75 per epoch over both stages, batches of 100, loss temperature 0.1, every
   epoch's images shifted at random by up to 2 pixels.
3. Evaluation: float, behavioural, and the software-trained network on the
   cycle-level chip.
4. Hardware-in-the-loop fine-tuning (``--hil-images`` images, ``--hil-epochs``):
   forward through the cycle-level chip, backward through the linear model
   scaled by the measured gain; Adam at 0.03, halved per epoch; evaluation on
   the chip.

The network, its initialisation, the data order, the augmentation, the
accelerators' noise seeds and the image subsets are those of
:mod:`bss2sim.experiments.train`; only the optimiser is torch's, so the
accuracies agree with the numpy pipeline's within the spread that the last
bits of Adam's arithmetic cause. Writes ``torch_mnist_results.json``,
``torch_mnist_net.pt`` (the fine-tuned module's ``state_dict``) and
``mnist_net.npz`` (the same network as a numpy checkpoint, loadable with
``load_checkpoint(...).make_network()``) into ``--out``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from bss2sim.digital import Accelerator
from bss2sim.experiments.cli import (CALIBRATION_HELP, OneLineParser, check_writable_folder,
                                     int_at_least, max_threads, report_errors)
from bss2sim.experiments.common import emit_json, json_only_stdout, write_json_file
from bss2sim.experiments.datasets.mnist import load_mnist, random_shift
from bss2sim.experiments.progress import Progress
from bss2sim.experiments.train import AUGMENT_SHIFT, HIL_LR, HIL_LR_DECAY, calibrated_and_measured
from bss2sim.experiments.training import Adam, MnistNet, save_checkpoint
from bss2sim.experiments.training.network import DEFAULT_LR, DEFAULT_LR_DECAY

from .mnist import TorchMnistNet
from .mock import behavioural_from_measurement

__all__ = ["run", "main", "build_parser", "train_epoch", "evaluate", "RESULTS_FILE",
           "RESULTS_KIND", "BATCH_SIZE"]

PROG = "python -m bss2sim.experiments.torchbridge.train_mnist"
RESULTS_FILE = "torch_mnist_results.json"
RESULTS_KIND = "bss2sim-torch-mnist-results"
RESULTS_FORMAT_VERSION = 1
STATE_FILE = "torch_mnist_net.pt"
NETWORK_FILE = "mnist_net.npz"
BATCH_SIZE = 100
"""Images per optimiser step (the numpy pipeline's)."""
EVAL_BATCH = 500
"""Images per forward pass in the evaluations (results do not depend on it: one
noise stream per layer)."""
# Noise seeds of the accelerators and seeds of the augmentation, as in
# bss2sim.experiments.train: evaluation on the behavioural model 1, noise-aware
# training 2, fine-tuning 3 (its data order too, augmentation 3 + 2), chip evaluation 4.
EVAL_BEHAVIOURAL_NOISE, TRAIN_BEHAVIOURAL_NOISE, HIL_NOISE, EVAL_CHIP_NOISE = 1, 2, 3, 4
MAX_SHIFT = 27
"""Largest augmentation shift, pixels (an image is 28 wide)."""


def train_epoch(model, optimizer, images, labels, rng, batch_size=BATCH_SIZE, progress=None):
    """One pass over ``images`` (uint8 pixels (N, 28, 28)) in an order drawn from
    ``rng`` (numpy Generator), as :meth:`MnistNet.train_epoch`: forward through
    the model's accelerators, the numpy stack's loss, backward, one optimiser
    step per batch, weights clipped to -63..63 after each. Returns the mean loss
    and the training accuracy of the forward passes."""
    n = len(images)
    order = rng.permutation(n)
    nb = -(-n // batch_size)
    total, correct = 0.0, 0
    for b in range(nb):
        idx = order[b * batch_size:(b + 1) * batch_size]
        logits = model(torch.from_numpy(images[idx]))
        loss = model.loss(logits, torch.from_numpy(labels[idx].astype(np.int64)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clamp_weights()
        total += float(loss.detach()) * len(idx)
        correct += int(np.sum(np.argmax(logits.detach().cpu().numpy(), axis=1) == labels[idx]))
        if progress is not None:
            progress(b, nb, float(loss.detach()))
    return {"loss": total / n, "accuracy": correct / n}


def evaluate(model, images, labels, accelerator, label="", batch=EVAL_BATCH) -> float:
    """Test accuracy (fraction) of ``model`` with every layer on ``accelerator``
    (None: software)."""
    model.set_accelerator(accelerator)
    correct = 0
    with Progress(f"evaluating {label}", len(images), unit="image") as bar:
        for i in range(0, len(images), batch):
            pred = model.predict(images[i:i + batch], batch_size=batch)
            correct += int(np.sum(pred == labels[i:i + batch]))
            bar.update(len(pred), f"{correct / min(i + batch, len(images)):.2%}")
    return correct / len(images)


def _set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def _train_stage(model, optimizer, rng, images, labels, accelerator, epochs, label, lr_decay,
                 augment_shift, augment_seed, batch_size):
    model.set_accelerator(accelerator)
    for epoch in range(epochs):
        shifted = random_shift(images, augment_shift, np.random.default_rng([augment_seed, epoch]))
        nb = -(-len(images) // batch_size)
        with Progress(f"{label} epoch {epoch + 1}/{epochs}", nb, unit="batch") as bar:
            train_epoch(model, optimizer, shifted, labels, rng, batch_size,
                        progress=lambda b, n, loss: bar.update(1, f"loss {loss:.3f}"))
        _set_lr(optimizer, optimizer.param_groups[0]["lr"] * lr_decay)


def check_arguments(float_epochs=8, noise_epochs=2, hil_images=10_000, hil_epochs=1, test_images=None,
                    augment_shift=AUGMENT_SHIFT, batch_size=BATCH_SIZE, seed=0, train_images=None):
    """Every numeric argument of :func:`run` checked before any work: a list of
    one-line messages naming the option, the value and the allowed range (empty: all fine)."""
    errors = []

    def check(option, v, lo, hi=None, none_ok=False):
        if v is None and none_ok:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo \
                or (hi is not None and v > hi):
            allowed = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
            errors.append(f"{option} {v!r} is not allowed: must be {allowed}")

    check("--float-epochs", float_epochs, 0, 1000)
    check("--noise-epochs", noise_epochs, 0, 1000)
    check("--hil-images", hil_images, 1)
    check("--hil-epochs", hil_epochs, 0, 1000)
    check("--test-images", test_images, 1, none_ok=True)
    check("--train-images", train_images, 1, none_ok=True)
    check("--augment-shift", augment_shift, 0, MAX_SHIFT)
    check("--batch-size", batch_size, 1, 60_000)
    check("--seed", seed, 0, 2**64 - 1)
    return errors


def run(data_dir=None, seed=0, out="torch_mnist_run", float_epochs=8, noise_epochs=2,
        hil_images=10_000, hil_epochs=1, test_images=None, augment_shift=AUGMENT_SHIFT,
        batch_size=BATCH_SIZE, calibration=None, as_json=False, train_images=None):
    """Run the three stages; returns the results (also written to ``out``).

    Accuracies are fractions; ``stage_wall_times_s`` holds the seconds of each
    stage. ``calibration`` as for ``bss2sim train`` (None, ``"none"`` or a path).
    ``train_images``: train on the first N training images only (default: all;
    the fine-tuning images are drawn from these)."""
    errors = check_arguments(float_epochs, noise_epochs, hil_images, hil_epochs, test_images,
                             augment_shift, batch_size, seed, train_images)
    if errors:
        raise ValueError("; ".join(errors))
    t_start = time.perf_counter()
    out = Path(out)
    train_x, train_y = load_mnist("train", data_dir)
    test_x, test_y = load_mnist("test", data_dir)
    if len(train_y) == 0 or len(test_y) == 0:
        raise ValueError(f"the MNIST folder holds {len(train_y)} training and {len(test_y)} test "
                         "images; both sets must be non-empty")
    for option, n, have in (("--train-images", train_images, len(train_y)),
                            ("--hil-images", hil_images, len(train_y) if train_images is None else train_images),
                            ("--test-images", test_images, len(test_y))):
        if n is not None and n > have:
            raise ValueError(f"{option} {n} is more than the {have} images there are")
    if train_images is not None:
        train_x, train_y = train_x[:train_images], train_y[:train_images]
    if test_images is not None:
        test_x, test_y = test_x[:test_images], test_y[:test_images]
    out.mkdir(parents=True, exist_ok=True)
    res = {"chip_seed": seed, "test_images": int(len(test_y)), "framework": f"torch {torch.__version__}",
           "settings": {"float_epochs": float_epochs, "noise_epochs": noise_epochs,
                        "train_images": int(len(train_y)), "hil_images": hil_images,
                        "hil_epochs": hil_epochs,
                        "augment_shift": augment_shift, "batch_size": batch_size,
                        "lr": DEFAULT_LR, "lr_decay": DEFAULT_LR_DECAY, "hil_lr": HIL_LR,
                        "hil_lr_decay": HIL_LR_DECAY, "optimizer": "torch.optim.Adam"}}
    walls = {}

    t = time.perf_counter()
    chip, loaded, meas = calibrated_and_measured(seed, calibration)
    beh = meas.behavioural()
    res["calibration"] = None if loaded is None else loaded.to_dict()
    res["behaviour"] = meas.summary()
    walls["calibration_and_measurement"] = time.perf_counter() - t

    # The numpy pipeline's initialisation (gain-aware, the chip's measured gain).
    model = TorchMnistNet.from_numpy(MnistNet(gain=beh.gain, seed=seed))
    res["settings"]["num_sends"] = list(model.num_sends)
    opt = torch.optim.Adam(model.parameters(), lr=DEFAULT_LR)
    rng = np.random.default_rng(seed)

    t = time.perf_counter()
    _train_stage(model, opt, rng, train_x, train_y, None, float_epochs, "float training",
                 DEFAULT_LR_DECAY, augment_shift, 0, batch_size)
    walls["float_training"] = time.perf_counter() - t
    t = time.perf_counter()
    res["float"] = evaluate(model, test_x, test_y, None, "float")
    res["behavioural_after_float"] = evaluate(
        model, test_x, test_y, behavioural_from_measurement(meas, EVAL_BEHAVIOURAL_NOISE), "behavioural")
    walls["evaluation_after_float"] = time.perf_counter() - t

    t = time.perf_counter()
    if noise_epochs > 0:
        _set_lr(opt, DEFAULT_LR * DEFAULT_LR_DECAY ** float_epochs)
        _train_stage(model, opt, rng, train_x, train_y,
                     behavioural_from_measurement(meas, TRAIN_BEHAVIOURAL_NOISE), noise_epochs,
                     "noise-aware training", DEFAULT_LR_DECAY, augment_shift, 1, batch_size)
    walls["noise_aware_training"] = time.perf_counter() - t
    t = time.perf_counter()
    res["float_final"] = evaluate(model, test_x, test_y, None, "float")
    res["behavioural"] = evaluate(
        model, test_x, test_y, behavioural_from_measurement(meas, EVAL_BEHAVIOURAL_NOISE), "behavioural")
    res["chip_without_fine_tuning"] = evaluate(
        model, test_x, test_y, Accelerator(chip, noise_seed=EVAL_CHIP_NOISE), f"chip {seed}")
    walls["evaluation_software_trained"] = time.perf_counter() - t

    t = time.perf_counter()
    hil_idx = np.random.default_rng(seed + 100).permutation(len(train_y))[:hil_images]
    tuned = TorchMnistNet(**model.config())
    tuned.load_state_dict(model.state_dict())
    hil_opt = torch.optim.Adam(tuned.parameters(), lr=HIL_LR)
    _train_stage(tuned, hil_opt, np.random.default_rng(HIL_NOISE), train_x[hil_idx], train_y[hil_idx],
                 Accelerator(chip, noise_seed=HIL_NOISE), hil_epochs, f"fine-tuning on chip {seed}",
                 HIL_LR_DECAY, augment_shift, HIL_NOISE + 2, batch_size)
    walls["hil_fine_tuning"] = time.perf_counter() - t
    t = time.perf_counter()
    ev_acc = Accelerator(chip, noise_seed=EVAL_CHIP_NOISE)
    res["chip_after_fine_tuning"] = evaluate(tuned, test_x, test_y, ev_acc, f"chip {seed} tuned")
    walls["evaluation_fine_tuned"] = time.perf_counter() - t
    rep = ev_acc.report()
    res["chip_time_per_image_s"] = rep["total_s"] / len(test_y)
    res["asic_energy_per_image_j"] = rep["asic_j"] / len(test_y)
    res["stage_wall_times_s"] = walls
    res["wall_time_s"] = time.perf_counter() - t_start

    tuned.set_accelerator(None)
    torch.save(tuned.state_dict(), out / STATE_FILE)
    net = tuned.to_numpy()
    save_checkpoint(out / NETWORK_FILE, net, Adam(net.parameters(), lr=HIL_LR), 0, np.random.default_rng(0),
                    metadata={"stage": "fine-tuned", "chip_seed": seed, "framework": "torch",
                              "accuracy_on_chip": res["chip_after_fine_tuning"]})
    write_json_file(out / RESULTS_FILE, RESULTS_KIND, RESULTS_FORMAT_VERSION, res)

    print(f"chip seed {seed} (PyTorch): float after pre-training {res['float']:.2%}, "
          f"float {res['float_final']:.2%}, behavioural {res['behavioural']:.2%}, "
          f"chip without fine-tuning {res['chip_without_fine_tuning']:.2%}, "
          f"after fine-tuning {res['chip_after_fine_tuning']:.2%}")
    print(f"wall time {res['wall_time_s']:.0f} s")
    if as_json:
        emit_json(res)
    return res


def build_parser():
    p = OneLineParser(prog=PROG, description="The MNIST pipeline (software, noise-aware, "
                                             "hardware in the loop) in PyTorch through the chip model.")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: the environment variable BSS2SIM_MNIST_DIR)")
    p.add_argument("--seed", type=int_at_least(0, 2**64 - 1), default=0, help="chip seed (default 0)")
    p.add_argument("--out", default="torch_mnist_run", help="folder for the results and the network "
                                                             "(default torch_mnist_run)")
    p.add_argument("--float-epochs", type=int_at_least(0, 1000), default=8,
                   help="epochs of software training (default 8)")
    p.add_argument("--noise-epochs", type=int_at_least(0, 1000), default=2,
                   help="epochs of noise-aware training on the behavioural model (default 2)")
    p.add_argument("--hil-images", type=int_at_least(1), default=10_000,
                   help="training images of the fine-tuning on the chip (default 10000)")
    p.add_argument("--hil-epochs", type=int_at_least(0, 1000), default=1,
                   help="fine-tuning epochs (default 1; 0: none)")
    p.add_argument("--test-images", type=int_at_least(1), default=None,
                   help="evaluate on the first N test images only (default: all)")
    p.add_argument("--train-images", type=int_at_least(1), default=None,
                   help="train on the first N training images only (default: all 60000)")
    p.add_argument("--augment-shift", type=int_at_least(0, MAX_SHIFT), default=AUGMENT_SHIFT,
                   help=f"largest random shift of the training images, pixels (default {AUGMENT_SHIFT}; 0: none)")
    p.add_argument("--batch-size", type=int_at_least(1, 60_000), default=BATCH_SIZE,
                   help=f"images per optimiser step (default {BATCH_SIZE})")
    p.add_argument("--calibration", default=None, metavar="PATH", help=CALIBRATION_HELP)
    p.add_argument("--threads", type=int_at_least(1, max_threads()), default=None,
                   help=f"threads of the numba kernels and of torch, 1..{max_threads()} "
                        "(default: all cores; results do not depend on it)")
    p.add_argument("--json", action="store_true",
                   help="print only the figures as one JSON object on stdout (text goes to stderr)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def work():
        if args.threads is not None:
            import numba
            numba.set_num_threads(args.threads)
            torch.set_num_threads(args.threads)
        check_writable_folder("--out", args.out)
        kwargs = dict(data_dir=args.data_dir, seed=args.seed, out=args.out,
                      float_epochs=args.float_epochs, noise_epochs=args.noise_epochs,
                      hil_images=args.hil_images, hil_epochs=args.hil_epochs,
                      test_images=args.test_images, train_images=args.train_images,
                      augment_shift=args.augment_shift,
                      batch_size=args.batch_size, calibration=args.calibration, as_json=args.json)
        if args.json:
            with json_only_stdout():
                run(**kwargs)
        else:
            run(**kwargs)
        return 0

    return report_errors(PROG, work)


if __name__ == "__main__":
    sys.exit(main())
