"""A network as a sequence of layers: :class:`Sequential`.

``Sequential(*layers)`` chains the layers of :mod:`.layers` (:class:`~.layers.Linear`,
:class:`~.layers.Conv2d`, :class:`~.layers.ConvertingReLU`) and three of its own:

* :class:`QuantiseInput` (first layer only): data to chip inputs 0..31 and
  the per-sample shape the next layer takes. Encodings: ``"uint8"`` (grey
  levels 0..255 -> ``round(v / 255 * 31)``, the MNIST quantisation of
  :func:`bss2sim.experiments.datasets.mnist.quantise_images`), ``"unit"``
  (floats in 0..1 -> ``round(v * 31)``), ``"int5"`` (integers 0..31, as
  they are). Rounding is half to even (``numpy.rint``). Float mode sees the
  quantised inputs too, so all three modes get the same numbers.
* :class:`Flatten`: ``(batch, ...)`` -> ``(batch, features)``.
* :class:`Repeat`: ``(batch, F)`` -> ``(batch, times * F)``, the features
  ``times`` over (``[f, f, ..., f]``): each input then drives ``times``
  synapse rows, which averages the rows' fixed-pattern mismatch and lets a
  layer with few inputs reach the output range with fewer sends.

The last layer must be a :class:`~.layers.Linear`: its outputs are the logits
(int8 scale, float in float mode). The multiply-accumulate (MAC) layers draw
their trial-to-trial noise from streams 1, 2, 3, ... in order (stream 0
stays for plain calls to the accelerator), so a layer's noise depends only
on the samples before it, never on how the batches are cut.

The loss is the softmax cross-entropy of ``temperature * logits``
(:func:`softmax_cross_entropy`, logits clamped to -128..127 first when
``clip_logits``); its gradient goes back through the linear model of every
layer (see :mod:`.layers`).

:meth:`Sequential.config` is a JSON-able description (the layers with all
their settings, their names, the loss settings and the initialisation seed)
from which :meth:`Sequential.from_config` builds the same network: the same
layers and, when the network was built by :meth:`from_config` (or with
``seed=`` set and its layers drawn in order from
``numpy.random.default_rng(seed)``), the same initial weights.
"""
from __future__ import annotations

import re
import time

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_real, check_seed
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT

from ..datasets.mnist import quantise_images
from .layers import (DEFAULT_GAIN, Conv2d, ConvertingReLU, Layer, Linear, check_mode, real_array,
                     relu_output_rms)

__all__ = ["Sequential", "QuantiseInput", "Flatten", "Repeat", "ENCODINGS", "DEFAULT_TEMPERATURE",
           "softmax_cross_entropy", "quantise_unit", "dense_network"]

DEFAULT_TEMPERATURE = 0.1
"""Factor on the int8-scale logits inside the softmax (see :mod:`.network`)."""
ENCODINGS = ("uint8", "unit", "int5")
"""Input encodings of :class:`QuantiseInput`."""
MAX_INPUT_DIMS = 4
"""Most dimensions of one sample (channels, height, width and one more; *assumed*:
the layers take at most (channels, height, width))."""
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def softmax_cross_entropy(logits, labels, temperature, clip=False):
    """Mean cross-entropy of ``softmax(temperature * logits)`` and its gradient
    with respect to ``logits``: ``temperature * (softmax - onehot) / batch``.

    With ``clip`` the logits are first clamped to the chip's output range
    -128..127 and the gradient is 0 where they were clamped: the loss then
    never rewards values the chip cannot output."""
    z = np.asarray(logits, np.float64)
    if clip:
        inside = (z >= K.OUTPUT_MIN) & (z <= K.OUTPUT_MAX)
        z = np.clip(z, K.OUTPUT_MIN, K.OUTPUT_MAX)
    z = z * temperature
    labels = np.asarray(labels)
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"logits have shape {z.shape} and labels {labels.shape}; expected "
                         "(batch, classes) and (batch,)")
    if labels.size and (labels.min() < 0 or labels.max() >= z.shape[1]):
        raise ValueError(f"labels must be in 0..{z.shape[1] - 1}")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = z.shape[0]
    idx = np.arange(n)
    loss = float(-logp[idx, labels].mean()) if n else 0.0
    grad = np.exp(logp)
    grad[idx, labels] -= 1.0
    grad *= temperature / max(n, 1)
    if clip:
        grad *= inside
    return loss, grad


