"""The calibration store: one folder of calibration files that every command
and :func:`load_calibration` share.

Where a chip's calibration is looked for, in this order:

1. a path given explicitly (``path=``, ``--calibration PATH``): a calibration
   file, or a folder holding ``bss2-calibration-seed<N>-<target>.npz``;
2. the store (:func:`default_store`): the folder named by the environment
   variable ``BSS2SIM_CALIBRATIONS``, else ``$XDG_DATA_HOME/bss2sim/calibrations``,
   else ``~/.local/share/bss2sim/calibrations``;
3. the calibrations shipped in the package (chip seed 0, the default target);
4. none found: the chip is calibrated now (a few seconds) and the result is
   saved into the store, so that the next command finds it.

An explicit path is never second-guessed: a path without a calibration for
the chip is an error, not a reason to calibrate. ``bss2sim calibrate --seed N``
writes into the store (or into ``--calibration PATH``), and ``bss2sim demo
--seed N`` then uses that file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bss2sim.circuits import Chip
from bss2sim.circuits.checks import WrongTypeError, check_instance
from bss2sim.digital.mapping import FaultyUnits

from ..common import as_path
from .persistence import CalibrationFile, calibration_filename, read_calibration, save_calibration
from .run import ChipCalibration, calibrate, save
from .steps import CalibrationTarget

__all__ = ["STORE_ENV", "SHIPPED_DIR", "NO_CALIBRATION", "LoadedCalibration", "chip_with_calibration",
           "default_store", "describe", "find_calibration",
           "load_calibration", "store_calibration"]

STORE_ENV = "BSS2SIM_CALIBRATIONS"
"""Environment variable naming the calibration store's folder."""
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data"
"""Folder of the calibrations shipped in the package (read-only for users)."""

ORIGINS = ("file", "store", "shipped", "calibrated")
"""Where a loaded calibration came from: an explicit path, the store, the
package, or a calibration made just now (and saved into the store)."""


def default_store() -> Path:
    """The store's folder (see the module docstring); it need not exist yet."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "bss2sim" / "calibrations"


def _target(target):
    target = target if target is not None else CalibrationTarget()
    check_instance("target", target, CalibrationTarget, "CalibrationTarget or None (the default)")
    return target


def _is_file_path(p: Path) -> bool:
    """A path names a file if it is one, or does not exist and ends in .npz."""
    return p.is_file() or (not p.exists() and p.suffix == ".npz")


def find_calibration(chip_seed: int, target: CalibrationTarget | None = None, path=None,
                     preset: str = "default"):
    """``(file path, origin)`` of the calibration of chip ``chip_seed`` (built
    with effect preset ``preset``) for ``target``, or ``(None, None)`` when
    neither the store nor the package has one. With ``path`` given, only that
    file or folder is looked at, and a missing calibration raises ``ValueError``."""
    target = _target(target)
    name = calibration_filename(chip_seed, target.target_id, preset)
    if path is not None:
        p = as_path("path", path).expanduser()
        if _is_file_path(p):
            if not p.is_file():
                raise ValueError(f"calibration path {str(p)!r} does not exist (write it with "
                                 f"bss2sim calibrate --seed {chip_seed} --calibration {p})")
            return p, "file"
        if not p.is_dir():
            raise ValueError(f"calibration path {str(p)!r} is neither a calibration file nor a folder")
        f = p / name
        if not f.is_file():
            raise ValueError(f"calibration folder {str(p)!r} holds no calibration of chip seed "
                             f"{chip_seed} for target {target.target_id} (no {name}); write it with "
                             f"bss2sim calibrate --seed {chip_seed} --calibration {p}")
        return f, "file"
    for folder, origin in ((default_store(), "store"), (SHIPPED_DIR, "shipped")):
        f = folder / name
        if f.is_file():
            return f, origin
    return None, None


@dataclass(frozen=True)
class LoadedCalibration:
    """A calibration applied to a chip, and where it came from."""

    chip_seed: int
    """Seed of the chip it was made for."""
    target_id: str
    """Id of its :class:`CalibrationTarget`."""
    origin: str
    """'file' (an explicit path), 'store', 'shipped' or 'calibrated' (made now)."""
    path: Path | None
    """The file it was read from or saved to (None: made now and not saved)."""
    faulty: FaultyUnits = field(default_factory=FaultyUnits)
    """Units the calibration could not bring to their targets; pass them to
    ``Accelerator(chip, faulty=...)`` to route around them."""
    metadata: dict = field(default_factory=dict, repr=False)
    """The calibration's summary (residuals, failures, counters)."""
    calibration: ChipCalibration | None = field(default=None, repr=False)
    """The full result when the chip was calibrated now, else None."""

    def describe(self) -> str:
        """One line saying which calibration this is, for a command's output."""
        where = {"file": "from", "store": "from the store:", "shipped": "shipped with the package:",
                 "calibrated": "calibrated now, saved to"}[self.origin]
        if self.path is None:
            text = f"chip seed {self.chip_seed} calibrated now (not saved)"
        else:
            text = f"chip seed {self.chip_seed}, target {self.target_id}, {where} {self.path}"
        n = len(self.faulty.columns) + len(self.faulty.drivers)
        return text + (f"; {n} faulty unit(s)" if n else "")

    def to_dict(self) -> dict:
        """JSON-able summary (for ``--json``)."""
        return {"chip_seed": self.chip_seed, "target_id": self.target_id, "origin": self.origin,
                "path": None if self.path is None else str(self.path),
                "faulty_units": self.faulty.to_dict()}


