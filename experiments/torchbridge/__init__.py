"""A PyTorch bridge to the chip model, in the manner of the chip group's hxtorch [SW].

Optional: needs the ``torch`` extra (``pip install "bss2sim[torch]"``).

* :mod:`.functional`: autograd functions ``matmul``, ``conv1d``, ``conv2d``,
  ``converting_relu``, ``input_scale`` and the numpy stack's loss, whose forward
  pass runs on a :class:`bss2sim.digital.Accelerator` (cycle level or
  behavioural) or in software, and whose backward pass is the linear model
  scaled by the gain (hardware in the loop);
* :mod:`.nn`: modules ``Linear``, ``Conv1d``, ``Conv2d``, ``ConvertingReLU``,
  ``InputScale``, and ``set_accelerator`` / ``clamp_weights`` for whole models;
* :mod:`.mock`: behavioural (mock) accelerators from ``measure_behaviour``;
* :mod:`.mnist`: ``TorchMnistNet``, the shipped MNIST network as a torch module,
  bit for bit the numpy ``MnistNet``;
* :mod:`.train_mnist`: the three-stage MNIST pipeline in PyTorch
  (``python -m bss2sim.experiments.torchbridge.train_mnist``).

See ``experiments/torchbridge/README.md``.
"""
try:
    import torch  # noqa: F401
except ImportError as err:          # pragma: no cover - depends on the installation
    raise ImportError("bss2sim.experiments.torchbridge needs PyTorch: install the torch extra "
                      "(pip install \"bss2sim[torch]\")") from err

from .functional import conv1d, conv2d, converting_relu, input_scale, matmul, softmax_cross_entropy
from .mnist import TorchMnistNet
from .mock import behavioural_from_measurement, measure_mock_accelerator, mock_parameters
from .nn import ChipModule, ConvertingReLU, Conv1d, Conv2d, InputScale, Linear, clamp_weights, set_accelerator

__all__ = ["ChipModule", "ConvertingReLU", "Conv1d", "Conv2d", "InputScale", "Linear", "TorchMnistNet",
           "behavioural_from_measurement", "clamp_weights", "conv1d", "conv2d", "converting_relu",
           "input_scale", "matmul", "measure_mock_accelerator", "mock_parameters", "set_accelerator",
           "softmax_cross_entropy"]
