"""FPGA playback programs, the co-simulation of playback, PPUs and analog halves,
and the batched accelerator path against it (same bits, same chip time)."""
from __future__ import annotations

import numpy as np
import pytest

from bss2sim.circuits import Chip
from bss2sim.digital import Accelerator, BehaviouralParams
from bss2sim.digital import playback as pb
from bss2sim.digital import sequences as sq
from bss2sim.digital.cosim import CoSimulation
from bss2sim.digital.nux import assemble


# --- event labels ----------------------------------------------------------------------
def label_by_hand(half, driver, activation):
    # bit 13 half | bits 10..11 PADI bus | bits 5..9 row select | bits 0..4 32 - activation
    return half * 8192 + (driver % 4) * 1024 + (driver // 4) * 32 + (32 - activation)


def test_labels_round_trip_and_match_the_bit_layout():
    seen = set()
    for half in (0, 1):
        for driver in range(128):
            for activation in (1, 7, 31):
                lb = pb.event_label(half, driver, activation)
                assert lb == label_by_hand(half, driver, activation)
                assert pb.decode_label(lb) == (half, driver, activation)
                seen.add(lb)
    assert len(seen) == 2 * 128 * 3


@pytest.mark.parametrize("args, match", [
    ((2, 0, 1), "half=2"), ((0, 128, 1), "driver=128"), ((0, 0, 0), "activation=0"),
    ((0, 0, 32), "activation=32")])
def test_bad_labels_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        pb.event_label(*args)


@pytest.mark.parametrize("word", [0, 0x20, 0x1000 | 5, 1 << 14])
def test_words_that_are_no_labels_are_refused(word):
    with pytest.raises(ValueError, match="label"):
        pb.decode_label(word)


# --- building and validating ------------------------------------------------------------
@pytest.mark.parametrize("build, match", [
    (lambda b: b.wait(0), r"instruction 0 \(wait\): cycles=0"),
    (lambda b: b.wait(1.5), "cycles"),
    (lambda b: b.wait(10).wait_until(5), r"instruction 1 \(wait_until\): cycle=5 lies before 10"),
    (lambda b: b.write_ppu_word(2, 0x3000, 1), r"ppu=2"),
    (lambda b: b.write_ppu_word(0, 0x3002, 1), "not word aligned"),
    (lambda b: b.write_ppu_word(0, 0x4000, 1), "address=16384"),
    (lambda b: b.write_ppu_word(0, 0x3000, 2**32), "value=4294967296"),
    (lambda b: b.poll_ppu_word(0, 0x3000, 0, 0), "timeout=0"),
    (lambda b: b.poll_ppu_word(0, 0x3000, 0, 10**9), "timeout=1000000000"),
    (lambda b: b.read_ppu_block(0, 0x3f00, 512), "size=512"),
    (lambda b: b.send_events(), "both None"),
    (lambda b: b.send_events(top=(128, 3)), "top driver=128"),
    (lambda b: b.send_events(bottom=(3, 0)), "bottom activation=0"),
    (lambda b: b.send_events(top=5), "must be \\(driver, activation\\)"),
    (lambda b: b.write_weights(0, np.zeros((128, 255), int)), "shape"),
    (lambda b: b.write_weights(0, np.full((128, 256), 64)), "64"),
    (lambda b: b.wait(5, category="coffee"), "category='coffee'"),
])
def test_bad_instructions_name_the_instruction_and_the_value(build, match):
    b = pb.PlaybackBuilder()
    n = len(b.build())
    with pytest.raises(ValueError, match=match):
        build(b)
    assert len(b.build()) <= n + 1


def test_text_form_shows_times_until_the_first_poll():
    b = pb.PlaybackBuilder()
    b.write_ppu_word(0, sq.STATUS_ADDRESS, sq.READ).wait(100).send_events(top=(5, 17), bottom=(2, 31))
    b.poll_ppu_word(0, sq.STATUS_ADDRESS, 0, 1000).wait(3)
    prog = b.build()
    assert prog.static_times() == [0, 4, 104, 105, None]
    lines = prog.text().splitlines()
    assert len(lines) == 5
    assert "driver=5 activation=17" in lines[2] and "half=1 driver=2 activation=31" in lines[2]
    assert lines[4].split()[1] == "?" and lines[2].rstrip().endswith("# event_phase")


# --- the co-simulation ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def chip():
    return Chip(3)


def test_a_poll_that_never_sees_its_value_stops_with_a_clear_error(chip):
    sim = CoSimulation(chip, sq.ppu_program("published"))
    b = pb.PlaybackBuilder().wait(10).poll_ppu_word(1, sq.STATUS_ADDRESS, 77, 500)
    with pytest.raises(pb.PlaybackError, match=r"instruction 1 \(poll_ppu_word\).*timed out after 500"):
        sim.run(b.build())


def test_wait_until_in_the_past_after_a_poll_is_an_error(chip):
    sim = CoSimulation(chip, sq.ppu_program("published"))
    b = pb.PlaybackBuilder()
    b.write_ppu_word(0, sq.STATUS_ADDRESS, sq.BASELINE_READ)
    b.poll_ppu_word(0, sq.STATUS_ADDRESS, sq.IDLE, 10_000)      # about 5 us of PPU work
    b.wait_until(100)
    with pytest.raises(pb.PlaybackError, match="wait_until cycle=100 has passed"):
        sim.run(b.build())


def test_an_unknown_command_is_reported_in_the_status_word(chip):
    sim = CoSimulation(chip, sq.ppu_program("published"))
    b = pb.PlaybackBuilder().write_ppu_word(0, sq.STATUS_ADDRESS, 9).wait(100)
    b.read_ppu_block(0, sq.STATUS_ADDRESS, 4, tag="status")
    res = sim.run(b.build())
    assert res.reads[0][2] == (sq.COMMAND_ERROR).to_bytes(4, "big")


def test_the_baseline_read_sleeps_five_microseconds_after_its_reset(chip):
    sim = CoSimulation(chip, sq.ppu_program("published"))
    b = pb.PlaybackBuilder().write_ppu_word(0, sq.STATUS_ADDRESS, sq.BASELINE_READ).wait(2000)
    res = sim.run(b.build())
    log = res.analog_log[0]
    assert [k for k, _ in log] == ["reset", "reset", "convert"]
    sleep = log[2][1] - log[1][1]
    assert 1250 <= sleep <= 1250 + 40          # 5 us at 250 MHz, plus a few instructions
    # The PPU woke after the write landed and went back to wait when done.
    (start, end), = res.ppu_busy[0]
    assert start == 2 * pb.WORD_WRITE_CYCLES and log[2][1] < end < 2 * 2004
    assert res.ppu_busy[1] == []               # the other PPU was never commanded


def test_a_broken_ppu_program_is_named_with_its_pc(chip):
    prog = assemble("li r3, 1\n wait\n lwz r4, 0(r3)\n wait")     # misaligned load after the first command
    sim = CoSimulation(chip, prog)
    b = pb.PlaybackBuilder().write_ppu_word(0, 0x3000, 1).wait(100)
    with pytest.raises(Exception, match="pc 0x0000000"):
        sim.run(b.build())


# --- the batched path against the co-simulation ----------------------------------------------
def random_case(rng, B, Kin, density):
    x = rng.integers(1, 32, (B, Kin)) * (rng.random((B, Kin)) < density)
    return x


CASES = [
    # (sequence, B, K, N, density, num_sends, wait, seed)
    ("published", 3, 100, 40, 0.15, 1, 5, 0),            # one tile: vectors alone
    ("published", 2, 256, 300, 0.6, 2, 1, 1),            # two row tiles x two column tiles
    ("tight", 3, 200, 20, 0.05, 3, 255, 2),              # sparse, slow events
    ("tight", 2, 128, 512, 1.0, 1, 2, 3),                # dense, a pair of column tiles
    ("published", 2, 130, 10, 0.02, 256, 1, 4),          # 256 sends
    ("tight", 5, 300, 70, 0.3, 7, 9, 5),                 # three row tiles: a pair and one left over
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-B{c[1]}-K{c[2]}-N{c[3]}-s{c[5]}-w{c[6]}" for c in CASES])
def test_batched_path_equals_the_cosimulation(case):
    sequence, B, Kin, N, density, sends, wait, seed = case
    rng = np.random.default_rng(seed)
    x = random_case(rng, B, Kin, density)
    x[0, :] = 0 if B > 2 else x[0, :]          # an empty vector among them
    w = rng.integers(-63, 64, (Kin, N))
    out, reports = [], []
    for engine in ("fast", "cosim"):
        acc = Accelerator(Chip(seed), noise_seed=11 + seed, sequence=sequence, engine=engine)
        out.append(acc.matmul(x, w, num_sends=sends, wait_between_events=wait))
        reports.append(acc.report())
    np.testing.assert_array_equal(out[0], out[1])
    assert reports[0] == reports[1]              # every category, bit for bit
    assert np.ptp(out[0]) > 0


def test_the_sequences_differ_in_time_and_in_bits():
    rng = np.random.default_rng(7)
    x, w = random_case(rng, 4, 128, 0.5), rng.integers(-63, 64, (128, 64))
    got = {}
    for s in sq.VMM_SEQUENCES:
        acc = Accelerator(Chip(1), noise_seed=3, sequence=s)
        got[s] = (acc.matmul(x, w), acc.report()["total_s"])
    # Same events and weight writes; each of the 4 entries (vectors alone) is shorter.
    saved = 4 * (sq.profile("published").entry_cycles - sq.profile("tight").entry_cycles) * 8e-9
    assert got["published"][1] - got["tight"][1] == pytest.approx(saved, rel=1e-9)
    assert sq.profile("tight").entry_cycles < sq.profile("published").entry_cycles / 3
    assert (got["tight"][0] != got["published"][0]).any()


def test_behavioural_fidelity_counts_the_same_chip_time():
    rng = np.random.default_rng(8)
    x, w = random_case(rng, 5, 300, 0.3), rng.integers(-63, 64, (300, 70))
    chip = Accelerator(Chip(2), noise_seed=1, sequence="tight")
    beh = Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=1, sequence="tight")
    chip.matmul(x, w, num_sends=2)
    beh.matmul(x, w, num_sends=2)
    assert chip.report() == beh.report()


@pytest.mark.parametrize("kw, match", [
    (dict(sequence="fast"), "sequence='fast' is not allowed"),
    (dict(engine="slow"), "engine='slow' is not allowed"),
])
def test_bad_sequence_or_engine(kw, match):
    with pytest.raises(ValueError, match=match):
        Accelerator(Chip(0), **kw)


def test_cosim_needs_a_chip():
    with pytest.raises(ValueError, match="engine='cosim'"):
        Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), engine="cosim")


