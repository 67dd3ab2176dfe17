"""Training checkpoints: one versioned ``.npz`` file, written atomically.

A checkpoint holds everything a stopped run needs to continue bit for bit:
the network's constructor arguments and weights, the optimiser's state, the
number of finished epochs, the state of the ``numpy.random.Generator`` that
shuffles the data, optionally the noise position of the accelerator the
training ran on, and free metadata.

File layout (``FORMAT_VERSION`` 1), one array per ``.npy`` member:

* ``param.<name>``  float64, one per entry of the network's ``state_dict()``
* ``adam.m.<i>``, ``adam.v.<i>``  float64, Adam's moment estimates, one per
  parameter in the order of ``header["param_names"]``
* ``header``  uint8 (n,): UTF-8 JSON object with ``magic``
  (``"bss2sim-training-checkpoint"``), ``format_version``, ``epoch``,
  ``network`` (constructor arguments), ``param_names``, ``optimizer``
  (``lr``, ``betas``, ``eps``, ``t``), ``rng`` (the bit generator's
  ``state`` dictionary, JSON-able), ``accelerator`` (null or ``fidelity``,
  ``noise_seed``, ``next_vector_id``), ``metadata`` and ``sha256``, the
  checksum of all other arrays
  (:func:`bss2sim.experiments.calibration.persistence.settings_checksum`).

Files are written to a temporary file in the same folder, flushed to disk and
renamed over the target, so a reader sees the old file or the complete new
one. Loading refuses anything it cannot vouch for (not a zip, truncated,
wrong magic or version, checksum mismatch, missing or misshapen arrays) with
a ``ValueError`` that names the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..calibration.persistence import settings_checksum
from ..common import atomic_savez, read_npz_arrays
from .network import MnistNet
from .optim import Adam

__all__ = ["FORMAT_VERSION", "MAGIC", "TrainingCheckpoint", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1
"""Version of the file layout this module writes and the only one it reads."""
MAGIC = "bss2sim-training-checkpoint"
HEADER_NAME = "header"
_HEADER_KEYS = ("magic", "format_version", "epoch", "network", "param_names", "optimizer", "rng",
                "accelerator", "metadata", "sha256")
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _jsonable(x, where):
    """Plain JSON types from numpy scalars, arrays, tuples and dicts."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{where} is an array of dtype {x.dtype}, which cannot be stored as JSON")
        x = x.tolist()
    elif isinstance(x, np.generic):
        x = x.item()
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        if not np.isfinite(x):
            raise ValueError(f"{where}={x!r} is not finite and cannot be stored as JSON")
        return x
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has key {k!r}; JSON keys must be strings")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(x)]
    raise ValueError(f"{where} has type {type(x).__name__}, which cannot be stored as JSON")


def _rng_state(rng) -> dict:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
    state = rng.bit_generator.state
    if state.get("bit_generator") not in _BIT_GENERATORS:
        raise ValueError(f"bit generator {state.get('bit_generator')!r} is not supported; use one "
                         f"of {', '.join(_BIT_GENERATORS)}")
    return _jsonable(state, "rng state")


def _make_rng(state: dict, where: str) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"{where}: rng state names bit generator {name!r}; expected one of "
                         f"{', '.join(_BIT_GENERATORS)}")
    state = json.loads(json.dumps(state))
    if name == "MT19937":
        state["state"]["key"] = np.asarray(state["state"]["key"], np.uint32)
    bg = getattr(np.random, name)()
    try:
        bg.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: rng state cannot be restored: {e}") from e
    return np.random.Generator(bg)


def _accelerator_state(acc):
    if acc is None:
        return None
    from bss2sim.digital import Accelerator
    if not isinstance(acc, Accelerator):
        raise ValueError(f"accelerator={acc!r} is not a bss2sim.digital.Accelerator")
    # The accelerator draws its trial-to-trial noise from streams keyed by a
    # running vector counter; resuming bit-identically needs its position.
    return {"fidelity": acc.fidelity, "noise_seed": acc.noise_seed,
            "next_vector_id": int(acc._next_vector_id)}


# --- the loaded file -----------------------------------------------------------------

