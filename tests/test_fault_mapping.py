"""Fault-aware mapping (``Accelerator(..., faulty=FaultyUnits(...))``) against
slow, obvious references written out here: the physical weight tile built
entry by entry, one vector at a time through ``integrate_fast`` and the
PPU's arithmetic, tile counts from the tile shape, and injected chip faults
(a stuck CADC channel, a dead synapse row) that the mapping must route around.
"""
from __future__ import annotations

import dataclasses
import json

import numba
import numpy as np
import pytest

import bss2sim.digital.accelerator as accelerator_module
from bss2sim.circuits import Chip, EventSchedule, Faults, MismatchParams, integrate_fast
from bss2sim.circuits.checks import WrongTypeError
from bss2sim.digital import Accelerator, BehaviouralParams, FaultyUnits, unfold2d
from bss2sim.experiments.faults import fault_study

# A faulty set that touches both halves unevenly, so that the halves' tiles use
# different physical units and the tile shape is set by the worse half.
FAULTY = FaultyUnits(columns=((0, 10), (0, 57), (1, 0)), drivers=((0, 3), (0, 50), (1, 7)))


def sparse_x(rng, B, Kin, density=0.5):
    return rng.integers(1, 32, (B, Kin)) * (rng.random((B, Kin)) < density)


def ideal_chip(faults=None):
    """A chip without fixed-pattern mismatch: every column and driver alike, so a
    result moved to another column or driver stays the same (the "ideal" preset:
    no per-synapse DAC bits, per-column injection or ripple phases either)."""
    return Chip(0, mismatch=MismatchParams.none(), faults=faults, preset="ideal")


def capture_integrations(monkeypatch):
    """Record (half, schedule) of every integration the accelerator runs."""
    seen = []
    original = accelerator_module.integrate_fast

    def spy(chip, half, schedule, read_cycle, **kw):
        seen.append((half, schedule))
        return original(chip, half, schedule, read_cycle, **kw)
    monkeypatch.setattr(accelerator_module, "integrate_fast", spy)
    return seen


# --- FaultyUnits ------------------------------------------------------------------

