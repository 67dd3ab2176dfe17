"""One simulated clock for the whole system: the FPGA's playback program, both
PPUs running their programs, and both analog halves.

This co-simulation is the reference of the digital side, as the trace path is
the reference of the analog side: the batched path of
:class:`~bss2sim.digital.Accelerator` is tested against it (same int8 results
bit for bit, same chip time per category).

How the three layers meet:

* The playback program (:mod:`.playback`) runs at 125 MHz. Before each of its
  instructions touches a PPU or a half, that PPU is run up to the
  instruction's time (PPU cycle = 2 x FPGA cycle): every instruction, and every
  vector access, that starts earlier is executed first.
* A PPU (:class:`~bss2sim.digital.nux.Nux`, the plain-Python reference
  engine) idles in ``wait``. A word the FPGA writes into its memory wakes it
  :data:`WAKE_LATENCY_PPU_CYCLES` after the write lands (*assumed*; a write
  that lands while it is busy is remembered and ends its next ``wait`` at
  once). Its scalar loads see the words written before them.
* Events reach the drivers of their half at the cycle of their packet; a CADC
  conversion integrates every event up to its start
  (:class:`~bss2sim.digital.nux.memory.AnalogHalf`), resets happen at the time
  of their bus access.

Chip time comes from the playback program: each instruction counts in its
category (:data:`.timing.CATEGORIES`), and the time of a ``waits`` instruction
during which a CADC conversion runs counts as ``cadc_conversions``, during
which a PPU is busy (awake) as ``ppu``. All times are kept in integer PPU
cycles (4 ns).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_instance

from . import playback as pb
from .nux.core import VECTOR_UNITS, Nux, PPUError
from .nux.memory import MAILBOX_ADDRESS
from .nux.program import Program
from .nux.timing import NuxTiming
from .timing import CATEGORIES

WAKE_LATENCY_PPU_CYCLES = 2
"""PPU cycles from the landing of an FPGA write to the first instruction after
``wait`` (*assumed*: no figure is published)."""
DOORBELL_ADDRESS = MAILBOX_ADDRESS
"""The mailbox word whose FPGA writes wake a PPU (its ``status``); writes
elsewhere (data, configuration) let it sleep (*assumed*)."""
BOOT_MAX_CYCLES = 1_000_000
"""Cycle budget of a PPU program's start-up, up to its first ``wait``."""
FPGA_TO_PPU = 2
"""PPU cycles per FPGA cycle (250 MHz against 125 MHz)."""


@dataclass
class CoSimResult:
    """What a playback program did."""

    reads: list
    """``(tag, ppu, bytes)`` of every ``read_ppu_block``, in order."""
    spans: list
    """``(index, start, end, category)`` of every instruction, FPGA cycles from the program's start."""
    category_cycles: dict
    """PPU cycles (4 ns) of chip time per category; they sum to the program's length."""
    cycles: int
    """Length of the program's run in FPGA cycles."""
    ppu_busy: list = field(default_factory=list)
    """Per PPU, ``(start, end)`` PPU cycles (from the program's start) while awake."""
    ppu_instructions: list = field(default_factory=list)
    """Per PPU, the instructions executed in each of its awake intervals."""
    analog_log: list = field(default_factory=list)
    """Per half, ``(kind, PPU cycle)`` of its resets and conversions during the run."""
    events: list = field(default_factory=list)
    """Per half, ``(driver, activation, FPGA cycle)`` of the events sent."""
    status_writes: list = field(default_factory=list)
    """Per PPU, ``(PPU cycle, value)`` of its stores to its ``status`` word."""

    def seconds(self) -> dict:
        return {c: v / K.PPU_CLOCK_HZ for c, v in self.category_cycles.items()}


def _overlap(a0, a1, intervals):
    """Length of [a0, a1) covered by a union of sorted, disjoint intervals."""
    total = 0
    for b0, b1 in intervals:
        lo, hi = max(a0, b0), min(a1, b1)
        if hi > lo:
            total += hi - lo
    return total


def _union(intervals):
    out = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def category_cycles(spans, polls, conversions, awake) -> dict:
    """Chip time per category in PPU cycles: each playback instruction span
    ``(index, start, end, category)`` (FPGA cycles) counts in its category; of
    a ``waits`` span, the time during which a CADC converts (``conversions``,
    PPU-cycle intervals) counts as ``cadc_conversions`` and the time a PPU is
    awake (``awake``) as ``ppu``; of a poll (``polls[i]`` true), the CADC time
    counts as ``cadc_conversions`` and the rest as the span's category."""
    conv, awake = _union(conversions), _union(awake)
    both = _union([(max(x0, y0), min(x1, y1)) for x0, x1 in awake for y0, y1 in conv])
    cycles = {c: 0 for c in CATEGORIES}
    for (_, a, b, cat), poll in zip(spans, polls):
        a2, b2 = a * FPGA_TO_PPU, b * FPGA_TO_PPU
        if cat != "waits" and not poll:
            cycles[cat] += b2 - a2
            continue
        in_conv = _overlap(a2, b2, conv)
        cycles["cadc_conversions"] += in_conv
        if poll:        # the FPGA waits for the PPU: all of it the PPU's time
            cycles[cat] += b2 - a2 - in_conv
            continue
        in_awake = _overlap(a2, b2, awake) - _overlap(a2, b2, both)
        cycles["ppu"] += in_awake
        cycles["waits"] += b2 - a2 - in_conv - in_awake
    return cycles


