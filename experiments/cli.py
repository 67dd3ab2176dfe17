"""Command line of the BrainScaleS-2 model: ``bss2sim SUBCOMMAND [options]``.

Every subcommand accepts ``--json`` and then prints one JSON object with its
figures as the last line of stdout.
"""
from __future__ import annotations

import argparse
import sys


def _int_at_least(minimum):
    """argparse type: an integer >= minimum, with a message naming the bad value."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{v} is not allowed: must be >= {minimum}")
        return v
    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def build_parser():
    p = argparse.ArgumentParser(prog="bss2sim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    de = sub.add_parser("demo", help="the shipped MNIST network on a simulated chip "
                                     "(writes plots/mnist_*.png)")
    de.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    de.add_argument("--images", type=_positive_int, default=None,
                    help="classify only the first N test images (default: all 10,000)")
    de.add_argument("--data-dir", default=None, help="read the test set from this MNIST folder "
                                                     "instead of the shipped copy")
    de.add_argument("--plots-dir", default="plots", help="folder for figures (default: plots)")
    de.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")

    tn = sub.add_parser("train", help="the MNIST pipeline: calibrate, train in software and "
                                      "noise-aware, fine-tune through the chip, evaluate")
    tn.add_argument("--data-dir", default=None,
                    help="MNIST folder (default: the environment variable BSS2SIM_MNIST_DIR)")
    tn.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    tn.add_argument("--out", default="mnist_run", help="folder for checkpoints and results")
    tn.add_argument("--float-epochs", type=_nonneg_int, default=8,
                    help="epochs of float training (default 8)")
    tn.add_argument("--noise-epochs", type=_nonneg_int, default=2,
                    help="epochs of noise-aware training with the behavioural model (default 2)")
    tn.add_argument("--hil-images", type=_positive_int, default=10_000,
                    help="training images for the fine-tuning on the chip (default 10000)")
    tn.add_argument("--hil-epochs", type=_positive_int, default=1,
                    help="fine-tuning epochs on each chip (default 1)")
    tn.add_argument("--augment-shift", type=_nonneg_int, default=2,
                    help="largest random shift of the training images, pixels (default 2; 0: none)")
    tn.add_argument("--num-sends", type=_positive_int, nargs=3, metavar=("CONV", "FC1", "FC2"),
                    default=None, help="sends per vector of each layer (default: chosen by the "
                                       "gain-aware initialisation, 1..64)")
    tn.add_argument("--wait-between-events", type=_positive_int, nargs=3, metavar=("CONV", "FC1", "FC2"),
                    default=[5, 5, 5], help="event spacing of each layer, FPGA cycles of 8 ns "
                                            "(default 5 5 5; 1..255)")
    tn.add_argument("--further-seeds", type=_nonneg_int, nargs="*", default=[1, 2, 3, 4, 5])
    tn.add_argument("--further-hil-images", type=_positive_int, default=10_000,
                    help="fine-tuning images on each further chip (default 10000)")
    tn.add_argument("--test-images", type=_positive_int, default=None,
                    help="evaluate on the first N test images only (default: all)")
    tn.add_argument("--ship", action="store_true", help="copy the network and results into the package")
    tn.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")

    tr = sub.add_parser("traces", help="membrane traces during one VMM (writes plots/membrane_traces.png)")
    tr.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    tr.add_argument("--half", type=int, choices=(0, 1), default=0, help="chip half (default 0)")
    tr.add_argument("--plots-dir", default="plots", help="folder for figures (default: plots)")
    tr.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")

    vm = sub.add_parser("vmm", help="characterise a chip's VMMs (writes plots/vmm_*.png)")
    vm.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    vm.add_argument("--plots-dir", default="plots", help="folder for figures (default: plots)")
    vm.add_argument("--quick", action="store_true", help="smaller measurements (a quick look)")
    vm.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")

    ca = sub.add_parser("calibrate", help="calibrate a chip, save its calibration file "
                                          "(writes plots/calibration_*.png)")
    ca.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    ca.add_argument("--out", default="calibrations", help="folder for calibration files (default: calibrations)")
    ca.add_argument("--plots-dir", default="plots", help="folder for figures (default: plots)")
    ca.add_argument("--validate", type=_positive_int, metavar="N", default=None,
                    help="instead: calibrate chip seeds 0..N-1 and compare with their ground truth "
                         "(writes plots/calibration_validation.png)")
    ca.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")

    be = sub.add_parser("bench", help="speed of the model against numpy, measured in one run")
    be.add_argument("--vectors", type=_positive_int, default=10_000,
                    help="input vectors for the analog benchmark (default 10000)")
    be.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed (default 0)")
    be.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ValueError as e:
        # Every input check raises ValueError naming the parameter, value and range.
        print(f"bss2sim {args.command}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args):
    if args.command == "demo":
        from . import demo
        demo.run(seed=args.seed, images=args.images, data_dir=args.data_dir, plots=args.plots_dir,
                 as_json=args.json)
    elif args.command == "train":
        from . import train
        train.run(data_dir=args.data_dir, seed=args.seed, out=args.out, float_epochs=args.float_epochs,
                  noise_epochs=args.noise_epochs, hil_images=args.hil_images, hil_epochs=args.hil_epochs,
                  augment_shift=args.augment_shift,
                  num_sends=tuple(args.num_sends) if args.num_sends else (None, None, None),
                  wait_between_events=tuple(args.wait_between_events),
                  extra_seeds=tuple(args.further_seeds), extra_hil_images=args.further_hil_images,
                  test_images=args.test_images, ship=args.ship, as_json=args.json)
    elif args.command == "traces":
        from . import traces
        traces.run(seed=args.seed, half=args.half, plots=args.plots_dir, as_json=args.json)
    elif args.command == "vmm":
        from . import vmm
        vmm.run(seed=args.seed, plots=args.plots_dir, as_json=args.json, quick=args.quick)
    elif args.command == "calibrate":
        from . import calibrate
        if args.validate is not None:
            calibrate.validate(seeds=range(args.validate), plots=args.plots_dir, as_json=args.json)
        else:
            calibrate.run(seed=args.seed, out=args.out, plots=args.plots_dir, as_json=args.json)
    elif args.command == "bench":
        from . import bench
        bench.run(num_vectors=args.vectors, seed=args.seed, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
