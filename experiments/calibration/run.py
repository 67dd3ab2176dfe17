"""Calibrate a whole chip: the built-in steps in order (or the steps a user
names), a typed result that applies itself to a configuration, and the files
it is kept in."""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K
from bss2sim.digital.mapping import FaultyUnits
from bss2sim.circuits.checks import WrongTypeError, check_instance

from .measurements import ChipAccess
from .persistence import calibration_filename, read_calibration, save_calibration
from .steps import BUILTIN_STEPS, DEFAULT_STEPS, CalibrationTarget, StepResult

STEPS = tuple(BUILTIN_STEPS.items())
"""(name, function) of the built-in steps, in order."""


def step_name(step) -> str:
    """The name of a calibration step: a built-in name as given, else the
    callable's ``name`` attribute, else its ``__name__``."""
    if isinstance(step, str):
        return step
    try:
        return step.name
    except AttributeError:
        pass
    try:
        return step.__name__
    except AttributeError:
        return type(step).__name__


def resolve_steps(steps) -> list:
    """``[(name, callable), ...]`` for ``calibrate``'s ``steps`` argument, checked
    before anything runs: None gives the built-in steps; otherwise a non-empty
    list of built-in names (:data:`~.steps.BUILTIN_STEPS`) and callables
    ``step(access, target)``, no name twice."""
    if steps is None:
        steps = DEFAULT_STEPS
    if isinstance(steps, (str, bytes)) or not isinstance(steps, (list, tuple)):
        raise WrongTypeError(f"steps={steps!r} must be a list of step names "
                             f"({', '.join(BUILTIN_STEPS)}) and callables step(access, target), "
                             "or None (all built-in steps)")
    if not steps:
        raise ValueError("steps=[] names no step: give at least one, or None for the built-in steps")
    out = []
    for i, s in enumerate(steps):
        if isinstance(s, str):
            if s not in BUILTIN_STEPS:
                raise ValueError(f"steps[{i}]={s!r} is not a built-in step; built-in: "
                                 f"{', '.join(BUILTIN_STEPS)} (or pass a callable)")
            out.append((s, BUILTIN_STEPS[s]))
        elif callable(s):
            name = step_name(s)
            if not isinstance(name, str) or not name:
                raise WrongTypeError(f"steps[{i}] has name {name!r}; a step's name must be a "
                                     "non-empty string")
            out.append((name, s))
        else:
            raise WrongTypeError(f"steps[{i}]={s!r} is neither a built-in step name "
                                 f"({', '.join(BUILTIN_STEPS)}) nor a callable step(access, target)")
    names = [n for n, _ in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"steps name {', '.join(map(repr, twice))} more than once; each step "
                         "needs its own name (give a callable a 'name' attribute)")
    return out


@dataclass
class ChipCalibration:
    """All steps of one chip's calibration."""

    chip_seed: int
    target: CalibrationTarget
    steps: list = field(default_factory=list)
    wall_time_s: float = 0.0
    from_previous: bool = False
    """Whether the built-in steps started from a previous calibration (``calibrate(previous=...)``)."""
    preset: str = "default"
    """The effect preset of the chip it was made on (``Chip.preset``)."""
    environment: dict = field(default_factory=dict)
    """The chip's condition during the calibration: ``temperature_c`` (degrees C)
    and ``hours`` (of operation), as ``Chip.environment`` said."""

    @property
    def failures(self) -> list:
        return [f"{s.name}: {f}" for s in self.steps for f in s.failures]

    @property
    def measurements(self) -> int:
        return sum(s.measurements for s in self.steps)

    @property
    def silicon_time_s(self) -> float:
        return sum(s.silicon_time_s for s in self.steps)

    @property
    def capmem_writes(self) -> int:
        return sum(s.capmem_writes for s in self.steps)

    def faulty_units(self) -> FaultyUnits:
        """The units this calibration found it could not bring to their targets,
        for :class:`bss2sim.digital.Accelerator`'s ``faulty=``: as columns, the
        CADC channels found dead and the neurons whose potentials or input
        strengths missed their targets; as drivers, those the driver step
        could not use: a dead excitatory or inhibitory synapse row, a driver
        that sends no pulse, a pulse-width offset beyond the 6-bit range, or
        one that sends almost no charge at the low activation. Steps that did
        not run add nothing."""
        columns, drivers = np.zeros((K.NUM_HALVES, K.COLUMNS_PER_HALF), bool), None
        names = [s.name for s in self.steps]
        if "cadc" in names:
            columns |= np.asarray(self.step("cadc").detail["dead_channels"], bool)
        if "neurons" in names:
            columns |= ~np.asarray(self.step("neurons").detail["neuron_reached"], bool)
        if "drivers" in names:
            drivers = ~np.asarray(self.step("drivers").detail["driver_reached"], bool)
        return FaultyUnits(columns=tuple(zip(*(a.tolist() for a in np.nonzero(columns)))),
                           drivers=() if drivers is None else
                           tuple(zip(*(a.tolist() for a in np.nonzero(drivers)))))

    def step(self, name) -> StepResult:
        for s in self.steps:
            if s.name == name:
                return s
        raise ValueError(f"no step {name!r}; steps: {[s.name for s in self.steps]}")

    def apply(self, config):
        """Write every step's settings into a configuration (weights untouched)."""
        for s in self.steps:
            s.apply(config)

    def residuals(self) -> dict:
        """The residual spreads after each step (JSON-ready)."""
        return {s.name: {k: np.asarray(v).tolist() for k, v in s.after.items()} for s in self.steps}

    def summary(self) -> dict:
        return {"chip_seed": self.chip_seed, "target_id": self.target.target_id,
                "residuals": self.residuals(), "failures": self.failures,
                "measurements": self.measurements, "capmem_writes": self.capmem_writes,
                "wall_time_s": self.wall_time_s, "silicon_time_s": self.silicon_time_s,
                "silicon_time_per_step_s": {s.name: s.silicon_time_s for s in self.steps},
                "from_previous": self.from_previous,
                "preset": self.preset,
                "environment": dict(self.environment),
                "steps": [s.name for s in self.steps],
                "faulty_units": self.faulty_units().to_dict()}


