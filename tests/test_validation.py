"""Bad input raises ValueError naming the parameter and the bad value."""
from __future__ import annotations

import re

import numpy as np
import pytest

from bss2sim.circuits import (Chip, EventSchedule, MismatchParams, NoiseParams, TrialNoise,
                      integrate_fast, integrate_trace)


def re_shape(shape):
    return re.escape(str(tuple(shape)))


def re_repr(x):
    return re.escape(repr(x))


@pytest.fixture(scope="module")
def chip():
    return Chip(0)


def _weights(value=0, shape=(128, 256), dtype=np.int64):
    w = np.zeros(shape, dtype)
    w[3, 7] = value
    return w


# --- weights -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [64, -64, 100])
def test_logical_weight_out_of_range(chip, bad):
    with pytest.raises(ValueError, match=rf"weights\[3, 7\]={bad} is out of range -63\.\.63"):
        chip.config.set_logical_weights(0, _weights(bad))


@pytest.mark.parametrize("bad", [64, -1])
def test_physical_weight_out_of_range(chip, bad):
    with pytest.raises(ValueError, match=rf"weights\[3, 7\]={bad} is out of range 0\.\.63"):
        chip.config.set_weights(0, _weights(bad, shape=(256, 256)))


def test_float_weights(chip):
    with pytest.raises(ValueError, match=r"weights has dtype float64"):
        chip.config.set_logical_weights(0, _weights(3, dtype=np.float64))
    with pytest.raises(ValueError, match=r"weights has dtype float64"):
        chip.config.set_weights(0, np.ones((256, 256)))


def test_nan_weights(chip):
    w = _weights(0, dtype=np.float64)
    w[5, 5] = np.nan
    with pytest.raises(ValueError, match=r"weights contains NaN"):
        chip.config.set_logical_weights(0, w)
    w = np.zeros((256, 256))
    w[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"weights contains NaN or infinity"):
        chip.config.set_weights(0, w)


@pytest.mark.parametrize("shape", [(128, 255), (256, 256), (128,), (1, 128, 256)])
def test_logical_weights_wrong_shape(chip, shape):
    with pytest.raises(ValueError, match=rf"weights has shape {re_shape(shape)}; expected \(128, 256\)"):
        chip.config.set_logical_weights(0, np.zeros(shape, np.int64))


def test_physical_weights_wrong_shape(chip):
    with pytest.raises(ValueError, match=r"weights has shape \(128, 256\); expected \(256, 256\)"):
        chip.config.set_weights(0, np.zeros((128, 256), np.int64))


def test_rejected_write_leaves_config_unchanged():
    chip = Chip(1)
    good = _weights(17)
    chip.config.set_logical_weights(0, good)
    version = chip.config.version
    with pytest.raises(ValueError):
        chip.config.set_logical_weights(0, _weights(64))
    assert chip.config.version == version
    assert chip.config.weights[0, 6, 7] == 17


def test_row_signs(chip):
    signs = np.ones(256, np.int64)
    signs[9] = 0
    with pytest.raises(ValueError, match=r"row_sign\[9\]=0"):
        chip.config.set_row_signs(0, signs)
    signs[9] = 2
    with pytest.raises(ValueError, match=r"row_sign\[9\]=2 is out of range"):
        chip.config.set_row_signs(0, signs)


# --- other configuration ----------------------------------------------------------------

@pytest.mark.parametrize("bad", [1024, -1])
def test_capmem_out_of_range(chip, bad):
    with pytest.raises(ValueError, match=rf"synapse_bias\[0, 0\]={bad} is out of range 0\.\.1023"):
        chip.config.set_capmem("synapse_bias", bad)
    values = np.full((2, 256), 448)
    values[1, 200] = bad
    with pytest.raises(ValueError, match=rf"reset_potential\[1, 200\]={bad}"):
        chip.config.set_capmem("reset_potential", values)