def quantise_unit(x, what="inputs") -> np.ndarray:
    """Floats in 0..1 to chip inputs 0..31: ``round(x * 31)`` (half to even), int64."""
    a = real_array(what, x)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} have dtype {a.dtype}; the 'unit' encoding takes floats in 0..1")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"{what} hold values {a.min():.6g}..{a.max():.6g}; the 'unit' encoding "
                         "takes floats in 0..1")
    return np.rint(a.astype(np.float64) * K.INPUT_MAX).astype(np.int64)


def _check_encoding(a, encoding, what):
    """Dtype and range of data of an encoding, without converting it."""
    if encoding == "unit":
        if a.dtype.kind != "f":
            raise ValueError(f"{what} have dtype {a.dtype}; the 'unit' encoding takes floats in 0..1")
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{what} contain NaN or infinity")
        lo, hi = 0.0, 1.0
    else:
        if a.dtype.kind not in "iu":
            top = 255 if encoding == "uint8" else K.INPUT_MAX
            raise ValueError(f"{what} have dtype {a.dtype}; the {encoding!r} encoding takes integers "
                             f"0..{top}")
        lo, hi = 0, 255 if encoding == "uint8" else K.INPUT_MAX
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{what} hold values {a.min():.6g}..{a.max():.6g}; the {encoding!r} encoding "
                         f"takes {lo}..{hi}")


def _quantise(a, encoding, what):
    if encoding == "uint8":
        return quantise_images(a)          # checks dtype and range itself (MNIST's messages)
    if encoding == "unit":
        return quantise_unit(a, what)
    _check_encoding(a, encoding, what)
    return a.astype(np.int64)


class QuantiseInput(Layer):
    """Data to chip inputs 0..31, shaped ``(batch, *shape)``.

    Parameters
    ----------
    shape : tuple of ints
        Shape of one sample as the next layer takes it, 1..4 dimensions of
        1..65536 each, e.g. ``(1, 28, 28)`` before a convolution or ``(4,)``
        before a dense layer. When it starts with a 1 (one channel), samples
        may also come without that dimension (``(batch, 28, 28)``).
    encoding : "uint8", "unit" or "int5" (see the module docstring).
    what : how error messages name the data (default "inputs").

    No parameters; its backward pass is never needed (it comes before the
    first MAC layer).
    """

    def __init__(self, shape, encoding: str = "unit", what: str = "inputs"):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not 1 <= len(shape) <= MAX_INPUT_DIMS:
            raise WrongTypeError(f"shape={shape!r} is not allowed: must be a tuple of 1..{MAX_INPUT_DIMS} "
                                 "integers (one sample's shape)")
        self.shape = tuple(check_int(f"shape[{i}]", s, 1, 1 << 16) for i, s in enumerate(shape))
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding={encoding!r} is not allowed: use one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        if not isinstance(what, str) or not what:
            raise WrongTypeError(f"what={what!r} must be a non-empty string")
        self.what = what

    def expected(self) -> str:
        dims = self.shape[1:] if (self.shape[0] == 1 and len(self.shape) > 1) else self.shape
        return "(batch, " + ", ".join(str(d) for d in dims) + ")"

    def _shaped(self, x, what=None):
        a = np.asarray(x)
        if a.ndim == len(self.shape) and self.shape[0] == 1 and len(self.shape) > 1:
            a = a[:, None]
        if a.ndim != len(self.shape) + 1 or a.shape[1:] != self.shape:
            named = f"{self.what} have" if what is None else f"{what} has"
            raise ValueError(f"{named} shape {np.shape(x)}; expected {self.expected()}")
        return a

    def check(self, x, what=None):
        """Refuse data of another shape, dtype or range (without converting it)."""
        a = self._shaped(x, what)
        _check_encoding(a, self.encoding, what or self.what)

    def forward(self, x, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        return _quantise(self._shaped(x), self.encoding, self.what)

    def backward(self, grad, need_input_grad=True):
        raise ValueError("QuantiseInput has no backward pass: it comes before the first MAC layer")


class Flatten(Layer):
    """``(batch, d1, d2, ...)`` -> ``(batch, d1 * d2 * ...)``; backward reshapes back."""

    def __init__(self):
        self._shape = None

    def forward(self, x, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        a = np.asarray(x)
        if a.ndim < 1:
            raise ValueError("Flatten got a scalar; expected (batch, ...)")
        self._shape = a.shape
        # The feature count from the shape, not -1: an empty batch has no size to infer it from.
        return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))

    def backward(self, grad, need_input_grad=True):
        if self._shape is None:
            raise ValueError("Flatten.backward called before forward")
        g = real_array("grad", grad)
        n = int(np.prod(self._shape[1:], dtype=np.int64))
        if g.shape != (self._shape[0], n):
            raise ValueError(f"grad has shape {g.shape}; expected {(self._shape[0], n)}")
        return g.reshape(self._shape)