def test_a_failed_cosim_run_leaves_the_accelerator_as_it_was(monkeypatch):
    rng = np.random.default_rng(9)
    x, w = random_case(rng, 2, 128, 0.5), rng.integers(-63, 64, (128, 30))
    chip = Chip(4)
    acc = Accelerator(chip, noise_seed=2, sequence="tight", engine="cosim")
    acc.matmul(x, w)
    before = (acc.noise_state(), acc.report(), chip.config.version, chip.config.weights.copy())
    monkeypatch.setattr(sq, "POLL_TIMEOUT", 8)                # shorter than any command
    with pytest.raises(pb.PlaybackError, match="timed out"):
        acc.matmul(x, -w)
    assert (acc.noise_state(), acc.report(), chip.config.version) == before[:3]
    np.testing.assert_array_equal(chip.config.weights, before[3])


def test_batched_path_equals_the_cosimulation_around_faulty_units():
    from bss2sim.digital import FaultyUnits
    rng = np.random.default_rng(5)
    faulty = FaultyUnits(columns=((0, 3), (1, 100)), drivers=((0, 7), (1, 2)))
    x = random_case(rng, 3, 260, 0.3)          # 126 healthy drivers: three row tiles
    w = rng.integers(-63, 64, (260, 300))
    got = []
    for engine in ("fast", "cosim"):
        acc = Accelerator(Chip(2), noise_seed=4, faulty=faulty, engine=engine, sequence="tight")
        got.append((acc.matmul(x, w, num_sends=2, wait_between_events=3), acc.report()))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    assert got[0][1] == got[1][1]