def test_capmem_unknown_name_and_shape(chip):
    with pytest.raises(ValueError, match=r"capmem parameter 'synapse_gain' is unknown"):
        chip.config.set_capmem("synapse_gain", 3)
    with pytest.raises(ValueError, match=r"capmem parameter 'nope' is unknown"):
        chip.config.capmem("nope")
    with pytest.raises(ValueError, match=r"leak_bias has shape \(2, 2\); expected \(2, 256\)"):
        chip.config.set_capmem("leak_bias", np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"cadc_ramp_slope has dtype float64"):
        chip.config.set_capmem("cadc_ramp_slope", 500.0)


@pytest.mark.parametrize("bad", [64, -1])
def test_driver_offsets_out_of_range(chip, bad):
    offsets = np.full(128, 32)
    offsets[17] = bad
    with pytest.raises(ValueError, match=rf"driver_offset\[17\]={bad} is out of range 0\.\.63"):
        chip.config.set_driver_offsets(0, offsets)


@pytest.mark.parametrize("bad", [200, 128, -129])
def test_cadc_digital_offsets_out_of_range(chip, bad):
    offsets = np.zeros(256, np.int64)
    offsets[250] = bad
    with pytest.raises(ValueError, match=rf"cadc_digital_offset\[250\]={bad} is out of range -128\.\.127"):
        chip.config.set_cadc_digital_offsets(1, offsets)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_chip_seed(bad):
    with pytest.raises(ValueError, match=rf"seed={re_repr(bad)} is not allowed"):
        Chip(seed=bad)


@pytest.mark.parametrize("bad", [2, -1, 1.0, True])
def test_half(chip, bad):
    msg = rf"half={re_repr(bad)} is not allowed"
    with pytest.raises(ValueError, match=msg):
        chip.config.set_logical_weights(bad, _weights())
    with pytest.raises(ValueError, match=msg):
        chip.operating_point(bad)
    sched = EventSchedule.from_lists([[]])
    with pytest.raises(ValueError, match=msg):
        integrate_fast(chip, bad, sched, 10)
    with pytest.raises(ValueError, match=msg):
        integrate_trace(chip, bad, sched, 10)


def test_params_validation():
    with pytest.raises(ValueError, match=r"synapse_gain_rel=-0\.1"):
        MismatchParams(synapse_gain_rel=-0.1)
    with pytest.raises(ValueError, match=r"cadc_read_noise_lsb=nan"):
        NoiseParams(cadc_read_noise_lsb=float("nan"))


# --- inputs and schedules --------------------------------------------------------

def _inputs(value=0, shape=(3, 128), dtype=np.int64):
    x = np.zeros(shape, dtype)
    x[1, 5] = value
    return x


@pytest.mark.parametrize("bad", [32, -1])
def test_input_values_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"inputs\[1, 5\]={bad} is out of range 0\.\.31"):
        EventSchedule.from_inputs(_inputs(bad))


def test_float_and_nan_inputs():
    with pytest.raises(ValueError, match=r"inputs has dtype float64"):
        EventSchedule.from_inputs(_inputs(3, dtype=np.float64))
    x = _inputs(0, dtype=np.float64)
    x[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"inputs contains NaN"):
        EventSchedule.from_inputs(x)


@pytest.mark.parametrize("shape", [(3, 127), (128,), (2, 3, 128)])
def test_inputs_wrong_shape(shape):
    with pytest.raises(ValueError, match=rf"inputs has shape {re_shape(shape)}"):
        EventSchedule.from_inputs(np.zeros(shape, np.int64))


@pytest.mark.parametrize("bad", [0, -2, 1.0])
def test_wait_between_events(bad):
    with pytest.raises(ValueError, match=rf"wait_between_events={re_repr(bad)} is not allowed"):
        EventSchedule.from_inputs(_inputs(3), wait_between_events=bad)


