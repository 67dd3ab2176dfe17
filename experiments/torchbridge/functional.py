"""Autograd functions whose forward pass runs on a :class:`bss2sim.digital.Accelerator`.

Every multiply-accumulate function takes ``accelerator`` (an ``Accelerator``
of either fidelity, or None) and runs in one of three modes, exactly as the
numpy training stack (:mod:`bss2sim.experiments.training.layers`) does:

* ``accelerator=None`` (software): ``y = gain * num_sends * (x . clip(W, -63, 63))``
  in float64, no noise, no rounding, no saturation.
* a behavioural or cycle-level accelerator: the inputs must be integers 0..31
  (given as a float or integer tensor), the weights are written as
  ``round(clip(W, -63, 63))`` (round half to even), and the result is the
  accelerator's int8 output (-128..127) as a float tensor.

The backward pass is the same in all three modes (hardware in the loop
[W20][SW]): the gradients of the linear model ``y = gain * num_sends * (x . W)``
with the inputs the forward pass saw and the weights it used (clipped in
software; clipped and rounded on the chip, a straight-through estimator of the
rounding and of the clip)::

    grad_x = gain * num_sends * grad_y @ W_used^T
    grad_W = gain * num_sends * x^T @ grad_y

whatever the forward pass returned. ``gain`` is in output LSB per unit of
``x * w`` per send. The converting ReLU passes ``grad / 2**shift`` where its
input lay strictly inside its linear range ``0 < y < min(127, 31 * 2**shift)``
and 0 elsewhere.

The arithmetic of both passes is done in float64 with numpy, in the same
operations and memory layouts as the numpy stack, so the bridge reproduces
its forward results and its gradients bit for bit. Tensors are copied to the
CPU for numpy and the accelerator, and the results go back to the input's
device (tested on the CPU only), in the floating dtype of the inputs and
weights (float64 when both are integers; float64 weights reproduce the numpy
stack, float32 ones lose that). Every argument is checked before anything
runs; a refused call leaves the accelerator untouched.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.autograd import Function
import torch.nn.functional as F

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_real, short_repr
from bss2sim.digital import Accelerator, unfold2d
from bss2sim.digital.accelerator import MAX_PADDING
from bss2sim.digital.events import check_num_sends, check_wait
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT
from bss2sim.experiments.training import softmax_cross_entropy as _np_softmax_cross_entropy
from bss2sim.experiments.training.layers import DEFAULT_GAIN

__all__ = ["DEFAULT_GAIN", "GAIN_RANGE", "matmul", "conv1d", "conv2d", "converting_relu",
           "input_scale", "softmax_cross_entropy", "resolve_gain", "check_gain", "check_pair",
           "check_accelerator",
           "hardware_weights", "float_weights", "mode_of",
           "MatMulFunction", "Conv2dFunction", "ConvertingReLUFunction", "InputScaleFunction",
           "SoftmaxCrossEntropyFunction"]

GAIN_RANGE = (1e-6, 1.0)
"""Allowed gains, output LSB per unit of x*w per send (the numpy layers' bounds;
silicon after calibration: about 0.0012-0.002 [SW]; the bounds are *assumed*:
far beyond them the linear model has no meaning)."""


# --- argument checks -----------------------------------------------------------------
def check_accelerator(accelerator, name="accelerator"):
    """None (software) or a :class:`bss2sim.digital.Accelerator`."""
    if accelerator is not None and not isinstance(accelerator, Accelerator):
        raise WrongTypeError(f"{name}={short_repr(accelerator)} is not allowed: got a "
                             f"{type(accelerator).__name__}, must be a bss2sim.digital.Accelerator "
                             "or None (software)")
    return accelerator


def mode_of(accelerator) -> str:
    """``"float"`` for None, else the accelerator's fidelity (``"behavioural"`` or ``"chip"``)."""
    return "float" if accelerator is None else accelerator.fidelity


