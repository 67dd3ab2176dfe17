"""Experiments, benchmarks and the ``bss2sim`` command line."""