def calibrate(chip: Chip, target: CalibrationTarget | None = None, noise_seed: int = 0,
              progress=None, steps=None, *, previous: ChipCalibration | None = None) -> ChipCalibration:
    """Calibrate ``chip`` in place (its configuration ends calibrated) and
    return what was done. Only configures and measures; never reads the truth.

    Parameters
    ----------
    chip : Chip
    target : CalibrationTarget or None
        What the calibrated chip should read (default: the group's targets).
    noise_seed : int
        Seed of the reads' trial-to-trial noise (default 0).
    progress : callable or None
        Called with each step's name before the step runs.
    steps : list or None
        The steps to run, in order: built-in names (``"cadc"``,
        ``"synapse_bias"``, ``"drivers"``, ``"neurons"``) and your own callables
        ``step(access, target)`` (see :class:`~.steps.CalibrationStep`); None
        runs the built-in steps. Each step gets only a
        :class:`~.measurements.ChipAccess`, never the chip; what it reads,
        writes and costs is counted into its :class:`~.steps.StepResult`.
    previous : ChipCalibration or None (keyword only)
        An earlier calibration of the same chip (same seed), e.g. before it
        drifted with temperature or age. Each built-in step then starts from
        that calibration's settings and searches a narrow window around them,
        widening to the full range only where the window does not reach its
        target: fewer reads and capmem writes, less silicon time
        (``summary()["silicon_time_s"]``). Your own steps run as without it.
        None (the default): calibrate from scratch.

    Every argument is checked before any step runs."""
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    target = target if target is not None else CalibrationTarget()
    check_instance("target", target, CalibrationTarget, "CalibrationTarget or None (the default)")
    if progress is not None and not callable(progress):
        raise WrongTypeError(f"progress={progress!r} must be a callable taking a step name, or None")
    resolved = resolve_steps(steps)
    if previous is not None:
        check_instance("previous", previous, ChipCalibration, "ChipCalibration or None (the default)")
        if previous.chip_seed != chip.seed:
            raise ValueError(f"previous is the calibration of chip seed {previous.chip_seed}, but the "
                             f"chip has seed {chip.seed}: recalibrate from the same chip's calibration "
                             "(or previous=None)")
        earlier = {s.name: s for s in previous.steps}
        resolved = [(name, functools.partial(fn, previous=earlier[name]))
                    if isinstance(spec, str) and name in earlier else (name, fn)
                    for spec, (name, fn) in zip(steps if steps is not None else DEFAULT_STEPS, resolved)]
    access = ChipAccess(chip, noise_seed=noise_seed)
    cal = ChipCalibration(chip_seed=chip.seed, target=target, from_previous=previous is not None,
                          preset=chip.preset,
                          environment={"temperature_c": chip.environment.temperature_c,
                                       "hours": chip.environment.hours})
    t = time.perf_counter()
    for name, fn in resolved:
        if progress is not None:
            progress(name)
        cal.steps.append(_run_step(access, target, name, fn))
    cal.wall_time_s = time.perf_counter() - t
    return cal


def _run_step(access, target, name, fn) -> StepResult:
    """Run one step; fill what a user's step left out from the access's counters
    and its record of writes."""
    m0, c0, t0 = access.measurements, access.capmem_writes, access.silicon_time_s
    written0 = access.written_settings()
    result = fn(access, target)
    if result is None:
        result = StepResult(name=name)
    if not isinstance(result, StepResult):
        raise WrongTypeError(f"calibration step {name!r} returned {type(result).__name__}; a step "
                             "returns a StepResult or None")
    if result.name != name:
        raise ValueError(f"calibration step {name!r} returned a StepResult named {result.name!r}; "
                         "they must agree")
    if not result.settings:
        written = access.written_settings()
        result.settings = {k: v for k, v in written.items()
                           if k not in written0 or not np.array_equal(v, written0[k])}
    # The access counts every read and write: a step cannot report less (or more).
    result.measurements = access.measurements - m0
    result.capmem_writes = access.capmem_writes - c0
    result.silicon_time_s = access.silicon_time_s - t0
    return result


def save(cal: ChipCalibration, chip: Chip, folder) -> Path:
    """Write the calibrated settings of ``chip`` (calibrated by ``cal``) into
    ``folder`` as one versioned file per chip seed and target set."""
    check_instance("cal", cal, ChipCalibration, "ChipCalibration")
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    check_instance("folder", folder, (str, os.PathLike), "folder path (str or pathlib.Path)")
    path = Path(folder) / calibration_filename(cal.chip_seed, cal.target.target_id, chip.preset)
    return save_calibration(path, chip.config, chip_seed=cal.chip_seed, target_id=cal.target.target_id,
                            metadata=cal.summary())


def load_into(chip: Chip, folder, target: CalibrationTarget | None = None):
    """Apply the stored calibration of ``chip``'s seed and the target set to its configuration."""
    check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
    check_instance("folder", folder, (str, os.PathLike), "folder path (str or pathlib.Path)")
    target = target if target is not None else CalibrationTarget()
    check_instance("target", target, CalibrationTarget, "CalibrationTarget or None (the default)")
    path = Path(folder) / calibration_filename(chip.seed, target.target_id, chip.preset)
    f = read_calibration(path, chip_seed=chip.seed, target_id=target.target_id)
    f.apply(chip.config)
    return f