def resolve_gain(gain, accelerator=None, name="gain") -> float:
    """The gain of the linear model (LSB per unit of x*w per send): ``gain`` if
    given (1e-6..1), else the behavioural accelerator's gain, else
    :data:`DEFAULT_GAIN` (0.0015, *assumed* as in the numpy stack)."""
    if gain is None:
        if accelerator is not None and accelerator.behavioural is not None:
            return float(accelerator.behavioural.gain)
        return float(DEFAULT_GAIN)
    return check_gain(gain, name)


def check_gain(gain, name="gain") -> float:
    """A gain in :data:`GAIN_RANGE` (output LSB per unit of x*w per send)."""
    unit = "output LSB per unit of x*w per send"
    v = check_real(name, gain, None, None, unit)
    if not GAIN_RANGE[0] <= v <= GAIN_RANGE[1]:
        raise ValueError(f"{name}={gain!r} is not allowed: must be a number in "
                         f"{GAIN_RANGE[0]:g}..{GAIN_RANGE[1]:g} {unit}")
    return v


def _check_tensor(name, t, ndims=None):
    """A real, finite torch tensor (complex, bool and NaN refused)."""
    if not isinstance(t, torch.Tensor):
        raise WrongTypeError(f"{name}={short_repr(t)} is not allowed: got a {type(t).__name__}, "
                             "must be a torch.Tensor")
    if t.is_complex() or t.dtype == torch.bool:
        raise WrongTypeError(f"{name} has dtype {t.dtype}; must be a real (float or integer) tensor")
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    if ndims is not None and t.dim() not in ndims:
        want = " or ".join(f"{n}-d" for n in ndims)
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected a {want} tensor")
    return t


def _numpy64(t) -> np.ndarray:
    """A C-contiguous float64 copy of a tensor (the numpy stack's layout)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


def _hardware_inputs(name, x) -> np.ndarray:
    """Integer inputs 0..31 as int64; non-integer floats and values out of range
    are refused naming ``name``, the first bad value and its index."""
    a = x.detach().cpu().numpy()
    bad = np.zeros(a.shape, bool)
    if a.dtype.kind == "f":
        bad |= np.rint(a) != a
    bad |= (a < 0) | (a > K.INPUT_MAX)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{', '.join(map(str, idx))}]={a[idx].item()!r} is not allowed: on the "
                         f"accelerator the inputs must be integers in 0..{K.INPUT_MAX} "
                         f"({int(bad.sum())} of {a.size} entries are not); scale them first "
                         "(InputScale)")
    return np.rint(a).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)


def float_weights(w) -> np.ndarray:
    """The software mode's weights: ``clip(W, -63, 63)``, float64 (numpy array)."""
    return np.clip(_numpy64(w), -K.WEIGHT_MAX, K.WEIGHT_MAX)


def hardware_weights(w) -> np.ndarray:
    """The weights an accelerator gets: ``round(clip(W, -63, 63))`` (round half
    to even, as :meth:`bss2sim.experiments.training.Linear.hardware_weight`), int64."""
    return np.rint(np.clip(_numpy64(w), -K.WEIGHT_MAX, K.WEIGHT_MAX)).astype(np.int64)


def check_pair(name, v, minimum):
    """An integer or a pair of integers >= minimum (kernel size, stride,
    padding), as a pair; the message shows the value as given."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}={v!r} is not allowed: must be an integer or a pair of "
                             f"integers >= {minimum}")
        return tuple(check_int(f"{name}[{i}]", e, minimum) for i, e in enumerate(v))
    v = check_int(name, v, minimum)
    return v, v


def _result_dtype(*tensors):
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return dt if dt.is_floating_point else torch.float64


def _finish_forward(ctx, x, w, y, scale):
    """Keep what the backward pass needs of the inputs (the scale, dtypes and
    devices) and return the result ``y`` as a tensor of the result dtype on
    ``x``'s device."""
    ctx.scale = scale
    ctx.x_meta = (x.dtype, x.device)
    ctx.w_meta = (w.dtype, w.device)
    dtype = _result_dtype(x, w)
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64)).to(dtype=dtype, device=x.device)


def _check_common(accelerator, num_sends, wait_between_events, stream, gain):
    check_accelerator(accelerator)
    num_sends = check_num_sends(num_sends)
    wait = check_wait(wait_between_events)
    stream = check_int("stream", stream, 0)
    gain = resolve_gain(gain, accelerator)
    return num_sends, wait, stream, gain


