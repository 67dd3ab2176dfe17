"""The MNIST network of Weis et al. 2020 [W20] and the group's public example [SW].

Input 28 x 28 quantised to 0..31 (:func:`bss2sim.experiments.datasets.mnist.quantise_images`)
and zero-padded by 1 -> Conv2d 1 -> 20 channels, 10 x 10 kernel, stride 5
(20 x 5 x 5 = 500 features) -> converting ReLU (shift 1) -> dense 500 -> 128
-> converting ReLU (shift 1) -> dense 128 -> 10 -> argmax. No biases: the chip
has none.

The loss is the softmax cross-entropy of ``temperature * logits``, where the
logits are the last layer's int8-scale outputs (float in float mode). The
temperature sets how large a margin (in LSB) the training asks for: with
``temperature = 0.1`` a margin of 30 LSB between the right class and the next
one costs about ``exp(-3)``; the chip's trial-to-trial noise is about 2 LSB.

:class:`MnistNet` is a :class:`~.sequential.Sequential` of
``QuantiseInput((1, 28, 28), "uint8") -> conv -> relu1 -> Flatten -> fc1 ->
relu2 -> fc2`` whose constructor arguments are those of the network, with
the same weights, noise streams (conv 1, fc1 2, fc2 3) and results as the
class had before it was built on :class:`~.sequential.Sequential`.
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_seed
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT

from ..datasets.mnist import quantise_images
from .layers import DEFAULT_GAIN, Conv2d, ConvertingReLU, Linear, relu_output_rms
from .sequential import (DEFAULT_TEMPERATURE, Flatten, QuantiseInput, Sequential, per_layer,
                         softmax_cross_entropy)

__all__ = ["MnistNet", "DEFAULT_TEMPERATURE", "DEFAULT_LR", "DEFAULT_LR_DECAY",
           "MNIST_INPUT_RMS", "softmax_cross_entropy"]

DEFAULT_LR = 0.5
"""Adam learning rate in weight LSB (weights live in -63..63) for batch size 100."""
DEFAULT_LR_DECAY = 0.75
"""Learning-rate factor per epoch used by the command line."""

MNIST_INPUT_RMS = 10.4
"""Root mean square of the MNIST training pixels quantised to 0..31 (measured:
10.42); the input spread the first layer's gain-aware initialisation assumes."""
HIDDEN_TARGET_STD = 32.0
"""Initial spread of the hidden layers' outputs, LSB: one standard deviation
spans half of the converting ReLU's linear range (0..62 for shift 1)."""
OUTPUT_TARGET_STD = 32.0
"""Initial spread of the logits, LSB."""

LAYER_NAMES = ("conv", "fc1", "fc2")


NET_LAYER_NAMES = ("input", "conv", "relu1", "flatten", "fc1", "relu2", "fc2")
"""Names of MnistNet's layers in order (the MAC layers' are :data:`LAYER_NAMES`)."""


