"""What a stuck CADC channel costs the shipped MNIST network, and what
fault-aware mapping (:class:`bss2sim.digital.FaultyUnits`) wins back.

:func:`fault_study` runs the shipped network (``data/mnist_net.npz``) on the
first images of the shipped test set (``data/mnist_test.npz``) through the
cycle-level model three times: on the fault-free chip, on the same chip with
one stuck CADC channel (an injected :class:`bss2sim.circuits.Faults`), and on
the faulty chip with an accelerator told to leave that channel's column
unused. All three chips get the same calibration, the one every command uses
(the store, the shipped one for the seed, or one made now on the fault-free
chip): the fault appears after calibration.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import Chip, Faults
from bss2sim.circuits.checks import WrongTypeError, check_int, check_seed, short_repr
from bss2sim.digital import Accelerator, FaultyUnits

from .calibration import calibrate, load_calibration
from .datasets.mnist import load_test_set
from .train import NETWORK_FILE, PACKAGE_DATA
from .training.checkpoint import load_checkpoint

STUCK_CODE = 128
"""Raw code a stuck channel reports when ``stuck`` names none (0..255). Any
code gives the same result: the baseline and the read report it alike, and
their difference, the VMM output, is 0."""
BATCH = 500
"""Images per call of the network (as ``bss2sim demo``); results do not depend on it."""


def _check_stuck(stuck):
    """``stuck`` as a (half, column, code) triple of ints, checked by :class:`Faults`."""
    if isinstance(stuck, (str, bytes)) or not isinstance(stuck, (tuple, list)) or len(stuck) not in (2, 3):
        raise WrongTypeError(f"stuck={short_repr(stuck)} is not allowed: must be a (half, column) pair "
                             "or a (half, column, code) triple, half 0..1, column 0..255, code 0..255")
    entry = tuple(stuck) if len(stuck) == 3 else (stuck[0], stuck[1], STUCK_CODE)
    return Faults(stuck_cadc_channels=(entry,)).stuck_cadc_channels[0]


def fault_study(seed: int = 0, stuck=(0, 5), images: int | None = 2000, noise_seed: int = 0) -> dict:
    """Accuracy of the shipped MNIST network with one stuck CADC channel, with
    and without fault-aware mapping.

    Parameters
    ----------
    seed : int
        Chip seed (0..2**64-1). Seed 0 uses the shipped calibration
        (``data/bss2-calibration-seed0-*.npz``); another seed is calibrated
        first (fault-free chip, a few seconds).
    stuck : (half, column) or (half, column, code)
        The stuck channel: half 0..1, column 0..255, raw code 0..255 (default
        :data:`STUCK_CODE`). The network's layers use columns 0..N-1 of each
        half (conv 20, fc1 128, fc2 10 outputs): the default, column 5 of the
        top half, carries output 5 of every layer (fc1 on row tiles 0 and 2,
        the conv and the logit of digit 5 for the images of even index); a
        column in 20..127 hits the first dense layer (fc1) only.
    images : int or None
        How many of the shipped test images to classify, from the first
        (1..10000); None: all.
    noise_seed : int
        Trial-to-trial noise seed of the accelerators (default 0, as ``bss2sim demo``).

    Returns
    -------
    dict of accuracies (fractions 0..1 of ``images``): ``"fault_free"`` (the
    chip without the fault), ``"faulty"`` (the stuck channel, no mapping),
    ``"faulty_mapped"`` (the stuck channel, ``FaultyUnits(columns=((half,
    column),))``) and ``"recalibrated_mapped"`` (the whole workflow: the faulty
    chip calibrated itself, its calibration's
    :meth:`~bss2sim.experiments.calibration.ChipCalibration.faulty_units`
    given to the accelerator); ``"recalibration_found"``: the faulty units that
    calibration named (``FaultyUnits.to_dict()``).

    Everything is checked before any image runs.
    """
    seed = check_seed("seed", seed)
    half, column, code = _check_stuck(stuck)
    noise_seed = check_seed("noise_seed", noise_seed)
    x, y = load_test_set()
    if images is not None:
        images = check_int("images", images, 1, len(y))
        x, y = x[:images], y[:images]
    net = load_checkpoint(PACKAGE_DATA / NETWORK_FILE, expect_metadata={"stage": "fine-tuned"}).make_network()

    clean = Chip(seed)
    # The calibration every command uses (the store, else the shipped one, else
    # made now); not stored: this study only reads.
    load_calibration(clean, save_to_store=False)
    faults = Faults(stuck_cadc_channels=((half, column, code),))
    runs = {"fault_free": (clean, None), "faulty": (Chip(seed, faults=faults), None),
            "faulty_mapped": (Chip(seed, faults=faults), FaultyUnits(columns=((half, column),)))}
    for chip, _ in runs.values():
        if chip is not clean:
            # The same calibrated settings (a new version, so nothing cached is reused).
            chip.config = clean.config.copy()
    # The whole workflow: calibrate the faulty chip; the calibration names the stuck
    # channel (and the neuron behind it), and the accelerator leaves them out.
    recal = Chip(seed, faults=faults)
    with np.errstate(invalid="ignore", divide="ignore"):      # 0/0 ratios of the dead channel
        found = calibrate(recal).faulty_units()
    runs["recalibrated_mapped"] = (recal, found)
    out = {"recalibration_found": found.to_dict()}
    for name, (chip, faulty) in runs.items():
        acc = Accelerator(chip, noise_seed=noise_seed, faulty=faulty)
        pred = np.concatenate([net.predict(x[i:i + BATCH], "chip", acc, batch_size=BATCH)
                               for i in range(0, len(y), BATCH)])
        out[name] = float(np.mean(pred == y))
    return out
