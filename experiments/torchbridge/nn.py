"""Modules over :mod:`.functional`, in the manner of the chip group's hxtorch [SW].

Every module holds an optional ``accelerator`` (None: software, the float
model; a behavioural or cycle-level :class:`bss2sim.digital.Accelerator`: the
forward pass runs there), set per module or for a whole model with
:func:`set_accelerator`. Each multiply-accumulate module draws its noise from
its own ``stream`` of the accelerator (default 0), as the numpy layers do:
give every layer of a network a stream of its own, and its results no longer
depend on how batches are cut.

Units: inputs of a multiply-accumulate layer are chip input LSB (0..31 on an
accelerator), weights weight LSB (-63..63 after clipping), outputs int8 output
LSB (-128..127 on an accelerator); ``gain`` is output LSB per unit of x*w per
send; ``wait_between_events`` FPGA cycles of 8 ns.

Weights are initialised as the numpy layers initialise theirs (gain-aware,
normal truncated at two standard deviations, from a ``numpy.random.Generator``;
see :mod:`bss2sim.experiments.training.layers`): the same arguments and
generator give the same weights in both stacks. ``num_sends=None`` picks the
smallest count whose initial spread fits the weight range. The torch layout
is used: :class:`Linear` holds ``(out_features, in_features)``, the transpose
of the numpy layer's ``(in_features, out_features)``.

Weight scaling (hxtorch's ``weight_transform``): the chip gets
``round(clip(weight_scale * W, -63, 63))``; ``weight_scale`` is a number > 0
(default 1) or ``"max"`` (``63 / max|W|``, recomputed at every forward pass,
as hxtorch's ``scale_weight``; treated as a constant by the gradient).
:func:`clamp_weights` (or a module's ``clamp_weights_``) clips the stored
weights to the range the chip can take, as the numpy stack does after every
optimiser step.
"""
from __future__ import annotations

import numpy as np
import torch

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_real, short_repr
from bss2sim.digital.events import check_num_sends, check_wait
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT
from bss2sim.experiments.training import Conv2d as _NumpyConv2d
from bss2sim.experiments.training import Linear as _NumpyLinear

from . import functional as tbf

__all__ = ["ChipModule", "Linear", "Conv1d", "Conv2d", "ConvertingReLU", "InputScale",
           "set_accelerator", "clamp_weights"]


def _check_weight_scale(weight_scale):
    if isinstance(weight_scale, str):
        if weight_scale != "max":
            raise ValueError(f"weight_scale={weight_scale!r} is not allowed: must be a number > 0 "
                             "or 'max'")
        return weight_scale
    return check_real("weight_scale", weight_scale, 0.0, 1e6, "chip weight LSB per unit of W",
                      lo_open=True)


def _check_dtype(dtype):
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise WrongTypeError(f"dtype={short_repr(dtype)} is not allowed: must be a floating "
                             "torch.dtype (float64 reproduces the numpy stack bit for bit)")
    return dtype


class ChipModule(torch.nn.Module):
    """Base of the bridged modules: an optional accelerator and the forward mode."""

    def __init__(self, accelerator=None):
        super().__init__()
        self._accelerator = tbf.check_accelerator(accelerator)

    @property
    def accelerator(self):
        """None (software) or the :class:`bss2sim.digital.Accelerator` the forward pass runs on."""
        return self._accelerator

    @accelerator.setter
    def accelerator(self, acc):
        self._accelerator = tbf.check_accelerator(acc)

    @property
    def mode(self) -> str:
        """``"float"``, ``"behavioural"`` or ``"chip"``, from :attr:`accelerator`."""
        return tbf.mode_of(self._accelerator)