@dataclass(frozen=True)
class TrainingCheckpoint:
    """A loaded and checked checkpoint."""

    epoch: int
    """Epochs finished when it was written."""
    network_config: dict
    """Constructor arguments of :class:`MnistNet`."""
    network_state: dict = field(repr=False)
    """Weights by name (``MnistNet.state_dict()``)."""
    optimizer_state: dict = field(repr=False)
    """``Adam.state_dict()``."""
    rng_state: dict = field(repr=False)
    """``bit_generator.state`` of the shuffling generator (JSON-able)."""
    accelerator_state: dict | None
    metadata: dict
    format_version: int

    def make_network(self) -> MnistNet:
        net = MnistNet(**self.network_config)
        net.load_state_dict(self.network_state)
        return net

    def make_optimizer(self, network) -> Adam:
        opt = Adam(network.parameters())
        opt.load_state_dict(self.optimizer_state)
        return opt

    def make_rng(self) -> np.random.Generator:
        return _make_rng(self.rng_state, "checkpoint")

    def restore_accelerator(self, accelerator):
        """Move ``accelerator``'s noise counter to where the checkpointed run
        left it. Its fidelity and noise seed must be those of that run."""
        st = self.accelerator_state
        if st is None:
            raise ValueError("the checkpoint holds no accelerator state (the run trained in float mode)")
        cur = _accelerator_state(accelerator)
        for k in ("fidelity", "noise_seed"):
            if cur[k] != st[k]:
                raise ValueError(f"accelerator {k} is {cur[k]!r} but the checkpointed run used "
                                 f"{st[k]!r}")
        accelerator._next_vector_id = int(st["next_vector_id"])

    def build(self, accelerator=None):
        """Fresh ``(network, optimizer, rng)`` in the checkpointed state; with
        ``accelerator`` its noise position is restored too (if the checkpoint has one)."""
        net = self.make_network()
        opt = self.make_optimizer(net)
        rng = self.make_rng()
        if accelerator is not None and self.accelerator_state is not None:
            self.restore_accelerator(accelerator)
        return net, opt, rng

    def restore(self, network, optimizer=None, rng=None, accelerator=None):
        """Load the state into existing objects (a network built with the same
        configuration, its optimiser, the shuffling generator, the accelerator)."""
        cfg = network.config()
        mine = dict(self.network_config)
        if cfg != mine:
            diff = sorted(k for k in set(cfg) | set(mine) if cfg.get(k) != mine.get(k))
            raise ValueError(f"network configuration differs from the checkpoint's in {', '.join(diff)}")
        network.load_state_dict(self.network_state)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer_state)
        if rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
            restored = self.make_rng()
            if type(rng.bit_generator) is not type(restored.bit_generator):
                raise ValueError(f"rng uses {type(rng.bit_generator).__name__} but the checkpoint "
                                 f"holds a {type(restored.bit_generator).__name__} state")
            rng.bit_generator.state = restored.bit_generator.state
        if accelerator is not None:
            self.restore_accelerator(accelerator)


# --- saving -------------------------------------------------------------------------

def save_checkpoint(path, network, optimizer, epoch: int, rng, metadata: dict | None = None,
                    accelerator=None) -> Path:
    """Write a checkpoint atomically and return its path (parent folders are created)."""
    path = Path(path)
    if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch={epoch!r} must be an integer >= 0")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, not {type(metadata).__name__}")
    if not isinstance(optimizer, Adam):
        raise ValueError(f"optimizer={optimizer!r} is not an Adam optimiser")
    state = network.state_dict()
    names = list(state)
    params = network.parameters()
    if len(params) != len(names) or len(optimizer.params) != len(params) \
            or any(p is not q for p, q in zip(optimizer.params, params)):
        raise ValueError("the optimiser does not hold this network's parameters")
    arrays = {f"param.{n}": np.ascontiguousarray(a, np.float64) for n, a in state.items()}
    opt = optimizer.state_dict()
    for i, (m, v) in enumerate(zip(opt["m"], opt["v"])):
        arrays[f"adam.m.{i}"] = np.ascontiguousarray(m, np.float64)
        arrays[f"adam.v.{i}"] = np.ascontiguousarray(v, np.float64)
    header = {
        "magic": MAGIC, "format_version": FORMAT_VERSION, "epoch": int(epoch),
        "network": _jsonable(network.config(), "network config"), "param_names": names,
        "optimizer": {"lr": opt["lr"], "betas": list(opt["betas"]), "eps": opt["eps"], "t": opt["t"]},
        "rng": _rng_state(rng), "accelerator": _accelerator_state(accelerator),
        "metadata": _jsonable(metadata, "metadata"), "sha256": settings_checksum(arrays),
    }
    arrays[HEADER_NAME] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)

    return atomic_savez(path, arrays)