# --- the standalone sequence: the PPUs run a whole network ------------------------------------
def random_network(rng, sizes, shift=3):
    return [(rng.integers(-40, 41, (k, n)), None if i == len(sizes) - 2 else shift)
            for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:]))]


STANDALONE_CASES = [
    # (B, sizes, density, num_sends, first call's batch offset, seed)
    (3, (5, 20, 3), 0.6, 1, 0, 0),
    (7, (30, 60, 10), 0.3, 2, 1, 1),          # an odd first id: the bottom PPU starts
    (37, (10, 100, 4), 0.8, 1, 0, 2),         # more than 16 samples per PPU: two chunks
    (4, (12, 40, 30, 5), 0.5, 3, 0, 3),       # three layers
    (2, (128, 200), 1.0, 1, 0, 4),            # one dense layer of 128 inputs
    (3, (4, 6, 2), 1.0, 256, 0, 5),           # 256 sends
]


@pytest.mark.parametrize("case", STANDALONE_CASES, ids=[f"B{c[0]}-{'x'.join(map(str, c[1]))}-s{c[3]}"
                                                         for c in STANDALONE_CASES])
def test_standalone_batched_path_equals_the_cosimulation(case):
    B, sizes, density, sends, offset, seed = case
    rng = np.random.default_rng(seed)
    layers = random_network(rng, sizes)
    x = rng.integers(1, 32, (B, sizes[0])) * (rng.random((B, sizes[0])) < density)
    out, reports = [], []
    for engine in ("fast", "cosim"):
        acc = Accelerator(Chip(seed), noise_seed=5 + seed, sequence="standalone", engine=engine)
        if offset:
            acc.set_noise_state({0: offset})
        out.append(acc.run_network(x, layers, num_sends=sends))
        reports.append(acc.report())
    np.testing.assert_array_equal(out[0], out[1])
    assert reports[0] == reports[1]
    assert reports[0]["events"] > 0 and reports[0]["event_phase_s"] == 0     # the PPUs injected them
    assert np.ptp(out[0]) > 0