class CoSimulation:
    """The playback program, both PPUs and both halves of one chip on one clock.

    Parameters
    ----------
    chip : Chip
    programs : Program or (Program, Program)
        The PPU program of each half (one for both); each is started and run to
        its first ``wait`` before time zero.
    noise_sources : (callable or None, callable or None)
        Per half, the noise of each CADC conversion (see
        :attr:`~bss2sim.digital.nux.memory.AnalogHalf.noise_source`); None: no noise.
    timing : NuxTiming
        Cycle model of both PPUs.
    """

    def __init__(self, chip: Chip, programs, noise_sources=(None, None), timing: NuxTiming | None = None):
        check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
        if isinstance(programs, Program):
            programs = (programs, programs)
        if not (isinstance(programs, (tuple, list)) and len(programs) == K.NUM_HALVES):
            raise ValueError(f"programs={programs!r} must be one Program or one per half")
        self.chip = chip
        self.ppus = []
        for h, prog in enumerate(programs):
            check_instance(f"programs[{h}]", prog, Program, "bss2sim.digital.nux.Program")
            nux = Nux(chip, h, noise_seed=None, timing=timing)
            nux.load(prog)
            nux.analog.noise_source = noise_sources[h]
            nux.memory.watch.add(DOORBELL_ADDRESS)
            while not nux.state.waiting:
                if nux.cycle > BOOT_MAX_CYCLES:
                    raise PPUError(f"the PPU program of half {h} did not reach its first wait within "
                                   f"{BOOT_MAX_CYCLES} cycles of its start-up (pc 0x{nux.state.pc:08x})",
                                   nux.state.pc, nux.cycle)
                nux._step()
            # The start-up happens before time zero: the clocks start at the first wait.
            nux.cycle, nux._vector_free, nux._fifo = 0, 0, []
            nux.analog.log.clear()
            nux.memory.watch_log.clear()
            self.ppus.append(nux)
        self.now = 0
        """FPGA cycles since time zero."""
        self._pending = [False] * K.NUM_HALVES
        self._busy_since = [None] * K.NUM_HALVES
        self._busy = [[] for _ in range(K.NUM_HALVES)]
        self._busy_instr = [0] * K.NUM_HALVES

    # --- the PPUs ------------------------------------------------------------
    @staticmethod
    def _next_access(nux):
        """PPU cycle at which the next instruction touches memory or the bus."""
        d = nux._decode(nux.state.pc)
        if d.instruction.unit not in VECTOR_UNITS:
            return nux.cycle
        fifo = [f for f in nux._fifo if f > nux.cycle]
        start = fifo[0] if len(fifo) >= nux.timing.vector_fifo_depth else nux.cycle
        return max(start, nux._vector_free)

    def _wake(self, h, at):
        nux = self.ppus[h]
        nux.cycle = max(nux.cycle, at) + WAKE_LATENCY_PPU_CYCLES
        nux.state.waiting = False
        self._busy_since[h] = nux.cycle - WAKE_LATENCY_PPU_CYCLES
        self._busy_instr[h] = nux.instructions

    def _advance(self, h, until):
        """Run PPU ``h`` until its next access would start at or after PPU cycle ``until``."""
        nux = self.ppus[h]
        while True:
            if nux.state.waiting:
                if not self._pending[h]:
                    return
                self._pending[h] = False
                self._wake(h, nux.cycle)
            if nux.cycle >= until or self._next_access(nux) >= until:
                return
            nux._step()
            if nux.state.waiting and self._busy_since[h] is not None:
                self._busy[h].append((self._busy_since[h], nux.cycle, nux.instructions - self._busy_instr[h]))
                self._busy_since[h] = None

    def _write_word(self, h, address, value, land):
        self._advance(h, land * FPGA_TO_PPU)
        nux = self.ppus[h]
        nux.memory.store(address, pb.PPU_WORD_BYTES, value)
        nux._decoded.pop(address, None)
        if address != DOORBELL_ADDRESS:
            return
        if nux.state.waiting:
            self._wake(h, land * FPGA_TO_PPU)
        else:
            self._pending[h] = True

    def _read(self, h, address, size, at):
        self._advance(h, at * FPGA_TO_PPU)
        return self.ppus[h].memory.load_bytes(address, size)

    # --- running a program -----------------------------------------------------
    def run(self, program: pb.PlaybackProgram) -> CoSimResult:
        """Execute a playback program from the current time; returns what it read
        and its chip time. Errors (:class:`~.playback.PlaybackError`,
        :class:`~bss2sim.digital.nux.PPUError`) name the instruction or the PPU's
        program counter."""
        check_instance("program", program, pb.PlaybackProgram, "bss2sim.digital.playback.PlaybackProgram")
        start = t = self.now
        log0 = [len(n.analog.log) for n in self.ppus]
        watch0 = [len(n.memory.watch_log) for n in self.ppus]
        busy0 = [len(b) for b in self._busy]
        reads, spans, sent = [], [], [[] for _ in range(K.NUM_HALVES)]
        for i, (ins, cat) in enumerate(zip(program.instructions, program.category)):
            where = f"playback instruction {i} ({ins.text().split()[0]}) at cycle {t - start}"
            if isinstance(ins, pb.WaitUntil):
                if start + ins.cycle < t:
                    raise pb.PlaybackError(f"{where}: wait_until cycle={ins.cycle} has passed; time never "
                                           f"runs backwards", i, t - start)
                end = start + ins.cycle
            elif isinstance(ins, pb.Wait):
                end = t + ins.cycles
            elif isinstance(ins, pb.WritePPUWord):
                end = t + pb.WORD_WRITE_CYCLES
                self._write_word(ins.ppu, ins.address, ins.value, end)
            elif isinstance(ins, pb.PollPPUWord):
                end, value = t, None
                while value != ins.value:
                    if end + pb.WORD_READ_CYCLES - t > ins.timeout:
                        raise pb.PlaybackError(
                            f"{where}: poll of PPU {ins.ppu} address 0x{ins.address:04x} for value {ins.value} "
                            f"timed out after {ins.timeout} cycles (last value read: {value})", i, t - start)
                    end += pb.WORD_READ_CYCLES
                    value = int.from_bytes(self._read(ins.ppu, ins.address, pb.PPU_WORD_BYTES, end), "big")
            elif isinstance(ins, pb.ReadPPUBlock):
                end = t + ins.duration()
                reads.append((ins.tag, ins.ppu, self._read(ins.ppu, ins.address, ins.size, end)))
            elif isinstance(ins, pb.SendEvents):
                for h, driver, activation in ins.events():
                    self._advance(h, t * FPGA_TO_PPU)
                    self.ppus[h].analog.add_event(driver, activation, t)
                    sent[h].append((driver, activation, t - start))
                end = t + pb.SEND_CYCLES
            elif isinstance(ins, pb.WriteWeights):
                self._advance(ins.half, t * FPGA_TO_PPU)
                self.chip.config.set_logical_weights(ins.half, ins.weights)
                end = t + ins.duration()
            else:
                raise pb.PlaybackError(f"{where}: unknown instruction {ins!r}", i, t - start)
            spans.append((i, t - start, end - start, cat))
            t = end
        for h in range(K.NUM_HALVES):
            self._advance(h, t * FPGA_TO_PPU)
        self.now = t
        # Chip time per category, in PPU cycles from the program's start.
        base = start * FPGA_TO_PPU
        busy, counts = [], []
        for h in range(K.NUM_HALVES):
            ivs = [(a - base, b - base) for a, b, _ in self._busy[h][busy0[h]:]]
            n = [c for _, _, c in self._busy[h][busy0[h]:]]
            if self._busy_since[h] is not None:
                ivs.append((self._busy_since[h] - base, t * FPGA_TO_PPU - base))
                n.append(self.ppus[h].instructions - self._busy_instr[h])
            busy.append(ivs)
            counts.append(n)
        logs = [[(k, c - base) for k, c in n.analog.log[log0[h]:]] for h, n in enumerate(self.ppus)]
        conv = [(c, c + self.ppus[h].timing.cadc_convert)
                for h in range(K.NUM_HALVES) for k, c in logs[h] if k == "convert"]
        polls = [isinstance(program.instructions[i], pb.PollPPUWord) for i, _, _, _ in spans]
        cycles = category_cycles(spans, polls, conv, [iv for ivs in busy for iv in ivs])
        status = [[(c - base, v) for c, a, v in n.memory.watch_log[watch0[h]:] if a == DOORBELL_ADDRESS]
                  for h, n in enumerate(self.ppus)]
        return CoSimResult(reads=reads, spans=spans, category_cycles=cycles, cycles=t - start,
                           ppu_busy=busy, ppu_instructions=counts,
                           analog_log=logs, events=sent, status_writes=status)