# --- matrix product ---------------------------------------------------------------------
class MatMulFunction(Function):
    """``y = x . W`` on the accelerator (or the float model); see the module docstring.
    Arguments are checked by :func:`matmul`; call that instead."""

    @staticmethod
    def forward(ctx, x, w, accelerator, num_sends, wait, stream, gain):
        scale = gain * num_sends
        if accelerator is None:
            xf = _numpy64(x)
            wu = float_weights(w)
            y = (xf @ wu) * scale
        else:
            xi = _hardware_inputs("x", x)
            wi = hardware_weights(w)
            y = accelerator.matmul(xi, wi, num_sends=num_sends, wait_between_events=wait,
                                   stream=stream)
            xf = xi.astype(np.float64)
            wu = wi
        ctx.xf, ctx.w = xf, wu.astype(np.float64)
        return _finish_forward(ctx, x, w, y, scale)

    @staticmethod
    def backward(ctx, grad_y):
        g = _numpy64(grad_y)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.from_numpy((g @ ctx.w.T) * ctx.scale).to(*_meta(ctx.x_meta))
        if ctx.needs_input_grad[1]:
            gw = torch.from_numpy((ctx.xf.T @ g) * ctx.scale).to(*_meta(ctx.w_meta))
        return gx, gw, None, None, None, None, None


def _meta(meta):
    dtype, device = meta
    return (device, dtype if dtype.is_floating_point else torch.float64)


def matmul(x, w, accelerator=None, num_sends=1, wait_between_events=5, stream=0, gain=None):
    """Matrix product ``x . W`` through the chip model, differentiable.

    Parameters
    ----------
    x : tensor (batch, K) or (K,)
        Inputs; on an accelerator integers 0..31 (a float or integer tensor).
    w : tensor (K, N)
        Weights in weight LSB; clipped to -63..63 (and rounded on an accelerator).
    accelerator : Accelerator or None
        Where the forward pass runs: None is the float model
        ``gain * num_sends * x . W``.
    num_sends : int, 1..256
        Repetitions of each vector within one integration.
    wait_between_events : int, FPGA cycles of 8 ns, 1..255 (default 5 = 40 ns).
    stream : int >= 0
        Noise stream of the accelerator (see :meth:`Accelerator.matmul`).
    gain : float or None
        Output LSB per unit of x*w per send of the linear model (1e-6..1): the
        float forward pass and every gradient use it. None: the behavioural
        accelerator's gain, else 0.0015 (*assumed*, the numpy stack's default).

    Returns
    -------
    tensor (batch, N) or (N,): the int8 results (-128..127) as floats on an
    accelerator, ``gain * num_sends * x . clip(W)`` in software.
    """
    _check_tensor("x", x, (1, 2))
    _check_tensor("w", w, (2,))
    num_sends, wait, stream, gain = _check_common(accelerator, num_sends, wait_between_events,
                                                  stream, gain)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[-1]} inputs per vector but w has {w.shape[0]} rows "
                         f"(shapes {tuple(x.shape)} and {tuple(w.shape)}); they must match")
    single = x.dim() == 1
    x2 = x.unsqueeze(0) if single else x
    if accelerator is not None:
        _hardware_inputs("x", x2)           # refused before the accelerator sees anything
    y = MatMulFunction.apply(x2, w, accelerator, num_sends, wait, stream, gain)
    return y.squeeze(0) if single else y


