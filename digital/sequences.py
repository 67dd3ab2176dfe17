"""The VMM as it runs on the chip: the PPU command loop and the playback
program of each batch entry, for each named sequence.

The chip group's VMM mode [GRN ``start.cpp``, realtime executor;
digital-facts] runs every input vector as a playback program that commands a
PPU program through a ``status`` word in the PPU's mailbox:

* PPU program (:func:`ppu_program`): idle until a command; ``reset_neurons``
  (reset both vectors of the row, ``sync``); ``baseline_read`` (reset, sleep
  5 us = 1,250 PPU cycles, read the CADC, convert each code to int8 by
  subtracting 128, keep it as the baseline); ``read`` (read the CADC, convert,
  store ``saturating_subtract(read, baseline)`` as the 2 x 128-byte result);
  ``stop``. Each sets ``status`` back to idle when done. The program idles in
  ``wait`` and the FPGA's write of ``status`` wakes it (the group's program
  spins on ``status``; a spinning loop would make the PPU's response time
  depend, by up to one loop turn, on everything it did before, so the same
  vector would read differently after another batch split; ``wait`` answers
  every command after the same cycles).
* Playback program per batch entry (:func:`build_pass`), both halves paired:

  ``published``
      ``baseline_read``, wait 20 us; ``reset_neurons``, wait 4 us; wait 1 us;
      the events, ``wait_between_events`` apart, scheduled backwards so that
      both halves' last events coincide; wait 1 us; ``read``, wait 10 us; read
      each PPU's 256-byte result (128 FPGA cycles each). About 38 us plus the
      events per entry.
  ``tight``
      the same commands, but the FPGA polls each PPU's ``status`` until idle
      instead of the fixed waits, the PPU's baseline sleep is 0.5 us (the
      reset's settling time, *assumed*) and the read follows the last event
      after 0.4 us (1.25 synaptic time constants of 0.32 us; *assumed* as the
      shortest wait worth having: 29 % of the last event's charge is still on
      its way, and the accuracy cost is measured in the README).

Today's signed layout is kept (logical row i: physical row 2i excitatory,
2i + 1 inhibitory; the published one has the even row inhibitory): the two
differ only in which of a driver's two rows carries which sign, and every
stored calibration and the shipped network's in-the-loop fine-tuning were made
with today's.

The batched path of :class:`~bss2sim.digital.Accelerator` does not run these
programs vector by vector; it uses a :class:`SequenceProfile`, the offsets and
chip time of one entry measured by co-simulating probe entries
(:func:`profile`), and the co-simulation test checks on random cases that
this gives the same bits and the same chip time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bss2sim.circuits import Chip
from bss2sim.circuits import constants as K

from . import playback as pb
from .nux.memory import (IO_BUFFER_ENABLE, IO_CAUSAL_BASE, IO_NEURON_RESET, MAILBOX_ADDRESS,
                         RESET_BURST_PPU_CYCLES)

VMM_SEQUENCES = ("published", "tight")
"""The sequences that run single VMMs, vector pair by vector pair."""
SEQUENCES = VMM_SEQUENCES + ("standalone",)
"""Names of the sequences (:attr:`Accelerator.sequence`); ``"standalone"``
runs whole networks on the PPUs (:mod:`bss2sim.digital.standalone`)."""

STATUS_ADDRESS = MAILBOX_ADDRESS
"""The PPU's ``status`` word: the FPGA writes a command, the PPU writes idle."""
RESULT_ADDRESS = MAILBOX_ADDRESS + 0x100
"""The 2 x 128-byte int8 result (even columns, then odd columns)."""
BASELINE_ADDRESS = MAILBOX_ADDRESS + 0x200
"""The 2 x 128-byte int8 baseline."""
RESULT_BYTES = 2 * 128

IDLE, RESET_NEURONS, BASELINE_READ, READ, STOP = 0, 1, 2, 3, 4
"""Command values of the ``status`` word (grenade's ``Status`` order, *assumed* values)."""
COMMAND_ERROR = 0xFFFF_FFFF
"""What the PPU writes into ``status`` for an unknown command."""

US = int(K.FPGA_CLOCK_HZ) // 1_000_000
"""FPGA cycles per microsecond (125)."""
PUBLISHED_WAITS = {"after_baseline": 20 * US, "after_reset": 4 * US, "before_events": 1 * US,
                   "after_events": 1 * US, "after_read": 10 * US}
"""Fixed waits of the published sequence, FPGA cycles [GRN realtime executor]."""
PUBLISHED_BASELINE_SLEEP = int(5 * K.PPU_CLOCK_HZ) // 1_000_000
"""PPU cycles the baseline read sleeps after its reset: 5 us [GRN start.cpp]."""
TIGHT_BASELINE_SLEEP = int(K.PPU_CLOCK_HZ) // 2_000_000
"""0.5 us (*assumed*: the reset's settling time of the earlier model)."""
TIGHT_AFTER_EVENTS = 50
"""0.4 us in FPGA cycles (*assumed*, see the module docstring)."""
POLL_TIMEOUT = 200 * US
"""Bound of every poll of the tight sequence: 200 us (*assumed*; a command takes a few us)."""


