"""The chip group's PPU speed tests, written in this project's assembly.

Each test reads the time base, runs one operation, waits for the vector unit
(``sync``), reads the time base again and stores the difference minus one,
as libnux's hardware test ``test_speed_memory`` does [LNX]; each is measured
twice and the second (warm) figure counts, as there. The published figures
(PPU cycles) and tolerances are the ones that test asserts on silicon.
"""
from __future__ import annotations

from dataclasses import dataclass

from .memory import (IO_BUFFER_ENABLE, IO_CAUSAL_BASE, IO_EXTMEM_BASE, IO_NEURON_RESET,
                     IO_WEIGHT_BASE)

RESULT_ADDRESS = 0x3000
"""Where each test program leaves its figure (a word in the mailbox)."""
_VECTOR_ADDRESS = 0x2000
"""A 128-byte aligned buffer for the SRAM vector tests."""


@dataclass(frozen=True)
class SpeedTest:
    name: str
    published_cycles: int
    tolerance_cycles: int
    body: str
    """The operation(s) between the two time-base reads; r4, r6 hold the
    addresses set up by ``setup``, r5 is zero."""
    setup: str


def _li32(reg, value):
    return f"lis {reg}, {(value >> 16) & 0xFFFF}\n    ori {reg}, {reg}, {value & 0xFFFF}"


SPEED_TESTS = (
    SpeedTest("extmem store fxvoutx", 38, 4, "fxvoutx 0, r4, r5", _li32("r4", IO_EXTMEM_BASE)),
    SpeedTest("intmem store fxvstax", 47, 5, "fxvstax 0, r4, r5", _li32("r4", _VECTOR_ADDRESS)),
    SpeedTest("intmem load fxvlax", 49, 5, "fxvlax 0, r4, r5", _li32("r4", _VECTOR_ADDRESS)),
    SpeedTest("weight store", 20, 2, "fxvoutx 0, r4, r5", _li32("r4", IO_WEIGHT_BASE)),
    SpeedTest("weight load", 20, 2, "fxvinx 0, r4, r5", _li32("r4", IO_WEIGHT_BASE)),
    SpeedTest("neuron reset", 20, 2, "fxvoutx 0, r4, r5", _li32("r4", IO_NEURON_RESET)),
    SpeedTest("cadc read", 410, 41, "fxvinx 0, r4, r5\n    fxvinx 1, r6, r5",
              _li32("r4", IO_CAUSAL_BASE) + "\n    " + _li32("r6", (IO_CAUSAL_BASE | IO_BUFFER_ENABLE) + 1)),
)


def program_text(test: SpeedTest) -> str:
    """Assembly of one speed test: set up, measure twice, store the second figure."""
    return f"""
    # {test.name}: mfspr tb; operation; sync; mfspr tb  (as libnux measures it)
    {test.setup}
    li r5, 0
    li r9, 2                 # measure twice: the first run warms up
    mtctr r9
again:
    mfspr r3, 284
    {test.body}
    sync
    mfspr r7, 284
    bdnz again
    subf r8, r3, r7
    addi r8, r8, -1
    {_li32("r10", RESULT_ADDRESS)}
    stw r8, 0(r10)
    wait
"""


def run_speed_tests(chip=None):
    """Run every speed test on a PPU of ``chip`` (a fresh :class:`Chip(0)` by
    default); returns a list of dicts with the published and measured cycles."""
    from bss2sim.circuits import Chip

    from .asm import assemble
    from .core import Nux
    chip = chip if chip is not None else Chip(0)
    rows = []
    for test in SPEED_TESTS:
        ppu = Nux(chip, half=0, noise_seed=None)
        ppu.load(assemble(program_text(test), source=f"<speed test {test.name}>"))
        ppu.run(max_cycles=100_000)
        measured = int.from_bytes(ppu.read_memory(RESULT_ADDRESS, 4), "big")
        rows.append({"name": test.name, "published_cycles": test.published_cycles,
                     "tolerance_cycles": test.tolerance_cycles, "measured_cycles": measured,
                     "within_tolerance": abs(measured - test.published_cycles) <= test.tolerance_cycles})
    return rows