@pytest.mark.parametrize("bad", [0, 32])
def test_from_lists_value_out_of_range(bad):
    with pytest.raises(ValueError, match=rf"value\[1\]={bad} is out of range 1\.\.31"):
        EventSchedule.from_lists([[(0, 3, 0), (1, bad, 2)]])


def test_from_lists_driver_out_of_range():
    with pytest.raises(ValueError, match=r"driver\[2\]=128 is out of range 0\.\.127"):
        EventSchedule.from_lists([[(0, 3, 0)], [(1, 3, 2), (128, 3, 4)]])
    with pytest.raises(ValueError, match=r"driver\[0\]=-1 is out of range"):
        EventSchedule.from_lists([[(-1, 3, 0)]])


def test_from_lists_non_integer_and_malformed():
    with pytest.raises(ValueError, match=r"value=3\.0 is not an integer"):
        EventSchedule.from_lists([[(0, 3.0, 0)]])
    with pytest.raises(ValueError, match=r"cycle=nan is not an integer"):
        EventSchedule.from_lists([[(0, 3, float("nan"))]])
    with pytest.raises(ValueError, match=r"event 1 is \(0, 3\); expected \(driver, value, cycle\)"):
        EventSchedule.from_lists([[(0, 3, 0), (0, 3)]])


def test_events_out_of_order():
    with pytest.raises(ValueError, match=r"cycle\[2\]=3 is earlier than cycle\[1\]=5 in vector 0"):
        EventSchedule.from_lists([[(0, 3, 0), (1, 3, 5), (2, 3, 3)]])
    with pytest.raises(ValueError, match=r"cycle\[3\]=1 is earlier than cycle\[2\]=4 in vector 1"):
        EventSchedule.from_lists([[(0, 3, 9)], [(1, 3, 2), (2, 3, 4), (3, 3, 1)]])


def test_events_in_a_new_vector_may_start_earlier():
    s = EventSchedule.from_lists([[(0, 3, 9)], [(0, 3, 1)]])
    assert list(s.last_cycle()) == [9, 1]


def test_busy_driver():
    with pytest.raises(ValueError, match=r"driver\[2\]=4 is busy: it already has an event at cycle 6"):
        EventSchedule.from_lists([[(4, 3, 6), (5, 3, 6), (4, 9, 6)]])
    # The same driver one cycle later, or in another vector, is fine.
    EventSchedule.from_lists([[(4, 3, 6), (4, 3, 7)], [(4, 3, 6)]])


def test_from_arrays_checks():
    with pytest.raises(ValueError, match=r"offsets must start at 0 and end at the number of events 2"):
        EventSchedule.from_arrays([0, 1], [0, 1], [3, 3], [0, 1])
    with pytest.raises(ValueError, match=r"driver, value and cycle must have equal lengths"):
        EventSchedule.from_arrays([0, 2], [0, 1], [3], [0, 1])
    with pytest.raises(ValueError, match=r"offsets\[2\]=1 is below offsets\[1\]=2"):
        EventSchedule.from_arrays([0, 2, 1, 3], [0, 1, 2], [3, 3, 3], [0, 1, 2])
    with pytest.raises(ValueError, match=r"cycle\[1\]=-4 is out of range"):
        EventSchedule.from_arrays([0, 2], [0, 1], [3, 3], [0, -4])
    with pytest.raises(ValueError, match=r"value has dtype float64"):
        EventSchedule.from_arrays([0, 2], [0, 1], [3.0, 3.0], [0, 1])


# --- integration arguments ------------------------------------------------------

@pytest.fixture(scope="module")
def schedule():
    return EventSchedule.from_lists([[(0, 3, 0), (1, 3, 5)], [], [(2, 31, 9)]])


INTEGRATORS = [integrate_fast, integrate_trace]


