"""Layers of networks trained for the chip, with one forward pass in three modes.

Every layer's ``forward(x, mode, accelerator=None)`` runs in one of

* ``"float"``: software. A multiply-accumulate layer computes
  ``y = gain * num_sends * (x . W)`` in float64 with the float ("shadow")
  weights clipped to -63..63: no noise, no rounding, no saturation.
* ``"behavioural"`` / ``"chip"``: the product runs on the
  :class:`bss2sim.digital.Accelerator` passed in (of that fidelity). Inputs must be
  integers 0..31; the weights are written as ``round(clip(W, -63, 63))``;
  outputs are the accelerator's int8 results (-128..127).

The backward pass is the same in all modes (hardware in the loop [W20][SW]):
gradients of the linear model ``y = gain * num_sends * (x . W)`` with the
inputs the forward pass saw and the weights it used (rounded in the hardware
modes: a straight-through estimator of the rounding), whatever the forward
pass returned. The converting ReLU passes ``1 / 2**shift`` of the gradient
where its input lay in its linear range and 0 elsewhere.

Gain-aware initialisation (:func:`gain_aware_std`): for independent zero-mean
weights of standard deviation ``s`` and inputs of root mean square ``r``, the
output ``y = gain * num_sends * sum_i x_i W_i`` over ``fan_in`` inputs has the
standard deviation ``gain * num_sends * sqrt(fan_in) * r * s``. Choosing a
target output spread ``sigma_y`` (LSB of the int8 output) gives::

    s = sigma_y / (gain * num_sends * sqrt(fan_in) * r)

With ``num_sends=None`` a layer takes the smallest ``num_sends`` for which
``s <= 63 / 3`` (three standard deviations fit in the weight range), as the
group's public software does [SW]. Weights are drawn from a normal
distribution truncated at two standard deviations and at -63..63.

Everything random comes from a ``numpy.random.Generator`` the caller passes.
"""
from __future__ import annotations

import abc
import math

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, as_int_array, check_bool, check_int, check_real
from bss2sim.digital import Accelerator, unfold2d
from bss2sim.digital.accelerator import int_pair
from bss2sim.digital.events import MAX_NUM_SENDS
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT

__all__ = ["MODES", "DEFAULT_GAIN", "Layer", "Linear", "Conv2d", "ConvertingReLU",
           "check_mode", "gain_aware_std", "relu_output_rms", "fold2d"]

MODES = ("float", "behavioural", "chip")
"""Forward modes: software, behavioural model of the chip, cycle-level chip."""

DEFAULT_GAIN = 0.0015
"""Gain (output LSB per unit of x*w per send) assumed when none is given: a
calibrated chip lies at about 0.0012-0.002 [SW]."""

MAX_WEIGHT_STD = K.WEIGHT_MAX / 3
"""Largest initial weight spread: three standard deviations within -63..63 [SW]."""