def _faulty_from(metadata: dict, where: str) -> FaultyUnits:
    """The faulty units a file records. Files written before they were recorded
    list none; their ``failures`` name them in words only."""
    if "faulty_units" not in metadata:
        return FaultyUnits()
    try:
        return FaultyUnits.from_dict(metadata["faulty_units"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: its faulty_units are malformed ({e})") from None


def load_calibration(chip: Chip, path=None, target: CalibrationTarget | None = None, *,
                     calibrate_missing: bool = True, save_to_store: bool = True,
                     noise_seed: int = 0, progress=None) -> LoadedCalibration:
    """Apply a calibration of ``chip`` to its configuration (weights untouched)
    and say which one it was.

    Parameters
    ----------
    chip : Chip
    path : str, Path or None
        A calibration file or a folder of them; None: the store, then the
        shipped calibrations (see the module docstring).
    target : CalibrationTarget or None
        The target set the calibration was made for (default: the default targets).
    calibrate_missing : bool
        With no ``path`` and nothing found, calibrate the chip now (default
        True); False raises ``ValueError`` instead.
    save_to_store : bool
        Save a calibration made now into the store (default True).
    noise_seed, progress
        Passed to :func:`~bss2sim.experiments.calibration.calibrate` when the
        chip is calibrated now.

    A file made for another chip seed or target is refused with a
    ``ValueError`` and leaves the chip unchanged."""
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    target = _target(target)
    for name, v in (("calibrate_missing", calibrate_missing), ("save_to_store", save_to_store)):
        if not isinstance(v, bool):
            raise WrongTypeError(f"{name}={v!r} must be True or False")
    found, origin = find_calibration(chip.seed, target, path, chip.preset)
    if found is not None:
        f: CalibrationFile = read_calibration(found, chip_seed=chip.seed, target_id=target.target_id)
        made_on = f.metadata.get("preset", "default")   # files without the field predate the presets
        if made_on != chip.preset:
            raise ValueError(f"calibration file {str(found)!r} was made on a chip of preset {made_on!r}, "
                             f"not {chip.preset!r} like this one; calibrate it (bss2sim calibrate)")
        faulty = _faulty_from(f.metadata, f"calibration file {str(found)!r}")
        f.apply(chip.config)
        return LoadedCalibration(chip.seed, f.target_id, origin, found, faulty, dict(f.metadata))
    if not calibrate_missing:
        raise ValueError(f"no calibration of chip seed {chip.seed} for target {target.target_id} in the "
                         f"store ({default_store()}) or the package; run bss2sim calibrate --seed "
                         f"{chip.seed}")
    cal = calibrate(chip, target=target, noise_seed=noise_seed, progress=progress)
    saved = store_calibration(cal, chip) if save_to_store else None
    return LoadedCalibration(chip.seed, target.target_id, "calibrated", saved, cal.faulty_units(),
                             cal.summary(), cal)


def store_calibration(cal: ChipCalibration, chip: Chip, path=None) -> Path:
    """Save a calibration into the store (default), into a folder, or as the
    file ``path`` (a name ending in ``.npz``); returns the file's path."""
    check_instance("cal", cal, ChipCalibration, "ChipCalibration")
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    if cal.chip_seed != chip.seed:
        raise ValueError(f"cal is a calibration of chip seed {cal.chip_seed}, not of chip seed {chip.seed}")
    if path is None:
        return save(cal, chip, default_store())
    p = as_path("path", path).expanduser()
    if _is_file_path(p):
        return save_calibration(p, chip.config, chip_seed=cal.chip_seed, target_id=cal.target.target_id,
                                metadata=cal.summary())
    return save(cal, chip, p)


NO_CALIBRATION = "none"
"""The value of ``calibration`` (``--calibration none``) that keeps a chip as fabricated."""


def chip_with_calibration(seed: int, calibration=None, progress=None, preset: str = "default"):
    """``(chip, loaded)``: ``Chip(seed, preset=preset)`` with its calibration
    applied, for the commands. ``calibration``: None looks in the store, then
    the package, and calibrates (and stores) when nothing is found; ``"none"``
    keeps the chip uncalibrated (``loaded`` is None); anything else is a path
    (:func:`load_calibration`)."""
    chip = Chip(seed, preset=preset)
    if isinstance(calibration, str) and calibration == NO_CALIBRATION:
        return chip, None
    return chip, load_calibration(chip, calibration, progress=progress)


def describe(loaded: LoadedCalibration | None) -> str:
    """One line naming the calibration a command used."""
    return "none (the chip as fabricated, uncalibrated)" if loaded is None else loaded.describe()