# --- convolutions ---------------------------------------------------------------------
class Conv2dFunction(Function):
    """2-d convolution (no bias) on the accelerator or in float; arguments are
    checked by :func:`conv2d`; call that instead."""

    @staticmethod
    def forward(ctx, x, w, accelerator, stride, padding, num_sends, wait, stream, gain):
        scale = gain * num_sends
        c_out = w.shape[0]
        kernel = tuple(w.shape[2:])
        if accelerator is None:
            xf = _numpy64(x)
            wu = float_weights(w)
            cols, (ho, wo) = unfold2d(xf, kernel, stride, padding)
            y = (cols @ wu.reshape(c_out, -1).T) * scale
            y = y.reshape(x.shape[0], ho, wo, c_out).transpose(0, 3, 1, 2)
        else:
            xi = _hardware_inputs("x", x)
            wu = hardware_weights(w)
            y = accelerator.conv2d(xi, wu, stride=stride, padding=padding, num_sends=num_sends,
                                   wait_between_events=wait, stream=stream)
            cols, _ = unfold2d(xi.astype(np.float64), kernel, stride, padding)
        ctx.cols, ctx.w = cols, wu.astype(np.float64)
        ctx.geometry = (tuple(x.shape), kernel, stride, padding)
        return _finish_forward(ctx, x, w, y, scale)

    @staticmethod
    def backward(ctx, grad_y):
        g = _numpy64(grad_y)
        x_shape, kernel, stride, padding = ctx.geometry
        c_out = ctx.w.shape[0]
        g2 = g.transpose(0, 2, 3, 1).reshape(-1, c_out)
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gw = torch.from_numpy(((g2.T @ ctx.cols) * ctx.scale).reshape(ctx.w.shape))
            gw = gw.to(*_meta(ctx.w_meta))
        if ctx.needs_input_grad[0]:
            gcols = (g2 @ ctx.w.reshape(c_out, -1)) * ctx.scale
            B = x_shape[0]
            ho = (x_shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1
            wo = (x_shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1
            t = torch.from_numpy(gcols.reshape(B, ho * wo, -1).transpose(0, 2, 1).copy())
            # col2im, the adjoint of unfold2d (same (channel, kernel row, kernel column) order).
            gx = F.fold(t, output_size=x_shape[2:], kernel_size=kernel, stride=stride,
                        padding=padding).to(*_meta(ctx.x_meta))
        return gx, gw, None, None, None, None, None, None, None


def _check_conv(x, w, stride, padding, dims):
    nd = dims + 2
    _check_tensor("x", x, (nd,))
    _check_tensor("w", w, (nd,))
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x has {x.shape[1]} input channels but w has {w.shape[1]} "
                         f"(shapes {tuple(x.shape)} and {tuple(w.shape)}); they must match")
    if min(w.shape[2:]) < 1 or w.shape[0] < 1:
        raise ValueError(f"w has shape {tuple(w.shape)}; the kernel needs at least one output "
                         "channel, row and column")
    if dims == 1:
        stride = (1, check_int("stride", stride, 1))
        padding = (0, check_int("padding", padding, 0, MAX_PADDING))
        kernel, spatial = (1, w.shape[2]), (1, x.shape[2])
    else:
        stride = check_pair("stride", stride, 1)
        padding = check_pair("padding", padding, 0)
        if max(padding) > MAX_PADDING:
            raise ValueError(f"padding={padding!r} is not allowed: at most {MAX_PADDING} per side")
        kernel, spatial = tuple(w.shape[2:]), tuple(x.shape[2:])
    for i in range(2):
        if spatial[i] + 2 * padding[i] < kernel[i]:
            raise ValueError(f"the kernel {tuple(w.shape[2:])} is larger than the padded input "
                             f"{tuple(s + 2 * p for s, p in zip(spatial, padding))[2 - dims:]}")
    return stride, padding


def conv2d(x, w, accelerator=None, stride=1, padding=0, num_sends=1, wait_between_events=5,
           stream=0, gain=None):
    """2-d convolution without bias through the chip model, differentiable.

    x : tensor (batch, C_in, H, W), on an accelerator integers 0..31;
    w : tensor (C_out, C_in, kH, kW), weight LSB (clipped to -63..63, rounded on
    an accelerator); stride >= 1 and padding 0..4096 (zero padding, no events):
    int or pair. The other arguments as for :func:`matmul`. Returns
    (batch, C_out, H_out, W_out), ``H_out = (H + 2 padding - kH) // stride + 1``.
    Unfolded (im2col) onto the matrix product as :meth:`Accelerator.conv2d` does.
    """
    stride, padding = _check_conv(x, w, stride, padding, 2)
    num_sends, wait, stream, gain = _check_common(accelerator, num_sends, wait_between_events,
                                                  stream, gain)
    if accelerator is not None:
        _hardware_inputs("x", x)
    return Conv2dFunction.apply(x, w, accelerator, stride, padding, num_sends, wait, stream, gain)


def conv1d(x, w, accelerator=None, stride=1, padding=0, num_sends=1, wait_between_events=5,
           stream=0, gain=None):
    """1-d convolution without bias through the chip model, differentiable.

    x : tensor (batch, C_in, L), on an accelerator integers 0..31; w : tensor
    (C_out, C_in, k); stride >= 1, padding 0..4096 (ints). The other arguments
    as for :func:`matmul`. Returns (batch, C_out, L_out),
    ``L_out = (L + 2 padding - k) // stride + 1``; the same as
    :func:`conv2d` on a height of one, as :meth:`Accelerator.conv1d` runs it.
    """
    stride2, padding2 = _check_conv(x, w, stride, padding, 1)
    num_sends, wait, stream, gain = _check_common(accelerator, num_sends, wait_between_events,
                                                  stream, gain)
    if accelerator is not None:
        _hardware_inputs("x", x)
    y = Conv2dFunction.apply(x.unsqueeze(2), w.unsqueeze(2), accelerator, stride2, padding2,
                             num_sends, wait, stream, gain)
    return y.squeeze(2)


# --- converting ReLU --------------------------------------------------------------------
class ConvertingReLUFunction(Function):
    """int8 result -> 5-bit input of the next layer; see :func:`converting_relu`."""

    @staticmethod
    def forward(ctx, y, shift, quantise, accelerator):
        yf = _numpy64(y)
        if accelerator is None:
            out = np.clip(np.clip(yf, 0, K.OUTPUT_MAX) / 2 ** shift, 0, K.INPUT_MAX)
            if quantise:
                out = np.floor(out)
        else:
            out = accelerator.converting_relu(_int8_outputs("y", y), shift).astype(np.float64)
        ctx.yf, ctx.shift = yf, shift
        ctx.meta = (y.dtype, y.device)
        return torch.from_numpy(np.ascontiguousarray(out)).to(dtype=_result_dtype(y), device=y.device)

    @staticmethod
    def backward(ctx, grad):
        upper = float(min(K.OUTPUT_MAX, K.INPUT_MAX * 2 ** ctx.shift))
        mask = (ctx.yf > 0) & (ctx.yf < upper)
        g = _numpy64(grad) * mask / 2 ** ctx.shift
        return torch.from_numpy(g).to(*_meta(ctx.meta)), None, None, None


def _int8_outputs(name, y) -> np.ndarray:
    a = y.detach().cpu().numpy()
    bad = (a < K.OUTPUT_MIN) | (a > K.OUTPUT_MAX)
    if a.dtype.kind == "f":
        bad |= np.rint(a) != a
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{', '.join(map(str, idx))}]={a[idx].item()!r} is not allowed: on the "
                         f"accelerator the converting ReLU takes integers in {K.OUTPUT_MIN}.."
                         f"{K.OUTPUT_MAX} (the int8 results of a layer)")
    return np.rint(a).astype(np.int64)


