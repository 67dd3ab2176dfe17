"""Valid calls work, refused calls leave no trace, results do not depend on
batch splits at the network level, and bad values and types are refused with
the caller's parameter named."""
from __future__ import annotations

import copy

import numba
import numpy as np
import pytest

from bss2sim.circuits import (Chip, CircuitParams, EventSchedule, Faults, MismatchParams, NoiseParams,
                              TrialNoise, integrate_fast, integrate_trace)
from bss2sim.circuits import constants as K
from bss2sim.circuits import kernels as KR
from bss2sim.circuits.checks import WrongTypeError
from bss2sim.circuits.chip import PROPAGATOR_TABLE_CYCLES, _propagators
from bss2sim.digital import Accelerator, BehaviouralParams, measure_behaviour, paired_schedule
from bss2sim.digital import accelerator as accelerator_module
from bss2sim.experiments.calibration import calibrate, load_into
from bss2sim.experiments.training import MnistNet


@pytest.fixture(scope="module")
def chip():
    return Chip(5)


def _dense(rng, batch, k=128):
    return rng.integers(1, 32, (batch, k))


# --- 1. every documented-valid call works; a refused call leaves no trace ---------

@pytest.mark.parametrize("num_sends, wait", [(52, 5), (256, 5), (2, 255), (256, 255)])
def test_dense_long_integrations_work_at_both_fidelities(chip, num_sends, wait):
    rng = np.random.default_rng(num_sends + wait)
    x = _dense(rng, 3)
    w = rng.integers(-8, 9, (128, 20))
    for acc in (Accelerator(chip, noise_seed=1),
                Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=1)):
        y = acc.matmul(x, w, num_sends=num_sends, wait_between_events=wait)
        assert y.dtype == np.int64 and y.shape == (3, 20)
        assert y.min() >= -128 and y.max() <= 127
    # The long event phase is on the ledger: 128 slots x wait x sends per vector
    # (the one tile runs each of the three vectors alone, on one half or the other).
    assert acc.report()["event_phase_s"] == pytest.approx(3 * 128 * wait * num_sends * K.FPGA_CYCLE_S)


def test_long_run_is_split_invariant(chip):
    rng = np.random.default_rng(3)
    x = _dense(rng, 6)
    w = rng.integers(-63, 64, (128, 40))
    whole = Accelerator(chip, noise_seed=4).matmul(x, w, num_sends=60, wait_between_events=9)
    acc = Accelerator(chip, noise_seed=4)
    parts = np.concatenate([acc.matmul(x[:2], w, num_sends=60, wait_between_events=9),
                            acc.matmul(x[2:], w, num_sends=60, wait_between_events=9)])
    np.testing.assert_array_equal(whole, parts)


def test_intervals_beyond_the_tables_agree_with_the_trace_path():
    """Events after a long pause (beyond the propagator tables) and a late read:
    the fast path computes those propagators and agrees with the time-stepped path."""
    chip = Chip(2)
    rng = np.random.default_rng(0)
    chip.config.set_logical_weights(0, rng.integers(-30, 31, (128, 256)))
    start = PROPAGATOR_TABLE_CYCLES + 1000
    x = np.zeros((2, 128), np.int64)
    x[:, :12] = rng.integers(1, 32, (2, 12))
    sched = EventSchedule.from_inputs(x, wait_between_events=7, start_cycle=start)
    read = sched.last_cycle() + PROPAGATOR_TABLE_CYCLES + 50    # the tail is beyond the tables too
    read[1] = sched.last_cycle()[1] + 100
    fast = integrate_fast(chip, 0, sched, read)
    trace = integrate_trace(chip, 0, sched, read, substeps_per_cycle=2, record=False)
    diff = fast.codes.astype(int) - trace.codes.astype(int)
    assert np.abs(diff).max() <= 1
    np.testing.assert_allclose(fast.membrane_at_read_v, trace.membrane_at_read_v, atol=2e-4)


@pytest.mark.parametrize("n", [0, 1, 7, 255, 32768, 32769, 10**5, 2 * 10**6])
def test_computed_propagators_match_the_table_formula(chip, n):
    cp = chip.operating_point(0).column_params
    want = _propagators(cp, np.array([n * K.FPGA_CYCLE_S * 1e9]))[:, 0, :].astype(np.float32)
    got = KR._far_rows(cp, n, K.FPGA_CYCLE_S * 1e9, np.empty((KR.NUM_TABLES, cp.shape[1]), np.float32))
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-30)


