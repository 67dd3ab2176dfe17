"""The FPGA event interface (paired schedules of both halves) and the time
ledger of the Accelerator, against the documented facts: 125 MHz event clock
(8 ns per cycle), one slot per half every ``wait_between_events`` cycles, zeros
send nothing, ``num_sends`` repeats the vector, 5.12 us per dense send at
wait 5. Every expected value is computed here from those facts."""
from __future__ import annotations

import numpy as np
import pytest

from bss2sim.circuits import Chip, EventSchedule
from bss2sim.digital import Accelerator, BehaviouralParams, TimingParams, paired_schedule

CYCLE_S = 8e-9                # 125 MHz FPGA event clock
CADC_S = 0.54e-6              # one CADC conversion
PPU_HZ = 250e6
ROWS, COLS = 128, 256


# --- helpers -----------------------------------------------------------------------

def random_inputs(rng, n, density):
    """Inputs (n, 128) with values 1..31 at random positions (density per row varies)."""
    x = rng.integers(1, 32, (n, ROWS))
    d = np.asarray(density).reshape(-1, 1) if np.ndim(density) else density
    return x * (rng.random((n, ROWS)) < d)


def expected_events(x_half, x_other, b, wait, num_sends, start=0):
    """Sorted (driver, value, cycle) of vector b of one half, written out from the
    slot rule: each half's stream is its non-zero inputs repeated num_sends times,
    event k of the stream in slot k, so send s starts at start + s * nnz * wait
    whatever the other half sends (x_other does not matter)."""
    nz = [d for d in range(ROWS) if x_half[b, d] != 0]
    period = len(nz) * wait
    out = []
    for s in range(num_sends):
        for j, d in enumerate(nz):
            out.append((d, int(x_half[b, d]), start + s * period + j * wait))
    return sorted(out, key=lambda e: e[2])


def events(schedule, b):
    d, v, c = schedule.vector(b)
    return [(int(i), int(j), int(k)) for i, j, k in zip(d, v, c)]


# --- paired_schedule ---------------------------------------------------------------

@pytest.mark.parametrize("wait,num_sends,start", [(5, 1, 0), (1, 3, 0), (7, 2, 11), (255, 1, 0)])
def test_slots_carry_the_jth_nonzero_of_each_half(wait, num_sends, start):
    rng = np.random.default_rng(wait + num_sends)
    top = random_inputs(rng, 6, [0.0, 0.1, 0.5, 1.0, 0.3, 0.05])
    bot = random_inputs(rng, 6, [0.2, 0.0, 0.9, 0.4, 0.3, 0.6])
    ps = paired_schedule(top, bot, wait, num_sends, start_cycle=start)
    assert len(ps.halves) == 2
    for h, (xh, xo) in enumerate(((top, bot), (bot, top))):
        s = ps.halves[h]
        assert s.num_vectors == 6
        for b in range(6):
            got = events(s, b)
            assert got == expected_events(xh, xo, b, wait, num_sends, start), (h, b)
            cyc = [e[2] for e in got]
            assert cyc == sorted(cyc)
    for b in range(6):
        slots = max(np.count_nonzero(top[b]), np.count_nonzero(bot[b]))
        assert ps.slots_per_send[b] == slots
        assert ps.event_phase_cycles[b] == slots * wait * num_sends


def test_zero_inputs_send_nothing_and_take_no_time():
    top = np.zeros((3, ROWS), np.int64)
    bot = np.zeros((3, ROWS), np.int64)
    bot[1, [4, 90]] = [31, 1]
    ps = paired_schedule(top, bot, 5, 2)
    assert ps.halves[0].num_events == 0
    assert list(np.diff(ps.halves[1].offsets)) == [0, 4, 0]
    assert list(ps.event_phase_cycles) == [0, 2 * 5 * 2, 0]
    assert events(ps.halves[1], 1) == [(4, 31, 0), (90, 1, 5), (4, 31, 10), (90, 1, 15)]
    # Zeros between non-zero entries leave no gaps in the slots.
    x = np.zeros((1, ROWS), np.int64)
    x[0, [0, 50, 127]] = [3, 7, 9]
    ps = paired_schedule(x, None, 4, 1)
    assert events(ps.halves[0], 0) == [(0, 3, 0), (50, 7, 4), (127, 9, 8)]
    assert ps.halves[1].num_events == 0
    assert ps.event_phase_cycles[0] == 12