@pytest.mark.parametrize("integrate", INTEGRATORS)
def test_read_before_last_event(chip, schedule, integrate):
    with pytest.raises(ValueError, match=r"read_cycle\[2\]=8 is before the last event of vector 2 \(cycle 9\)"):
        integrate(chip, 0, schedule, 8)
    with pytest.raises(ValueError, match=r"read_cycle\[0\]=4 is before the last event of vector 0"):
        integrate(chip, 0, schedule, np.array([4, 0, 20]))


@pytest.mark.parametrize("integrate", INTEGRATORS)
def test_negative_and_too_late_read(chip, schedule, integrate):
    with pytest.raises(ValueError, match=r"read_cycle\[0\]=-1 is out of range"):
        integrate(chip, 0, schedule, -1)
    with pytest.raises(ValueError, match=r"read_cycle\[1\]=-3 is out of range"):
        integrate(chip, 0, schedule, np.array([10, -3, 10]))
    # Reads are accepted up to constants.MAX_CYCLE (17 s), no later.
    with pytest.raises(ValueError, match=r"read_cycle\[0\]=2147483648 is out of range 0\.\.2147483647"):
        integrate(chip, 0, schedule, 2**31)


@pytest.mark.parametrize("integrate", INTEGRATORS)
def test_read_cycle_shape_and_dtype(chip, schedule, integrate):
    with pytest.raises(ValueError, match=r"read_cycle has shape \(2,\); expected a scalar or \(3,\)"):
        integrate(chip, 0, schedule, np.array([10, 10]))
    with pytest.raises(ValueError, match=r"read_cycle has shape \(4,\)"):
        integrate(chip, 0, schedule, [10, 10, 10, 10])
    with pytest.raises(ValueError, match=r"read_cycle has dtype float64"):
        integrate(chip, 0, schedule, 10.0)


@pytest.mark.parametrize("bad", [7, NoiseParams(), np.random.default_rng(0), "seed"])
@pytest.mark.parametrize("integrate", INTEGRATORS)
def test_noise_must_be_trial_noise(chip, schedule, integrate, bad):
    with pytest.raises(ValueError, match=r"noise=.* is not allowed: got a \w+, must be a bss2sim\.circuits\.TrialNoise or None \(noise off\)"):
        integrate(chip, 0, schedule, 20, noise=bad)


@pytest.mark.parametrize("integrate", INTEGRATORS)
def test_wrong_chip_and_schedule_types(chip, schedule, integrate):
    with pytest.raises(ValueError, match=r"chip='chip' is not allowed: got a str, must be a bss2sim\.circuits\.Chip"):
        integrate("chip", 0, schedule, 20)
    with pytest.raises(ValueError, match=r"schedule=array\(.* is not allowed: got a ndarray, must be a bss2sim\.circuits\.EventSchedule"):
        integrate(chip, 0, np.zeros((3, 128), np.int64), 20)


@pytest.mark.parametrize("bad", [0, 65, -1, 2.0])
def test_substeps_per_cycle(chip, schedule, bad):
    with pytest.raises(ValueError, match=rf"substeps_per_cycle={re_repr(bad)} is out of range 1\.\.64"):
        integrate_trace(chip, 0, schedule, 20, substeps_per_cycle=bad)


@pytest.mark.parametrize("bad", [0, -5])
def test_record_every(chip, schedule, bad):
    with pytest.raises(ValueError, match=rf"record_every={bad} must be an integer >= 1"):
        integrate_trace(chip, 0, schedule, 20, record_every=bad)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True])
def test_trial_noise_seed(bad):
    with pytest.raises(ValueError, match=rf"seed={re_repr(bad)}"):
        TrialNoise(bad)


def test_trial_noise_start_index():
    with pytest.raises(ValueError, match=r"start_index=-1 is not allowed: must be an integer"):
        TrialNoise(1, start_index=-1)


def test_schedule_slice_bounds(schedule):
    with pytest.raises(ValueError, match=r"slice 2:5 is outside 0\.\.3"):
        schedule.slice(2, 5)