BUS_SETUP = f"""    .set CAUSAL, 0x{IO_CAUSAL_BASE:x}
    .set CAUSAL_BUFFERED, 0x{(IO_CAUSAL_BASE | IO_BUFFER_ENABLE) + 1:x}
    .set NEURON_RESET, 0x{IO_NEURON_RESET:x}
    li r31, STATUS
    li r30, 0
    lis r20, NEURON_RESET@h
    ori r20, r20, NEURON_RESET@l
    addi r19, r20, 1
    lis r21, CAUSAL@h
    ori r21, r21, CAUSAL@l
    lis r22, CAUSAL_BUFFERED@h
    ori r22, r22, CAUSAL_BUFFERED@l
"""
"""Assembly shared by the PPU programs: the status word in r31, zero in r30,
the neuron-reset addresses of a row's two vectors in r20 and r19, the CADC
(a conversion, then its buffered second vector) in r21 and r22. Needs
``.set STATUS`` before it."""


def ppu_program_text(sleep_cycles: int = PUBLISHED_BASELINE_SLEEP) -> str:
    """The PPU command loop of VMM mode in this project's assembly."""
    return f"""
    # VMM mode: a command loop on the status word in the mailbox [GRN start.cpp].
    .set STATUS, 0x{STATUS_ADDRESS:x}
    .set RESULT, 0x{RESULT_ADDRESS:x}
    .set BASELINE, 0x{BASELINE_ADDRESS:x}
    .set SLEEP, {sleep_cycles}
{BUS_SETUP}    li r24, RESULT
    li r25, RESULT + 128
    li r26, BASELINE
    li r27, BASELINE + 128
    li r3, 128
    fxvsplatb 10, r3           # 0x80 in every byte: code - 128 as int8
    fxvsplatb 12, r30          # the data of a reset write (unused by the reset)
    fxvsplatb 2, r30           # baseline 0 until the first baseline read
    fxvsplatb 3, r30
    fxvstax 2, r26, r30
    fxvstax 3, r27, r30
    sync
idle:
    wait                       # until the FPGA writes the status word
    lwz r3, 0(r31)
    cmpwi r3, {RESET_NEURONS}
    beq reset_neurons
    cmpwi r3, {BASELINE_READ}
    beq baseline_read
    cmpwi r3, {READ}
    beq read
    cmpwi r3, {STOP}
    beq stop
    cmpwi r3, {IDLE}
    beq idle
    li r4, -1                  # unknown command: report it
    stw r4, 0(r31)
    b idle
reset_neurons:
    bl reset
    b done
baseline_read:
    bl reset
    mfspr r5, 284              # sleep SLEEP cycles on the time base
sleep:
    mfspr r6, 284
    subf r7, r5, r6
    cmplwi r7, SLEEP
    blt sleep
    bl convert
    fxvstax 0, r26, r30
    fxvstax 1, r27, r30
    b done
read:
    bl convert
    fxvlax 2, r26, r30
    fxvlax 3, r27, r30
    fxvsubbfs 0, 0, 2          # saturating int8 subtract of the baseline
    fxvsubbfs 1, 1, 3
    fxvstax 0, r24, r30
    fxvstax 1, r25, r30
    b done
stop:
    li r4, 0
    stw r4, 0(r31)
halt:
    wait
    b halt
done:
    sync
    li r4, 0
    stw r4, 0(r31)             # status: idle
    b idle
reset:                         # both vectors of the row: one reset burst
    fxvoutx 12, r20, r30
    fxvoutx 12, r19, r30
    sync
    blr
convert:                       # a conversion, then its buffered second vector
    fxvinx 0, r21, r30
    fxvinx 1, r22, r30
    fxvaddbm 0, 0, 10
    fxvaddbm 1, 1, 10
    blr
"""


@lru_cache(maxsize=8)
def ppu_program(sequence: str = "published"):
    """The assembled PPU program of a sequence."""
    from .nux.asm import assemble
    if sequence == "standalone":
        from .standalone import ppu_program as standalone_program
        return standalone_program()
    check_sequence(sequence, VMM_SEQUENCES)
    sleep = PUBLISHED_BASELINE_SLEEP if sequence == "published" else TIGHT_BASELINE_SLEEP
    return assemble(ppu_program_text(sleep), source=f"<VMM PPU program, {sequence}>")


def check_sequence(sequence, allowed=SEQUENCES):
    if not isinstance(sequence, str) or sequence not in allowed:
        raise ValueError(f"sequence={sequence!r} is not allowed: one of {', '.join(map(repr, allowed))}")
    return sequence


