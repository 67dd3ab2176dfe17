"""The shipped MNIST network [W20][SW] as a torch module.

Pixels 0..255 -> :class:`~.nn.InputScale` (``31 / 255``, round half to even:
the numpy stack's ``quantise_images``) -> :class:`~.nn.Conv2d` 1 -> 20
channels, 10 x 10 kernel, stride 5, padding 1 (500 features) ->
:class:`~.nn.ConvertingReLU` -> :class:`~.nn.Linear` 500 -> 128 ->
converting ReLU -> :class:`~.nn.Linear` 128 -> 10 -> logits (int8 output LSB
on an accelerator). No biases: the chip has none. The three multiply-
accumulate layers draw their noise from streams 1, 2 and 3, as in
:class:`bss2sim.experiments.training.MnistNet`.

:meth:`TorchMnistNet.from_numpy` and :meth:`TorchMnistNet.to_numpy` convert
to and from the numpy network; with the same accelerator state both give the
same logits and weight gradients bit for bit (float64).
"""
from __future__ import annotations

import numpy as np
import torch

from bss2sim.circuits.checks import WrongTypeError, check_int, short_repr
from bss2sim.experiments.training import MnistNet
from bss2sim.experiments.training.layers import DEFAULT_GAIN
from bss2sim.experiments.training.network import DEFAULT_TEMPERATURE

from . import functional as tbf
from .nn import Conv2d, ConvertingReLU, InputScale, Linear, clamp_weights, set_accelerator

__all__ = ["TorchMnistNet", "PIXEL_SCALE", "LAYER_STREAMS"]

PIXEL_SCALE = 31 / 255.0
"""Chip input LSB per pixel value: 8-bit pixels to 5-bit inputs."""
LAYER_STREAMS = (1, 2, 3)
"""Noise streams of conv, fc1 and fc2 (MnistNet's; stream 0 stays for plain calls)."""
MAC_NAMES = ("conv", "fc1", "fc2")


