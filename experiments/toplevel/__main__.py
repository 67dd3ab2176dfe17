"""``python -m bss2sim SUBCOMMAND``: the same command line as ``bss2sim``."""
import sys

from bss2sim.experiments.cli import main

sys.exit(main())
