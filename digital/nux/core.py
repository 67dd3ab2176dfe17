"""The Nux core: fetch, decode, execute, with the cycle model of
:class:`~.timing.NuxTiming` and the memory map of :mod:`.memory`.

A :class:`Nux` is one PPU of one chip half. Load a :class:`~.program.Program`
(from :func:`~.asm.assemble` or :func:`~.elf.load_elf`), put input data into
its memory, :meth:`Nux.run` it, and read back memory, registers and the cycle
count::

    ppu = Nux(Chip(0), half=0)
    ppu.load(assemble(text))
    result = ppu.run(max_cycles=100_000)
    result.cycles, result.instructions, ppu.read_memory(0x3000, 128)

The run ends at a ``wait`` instruction (the program's end; the start-up file
of C programs ends with one), and stops with :class:`PPUError` at an illegal
instruction, a bad access or when the cycle budget is spent, naming the
program counter and the instruction or address.
"""
from __future__ import annotations

from dataclasses import dataclass

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import as_int_array, check_instance, check_int

from . import isa, reference
from .memory import SPIKE_INJECTION_ADDRESS, AnalogHalf, PPUMemory
from .program import Program
from .timing import NuxTiming

VECTOR_UNITS = {"vector_alu", "vector_mul", "vector_permute", "vector_load", "vector_store",
                 "vector_in", "vector_out"}


class PPUError(RuntimeError):
    """A program stopped: illegal instruction, bad access or cycle budget spent."""

    def __init__(self, message, pc, cycles):
        super().__init__(message)
        self.pc = pc
        self.cycles = cycles

    @classmethod
    def budget(cls, what: str, limit: int, pc: int, cycles: int) -> "PPUError":
        """The run passed its budget of ``limit`` ``what`` ("cycles" or "instructions")."""
        return cls(f"the program ran past its budget of {limit} {what} (pc 0x{pc:08x})", pc, cycles)


def check_budgets(max_cycles, max_instructions):
    """The budgets of a run, validated (both engines take the same)."""
    max_cycles = check_int("max_cycles", max_cycles, 1, 1 << 62, "PPU cycles")
    if max_instructions is not None:
        max_instructions = check_int("max_instructions", max_instructions, 1, 1 << 62)
    return max_cycles, max_instructions


@dataclass(frozen=True)
class RunResult:
    """What a run did."""

    cycles: int
    """PPU cycles (4 ns) from the start of the run to its end, vector unit drained."""
    instructions: int
    """Instructions executed."""
    stop: str
    """Why it ended: 'wait' (the program's end)."""
    pc: int
    """Address after the last instruction."""

    @property
    def seconds(self) -> float:
        return self.cycles / K.PPU_CLOCK_HZ