def check_mode(mode, accelerator):
    """Validate a forward mode and its accelerator; returns the mode."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed: use one of {', '.join(MODES)}")
    if mode == "float":
        return mode
    if accelerator is None:
        raise ValueError(f"mode={mode!r} runs on the chip model: pass accelerator=Accelerator(...)")
    if not isinstance(accelerator, Accelerator):
        raise ValueError(f"accelerator={accelerator!r} is not a bss2sim.digital.Accelerator")
    if accelerator.fidelity != mode:
        raise ValueError(f"mode={mode!r} but the accelerator has fidelity {accelerator.fidelity!r}; "
                         "they must agree")
    return mode


_POSITIVE_BOUNDS = {"gain": (1e-6, 1.0), "input_rms": (1e-3, float(K.INPUT_MAX)),
                    "target_std": (1e-3, 4.0 * K.OUTPUT_MAX)}
"""Ranges of the initialisation's numbers: gain in LSB per unit of x*w per send
(silicon: about 0.0015), input and output spreads in LSB (*assumed* bounds: far
beyond them the gain-aware initialisation has no meaning)."""


def _check_positive_float(name, v):
    lo, hi = _POSITIVE_BOUNDS[name]
    v = check_real(name, v, lo, hi)
    return v


def _check_int(name, v, lo, hi):
    return check_int(name, v, lo, hi)


def real_array(name, x, shape=None):
    """``x`` as a finite real array (int, uint, float or bool dtype); ragged lists,
    strings, objects, complex numbers, NaN and infinities are refused naming ``name``."""
    if isinstance(x, (str, bytes)):
        raise WrongTypeError(f"{name} is a {type(x).__name__}; expected an array of numbers")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} is not a regular array ({err})") from None
    if a.dtype.kind not in "iufb":
        raise WrongTypeError(f"{name} has dtype {a.dtype}; expected real numbers")
    if a.dtype.kind == "f" and a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinity")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}; expected {tuple(shape)}")
    return a


def gain_aware_std(gain, num_sends, fan_in, input_rms, target_std):
    """Weight standard deviation that gives outputs of spread ``target_std`` LSB:
    ``target_std / (gain * num_sends * sqrt(fan_in) * input_rms)``."""
    return float(target_std) / (float(gain) * num_sends * math.sqrt(fan_in) * float(input_rms))


def auto_num_sends(gain, fan_in, input_rms, target_std):
    """Smallest ``num_sends`` (1..256) whose gain-aware weight spread is at most 63 / 3."""
    s1 = gain_aware_std(gain, 1, fan_in, input_rms, target_std)
    return int(min(MAX_NUM_SENDS, max(1, math.ceil(s1 / MAX_WEIGHT_STD - 1e-12))))


def relu_output_rms(pre_std, shift):
    """Root mean square of the converting ReLU's output ``clip(y / 2**shift, 0, 31)``
    for ``y ~ N(0, pre_std**2)`` (numerical quadrature); the input spread the
    gain-aware initialisation assumes for the layer after a converting ReLU."""
    y = np.linspace(0.0, 8.0 * pre_std, 20001)
    pdf = np.exp(-0.5 * (y / pre_std) ** 2) / (pre_std * math.sqrt(2 * math.pi))
    out = np.clip(np.clip(y, 0, K.OUTPUT_MAX) / 2 ** shift, 0, K.INPUT_MAX)
    f = out ** 2 * pdf
    return float(math.sqrt(np.sum((f[1:] + f[:-1]) * 0.5 * np.diff(y))))


def _truncated_normal(rng, shape, std):
    """Normal(0, std) truncated at min(2 std, 63) by redrawing; after
    :data:`_REDRAW_ROUNDS` rounds (a spread far beyond the weight range) the
    rest comes from the inverse distribution function, so it always ends."""
    bound = min(2.0 * std, float(K.WEIGHT_MAX))
    w = rng.normal(0.0, std, shape)
    bad = np.abs(w) > bound
    for _ in range(_REDRAW_ROUNDS):
        if not bad.any():
            return w
        w[bad] = rng.normal(0.0, std, int(bad.sum()))
        bad = np.abs(w) > bound
    if bad.any():
        from scipy.special import ndtr, ndtri
        edge = ndtr(bound / std)
        u = rng.uniform(1.0 - edge, edge, int(bad.sum()))
        w[bad] = np.clip(std * ndtri(u), -bound, bound)
    return w


_REDRAW_ROUNDS = 50
"""Redrawing rounds of the truncated normal before the inverse-CDF fallback
(at a 2-sigma cut each round keeps 95 % of what it draws: 50 rounds are never
reached by the gain-aware initialisation)."""
MAX_WEIGHTS = 1 << 24
"""Largest weight count of one layer (16.8 M; *assumed*: 256 chips' worth of
synapse arrays, a bound that keeps a mistaken size from exhausting memory)."""


def fold2d(cols, x_shape, kernel, stride, padding):
    """Adjoint of :func:`bss2sim.digital.unfold2d` (col2im): sums the columns
    ``(batch * H_out * W_out, C * kH * kW)`` back onto an input of ``x_shape``."""
    B, C, H, W = x_shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    ho = (H + 2 * ph - kh) // sh + 1
    wo = (W + 2 * pw - kw) // sw + 1
    c = cols.reshape(B, ho, wo, C, kh, kw)
    xp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += \
                c[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, ph:ph + H, pw:pw + W]


class Layer(abc.ABC):
    """Base of all layers: ``forward``, ``backward``, parameters and their gradients."""

    def parameters(self) -> list:
        return []

    def gradients(self) -> list:
        return []

    @abc.abstractmethod
    def forward(self, x, mode="float", accelerator=None):
        """Output of the layer for input ``x`` in ``mode``."""

    @abc.abstractmethod
    def backward(self, grad, need_input_grad=True):
        """Gradient of the input from the gradient of the output (of the last forward)."""


class _MACLayer(Layer):
    """A multiply-accumulate layer with float shadow weights in -63..63."""

    def __init__(self, weight_shape, fan_in, num_sends, wait_between_events, gain, rng,
                 input_rms, target_std):
        self.gain = _check_positive_float("gain", gain)
        self.fan_in = int(fan_in)
        self.input_rms = _check_positive_float("input_rms", input_rms)
        self.target_std = _check_positive_float("target_std", target_std)
        if num_sends is None:
            num_sends = auto_num_sends(self.gain, self.fan_in, self.input_rms, self.target_std)
        self.num_sends = _check_int("num_sends", num_sends, 1, MAX_NUM_SENDS)
        self.wait_between_events = _check_int("wait_between_events", wait_between_events, 1, 255)
        self.init_std = gain_aware_std(self.gain, self.num_sends, self.fan_in, self.input_rms,
                                       self.target_std)
        if rng is None:
            rng = np.random.default_rng(0)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
        self.weight = _truncated_normal(rng, weight_shape, self.init_std)
        self.grad_weight = np.zeros_like(self.weight)
        self._cache = None
        self.noise_stream = 0
        """Noise stream of the accelerator this layer draws from (see
        :meth:`bss2sim.digital.Accelerator.matmul`): a network gives each layer
        its own, so that its results do not depend on how batches are cut."""

    @property
    def scale(self) -> float:
        """d y / d (x . W): ``gain * num_sends``."""
        return self.gain * self.num_sends

    def parameters(self):
        return [self.weight]

    def gradients(self):
        return [self.grad_weight]

    def clamp_weights(self):
        """Clip the shadow weights to -63..63 in place (after an optimiser step)."""
        np.clip(self.weight, -K.WEIGHT_MAX, K.WEIGHT_MAX, out=self.weight)

    def hardware_weight(self) -> np.ndarray:
        """The integer weights the chip gets: ``round(clip(W, -63, 63))``."""
        return np.rint(np.clip(self.weight, -K.WEIGHT_MAX, K.WEIGHT_MAX)).astype(np.int64)

    def _weight_for(self, mode):
        if mode == "float":
            return np.clip(self.weight, -K.WEIGHT_MAX, K.WEIGHT_MAX)
        return self.hardware_weight()

    @staticmethod
    def _hardware_input(x, what):
        a = np.asarray(x)
        if a.dtype.kind == "f":
            r = np.rint(a)
            if not np.array_equal(r, a):
                raise ValueError(f"{what}: hardware modes need integer inputs 0..{K.INPUT_MAX}; "
                                 "got non-integer floats")
            a = r.astype(np.int64)
        return a


class Linear(_MACLayer):
    """Dense layer ``(batch, in_features) -> (batch, out_features)``, weights
    ``(in_features, out_features)`` as :meth:`bss2sim.digital.Accelerator.matmul` takes them.

    Keyword arguments: ``gain`` (LSB per unit of x*w per send, 1e-6..1,
    default :data:`DEFAULT_GAIN`), ``rng`` (weight initialisation),
    ``input_rms`` (assumed root mean square of the inputs, 1e-3..31 LSB,
    default 8) and ``target_std`` (output spread the initialisation aims at,
    1e-3..508 LSB, default 32); see the module docstring. At most
    :data:`MAX_WEIGHTS` weights.
    """

    def __init__(self, in_features: int, out_features: int, num_sends=1,
                 wait_between_events: int = 5, *, gain: float = DEFAULT_GAIN, rng=None,
                 input_rms: float = 8.0, target_std: float = 32.0):
        self.in_features = _check_int("in_features", in_features, 1, 1 << 20)
        self.out_features = _check_int("out_features", out_features, 1, 1 << 20)
        if self.in_features * self.out_features > MAX_WEIGHTS:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) has "
                             f"{self.in_features * self.out_features} weights; at most {MAX_WEIGHTS}")
        super().__init__((self.in_features, self.out_features), self.in_features, num_sends,
                         wait_between_events, gain, rng, input_rms, target_std)

    def forward(self, x, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        x = real_array("x", x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got input of shape "
                             f"{x.shape}; expected (batch, {self.in_features})")
        w = self._weight_for(mode)
        if mode == "float":
            xf = x.astype(np.float64)
            y = (xf @ w) * self.scale
        else:
            xi = self._hardware_input(x, "Linear input")
            y = accelerator.matmul(xi, w, num_sends=self.num_sends,
                                   wait_between_events=self.wait_between_events,
                                   stream=self.noise_stream)
            xf = xi.astype(np.float64)
        self._cache = (xf, w.astype(np.float64))
        return y

    def backward(self, grad, need_input_grad=True):
        if self._cache is None:
            raise ValueError("Linear.backward called before forward")
        xf, w = self._cache
        g = real_array("grad", grad, (xf.shape[0], self.out_features)).astype(np.float64)
        self.grad_weight[...] = (xf.T @ g) * self.scale
        return (g @ w.T) * self.scale if need_input_grad else None


class Conv2d(_MACLayer):
    """2-d convolution without bias, ``(batch, in_channels, H, W) ->
    (batch, out_channels, H_out, W_out)``, weights ``(out_channels, in_channels,
    kH, kW)``. Hardware modes use :meth:`bss2sim.digital.Accelerator.conv2d`; float mode
    the same im2col (:func:`bss2sim.digital.unfold2d`) and a float product. Keyword
    arguments as for :class:`Linear`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 num_sends=1, wait_between_events: int = 5, *, gain: float = DEFAULT_GAIN,
                 rng=None, input_rms: float = 8.0, target_std: float = 32.0):
        self.in_channels = _check_int("in_channels", in_channels, 1, 1 << 16)
        self.out_channels = _check_int("out_channels", out_channels, 1, 1 << 16)
        self.kernel_size = int_pair("kernel_size", kernel_size, 1)
        self.stride = int_pair("stride", stride, 1)
        self.padding = int_pair("padding", padding, 0)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        if fan_in * self.out_channels > MAX_WEIGHTS:
            raise ValueError(f"Conv2d has {fan_in * self.out_channels} weights; at most {MAX_WEIGHTS}")
        super().__init__((self.out_channels, self.in_channels) + self.kernel_size, fan_in,
                         num_sends, wait_between_events, gain, rng, input_rms, target_std)

    def output_shape(self, h, w):
        kh, kw = self.kernel_size
        return ((h + 2 * self.padding[0] - kh) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - kw) // self.stride[1] + 1)

    def forward(self, x, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        x = real_array("x", x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}) got input of shape "
                             f"{x.shape}; expected (batch, {self.in_channels}, H, W)")
        w = self._weight_for(mode)
        if mode == "float":
            xf = x.astype(np.float64)
            cols, (ho, wo) = unfold2d(xf, self.kernel_size, self.stride, self.padding)
            y = (cols @ w.reshape(self.out_channels, -1).T) * self.scale
            y = y.reshape(x.shape[0], ho, wo, self.out_channels).transpose(0, 3, 1, 2)
        else:
            xi = self._hardware_input(x, "Conv2d input")
            y = accelerator.conv2d(xi, w, stride=self.stride, padding=self.padding,
                                   num_sends=self.num_sends,
                                   wait_between_events=self.wait_between_events,
                                   stream=self.noise_stream)
            cols, _ = unfold2d(xi.astype(np.float64), self.kernel_size, self.stride, self.padding)
        self._cache = (cols, w.astype(np.float64), x.shape)
        return y

    def backward(self, grad, need_input_grad=True):
        if self._cache is None:
            raise ValueError("Conv2d.backward called before forward")
        cols, w, x_shape = self._cache
        g = real_array("grad", grad, (x_shape[0], self.out_channels) + self.output_shape(*x_shape[2:]))
        g = g.astype(np.float64)
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        wm = w.reshape(self.out_channels, -1)
        self.grad_weight[...] = ((g2.T @ cols) * self.scale).reshape(self.weight.shape)
        if not need_input_grad:
            return None
        gcols = (g2 @ wm) * self.scale
        return fold2d(gcols, x_shape, self.kernel_size, self.stride, self.padding)