def converting_relu(y, shift=1, accelerator=None, quantise=False):
    """int8 results to 5-bit inputs of the next layer [W20][SW], differentiable.

    On an accelerator: ``min(max(y, 0) >> shift, 31)`` on its PPUs (``y``
    integers -128..127). In software: ``clip(clip(y, 0, 127) / 2**shift, 0, 31)``,
    continuous, or floored as on the chip with ``quantise=True``. Backward:
    ``grad / 2**shift`` where ``0 < y < min(127, 31 * 2**shift)``, else 0.
    ``shift``: bits, 0..7."""
    _check_tensor("y", y)
    shift = check_int("shift", shift, 0, CONVERTING_RELU_MAX_SHIFT, "bits")
    quantise = check_bool("quantise", quantise)
    check_accelerator(accelerator)
    if accelerator is not None:
        _int8_outputs("y", y)
    return ConvertingReLUFunction.apply(y, shift, quantise, accelerator)


# --- input scaling ------------------------------------------------------------------------
class InputScaleFunction(Function):
    """``round(clamp(scale * x, 0, 31))`` with a straight-through gradient; see
    :func:`input_scale`."""

    @staticmethod
    def forward(ctx, x, scale, do_round):
        dtype = _result_dtype(x)
        z = x.to(torch.float64) * scale
        inside = (z >= 0) & (z <= K.INPUT_MAX)
        z = z.clamp(0, K.INPUT_MAX)
        if do_round:
            z = torch.round(z)          # half to even, as numpy.rint
        ctx.save_for_backward(inside)
        ctx.scale = scale
        ctx.meta = (x.dtype, x.device)
        return z.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        device, dtype = _meta(ctx.meta)
        return (grad.to(torch.float64) * inside * ctx.scale).to(dtype=dtype, device=device), None, None


