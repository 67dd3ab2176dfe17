"""Training checkpoints: one versioned ``.npz`` file, written atomically.

A checkpoint holds everything a stopped run needs to continue bit for bit:
the network's constructor arguments and weights, the optimiser's state, the
number of finished epochs, the state of the ``numpy.random.Generator`` that
shuffles the data, optionally the noise position of the accelerator the
training ran on, and free metadata.

File layout (kind ``"bss2sim-checkpoint"``, ``FORMAT_VERSION`` 1), a checked
archive of :func:`bss2sim.experiments.common.write_archive`, one array per
``.npy`` member:

* ``param.<name>``  float64, one per entry of the network's ``state_dict()``
* ``adam.m.<i>``, ``adam.v.<i>``  float64, Adam's moment estimates, one per
  parameter in the order of ``header["param_names"]``
* ``header``  uint8 (n,): UTF-8 JSON object with ``kind``,
  ``format_version``, ``epoch``, ``network`` (the model, below),
  ``param_names``, ``optimizer`` (``lr``, ``betas``, ``eps``, ``t``), ``rng``
  (the bit generator's ``state`` dictionary, JSON-able), ``accelerator`` (null
  or ``fidelity``, ``noise_seed``, ``noise_state``: next vector id per noise
  stream, keys are the stream numbers as strings), ``metadata`` and
  ``sha256``, the checksum
  (:func:`bss2sim.experiments.common.content_checksum`) over every other
  header field and every array.

The header's ``network`` entry names the model and its configuration:

* an :class:`~.network.MnistNet`: its constructor arguments
  (:meth:`~.network.MnistNet.config`), a JSON object without a ``model``
  key, exactly as every file of this format has held since version 1 (the
  shipped ``mnist_net.npz`` among them);
* a :class:`~.sequential.Sequential`: ``{"model": "Sequential", "config":
  ...}`` with the architecture of :meth:`~.sequential.Sequential.config`.

Sequential networks were added without changing the layout: the arrays,
the header fields and the MnistNet entry are those of version 1, so
``FORMAT_VERSION`` stays 1 and every file written before loads unchanged. A
reader older than this addition refuses a Sequential checkpoint loudly (its
network cannot be rebuilt), never misreads it.

The earlier layout (``magic`` ``"bss2sim-training-checkpoint"``, whose
checksum covered the arrays only) is refused.

Files are written to a temporary file in the same folder, flushed to disk and
renamed over the target, so a reader sees the old file or the complete new
one. Loading refuses anything it cannot vouch for (not a zip, truncated,
another kind or version, checksum mismatch, missing or misshapen arrays, a
header the network, optimiser or generator cannot be rebuilt from) with a
``ValueError`` that names the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common import as_path, read_archive, write_archive
from .network import MnistNet
from .optim import Adam
from .sequential import Sequential

__all__ = ["FORMAT_VERSION", "KIND", "MAGIC", "MODEL_TYPES", "TrainingCheckpoint", "load_checkpoint",
           "model_entry", "save_checkpoint"]

FORMAT_VERSION = 1
"""Version of the file layout this module writes and the only one it reads
(adding Sequential networks kept the layout; see the module docstring)."""
KIND = "bss2sim-checkpoint"
"""Value of the header's ``kind`` field."""
MAGIC = KIND
"""Former name of :data:`KIND`."""
MODEL_TYPES = ("MnistNet", "Sequential")
"""The models a checkpoint holds (``TrainingCheckpoint.model_type``)."""
_FIELDS = ("epoch", "network", "param_names", "optimizer", "rng", "accelerator", "metadata")
_OLD_HINT = "train again (or save the network again with this version of bss2sim)"
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
    # The accelerator draws its trial-to-trial noise from streams keyed by
    # running vector counters; resuming bit-identically needs their positions.
    positions = acc.noise_state()
    return {"fidelity": acc.fidelity, "noise_seed": acc.noise_seed,
            "noise_state": {str(int(s)): int(n) for s, n in sorted(positions.items())}}


def model_entry(network):
    """``(model type, configuration)`` of a network a checkpoint can hold."""
    if isinstance(network, MnistNet):
        return "MnistNet", network.config()
    if isinstance(network, Sequential):
        return "Sequential", network.spec()
    raise ValueError(f"network={network!r} is not allowed: a checkpoint holds a MnistNet or a "
                     "Sequential")


def _network_header(network):
    kind, cfg = model_entry(network)
    cfg = _jsonable(cfg, "network config")
    return cfg if kind == "MnistNet" else {"model": kind, "config": cfg}