class _MACModule(ChipModule):
    """A multiply-accumulate module: weights, gain, sends, event spacing, stream."""

    @staticmethod
    def _check_arguments(gain, weight_scale, stream, dtype, num_sends, wait_between_events):
        """The arguments every multiply-accumulate module takes, checked before
        anything is built; returns the checked ``(gain, weight_scale, stream)``."""
        gain = tbf.check_gain(gain)
        weight_scale = _check_weight_scale(weight_scale)
        stream = check_int("stream", stream, 0)
        _check_dtype(dtype)
        if num_sends is not None:
            check_num_sends(num_sends)
        check_wait(wait_between_events)
        return gain, weight_scale, stream

    def _setup(self, numpy_layer, weight, weight_scale, stream, accelerator, dtype):
        self.num_sends = int(numpy_layer.num_sends)
        self.wait_between_events = int(numpy_layer.wait_between_events)
        self.gain = float(numpy_layer.gain)
        self.init_std = float(numpy_layer.init_std)
        self.weight_scale = weight_scale
        self.stream = stream
        self.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(weight)).to(dtype))

    @property
    def stream(self) -> int:
        """Noise stream of the accelerator this module draws from (integer >= 0)."""
        return self._stream

    @stream.setter
    def stream(self, s):
        self._stream = check_int("stream", s, 0)

    @property
    def scale(self) -> float:
        """d y / d (x . W): ``gain * num_sends`` (output LSB per unit of x*w)."""
        return self.gain * self.num_sends

    def effective_weight(self):
        """The weights before the chip's clip and rounding: ``weight_scale * W``."""
        if isinstance(self.weight_scale, str):
            top = float(self.weight.detach().abs().max()) if self.weight.numel() else 0.0
            factor = K.WEIGHT_MAX / top if top > 0 else 1.0
            return self.weight * factor
        if self.weight_scale == 1.0:
            return self.weight
        return self.weight * self.weight_scale

    def hardware_weight(self) -> torch.Tensor:
        """The integer weights (int64, module layout) the chip gets:
        ``round(clip(weight_scale * W, -63, 63))``."""
        return torch.from_numpy(tbf.hardware_weights(self.effective_weight()))

    @torch.no_grad()
    def clamp_weights_(self):
        """Clip the stored weights in place so that ``weight_scale * W`` lies in
        -63..63 (a no-op with ``weight_scale="max"``); call after an optimiser step."""
        if isinstance(self.weight_scale, str):
            return
        bound = K.WEIGHT_MAX / self.weight_scale
        self.weight.clamp_(-bound, bound)

    def _common_repr(self):
        return (f"num_sends={self.num_sends}, wait_between_events={self.wait_between_events}, "
                f"gain={self.gain:.6g}, weight_scale={self.weight_scale!r}, stream={self.stream}, "
                f"mode={self.mode}")


class Linear(_MACModule):
    """Dense layer without bias, ``(*, in_features) -> (*, out_features)``, on the chip model.

    Parameters
    ----------
    in_features, out_features : int, 1..2**20 (at most 2**24 weights)
    num_sends : int 1..256, or None (chosen by the gain-aware initialisation)
    wait_between_events : int, FPGA cycles of 8 ns, 1..255 (default 5)
    gain : float, output LSB per unit of x*w per send, 1e-6..1 (default 0.0015,
        *assumed* as in the numpy stack); scales the float forward pass and
        every gradient; give the measured gain of the chip.
    weight_scale : float > 0 or "max" (see the module docstring; default 1)
    rng : numpy.random.Generator of the initialisation (default ``default_rng(0)``)
    input_rms : assumed root mean square of the inputs, 1e-3..31 input LSB (default 8)
    target_std : output spread the initialisation aims at, 1e-3..508 output LSB (default 32)
    accelerator : Accelerator or None (software); stream : int >= 0 (default 0)
    dtype : floating torch dtype of the weights (default float64)

    The weight is ``(out_features, in_features)``; the forward pass is
    :func:`bss2sim.experiments.torchbridge.functional.matmul` with ``W.T``.
    """

    def __init__(self, in_features: int, out_features: int, num_sends=1,
                 wait_between_events: int = 5, *, gain: float = tbf.DEFAULT_GAIN,
                 weight_scale=1.0, rng=None, input_rms: float = 8.0, target_std: float = 32.0,
                 accelerator=None, stream: int = 0, dtype=torch.float64):
        super().__init__(accelerator)
        gain, weight_scale, stream = self._check_arguments(gain, weight_scale, stream, dtype, num_sends,
                                                           wait_between_events)
        ref = _NumpyLinear(in_features, out_features, num_sends, wait_between_events, gain=gain,
                           rng=rng, input_rms=input_rms, target_std=target_std)
        self.in_features, self.out_features = ref.in_features, ref.out_features
        self._setup(ref, ref.weight.T, weight_scale, stream, accelerator, dtype)

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) got input {shape}; "
                             f"expected a tensor (*, {self.in_features})")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = tbf.matmul(x2, self.effective_weight().t(), self.accelerator, self.num_sends,
                       self.wait_between_events, self.stream, self.gain)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._common_repr()


