"""Command line of the BrainScaleS-2 model: ``bss2sim SUBCOMMAND [options]``.

Every subcommand accepts ``--json`` and then prints one JSON object with its
figures as the last line of stdout.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

DEBUG_ENV = "BSS2SIM_DEBUG"
"""Set this environment variable to see the traceback of an internal error."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line on stderr, exit code 2
    (argparse's own error prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(err) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def report_errors(prog: str, work) -> int:
    """Run ``work()`` and turn any failure into one line on stderr and exit code 2.

    Input errors (``ValueError``, ``TypeError``) and file-system errors
    (``OSError``) name what is wrong; anything else is reported as an internal
    error, with the traceback only when the environment variable
    ``BSS2SIM_DEBUG`` is set."""
    try:
        return work()
    except (ValueError, TypeError, OSError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- the command line never ends in a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)} "
              f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2


def check_writable_folder(option: str, folder) -> Path:
    """Refuse, before any work, an output folder that cannot be written: a file
    in the way, a read-only file system, missing permissions. A folder that does
    not exist yet is judged by the nearest existing folder above it, and is not
    created here."""
    path = Path(folder)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{option} {str(folder)!r} cannot be created: {str(probe)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".bss2sim-write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{option} {str(folder)!r} cannot be written ({e.strerror or e})") from None
    return path