def test_one_half_none_sends_nothing_on_it():
    rng = np.random.default_rng(1)
    x = random_inputs(rng, 4, 0.3)
    for ps, h in ((paired_schedule(x, None, 3, 2), 0), (paired_schedule(None, x, 3, 2), 1)):
        assert ps.halves[1 - h].num_events == 0
        assert ps.halves[1 - h].num_vectors == 4
        for b in range(4):
            assert events(ps.halves[h], b) == expected_events(x, None, b, 3, 2)
        np.testing.assert_array_equal(ps.event_phase_cycles,
                                      [np.count_nonzero(x[b]) * 3 * 2 for b in range(4)])


@pytest.mark.parametrize("num_sends", [1, 2, 5, 64])
def test_num_sends_repeats_the_vector(num_sends):
    rng = np.random.default_rng(num_sends)
    top = random_inputs(rng, 3, 0.4)
    bot = random_inputs(rng, 3, 0.7)
    once = paired_schedule(top, bot, 2, 1)
    rep = paired_schedule(top, bot, 2, num_sends)
    for h in range(2):
        assert rep.halves[h].num_events == num_sends * once.halves[h].num_events
        for b in range(3):
            period = int(once.half_phase_cycles[h, b])
            want = sorted([(d, v, c + s * period) for s in range(num_sends)
                           for d, v, c in events(once.halves[h], b)], key=lambda e: e[2])
            assert events(rep.halves[h], b) == want
    np.testing.assert_array_equal(rep.event_phase_cycles, num_sends * once.event_phase_cycles)


@pytest.mark.parametrize("wait,num_sends", [(1, 1), (1, 4), (2, 3), (5, 2)])
def test_no_driver_gets_two_events_in_one_cycle(wait, num_sends):
    rng = np.random.default_rng(100 + wait)
    top = random_inputs(rng, 5, [1.0, 0.9, 0.5, 0.02, 1.0])
    bot = random_inputs(rng, 5, [1.0, 0.1, 0.5, 0.9, 0.0])
    ps = paired_schedule(top, bot, wait, num_sends)
    for s in ps.halves:
        for b in range(s.num_vectors):
            d, _, c = s.vector(b)
            pairs = list(zip(d.tolist(), c.tolist()))
            assert len(set(pairs)) == len(pairs)
            # One slot per cycle and half: the events of a half never share a cycle.
            assert len(set(c.tolist())) == len(c)
            if len(c) > 1:
                assert np.diff(c).min() >= wait
        # The schedule also passes the analog core's own validation.
        EventSchedule.from_arrays(s.offsets, s.driver, s.value, s.cycle)


def test_dense_vector_at_wait_5_spends_5_12_us_per_send():
    x = np.full((1, ROWS), 17, np.int64)
    for sends in (1, 3):
        ps = paired_schedule(x, x, 5, sends)
        assert ps.event_phase_cycles[0] == 640 * sends
        assert ps.slots_per_send[0] == 128
        assert ps.event_phase_cycles[0] * CYCLE_S == pytest.approx(5.12e-6 * sends, rel=1e-12)
        assert ps.event_phase_cycles[0] * CYCLE_S / sends == pytest.approx(5.1e-6, abs=0.05e-6)
        assert ps.halves[0].num_events == ps.halves[1].num_events == 128 * sends