class Conv2d(_MACModule):
    """2-d convolution without bias, ``(batch, in_channels, H, W) -> (batch,
    out_channels, H_out, W_out)``, weights ``(out_channels, in_channels, kH, kW)``
    (as torch and the numpy stack), on the chip model.

    kernel_size, stride (>= 1), padding (zero padding, pixels, >= 0): int or
    pair. The other arguments as for :class:`Linear`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 num_sends=1, wait_between_events: int = 5, *, gain: float = tbf.DEFAULT_GAIN,
                 weight_scale=1.0, rng=None, input_rms: float = 8.0, target_std: float = 32.0,
                 accelerator=None, stream: int = 0, dtype=torch.float64):
        super().__init__(accelerator)
        gain, weight_scale, stream = self._check_arguments(gain, weight_scale, stream, dtype, num_sends,
                                                           wait_between_events)
        kernel_size = tbf.check_pair("kernel_size", kernel_size, 1)
        stride = tbf.check_pair("stride", stride, 1)
        padding = tbf.check_pair("padding", padding, 0)
        ref = _NumpyConv2d(in_channels, out_channels, kernel_size, stride, padding, num_sends,
                           wait_between_events, gain=gain, rng=rng, input_rms=input_rms,
                           target_std=target_std)
        self.in_channels, self.out_channels = ref.in_channels, ref.out_channels
        self.kernel_size, self.stride, self.padding = ref.kernel_size, ref.stride, ref.padding
        self._setup(ref, ref.weight, weight_scale, stream, accelerator, dtype)

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}) got input {shape}; "
                             f"expected a tensor (batch, {self.in_channels}, H, W)")
        return tbf.conv2d(x, self.effective_weight(), self.accelerator, self.stride, self.padding,
                          self.num_sends, self.wait_between_events, self.stream, self.gain)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, " + self._common_repr())


class Conv1d(_MACModule):
    """1-d convolution without bias, ``(batch, in_channels, L) -> (batch,
    out_channels, L_out)``, weights ``(out_channels, in_channels, k)``, on the
    chip model. kernel_size, stride (>= 1), padding (>= 0): ints. The other
    arguments as for :class:`Linear`; the initialisation is that of the numpy
    ``Conv2d`` with a ``(1, k)`` kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, num_sends=1, wait_between_events: int = 5, *,
                 gain: float = tbf.DEFAULT_GAIN, weight_scale=1.0, rng=None,
                 input_rms: float = 8.0, target_std: float = 32.0, accelerator=None,
                 stream: int = 0, dtype=torch.float64):
        super().__init__(accelerator)
        gain, weight_scale, stream = self._check_arguments(gain, weight_scale, stream, dtype, num_sends,
                                                           wait_between_events)
        k = check_int("kernel_size", kernel_size, 1)
        s = check_int("stride", stride, 1)
        p = check_int("padding", padding, 0)
        ref = _NumpyConv2d(in_channels, out_channels, (1, k), (1, s), (0, p), num_sends,
                           wait_between_events, gain=gain, rng=rng, input_rms=input_rms,
                           target_std=target_std)
        self.in_channels, self.out_channels = ref.in_channels, ref.out_channels
        self.kernel_size, self.stride, self.padding = k, s, p
        self._setup(ref, ref.weight[:, :, 0, :], weight_scale, stream, accelerator, dtype)

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Conv1d({self.in_channels}, {self.out_channels}) got input {shape}; "
                             f"expected a tensor (batch, {self.in_channels}, L)")
        return tbf.conv1d(x, self.effective_weight(), self.accelerator, self.stride, self.padding,
                          self.num_sends, self.wait_between_events, self.stream, self.gain)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, " + self._common_repr())