def int_at_least(minimum, maximum=None):
    """argparse type: an integer >= minimum (and <= maximum), with a message
    naming the bad value."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{v} is not allowed: must be >= {minimum}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"{v} is not allowed: must be <= {maximum}")
        return v
    return parse


_positive_int = int_at_least(1)


def _seed_list(text):
    """argparse type of ``--validate``: ``N`` (seeds 0..N-1), or comma-separated
    seeds and inclusive ranges ``a-b`` (e.g. ``3,7,20-29``); no seed twice."""
    seed = int_at_least(0, 2**64 - 1)
    if text.strip().isdigit():
        n = int_at_least(1, 100_000)(text)
        return list(range(n))
    seeds = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if sep:
            a, b = seed(lo), seed(hi)
            if b < a or b - a >= 100_000:
                raise argparse.ArgumentTypeError(f"range {part.strip()!r} must be low-high with "
                                                 "low <= high and at most 100000 seeds")
            seeds.extend(range(a, b + 1))
        else:
            seeds.append(seed(lo))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names a seed twice")
    return seeds
_nonneg_int = int_at_least(0)
_seed = int_at_least(0, 2**64 - 1)


OUTPUT_HELP = ("folder for figures (default: {default}; never the repository's plots/, "
               "which --readme-figures regenerates)")
CALIBRATION_HELP = ("calibration of the chip: a calibration file or a folder of them, or 'none' "
                    "(the chip as fabricated); default: the store ($BSS2SIM_CALIBRATIONS, else "
                    "~/.local/share/bss2sim/calibrations), then the shipped one, else calibrate now "
                    "and save into the store")


def build_parser():
    from .common import DEFAULT_OUTPUT_DIR
    out_help = OUTPUT_HELP.format(default=DEFAULT_OUTPUT_DIR)
    p = OneLineParser(prog="bss2sim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    de = sub.add_parser("demo", help="the shipped MNIST network on a simulated chip "
                                     "(writes mnist_*.png)")
    de.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")
    de.add_argument("--images", type=_positive_int, default=None,
                    help="classify only the first N test images (default: all 10,000)")
    de.add_argument("--data-dir", default=None, help="read the test set from this MNIST folder "
                                                     "instead of the shipped copy")
    de.add_argument("--sequence", default="published", choices=["published", "tight"],
                    help="the VMM sequence (default 'published': the chip group's fixed waits; 'tight': "
                         "polling the PPUs, shortest waits)")
    de.add_argument("--no-fault-mapping", action="store_true",
                    help="use every unit, also those the calibration names faulty (default: route "
                         "around them)")

    tn = sub.add_parser("train", help="the training pipeline (MNIST or your own data): calibrate, train "
                                      "in software and noise-aware, fine-tune through the chip, evaluate")
    tn.add_argument("--data-dir", default=None,
                    help="MNIST folder (default: the environment variable BSS2SIM_MNIST_DIR)")
    tn.add_argument("--data", default=None, metavar="PATH|yinyang",
                    help="train on other data instead of MNIST: 'yinyang' (the built-in Yin-Yang data "
                         "set), an .npz file holding x_train, y_train, x_test, y_test (samples: uint8 "
                         "images 0..255, floats in 0..1 or integers 0..31; labels 0..C-1), or a folder "
                         "of IDX files named as MNIST's (any image size and class count)")
    tn.add_argument("--hidden", type=int_at_least(0, 4096), default=128,
                    help="hidden units of the dense network of data other than 28 x 28 images with 10 "
                         "classes (default 128; 0: one dense layer; 0..4096)")
    tn.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")
    tn.add_argument("--out", default="mnist_run", help="folder for checkpoints and results "
                                                       "(default mnist_run, whatever the data)")
    tn.add_argument("--float-epochs", type=_nonneg_int, default=None,
                    help="epochs of float training (default 8 on MNIST; on other data as many "
                         "optimiser steps, at most 100 epochs)")
    tn.add_argument("--noise-epochs", type=_nonneg_int, default=None,
                    help="epochs of noise-aware training with the behavioural model (default 2 on "
                         "MNIST; on other data as many optimiser steps, at most 100 epochs)")
    tn.add_argument("--hil-images", type=_positive_int, default=None,
                    help="training samples for the fine-tuning on the chip (default 10000, or all of "
                         "a smaller training set)")
    tn.add_argument("--hil-epochs", type=_nonneg_int, default=1,
                    help="fine-tuning epochs on each chip (default 1; 0: no fine-tuning)")
    tn.add_argument("--augment-shift", type=_nonneg_int, default=None,
                    help="largest random shift of the training images, pixels (default 2 for images, "
                         "0 for other samples, which take only 0)")
    tn.add_argument("--num-sends", type=_positive_int, nargs="+", metavar="N", default=None,
                    help="sends per vector: one value for every MAC layer or one per layer (MNIST: "
                         "conv fc1 fc2; dense: fc1 fc2); default: chosen by the gain-aware "
                         "initialisation, 1..256")
    tn.add_argument("--wait-between-events", type=_positive_int, nargs="+", metavar="N",
                    default=[5], help="event spacing, FPGA cycles of 8 ns: one value or one per MAC "
                                      "layer (default 5; 1..255)")
    tn.add_argument("--further-seeds", type=_seed, nargs="*", default=[1, 2, 3, 4, 5])
    tn.add_argument("--further-hil-images", type=_positive_int, default=None,
                    help="fine-tuning samples on each further chip (default 10000, or all of a "
                         "smaller training set)")
    tn.add_argument("--test-images", type=_positive_int, default=None,
                    help="evaluate on the first N test samples only (default: all)")
    tn.add_argument("--ship", action="store_true", help="copy the MNIST network and results into the "
                                                         "package (MNIST only)")

    tr = sub.add_parser("traces", help="membrane traces during one VMM (writes membrane_traces.png)")
    tr.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")
    tr.add_argument("--half", type=int, choices=(0, 1), default=0, help="chip half (default 0)")
    tr.add_argument("--columns", default=None, metavar="COLS",
                    help="columns to show and record: indices and ranges such as 3,70,130 or 0-15 "
                         "(0..255, at most 16; default 3,70,130,200)")
    tr.add_argument("--inputs", default=None, metavar="FILE",
                    help="input vectors instead of the two built-in examples: a .npy, .txt or .csv "
                         "file of integers 0..31, shape (vectors, 128), 1..8 vectors (one panel each)")
    tr.add_argument("--weights", default=None, metavar="FILE",
                    help="signed weights of the half instead of random ones: a .npy, .txt or .csv "
                         "file of integers -63..63, shape (128, 256)")
    tr.add_argument("--wait-between-events", type=int_at_least(1, 255), default=None,
                    help="event spacing of --inputs, FPGA cycles of 8 ns (default 5; 1..255)")

    vm = sub.add_parser("vmm", help="characterise a chip's VMMs (writes vmm_*.png)")
    vm.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")
    vm.add_argument("--quick", action="store_true", help="smaller measurements (a quick look)")

    ca = sub.add_parser("calibrate", help="calibrate a chip, save its calibration into the store "
                                          "(writes calibration_*.png)")
    ca.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")
    ca.add_argument("--validate", type=_seed_list, metavar="SEEDS", default=None,
                    help="instead: calibrate these chip seeds and compare with their ground truth "
                         "(writes calibration_validation.png); N means 0..N-1, or a list "
                         "such as 3,7,11 or 20-29 or 0-4,9")

    pp = sub.add_parser("ppu", help="programs on a chip's embedded processor (PPU)")
    ppsub = pp.add_subparsers(dest="ppu_command", required=True)
    pr = ppsub.add_parser("run", help="assemble an assembly file (or load an ELF file), run it on a "
                                      "chip's PPU, print cycles, instructions and memory")
    pr.add_argument("file", help="assembly source (.s) or ELF executable")
    pr.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0), also the CADC noise seed")
    pr.add_argument("--half", type=int, choices=(0, 1), default=0, help="chip half of the PPU (default 0)")
    pr.add_argument("--show", action="append", default=[], metavar="WHERE[:BYTES]",
                    help="memory to print after the run: a symbol or an address, and a size "
                         "(default 16 bytes); may be repeated")
    pr.add_argument("--max-cycles", type=_positive_int, default=10_000_000,
                    help="cycle budget (default 10,000,000 = 40 ms)")

    be = sub.add_parser("bench", help="speed of the model against numpy, measured in one run")
    be.add_argument("--vectors", type=_positive_int, default=10_000,
                    help="size of the benchmarks (default 10000): analog vectors, network and MNIST "
                         "images (at most 10000), 2000 PPU instructions per vector; the calibration "
                         "benchmark always calibrates one whole chip")
    be.add_argument("--seed", type=_seed, default=0, help="chip seed (default 0)")

    from bss2sim.circuits.params import PRESETS
    from .drift import (DEFAULT_HOURS, DEFAULT_REFRESH_IMAGES, DEFAULT_TEMPERATURES_K, TREATMENTS,
                        int_range, parse_reals, parse_seeds, temperature_range_k)
    dr = sub.add_parser("drift", help="temperature and hours of operation on calibrated chips: the shipped "
                                      "and a per-chip fine-tuned MNIST network without recalibration, "
                                      "recalibrated and after a short in-the-loop refresh "
                                      "(writes drift_accuracy.png)")
    dr.add_argument("--seeds", type=parse_seeds, metavar="SEEDS", default=[0, 1, 2, 3, 4],
                    help="chip seeds (default 0-4): one seed, a range or a list such as 3 or 1-4 or 0-4,9 "
                         "(a bare number is that one chip, unlike calibrate --validate N)")
    t_lo, t_hi = temperature_range_k()
    dr.add_argument("--hours", type=parse_reals("--hours", 0.0, 1e6, "hours"),
                    default=DEFAULT_HOURS, metavar="H,H,...",
                    help="hours of operation since calibration, at 25 degrees C (default "
                         f"{','.join(f'{h:g}' for h in DEFAULT_HOURS)}; 0..1e6)")
    dr.add_argument("--temperatures", type=parse_reals("--temperatures", t_lo, t_hi, "K"),
                    default=DEFAULT_TEMPERATURES_K, metavar="DT,DT,...",
                    help="temperature offsets from 25 degrees C, K, at hour 0 (default "
                         f"{','.join(f'{t:g}' for t in DEFAULT_TEMPERATURES_K)}; {t_lo:g}..{t_hi:g}; "
                         "negative ones as --temperatures=-5,0,5)")
    dr.add_argument("--images", type=int_range("--images", 1, 10_000), default=None,
                    help="evaluate on the first N test images (default: all 10,000)")
    dr.add_argument("--fine-tune-images", type=int_range("--fine-tune-images", 1, 60_000), default=10_000,
                    help="training images of the in-the-loop fine-tuning on each chip after its "
                         "calibration, one epoch (default 10000, as bss2sim train; 1..60000)")
    dr.add_argument("--refresh-images", type=int_range("--refresh-images", 1, 60_000),
                    default=DEFAULT_REFRESH_IMAGES,
                    help="training images of the short in-the-loop refresh at each condition, one epoch "
                         f"(default {DEFAULT_REFRESH_IMAGES}; 1,000-2,000 suggested; 1..60000)")
    dr.add_argument("--treatments", default=",".join(TREATMENTS), metavar="T,T,...",
                    help=f"which treatments to run (default all: {','.join(TREATMENTS)})")
    dr.add_argument("--data-dir", default=None,
                    help="MNIST folder of the training images (default: the environment variable "
                         "BSS2SIM_MNIST_DIR); the test images are the shipped ones")
    dr.add_argument("--preset", default="default", choices=list(PRESETS),
                    help="effect preset of the chips (default 'default'; 'harsh': every drift and "
                         "effect three times as strong; calibrations are stored per preset)")

    from bss2sim.digital.sequences import VMM_SEQUENCES
    tl = sub.add_parser("timeline", help="one vector pair of a VMM on one time axis: playback program, "
                                         "PPU programs, events, membranes, CADC conversions "
                                         "(writes timeline.png)")
    tl.add_argument("--seed", type=_seed, default=0, help="chip seed and seed of the example pair (default 0)")
    tl.add_argument("--sequence", default="published", choices=list(VMM_SEQUENCES),
                    help="the VMM sequence (default 'published': the chip group's fixed waits; "
                         "'tight': polling the PPUs, shortest waits)")

    from . import sweep
    sw = sub.add_parser("sweep", help="a Monte-Carlo sweep over chip seeds on Dask: each chip calibrated "
                                      "afresh, judged against its ground truth, measured and running the "
                                      "shipped MNIST network (writes sweep.csv, sweep_*.png)")
    sweep.add_arguments(sw)
    for parser in (de, tr, vm, ca, dr, tl):
        parser.add_argument("--plots-dir", default=DEFAULT_OUTPUT_DIR, help=out_help)
    for parser in (de, tr, tl):
        parser.add_argument("--readme-figures", action="store_true",
                            help="write the figures into the source checkout's plots/ (the README's "
                                 "figures) instead of --plots-dir")
    for parser in (de, tn, tr, vm, pr, be, dr, tl):
        parser.add_argument("--calibration", default=None, metavar="PATH", help=CALIBRATION_HELP)
    ca.add_argument("--calibration", default=None, metavar="PATH",
                    help="where to save the calibration: a folder or a .npz file (default: the store, "
                         "$BSS2SIM_CALIBRATIONS, else ~/.local/share/bss2sim/calibrations)")
    for parser in (de, tn, tr, vm, ca, pr, be, dr, tl):
        parser.add_argument("--json", action="store_true",
                            help="print only the figures as one JSON object on stdout "
                                 "(the human text goes to stderr)")
        parser.add_argument("--threads", type=int_at_least(1, max_threads()), default=None,
                            help=f"threads of the numba kernels, 1..{max_threads()} (default: all cores; "
                                 "on a machine shared with other jobs 1 can be faster)")
    return p


def max_threads() -> int:
    """Most threads the numba kernels can use (``--threads`` bound)."""
    import numba
    return int(numba.config.NUMBA_NUM_THREADS)


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = f"bss2sim {args.command}" + (f" {args.ppu_command}" if args.command == "ppu" else "")
    return report_errors(prog, lambda: _dispatch(args))


_OUTPUT_FOLDERS = {"demo": ("plots_dir",), "train": ("out",), "traces": ("plots_dir",),
                   "vmm": ("plots_dir",), "calibrate": ("plots_dir",), "bench": (), "ppu": (),
                   "drift": ("plots_dir",), "sweep": ("out",), "timeline": ("plots_dir",)}


def _dispatch(args):
    if getattr(args, "json", False):
        from .common import json_only_stdout
        with json_only_stdout():
            return _dispatch_command(args)
    return _dispatch_command(args)


def _dispatch_command(args):
    if getattr(args, "threads", None) is not None:
        import numba
        # Results do not depend on it (tested): only the speed does.
        numba.set_num_threads(args.threads)
    if getattr(args, "readme_figures", False):
        from .common import readme_figures_dir
        args.plots_dir = str(readme_figures_dir())
    # Output folders are checked before the work starts, so no run is lost at its end.
    for attr in _OUTPUT_FOLDERS[args.command]:
        check_writable_folder("--" + attr.replace("_", "-"), getattr(args, attr))
    if args.command == "calibrate" and args.validate is None:
        from .calibration.store import default_store
        dest = Path(args.calibration) if args.calibration is not None else default_store()
        check_writable_folder("--calibration", dest.parent if dest.suffix == ".npz" else dest)
    if args.command == "train" and args.ship:
        from .train import PACKAGE_DATA
        check_writable_folder("--ship (the package's data folder)", PACKAGE_DATA)
    if args.command == "demo":
        from . import demo
        demo.run(seed=args.seed, images=args.images, data_dir=args.data_dir, plots=args.plots_dir,
                 as_json=args.json, calibration=args.calibration,
                 fault_mapping=not args.no_fault_mapping, sequence=args.sequence)
    elif args.command == "train":
        from . import train
        train.run(data_dir=args.data_dir, data=args.data, hidden=args.hidden, seed=args.seed,
                  out=args.out, float_epochs=args.float_epochs, noise_epochs=args.noise_epochs,
                  hil_images=args.hil_images, hil_epochs=args.hil_epochs,
                  augment_shift=args.augment_shift,
                  num_sends=list(args.num_sends) if args.num_sends else None,
                  wait_between_events=list(args.wait_between_events),
                  extra_seeds=tuple(args.further_seeds), extra_hil_images=args.further_hil_images,
                  test_images=args.test_images, ship=args.ship, as_json=args.json,
                  calibration=args.calibration)
    elif args.command == "traces":
        from . import traces
        # The files and options are read and checked before any chip is made or calibrated.
        checked = traces.check_arguments(
            columns=traces.parse_columns(args.columns) if args.columns is not None else None,
            inputs=traces.load_array("--inputs", args.inputs) if args.inputs is not None else None,
            weights=traces.load_array("--weights", args.weights) if args.weights is not None else None,
            wait_between_events=args.wait_between_events)
        traces.run(seed=args.seed, half=args.half, plots=args.plots_dir, as_json=args.json,
                   calibration=args.calibration, **checked)
    elif args.command == "vmm":
        from . import vmm
        vmm.run(seed=args.seed, plots=args.plots_dir, as_json=args.json, quick=args.quick,
                calibration=args.calibration)
    elif args.command == "calibrate":
        from . import calibrate
        if args.validate is not None:
            calibrate.validate(seeds=args.validate, plots=args.plots_dir, as_json=args.json)
        else:
            calibrate.run(seed=args.seed, out=args.calibration, plots=args.plots_dir, as_json=args.json)
    elif args.command == "ppu":
        from . import ppu
        ppu.run(args.file, seed=args.seed, half=args.half, show=args.show, max_cycles=args.max_cycles,
                as_json=args.json, calibration=args.calibration)
    elif args.command == "drift":
        from . import drift
        drift.run(seeds=tuple(args.seeds), hours=args.hours, temperatures=args.temperatures,
                  images=args.images, fine_tune_images=args.fine_tune_images,
                  refresh_images=args.refresh_images,
                  treatments=tuple(t.strip() for t in args.treatments.split(",")),
                  calibration=args.calibration, data_dir=args.data_dir, plots=args.plots_dir,
                  as_json=args.json, preset=args.preset)
    elif args.command == "sweep":
        from . import sweep
        sweep.run_from_args(args)
    elif args.command == "timeline":
        from . import timeline
        timeline.run(seed=args.seed, sequence=args.sequence, plots=args.plots_dir, as_json=args.json,
                     calibration=args.calibration)
    elif args.command == "bench":
        from . import bench
        bench.run(num_vectors=args.vectors, seed=args.seed, as_json=args.json,
                  calibration=args.calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