def test_event_phase_formula_with_unequal_halves():
    top = np.zeros((2, ROWS), np.int64)
    bot = np.zeros((2, ROWS), np.int64)
    top[0, :10] = 1
    bot[0, :30] = 2
    top[1, :70] = 3
    bot[1, :5] = 4
    ps = paired_schedule(top, bot, 9, 3)
    assert list(ps.slots_per_send) == [30, 70]
    assert list(ps.event_phase_cycles) == [30 * 9 * 3, 70 * 9 * 3]
    # Each half's stream runs on without waiting for the other half's.
    c0 = ps.halves[0].vector(0)[2]
    assert c0[10] == 10 * 9
    c1 = ps.halves[1].vector(1)[2]
    assert c1[5] == 5 * 9
    np.testing.assert_array_equal(ps.half_phase_cycles, [[10 * 27, 70 * 27], [30 * 27, 5 * 27]])


X_OK = np.ones((2, ROWS), np.int64)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x_top=X_OK, x_bottom=None, wait_between_events=0), "wait_between_events"),
    (dict(x_top=X_OK, x_bottom=None, wait_between_events=256), "wait_between_events"),
    (dict(x_top=X_OK, x_bottom=None, wait_between_events=5.0), "wait_between_events"),
    (dict(x_top=X_OK, x_bottom=None, wait_between_events=-3), "wait_between_events"),
    (dict(x_top=X_OK, x_bottom=None, num_sends=0), "num_sends"),
    (dict(x_top=X_OK, x_bottom=None, num_sends=257), "num_sends"),
    (dict(x_top=X_OK, x_bottom=None, num_sends=2.0), "num_sends"),
    (dict(x_top=np.full((2, ROWS), 32), x_bottom=None), "x_top"),
    (dict(x_top=np.full((2, ROWS), -1), x_bottom=None), "x_top"),
    (dict(x_top=X_OK, x_bottom=np.full((2, ROWS), 32)), "x_bottom"),
    (dict(x_top=X_OK, x_bottom=np.full((2, ROWS), -1)), "x_bottom"),
    (dict(x_top=np.ones((2, 127), np.int64), x_bottom=None), "x_top"),
    (dict(x_top=np.ones(ROWS, np.int64), x_bottom=None), "x_top"),
    (dict(x_top=X_OK, x_bottom=np.ones((2, 129), np.int64)), "x_bottom"),
    (dict(x_top=X_OK.astype(float), x_bottom=None), "x_top"),
    (dict(x_top=X_OK, x_bottom=np.ones((3, ROWS), np.int64)), "x_bottom"),
    (dict(x_top=None, x_bottom=None), "x_top.*x_bottom"),
])
def test_paired_schedule_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_schedule(**kwargs)


# --- Accelerator time ledger ---------------------------------------------------------

TIMING = TimingParams(asic_power_w=0.7, system_power_w=5.0)
WAITS_US = (20, 4, 1, 1, 10)      # the published sequence's fixed waits [GRN]
COMMAND_WRITES = 6                # three commands to two PPUs per entry
RESULT_READ_CYCLES = 2 * 128      # two result reads of 128 FPGA cycles [GRN]


def make_acc(fidelity, timing=TIMING, **kw):
    if fidelity == "chip":
        return Accelerator(Chip(2), noise_seed=None, timing=timing, **kw)
    return Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=3,
                       timing=timing, **kw)


