"""Data sets of the experiments, each a module: :mod:`.mnist` (the IDX files of
MNIST and of data sets in its format, the shipped test set, the chip's 5-bit
input quantisation and the training augmentation) and :mod:`.yinyang` (the
Yin-Yang data set of Kriener, Goeltz and Petrovici 2021, generated from a seed)."""
