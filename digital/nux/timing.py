"""Cycle model of the Nux core: every constant in one dataclass.

The core is in order: each scalar instruction takes the cycles of its unit.
Vector instructions go through a FIFO to the vector unit, which runs them one
after the other while the scalar core goes on; ``sync`` waits until the vector
unit is idle. A measurement ``mfspr tb; <vector op>; sync; mfspr tb`` minus one
(as the chip group's speed tests do it [LNX]) therefore reads the vector
operation's latency plus one, so each latency below is the published figure
minus one.

Sources: [NUX] the processor's guide (design parameters of ``Pu_v2`` and
``frontend_pkg``), [LNX] libnux ``tests/hw/libnux/vx/test_speed_memory.cpp``
(hardware measurements).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from bss2sim.circuits.checks import check_int


@dataclass(frozen=True)
class NuxTiming:
    """Cycles per instruction class of the Nux core (PPU cycles of 4 ns)."""

    alu: int = 1
    """Integer, logic, compare, CR and SPR instructions (*assumed* single cycle,
    the core's write-through bypass hides the pipeline [NUX OPT_WRITE_THROUGH])."""
    mul: int = 4
    """Fixed-point multiplier latency [NUX mul_latency = 4]; the core waits for
    it (*assumed*: no overlap with later independent instructions)."""
    div: int = 31
    """Fixed-point divider latency [NUX div_latency = 31]."""
    load: int = 2
    """Scalar load from the internal SRAM [NUX ls_latency = 2]."""
    store: int = 1
    """Scalar store to the internal SRAM (*assumed*: stores retire without
    waiting for the write)."""
    bus_load: int = 3
    """Scalar load over the bus to external memory [NUX ls_bus_latency = 3],
    plus :attr:`external_extra`."""
    external_extra: int = 30
    """Extra cycles of a scalar access to the FPGA-attached memory (*assumed*:
    a round trip through the chip's link; no figure is published)."""
    branch_taken: int = 3
    """A taken branch: one cycle plus a refetch of two (*assumed*: no branch
    predictor [NUX OPT_BCACHE = 0], one fetch stage [NUX OPT_IF_LATENCY = 1])."""
    branch_not_taken: int = 1
    """A conditional branch that falls through."""
    sync: int = 1
    """``sync``/``isync`` once the vector unit is idle."""
    vector_issue: int = 1
    """Cycles of the scalar core to hand an instruction to the vector FIFO."""
    vector_fifo_depth: int = 4
    """Vector instructions that may wait for the vector unit [NUX
    OPT_VECTOR_INST_QUEUE_DEPTH = 4]; a fifth stalls the scalar core."""
    vector_alu: int = 2
    """Vector add, subtract, compare, select, splat, accumulator moves: the
    adder's one stage plus register write (*assumed* from [NUX
    OPT_VECTOR_ADD_DELAY = 1])."""
    vector_mul: int = 5
    """Vector multiply and multiply-accumulate: four multiplier stages plus
    write [NUX OPT_VECTOR_MULT_DELAY = 4]."""
    vector_permute: int = 2
    """Shifts, packs and unpacks (*assumed* as the adder)."""
    vector_load: int = 48
    """``fxvlax`` from the internal SRAM: measured 49 +- 5 [LNX]."""
    vector_store: int = 46
    """``fxvstax`` to the internal SRAM: measured 47 +- 5 [LNX]."""
    cadc_convert: int = 389
    """``fxvinx`` from the CADC that starts a conversion of the row: the first
    of the two reads of a row, measured together as 410 +- 41 [LNX] with the
    buffered second read (:attr:`vector_in_bus`)."""
    vector_in_bus: int = 19
    """``fxvinx`` of a synapse row half or of the CADC's buffered result:
    measured 20 +- 2 for a weight load [LNX]."""
    vector_out_bus: int = 19
    """``fxvoutx`` of a synapse row half or a neuron reset: measured 20 +- 2 [LNX]."""
    extmem_in: int = 343
    """``fxvinx`` from the FPGA-attached memory: about 344 [LNX] (test disabled there)."""
    extmem_out: int = 37
    """``fxvoutx`` to the FPGA-attached memory: measured 38 +- 4 [LNX]."""
    randgen_in: int = 19
    """``fxvinx`` from the random generator (*assumed* as a bus read)."""
    wait_wakeup: int = 1
    """Cycles of a ``wait`` instruction (the program then ends)."""
    spike_injection: int = 8
    """Cycles of a scalar store to the spike-injection address, which sends one
    event (*assumed*: no figure is published; a store over the on-chip
    Omnibus, taken as a bus access of 3 cycles plus 5 for the bus's round
    trip to the event interface)."""

    def __post_init__(self):
        for f in fields(self):
            check_int(f"NuxTiming.{f.name}", getattr(self, f.name), 1, 100_000, "PPU cycles")