def check_common(rep, passes, weight_halves, event_phase_s, events, timing=TIMING, tile_pairs=None):
    """The published sequence's chip time for ``passes`` entries (vector pairs,
    or vectors alone), ``weight_halves`` half-array weight writes."""
    from bss2sim.digital.playback import WEIGHT_ROW_WRITE_CYCLES, WORD_WRITE_CYCLES
    from bss2sim.digital.sequences import profile
    prof = profile("published")
    # The entry's length from the published waits, written out.
    entry_cycles = sum(WAITS_US) * 125 + COMMAND_WRITES * WORD_WRITE_CYCLES + RESULT_READ_CYCLES
    assert prof.entry_cycles == entry_cycles
    assert sum(prof.category_cycles.values()) == 2 * entry_cycles     # PPU cycles
    assert rep["vmm_passes"] == passes
    if tile_pairs is not None:
        assert rep["weight_tile_writes"] == tile_pairs
    assert rep["events"] == events
    assert rep["event_phase_s"] == pytest.approx(event_phase_s, rel=1e-12, abs=1e-18)
    assert rep["result_reads_s"] == pytest.approx(passes * RESULT_READ_CYCLES * CYCLE_S, rel=1e-12)
    # Two conversions per entry and half, each the CADC's latency in the PPU's cycle model.
    assert rep["cadc_conversions_s"] > 0
    assert rep["waits_s"] + rep["cadc_conversions_s"] + rep["ppu_s"] == pytest.approx(
        passes * (sum(WAITS_US) * 1e-6 + COMMAND_WRITES * WORD_WRITE_CYCLES * CYCLE_S), rel=1e-12)
    cats = ("event_phase_s", "waits_s", "cadc_conversions_s", "ppu_s", "weight_writes_s",
            "result_reads_s", "transfers_s")
    assert rep["total_s"] == pytest.approx(sum(rep[c] for c in cats), rel=1e-12)
    assert rep["total_s"] == pytest.approx(passes * entry_cycles * CYCLE_S + event_phase_s
                                           + rep["weight_writes_s"], rel=1e-12)
    # Each half written holds 256 physical synapse rows.
    assert rep["weight_writes_s"] == pytest.approx(weight_halves * 256 * WEIGHT_ROW_WRITE_CYCLES * CYCLE_S,
                                                   rel=1e-12)
    assert rep["asic_j"] == pytest.approx(timing.asic_power_w * rep["total_s"], rel=1e-12)
    assert rep["system_j"] == pytest.approx(timing.system_power_w * rep["total_s"], rel=1e-12)


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_ledger_two_row_tiles_one_pass(fidelity):
    # K = 256: two row tiles share one pass, one per half; the slot count of a
    # vector is the larger non-zero count of its two halves.
    rng = np.random.default_rng(7)
    x = np.zeros((4, 256), np.int64)
    nnz = [(10, 3), (0, 25), (60, 60), (0, 0)]
    for b, (nt, nb) in enumerate(nnz):
        x[b, rng.choice(128, nt, replace=False)] = rng.integers(1, 32, nt)
        x[b, 128 + rng.choice(128, nb, replace=False)] = rng.integers(1, 32, nb)
    w = rng.integers(-20, 21, (256, 200))
    acc = make_acc(fidelity)
    wait, sends = 6, 2
    acc.matmul(x, w, num_sends=sends, wait_between_events=wait)
    ev = sum(max(a, b) * wait * sends * CYCLE_S for a, b in nnz)
    check_common(acc.report(), passes=4, weight_halves=2, tile_pairs=1, event_phase_s=ev,
                 events=sends * sum(a + b for a, b in nnz))


def test_ledger_many_tiles_equal_density_per_tile():
    # K = 300 (3 row tiles), N = 300 (2 column tiles): 6 tiles in 3 pairs. Every row
    # tile of a vector holds the same number of non-zero inputs, so each pass of
    # vector b lasts nnz_b * wait * num_sends cycles whichever tiles share it.
    rng = np.random.default_rng(8)
    per_tile = [5, 0, 44, 17, 1]
    B = len(per_tile)
    x = np.zeros((B, 300), np.int64)
    for b, n in enumerate(per_tile):
        for lo, hi in ((0, 128), (128, 256), (256, 300)):
            x[b, lo + rng.choice(hi - lo, n, replace=False)] = rng.integers(1, 32, n)
    w = rng.integers(-63, 64, (300, 300))
    acc = make_acc("behavioural")
    wait, sends = 5, 3
    acc.matmul(x, w, num_sends=sends, wait_between_events=wait)
    pairs = 3
    ev = pairs * sum(n * wait * sends * CYCLE_S for n in per_tile)
    check_common(acc.report(), passes=pairs * B, weight_halves=2 * pairs, tile_pairs=pairs, event_phase_s=ev,
                 events=2 * sends * int(np.count_nonzero(x)))   # each row tile for 2 column tiles