def _parse_network_header(entry, where):
    """``(model type, configuration)`` from a header's ``network`` entry."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: network in the header is not a JSON object")
    if "model" not in entry:
        return "MnistNet", entry
    if sorted(entry) != ["config", "model"] or entry["model"] != "Sequential" \
            or not isinstance(entry["config"], dict):
        raise ValueError(f"{where}: network in the header names model {entry.get('model')!r}; "
                         "expected {'model': 'Sequential', 'config': {...}} or MnistNet's "
                         "constructor arguments")
    return "Sequential", entry["config"]


def _build_model(model_type, cfg):
    return MnistNet(**cfg) if model_type == "MnistNet" else Sequential.from_config(cfg)


# --- the loaded file -----------------------------------------------------------------

@dataclass(frozen=True)
class TrainingCheckpoint:
    """A loaded and checked checkpoint."""

    epoch: int
    """Epochs finished when it was written."""
    network_config: dict
    """Configuration of the model: constructor arguments of :class:`MnistNet`,
    or :meth:`Sequential.config`, as ``model_type`` says."""
    network_state: dict = field(repr=False)
    """Weights by name (the network's ``state_dict()``)."""
    optimizer_state: dict = field(repr=False)
    """``Adam.state_dict()``."""
    rng_state: dict = field(repr=False)
    """``bit_generator.state`` of the shuffling generator (JSON-able)."""
    accelerator_state: dict | None
    metadata: dict
    format_version: int
    model_type: str = "MnistNet"
    """``"MnistNet"`` or ``"Sequential"`` (:data:`MODEL_TYPES`)."""

    def make_network(self):
        """The checkpointed network (a :class:`MnistNet` or a :class:`Sequential`)."""
        net = _build_model(self.model_type, self.network_config)
        net.load_state_dict(self.network_state)
        return net

    def make_optimizer(self, network) -> Adam:
        opt = Adam(network.parameters())
        opt.load_state_dict(self.optimizer_state)
        return opt

    def make_rng(self) -> np.random.Generator:
        return _make_rng(self.rng_state, "checkpoint")

    def restore_accelerator(self, accelerator):
        """Move ``accelerator``'s noise counters to where the checkpointed run
        left them. Its fidelity and noise seed must be those of that run."""
        st = self.accelerator_state
        if st is None:
            raise ValueError("the checkpoint holds no accelerator state (the run trained in float mode)")
        cur = _accelerator_state(accelerator)
        for k in ("fidelity", "noise_seed"):
            if cur[k] != st[k]:
                raise ValueError(f"accelerator {k} is {cur[k]!r} but the checkpointed run used "
                                 f"{st[k]!r}")
        positions = {int(s): int(n) for s, n in st["noise_state"].items()}
        accelerator.set_noise_state(positions)

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
        kind, cfg = model_entry(network)
        if kind != self.model_type:
            raise ValueError(f"network is a {kind} but the checkpoint holds a {self.model_type}")
        cfg = json.loads(json.dumps(_jsonable(cfg, "network config")))
        mine = dict(self.network_config)
        if cfg != mine:
            diff = sorted(k for k in set(cfg) | set(mine) if cfg.get(k) != mine.get(k))
            raise ValueError(f"network configuration differs from the checkpoint's in {', '.join(diff)}")
        restored = None
        if rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
            restored = self.make_rng()
            if type(rng.bit_generator) is not type(restored.bit_generator):
                raise ValueError(f"rng uses {type(rng.bit_generator).__name__} but the checkpoint "
                                 f"holds a {type(restored.bit_generator).__name__} state")
        network.load_state_dict(self.network_state)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer_state)
        if restored is not None:
            rng.bit_generator.state = restored.bit_generator.state
        if accelerator is not None:
            self.restore_accelerator(accelerator)


# --- saving -------------------------------------------------------------------------

def save_checkpoint(path, network, optimizer, epoch: int, rng, metadata: dict | None = None,
                    accelerator=None) -> Path:
    """Write a checkpoint atomically and return its path (parent folders are created)."""
    path = as_path("path", path)
    if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch={epoch!r} must be an integer >= 0")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, not {type(metadata).__name__}")
    if not isinstance(optimizer, Adam):
        raise ValueError(f"optimizer={optimizer!r} is not an Adam optimiser")
    model_entry(network)
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
    fields = {
        "epoch": int(epoch), "network": _network_header(network),
        "param_names": names,
        "optimizer": _jsonable({"lr": opt["lr"], "betas": list(opt["betas"]), "eps": opt["eps"],
                                "t": opt["t"]}, "optimizer state"),
        "rng": _rng_state(rng), "accelerator": _accelerator_state(accelerator),
        "metadata": _jsonable(metadata, "metadata"),
    }
    return write_archive(path, KIND, FORMAT_VERSION, fields, arrays)