# --- playback programs --------------------------------------------------------------
def _command(b, sequence, command, wait_key):
    for ppu in range(K.NUM_HALVES):
        b.write_ppu_word(ppu, STATUS_ADDRESS, command)
    if sequence == "published":
        b.wait(PUBLISHED_WAITS[wait_key])
    else:
        for ppu in range(K.NUM_HALVES):
            b.poll_ppu_word(ppu, STATUS_ADDRESS, IDLE, POLL_TIMEOUT)


def add_entry(b: pb.PlaybackBuilder, sequence: str, x_pair, wait: int, num_sends: int) -> None:
    """Append one batch entry: ``x_pair[h]`` the (128,) inputs of half h."""
    _command(b, sequence, BASELINE_READ, "after_baseline")
    _command(b, sequence, RESET_NEURONS, "after_reset")
    if sequence == "published":
        b.wait(PUBLISHED_WAITS["before_events"])
    streams = [np.tile(np.flatnonzero(x), num_sends) for x in x_pair]
    M = max(len(s) for s in streams)
    pending = 0
    for k in range(M):
        ev = []
        for h, s in enumerate(streams):
            j = k - (M - len(s))        # both halves' last events coincide
            ev.append(None if j < 0 else (int(s[j]), int(x_pair[h][s[j]])))
        if ev[0] is None and ev[1] is None:
            pending += wait
            continue
        if pending:
            b.wait(pending, "event_phase")
            pending = 0
        b.send_events(ev[0], ev[1])
        if wait > pb.SEND_CYCLES:
            pending = wait - pb.SEND_CYCLES
    if pending:
        b.wait(pending, "event_phase")
    b.wait(PUBLISHED_WAITS["after_events"] if sequence == "published" else TIGHT_AFTER_EVENTS)
    _command(b, sequence, READ, "after_read")
    for ppu in range(K.NUM_HALVES):
        b.read_ppu_block(ppu, RESULT_ADDRESS, RESULT_BYTES, tag="result")


def build_pass(sequence: str, xs, wait: int, num_sends: int, tiles=None) -> pb.PlaybackProgram:
    """The playback program of one pass: optional weight writes (``tiles[h]``
    signed (128, 256) or None), then one entry per vector pair of ``xs[h]``
    (B, 128) (None: that half sends nothing)."""
    check_sequence(sequence, VMM_SEQUENCES)
    b = pb.PlaybackBuilder()
    for h, t in enumerate(tiles or (None, None)):
        if t is not None:
            b.write_weights(h, t)
    B = next(x.shape[0] for x in xs if x is not None)
    zeros = np.zeros(K.DRIVERS_PER_HALF, np.int64)
    for e in range(B):
        add_entry(b, sequence, [zeros if x is None else x[e] for x in xs], wait, num_sends)
    return b.build()


def results_from_reads(reads, batch: int):
    """int8 (B, 256) results per half from the result reads of a pass."""
    out = [np.zeros((batch, K.COLUMNS_PER_HALF), np.int8) for _ in range(K.NUM_HALVES)]
    rows = [0, 0]
    for tag, ppu, data in reads:
        if tag != "result":
            continue
        v = np.frombuffer(data, np.int8)
        out[ppu][rows[ppu], 0::2] = v[:128]
        out[ppu][rows[ppu], 1::2] = v[128:]
        rows[ppu] += 1
    return out


# --- the profile the batched path uses ------------------------------------------------
@dataclass(frozen=True)
class SequenceProfile:
    """Offsets and chip time of one batch entry of a sequence (FPGA cycles
    unless named otherwise), measured by co-simulating probe entries.

    For an entry whose longer half sends ``M`` events ``wait`` apart, half h
    (``L_h`` events) has its reset released at its own origin, sees its j-th
    event at ``event_start[h] + (M - L_h + j) * wait`` and its read conversion
    at ``read_after_events[h] + M * wait`` after that origin; the baseline
    conversion comes ``baseline_cycles[h]`` after the baseline's reset. The
    entry lasts ``entry_cycles + M * wait``; its chip time per category (PPU
    cycles) is ``category_cycles`` plus ``2 * M * wait`` of event phase.
    """

    sequence: str
    event_start: tuple
    read_after_events: tuple
    baseline_cycles: tuple
    entry_cycles: int
    category_cycles: dict

    def entry_categories(self, event_cycles_total: int, entries: int) -> dict:
        """PPU cycles per category of ``entries`` entries with ``event_cycles_total``
        FPGA cycles of event phase in all."""
        out = {c: v * entries for c, v in self.category_cycles.items()}
        out["event_phase"] += 2 * int(event_cycles_total)
        return out


