"""FPGA playback programs: the timed instruction lists that drive the chip.

On BrainScaleS-2 the host never talks to the chip in real time: it uploads a
*playback program* to the FPGA, which executes it at 125 MHz (8 ns per cycle)
and sends back what it read [GRN realtime executor; digital-facts]. A program
here is a sequence of instructions executed one after the other; each starts
when the one before it ends, so time only advances:

==================  ===========================================================
``wait``            do nothing for ``cycles`` FPGA cycles
``wait_until``      do nothing until ``cycle`` FPGA cycles after the program's start
``write_ppu_word``  write a 32-bit word into a PPU's memory (a command in its mailbox)
``poll_ppu_word``   read a PPU memory word until it holds ``value``; a run that
                    has not seen it after ``timeout`` cycles stops with an error
``read_ppu_block``  read ``size`` bytes of a PPU's memory back to the host
``send_events``     one event, or an event pair for both halves in one packet,
                    each as the chip's 14-bit event label
``write_weights``   write one half's synapse array (configuration over the link)
==================  ===========================================================

Event labels [GRN][HAL; bit positions *assumed*, the published facts give the
fields only]: bits 0..4 hold ``32 - activation`` (the driver's DAC sets the
pulse length from it), bits 5..9 the row select (driver // 4), bits 10..11 the
PADI bus (driver % 4) and bit 13 the half. :func:`event_label` and
:func:`decode_label` convert.

Build programs with :class:`PlaybackBuilder`; :meth:`PlaybackProgram.text`
prints them one instruction per line, with the start time where it is known
before running (a poll makes the rest depend on the PPUs). Every instruction
is validated where it is added, naming the instruction, its index and the bad
value; the co-simulation (:mod:`.cosim`) executes them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import as_int_array, check_int

# --- costs of the instructions (FPGA cycles of 8 ns) -------------------------------
WORD_WRITE_CYCLES = 4
"""Duration of ``write_ppu_word``: a status write "costs a few FPGA cycles"
[GRN]; 4 is *assumed*."""
WORD_READ_CYCLES = 4
"""Duration of one read of ``poll_ppu_word`` (*assumed* as a write); a poll
reads back to back until the word holds its value."""
BLOCK_READ_BYTES_PER_CYCLE = 2
"""``read_ppu_block`` moves 2 bytes per FPGA cycle (*assumed*), so a PPU's
256-byte result block takes 128 cycles, the published cost of each of the two
result reads of a VMM [GRN]."""
WEIGHT_ROW_WRITE_CYCLES = 16
"""FPGA cycles to write one synapse row of 256 weights (*assumed*, 128 ns:
the 32 PPU cycles per row that the model charged before playback programs)."""
SEND_CYCLES = 1
"""A packet of one or two events takes one FPGA cycle; a driver accepts at most
one event per cycle [TH]."""
MAX_WAIT_CYCLES = 1 << 31
"""Longest single wait (about 17 s; the FPGA timer's range, *assumed* 31 bit)."""
MAX_POLL_TIMEOUT_CYCLES = 125_000_000
"""Longest poll timeout: one second (*assumed*: no VMM waits longer)."""

PPU_WORD_BYTES = 4
LABEL_VALUE_BITS = 5
LABEL_ROW_SHIFT = 5
LABEL_BUS_SHIFT = 10
LABEL_HALF_SHIFT = 13
PADI_BUSES = 4
"""Synapse drivers are fed by four PADI buses: driver d sits on bus d % 4 [HAL]."""


class PlaybackError(RuntimeError):
    """A playback program failed while running: a poll timed out, a
    ``wait_until`` lay in the past, a PPU stopped. Names the instruction."""

    def __init__(self, message, index=None, cycle=None):
        super().__init__(message)
        self.index = index
        self.cycle = cycle


# --- event labels --------------------------------------------------------------------
def event_label(half: int, driver: int, activation: int) -> int:
    """The 14-bit label of an event for ``driver`` (0..127) of ``half`` (0, 1)
    with ``activation`` 1..31 (a zero input sends no event)."""
    half = check_int("half", half, 0, 1)
    driver = check_int("driver", driver, 0, K.DRIVERS_PER_HALF - 1)
    activation = check_int("activation", activation, 1, K.INPUT_MAX, "(a zero input sends no event)")
    return ((half << LABEL_HALF_SHIFT) | ((driver % PADI_BUSES) << LABEL_BUS_SHIFT)
            | ((driver // PADI_BUSES) << LABEL_ROW_SHIFT) | (32 - activation))


def decode_label(label: int) -> tuple[int, int, int]:
    """``(half, driver, activation)`` of an event label; ``ValueError`` for a
    word that is no label of this encoding."""
    label = check_int("label", label, 0, (1 << (LABEL_HALF_SHIFT + 1)) - 1)
    low = label & ((1 << LABEL_VALUE_BITS) - 1)
    if not 1 <= low <= K.INPUT_MAX or label & (1 << 12):
        raise ValueError(f"label=0x{label:04x} is no event label: bits 0..4 must hold 32 - activation "
                         f"(1..31) and bit 12 must be 0")
    half = label >> LABEL_HALF_SHIFT
    bus = (label >> LABEL_BUS_SHIFT) & (PADI_BUSES - 1)
    row = (label >> LABEL_ROW_SHIFT) & 0x1F
    return half, row * PADI_BUSES + bus, 32 - low


# --- instructions --------------------------------------------------------------------
@dataclass(frozen=True)
class Wait:
    cycles: int

    def duration(self):
        return self.cycles

    def text(self):
        return f"wait            cycles={self.cycles}"


@dataclass(frozen=True)
class WaitUntil:
    cycle: int

    def duration(self):
        return None     # depends on when it starts

    def text(self):
        return f"wait_until      cycle={self.cycle}"


@dataclass(frozen=True)
class WritePPUWord:
    ppu: int
    address: int
    value: int

    def duration(self):
        return WORD_WRITE_CYCLES

    def text(self):
        return f"write_ppu_word  ppu={self.ppu} address=0x{self.address:04x} value={self.value}"


@dataclass(frozen=True)
class PollPPUWord:
    ppu: int
    address: int
    value: int
    timeout: int

    def duration(self):
        return None

    def text(self):
        return (f"poll_ppu_word   ppu={self.ppu} address=0x{self.address:04x} value={self.value} "
                f"timeout={self.timeout}")


@dataclass(frozen=True)
class ReadPPUBlock:
    ppu: int
    address: int
    size: int
    tag: str = ""

    def duration(self):
        return -(-self.size // BLOCK_READ_BYTES_PER_CYCLE)

    def text(self):
        tag = f" tag={self.tag}" if self.tag else ""
        return f"read_ppu_block  ppu={self.ppu} address=0x{self.address:04x} size={self.size}{tag}"


@dataclass(frozen=True)
class SendEvents:
    labels: tuple

    def duration(self):
        return SEND_CYCLES

    def events(self):
        """``(half, driver, activation)`` of each event of the packet."""
        return [decode_label(lb) for lb in self.labels]

    def text(self):
        parts = []
        for lb in self.labels:
            h, d, a = decode_label(lb)
            parts.append(f"0x{lb:04x}(half={h} driver={d} activation={a})")
        return "send_events     " + " ".join(parts)


@dataclass(frozen=True, eq=False)
class WriteWeights:
    half: int
    weights: np.ndarray
    """Signed logical weights (128 inputs x 256 columns), -63..63."""

    def duration(self):
        return K.SYNAPSE_ROWS_PER_HALF * WEIGHT_ROW_WRITE_CYCLES

    def text(self):
        digest = hashlib.sha256(np.ascontiguousarray(self.weights, np.int8).tobytes()).hexdigest()[:12]
        return (f"write_weights   half={self.half} rows={K.SYNAPSE_ROWS_PER_HALF} "
                f"(128 x 256 signed, sha256 {digest})")


INSTRUCTIONS = (Wait, WaitUntil, WritePPUWord, PollPPUWord, ReadPPUBlock, SendEvents, WriteWeights)


@dataclass(frozen=True)
class PlaybackProgram:
    """A validated list of playback instructions (build with :class:`PlaybackBuilder`)."""

    instructions: tuple
    category: tuple
    """Chip-time category of each instruction (see :data:`.timing.CATEGORIES`)."""

    def __len__(self):
        return len(self.instructions)

    def static_times(self) -> list:
        """Start cycle of each instruction where it is known before running
        (None after the first poll: from there on it depends on the PPUs)."""
        out, now = [], 0
        for ins in self.instructions:
            out.append(now)
            if now is None:
                continue
            if isinstance(ins, WaitUntil):
                now = max(now, ins.cycle)
            else:
                d = ins.duration()
                now = None if d is None else now + d
        return out

    def text(self) -> str:
        """One line per instruction: index, start cycle (``?`` after a poll), instruction."""
        lines = []
        for i, (t, ins, cat) in enumerate(zip(self.static_times(), self.instructions, self.category)):
            when = f"{t:>10d}" if t is not None else f"{'?':>10s}"
            lines.append(f"{i:>6d} {when}  {ins.text():<70s} # {cat}")
        return "\n".join(lines)


class PlaybackBuilder:
    """Builds a :class:`PlaybackProgram` instruction by instruction.

    Each method validates its arguments (raising ``ValueError`` that names the
    instruction and the bad value) and appends one instruction; ``category``
    names the chip-time category it is counted in (default: the natural one).
    ``earliest`` tracks the earliest time the next instruction can start, so
    that ``wait_until`` into the past is refused while building.
    """

    def __init__(self):
        self._ins = []
        self._cat = []
        self.earliest = 0
        """Earliest start cycle of the next instruction (a lower bound after polls)."""

    def _add(self, ins, category, duration):
        from .timing import CATEGORIES
        if category not in CATEGORIES:
            raise ValueError(f"category={category!r} is not allowed: one of {', '.join(CATEGORIES)}")
        self._ins.append(ins)
        self._cat.append(category)
        self.earliest += duration
        return self

    def _where(self, what):
        return f"playback instruction {len(self._ins)} ({what})"

    def _ppu(self, what, ppu):
        return check_int(f"{self._where(what)}: ppu", ppu, 0, K.NUM_HALVES - 1)

    def _word_address(self, what, address):
        address = check_int(f"{self._where(what)}: address", address, 0, K.PPU_MEMORY_BYTES - PPU_WORD_BYTES,
                            "(a byte address of the PPU's 16 KiB SRAM)")
        if address % PPU_WORD_BYTES:
            raise ValueError(f"{self._where(what)}: address=0x{address:x} is not word aligned "
                             f"(a multiple of {PPU_WORD_BYTES})")
        return address

    def wait(self, cycles: int, category: str = "waits"):
        """Do nothing for ``cycles`` FPGA cycles (1..2**31)."""
        cycles = check_int(f"{self._where('wait')}: cycles", cycles, 1, MAX_WAIT_CYCLES, "FPGA cycles (8 ns)")
        return self._add(Wait(cycles), category, cycles)

    def wait_until(self, cycle: int, category: str = "waits"):
        """Do nothing until ``cycle`` FPGA cycles after the program's start;
        refused if the program cannot be there before ``cycle`` already."""
        cycle = check_int(f"{self._where('wait_until')}: cycle", cycle, 0, K.MAX_CYCLE, "FPGA cycles (8 ns)")
        if cycle < self.earliest:
            raise ValueError(f"{self._where('wait_until')}: cycle={cycle} lies before {self.earliest}, "
                             f"the earliest time the program reaches it: time never runs backwards")
        self._add(WaitUntil(cycle), category, 0)
        self.earliest = cycle
        return self

    def write_ppu_word(self, ppu: int, address: int, value: int, category: str = "ppu"):
        """Write a 32-bit word (0..2**32-1) at byte ``address`` of PPU ``ppu``'s SRAM."""
        what = "write_ppu_word"
        ins = WritePPUWord(self._ppu(what, ppu), self._word_address(what, address),
                           check_int(f"{self._where(what)}: value", value, 0, 2**32 - 1))
        return self._add(ins, category, WORD_WRITE_CYCLES)

    def poll_ppu_word(self, ppu: int, address: int, value: int, timeout: int, category: str = "ppu"):
        """Read the word at ``address`` of PPU ``ppu`` until it equals ``value``;
        after ``timeout`` FPGA cycles (1..125,000,000) without it the run stops
        with :class:`PlaybackError`."""
        what = "poll_ppu_word"
        ins = PollPPUWord(self._ppu(what, ppu), self._word_address(what, address),
                          check_int(f"{self._where(what)}: value", value, 0, 2**32 - 1),
                          check_int(f"{self._where(what)}: timeout", timeout, 1, MAX_POLL_TIMEOUT_CYCLES,
                                    "FPGA cycles (every poll is bounded)"))
        return self._add(ins, category, WORD_READ_CYCLES)

    def read_ppu_block(self, ppu: int, address: int, size: int, tag: str = "",
                       category: str = "result_reads"):
        """Read ``size`` bytes (1..16384) from byte ``address`` of PPU ``ppu``'s SRAM to the host."""
        what = "read_ppu_block"
        ppu = self._ppu(what, ppu)
        address = check_int(f"{self._where(what)}: address", address, 0, K.PPU_MEMORY_BYTES - 1)
        size = check_int(f"{self._where(what)}: size", size, 1, K.PPU_MEMORY_BYTES - address,
                         "bytes (the block must lie in the 16 KiB SRAM)")
        ins = ReadPPUBlock(ppu, address, size, str(tag))
        return self._add(ins, category, ins.duration())

    def send_events(self, top=None, bottom=None, category: str = "event_phase"):
        """One packet: an event for the top half, the bottom half or both, each
        ``(driver, activation)`` with driver 0..127 and activation 1..31."""
        labels = []
        for half, ev in enumerate((top, bottom)):
            if ev is None:
                continue
            name = ("top", "bottom")[half]
            if not (isinstance(ev, (tuple, list)) and len(ev) == 2):
                raise ValueError(f"{self._where('send_events')}: {name}={ev!r} must be (driver, activation) "
                                 f"or None")
            d = check_int(f"{self._where('send_events')}: {name} driver", ev[0], 0, K.DRIVERS_PER_HALF - 1)
            a = check_int(f"{self._where('send_events')}: {name} activation", ev[1], 1, K.INPUT_MAX,
                          "(a zero input sends no event)")
            labels.append(event_label(half, d, a))
        if not labels:
            raise ValueError(f"{self._where('send_events')}: top and bottom are both None; a packet holds "
                             f"one or two events")
        return self._add(SendEvents(tuple(labels)), category, SEND_CYCLES)

    def write_weights(self, half: int, weights, category: str = "weight_writes"):
        """Write one half's synapse array from signed logical weights (128 x 256, -63..63)."""
        what = "write_weights"
        half = check_int(f"{self._where(what)}: half", half, 0, K.NUM_HALVES - 1)
        w = as_int_array(f"{self._where(what)}: weights", weights, -K.WEIGHT_MAX, K.WEIGHT_MAX)
        if w.shape != (K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF):
            raise ValueError(f"{self._where(what)}: weights has shape {w.shape}; expected "
                             f"({K.LOGICAL_ROWS_PER_HALF}, {K.COLUMNS_PER_HALF})")
        w.setflags(write=False)
        ins = WriteWeights(half, w)
        return self._add(ins, category, ins.duration())

    def build(self) -> PlaybackProgram:
        return PlaybackProgram(tuple(self._ins), tuple(self._cat))
