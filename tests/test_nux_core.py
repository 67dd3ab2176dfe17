"""The Nux core on the chip: cycle model against the published speed tests,
the vector bus against the analog kernels, errors, external memory, the
command line and the README's example program."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits.rng import derive_seed
from bss2sim.digital.nux import Nux, PPUError, assemble, run_speed_tests
from bss2sim.experiments.cli import main


@pytest.fixture(scope="module")
def chip():
    c = Chip(4)
    c.config.set_logical_weights(0, np.random.default_rng(0).integers(-40, 41, (128, 256)))
    return c


def test_speed_tests_reproduce_the_published_figures(chip):
    rows = run_speed_tests(chip)
    assert {r["name"] for r in rows} == {"extmem store fxvoutx", "intmem store fxvstax", "intmem load fxvlax",
                                          "weight store", "weight load", "neuron reset", "cadc read"}
    for r in rows:
        assert r["within_tolerance"], r


def _run(chip, text, noise_seed=0, **kw):
    ppu = Nux(chip, half=0, noise_seed=noise_seed)
    ppu.load(assemble(text))
    return ppu, ppu.run(**kw)


READ_PROGRAM = """
    lis r4, 0x0008           # CADC causal channels
    lis r6, 0x0028           # ... buffered (0x200000 | 0x80000), + 1: odd columns
    addi r6, r6, 1
    li r5, 0
    lis r7, 0x00c9
    ori r7, r7, 0x0200       # neuron reset, even columns
    addi r8, r7, 1           # odd columns
    li r10, 0x3000
    fxvoutx 0, r7, r5        # reset the even columns
    sync
    li r9, 40                # more than a reset burst apart (RESET_BURST_PPU_CYCLES)
    mtctr r9
gap:
    bdnz gap
    mfspr r11, 284           # time of the odd columns' reset, minus one
    fxvoutx 0, r8, r5
    sync
    li r9, 400
    mtctr r9
spin:
    bdnz spin
    mfspr r12, 284           # time of the conversion, minus one
    fxvinx 1, r4, r5
    fxvinx 2, r6, r5
    sync
    fxvstax 1, r10, r5
    li r13, 0x3080
    fxvstax 2, r13, r5
    stw r11, 0x100(r10)
    stw r12, 0x104(r10)
    sync
    wait