class Repeat(Layer):
    """``(batch, F)`` -> ``(batch, times * F)``: the features repeated ``times``
    over, ``[f_1..f_F, f_1..f_F, ...]``; backward sums the copies' gradients.

    times : 1..128 (*assumed* bound: one tile's 128 rows hold at most 128
    copies of one input)."""

    MAX_TIMES = 128

    def __init__(self, times: int):
        self.times = check_int("times", times, 1, self.MAX_TIMES)
        self._shape = None

    def forward(self, x, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        a = np.asarray(x)
        if a.ndim != 2:
            raise ValueError(f"Repeat got input of shape {a.shape}; expected (batch, features)")
        self._shape = a.shape
        return np.tile(a, (1, self.times))

    def backward(self, grad, need_input_grad=True):
        if self._shape is None:
            raise ValueError("Repeat.backward called before forward")
        b, f = self._shape
        g = real_array("grad", grad, (b, f * self.times)).astype(np.float64)
        return g.reshape(b, self.times, f).sum(axis=1)


_MAC = (Linear, Conv2d)
_LAYER_TYPES = {"QuantiseInput": QuantiseInput, "Flatten": Flatten, "Repeat": Repeat, "Linear": Linear,
                "Conv2d": Conv2d, "ConvertingReLU": ConvertingReLU}
_MAC_KEYS = ("num_sends", "wait_between_events", "gain", "input_rms", "target_std")
_LAYER_KEYS = {
    "QuantiseInput": ("shape", "encoding"),
    "Flatten": (),
    "Repeat": ("times",),
    "ConvertingReLU": ("shift", "quantise"),
    "Linear": ("in_features", "out_features") + _MAC_KEYS,
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding") + _MAC_KEYS,
}
_CONFIG_KEYS = ("layers", "names", "temperature", "clip_logits", "seed")


def _layer_config(layer) -> dict:
    kind = type(layer).__name__
    if kind == "QuantiseInput":
        return {"type": kind, "shape": list(layer.shape), "encoding": layer.encoding}
    if kind == "Flatten":
        return {"type": kind}
    if kind == "Repeat":
        return {"type": kind, "times": layer.times}
    if kind == "ConvertingReLU":
        return {"type": kind, "shift": layer.shift, "quantise": layer.quantise}
    mac = {k: getattr(layer, k) for k in _MAC_KEYS}
    if kind == "Linear":
        return {"type": kind, "in_features": layer.in_features, "out_features": layer.out_features, **mac}
    return {"type": kind, "in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "kernel_size": list(layer.kernel_size), "stride": list(layer.stride),
            "padding": list(layer.padding), **mac}


def _build_layer(i, spec, rng):
    where = f"config layers[{i}]"
    if not isinstance(spec, dict) or spec.get("type") not in _LAYER_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise ValueError(f"{where}: type {kind!r} is not allowed: use one of {', '.join(_LAYER_TYPES)}")
    kind = spec["type"]
    keys = set(_LAYER_KEYS[kind])
    got = set(spec) - {"type"}
    if got != keys:
        raise ValueError(f"{where} ({kind}): missing {sorted(keys - got)}, unexpected {sorted(got - keys)}")
    args = {k: spec[k] for k in _LAYER_KEYS[kind]}
    if kind == "QuantiseInput":
        return QuantiseInput(tuple(args["shape"]) if isinstance(args["shape"], list) else args["shape"],
                             args["encoding"])
    if kind == "Flatten":
        return Flatten()
    if kind == "Repeat":
        return Repeat(args["times"])
    if kind == "ConvertingReLU":
        return ConvertingReLU(args["shift"], quantise=args["quantise"])
    for k in ("kernel_size", "stride", "padding"):
        if isinstance(args.get(k), list):
            args[k] = tuple(args[k])
    return _LAYER_TYPES[kind](**args, rng=rng)


def _infer_shapes(layers):
    """Check that consecutive layers fit where the shapes are known (per sample,
    batch left out); ValueError naming the layer otherwise."""
    shape = None
    for i, layer in enumerate(layers):
        name = f"layers[{i}] ({type(layer).__name__})"
        if isinstance(layer, QuantiseInput):
            shape = layer.shape
        elif isinstance(layer, Flatten):
            shape = None if shape is None else (int(np.prod(shape, dtype=np.int64)),)
        elif isinstance(layer, Repeat):
            if shape is not None and len(shape) != 1:
                raise ValueError(f"{name} takes (features,) per sample but gets shape {shape}; put a "
                                 "Flatten before it")
            shape = None if shape is None else (shape[0] * layer.times,)
        elif isinstance(layer, Linear):
            if shape is not None and shape != (layer.in_features,):
                raise ValueError(f"{name} takes {layer.in_features} features per sample but gets "
                                 f"shape {shape}" + ("; put a Flatten before it" if len(shape) > 1 else ""))
            shape = (layer.out_features,)
        elif isinstance(layer, Conv2d):
            if shape is not None:
                if len(shape) != 3 or shape[0] != layer.in_channels:
                    raise ValueError(f"{name} takes ({layer.in_channels}, H, W) per sample but gets "
                                     f"shape {shape}")
                ho, wo = layer.output_shape(shape[1], shape[2])
                if ho < 1 or wo < 1:
                    raise ValueError(f"{name}: its {layer.kernel_size} kernel does not fit the "
                                     f"{shape[1]} x {shape[2]} input (padding {layer.padding})")
                shape = (layer.out_channels, ho, wo)
    return shape


class Sequential:
    """A network of layers applied in order (see the module docstring).

    Parameters
    ----------
    *layers : Layer
        :class:`QuantiseInput` (first only), :class:`Flatten`, :class:`Repeat`,
        :class:`~.layers.Linear`, :class:`~.layers.Conv2d`,
        :class:`~.layers.ConvertingReLU`; at least one MAC layer, the last a
        :class:`~.layers.Linear`. The MAC layers' ``noise_stream`` is set to
        1, 2, 3, ... in order.
    names : one name per layer (letters, digits, ``_``, ``-``; 1..64 characters;
        distinct), default ``"0"``, ``"1"``, ...: a MAC layer's weights are
        ``"<name>.weight"`` in :meth:`state_dict`.
    temperature : factor on the logits in the loss, > 0 (default
        :data:`DEFAULT_TEMPERATURE`).
    clip_logits : clamp the logits to -128..127 in the loss (default True).
    seed : the seed the layers' initial weights were drawn from (one
        ``numpy.random.default_rng(seed)`` in layer order), or None; recorded
        in :meth:`config` so that :meth:`from_config` draws the same weights.
    """

    SAMPLE = "sample"
    """What one row of the data is called in messages."""

    def __init__(self, *layers, names=None, temperature: float = DEFAULT_TEMPERATURE,
                 clip_logits: bool = True, seed=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, tuple(_LAYER_TYPES.values())):
                raise WrongTypeError(f"layers[{i}]={layer!r} is not allowed: use "
                                     f"{', '.join(_LAYER_TYPES)}")
            if isinstance(layer, QuantiseInput) and i != 0:
                raise ValueError(f"layers[{i}] is a QuantiseInput; it may only be the first layer")
        if len({id(l) for l in layers}) != len(layers):
            raise ValueError("a layer object occurs twice in the sequence; give each place its own layer")
        if not isinstance(layers[-1], Linear):
            raise ValueError(f"the last layer is a {type(layers[-1]).__name__}; it must be a Linear "
                             "(its outputs are the logits)")
        if names is None:
            names = [str(i) for i in range(len(layers))]
        if not isinstance(names, (list, tuple)) or len(names) != len(layers):
            raise ValueError(f"names={names!r} must give one name per layer ({len(layers)})")
        for n in names:
            if not isinstance(n, str) or not _NAME.fullmatch(n):
                raise ValueError(f"layer name {n!r} is not allowed: 1..64 letters, digits, '_' or '-'")
        if len(set(names)) != len(names):
            raise ValueError(f"names={list(names)} name a layer twice")
        if isinstance(temperature, (bool, np.bool_)) or not isinstance(
                temperature, (int, float, np.integer, np.floating)) \
                or not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
        self.clip_logits = check_bool("clip_logits", clip_logits)
        self.seed = None if seed is None else check_seed("seed", seed)
        _infer_shapes(layers)
        self.layers = tuple(layers)
        self.names = tuple(names)
        self.temperature = float(temperature)
        for stream, layer in enumerate(self.mac_layers, start=1):
            layer.noise_stream = stream

    # --- structure -------------------------------------------------------------------
    @property
    def mac_layers(self):
        """The multiply-accumulate layers (Linear, Conv2d) in order."""
        return tuple(l for l in self.layers if isinstance(l, _MAC))

    @property
    def mac_names(self):
        return tuple(n for n, l in zip(self.names, self.layers) if isinstance(l, _MAC))

    @property
    def num_classes(self) -> int:
        """Outputs of the last layer (one logit per class)."""
        return self.layers[-1].out_features

    @property
    def input_layer(self):
        """The :class:`QuantiseInput` in front, or None."""
        return self.layers[0] if isinstance(self.layers[0], QuantiseInput) else None

    def spec(self) -> dict:
        """The JSON-able architecture :meth:`from_config` rebuilds the network
        from: layers with their settings, names, loss settings, seed."""
        return {"layers": [_layer_config(l) for l in self.layers], "names": list(self.names),
                "temperature": self.temperature, "clip_logits": self.clip_logits, "seed": self.seed}

    def config(self) -> dict:
        """Everything that rebuilds this network (JSON-able); :meth:`spec` here."""
        return self.spec()

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        """The network :meth:`config` describes; initial weights drawn in layer
        order from ``numpy.random.default_rng(seed)`` (seed 0 when None)."""
        if not isinstance(config, dict):
            raise WrongTypeError(f"config must be a dict, not {type(config).__name__}")
        missing = sorted(set(_CONFIG_KEYS) - set(config))
        extra = sorted(set(config) - set(_CONFIG_KEYS))
        if missing or extra:
            raise ValueError(f"config does not describe a Sequential: missing {missing}, unexpected {extra}")
        specs = config["layers"]
        if not isinstance(specs, list) or not specs:
            raise ValueError("config layers must be a non-empty list")
        seed = config["seed"]
        rng = np.random.default_rng(0 if seed is None else check_seed("config seed", seed))
        layers = [_build_layer(i, s, rng) for i, s in enumerate(specs)]
        return Sequential(*layers, names=config["names"], temperature=config["temperature"],
                          clip_logits=config["clip_logits"], seed=seed)

    def clone(self):
        """A new network of the same configuration with copies of these weights."""
        other = type(self).from_config(self.config())
        other.load_state_dict(self.state_dict())
        return other

    # --- parameters ------------------------------------------------------------------
    def parameters(self) -> list:
        """The float weight arrays of the MAC layers, updated in place by an optimiser."""
        return [p for l in self.mac_layers for p in l.parameters()]

    def gradients(self) -> list:
        """Gradients of the last :meth:`backward`, aligned with :meth:`parameters`."""
        return [g for l in self.mac_layers for g in l.gradients()]

    def clamp_weights(self):
        """Clip every shadow weight to -63..63 in place."""
        for l in self.mac_layers:
            l.clamp_weights()

    def state_dict(self) -> dict:
        """Copies of the weights by name: ``"<layer name>.weight"``."""
        return {f"{n}.weight": l.weight.copy() for n, l in zip(self.mac_names, self.mac_layers)}

    def load_state_dict(self, state: dict):
        """Load weights from :meth:`state_dict`; names, shapes and the range
        -63..63 are checked before anything is changed."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict, not {type(state).__name__}")
        expected = {f"{n}.weight": l for n, l in zip(self.mac_names, self.mac_layers)}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"state does not fit {type(self).__name__}: missing {missing}, "
                             f"unexpected {extra}")
        arrays = {}
        for name, layer in expected.items():
            a = np.asarray(state[name])
            if a.shape != layer.weight.shape:
                raise ValueError(f"state {name} has shape {a.shape}; expected {layer.weight.shape}")
            if a.dtype.kind not in "iuf" or not np.all(np.isfinite(a)) \
                    or np.any(np.abs(a) > K.WEIGHT_MAX):
                raise ValueError(f"state {name} must hold finite numbers in "
                                 f"{-K.WEIGHT_MAX}..{K.WEIGHT_MAX}")
            arrays[name] = a
        for name, layer in expected.items():
            layer.weight[...] = arrays[name]

    # --- forward and backward ----------------------------------------------------------
    def check_data(self, x, y=None, name="x"):
        """Refuse, before any work, data the network cannot take: the input
        layer's shape and encoding (all of ``x`` is checked) and labels ``y``
        (integers 0..classes-1, one per sample). Returns ``len(x)``."""
        a = np.asarray(x)
        if a.ndim < 1:
            raise ValueError(f"{name} is a scalar; expected one row per {self.SAMPLE}")
        if self.input_layer is not None:
            self.input_layer.check(a, name)
        if y is not None:
            labels = np.asarray(y)
            if labels.ndim != 1 or len(labels) != len(a):
                raise ValueError(f"{len(a)} {self.SAMPLE}s but labels of shape {labels.shape}; expected "
                                 f"({len(a)},)")
            if labels.dtype.kind not in "iu":
                raise ValueError(f"labels have dtype {labels.dtype}; expected integers "
                                 f"0..{self.num_classes - 1}")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels hold {labels.min()}..{labels.max()}; the network has "
                                 f"{self.num_classes} classes (0..{self.num_classes - 1})")
        return len(a)

    def forward(self, x, mode="float", accelerator=None):
        """Logits (batch, classes): float in float mode, int in -128..127 in hardware modes."""
        check_mode(mode, accelerator)
        h = x
        for layer in self.layers:
            h = layer.forward(h, mode, accelerator)
        return h

    def backward(self, grad):
        """Gradients of all weights from the gradient of the logits (of the last
        :meth:`forward`); see :meth:`gradients`."""
        first = next(i for i, l in enumerate(self.layers) if isinstance(l, _MAC))
        g = grad
        for i in range(len(self.layers) - 1, first - 1, -1):
            layer = self.layers[i]
            if i == first:
                layer.backward(g, need_input_grad=False)
            else:
                g = layer.backward(g)
        return self.gradients()

    def loss_and_grad(self, logits, labels):
        """Softmax cross-entropy of ``temperature * logits`` (mean over the batch;
        logits clamped to -128..127 first if ``clip_logits``) and its gradient
        with respect to the logits."""
        return softmax_cross_entropy(logits, labels, self.temperature, clip=self.clip_logits)

    def predict(self, x, mode="float", accelerator=None, batch_size: int = 1000):
        """Class (argmax of the logits; the first of equal ones) of each sample."""
        check_int("batch_size", batch_size, 1)
        out = []
        for i in range(0, len(x), batch_size):
            out.append(np.argmax(self.forward(x[i:i + batch_size], mode, accelerator), axis=1))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def evaluate(self, x, labels, mode="float", accelerator=None, batch_size: int = 1000) -> float:
        """Fraction of samples classified correctly."""
        labels = np.asarray(labels)
        if len(x) != len(labels):
            raise ValueError(f"{len(x)} {self.SAMPLE}s but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError(f"evaluate needs at least one {self.SAMPLE}")
        return float(np.mean(self.predict(x, mode, accelerator, batch_size) == labels))

    def train_epoch(self, x, labels, mode, optimizer, batch_size: int, rng,
                    accelerator=None, progress=None) -> dict:
        """One pass over ``x`` in an order drawn from ``rng`` (one permutation):
        forward in ``mode``, backward through the linear model, one optimiser
        step per batch, weights clipped to -63..63 after each step.

        ``progress(batch_index, num_batches, loss)`` is called after each batch.
        Returns the mean loss, the training accuracy (of the forward passes
        seen during the epoch), the number of batches and the seconds taken.
        """
        check_mode(mode, accelerator)
        labels = np.asarray(labels)
        n = len(x)
        if n != len(labels) or n == 0:
            raise ValueError(f"train_epoch needs as many labels as {self.SAMPLE}s (> 0); got {n} and "
                             f"{len(labels)}")
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
        x = np.asarray(x)
        t0 = time.perf_counter()
        order = rng.permutation(n)
        num_batches = -(-n // batch_size)
        total_loss = 0.0
        correct = 0
        for b in range(num_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            logits = self.forward(x[idx], mode, accelerator)
            loss, grad = self.loss_and_grad(logits, labels[idx])
            self.backward(grad)
            optimizer.step(self.gradients())
            self.clamp_weights()
            total_loss += loss * len(idx)
            correct += int(np.sum(np.argmax(logits, axis=1) == labels[idx]))
            if progress is not None:
                progress(b, num_batches, loss)
        return {"loss": total_loss / n, "accuracy": correct / n, "batches": num_batches,
                "wall_time_s": time.perf_counter() - t0}

    def describe(self) -> str:
        """One line: the layers and their sizes."""
        parts = []
        for n, l in zip(self.names, self.layers):
            if isinstance(l, QuantiseInput):
                parts.append(f"input {tuple(l.shape)} ({l.encoding})")
            elif isinstance(l, Linear):
                parts.append(f"{n}: dense {l.in_features} -> {l.out_features} (x{l.num_sends})")
            elif isinstance(l, Conv2d):
                parts.append(f"{n}: conv {l.in_channels} -> {l.out_channels} {l.kernel_size} "
                             f"stride {l.stride} (x{l.num_sends})")
            elif isinstance(l, ConvertingReLU):
                parts.append(f"relu >> {l.shift}")
            elif isinstance(l, Repeat):
                parts.append(f"repeat x{l.times}")
            else:
                parts.append("flatten")
        return ", ".join(parts)


def dense_network(input_shape, hidden, classes, *, encoding="unit", gain: float = DEFAULT_GAIN,
                  seed: int = 0, input_rms=None, repeat: int = 1, num_sends=None, wait_between_events=5, shift: int = 1,
                  hidden_target_std: float = 32.0, output_target_std: float = 32.0,
                  temperature: float = DEFAULT_TEMPERATURE, clip_logits: bool = True) -> Sequential:
    """A dense classifier ``QuantiseInput -> [Flatten] -> [Repeat(repeat)] ->
    Linear(repeat * F, hidden) -> ConvertingReLU(shift) -> Linear(hidden, classes)``
    (``hidden=0``: one Linear(repeat * F, classes)), weights drawn from
    ``default_rng(seed)`` in layer order.

    Parameters
    ----------
    input_shape : shape of one sample (e.g. ``(4,)`` or ``(28, 28)``); F is its size.
    hidden : hidden units, 0..4096 (*assumed* bound: 16 tiles of 256 columns).
    classes : outputs, 2..1024 (*assumed* bound: four tiles of 256 columns).
    encoding : the input encoding (:data:`ENCODINGS`).
    gain : chip gain, LSB per unit of x*w per send.
    repeat : copies of the inputs (:class:`Repeat`; 1: none).
    input_rms : root mean square of the quantised inputs (LSB, 1e-3..31) the
        first layer's gain-aware initialisation assumes; default 16 (*assumed*:
        about that of inputs spread uniformly over 0..31, rms 17.9, rounded down).
    num_sends, wait_between_events : one value or one per MAC layer (None:
        chosen by the gain-aware initialisation).
    shift : the converting ReLU's shift.
    hidden_target_std, output_target_std : initial output spreads, LSB.
    """
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    hidden = check_int("hidden", hidden, 0, 4096)
    classes = check_int("classes", classes, 2, 1024)
    check_int("shift", shift, 0, CONVERTING_RELU_MAX_SHIFT)
    seed = check_seed("seed", seed)
    if input_rms is None:
        input_rms = 16.0
    input_rms = check_real("input_rms", input_rms, 1e-3, float(K.INPUT_MAX))
    n_mac = 2 if hidden else 1
    ns = per_layer("num_sends", num_sends, (None,) * n_mac, n_mac)
    waits = per_layer("wait_between_events", wait_between_events, 5, n_mac)
    rng = np.random.default_rng(seed)
    inp = QuantiseInput(shape, encoding)
    features = int(np.prod(shape, dtype=np.int64))
    layers, names = [inp], ["input"]
    if len(shape) > 1:
        layers.append(Flatten())
        names.append("flatten")
    repeat = check_int("repeat", repeat, 1, Repeat.MAX_TIMES)
    if repeat > 1:
        layers.append(Repeat(repeat))
        names.append("repeat")
        features *= repeat
    if hidden:
        layers += [Linear(features, hidden, num_sends=ns[0], wait_between_events=waits[0], gain=gain,
                          rng=rng, input_rms=input_rms, target_std=hidden_target_std),
                   ConvertingReLU(shift),
                   Linear(hidden, classes, num_sends=ns[1], wait_between_events=waits[1], gain=gain,
                          rng=rng, input_rms=relu_output_rms(hidden_target_std, shift),
                          target_std=output_target_std)]
        names += ["fc1", "relu1", "fc2"]
    else:
        layers.append(Linear(features, classes, num_sends=ns[0], wait_between_events=waits[0], gain=gain,
                             rng=rng, input_rms=input_rms, target_std=output_target_std))
        names.append("fc1")
    return Sequential(*layers, names=names, temperature=temperature, clip_logits=clip_logits, seed=seed)


def per_layer(name, v, default, n: int = 3):
    """One value for every MAC layer, or one per layer (``n`` of them), as a
    tuple; None takes ``default`` (itself one value or ``n``)."""
    if v is None:
        v = default
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return (int(v),) * n
    if not (isinstance(v, (tuple, list)) and len(v) == n):
        raise ValueError(f"{name}={v!r} must be one value or one per MAC layer ({n})")
    return tuple(v)
