"""Configuration writes and the operating points derived from them."""
import numpy as np

from bss2sim.circuits import Chip, EventSchedule, integrate_fast


def _codes(chip):
    sched = EventSchedule.from_inputs(np.full((1, 128), 20), wait_between_events=5)
    return integrate_fast(chip, 0, sched, sched.last_cycle() + 125).codes


def test_replaced_config_is_not_served_from_the_cache():
    chip = Chip(5)
    chip.config.set_logical_weights(0, np.full((128, 256), 40))
    strong = _codes(chip)
    saved = chip.config.copy()
    chip.config.set_logical_weights(0, np.zeros((128, 256), np.int64))
    silent = _codes(chip)
    assert np.abs(strong.astype(int) - silent.astype(int)).min() > 5
    chip.config = saved                     # back to the strong weights
    np.testing.assert_array_equal(_codes(chip), strong)


def test_copy_is_independent():
    chip = Chip(5)
    copy = chip.config.copy()
    chip.config.set_driver_offsets(0, np.full(128, 10))
    assert np.all(copy.driver_offset[0] == 32)
    assert copy.version != chip.config.version


def test_config_arrays_are_read_only():
    chip = Chip(5)
    for arr in (chip.config.weights, chip.config.row_sign, chip.config.driver_offset,
                chip.config.cadc_digital_offset, chip.config.capmem("synapse_bias")):
        assert not arr.flags.writeable
    assert not chip.truth.synapse_gain.flags.writeable