def _state(acc):
    return (acc.noise_state(), copy.deepcopy(acc.ledger.seconds), acc.ledger.vmm_passes,
            acc.ledger.events, [(p.cycles, p.stream_seconds) for p in acc.ppus],
            acc.chip.config.version if acc.chip is not None else None,
            acc.chip.config.weights.copy() if acc.chip is not None else None)


def _assert_same_state(a, b):
    assert a[:6] == b[:6]
    if a[6] is not None:
        np.testing.assert_array_equal(a[6], b[6])


@pytest.mark.parametrize("bad", [
    dict(num_sends=257), dict(num_sends=0), dict(num_sends=2.0), dict(wait_between_events=256),
    dict(wait_between_events=True), dict(stream=-1), dict(stream="a"),
])
def test_refused_calls_leave_no_trace(chip, bad):
    rng = np.random.default_rng(1)
    x, w = _dense(rng, 4, 300), rng.integers(-63, 64, (300, 300))
    acc = Accelerator(chip, noise_seed=2)
    acc.matmul(x[:2], w)
    before = _state(acc)
    with pytest.raises(ValueError) as err:
        acc.matmul(x, w, **bad)
    assert next(iter(bad)) in str(err.value)
    _assert_same_state(before, _state(acc))
    fresh = Accelerator(chip, noise_seed=2)
    fresh.matmul(x[:2], w)
    np.testing.assert_array_equal(acc.matmul(x, w), fresh.matmul(x, w))


def test_a_call_failing_half_way_is_rolled_back(chip, monkeypatch):
    """An error after kernels have run (here injected into the second
    integration) leaves noise counters, ledger, PPUs and chip weights as they were."""
    rng = np.random.default_rng(2)
    x, w = _dense(rng, 4, 300), rng.integers(-63, 64, (300, 600))
    acc = Accelerator(chip, noise_seed=3)
    acc.matmul(x[:1], w[:, :10])
    before = _state(acc)
    real = accelerator_module.integrate_fast
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(accelerator_module, "integrate_fast", flaky)
    with pytest.raises(KeyboardInterrupt):
        acc.matmul(x, w)
    monkeypatch.setattr(accelerator_module, "integrate_fast", real)
    assert len(calls) == 3
    _assert_same_state(before, _state(acc))
    fresh = Accelerator(chip, noise_seed=3)
    fresh.matmul(x[:1], w[:, :10])
    np.testing.assert_array_equal(acc.matmul(x, w), fresh.matmul(x, w))


def test_streams_count_their_own_vectors(chip):
    rng = np.random.default_rng(4)
    x, w = _dense(rng, 4), rng.integers(-63, 64, (128, 30))
    a = Accelerator(chip, noise_seed=7)
    a.matmul(x, w, stream=2)
    y0 = a.matmul(x, w)                                  # stream 0 untouched by stream 2
    np.testing.assert_array_equal(y0, Accelerator(chip, noise_seed=7).matmul(x, w))
    assert a.noise_state() == {0: 4, 2: 4}
    b = Accelerator(chip, noise_seed=7)
    b.set_noise_state(a.noise_state())
    np.testing.assert_array_equal(a.matmul(x, w, stream=2), b.matmul(x, w, stream=2))
    # Another stream draws other noise.
    c = Accelerator(chip, noise_seed=7)
    assert not np.array_equal(c.matmul(x, w, stream=1), Accelerator(chip, noise_seed=7).matmul(x, w))


# --- 2. network results do not depend on batch splits or threads -------------------

@pytest.fixture(scope="module")
def net_and_images():
    net = MnistNet(gain=0.0015, seed=3, num_sends=(2, 2, 2))
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    return net, net.prepare_inputs(images)


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
def test_network_forward_is_batch_split_invariant(chip, net_and_images, fidelity):
    net, x = net_and_images

    def make():
        if fidelity == "chip":
            return Accelerator(chip, noise_seed=11)
        return Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=11)

    whole = net.forward(x, fidelity, make())
    for cuts in ([2], [1, 2, 3], [5]):
        acc = make()
        parts, start = [], 0
        for stop in cuts + [len(x)]:
            parts.append(net.forward(x[start:stop], fidelity, acc))
            start = stop
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    acc_a, acc_b = make(), make()
    np.testing.assert_array_equal(net.predict(x, fidelity, acc_a, batch_size=4),
                                  net.predict(x, fidelity, acc_b, batch_size=1))