def reset_bursts(resets):
    """(first write, release) PPU cycles of each reset burst in a list of reset
    write cycles: writes at most ``RESET_BURST_PPU_CYCLES`` apart hold the
    reset as one burst, released at its last write."""
    out = []
    for c in resets:
        if out and c - out[-1][1] <= RESET_BURST_PPU_CYCLES:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _bursts(resets):
    """Release cycles (PPU) of the reset bursts in a list of reset write cycles."""
    return [release for _, release in reset_bursts(resets)]


def _entry_offsets(res, entry_starts, event_starts):
    """Per entry and half: (event start rel. reset, read rel. events' end
    (M = 0 probes: rel. event start), baseline length) from a co-simulation."""
    rows = []
    for h in range(K.NUM_HALVES):
        resets = _bursts([c for k, c in res.analog_log[h] if k == "reset"])
        convs = [c for k, c in res.analog_log[h] if k == "convert"]
        if len(resets) != 2 * len(entry_starts) or len(convs) != 2 * len(entry_starts):
            raise RuntimeError(f"the PPU program of half {h} made {len(resets)} resets and {len(convs)} "
                               f"conversions in {len(entry_starts)} entries; the VMM sequence needs two of each")
        for e, (s, ev) in enumerate(zip(entry_starts, event_starts)):
            base_reset, reset = resets[2 * e] // 2, resets[2 * e + 1] // 2
            base_conv, read = convs[2 * e] // 2, convs[2 * e + 1] // 2
            rows.append((h, e, ev - reset, read - ev, base_conv - base_reset, reset - s))
    return rows


@lru_cache(maxsize=16)
def profile(sequence: str = "published", timing=None) -> SequenceProfile:
    """Measure a sequence's :class:`SequenceProfile` by co-simulating three
    probe entries without events (so the offsets cannot depend on the chip);
    refuses a sequence whose entries differ (one that carries state from entry
    to entry) or whose read comes before its events."""
    from .cosim import CoSimulation
    check_sequence(sequence, VMM_SEQUENCES)
    chip = Chip(0)
    sim = CoSimulation(chip, ppu_program(sequence), timing=timing)
    b = pb.PlaybackBuilder()
    zeros = np.zeros(K.DRIVERS_PER_HALF, np.int64)
    starts, ev_starts = [], []
    for _ in range(3):
        starts.append(len(b._ins))
        add_entry(b, sequence, [zeros, zeros], 1, 1)
    prog = b.build()
    res = sim.run(prog)
    # An entry starts at its first instruction; its (empty) event phase where
    # the read command's "after events" wait begins.
    span_start = {i: a for i, a, _, _ in res.spans}
    entry_starts = [span_start[i] for i in starts]
    after = PUBLISHED_WAITS["after_events"] if sequence == "published" else TIGHT_AFTER_EVENTS
    for e, s in enumerate(starts):
        end = starts[e + 1] if e + 1 < len(starts) else len(prog)
        waits = [i for i in range(s, end) if isinstance(prog.instructions[i], pb.Wait)
                 and prog.instructions[i].cycles == after and prog.category[i] == "waits"]
        ev_starts.append(span_start[waits[-1]])
    rows = _entry_offsets(res, entry_starts, ev_starts)
    per = {}
    for h, e, ev_rel, read_rel, base_len, _ in rows:
        per.setdefault(h, set()).add((ev_rel, read_rel, base_len))
    for h, v in per.items():
        if len(v) != 1:
            raise RuntimeError(f"sequence {sequence!r}: the entries' timing differs on half {h} ({sorted(v)}); "
                               f"the PPU program carries state from one entry to the next")
        ev_rel, read_rel, base_len = next(iter(v))
        if ev_rel < 0 or read_rel < 0:
            raise RuntimeError(f"sequence {sequence!r}: on half {h} the reset comes after the events or the read "
                               f"before them ({ev_rel}, {read_rel} FPGA cycles)")
    lengths = {entry_starts[e + 1] - entry_starts[e] for e in range(len(starts) - 1)}
    lengths.add(res.cycles - entry_starts[-1])
    if len(lengths) != 1:
        raise RuntimeError(f"sequence {sequence!r}: the entries last {sorted(lengths)} FPGA cycles; they must be equal")
    n = len(starts)
    cats = {c: v // n for c, v in res.category_cycles.items()}
    if any(v % n for v in res.category_cycles.values()):
        raise RuntimeError(f"sequence {sequence!r}: the chip time per category differs between entries")
    vals = [next(iter(per[h])) for h in range(K.NUM_HALVES)]
    return SequenceProfile(sequence=sequence,
                           event_start=tuple(int(v[0]) for v in vals),
                           read_after_events=tuple(int(v[1]) for v in vals),
                           baseline_cycles=tuple(int(v[2]) for v in vals),
                           entry_cycles=int(next(iter(lengths))), category_cycles=cats)
