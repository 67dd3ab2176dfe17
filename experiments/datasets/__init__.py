"""Data sets of the experiments, each a module: :mod:`.mnist` (the IDX files of
MNIST, the shipped test set, the chip's 5-bit input quantisation and the
training augmentation)."""