def test_network_forward_is_thread_count_invariant(chip, net_and_images):
    net, x = net_and_images
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = net.forward(x, "chip", Accelerator(chip, noise_seed=12))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, net.forward(x, "chip", Accelerator(chip, noise_seed=12)))


# --- 4. values that must not be accepted ---------------------------------------

@pytest.mark.parametrize("seed", [1.5, 1.0, True, "1", None, -1, 2**64])
def test_seeds_are_integers(chip, seed):
    for call, name in ((lambda: Chip(seed), "seed"), (lambda: TrialNoise(seed), "seed"),
                       (lambda: Accelerator(chip, noise_seed=seed if seed is not None else "x"),
                        "noise_seed"),
                       (lambda: MnistNet(seed=seed), "seed"),
                       (lambda: measure_behaviour(chip, seed=seed), "seed")):
        with pytest.raises((ValueError, TypeError)) as err:
            call()
        assert f"{name}=" in str(err.value)


def test_a_float_calibration_seed_changes_nothing():
    c = Chip(1)
    version = c.config.version
    with pytest.raises(TypeError, match="noise_seed=1.5"):
        calibrate(c, noise_seed=1.5)
    assert c.config.version == version


def test_messages_name_the_callers_parameter(chip):
    with pytest.raises(ValueError, match=r"noise_seed=-1\b"):
        Accelerator(chip, noise_seed=-1)
    with pytest.raises(ValueError, match=r"BehaviouralParams.gain"):
        BehaviouralParams(gain=True, sigma=1.0)
    with pytest.raises(ValueError, match=r"BehaviouralParams.sigma"):
        BehaviouralParams(gain=0.001, sigma="2")
    with pytest.raises(ValueError, match="BehaviouralParams.gain"):
        BehaviouralParams(gain=float("nan"), sigma=1.0)


def test_event_cycles_have_one_limit_everywhere():
    x = np.zeros((1, 128), np.int64)
    x[0, :3] = 5
    with pytest.raises(ValueError, match="wait_between_events"):
        EventSchedule.from_inputs(x, wait_between_events=10**9 + 7 * 10**8)
    with pytest.raises(ValueError, match="start_cycle"):
        EventSchedule.from_inputs(x, start_cycle=2**31)
    with pytest.raises(ValueError, match="start_cycle"):
        paired_schedule(x, None, start_cycle=2**31 - 10)
    with pytest.raises(ValueError, match="read_cycle"):
        integrate_fast(Chip(0), 0, EventSchedule.from_inputs(x), 2**31)
    # The largest cycle is accepted by every path that takes cycles.
    s = EventSchedule.from_arrays([0, 1], [3], [4], [K.MAX_CYCLE])
    assert s.last_cycle()[0] == K.MAX_CYCLE


@pytest.mark.parametrize("field, values", [
    ("driver", [-1]), ("driver", [128]), ("value", [0]), ("value", [32]), ("cycle", [-1]),
    ("cycle", [2**31]), ("driver", [1.0]), ("cycle", ["3"]),
])
def test_the_plain_schedule_constructor_validates(field, values):
    arrays = dict(offsets=np.array([0, 1]), driver=np.array([3]), value=np.array([4]), cycle=np.array([9]))
    arrays[field] = np.array(values)
    with pytest.raises(ValueError, match=field):
        EventSchedule(**arrays)


def test_schedule_arrays_are_not_aliased():
    driver = np.array([3, 4])
    s = EventSchedule(np.array([0, 2]), driver, np.array([4, 4]), np.array([1, 1]))
    driver[0] = 120
    assert s.driver[0] == 3 and not s.driver.flags.writeable