class MnistNet(Sequential):
    """The MNIST network with weights in chip units.

    Parameters
    ----------
    gain : float
        Gain of the chip (output LSB per unit of x*w per send) the network is
        built for: it scales the float forward pass, every gradient and the
        gain-aware initialisation.
    seed : int
        Seed of the weight initialisation.
    num_sends : int, or one per layer (conv, fc1, fc2); None entries choose the
        smallest value whose initial weight spread fits the weight range
        (see :mod:`bss2sim.experiments.training.layers`).
    wait_between_events : int or one per layer (FPGA cycles, default 5).
    shifts : the two converting ReLUs' shifts (default (1, 1)).
    temperature : factor on the logits in the loss (default
        :data:`DEFAULT_TEMPERATURE`).
    relu_quantise : floor the converting ReLU in float mode as on the chip
        (straight-through gradient); default False (continuous).
    clip_logits : clamp the logits to -128..127 in the loss, as the chip's
        outputs saturate (gradient 0 where clamped); default True.
    """

    SAMPLE = "image"

    def __init__(self, gain: float = DEFAULT_GAIN, seed: int = 0, num_sends=(None, None, None),
                 wait_between_events=(5, 5, 5), shifts=(1, 1),
                 temperature: float = DEFAULT_TEMPERATURE, relu_quantise: bool = False,
                 clip_logits: bool = True):
        seed = check_seed("seed", seed)
        if isinstance(temperature, (bool, np.bool_)) or not isinstance(
                temperature, (int, float, np.integer, np.floating)) \
                or not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
        ns = per_layer("num_sends", num_sends, None)
        waits = per_layer("wait_between_events", wait_between_events, 5)
        if not (isinstance(shifts, (tuple, list)) and len(shifts) == 2):
            raise WrongTypeError(f"shifts={shifts!r} must be a pair (one per converting ReLU)")
        for i, s in enumerate(shifts):
            check_int(f"shifts[{i}]", s, 0, CONVERTING_RELU_MAX_SHIFT)
        relu_quantise = check_bool("relu_quantise", relu_quantise)
        clip_logits = check_bool("clip_logits", clip_logits)
        self.relu_quantise = bool(relu_quantise)
        rng = np.random.default_rng(int(seed))
        self.relu1 = ConvertingReLU(shifts[0], quantise=relu_quantise)
        self.relu2 = ConvertingReLU(shifts[1], quantise=relu_quantise)
        self.conv = Conv2d(1, 20, 10, stride=5, padding=1, num_sends=ns[0],
                           wait_between_events=waits[0], gain=gain, rng=rng,
                           input_rms=MNIST_INPUT_RMS, target_std=HIDDEN_TARGET_STD)
        self.fc1 = Linear(500, 128, num_sends=ns[1], wait_between_events=waits[1], gain=gain, rng=rng,
                          input_rms=relu_output_rms(HIDDEN_TARGET_STD, self.relu1.shift),
                          target_std=HIDDEN_TARGET_STD)
        self.fc2 = Linear(128, 10, num_sends=ns[2], wait_between_events=waits[2], gain=gain, rng=rng,
                          input_rms=relu_output_rms(HIDDEN_TARGET_STD, self.relu2.shift),
                          target_std=OUTPUT_TARGET_STD)
        self.gain = self.conv.gain
        # One noise stream per layer (set by Sequential: conv 1, fc1 2, fc2 3): a
        # layer's noise then depends only on the images before it, never on the
        # batch size (stream 0 stays for plain calls).
        super().__init__(QuantiseInput((1, 28, 28), "uint8", what="images"), self.conv, self.relu1,
                         Flatten(), self.fc1, self.relu2, self.fc2, names=NET_LAYER_NAMES,
                         temperature=temperature, clip_logits=clip_logits, seed=int(seed))

    # --- configuration and state -------------------------------------------------
    @property
    def num_sends(self):
        return tuple(l.num_sends for l in self.mac_layers)

    @property
    def wait_between_events(self):
        return tuple(l.wait_between_events for l in self.mac_layers)

    @property
    def shifts(self):
        return (self.relu1.shift, self.relu2.shift)

    def config(self) -> dict:
        """Constructor arguments that rebuild this network (JSON-able)."""
        return {"gain": self.gain, "seed": self.seed, "num_sends": list(self.num_sends),
                "wait_between_events": list(self.wait_between_events), "shifts": list(self.shifts),
                "temperature": self.temperature, "relu_quantise": self.relu_quantise,
                "clip_logits": self.clip_logits}

    @classmethod
    def from_config(cls, config: dict) -> "MnistNet":
        """The network :meth:`config` describes (its constructor arguments)."""
        if not isinstance(config, dict):
            raise WrongTypeError(f"config must be a dict, not {type(config).__name__}")
        return cls(**config)

    # --- inputs -----------------------------------------------------------------------
    @staticmethod
    def prepare_inputs(images) -> np.ndarray:
        """uint8 images (B, 28, 28) or (B, 1, 28, 28) -> int64 (B, 1, 28, 28) in 0..31."""
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[1:] != (1, 28, 28):
            raise ValueError(f"images have shape {np.shape(images)}; expected (batch, 28, 28)")
        return quantise_images(a)
