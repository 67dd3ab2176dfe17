"""Training any :class:`~.sequential.Sequential` on any data set: :func:`fit`.

``fit(model, x, y, mode, epochs=...)`` runs epochs of
:meth:`~.sequential.Sequential.train_epoch` (one permutation of the data per
epoch drawn from ``rng``, one Adam step per batch, weights clipped to
-63..63 after each step), multiplies the learning rate by ``lr_decay`` after
each epoch, optionally evaluates a validation set, and, with
``checkpoint=PATH``, writes a checkpoint (:mod:`.checkpoint`, atomically)
after every epoch. Started again with the same arguments, a stopped run
resumes from that checkpoint and ends bit for bit where the uninterrupted
run ends: the checkpoint holds the weights, Adam's state, the learning
rate, the shuffling generator's state, the accelerator's noise positions
and the history so far, and the augmentation of epoch ``e`` draws from
``numpy.random.default_rng([augment_seed, e])``, whatever ran before.

Validation (``x_val``, ``y_val``) runs in the training mode after each
epoch; in a hardware mode the accelerator's noise positions are put back
afterwards, so that the training does not depend on whether (or on what) it
validates.
"""
from __future__ import annotations

import json
import time

import numpy as np

from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_real, check_seed

from ..common import as_path
from ..progress import Progress
from .checkpoint import load_checkpoint, save_checkpoint
from .layers import check_mode
from .optim import Adam
from .sequential import Sequential

__all__ = ["fit", "HISTORY_KEYS", "DEFAULT_LR", "MAX_EPOCHS", "BAR_PER_EPOCH"]

DEFAULT_LR = 0.5
"""Adam learning rate in weight LSB when no optimiser is given (that of the
MNIST network, :data:`bss2sim.experiments.training.network.DEFAULT_LR`)."""
MAX_EPOCHS = 100_000
"""Most epochs of one call (*assumed*: a bound against a mistyped number, far
beyond any run of this project)."""
HISTORY_KEYS = ("epoch", "loss", "train_accuracy", "val_accuracy", "lr", "wall_time_s")
"""The lists of the history :func:`fit` returns, one entry per epoch: the
epoch's number (1, 2, ...), its mean training loss, the training accuracy of
its forward passes (fraction), the validation accuracy (fraction; None
without validation data), the learning rate it ran at, and its wall time (s;
None for epochs a resumed checkpoint recorded no history of)."""
_RESERVED = "history"
BAR_PER_EPOCH = 10
"""Up to this many epochs left, one progress bar per epoch; more share one bar."""


def _new_history():
    return {k: [] for k in HISTORY_KEYS}


def _history_from(meta, epochs_done, where):
    """The history a checkpoint recorded (its first ``epochs_done`` epochs)."""
    h = meta.get(_RESERVED) if isinstance(meta, dict) else None
    if h is None:
        # Written without a history (by train.py before fit): the epochs are known, their figures not.
        out = _new_history()
        out["epoch"] = list(range(1, epochs_done + 1))
        for k in HISTORY_KEYS[1:]:
            out[k] = [None] * epochs_done
        return out
    if not (isinstance(h, dict) and sorted(h) == sorted(HISTORY_KEYS)
            and all(isinstance(h[k], list) and len(h[k]) == epochs_done for k in HISTORY_KEYS)):
        raise ValueError(f"{where}: its metadata history is not {len(HISTORY_KEYS)} lists of "
                         f"{epochs_done} entries ({', '.join(HISTORY_KEYS)})")
    return {k: list(h[k]) for k in HISTORY_KEYS}


def _check_xy(model, x, y, what):
    if x is None or y is None:
        raise ValueError(f"{what}: give both the samples and the labels")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what} is not a regular array ({e})") from None
    n = model.check_data(a, y, what)
    if n == 0:
        raise ValueError(f"{what} is empty: at least one {model.SAMPLE} is needed")
    return a, np.asarray(y)


