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
"""
from __future__ import annotations

import time

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import WrongTypeError, check_bool, check_int, check_seed
from bss2sim.digital.ppu import CONVERTING_RELU_MAX_SHIFT

from ..datasets.mnist import quantise_images
from .layers import (DEFAULT_GAIN, Conv2d, ConvertingReLU, Linear, check_mode,
                     relu_output_rms)

__all__ = ["MnistNet", "DEFAULT_TEMPERATURE", "DEFAULT_LR", "DEFAULT_LR_DECAY",
           "MNIST_INPUT_RMS", "softmax_cross_entropy"]

DEFAULT_TEMPERATURE = 0.1
"""Factor on the int8-scale logits inside the softmax."""
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


def per_layer(name, v, default):
    """One value for every MAC layer, or one per layer (conv, fc1, fc2), as a triple."""
    if v is None:
        v = default
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return (int(v),) * 3
    if not (isinstance(v, (tuple, list)) and len(v) == 3):
        raise ValueError(f"{name}={v!r} must be one value or one per layer (3)")
    return tuple(v)


class MnistNet:
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
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.relu_quantise = bool(relu_quantise)
        self.clip_logits = bool(clip_logits)
        rng = np.random.default_rng(self.seed)
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
        # One noise stream per layer: a layer's noise then depends only on the
        # images before it, never on the batch size (stream 0 stays for plain calls).
        for stream, layer in enumerate(self.mac_layers, start=1):
            layer.noise_stream = stream

    # --- configuration and state -------------------------------------------------
    @property
    def layers(self):
        return (self.conv, self.relu1, self.fc1, self.relu2, self.fc2)

    @property
    def mac_layers(self):
        return (self.conv, self.fc1, self.fc2)

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

    def parameters(self) -> list:
        """The float weight arrays (conv, fc1, fc2), updated in place by an optimiser."""
        return [p for l in self.mac_layers for p in l.parameters()]

    def gradients(self) -> list:
        """Gradients of the last :meth:`backward`, aligned with :meth:`parameters`."""
        return [g for l in self.mac_layers for g in l.gradients()]

    def clamp_weights(self):
        for l in self.mac_layers:
            l.clamp_weights()

    def state_dict(self) -> dict:
        """Copies of the weights by name: ``conv.weight``, ``fc1.weight``, ``fc2.weight``."""
        return {f"{n}.weight": l.weight.copy() for n, l in zip(LAYER_NAMES, self.mac_layers)}

    def load_state_dict(self, state: dict):
        """Load weights from :meth:`state_dict`; names, shapes and the range
        -63..63 are checked before anything is changed."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict, not {type(state).__name__}")
        expected = {f"{n}.weight": l for n, l in zip(LAYER_NAMES, self.mac_layers)}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"state does not fit MnistNet: missing {missing}, unexpected {extra}")
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

    # --- forward and backward ---------------------------------------------------------
    @staticmethod
    def prepare_inputs(images) -> np.ndarray:
        """uint8 images (B, 28, 28) or (B, 1, 28, 28) -> int64 (B, 1, 28, 28) in 0..31."""
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[1:] != (1, 28, 28):
            raise ValueError(f"images have shape {np.shape(images)}; expected (batch, 28, 28)")
        return quantise_images(a)

    def forward(self, images, mode="float", accelerator=None):
        """Logits (B, 10): float in float mode, int in -128..127 in hardware modes."""
        check_mode(mode, accelerator)
        x = self.prepare_inputs(images)
        h = self.conv.forward(x, mode, accelerator)
        h = self.relu1.forward(h, mode, accelerator)
        h = h.reshape(h.shape[0], self.fc1.in_features)
        h = self.fc1.forward(h, mode, accelerator)
        h = self.relu2.forward(h, mode, accelerator)
        return self.fc2.forward(h, mode, accelerator)

    def backward(self, grad):
        """Gradients of all weights from the gradient of the logits (of the last
        :meth:`forward`); see :meth:`gradients`."""
        g = self.fc2.backward(grad)
        g = self.relu2.backward(g)
        g = self.fc1.backward(g)
        g = self.relu1.backward(g.reshape(g.shape[0], 20, 5, 5))
        self.conv.backward(g, need_input_grad=False)
        return self.gradients()

    def loss_and_grad(self, logits, labels):
        """Softmax cross-entropy of ``temperature * logits`` (mean over the batch;
        logits clamped to -128..127 first if ``clip_logits``) and its gradient
        with respect to the logits."""
        return softmax_cross_entropy(logits, labels, self.temperature, clip=self.clip_logits)

    def predict(self, images, mode="float", accelerator=None, batch_size: int = 1000):
        """Class (argmax of the logits; the first of equal ones) of each image."""
        out = []
        for i in range(0, len(images), batch_size):
            out.append(np.argmax(self.forward(images[i:i + batch_size], mode, accelerator), axis=1))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def evaluate(self, images, labels, mode="float", accelerator=None, batch_size: int = 1000) -> float:
        """Fraction of images classified correctly."""
        labels = np.asarray(labels)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("evaluate needs at least one image")
        return float(np.mean(self.predict(images, mode, accelerator, batch_size) == labels))

    def train_epoch(self, images, labels, mode, optimizer, batch_size: int, rng,
                    accelerator=None, progress=None) -> dict:
        """One pass over ``images`` in an order drawn from ``rng``: forward in
        ``mode``, backward through the linear model, one optimiser step per
        batch, weights clipped to -63..63 after each step.

        ``progress(batch_index, num_batches, loss)`` is called after each batch.
        Returns the mean loss, the training accuracy (of the forward passes
        seen during the epoch), the number of batches and the seconds taken.
        """
        check_mode(mode, accelerator)
        labels = np.asarray(labels)
        n = len(images)
        if n != len(labels) or n == 0:
            raise ValueError(f"train_epoch needs as many labels as images (> 0); got {n} and "
                             f"{len(labels)}")
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
        t0 = time.perf_counter()
        order = rng.permutation(n)
        num_batches = -(-n // batch_size)
        total_loss = 0.0
        correct = 0
        for b in range(num_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            logits = self.forward(images[idx], mode, accelerator)
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
