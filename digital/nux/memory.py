"""The PPU's address spaces: its internal SRAM, the FPGA-attached memory, and
the vector I/O bus to its chip half (synapse array, CADC, neuron resets).

Address map [LNX ``dls.tcc``, ``elf32nux.x``; digital-facts]:

* scalar and ``fxvlax``/``fxvstax`` addresses: internal SRAM 0x0000_0000 ..
  0x0000_3fff (16 KiB: code, data, stack, and a mailbox at the top);
  FPGA-attached memory 0x4000_0000 .. +128 KiB (data view); a 32-bit store to
  0x9c00_0040 (the Omnibus spike injection) sends the event whose label it
  holds, into this PPU's half, in the cycle of the store;
* ``fxvinx``/``fxvoutx`` addresses count 128-byte vectors; a synapse or CADC
  row has two, interleaved: byte i of vector ``+0`` is column 2i, byte i of
  vector ``+1`` column 2i + 1 [LNX ``vector_row.h``]:

  ==============  ===================================================
  0x0000_0000     synapse weights, ``+ 2 row + v`` (6-bit weight per byte)
  0x0008_0000     CADC causal channels: a read converts the row now
  0x000c_0000     CADC acausal channels (the same channels in VMM mode, *assumed*)
  | 0x0020_0000   buffer enable: read the last conversion without a new one
  0x000e_0000     random generator (128 fresh bytes per read)
  0x00c9_0200     neuron reset (write; masked bytes select the columns)
  0x8000_0000     FPGA-attached memory, ``+ n``: its n-th 128-byte vector
  ==============  ===================================================

Everything else stops the program with a :class:`MemoryFault` naming the
address. Scalar accesses must be aligned to their size, vector ones to 128
bytes (internal SRAM).
"""
from __future__ import annotations

import numpy as np

from bss2sim.circuits import EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits import constants as K
from bss2sim.circuits.rng import derive_seed

from .reference import MemoryFault

SRAM_BYTES = K.PPU_MEMORY_BYTES
MAILBOX_BYTES = K.PPU_MAILBOX_BYTES
MAILBOX_ADDRESS = SRAM_BYTES - MAILBOX_BYTES
EXTMEM_DATA_BASE = 0x4000_0000
"""Data view of the FPGA-attached memory [LNX]."""
EXTMEM_BYTES = 128 * 1024
"""Size of the FPGA-attached memory [LNX]."""
VECTOR_BYTES = 128
"""Bytes of one vector register (8 slices of 16 bytes) [LNX dls.tcc]."""

IO_WEIGHT_BASE = 0x0000_0000
IO_CAUSAL_BASE = 0x0008_0000
IO_ACAUSAL_BASE = 0x000C_0000
IO_RANDGEN_BASE = 0x000E_0000
IO_BUFFER_ENABLE = 0x0020_0000
IO_NEURON_RESET = 0x00C9_0000 + 2 * K.SYNAPSE_ROWS_PER_HALF
"""0x00c9_0200: after the 512 vectors of the synapse rows [LNX dls.tcc]."""
IO_EXTMEM_BASE = 0x8000_0000
SPIKE_INJECTION_ADDRESS = 0x9C00_0040
"""Scalar address of the spike injection: the Omnibus word 0x1c00_0040 with
bit 31 set [LNX; digital-facts]; a 32-bit store there sends the event whose
label it holds (:func:`bss2sim.digital.playback.event_label`)."""
IO_ROW_VECTORS = 2
"""A row of 256 columns is two vectors of 128 bytes."""

PPU_CYCLES_PER_FPGA_CYCLE = 2
"""250 MHz PPU clock against the 125 MHz FPGA event clock."""
RESET_BURST_PPU_CYCLES = 64
"""Reset writes at most this many PPU cycles (256 ns) apart form one burst
whose columns are released together (*assumed*, see :meth:`AnalogHalf.reset`)."""