"""


@pytest.mark.parametrize("noise_seed", [None, 7])
def test_cadc_reads_over_the_bus_equal_integrate_fast(chip, noise_seed):
    ppu = Nux(chip, half=0, noise_seed=noise_seed)
    # Events from the FPGA: some before the resets (forgotten), most after them.
    rng = np.random.default_rng(1)
    drivers = rng.choice(128, 60, replace=False)
    cycles = np.sort(rng.integers(40, 300, 60))
    cycles[:5] = np.arange(5)
    ppu.analog.add_events(drivers, rng.integers(1, 32, 60), cycles)
    ppu.load(assemble(READ_PROGRAM))
    ppu.run()
    mem = ppu.read_memory(0x3000, 0x108)
    even, odd = np.frombuffer(mem[:128], np.uint8), np.frombuffer(mem[128:256], np.uint8)
    t_odd_reset = int.from_bytes(mem[0x100:0x104], "big") + 1
    t_read = int.from_bytes(mem[0x104:0x108], "big") + 1
    events = ppu.analog.events
    read_fpga = t_read // 2
    # The even columns were reset a burst earlier than the odd ones.
    even_reset = int(ppu.analog.reset_cycle[0])
    assert even_reset < t_odd_reset // 2
    for parity, got, reset in ((1, odd, t_odd_reset // 2), (0, even, even_reset)):
        ev = [(d, a, c - reset) for d, a, c in events if reset <= c <= read_fpga]
        # The first conversion of this half: noise stream 0 of the half's seed.
        noise = None if noise_seed is None else TrialNoise(derive_seed(noise_seed, 0), 0)
        want = integrate_fast(chip, 0, EventSchedule.from_lists([ev]), read_fpga - reset, noise=noise)
        np.testing.assert_array_equal(got, want.codes[0, parity::2])
    assert ppu.analog.conversions == 1      # the buffered read did not convert again


def test_a_reset_burst_releases_both_vectors_of_a_row_together(chip):
    """Two reset writes within RESET_BURST_PPU_CYCLES start every column at
    the second write; writes further apart keep their own times."""
    from bss2sim.digital.nux.memory import RESET_BURST_PPU_CYCLES
    for gap_turns, together in ((0, True), (RESET_BURST_PPU_CYCLES, False)):
        spin = "" if not gap_turns else f"li r9, {gap_turns}\n mtctr r9\ng: bdnz g\n"
        ppu, _ = _run(chip, f"""
            lis r7, 0x00c9
            ori r7, r7, 0x0200
            addi r8, r7, 1
            li r5, 0
            fxvoutx 0, r7, r5
            {spin}
            fxvoutx 0, r8, r5
            sync
            wait""")
        resets = [c for kind, c in ppu.analog.log if kind == "reset"]
        even, odd = ppu.analog.reset_cycle[0], ppu.analog.reset_cycle[1]
        assert odd == resets[1] // 2
        assert (even == odd) == together
        assert (ppu.analog.reset_cycle[0::2] == even).all() and (ppu.analog.reset_cycle[1::2] == odd).all()


def test_a_later_read_sees_the_membrane_move(chip):
    text = READ_PROGRAM.replace("li r9, 400", "li r9, 40")
    ppu = Nux(chip, half=0, noise_seed=None)
    ppu.analog.add_events(np.arange(0, 128, 2), np.full(64, 31), np.arange(100, 164))
    ppu.load(assemble(text))
    ppu.run()
    early = np.frombuffer(ppu.read_memory(0x3000, 128), np.uint8).astype(int)
    ppu2 = Nux(chip, half=0, noise_seed=None)
    ppu2.analog.add_events(np.arange(0, 128, 2), np.full(64, 31), np.arange(100, 164))
    ppu2.load(assemble(READ_PROGRAM))
    ppu2.run()
    late = np.frombuffer(ppu2.read_memory(0x3000, 128), np.uint8).astype(int)
    assert np.abs(late - early).mean() > 2


def test_weights_over_the_bus(chip):
    c = Chip(4)
    before = c.config.weights[0].copy()
    ppu, _ = _run(c, """
        li r4, 10              # row 5, odd columns
        li r5, 0
        fxvinx 1, r4, r5
        li r3, 0x3000
        fxvstax 1, r3, r5
        li r6, 63
        fxvsplatb 2, r6
        li r4, 14              # row 7, even columns
        fxvoutx 2, r4, r5
        sync
        wait""")
    np.testing.assert_array_equal(np.frombuffer(ppu.read_memory(0x3000, 128), np.uint8), before[5, 0::2])
    after = c.config.weights[0]
    assert (after[7, 0::2] == 63).all()
    np.testing.assert_array_equal(after[7, 1::2], before[7, 1::2])
    np.testing.assert_array_equal(np.delete(after, 7, axis=0), np.delete(before, 7, axis=0))


def test_external_memory_and_random_generator(chip):
    ppu, _ = _run(chip, """
        lis r4, 0x4000         # scalar view of the external memory
        li r5, 1234
        stw r5, 128(r4)
        lis r6, 0x8000         # vector view: its second vector
        addi r6, r6, 1
        li r7, 0
        fxvinx 1, r6, r7
        li r3, 0x3000
        fxvstax 1, r3, r7
        lis r8, 0x000e         # random generator
        fxvinx 2, r8, r7
        li r3, 0x3080
        fxvstax 2, r3, r7
        sync
        wait""")
    got = ppu.read_memory(0x3000, 256)
    assert int.from_bytes(got[:4], "big") == 1234
    assert len(set(got[128:])) > 50


@pytest.mark.parametrize("text, needle", [
    ("lis r4, 0x1000\n lwz r3, 0(r4)\n wait", "0x10000000"),
    ("li r4, 0x101\n lwz r3, 0(r4)\n wait", "misaligned"),
    ("li r4, 0x1010\n li r5, 0\n fxvlax 1, r4, r5\n wait", "misaligned"),
    ("lis r4, 0x0077\n li r5, 0\n fxvinx 1, r4, r5\n sync\n wait", "0x00770000"),
    ("loop: b loop", "budget"),
    (".long 0x00000000", "illegal"),
])
def test_errors_name_the_address_and_the_pc(chip, text, needle):
    with pytest.raises(PPUError) as err:
        _run(chip, text, max_cycles=5000)
    msg = str(err.value)
    assert needle in msg and "pc 0x" in msg


def test_vector_io_without_a_chip_is_refused():
    ppu = Nux(None)
    ppu.load(assemble("lis r4, 8\n li r5, 0\n fxvinx 1, r4, r5\n wait"))
    with pytest.raises(PPUError, match="no chip"):
        ppu.run()


def test_the_vector_fifo_lets_the_core_run_ahead(chip):
    """Four vector loads queue up while the scalar core goes on; sync waits."""
    text = """
        li r4, 0x2000
        li r5, 0
        mfspr r3, 284
        fxvlax 1, r4, r5
        fxvlax 2, r4, r5
        mfspr r6, 284          # the core did not wait for the loads
        sync
        mfspr r7, 284
        li r8, 0x3000
        stw r6, 0(r8)
        stw r7, 4(r8)
        stw r3, 8(r8)
        wait"""
    ppu, _ = _run(chip, text)
    t_mid, t_end, t0 = (int.from_bytes(ppu.read_memory(0x3000 + 4 * i, 4), "big") for i in range(3))
    assert t_mid - t0 == 3
    assert t_end - t0 == 1 + ppu.timing.vector_load * 2 + 1


README_EXAMPLE = """
    # Read the CADC, wait, read again, subtract with saturation, apply a hard
    # sigmoid with saturating vector operations, store the result.
    .set CAUSAL, 0x80000
    .set RESULT, 0x3000
    lis r4, CAUSAL@h
    ori r4, r4, CAUSAL@l
    li r5, 0
    fxvinx 1, r4, r5           # first read (even columns)
    sync
    li r9, 250                 # wait 250 loop turns (about 3 us)
    mtctr r9
