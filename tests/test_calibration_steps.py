"""Your own calibration steps: the protocol of calibrate(chip, steps=[...]),
what a step can and cannot reach, and the public comparisons with the truth."""
from __future__ import annotations

import numpy as np
import pytest

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K
from bss2sim.experiments.calibration import (BUILTIN_STEPS, DEFAULT_STEPS, CalibrationStep,
                                             CalibrationTarget, ChipAccess, StepResult, calibrate)
from bss2sim.experiments.calibration.persistence import calibration_settings
from bss2sim.experiments.validation import (cadc_offsets_vs_truth, compare_with_truth,
                                            driver_offsets_vs_truth, potentials_vs_truth)


def rest_step(access, target):
    """A user's resting-potential step: bisection of each neuron's reset
    potential on the mean resting read, through the access only."""
    lo = np.zeros((K.NUM_HALVES, K.COLUMNS_PER_HALF), np.int64)
    hi = np.full_like(lo, K.CAPMEM_MAX)
    access.write_capmem("leak_bias", 0)
    for _ in range(10):
        mid = (lo + hi) // 2
        access.write_capmem("reset_potential", mid)
        low = access.read_codes(repeats=4) < target.resting_read
        lo = np.where(low, mid + 1, lo)
        hi = np.where(low, hi, mid)
    access.write_capmem("reset_potential", lo)


@pytest.fixture(scope="module")
def user_calibrated():
    chip = Chip(2)
    cal = calibrate(chip, steps=["cadc", rest_step])
    return chip, cal


def test_builtin_names_and_defaults():
    assert DEFAULT_STEPS == ("cadc", "synapse_bias", "drivers", "neurons")
    assert set(BUILTIN_STEPS) == set(DEFAULT_STEPS)
    assert isinstance(rest_step, CalibrationStep)


def test_a_user_step_runs_after_a_builtin_one(user_calibrated):
    chip, cal = user_calibrated
    assert [s.name for s in cal.steps] == ["cadc", "rest_step"]
    s = cal.step("rest_step")
    # What it wrote is recorded (leak_bias was 0 already: recorded as read back).
    assert set(s.settings) == {"capmem/reset_potential", "capmem/leak_bias"}
    np.testing.assert_array_equal(s.settings["capmem/reset_potential"],
                                  chip.config.capmem("reset_potential"))
    # Counted by the access: 10 bisection rounds x 4 reads x 2 halves, and 10 or
    # 11 capmem writes of the reset potential, each with its settling time.
    assert s.measurements == 10 * 4 * K.NUM_HALVES
    assert 10 <= s.capmem_writes <= 11
    assert s.silicon_time_s >= s.capmem_writes * K.CAPMEM_SETTLING_S
    assert cal.measurements == cal.step("cadc").measurements + s.measurements


def test_the_user_step_is_judged_against_the_truth(user_calibrated):
    chip, _ = user_calibrated
    r = potentials_vs_truth(chip)["reset_potential"]
    # The bisection ends within a few capmem steps of the truth optimum (3.2 steps per LSB).
    assert r["median_abs_difference_steps"] < 3.0, r
    # An uncalibrated chip is far from it: the comparison is not vacuous.
    assert potentials_vs_truth(Chip(2))["reset_potential"]["median_abs_difference_steps"] > 10


def test_steps_are_checked_before_any_runs():
    chip = Chip(1)
    before = calibration_settings(chip.config)
    for steps, err, match in (([], ValueError, "names no step"),
                              (["cadc", "nosuch"], ValueError, r"steps\[1\]='nosuch' is not a built-in"),
                              (["cadc", 3], TypeError, r"steps\[1\]=3 is neither"),
                              ("cadc", TypeError, "must be a list"),
                              (["cadc", "cadc"], ValueError, "'cadc' more than once"),
                              ([rest_step, rest_step], ValueError, "more than once")):
        with pytest.raises(err, match=match):
            calibrate(chip, steps=steps)
    after = calibration_settings(chip.config)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_a_step_named_by_attribute_and_returning_a_result():
    def step(access, target):
        access.write_capmem("leak_bias", 3)
        return StepResult(name="mine", after={"x": np.array(1.0)})
    step.name = "mine"
    cal = calibrate(Chip(1), steps=[step])
    s = cal.step("mine")
    assert s.after["x"] == 1.0 and s.capmem_writes == 1
    assert set(s.settings) == {"capmem/leak_bias"}

    def wrong(access, target):
        return 42
    with pytest.raises(TypeError, match="returned int"):
        calibrate(Chip(1), steps=[wrong])

    def misnamed(access, target):
        return StepResult(name="other")
    with pytest.raises(ValueError, match="named 'other'"):
        calibrate(Chip(1), steps=[misnamed])


def test_a_step_cannot_reach_the_chip_or_write_around_the_counters():
    chip = Chip(0)
    access = ChipAccess(chip)
    for name in ("chip", "config", "configuration"):
        with pytest.raises(AttributeError, match="configures only through"):
            getattr(access, name)
    public = [n for n in dir(access) if not n.startswith("_")]
    for n in public:
        v = getattr(access, n)
        assert not isinstance(v, Chip) and type(v).__name__ != "ChipConfig", n
    # Read-backs are copies that cannot be written.
    got = access.read_capmem("reset_potential")
    with pytest.raises(ValueError):
        got[0, 0] = 5
    assert not got.flags.writeable
    for reader in (access.read_driver_offsets, access.read_digital_offsets):
        a = reader()
        assert not a.flags.writeable
    # A bad per-half write changes neither half.
    offsets = np.full((2, 128), 10)
    offsets[1, 5] = 99
    with pytest.raises(ValueError, match="out of range"):
        access.write_driver_offsets(offsets)
    np.testing.assert_array_equal(chip.config.driver_offset, Chip(0).config.driver_offset)
    with pytest.raises(ValueError, match="first axis"):
        access.write_driver_offsets(np.full(128, 10))
    with pytest.raises(ValueError, match="repeats"):
        access.read_codes(0)


def test_public_truth_comparisons_take_a_chip_not_a_faked_argument():
    chip = Chip(7)
    cal = calibrate(chip)
    full = compare_with_truth(chip, cal)
    cadc = cadc_offsets_vs_truth(chip)
    assert cadc["fraction_within_1"] == full["cadc"]["fraction_within_1"] >= 0.9
    pot = potentials_vs_truth(chip, CalibrationTarget())
    np.testing.assert_array_equal(pot["leak_potential"]["differences"],
                                  full["potentials"]["leak_potential"]["differences"])
    reached = cal.step("drivers").detail["driver_reached"]
    drv = driver_offsets_vs_truth(chip, reached=reached)
    assert drv["width"]["median_abs_difference_steps"] == full["drivers"]["width"]["median_abs_difference_steps"]
    with pytest.raises(ValueError, match="reached has shape"):
        driver_offsets_vs_truth(chip, reached=np.ones(3, bool))
    with pytest.raises(TypeError, match="chip="):
        potentials_vs_truth("chip 7")