class AnalogHalf:
    """One chip half as its PPU sees it over the vector bus: its synapse array,
    its CADC and its neuron resets, at the simulated time of each access.

    Membranes integrate from their last reset (all columns are reset at time 0,
    *assumed*: the program starts on freshly reset neurons). A CADC conversion
    at PPU cycle ``t`` reads every column integrated by
    :func:`~bss2sim.circuits.integrate_fast` over the events since its reset,
    with the conversion starting ``t // 2`` FPGA cycles after time zero; its
    trial-to-trial noise comes from the stream of this conversion's index, so
    one conversion gives the codes a direct ``integrate_fast`` call with the
    same events, read time and noise gives. Events that arrived before a
    column's reset are forgotten (*assumed*: the reset also clears the charge
    held on the synaptic inputs).
    """

    def __init__(self, chip, half: int, noise_seed: int | None = 0):
        self.chip = chip
        self.half = half
        self.noise_seed = noise_seed
        self.reset_cycle = np.zeros(K.COLUMNS_PER_HALF, np.int64)
        """FPGA cycle of each column's last reset."""
        self._events = []          # (driver, value, FPGA cycle), appended in time order
        self.conversions = 0
        """CADC conversions so far (the noise stream index of the next one)."""
        self.last_codes = np.zeros(K.COLUMNS_PER_HALF, np.uint8)
        self.noise_source = None
        """None, or a function of the conversion index that returns the
        :class:`TrialNoise` (or None) of that conversion: how a co-simulation
        gives each conversion the noise stream the batched path uses."""
        self.log = []
        """``(kind, PPU cycle)`` of every reset ('reset') and conversion ('convert')."""
        self._burst = None         # (PPU cycle of the last reset write, columns reset in the burst)

    # --- events from the FPGA -------------------------------------------------
    def add_events(self, drivers, values, fpga_cycles):
        """Events that reach this half's drivers at absolute FPGA cycles (8 ns)."""
        sched = EventSchedule.from_arrays([0, len(drivers)], drivers, values, fpga_cycles)
        for d, a, c in zip(sched.driver, sched.value, sched.cycle):
            self._events.append((int(d), int(a), int(c)))
        self._events.sort(key=lambda e: e[2])

    def add_event(self, driver: int, value: int, fpga_cycle: int):
        """One event (validated by the playback program); events arrive in time order."""
        if self._events and fpga_cycle < self._events[-1][2]:
            raise ValueError(f"event at FPGA cycle {fpga_cycle} arrives before the last one "
                             f"({self._events[-1][2]}): events must come in time order")
        self._events.append((int(driver), int(value), int(fpga_cycle)))

    @property
    def events(self) -> list:
        """(driver, value, FPGA cycle) of every event so far, in time order."""
        return list(self._events)

    def inject(self, label: int, ppu_cycle: int):
        """An event the PPU sends through the spike-injection address at
        ``ppu_cycle``: it reaches its driver in that FPGA cycle."""
        from bss2sim.digital.playback import decode_label
        try:
            half, driver, activation = decode_label(label)
        except ValueError as e:
            raise MemoryFault(SPIKE_INJECTION_ADDRESS, 4, f"the stored word is no event label ({e})") from None
        if half != self.half:
            raise MemoryFault(SPIKE_INJECTION_ADDRESS, 4, f"label 0x{label:04x} is for half {half}; the model "
                                                          f"lets a PPU inject into its own half ({self.half}) only")
        self.add_event(driver, activation, ppu_cycle // PPU_CYCLES_PER_FPGA_CYCLE)
        self.log.append(("inject", int(ppu_cycle)))

    # --- bus operations -------------------------------------------------------
    def convert(self, ppu_cycle: int) -> np.ndarray:
        """CADC codes of all 256 columns for a conversion starting at ``ppu_cycle``."""
        now = ppu_cycle // PPU_CYCLES_PER_FPGA_CYCLE
        noise = None
        codes = np.zeros(K.COLUMNS_PER_HALF, np.uint8)
        # Events before every column's reset can never count again.
        oldest = int(self.reset_cycle.min())
        if self._events and self._events[0][2] < oldest:
            self._events = [e for e in self._events if e[2] >= oldest]
        for start in np.unique(self.reset_cycle):
            cols = self.reset_cycle == start
            ev = [(d, a, c - start) for d, a, c in self._events if start <= c <= now]
            sched = EventSchedule.from_lists([ev])
            if self.noise_source is not None:
                noise = self.noise_source(self.conversions)
            elif self.noise_seed is not None:
                # The same stream index for every group: a column's noise does
                # not depend on how the columns were reset.
                noise = TrialNoise(derive_seed(self.noise_seed, self.half), self.conversions)
            res = integrate_fast(self.chip, self.half, sched, int(now - start), noise=noise)
            codes[cols] = res.codes[0, cols]
        self.conversions += 1
        self.last_codes = codes
        self._burst = None
        self.log.append(("convert", int(ppu_cycle)))
        return codes

    def reset(self, ppu_cycle: int, columns: np.ndarray):
        """Reset the selected columns (bool (256,)) at ``ppu_cycle``.

        Reset writes that follow each other within :data:`RESET_BURST_PPU_CYCLES`
        without a conversion between them form one burst, and every column of
        the burst starts integrating at its last write (*assumed*: the neuron
        backend releases the reset of one burst together; a row's two vectors
        are written 19 PPU cycles apart, and this keeps the two halves of a row
        on one time base).
        """
        columns = np.asarray(columns, bool)
        if self._burst is not None and ppu_cycle - self._burst[0] <= RESET_BURST_PPU_CYCLES:
            columns = columns | self._burst[1]
        self._burst = (int(ppu_cycle), columns)
        self.reset_cycle[columns] = ppu_cycle // PPU_CYCLES_PER_FPGA_CYCLE
        self.log.append(("reset", int(ppu_cycle)))

    def weights_row(self, row: int) -> np.ndarray:
        """Physical 6-bit weights of one synapse row (256,)."""
        return np.asarray(self.chip.config.weights[self.half, row], np.uint8)

    def set_weights_row(self, row: int, values: np.ndarray, mask):
        w = np.array(self.chip.config.weights[self.half], np.int64)
        new = np.asarray(values, np.int64) & 0x3F
        if mask is None:
            w[row] = new
        else:
            w[row][mask] = new[mask]
        self.chip.config.set_weights(self.half, w)


class PPUMemory:
    """The address spaces of one PPU, with the time of each access for the bus.

    Implements the memory protocol the instruction semantics use (``fetch``,
    ``load``, ``store``, ``load_vector``, ``store_vector``, ``io_in``,
    ``io_out``). ``now`` is the PPU cycle at which the current access happens;
    the core sets it before every instruction.
    """

    def __init__(self, analog: AnalogHalf | None = None, seed: int = 0):
        self.sram = bytearray(SRAM_BYTES)
        self.extmem = bytearray(EXTMEM_BYTES)
        self.analog = analog
        self.now = 0
        self.io_kind = None
        """What the last vector I/O access was (for its cost): 'cadc', 'bus',
        'extmem_in', 'extmem_out', 'randgen'."""
        self._rng = np.random.default_rng(seed)
        self.code_writes = set()
        self.watch = set()
        """Word addresses whose scalar stores are logged in :attr:`watch_log`."""
        self.watch_log = []
        """``(PPU cycle, address, value)`` of every store to a watched address."""

    # --- scalar -----------------------------------------------------------------
    def _region(self, address, size):
        if address % size:
            raise MemoryFault(address, size, f"misaligned {size}-byte access")
        if 0 <= address and address + size <= SRAM_BYTES:
            return self.sram, address
        if EXTMEM_DATA_BASE <= address and address + size <= EXTMEM_DATA_BASE + EXTMEM_BYTES:
            return self.extmem, address - EXTMEM_DATA_BASE
        raise MemoryFault(address, size, "outside the PPU's memory map (internal SRAM 0x0..0x3fff, "
                                         "external 0x40000000..0x4001ffff)")

    def is_external(self, address) -> bool:
        return EXTMEM_DATA_BASE <= address < EXTMEM_DATA_BASE + EXTMEM_BYTES

    def fetch(self, address):
        if address % 4 or not 0 <= address <= SRAM_BYTES - 4:
            raise MemoryFault(address, 4, "instruction fetch outside the internal SRAM or misaligned")
        return int.from_bytes(self.sram[address:address + 4], "big")

    def load(self, address, size):
        mem, a = self._region(address, size)
        return int.from_bytes(mem[a:a + size], "big")

    def store(self, address, size, value):
        if address == SPIKE_INJECTION_ADDRESS and size == 4:
            self._need_analog(address).inject(int(value) & 0xFFFF_FFFF, self.now)
            return
        mem, a = self._region(address, size)
        mem[a:a + size] = (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
        if address in self.watch:
            self.watch_log.append((self.now, address, int(value) & ((1 << (8 * size)) - 1)))
        if mem is self.sram:
            self.code_writes.add(address & ~3)

    def store_bytes(self, address, data: bytes):
        """Bytes into the SRAM or the external memory (loading programs and inputs)."""
        if not data:
            return
        mem, a = self._region(address, 1)
        end_mem, _ = self._region(address + len(data) - 1, 1)
        if end_mem is not mem or a + len(data) > len(mem):
            raise MemoryFault(address, len(data), "a block that does not fit one memory")
        mem[a:a + len(data)] = data
        if mem is self.sram:
            self.code_writes.update(range(address & ~3, address + len(data), 4))

    def load_bytes(self, address, size) -> bytes:
        if not size:
            return b""
        mem, a = self._region(address, 1)
        end_mem, _ = self._region(address + size - 1, 1)
        if end_mem is not mem:
            raise MemoryFault(address, size, "a block that does not fit one memory")
        return bytes(mem[a:a + size])

    # --- vectors to and from memory -------------------------------------------
    def _vector_region(self, address):
        if address % VECTOR_BYTES:
            raise MemoryFault(address, VECTOR_BYTES, "misaligned vector access (128-byte boundary)")
        return self._region(address, VECTOR_BYTES)

    def load_vector(self, address):
        mem, a = self._vector_region(address)
        return np.frombuffer(bytes(mem[a:a + VECTOR_BYTES]), np.uint8).copy()

    def store_vector(self, address, data, mask=None):
        mem, a = self._vector_region(address)
        data = np.asarray(data, np.uint8)
        if mask is None:
            mem[a:a + VECTOR_BYTES] = data.tobytes()
        else:
            old = np.frombuffer(bytes(mem[a:a + VECTOR_BYTES]), np.uint8).copy()
            old[np.asarray(mask, bool)] = data[np.asarray(mask, bool)]
            mem[a:a + VECTOR_BYTES] = old.tobytes()
        if mem is self.sram:
            self.code_writes.update(range(address, address + VECTOR_BYTES, 4))

    # --- the vector I/O bus ------------------------------------------------------
    def _need_analog(self, address):
        if self.analog is None:
            raise MemoryFault(address, VECTOR_BYTES, "vector I/O to the chip, but this PPU has no chip "
                                                     "(Nux(chip=...))")
        return self.analog

    def io_in(self, address):
        address &= 0xFFFF_FFFF
        if address >= IO_EXTMEM_BASE:
            offset = (address - IO_EXTMEM_BASE) * VECTOR_BYTES
            if offset + VECTOR_BYTES > EXTMEM_BYTES:
                raise MemoryFault(address, VECTOR_BYTES, "vector beyond the 128 KiB external memory")
            self.io_kind = "extmem_in"
            return np.frombuffer(bytes(self.extmem[offset:offset + VECTOR_BYTES]), np.uint8).copy()
        buffered = bool(address & IO_BUFFER_ENABLE)
        base = address & ~IO_BUFFER_ENABLE
        for cadc_base in (IO_CAUSAL_BASE, IO_ACAUSAL_BASE):
            if cadc_base <= base < cadc_base + IO_ROW_VECTORS:
                analog = self._need_analog(address)
                v = base - cadc_base
                if buffered:
                    codes = analog.last_codes
                    self.io_kind = "bus"
                else:
                    codes = analog.convert(self.now)
                    self.io_kind = "cadc"
                return codes[v::IO_ROW_VECTORS].copy()
        if IO_RANDGEN_BASE <= base < IO_RANDGEN_BASE + IO_ROW_VECTORS:
            self.io_kind = "randgen"
            return self._rng.integers(0, 256, VECTOR_BYTES, dtype=np.uint8)
        if IO_WEIGHT_BASE <= base < IO_WEIGHT_BASE + IO_ROW_VECTORS * K.SYNAPSE_ROWS_PER_HALF \
                and not buffered:
            row, v = divmod(base - IO_WEIGHT_BASE, IO_ROW_VECTORS)
            self.io_kind = "bus"
            return self._need_analog(address).weights_row(row)[v::IO_ROW_VECTORS].copy()
        raise MemoryFault(address, VECTOR_BYTES, "no readable vector I/O location at this address")

    def io_out(self, address, data, mask=None):
        address &= 0xFFFF_FFFF
        data = np.asarray(data, np.uint8)
        if address >= IO_EXTMEM_BASE:
            offset = (address - IO_EXTMEM_BASE) * VECTOR_BYTES
            if offset + VECTOR_BYTES > EXTMEM_BYTES:
                raise MemoryFault(address, VECTOR_BYTES, "vector beyond the 128 KiB external memory")
            chunk = np.frombuffer(bytes(self.extmem[offset:offset + VECTOR_BYTES]), np.uint8).copy()
            sel = slice(None) if mask is None else np.asarray(mask, bool)
            chunk[sel] = data[sel]
            self.extmem[offset:offset + VECTOR_BYTES] = chunk.tobytes()
            self.io_kind = "extmem_out"
            return
        if IO_NEURON_RESET <= address < IO_NEURON_RESET + IO_ROW_VECTORS:
            v = address - IO_NEURON_RESET
            cols = np.zeros(K.COLUMNS_PER_HALF, bool)
            cols[v::IO_ROW_VECTORS] = True if mask is None else np.asarray(mask, bool)
            self._need_analog(address).reset(self.now, cols)
            self.io_kind = "bus"
            return
        if IO_WEIGHT_BASE <= address < IO_WEIGHT_BASE + IO_ROW_VECTORS * K.SYNAPSE_ROWS_PER_HALF:
            row, v = divmod(address - IO_WEIGHT_BASE, IO_ROW_VECTORS)
            analog = self._need_analog(address)
            full = analog.weights_row(row).astype(np.int64)
            part = full[v::IO_ROW_VECTORS]          # a copy: write it back below
            sel = slice(None) if mask is None else np.asarray(mask, bool)
            part[sel] = data[sel]
            full[v::IO_ROW_VECTORS] = part
            analog.set_weights_row(row, full, None)
            self.io_kind = "bus"
            return
        raise MemoryFault(address, VECTOR_BYTES, "no writable vector I/O location at this address")
