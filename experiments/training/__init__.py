"""Training networks for the chip model: layers with float, behavioural and
chip forward passes (:mod:`.layers`), Adam (:mod:`.optim`), the MNIST network
(:mod:`.network`) and resumable checkpoints (:mod:`.checkpoint`)."""
from .checkpoint import TrainingCheckpoint, load_checkpoint, save_checkpoint
from .layers import MODES, Conv2d, ConvertingReLU, Linear
from .network import MnistNet, softmax_cross_entropy
from .optim import Adam

__all__ = ["MODES", "Adam", "Conv2d", "ConvertingReLU", "Linear", "MnistNet", "TrainingCheckpoint",
           "load_checkpoint", "save_checkpoint", "softmax_cross_entropy"]