def test_standalone_is_split_invariant_and_matches_a_layer_by_layer_reference():
    rng = np.random.default_rng(11)
    layers = random_network(rng, (16, 50, 6))
    x = rng.integers(0, 32, (10, 16))
    whole = Accelerator(Chip(3), noise_seed=2, sequence="standalone").run_network(x, layers, num_sends=2)
    acc = Accelerator(Chip(3), noise_seed=2, sequence="standalone")
    parts = np.concatenate([acc.run_network(x[:3], layers, num_sends=2),
                            acc.run_network(x[3:], layers, num_sends=2)])
    np.testing.assert_array_equal(whole, parts)


def test_standalone_one_layer_is_a_vmm_like_the_published_sequence():
    # One layer, noise off: the same x.W as the published sequence's matmul,
    # only the events' timing (the PPU's injection loop) and so the bits differ a little.
    rng = np.random.default_rng(12)
    w = rng.integers(-30, 31, (20, 100))
    x = rng.integers(0, 32, (40, 20)) * (rng.random((40, 20)) < 0.6)
    chip = Chip(0)
    ys = Accelerator(chip, noise_seed=None, sequence="standalone").run_network(x, [(w, None)], num_sends=8)
    yp = Accelerator(chip, noise_seed=None).matmul(x, w, num_sends=8)
    assert np.corrcoef(ys.ravel(), yp.ravel())[0, 1] > 0.99
    assert np.abs(ys - yp).mean() < 1.5


def test_standalone_behavioural_counts_the_chip_time_of_the_chip():
    rng = np.random.default_rng(13)
    layers = random_network(rng, (8, 30))            # one layer: the events are the inputs'
    x = rng.integers(0, 32, (9, 8))
    chip = Accelerator(Chip(1), noise_seed=1, sequence="standalone")
    beh = Accelerator(behavioural=BehaviouralParams(gain=0.0015, sigma=2.0), noise_seed=1, sequence="standalone")
    chip.run_network(x, layers, num_sends=4)
    beh.run_network(x, layers, num_sends=4)
    assert chip.report() == beh.report()


@pytest.mark.parametrize("layers, match", [
    ([(np.ones((100, 200), int), 1), (np.ones((200, 3), int), None)], "does not fit one half"),
    ([(np.ones((5, 10), int), None), (np.ones((10, 3), int), None)], "shift"),
    ([(np.ones((5, 10), int), 2), (np.ones((9, 3), int), None)], "10 outputs but layers\\[1\\] has 9"),
    ([(np.ones((5, 10), int), 2)], "last layer"),
    ([(np.full((5, 10), 64), None)], "64"),
    ([], "1..8"),
])
def test_standalone_bad_networks_are_refused_before_running(layers, match):
    acc = Accelerator(Chip(0), sequence="standalone")
    with pytest.raises(ValueError, match=match):
        acc.run_network(np.ones((2, len(layers[0][0]) if layers else 5), int), layers)
    assert acc.report()["total_s"] == 0 and acc.noise_state() == {}


def test_standalone_refuses_matmul_and_the_vmm_sequences_run_networks_layer_by_layer():
    rng = np.random.default_rng(14)
    layers = random_network(rng, (10, 20, 4))
    x = rng.integers(0, 32, (6, 10))
    with pytest.raises(ValueError, match="run_network"):
        Accelerator(Chip(0), sequence="standalone").matmul(x, layers[0][0])
    acc = Accelerator(Chip(0), noise_seed=3)
    got = acc.run_network(x, layers, num_sends=2)
    ref = Accelerator(Chip(0), noise_seed=3)
    h = ref.converting_relu(ref.matmul(x, layers[0][0], num_sends=2, stream=0), 3)
    np.testing.assert_array_equal(got, ref.matmul(h, layers[1][0], num_sends=2, stream=1))