# --- 5. wrong types ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    (dict(mismatch="none"), "mismatch"), (dict(circuit=3), "circuit"), (dict(noise="off"), "noise"),
    (dict(faults=[(0, 1)]), "faults"), (dict(mismatch=MismatchParams), "mismatch"),
])
def test_chip_arguments_of_the_wrong_type(kwargs, name):
    with pytest.raises(TypeError, match=name):
        Chip(0, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(dead_synapse_rows=[(0,)]), "dead_synapse_rows"),
    (dict(dead_synapse_rows=(0, 1)), "dead_synapse_rows"),
    (dict(dead_synapse_rows=[(0, "a")]), "dead_synapse_rows"),
    (dict(dead_synapse_rows=[(2, 1)]), "dead_synapse_rows"),
    (dict(stuck_cadc_channels=[(0, 3)]), "stuck_cadc_channels"),
    (dict(stuck_cadc_channels=[(0, 3, 256)]), "stuck_cadc_channels"),
    (dict(driver_offset_extra_s=[(0, 3, "x")]), "driver_offset_extra_s"),
    (dict(driver_offset_extra_s=[(0, 3, float("inf"))]), "driver_offset_extra_s"),
    (dict(driver_offset_extra_s="abc"), "driver_offset_extra_s"),
])
def test_malformed_faults(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        Faults(**kwargs)


def test_well_formed_faults_are_kept():
    f = Faults(dead_synapse_rows=[[0, 4]], driver_offset_extra_s=[(1, 2, 3e-9)])
    assert f.dead_synapse_rows == ((0, 4),) and f.driver_offset_extra_s == ((1, 2, 3e-9),)
    Chip(0, faults=f)


def test_parameter_dataclasses_refuse_strings():
    with pytest.raises(TypeError, match="CircuitParams.tau_syn_s"):
        CircuitParams(tau_syn_s="fast")
    with pytest.raises(TypeError, match="NoiseParams.cadc_read_noise_lsb"):
        NoiseParams(cadc_read_noise_lsb=None)
    with pytest.raises(TypeError, match="factor"):
        MismatchParams().scaled("2")


def test_calibration_loader_given_a_string_for_the_chip(tmp_path):
    with pytest.raises(TypeError, match="chip"):
        load_into("chip 0", tmp_path)
    with pytest.raises(TypeError, match="chip"):
        calibrate("chip 0")


@pytest.mark.parametrize("x, w, name", [
    ([[1, 2], [3]], np.ones((2, 2), int), "x"),
    ([[1, 2]], [[1, 2], [3]], "w"),
    ([["a", "b"]], np.ones((2, 2), int), "x"),
    ([[1, 2]], [[1.5, 2], [3, 4]], "w"),
    ("12", np.ones((2, 2), int), "x"),
])
def test_ragged_and_foreign_inputs(chip, x, w, name):
    for acc in (Accelerator(chip), Accelerator(behavioural=BehaviouralParams(0.0015, 2.0))):
        with pytest.raises((TypeError, ValueError)) as err:
            acc.matmul(x, w)
        assert str(err.value).startswith(name)


def test_ragged_lists_elsewhere(chip):
    with pytest.raises(ValueError, match="weights"):
        Chip(0).config.set_logical_weights(0, [[1, 2], [3]])
    with pytest.raises(ValueError, match="inputs"):
        EventSchedule.from_inputs([[1] * 128, [1] * 127])
    with pytest.raises(TypeError, match="vectors"):
        EventSchedule.from_lists(5)
    with pytest.raises(TypeError, match="schedule"):
        integrate_fast(chip, 0, [(1, 2, 3)], 10)
    with pytest.raises(TypeError, match="noise"):
        integrate_fast(chip, 0, EventSchedule.from_lists([[]]), 10, noise=3)


def test_wrong_type_errors_are_value_errors_too():
    """Callers that catch ValueError keep working."""
    assert issubclass(WrongTypeError, TypeError) and issubclass(WrongTypeError, ValueError)


def test_loaders_name_a_path_of_the_wrong_type(tmp_path):
    from bss2sim.experiments.calibration.persistence import read_calibration
    from bss2sim.experiments.common import load_results, load_test_images
    from bss2sim.experiments.datasets.mnist import load_mnist
    from bss2sim.experiments.training import load_checkpoint
    for call, name in ((lambda: read_calibration(123), "path"), (lambda: load_checkpoint(3.5), "path"),
                       (lambda: load_test_images(["x"]), "path"), (lambda: load_results(None), "path"),
                       (lambda: load_mnist("test", 5), "data_dir"), (lambda: load_checkpoint(""), "path")):
        with pytest.raises((TypeError, ValueError), match=f"^{name}="):
            call()