delay:
    bdnz delay
    fxvinx 2, r4, r5           # second read
    fxvsubbfs 3, 2, 1          # difference, saturating (-128..127)
    li r6, 16
    fxvsplatb 4, r6            # 16 in every lane
    fxvaddbfs 3, 3, 3          # x2, saturating: the sigmoid's slope
    fxvaddbfs 3, 3, 4          # + 16: shift
    li r7, 0
    fxvsplatb 5, r7
    fxvcmpb 3                  # sets the vector condition register from v3 (against 0)
    fxvsel 3, 5, 3, 2          # where negative (lt): 0
    li r6, RESULT@l
    fxvstax 3, r6, r5
    sync
    wait
"""


def _readme_example():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- ppu-example -->", 1)[1].split("```asm", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_example_computes_a_hard_sigmoid_of_the_difference():
    asm = _readme_example()
    # The same program, also keeping both reads for the check.
    keep = asm.replace("    addi r8, r6, 256\n", "    fxvstax 1, r6, r5\n    addi r8, r6, 128\n"
                       "    fxvstax 2, r8, r5\n    addi r8, r6, 256\n")
    chip = Chip(0)
    chip.config.set_logical_weights(0, np.full((128, 256), 30))
    ppu = Nux(chip, half=0, noise_seed=1)
    ppu.analog.add_events([3, 7, 9], [31, 31, 31], [300, 305, 310])   # between the two reads
    ppu.load(assemble(keep))
    result = ppu.run(max_cycles=100_000)
    m = np.frombuffer(ppu.read_memory(0x3000, 384), np.int8).astype(int)
    first, second, y = m[:128], m[128:256], m[256:]       # the reads already as code - 128
    d = np.clip(second - first, -128, 127)
    want = np.clip(np.clip(2 * d, -128, 127) + 64, -128, 127)
    want[want < 0] = 0
    np.testing.assert_array_equal(y, want)
    assert (second - first).mean() > 3          # the events moved the membranes
    assert 4 * 250 < result.cycles < 8 * 250    # about 4 us of waiting plus two reads
    # As written in the README (without the extra stores) it runs too.
    ppu = Nux(chip, half=0, noise_seed=1)
    ppu.load(assemble(asm))
    ppu.run(max_cycles=100_000)


def test_ppu_run_command(tmp_path, capsys):
    src = tmp_path / "example.s"
    src.write_text(_readme_example())
    assert main(["ppu", "run", str(src), "--show", "0x3100:16", "--show", "delay:8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["instructions"] > 333 and out["cycles"] > 1000
    assert len(bytes.fromhex(out["memory"]["0x3100"])) == 16
    assert set(out["memory"]) == {"0x3100", "delay"}
    # Failures are one line, exit 2: a bad --show, a missing file, a faulting program.
    assert main(["ppu", "run", str(src), "--show", "nosuchsymbol"]) == 2
    assert main(["ppu", "run", str(tmp_path / "missing.s")]) == 2
    bad = tmp_path / "bad.s"
    bad.write_text("lis r4, 0x1000\n lwz r3, 0(r4)\n wait\n")
    assert main(["ppu", "run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("bss2sim ppu run: error:") for line in err)
    assert "0x10000000" in err[-1]


def test_api_errors_name_the_parameter():
    from bss2sim.digital.nux import NuxTiming, load_elf
    ppu = Nux()
    for call, needle in ((lambda: ppu.write_memory(0x5000, b"ab"), "address=0x00005000"),
                         (lambda: ppu.read_memory(0x3FFE, 4), "address=0x00003ffe"),
                         (lambda: ppu.write_memory(0, [1, 300]), "data[1]=300"),
                         (lambda: ppu.run(max_cycles=0), "max_cycles=0"),
                         (lambda: ppu.run(engine="fastest"), "engine='fastest'"),
                         (lambda: NuxTiming(mul=0), "NuxTiming.mul=0"),
                         (lambda: load_elf(5), "path=5"),
                         (lambda: Nux(chip=5), "chip=5"),
                         (lambda: Nux(half=2), "half=2"),
                         (lambda: ppu.load("text"), "program='text'")):
        with pytest.raises((TypeError, ValueError)) as err:
            call()
        assert needle in str(err.value)


def test_spike_injection_sends_events_at_the_store_time(chip):
    """A store of an event label to the spike-injection address sends that event
    in the FPGA cycle of the store; the CADC read then sees it."""
    from bss2sim.digital.nux.memory import SPIKE_INJECTION_ADDRESS
    from bss2sim.digital.playback import event_label
    labels = [event_label(0, d, a) for d, a in ((3, 31), (40, 12), (77, 5))]
    stores = "\n".join(f"li r5, {lb}\n    stw r5, 0(r4)\n    mfspr r6, 284\n    stw r6, {0x100 + 4 * i}(r10)"
                       for i, lb in enumerate(labels))
    ppu, _ = _run(chip, f"""
        lis r4, {SPIKE_INJECTION_ADDRESS >> 16}
        ori r4, r4, {SPIKE_INJECTION_ADDRESS & 0xFFFF}
        li r10, 0x3000
        {stores}
        wait""")
    events = ppu.analog.events
    assert [(d, a) for d, a, _ in events] == [(3, 31), (40, 12), (77, 5)]
    # The time base read right after each store: the store took spike_injection cycles.
    after = [int.from_bytes(ppu.read_memory(0x3100 + 4 * i, 4), "big") for i in range(3)]
    cost = ppu.timing.spike_injection
    assert [c for _, _, c in events] == [(t - cost) // 2 for t in after]
    assert [k for k, _ in ppu.analog.log] == ["inject"] * 3


@pytest.mark.parametrize("label, match", [(0x2000 | 5, "for half 1"), (0, "no event label")])
def test_spike_injection_refuses_other_halves_and_bad_labels(chip, label, match):
    from bss2sim.digital.nux import PPUError
    from bss2sim.digital.nux.memory import SPIKE_INJECTION_ADDRESS
    with pytest.raises(PPUError, match=match):
        _run(chip, f"""
            lis r4, {SPIKE_INJECTION_ADDRESS >> 16}
            ori r4, r4, {SPIKE_INJECTION_ADDRESS & 0xFFFF}
            li r5, {label}
            stw r5, 0(r4)
            wait""")