# --- loading ------------------------------------------------------------------------

def load_checkpoint(path, *, expect_metadata: dict | None = None) -> TrainingCheckpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    ``expect_metadata`` (optional) holds metadata entries the checkpoint must
    have, e.g. ``{"stage": "float training"}``: a valid checkpoint of another
    stage or run renamed over the expected one is then refused too."""
    path = as_path("path", path)
    where = f"checkpoint file {str(path)!r}"
    if expect_metadata is not None and not isinstance(expect_metadata, dict):
        raise ValueError(f"expect_metadata must be a dict, not {type(expect_metadata).__name__}")
    header, arrays = read_archive(path, kind=KIND, format_version=FORMAT_VERSION, fields=_FIELDS,
                                  what="a training checkpoint", where=where, old_hint=_OLD_HINT,
                                  array_names=lambda h: _array_names(h, where))
    _check_header(header, where)
    names = header["param_names"]
    n = len(names)
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
    model_type, network_config = _parse_network_header(header["network"], where)
    ck = TrainingCheckpoint(
        epoch=header["epoch"], network_config=network_config, model_type=model_type,
        network_state={p: arrays[f"param.{p}"] for p in names}, optimizer_state=opt,
        rng_state=header["rng"], accelerator_state=header["accelerator"],
        metadata=header["metadata"], format_version=header["format_version"])
    # Refuse now, naming the file, what could not be rebuilt later.
    _make_rng(header["rng"], where)
    try:
        net = ck.make_network()
        if list(net.state_dict()) != names:
            raise ValueError(f"param_names {names} are not the network's {list(net.state_dict())}")
        ck.make_optimizer(net)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise ValueError(f"{where}: the network or optimiser cannot be rebuilt from it: {e}") from None
    for k, v in (expect_metadata or {}).items():
        if k not in header["metadata"] or header["metadata"][k] != v:
            found = repr(header["metadata"][k]) if k in header["metadata"] else "none"
            raise ValueError(f"{where} has metadata {k}={found}, not {v!r}: it is another "
                             "checkpoint (of another stage or run, renamed or copied over this one?)")
    return ck


def _array_names(header, where) -> set:
    names = header["param_names"]
    if not (isinstance(names, list) and names and all(isinstance(p, str) for p in names)
            and len(set(names)) == len(names)):
        raise ValueError(f"{where}: param_names in the header is not a list of distinct names")
    return {f"param.{p}" for p in names} | {f"adam.{k}.{i}" for k in "mv" for i in range(len(names))}


def _check_header(header, where):
    """Types of the header fields (the checksum already vouches that they are
    as written; this refuses a file written by other code)."""
    e = header["epoch"]
    if isinstance(e, bool) or not isinstance(e, int) or e < 0:
        raise ValueError(f"{where}: epoch {e!r} is not an integer >= 0")
    if not isinstance(header["network"], dict):
        raise ValueError(f"{where}: network in the header is not a JSON object")
    opt = header["optimizer"]
    if not (isinstance(opt, dict) and sorted(opt) == ["betas", "eps", "lr", "t"]
            and isinstance(opt["betas"], list) and len(opt["betas"]) == 2):
        raise ValueError(f"{where}: optimizer in the header is not lr, betas (two), eps and t")
    acc = header["accelerator"]
    if acc is not None and not (isinstance(acc, dict)
                                and sorted(acc) == ["fidelity", "noise_seed", "noise_state"]):
        raise ValueError(f"{where}: accelerator in the header is not fidelity, noise_seed and "
                         "noise_state")
    if acc is not None:
        ns = acc["noise_state"]
        if not (isinstance(ns, dict) and all(
                isinstance(k, str) and k.isdigit() and not isinstance(n, bool) and isinstance(n, int)
                and n >= 0 for k, n in ns.items())):
            raise ValueError(f"{where}: accelerator noise_state {ns!r} is not a map of stream "
                             "numbers to vector ids >= 0")
    if not isinstance(header["metadata"], dict):
        raise ValueError(f"{where}: metadata in the header is not a JSON object")