class ConvertingReLU(Layer):
    """int8 result to 5-bit input of the next layer [W20][SW].

    Hardware modes: ``min(max(y, 0) >> shift, 31)`` on the PPUs
    (:meth:`bss2sim.digital.Accelerator.converting_relu`). Float mode:
    ``clip(clip(y, 0, 127) / 2**shift, 0, 31)``, continuous; with
    ``quantise=True`` floored as on the chip (the backward pass then treats
    the floor as the identity, a straight-through estimator).

    Backward (all modes): ``1 / 2**shift`` where ``0 < y < min(127, 31 * 2**shift)``
    (the continuous function's linear range: neither cut at 0 nor clamped at
    127 or 31), else 0.
    """

    def __init__(self, shift: int = 1, quantise: bool = False):
        self.shift = _check_int("shift", shift, 0, CONVERTING_RELU_MAX_SHIFT)
        self.quantise = check_bool("quantise", quantise)
        self._y = None

    @property
    def upper(self) -> float:
        """Upper end of the linear range of the input."""
        return float(min(K.OUTPUT_MAX, K.INPUT_MAX * 2 ** self.shift))

    def forward(self, y, mode="float", accelerator=None):
        check_mode(mode, accelerator)
        y = real_array("y", y)
        if mode == "float":
            yf = y.astype(np.float64)
            out = np.clip(np.clip(yf, 0, K.OUTPUT_MAX) / 2 ** self.shift, 0, K.INPUT_MAX)
            if self.quantise:
                out = np.floor(out)
        else:
            yf = y.astype(np.float64)
            if y.dtype.kind == "f":
                if not np.array_equal(np.rint(y), y):
                    raise ValueError("y: hardware modes need integer inputs -128..127; got non-integer floats")
                y = np.rint(y).astype(np.int64)
            y = as_int_array("y", y, K.OUTPUT_MIN, K.OUTPUT_MAX)
            out = accelerator.converting_relu(y, self.shift).astype(np.int64)
        self._y = yf
        return out

    def backward(self, grad, need_input_grad=True):
        if self._y is None:
            raise ValueError("ConvertingReLU.backward called before forward")
        mask = (self._y > 0) & (self._y < self.upper)
        return real_array("grad", grad, self._y.shape).astype(np.float64) * mask / 2 ** self.shift