def input_scale(x, scale=31.0, round=True):
    """Float inputs to chip inputs: ``round(clamp(scale * x, 0, 31))``.

    scale : float > 0 (chip input LSB per unit of ``x``; default 31: inputs in
    0..1 span the 5-bit range), or ``"max"``: ``31 / max(x)`` of this tensor
    (1 when the maximum is not positive), as hxtorch's ``scale_input``;
    round : round half to even (default True; False leaves the clamped product).
    Gradient (straight-through for the rounding): ``scale * grad`` where
    ``0 <= scale * x <= 31``, 0 where the clamp cut."""
    _check_tensor("x", x)
    do_round = check_bool("round", round)
    if isinstance(scale, str):
        if scale != "max":
            raise ValueError(f"scale={scale!r} is not allowed: must be a number > 0 or 'max'")
        top = float(x.detach().max()) if x.numel() else 0.0
        scale = K.INPUT_MAX / top if top > 0 else 1.0
    else:
        scale = check_real("scale", scale, 0.0, None, "chip input LSB per unit of x", lo_open=True)
    return InputScaleFunction.apply(x, float(scale), do_round)


# --- loss -------------------------------------------------------------------------------------
class SoftmaxCrossEntropyFunction(Function):
    """The numpy stack's loss (:func:`bss2sim.experiments.training.softmax_cross_entropy`)
    as an autograd function; see :func:`softmax_cross_entropy`."""

    @staticmethod
    def forward(ctx, logits, labels, temperature, clip):
        loss, grad = _np_softmax_cross_entropy(_numpy64(logits), labels.detach().cpu().numpy(),
                                               temperature, clip=clip)
        ctx.grad = grad
        ctx.meta = (logits.dtype, logits.device)
        return torch.tensor(loss, dtype=_result_dtype(logits), device=logits.device)

    @staticmethod
    def backward(ctx, grad_loss):
        g = torch.from_numpy(ctx.grad).to(*_meta(ctx.meta))
        return g * grad_loss, None, None, None


def softmax_cross_entropy(logits, labels, temperature=0.1, clip=True):
    """Mean cross-entropy of ``softmax(temperature * logits)`` over the batch,
    bit for bit the numpy stack's loss and gradient
    (``temperature * (softmax - onehot) / batch``).

    logits : tensor (batch, classes), int8-scale (LSB); labels : integer tensor
    (batch,) in 0..classes-1; temperature : float > 0 (1 / LSB; default 0.1);
    clip : clamp the logits to -128..127 first, gradient 0 where clamped
    (default True: the chip's outputs saturate there)."""
    _check_tensor("logits", logits, (2,))
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise WrongTypeError(f"labels has dtype {labels.dtype}; must be an integer tensor")
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected ({logits.shape[0]},) "
                         "to match the logits")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"labels hold {int(labels.min())}..{int(labels.max())}; must be in "
                         f"0..{logits.shape[1] - 1}")
    temperature = check_real("temperature", temperature, 0.0, None, "per LSB", lo_open=True)
    clip = check_bool("clip", clip)
    return SoftmaxCrossEntropyFunction.apply(logits, labels, temperature, clip)