class Nux:
    """One PPU with its memory and, optionally, its chip half.

    Parameters
    ----------
    chip : Chip or None
        The chip whose half this PPU serves (needed for CADC reads, neuron
        resets and synapse access over the vector bus).
    half : int
        0 (top) or 1 (bottom).
    noise_seed : int or None
        Seed of the trial-to-trial noise of the CADC conversions (default 0);
        None switches it off.
    timing : NuxTiming
        The cycle model.
    """

    def __init__(self, chip=None, half: int = 0, noise_seed: int | None = 0,
                 timing: NuxTiming | None = None):
        from bss2sim.circuits import Chip
        if chip is not None:
            check_instance("chip", chip, Chip, "bss2sim.circuits.Chip or None")
        half = check_int("half", half, 0, 1)
        if noise_seed is not None:
            from bss2sim.circuits.checks import check_seed
            noise_seed = check_seed("noise_seed", noise_seed)
        self.timing = timing if timing is not None else NuxTiming()
        check_instance("timing", self.timing, NuxTiming)
        self.analog = AnalogHalf(chip, half, noise_seed) if chip is not None else None
        self.memory = PPUMemory(self.analog)
        self.state = reference.NuxState()
        self.cycle = 0
        """PPU cycles since this PPU was created (the time base)."""
        self.instructions = 0
        self._vector_free = 0
        self._fifo = []
        self._decoded = {}
        self._external = False
        self._injection = False
        self.program = None

    # --- memory and programs ---------------------------------------------------
    def load(self, program: Program):
        """Copy a program's segments into memory and set the program counter to its entry."""
        check_instance("program", program, Program, "bss2sim.digital.nux.Program")
        for seg in program.segments:
            self.write_memory(seg.address, seg.data)
        self.state.pc = program.entry
        self.state.waiting = False
        self._decoded.clear()
        self.memory.code_writes.clear()
        self.program = program

    def write_memory(self, address: int, data):
        """Write bytes into the PPU's address space (SRAM or external memory)."""
        address = check_int("address", address, 0, 0xFFFF_FFFF)
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(as_int_array("data", data, 0, 255).astype("uint8").ravel())
        try:
            self.memory.store_bytes(address, bytes(data))
        except reference.MemoryFault as e:
            raise ValueError(f"address=0x{address:08x}, {len(data)} bytes: {e}") from None
        self._decoded.clear()
        self.memory.code_writes.clear()

    def read_memory(self, address: int, size: int) -> bytes:
        """Bytes of the PPU's address space."""
        address = check_int("address", address, 0, 0xFFFF_FFFF)
        size = check_int("size", size, 0, 1 << 20)
        try:
            return self.memory.load_bytes(address, size)
        except reference.MemoryFault as e:
            raise ValueError(f"address=0x{address:08x}, size={size}: {e}") from None

    # --- running ---------------------------------------------------------------
    def _decode(self, pc):
        d = self._decoded.get(pc)
        if d is None:
            try:
                d = isa.decode(self.memory.fetch(pc))
            except isa.IllegalInstruction as e:
                raise PPUError(f"{e} (pc 0x{pc:08x})", pc, self.cycle) from None
            self._decoded[pc] = d
        return d

    # Scalar units -> the NuxTiming field of their cost; vector units -> their latency.
    _SCALAR_COST = {"alu": "alu", "cr": "alu", "spr": "alu", "mul": "mul", "div": "div",
                    "load": "load", "store": "store", "sync": "sync", "wait": "wait_wakeup"}
    _VECTOR_LATENCY = {"vector_alu": "vector_alu", "vector_mul": "vector_mul",
                       "vector_permute": "vector_permute", "vector_load": "vector_load",
                       "vector_store": "vector_store"}
    # Vector I/O: the latency follows what the access reached (memory.io_kind).
    _IO_LATENCY = {("vector_in", "cadc"): "cadc_convert", ("vector_in", "bus"): "vector_in_bus",
                   ("vector_in", "extmem_in"): "extmem_in", ("vector_in", "randgen"): "randgen_in",
                   ("vector_out", "bus"): "vector_out_bus", ("vector_out", "extmem_out"): "extmem_out"}

    def _cost(self, d, pc, taken):
        """Cycles of the scalar core for one executed scalar instruction."""
        t = self.timing
        unit = d.instruction.unit
        if unit == "branch":
            return t.branch_taken if taken else t.branch_not_taken
        if self._external and unit == "load":
            return t.bus_load + t.external_extra
        if self._external and unit == "store":
            return t.store + t.external_extra
        if self._injection:
            return t.spike_injection
        return getattr(t, self._SCALAR_COST[unit])

    def _vector_latency(self, unit):
        """Cycles the vector unit spends on one vector instruction."""
        if unit in self._VECTOR_LATENCY:
            return getattr(self.timing, self._VECTOR_LATENCY[unit])
        return getattr(self.timing, self._IO_LATENCY[(unit, self.memory.io_kind)])

    def run(self, max_cycles: int = 10_000_000, max_instructions: int | None = None,
            engine: str = "fast") -> RunResult:
        """Run from the program counter until a ``wait`` instruction.

        Parameters
        ----------
        max_cycles : int
            Cycle budget of this run (PPU cycles of 4 ns); a program that has
            not reached ``wait`` by then stops with :class:`PPUError`.
        max_instructions : int or None
            Optional instruction budget.
        engine : "fast" or "reference"
            The numba interpreter (:mod:`.fast`, the default) or the plain-Python
            loop over :mod:`.reference`; both give the same state, memory, cycle
            count and errors, bit for bit (tested).
        """
        if engine == "fast":
            from .fast import run_fast
            return run_fast(self, max_cycles, max_instructions)
        if engine != "reference":
            raise ValueError(f"engine={engine!r} is not allowed: must be 'fast' or 'reference'")
        max_cycles, max_instructions = check_budgets(max_cycles, max_instructions)
        st = self.state
        start_cycle, start_instr = self.cycle, self.instructions
        st.waiting = False
        while True:
            if self.cycle - start_cycle > max_cycles:
                raise PPUError.budget("cycles", max_cycles, st.pc, self.cycle)
            if max_instructions is not None and self.instructions - start_instr >= max_instructions:
                raise PPUError.budget("instructions", max_instructions, st.pc, self.cycle)
            self._step()
            if st.waiting:
                # The end: the vector unit finishes what it holds.
                self.cycle = max(self.cycle, self._vector_free)
                return RunResult(cycles=self.cycle - start_cycle,
                                 instructions=self.instructions - start_instr, stop="wait", pc=st.pc)

    def _step(self):
        """Execute the instruction at the program counter with its timing: the
        vector FIFO and unit, ``sync``, the time base, the time of the access."""
        st, mem, timing = self.state, self.memory, self.timing
        pc = st.pc
        d = self._decode(pc)
        unit = d.instruction.unit
        vector = unit in VECTOR_UNITS
        if vector:
            # The vector FIFO: wait for a free entry, then the unit starts the
            # instruction when it is done with the ones before it.
            self._fifo = [f for f in self._fifo if f > self.cycle]
            if len(self._fifo) >= timing.vector_fifo_depth:
                self.cycle = self._fifo.pop(0)
            begin = max(self.cycle, self._vector_free)
            mem.now = begin
        else:
            if unit == "sync":
                self.cycle = max(self.cycle, self._vector_free)
                self._fifo = []
            mem.now = self.cycle
        st.time_base = self.cycle
        ea = self._effective_address(d) if unit in ("load", "store") else None
        self._external = ea is not None and self.memory.is_external(ea)
        self._injection = unit == "store" and ea == SPIKE_INJECTION_ADDRESS
        try:
            reference.execute(st, mem, d)
        except reference.MemoryFault as e:
            st.pc = pc
            raise PPUError(f"{e} by {isa.disassemble(mem.fetch(pc), pc)} (pc 0x{pc:08x})",
                           pc, self.cycle) from None
        except isa.IllegalInstruction as e:
            st.pc = pc
            raise PPUError(f"{e} (pc 0x{pc:08x})", pc, self.cycle) from None
        if mem.code_writes:
            # A store over code: those words are decoded again when they run.
            for a in mem.code_writes:
                self._decoded.pop(a, None)
            mem.code_writes.clear()
        self.instructions += 1
        if vector:
            done = begin + self._vector_latency(unit)
            self._vector_free = done
            self._fifo.append(done)
            self.cycle += timing.vector_issue
        else:
            self.cycle += self._cost(d, pc, unit == "branch" and st.pc != pc + 4)

    def _effective_address(self, d):
        """The address a scalar load or store is about to access."""
        f = d.fields
        ra = f.get("ra", 0)
        base = self.state.gpr[ra] if ra else 0
        if "d" in f:
            ea = (base + f["d"]) & 0xFFFF_FFFF
        elif "rb" in f:
            ea = (base + self.state.gpr[f["rb"]]) & 0xFFFF_FFFF
        else:
            ea = base
        return ea
