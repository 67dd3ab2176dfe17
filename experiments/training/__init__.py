"""Training networks for the chip model: layers with float, behavioural and
chip forward passes (:mod:`.layers`), a container of them (:mod:`.sequential`),
one training loop for any data set with checkpoints and resumption
(:mod:`.fit`), Adam (:mod:`.optim`), the MNIST network built with them
(:mod:`.network`) and resumable checkpoints (:mod:`.checkpoint`)."""
from .checkpoint import TrainingCheckpoint, load_checkpoint, save_checkpoint
from .fit import fit
from .layers import MODES, Conv2d, ConvertingReLU, Linear
from .network import MnistNet, softmax_cross_entropy
from .optim import Adam
from .sequential import Flatten, QuantiseInput, Repeat, Sequential, dense_network

__all__ = ["MODES", "Adam", "Conv2d", "ConvertingReLU", "Flatten", "Linear", "MnistNet", "QuantiseInput",
           "Repeat", "Sequential", "TrainingCheckpoint", "dense_network", "fit", "load_checkpoint",
           "save_checkpoint", "softmax_cross_entropy"]