class TorchMnistNet(torch.nn.Module):
    """The MNIST network with weights in chip units, as a torch module.

    The constructor takes :class:`bss2sim.experiments.training.MnistNet`'s
    arguments (gain in output LSB per unit of x*w per send, seed of the
    initialisation, num_sends and wait_between_events per layer (FPGA cycles),
    the two shifts, temperature per LSB, relu_quantise, clip_logits) and
    initialises the weights exactly as that network does. ``accelerator``
    sets every layer's (None: software); ``dtype`` is the weights' floating
    dtype (float64 reproduces the numpy stack bit for bit).
    """

    def __init__(self, gain: float = DEFAULT_GAIN, seed: int = 0, num_sends=(None, None, None),
                 wait_between_events=(5, 5, 5), shifts=(1, 1),
                 temperature: float = DEFAULT_TEMPERATURE, relu_quantise: bool = False,
                 clip_logits: bool = True, accelerator=None, dtype=torch.float64):
        super().__init__()
        tbf.check_accelerator(accelerator)
        ref = MnistNet(gain=gain, seed=seed, num_sends=num_sends,
                       wait_between_events=wait_between_events, shifts=shifts,
                       temperature=temperature, relu_quantise=relu_quantise,
                       clip_logits=clip_logits)
        cfg = ref.config()
        self._config = cfg
        ns, waits, g = cfg["num_sends"], cfg["wait_between_events"], cfg["gain"]
        self.input = InputScale(PIXEL_SCALE)
        # The layers get fixed send counts; their initial weights are replaced below.
        self.conv = Conv2d(1, 20, 10, stride=5, padding=1, num_sends=ns[0],
                           wait_between_events=waits[0], gain=g, stream=LAYER_STREAMS[0], dtype=dtype)
        self.relu1 = ConvertingReLU(cfg["shifts"][0], quantise=cfg["relu_quantise"])
        self.fc1 = Linear(500, 128, num_sends=ns[1], wait_between_events=waits[1], gain=g,
                          stream=LAYER_STREAMS[1], dtype=dtype)
        self.relu2 = ConvertingReLU(cfg["shifts"][1], quantise=cfg["relu_quantise"])
        self.fc2 = Linear(128, 10, num_sends=ns[2], wait_between_events=waits[2], gain=g,
                          stream=LAYER_STREAMS[2], dtype=dtype)
        self.load_numpy_state(ref.state_dict())
        set_accelerator(self, accelerator)

    # --- conversion -------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, net: MnistNet, accelerator=None, dtype=torch.float64) -> "TorchMnistNet":
        """The torch module of a numpy :class:`MnistNet`: its configuration and weights."""
        if not isinstance(net, MnistNet):
            raise WrongTypeError(f"net={short_repr(net)} is not allowed: got a "
                                 f"{type(net).__name__}, must be a bss2sim.experiments.training.MnistNet")
        cfg = net.config()
        model = cls(**cfg, accelerator=accelerator, dtype=dtype)
        model.load_numpy_state(net.state_dict())
        return model

    def to_numpy(self) -> MnistNet:
        """A numpy :class:`MnistNet` with this configuration and these weights
        (the numpy network takes only weights in -63..63: call
        :meth:`clamp_weights` first if they may lie outside)."""
        net = MnistNet(**self.config())
        net.load_state_dict(self.numpy_state())
        return net

    def config(self) -> dict:
        """Constructor arguments of the numpy network (JSON-able)."""
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in self._config.items()}

    def numpy_state(self) -> dict:
        """Weights in the numpy stack's layout (``conv.weight`` (20, 1, 10, 10),
        ``fc1.weight`` (500, 128), ``fc2.weight`` (128, 10)), float64 copies."""
        return {"conv.weight": self.conv.weight.detach().cpu().numpy().astype(np.float64),
                "fc1.weight": self.fc1.weight.detach().cpu().numpy().T.astype(np.float64),
                "fc2.weight": self.fc2.weight.detach().cpu().numpy().T.astype(np.float64)}

    @torch.no_grad()
    def load_numpy_state(self, state: dict):
        """Load weights given in the numpy layout (:meth:`MnistNet.state_dict`);
        names and shapes are checked before anything changes."""
        if not isinstance(state, dict):
            raise WrongTypeError(f"state must be a dict, not {type(state).__name__}")
        expected = {"conv.weight": (self.conv, False), "fc1.weight": (self.fc1, True),
                    "fc2.weight": (self.fc2, True)}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"state does not fit TorchMnistNet: missing {missing}, unexpected {extra}")
        arrays = {}
        for name, (layer, transpose) in expected.items():
            a = np.asarray(state[name], dtype=np.float64)
            a = a.T if transpose else a
            if a.shape != tuple(layer.weight.shape):
                raise ValueError(f"state {name} has shape {np.asarray(state[name]).shape}; expected "
                                 f"{tuple(layer.weight.shape)[::-1] if transpose else tuple(layer.weight.shape)}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state {name} contains NaN or infinity")
            arrays[name] = a
        for name, (layer, _) in expected.items():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])))

    # --- configuration ------------------------------------------------------------------
    @property
    def mac_layers(self):
        return (self.conv, self.fc1, self.fc2)

    @property
    def temperature(self) -> float:
        return float(self._config["temperature"])

    @property
    def clip_logits(self) -> bool:
        return bool(self._config["clip_logits"])

    @property
    def gain(self) -> float:
        return float(self._config["gain"])

    @property
    def num_sends(self):
        return tuple(l.num_sends for l in self.mac_layers)

    def set_accelerator(self, accelerator):
        """Every layer's accelerator (None: software); returns the module."""
        set_accelerator(self, accelerator)
        return self

    def clamp_weights(self):
        """Clip the weights to -63..63 (after an optimiser step, as the numpy stack)."""
        clamp_weights(self)

    # --- forward ------------------------------------------------------------------------------
    @staticmethod
    def as_pixels(images) -> torch.Tensor:
        """Images (batch, 28, 28) or (batch, 1, 28, 28) of pixels 0..255 (a tensor
        or an array; integer or float) as a (batch, 1, 28, 28) tensor."""
        t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or tuple(t.shape[1:]) != (1, 28, 28):
            raise ValueError(f"images have shape {tuple(images.shape) if hasattr(images, 'shape') else '?'}; "
                             "expected (batch, 28, 28) or (batch, 1, 28, 28)")
        if t.is_complex() or t.dtype == torch.bool:
            raise WrongTypeError(f"images have dtype {t.dtype}; expected pixels 0..255")
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 255):
            raise ValueError(f"images hold values {float(t.min()):g}..{float(t.max()):g}; "
                             "expected pixels 0..255")
        return t

    def forward(self, images):
        """Logits (batch, 10): float in software, the int8 results (-128..127, as
        floats) on an accelerator."""
        h = self.input(self.as_pixels(images))
        h = self.relu1(self.conv(h))
        h = h.reshape(h.shape[0], self.fc1.in_features)
        h = self.relu2(self.fc1(h))
        return self.fc2(h)

    def loss(self, logits, labels):
        """The numpy stack's loss: softmax cross-entropy of ``temperature * logits``,
        clamped to -128..127 first if ``clip_logits`` (bit for bit)."""
        return tbf.softmax_cross_entropy(logits, labels, self.temperature, self.clip_logits)

    @torch.no_grad()
    def predict(self, images, batch_size: int = 500) -> np.ndarray:
        """Class of each image (argmax of the logits, the first of equal ones), int64."""
        batch_size = check_int("batch_size", batch_size, 1)
        out = [np.argmax(self(images[i:i + batch_size]).cpu().numpy(), axis=1)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def evaluate(self, images, labels, batch_size: int = 500) -> float:
        """Fraction of images classified correctly."""
        labels = np.asarray(labels)
        if len(images) != len(labels) or len(labels) == 0:
            raise ValueError(f"evaluate needs as many labels as images (> 0); got {len(images)} "
                             f"images and {len(labels)} labels")
        return float(np.mean(self.predict(images, batch_size) == labels))