# --- loading ------------------------------------------------------------------------

def load_checkpoint(path) -> TrainingCheckpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    where = f"checkpoint file {str(path)!r}"
    arrays = read_npz_arrays(path, where, HEADER_NAME, "a checkpoint")
    header = _parse_header(arrays.pop(HEADER_NAME), where)

    names = header["param_names"]
    n = len(names)
    expected = {f"param.{p}" for p in names} | {f"adam.{k}.{i}" for k in "mv" for i in range(n)}
    missing = sorted(expected - set(arrays))
    extra = sorted(set(arrays) - expected)
    if missing:
        raise ValueError(f"{where} lacks the array(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{where} has unexpected array(s) {', '.join(extra)}")
    if settings_checksum(arrays) != header["sha256"]:
        raise ValueError(f"{where} is corrupt: the SHA-256 checksum of its arrays does not match "
                         "the header")
    for name, a in arrays.items():
        if a.dtype != np.float64:
            raise ValueError(f"{where}: {name} has dtype {a.dtype}; expected float64")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{where}: {name} holds NaN or infinity")
    for i, p in enumerate(names):
        for k in "mv":
            if arrays[f"adam.{k}.{i}"].shape != arrays[f"param.{p}"].shape:
                raise ValueError(f"{where}: adam.{k}.{i} has shape {arrays[f'adam.{k}.{i}'].shape} "
                                 f"but parameter {p} has {arrays[f'param.{p}'].shape}")
    opt = dict(header["optimizer"])
    opt["m"] = [arrays[f"adam.m.{i}"] for i in range(n)]
    opt["v"] = [arrays[f"adam.v.{i}"] for i in range(n)]
    _make_rng(header["rng"], where)        # refuse a broken generator state now
    return TrainingCheckpoint(
        epoch=header["epoch"], network_config=header["network"],
        network_state={p: arrays[f"param.{p}"] for p in names}, optimizer_state=opt,
        rng_state=header["rng"], accelerator_state=header["accelerator"],
        metadata=header["metadata"], format_version=header["format_version"])


def _parse_header(raw, where) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{where}: the header has dtype {raw.dtype} and shape {raw.shape}; expected "
                         "a 1-d uint8 array of UTF-8 JSON")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: the header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"{where}: the header is a JSON {type(header).__name__}, not an object")
    if header.get("magic") != MAGIC:
        raise ValueError(f"{where} has magic {header.get('magic')!r}, not {MAGIC!r}; it is not a "
                         "training checkpoint")
    v = header.get("format_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: format_version {v!r} is not an integer")
    if v != FORMAT_VERSION:
        raise ValueError(f"{where} has format_version {v}; this code reads only version "
                         f"{FORMAT_VERSION}" + (" (written by newer code: update bss2sim)"
                                                if v > FORMAT_VERSION else ""))
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise ValueError(f"{where}: the header lacks {', '.join(missing)}")
    e = header["epoch"]
    if isinstance(e, bool) or not isinstance(e, int) or e < 0:
        raise ValueError(f"{where}: epoch {e!r} is not an integer >= 0")
    if not isinstance(header["network"], dict):
        raise ValueError(f"{where}: network in the header is not a JSON object")
    names = header["param_names"]
    if not (isinstance(names, list) and names and all(isinstance(p, str) for p in names)
            and len(set(names)) == len(names)):
        raise ValueError(f"{where}: param_names in the header is not a list of distinct names")
    opt = header["optimizer"]
    if not (isinstance(opt, dict) and all(k in opt for k in ("lr", "betas", "eps", "t"))):
        raise ValueError(f"{where}: optimizer in the header lacks lr, betas, eps or t")
    acc = header["accelerator"]
    if acc is not None and not (isinstance(acc, dict)
                                and all(k in acc for k in ("fidelity", "noise_seed", "next_vector_id"))):
        raise ValueError(f"{where}: accelerator in the header is malformed")
    if not isinstance(header["metadata"], dict):
        raise ValueError(f"{where}: metadata in the header is not a JSON object")
    return header