class ConvertingReLU(ChipModule):
    """int8 results (output LSB, -128..127) to 5-bit inputs (0..31) of the next
    layer [W20][SW]: ``min(max(y, 0) >> shift, 31)`` on the accelerator's PPUs;
    in software ``clip(clip(y, 0, 127) / 2**shift, 0, 31)`` (floored with
    ``quantise=True``). Gradient ``1 / 2**shift`` inside the linear range
    ``0 < y < min(127, 31 * 2**shift)``, 0 elsewhere. ``shift``: bits, 0..7
    (default 1, as in the shipped MNIST network)."""

    def __init__(self, shift: int = 1, quantise: bool = False, accelerator=None):
        super().__init__(accelerator)
        self.shift = check_int("shift", shift, 0, CONVERTING_RELU_MAX_SHIFT, "bits")
        self.quantise = check_bool("quantise", quantise)

    def forward(self, y):
        return tbf.converting_relu(y, self.shift, self.accelerator, self.quantise)

    def extra_repr(self):
        return f"shift={self.shift}, quantise={self.quantise}, mode={self.mode}"


class InputScale(torch.nn.Module):
    """Float inputs to chip inputs: ``round(clamp(scale * x, 0, 31))``, with a
    straight-through gradient for the rounding (``scale * grad`` where the
    clamp did not cut, 0 where it did); see
    :func:`bss2sim.experiments.torchbridge.functional.input_scale`.

    scale : chip input LSB per unit of ``x``, a number > 0 (default 31: inputs
    in 0..1 fill the 5-bit range; ``31 / 255`` turns 8-bit pixels into the
    shipped network's inputs, bit for bit as ``quantise_images``), or
    ``"max"`` (``31 / max(x)`` per call, as hxtorch's ``scale_input``).
    round : round half to even (default True).
    """

    def __init__(self, scale=31.0, round: bool = True):
        super().__init__()
        if isinstance(scale, str):
            if scale != "max":
                raise ValueError(f"scale={scale!r} is not allowed: must be a number > 0 or 'max'")
        else:
            scale = check_real("scale", scale, 0.0, None, "chip input LSB per unit of x", lo_open=True)
        self.scale = scale
        self.round = check_bool("round", round)

    def forward(self, x):
        return tbf.input_scale(x, self.scale, self.round)

    def extra_repr(self):
        return f"scale={self.scale!r}, round={self.round}"


def _check_model(model):
    if not isinstance(model, torch.nn.Module):
        raise WrongTypeError(f"model={short_repr(model)} is not allowed: got a "
                             f"{type(model).__name__}, must be a torch.nn.Module")


def set_accelerator(model, accelerator):
    """Give every :class:`ChipModule` in ``model`` (itself included) this
    accelerator (None: software). Returns the number of modules set."""
    _check_model(model)
    tbf.check_accelerator(accelerator)
    n = 0
    for m in model.modules():
        if isinstance(m, ChipModule):
            m.accelerator = accelerator
            n += 1
    return n


def clamp_weights(model):
    """Clip the weights of every multiply-accumulate module of ``model`` to the
    chip's range (see :meth:`Linear.clamp_weights_`); call after each optimiser step."""
    _check_model(model)
    for m in model.modules():
        if isinstance(m, _MACModule):
            m.clamp_weights_()