def test_ledger_accumulates_over_calls_and_column_tiles():
    # K = 128, N = 512: one row tile, two column tiles, run as one pass on both halves.
    rng = np.random.default_rng(9)
    x = random_inputs(rng, 3, [0.2, 0.5, 0.9])
    w = rng.integers(-63, 64, (128, 512))
    acc = make_acc("behavioural")
    acc.matmul(x, w, wait_between_events=4)
    acc.matmul(x[:1], w[:, :256], wait_between_events=2, num_sends=5)
    nnz = np.count_nonzero(x, axis=1)
    ev = (nnz.sum() * 4 + nnz[0] * 2 * 5) * CYCLE_S
    # The second call's single tile runs its one vector alone on the top half.
    check_common(acc.report(), passes=3 + 1, weight_halves=3, tile_pairs=2, event_phase_s=ev,
                 events=int(2 * nnz.sum() + 5 * nnz[0]))


@pytest.mark.parametrize("fidelity", ["behavioural", "chip"])
def test_published_event_phase_of_one_dense_vector(fidelity):
    acc = make_acc(fidelity, timing=TimingParams())
    x = np.full(ROWS, 31, np.int64)
    w = np.random.default_rng(0).integers(-3, 4, (ROWS, COLS))
    acc.matmul(x, w, wait_between_events=5)
    rep = acc.report()
    assert rep["event_phase_s"] == pytest.approx(128 * 5 * 8e-9, rel=1e-12)
    assert rep["event_phase_s"] == pytest.approx(5.1e-6, abs=0.05e-6)
    t = TimingParams()
    check_common(rep, passes=1, weight_halves=1, tile_pairs=1, event_phase_s=5.12e-6, events=128, timing=t)


def test_zero_vector_costs_no_event_time():
    acc = make_acc("behavioural")
    acc.matmul(np.zeros((2, ROWS), np.int64), np.ones((ROWS, 10), np.int64))
    rep = acc.report()
    assert rep["event_phase_s"] == 0.0 and rep["events"] == 0
    # One tile: each vector runs alone, on the half of its id's parity.
    check_common(rep, passes=2, weight_halves=2, tile_pairs=1, event_phase_s=0.0, events=0)


@pytest.mark.parametrize("bad", [-7, 2.5, True])
def test_paired_schedule_rejects_bad_start_cycle(bad):
    x = np.zeros((1, 128), np.int64)
    x[0, 0] = 3
    with pytest.raises(ValueError, match="start_cycle"):
        paired_schedule(x, None, 5, start_cycle=bad)


@pytest.mark.parametrize("num_sends,wait", [(1, 5), (3, 1), (11, 7)])
def test_end_aligned_schedule_matches_plain_loop(num_sends, wait):
    from bss2sim.digital.events import end_aligned_schedule
    rng = np.random.default_rng(num_sends)
    x = rng.integers(0, 32, (7, 128)) * (rng.random((7, 128)) < 0.1)
    x[2] = 0
    x[3] = 0
    x[3, 127] = 5
    counts = np.count_nonzero(x, axis=1)
    longest = counts * num_sends + rng.integers(0, 4, 7)
    sched = end_aligned_schedule(x.astype(np.uint8), counts, longest, 40, wait, num_sends)
    for b in range(7):
        want = []
        start = 40 + (longest[b] - counts[b] * num_sends) * wait
        drivers = [d for d in range(128) if x[b, d]]
        for j in range(counts[b] * num_sends):
            d = drivers[j % counts[b]]
            want.append((d, x[b, d], start + j * wait))
        lo, hi = sched.offsets[b], sched.offsets[b + 1]
        got = list(zip(sched.driver[lo:hi].tolist(), sched.value[lo:hi].tolist(), sched.cycle[lo:hi].tolist()))
        assert got == want