def test_faulty_units_normalise_and_healthy_units():
    f = FaultyUnits(columns=[(1, 5), [0, 200], (1, 5), (np.int64(0), np.int32(3))], drivers=[(1, 127)])
    assert f.columns == ((0, 3), (0, 200), (1, 5))
    assert all(type(v) is int for pair in f.columns for v in pair)
    assert f.drivers == ((1, 127),)
    assert np.array_equal(f.healthy_columns(0), [c for c in range(256) if c not in (3, 200)])
    assert np.array_equal(f.healthy_columns(1), [c for c in range(256) if c != 5])
    assert np.array_equal(f.healthy_drivers(0), np.arange(128))
    assert np.array_equal(f.healthy_drivers(1), np.arange(127))
    assert f.healthy_drivers(1).dtype.kind == "i"
    assert FaultyUnits() == FaultyUnits(columns=[], drivers=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.columns = ()
    with pytest.raises(ValueError, match=r"half=2 .*0\.\.1"):
        f.healthy_columns(2)


def test_faulty_units_dict_round_trip_through_json():
    back = FaultyUnits.from_dict(json.loads(json.dumps(FAULTY.to_dict())))
    assert back == FAULTY
    assert FAULTY.to_dict() == {"columns": [[0, 10], [0, 57], [1, 0]], "drivers": [[0, 3], [0, 50], [1, 7]]}
    assert FaultyUnits.from_dict({"columns": [], "drivers": []}) == FaultyUnits()


@pytest.mark.parametrize("kwargs,error,pattern", [
    ({"columns": ((2, 0),)}, ValueError, r"FaultyUnits\.columns\[0\]\.half=2 .*0\.\.1"),
    ({"columns": ((0, 256),)}, ValueError, r"FaultyUnits\.columns\[0\]\.column=256 .*0\.\.255"),
    ({"columns": ((0, -1),)}, ValueError, r"column=-1 .*0\.\.255"),
    ({"drivers": ((1, 128),)}, ValueError, r"FaultyUnits\.drivers\[0\]\.driver=128 .*0\.\.127"),
    ({"drivers": ((0, 1), (0,))}, TypeError, r"FaultyUnits\.drivers\[1\]=\(0,\) .*pair"),
    ({"drivers": ((0, 1.0),)}, TypeError, r"driver=1\.0 .*float"),
    ({"columns": ((True, 0),)}, TypeError, r"half=True"),
    ({"columns": "0,1"}, TypeError, r"FaultyUnits\.columns='0,1' .*tuple of \(half, column\)"),
    ({"columns": 5}, TypeError, r"FaultyUnits\.columns=5"),
])
def test_faulty_units_bad_entries(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        FaultyUnits(**kwargs)


@pytest.mark.parametrize("d,error,pattern", [
    ([], TypeError, r"must be a dict"),
    ({"columns": []}, ValueError, r"missing drivers"),
    ({"columns": [], "drivers": [], "extra": []}, ValueError, r"unknown 'extra'"),
    ({"columns": [(0, 1)], "drivers": []}, TypeError, r"columns=.*list of \[half, index\] lists"),
    ({"columns": [[0, 1]], "drivers": [[0, 300]]}, ValueError, r"driver=300 .*0\.\.127"),
    ({"columns": [[0, 1.5]], "drivers": []}, TypeError, r"column=1\.5"),
])
def test_faulty_units_from_dict_is_strict(d, error, pattern):
    with pytest.raises(error, match=pattern):
        FaultyUnits.from_dict(d)


# --- the accelerator's argument -------------------------------------------------------

def test_bad_faulty_argument_is_refused_and_changes_nothing():
    chip = Chip(0)
    version, weights = chip.config.version, chip.config.weights.copy()
    with pytest.raises(WrongTypeError, match=r"faulty=\{'columns'.*FaultyUnits"):
        Accelerator(chip, faulty={"columns": [], "drivers": []})
    with pytest.raises(ValueError, match=r"faulty\.columns names all 256 columns of half 1.*at most 255"):
        Accelerator(chip, faulty=FaultyUnits(columns=[(1, c) for c in range(256)]))
    with pytest.raises(ValueError, match=r"faulty\.drivers names all 128 drivers of half 0.*at most 127"):
        Accelerator(behavioural=BehaviouralParams(0.002, 0.0),
                    faulty=FaultyUnits(drivers=[(0, d) for d in range(128)]))
    assert chip.config.version == version
    assert np.array_equal(chip.config.weights, weights)
    # One healthy unit per half is enough.
    acc = Accelerator(chip, faulty=FaultyUnits(columns=[(1, c) for c in range(255)]))
    assert acc.tile_shape == (128, 1)


def test_faulty_property_is_read_only_and_defaults_to_empty():
    acc = Accelerator(Chip(0))
    assert acc.faulty == FaultyUnits()
    assert acc.tile_shape == (128, 256)
    acc = Accelerator(Chip(0), faulty=FAULTY)
    assert acc.faulty is FAULTY
    assert acc.tile_shape == (126, 254)
    with pytest.raises(AttributeError):
        acc.faulty = FaultyUnits()


@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
def test_empty_faulty_set_is_bit_identical_to_none(fidelity):
    rng = np.random.default_rng(3)
    x, w = sparse_x(rng, 7, 300), rng.integers(-63, 64, (300, 300))
    xc, wc = rng.integers(0, 32, (2, 1, 12, 12)), rng.integers(-63, 64, (4, 1, 3, 3))

    def make(**kw):
        if fidelity == "chip":
            return Accelerator(Chip(0), noise_seed=5, **kw)
        return Accelerator(behavioural=BehaviouralParams(0.002, 2.0), noise_seed=5, **kw)
    results = []
    for acc in (make(), make(faulty=FaultyUnits()), make(faulty=None)):
        results.append((acc.matmul(x, w, num_sends=2), acc.matmul(x[:3, :100], w[:100, :20], stream=2),
                        acc.conv2d(xc, wc, stride=2, padding=1), acc.report()))
    for other in results[1:]:
        for a, b in zip(results[0][:3], other[:3]):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert other[3] == results[0][3]


# --- (a) weights and events stay off faulty units -------------------------------------

def test_faulty_units_hold_no_weights_and_get_no_events(monkeypatch):
    chip = Chip(0)
    acc = Accelerator(chip, faulty=FAULTY)
    seen = capture_integrations(monkeypatch)
    rng = np.random.default_rng(1)
    # Dense inputs and non-zero weights: every healthy driver in use sends events.
    x = rng.integers(1, 32, (6, 100))
    w = rng.integers(1, 64, (100, 250)) * rng.choice([-1, 1], (100, 250))
    acc.matmul(x, w)
    weights = chip.config.weights
    for h in range(2):
        bad_drivers = [d for hh, d in FAULTY.drivers if hh == h]
        bad_columns = [c for hh, c in FAULTY.columns if hh == h]
        rows = [r for d in bad_drivers for r in (2 * d, 2 * d + 1)]
        assert not weights[h][rows].any()
        assert not weights[h][:, bad_columns].any()
        # The tile holds 100 rows x 250 columns on the healthy units, in order.
        drv = FAULTY.healthy_drivers(h)[:100]
        col = FAULTY.healthy_columns(h)[:250]
        logical = weights[h][2 * drv][:, col].astype(int) - weights[h][2 * drv + 1][:, col]
        assert np.array_equal(logical, w)
    event_halves = set()
    for h, sched in seen:
        if sched.num_events:
            event_halves.add(h)
            assert not np.isin(sched.driver, [d for hh, d in FAULTY.drivers if hh == h]).any()
    assert event_halves == {0, 1}


# --- (b) the mapped result against a hand-built physical tile --------------------------

def reference_half(chip, half, x_phys, w_phys, num_sends, wait, x_other=None):
    """One half's int8 results of physical inputs (B, 128) on a physical tile
    (128, 256), one vector at a time, noise off: the PPU's program written out
    at the times of the published sequence (baseline read, events ending with
    those of the partner vector ``x_other`` of the other half, read after them,
    read - baseline saturated to int8)."""
    from bss2sim.digital.sequences import profile
    prof = profile("published")
    chip.config.set_logical_weights(half, w_phys)
    out = np.zeros((len(x_phys), 256), np.int64)
    for b, xb in enumerate(x_phys):
        stream = [d for _ in range(num_sends) for d in range(128) if xb[d]]
        m = max(len(stream), 0 if x_other is None else num_sends * int(np.count_nonzero(x_other[b])))
        ev = [(d, int(xb[d]), prof.event_start[half] + (m - len(stream) + j) * wait)
              for j, d in enumerate(stream)]
        base = integrate_fast(chip, half, EventSchedule.from_lists([[]]), prof.baseline_cycles[half])
        read = integrate_fast(chip, half, EventSchedule.from_lists([ev]),
                              prof.event_start[half] + m * wait + prof.read_after_events[half])
        out[b] = np.clip(read.codes[0].astype(np.int64) - base.codes[0], -128, 127)
    return out


def scatter(faulty, half, w, x, R, C):
    """Logical weights (K, N) and inputs (B, K) on the half's k-th healthy
    driver and j-th healthy column, entry by entry."""
    drv, col = faulty.healthy_drivers(half)[:R], faulty.healthy_columns(half)[:C]
    w_phys = np.zeros((128, 256), np.int64)
    for k in range(w.shape[0]):
        for j in range(w.shape[1]):
            w_phys[drv[k], col[j]] = w[k, j]
    x_phys = np.zeros((x.shape[0], 128), np.int64)
    for k in range(x.shape[1]):
        x_phys[:, drv[k]] = x[:, k]
    return w_phys, x_phys, col


def test_single_tile_matches_hand_built_physical_tile():
    rng = np.random.default_rng(2)
    B, Kin, N = 6, 90, 120
    x = sparse_x(rng, B, Kin)
    w = rng.integers(-63, 64, (Kin, N))
    w[:, -1] = 40        # the last logical column holds weights (columns past it read 0)
    got = Accelerator(Chip(0), noise_seed=None, faulty=FAULTY).matmul(x, w, num_sends=2, wait_between_events=3)
    ref_chip = Chip(0)
    want = np.zeros((B, N), np.int64)
    for h in range(2):
        # One tile left over: even vectors run on the top half, odd ones on the bottom.
        mine = np.arange(B) % 2 == h
        w_phys, x_phys, col = scatter(FAULTY, h, w, x[mine], 126, 254)
        want[mine] = reference_half(ref_chip, h, x_phys, w_phys, 2, 3)[:, col[:N]]
    assert np.array_equal(got, want)
    assert np.abs(want).max() > 10       # a signal, not a comparison of zeros


def test_pair_of_row_tiles_matches_hand_built_physical_tiles():
    rng = np.random.default_rng(4)
    B, Kin, N = 4, 200, 60        # 126 healthy drivers: two row tiles, one per half
    x = sparse_x(rng, B, Kin)
    w = rng.integers(-63, 64, (Kin, N))
    got = Accelerator(Chip(0), noise_seed=None, faulty=FAULTY).matmul(x, w)
    ref_chip = Chip(0)
    parts, phys = [], []
    for h, rows in ((0, slice(0, 126)), (1, slice(126, 200))):
        phys.append(scatter(FAULTY, h, w[rows], x[:, rows], 126, 254))
    for h in (0, 1):
        w_phys, x_phys, col = phys[h]
        parts.append(reference_half(ref_chip, h, x_phys, w_phys, 1, 5, x_other=phys[1 - h][1])[:, col[:N]])
    assert np.array_equal(got, np.clip(parts[0] + parts[1], -128, 127))


# --- (c), (d) injected faults are routed around ---------------------------------------

def stuck_case():
    rng = np.random.default_rng(1)
    return sparse_x(rng, 40, 128), rng.integers(-30, 31, (128, 32))


def test_stuck_cadc_channel_is_routed_around():
    x, w = stuck_case()
    stuck = Faults(stuck_cadc_channels=((0, 5, 100), (1, 5, 100)))
    avoid = FaultyUnits(columns=((0, 5), (1, 5)))
    # Ideal chip: a column is as good as its neighbour, so the mapped result is the
    # fault-free one; without the mapping output 5 reads read - baseline = 0.
    clean = Accelerator(ideal_chip(), noise_seed=None).matmul(x, w, num_sends=6)
    broken = Accelerator(ideal_chip(stuck), noise_seed=None).matmul(x, w, num_sends=6)
    mapped = Accelerator(ideal_chip(stuck), noise_seed=None, faulty=avoid).matmul(x, w, num_sends=6)
    assert np.all(broken[:, 5] == 0) and np.abs(clean[:, 5]).mean() > 10
    assert np.abs(mapped - clean).max() <= 1
    # A chip with mismatch: output 5 now runs on column 6, with its own gain (and,
    # uncalibrated, its own DAC bit currents and charge injection), but follows the
    # fault-free output closely.
    clean = Accelerator(Chip(0), noise_seed=None).matmul(x, w, num_sends=6)
    broken = Accelerator(Chip(0, faults=stuck), noise_seed=None).matmul(x, w, num_sends=6)
    mapped = Accelerator(Chip(0, faults=stuck), noise_seed=None, faulty=avoid).matmul(x, w, num_sends=6)
    assert np.all(broken[:, 5] == 0) and np.std(clean[:, 5]) > 10
    assert np.corrcoef(mapped[:, 5], clean[:, 5])[0, 1] > 0.9


def test_dead_synapse_row_is_routed_around():
    rng = np.random.default_rng(1)
    d = 9
    x = sparse_x(rng, 40, 128)
    w = rng.integers(-30, 31, (128, 32))
    x[:, d], w[d] = 31, 60     # driver d carries a large positive share of every output
    dead = Faults(dead_synapse_rows=((0, 2 * d), (1, 2 * d)))     # its excitatory rows
    avoid = FaultyUnits(drivers=((0, d), (1, d)))
    for make in (ideal_chip, lambda faults=None: Chip(0, faults=faults)):
        clean = Accelerator(make(), noise_seed=None).matmul(x, w, num_sends=2)
        broken = Accelerator(make(dead), noise_seed=None).matmul(x, w, num_sends=2)
        mapped = Accelerator(make(dead), noise_seed=None, faulty=avoid).matmul(x, w, num_sends=2)
        assert np.mean(broken - clean) < -4          # the dead row's share is missing
        assert abs(np.mean(mapped - clean)) < 1
    # On the ideal chip the mapped result is the fault-free one to one LSB (127
    # healthy drivers cut the 128 rows into two tiles, each rounded on its own).
    clean = Accelerator(ideal_chip(), noise_seed=None).matmul(x, w, num_sends=2)
    mapped = Accelerator(ideal_chip(dead), noise_seed=None, faulty=avoid).matmul(x, w, num_sends=2)
    assert np.abs(mapped - clean).max() <= 1


def test_conv2d_follows_the_mapping():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 32, (2, 3, 9, 9))
    w = rng.integers(-40, 41, (8, 3, 3, 3))
    stuck = Faults(stuck_cadc_channels=((0, 2, 50), (1, 2, 50)))
    avoid = FaultyUnits(columns=((0, 2), (1, 2)))
    clean = Accelerator(ideal_chip(), noise_seed=None).conv2d(x, w, padding=1, num_sends=4)
    broken = Accelerator(ideal_chip(stuck), noise_seed=None).conv2d(x, w, padding=1, num_sends=4)
    mapped = Accelerator(ideal_chip(stuck), noise_seed=None, faulty=avoid).conv2d(x, w, padding=1, num_sends=4)
    assert np.all(broken[:, 2] == 0) and np.abs(clean[:, 2]).mean() > 5
    assert np.abs(mapped - clean).max() <= 1


# --- (e) tiling and the ledger ----------------------------------------------------------

@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
def test_faulty_columns_need_a_second_column_tile(fidelity):
    rng = np.random.default_rng(8)
    B = 5
    x = sparse_x(rng, B, 200)
    w = rng.integers(-63, 64, (200, 256))

    def make(faulty=None):
        if fidelity == "chip":
            return Accelerator(Chip(0), faulty=faulty)
        return Accelerator(behavioural=BehaviouralParams(0.002, 2.0), faulty=faulty)
    plain, mapped = make(), make(FaultyUnits(columns=((0, 3), (0, 100), (0, 255))))
    assert mapped.tile_shape == (128, 253)
    for acc in (plain, mapped):
        acc.matmul(x, w)
    # Fault-free: 2 row tiles x 1 column tile, one pair of tiles = one write, B passes.
    # Mapped: 2 x ceil(256 / 253) = 4 tiles = two pairs: two writes, 2 B passes, and
    # every input is sent once per column tile.
    nnz = int(np.count_nonzero(x))
    assert (plain.ledger.weight_tile_writes, plain.ledger.vmm_passes, plain.ledger.events) == (1, B, nnz)
    assert (mapped.ledger.weight_tile_writes, mapped.ledger.vmm_passes, mapped.ledger.events) \
        == (2, 2 * B, 2 * nnz)
    assert mapped.report()["total_s"] > plain.report()["total_s"]


def test_faulty_drivers_need_a_second_row_tile():
    rng = np.random.default_rng(9)
    B = 6
    x = rng.integers(1, 32, (B, 128))            # dense: every input an event
    w = rng.integers(-63, 64, (128, 40))
    plain = Accelerator(Chip(0))
    mapped = Accelerator(Chip(0), faulty=FaultyUnits(drivers=((1, 0), (1, 64))))
    assert mapped.tile_shape == (126, 256)
    for acc in (plain, mapped):
        acc.matmul(x, w)
    # Fault-free: one tile left over, each vector alone on one half: B entries.
    # Mapped: rows 0..125 and 126..127 are a pair of tiles: B entries too.
    assert (plain.ledger.weight_tile_writes, plain.ledger.vmm_passes) == (1, B)
    assert (mapped.ledger.weight_tile_writes, mapped.ledger.vmm_passes) == (1, B)
    assert plain.ledger.events == mapped.ledger.events == B * 128
    # The bottom half's event phase holds only 2 events per vector, the top half's
    # 126: paired slots take the longer, 126 x 5 cycles of 8 ns.
    assert mapped.ledger.seconds["event_phase"] == pytest.approx(B * 126 * 5 * 8e-9)


# --- (f) a call that fails half-way leaves nothing changed --------------------------------

def test_failed_call_with_faulty_units_changes_nothing(monkeypatch):
    chip = Chip(0)
    acc = Accelerator(chip, faulty=FAULTY)
    rng = np.random.default_rng(10)
    x, w = sparse_x(rng, 5, 300), rng.integers(-63, 64, (300, 300))
    acc.matmul(x[:2], w, stream=1)
    state = (acc.noise_state(), acc.report(), chip.config.version, chip.config.weights.copy())
    calls = []
    original = accelerator_module.integrate_fast

    def fail_late(*args, **kw):
        calls.append(1)
        if len(calls) == 5:               # after the first pass and weight write
            raise KeyboardInterrupt
        return original(*args, **kw)
    monkeypatch.setattr(accelerator_module, "integrate_fast", fail_late)
    with pytest.raises(KeyboardInterrupt):
        acc.matmul(x, w, stream=1)
    monkeypatch.undo()
    assert len(calls) == 5
    assert (acc.noise_state(), acc.report(), chip.config.version) == state[:3]
    assert np.array_equal(chip.config.weights, state[3])
    with pytest.raises(ValueError, match=r"x\[0, 0\]=32 is out of range 0\.\.31"):
        acc.matmul(np.full((2, 300), 32), w, stream=1)
    assert acc.noise_state() == state[0]
    # And the next call gives what it gives on an accelerator that never failed.
    again = Accelerator(Chip(0), faulty=FAULTY)
    again.matmul(x[:2], w, stream=1)
    assert np.array_equal(acc.matmul(x, w, stream=1), again.matmul(x, w, stream=1))


# --- (g) batch splits and thread counts ---------------------------------------------------

@pytest.mark.parametrize("fidelity", ["chip", "behavioural"])
def test_batch_split_invariance_with_faulty_units(fidelity):
    rng = np.random.default_rng(11)
    # 260 inputs on 126 healthy drivers: 3 row tiles, one pair and one left over.
    x, w = sparse_x(rng, 9, 260), rng.integers(-63, 64, (260, 100))

    def make():
        if fidelity == "chip":
            return Accelerator(Chip(0), noise_seed=17, faulty=FAULTY)
        return Accelerator(behavioural=BehaviouralParams(0.003, 2.0), noise_seed=17, faulty=FAULTY)
    whole = make().matmul(x, w, stream=4)
    for cuts in ((4,), (1, 2, 7), (5, 6)):
        acc = make()
        parts = [acc.matmul(x[a:b], w, stream=4) for a, b in zip((0,) + cuts, cuts + (9,))]
        assert np.array_equal(np.concatenate(parts), whole), cuts
    # The noise is on: another seed changes the result.
    other = Accelerator(Chip(0), noise_seed=18, faulty=FAULTY) if fidelity == "chip" else \
        Accelerator(behavioural=BehaviouralParams(0.003, 2.0), noise_seed=18, faulty=FAULTY)
    assert not np.array_equal(other.matmul(x, w, stream=4), whole)


def test_thread_count_does_not_change_results_with_faulty_units():
    rng = np.random.default_rng(12)
    x, w = sparse_x(rng, 9, 260), rng.integers(-63, 64, (260, 100))
    default_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = Accelerator(Chip(0), noise_seed=3, faulty=FAULTY).matmul(x, w)
    finally:
        numba.set_num_threads(default_threads)
    assert numba.get_num_threads() == default_threads
    many = Accelerator(Chip(0), noise_seed=3, faulty=FAULTY).matmul(x, w)
    assert np.array_equal(one, many)


# --- (h) behavioural fidelity tiles as the chip does -----------------------------------------

def test_behavioural_fidelity_has_the_chip_fidelitys_tiling_and_time():
    rng = np.random.default_rng(13)
    x, w = sparse_x(rng, 7, 260), rng.integers(-63, 64, (260, 300))
    gain = 3 / 2048
    chip_acc = Accelerator(Chip(0), faulty=FAULTY)
    beh_acc = Accelerator(behavioural=BehaviouralParams(gain, 0.0), noise_seed=None, faulty=FAULTY)
    assert chip_acc.tile_shape == beh_acc.tile_shape == (126, 254)
    chip_acc.matmul(x, w, num_sends=2)
    y = beh_acc.matmul(x, w, num_sends=2)
    assert chip_acc.report() == beh_acc.report()
    assert beh_acc.ledger.weight_tile_writes == 3      # 3 row tiles x 2 column tiles, in pairs
    # Noise-free behavioural model, tile by tile of 126 rows x 254 columns:
    # clamp_int8(round(gain * x . W * num_sends)) per tile (half to even), row tiles
    # summed and clamped (gain a binary fraction: exact in floating point).
    want = np.zeros((7, 300), np.int64)
    for r0 in range(0, 260, 126):
        for c0 in range(0, 300, 254):
            part = x[:, r0:r0 + 126] @ w[r0:r0 + 126, c0:c0 + 254] * 2
            v = gain * part
            f = np.floor(v)
            r = f + (v - f > 0.5) + ((v - f == 0.5) & (np.mod(f, 2) == 1))
            want[:, c0:c0 + 254] += np.clip(r, -128, 127).astype(np.int64)
    assert np.array_equal(y, np.clip(want, -128, 127))


def test_unfold2d_is_public_and_conv_matches_matmul_with_faults():
    # conv2d goes through matmul: same accelerator state, same results.
    rng = np.random.default_rng(14)
    x, w = rng.integers(0, 32, (2, 2, 8, 8)), rng.integers(-63, 64, (5, 2, 3, 3))
    a = Accelerator(Chip(0), faulty=FAULTY)
    b = Accelerator(Chip(0), faulty=FAULTY)
    cols, (ho, wo) = unfold2d(x, (3, 3), (1, 1), (0, 0))
    via_matmul = b.matmul(cols, w.reshape(5, -1).T).reshape(2, ho, wo, 5).transpose(0, 3, 1, 2)
    assert np.array_equal(a.conv2d(x, w), via_matmul)
    assert a.report() == b.report()


# --- the MNIST fault study ------------------------------------------------------------------

def test_fault_study_runs_and_checks_its_arguments_first():
    out = fault_study(0, (0, 5), images=20)
    found = out.pop("recalibration_found")
    assert set(out) == {"fault_free", "faulty", "faulty_mapped", "recalibrated_mapped"}
    # Calibrating the faulty chip names the stuck channel's column.
    assert [0, 5] in found["columns"]
    # Accuracies of 20 images are multiples of 1/20.
    assert all(0 <= v <= 1 and abs(v * 20 - round(v * 20)) < 1e-9 for v in out.values())
    with pytest.raises(ValueError, match=r"stuck_cadc_channels\[0\]\.half=2 .*0\.\.1"):
        fault_study(0, (2, 5), images=20)
    with pytest.raises(ValueError, match=r"stuck_cadc_channels\[0\]\.column=256 .*0\.\.255"):
        fault_study(0, (0, 256, 3), images=20)
    with pytest.raises(TypeError, match=r"stuck=5 .*\(half, column\) pair"):
        fault_study(0, 5, images=20)
    with pytest.raises(ValueError, match=r"images=0 .*1\.\.10000"):
        fault_study(0, (0, 5), images=0)
