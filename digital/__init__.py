"""Digital side of the BrainScaleS-2 model: the event interface that sequences
input vectors and the two embedded processors (PPUs). See ``digital/README.md``."""