def _validate(model, x, y, mode, accelerator, batch_size):
    if mode == "float":
        return model.evaluate(x, y, mode, None, batch_size)
    saved = accelerator.noise_state()
    try:
        return model.evaluate(x, y, mode, accelerator, batch_size)
    finally:
        accelerator.set_noise_state(saved)


def fit(model, x, y, mode: str = "float", *, epochs: int = 1, optimizer=None, lr: float = DEFAULT_LR,
        batch_size: int = 100, rng=None, accelerator=None, checkpoint=None, resume: bool = True,
        metadata: dict | None = None, lr_decay: float = 1.0, augment=None, augment_seed: int = 0,
        progress: bool = True, label: str = "training", x_val=None, y_val=None,
        val_batch_size: int = 1000) -> dict:
    """Train ``model`` on ``(x, y)``; returns the history (:data:`HISTORY_KEYS`).

    Parameters
    ----------
    model : Sequential (a :class:`~.network.MnistNet` is one)
    x, y : samples as the model's input layer takes them, and labels 0..classes-1
    mode : "float", "behavioural" or "chip" (the forward pass; see :mod:`.layers`)
    epochs : epochs in all, 0..:data:`MAX_EPOCHS` (a resumed run runs those left)
    optimizer : an :class:`~.optim.Adam` over ``model.parameters()``; default a
        new one at learning rate ``lr`` (weight LSB, > 0)
    batch_size : samples per optimiser step, >= 1
    rng : numpy Generator that shuffles the data (default ``default_rng(0)``)
    accelerator : the :class:`bss2sim.digital.Accelerator` of a hardware mode
        (its fidelity must be ``mode``)
    checkpoint : path of the checkpoint written after every epoch, or None
    resume : with an existing ``checkpoint``, continue from it (default); the
        model, optimiser, ``rng`` and accelerator passed are put into its
        state. False: start afresh and overwrite it
    metadata : JSON-able dict stored in the checkpoint (and required of the one
        resumed from, e.g. ``{"stage": "float training"}``); the key
        ``"history"`` is reserved
    lr_decay : factor on the learning rate after each epoch, in (0, 1]
    augment : ``augment(x, rng) -> x`` applied to the whole training set at the
        start of each epoch (same shape), with ``rng`` =
        ``default_rng([augment_seed, epoch])``; None: the data as given
    augment_seed : seed of the augmentation, 0..2**64-1
    progress : show progress bars on stderr (tqdm): one per epoch, or one for
        all when more than :data:`BAR_PER_EPOCH` epochs are left
    label : what the progress bar calls the run
    x_val, y_val : optional validation set, evaluated after each epoch in ``mode``
    val_batch_size : samples per forward pass of the validation, >= 1

    Everything is checked before the first epoch; a checkpoint of another run
    (other metadata, network configuration, or mode) is refused.
    """
    if not isinstance(model, Sequential):
        raise WrongTypeError(f"model={model!r} is not allowed: must be a Sequential (or MnistNet)")
    check_mode(mode, accelerator)
    epochs = check_int("epochs", epochs, 0, MAX_EPOCHS)
    batch_size = check_int("batch_size", batch_size, 1)
    val_batch_size = check_int("val_batch_size", val_batch_size, 1)
    resume = check_bool("resume", resume)
    progress = check_bool("progress", progress)
    lr_decay = check_real("lr_decay", lr_decay, 0.0, 1.0, lo_open=True)
    augment_seed = check_seed("augment_seed", augment_seed)
    if augment is not None and not callable(augment):
        raise WrongTypeError(f"augment={augment!r} is not allowed: must be a callable(x, rng) or None")
    if not isinstance(label, str):
        raise WrongTypeError(f"label={label!r} must be a string")
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=check_real("lr", lr, 0.0, lo_open=True))
    elif not isinstance(optimizer, Adam):
        raise WrongTypeError(f"optimizer={optimizer!r} is not allowed: must be an Adam or None")
    params = model.parameters()
    if len(optimizer.params) != len(params) or any(p is not q for p, q in zip(optimizer.params, params)):
        raise ValueError("optimizer does not hold this model's parameters: build it with "
                         "Adam(model.parameters(), ...)")
    if rng is None:
        rng = np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise WrongTypeError(f"rng={rng!r} is not allowed: must be a numpy.random.Generator or None")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise WrongTypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    if _RESERVED in metadata:
        raise ValueError(f"metadata key {_RESERVED!r} is reserved for fit's history")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata cannot be stored as JSON: {e}") from None
    path = None if checkpoint is None else as_path("checkpoint", checkpoint)
    x, y = _check_xy(model, x, y, "x")
    if (x_val is None) != (y_val is None):
        raise ValueError("give x_val and y_val together (or neither)")
    if x_val is not None:
        x_val, y_val = _check_xy(model, x_val, y_val, "x_val")

    history = _new_history()
    first = 0
    if path is not None and resume and path.exists():
        ck = load_checkpoint(path, expect_metadata=metadata or None)
        where = f"checkpoint file {str(path)!r}"
        if ck.epoch > epochs:
            raise ValueError(f"{where} holds {ck.epoch} epochs, more than epochs={epochs}: pass "
                             "epochs >= that, another checkpoint path or resume=False")
        if (mode == "float") != (ck.accelerator_state is None):
            was = "float mode" if ck.accelerator_state is None else \
                f"{ck.accelerator_state['fidelity']} mode"
            raise ValueError(f"{where} was written by a run in {was}; this one trains in {mode} mode")
        ck.restore(model, optimizer, rng, accelerator if mode != "float" else None)
        history = _history_from(ck.metadata, ck.epoch, where)
        first = ck.epoch

    n = len(x)
    num_batches = -(-n // batch_size)
    shared = None
    if progress and epochs - first > BAR_PER_EPOCH:
        shared = Progress(f"{label} epochs {first + 1}-{epochs}", (epochs - first) * num_batches,
                          unit="batch")
    try:
        for epoch in range(first, epochs):
            t0 = time.perf_counter()
            xe = x
            if augment is not None:
                xe = np.asarray(augment(x, np.random.default_rng([augment_seed, epoch])))
                if xe.shape != x.shape:
                    raise ValueError(f"augment returned shape {xe.shape}; expected the shape of x, "
                                     f"{x.shape}")
            lr_now = optimizer.lr
            if shared is not None:
                def tick(b, nb, loss, e=epoch + 1):
                    shared.update(1, f"epoch {e}, loss {loss:.3f}")
                stats = model.train_epoch(xe, y, mode, optimizer, batch_size, rng, accelerator=accelerator,
                                          progress=tick)
            elif progress:
                with Progress(f"{label} epoch {epoch + 1}/{epochs}", num_batches, unit="batch") as bar:
                    stats = model.train_epoch(xe, y, mode, optimizer, batch_size, rng,
                                              accelerator=accelerator,
                                              progress=lambda b, nb, loss: bar.update(1, f"loss {loss:.3f}"))
            else:
                stats = model.train_epoch(xe, y, mode, optimizer, batch_size, rng, accelerator=accelerator)
            optimizer.lr *= lr_decay
            val = None if x_val is None else _validate(model, x_val, y_val, mode, accelerator,
                                                       val_batch_size)
            for k, v in zip(HISTORY_KEYS, (epoch + 1, stats["loss"], stats["accuracy"], val, lr_now,
                                           time.perf_counter() - t0)):
                history[k].append(v)
            if path is not None:
                save_checkpoint(path, model, optimizer, epoch + 1, rng,
                                metadata={**metadata, _RESERVED: history},
                                accelerator=accelerator if mode != "float" else None)
    finally:
        if shared is not None:
            shared.__exit__(None, None, None)
    return history
