"""The standalone sequence: a PPU program runs a whole network by itself.

The FPGA writes the network's configuration and a chunk of input vectors into
each PPU's memory and one ``run`` command; each PPU then, for every sample
and layer, reads the baseline (reset, 0.5 us, CADC), resets, injects the
layer's input events itself through the Omnibus spike-injection address (one
32-bit store of the event label per event,
:attr:`~bss2sim.digital.nux.NuxTiming.spike_injection` cycles each,
*assumed*), waits 1 us, reads the CADC and subtracts the baseline; between
layers it applies the converting ReLU and feeds the result to the next layer
from its own memory. The FPGA polls until both PPUs are idle and reads the
int8 outputs back.

Placement: every layer of the network lives in one block-diagonal tile of
each half (layer l on the rows after those of the layers before it, and on
the columns after theirs), so a network fits when its inputs add up to at
most 128 and its outputs to at most 256 (the Yin-Yang network does; MNIST's
does not). Even samples run on the top half's PPU, odd ones on the bottom
half's, in chunks of :data:`SAMPLES_PER_RUN` per PPU.

The batched path (:func:`run_fast`) computes every event, reset and
conversion time from a :class:`StandaloneProfile`, the costs of the PPU
program measured by co-simulating probe networks: the injection loop costs
one figure per zero input and one per event, so the event times are prefix
sums. The co-simulation (:func:`run_cosim`) is its reference; the tests
compare the two bit for bit and in chip time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bss2sim.circuits import EventSchedule
from bss2sim.circuits import constants as K
from bss2sim.circuits.checks import check_int

from . import playback as pb
from .nux.memory import MAILBOX_ADDRESS, SPIKE_INJECTION_ADDRESS
from .sequences import BUS_SETUP, reset_bursts

RUN = 5
"""Command value of ``status`` that runs the network on the chunk in memory."""
STATUS_ADDRESS = MAILBOX_ADDRESS
COUNT_ADDRESS = MAILBOX_ADDRESS + 4
HALF_BITS_ADDRESS = MAILBOX_ADDRESS + 8
CONFIG_ADDRESS = MAILBOX_ADDRESS + 0x10
"""Per layer six words: row offset, inputs K, column offset, outputs N,
ReLU shift (0xffffffff: the last layer), num_sends."""
MAX_LAYERS = 8
INPUT_ADDRESS = 0x1000
"""Input vectors of the chunk, 128 bytes each."""
RESULT_ADDRESS = 0x1800
"""Outputs of the chunk, 256 bytes each (even columns, then odd columns)."""
BUFFERS = (0x2800, 0x2880)
"""Inputs of the next layer (two buffers, used in turn)."""
HIDDEN_ADDRESS = 0x2900
BASELINE_ADDRESS = 0x2A00
SAMPLES_PER_RUN = 16
"""Samples per PPU and chunk: 16 x 128 input bytes and 16 x 256 output bytes
fit the SRAM below the program's buffers."""
BASELINE_SLEEP = int(K.PPU_CLOCK_HZ) // 2_000_000
"""PPU cycles from the baseline's reset to its conversion: 0.5 us (*assumed*, as the tight sequence)."""
POST_EVENT_SLEEP = int(K.PPU_CLOCK_HZ) // 1_000_000
"""PPU cycles from the last injection to the read: 1 us, as the published sequence waits [GRN]."""
POLL_TIMEOUT = pb.MAX_POLL_TIMEOUT_CYCLES
LAST = 0xFFFF_FFFF
FPGA_TO_PPU = 2


def program_text() -> str:
    """The standalone PPU program in this project's assembly."""
    return f"""
    # The standalone network program: every sample of the chunk through every layer.
    .set STATUS, 0x{STATUS_ADDRESS:x}
    .set INJECT, 0x{SPIKE_INJECTION_ADDRESS:x}
{BUS_SETUP}    lis r29, INJECT@h
    ori r29, r29, INJECT@l
    li r26, 0x{BASELINE_ADDRESS:x}
    li r27, 0x{BASELINE_ADDRESS + 128:x}
    li r3, 128
    fxvsplatb 10, r3           # 0x80 in every byte: code - 128 as int8
    fxvsplatb 12, r30
    sync
idle:
    wait                       # until the FPGA writes the status word
    lwz r3, 0(r31)
    cmpwi r3, {RUN}
    beq run
    cmpwi r3, 0
    beq idle
    li r4, -1                  # unknown command: report it
    stw r4, 0(r31)
    b idle
run:
    lwz r14, 4(r31)            # samples in this chunk
    lwz r28, 8(r31)            # the half's bit of the event labels
    li r15, 0
    li r16, 0x{INPUT_ADDRESS:x}
    li r17, 0x{RESULT_ADDRESS:x}
sample:
    cmpw r15, r14
    bge finished
    mr r18, r16                # this layer's input bytes
    li r12, 0x{CONFIG_ADDRESS:x}
layer:
    lwz r3, 0(r12)             # row offset
    lwz r4, 4(r12)             # inputs
    lwz r5, 8(r12)             # column offset
    lwz r6, 12(r12)            # outputs
    lwz r7, 16(r12)            # ReLU shift, or -1 for the last layer
    lwz r8, 20(r12)            # sends
    bl reset                   # the baseline
    li r9, {BASELINE_SLEEP}
    bl sleep
    bl convert
    fxvstax 0, r26, r30
    fxvstax 1, r27, r30
    sync
    bl reset
    mr r9, r8
send:
    mtctr r4
    li r10, 0
element:
    lbzx r11, r18, r10
    cmpwi r11, 0
    beq skip
    add r23, r3, r10           # the driver
    andi. r25, r23, 3          # its PADI bus
    slwi r25, r25, 10
    srwi r23, r23, 2           # its row select
    slwi r23, r23, 5
    or r23, r23, r25
    subfic r11, r11, 32
    or r23, r23, r11
    or r23, r23, r28
    stw r23, 0(r29)            # inject the event
skip:
    addi r10, r10, 1
    bdnz element
    addi r9, r9, -1
    cmpwi r9, 0
    bne send
    li r9, {POST_EVENT_SLEEP}
    bl sleep
    bl convert
    fxvlax 2, r26, r30
    fxvlax 3, r27, r30
    fxvsubbfs 0, 0, 2          # saturating int8 subtract of the baseline
    fxvsubbfs 1, 1, 3
    cmpwi r7, 0
    blt last
    li r24, 0x{HIDDEN_ADDRESS:x}
    fxvstax 0, r24, r30
    li r24, 0x{HIDDEN_ADDRESS + 128:x}
    fxvstax 1, r24, r30
    sync
    li r13, 0x{BUFFERS[0]:x}   # the next layer's buffer: the one not being read
    cmpw r18, r13
    bne relu_start
    li r13, 0x{BUFFERS[1]:x}
relu_start:
    mtctr r6
    li r10, 0
relu:                          # converting ReLU, branch-free: min(max(b, 0) >> shift, 31)
    add r11, r5, r10           # the column
    andi. r23, r11, 1
    slwi r23, r23, 7
    srwi r11, r11, 1
    add r11, r11, r23
    lbz r11, 0x{HIDDEN_ADDRESS:x}(r11)
    extsb r11, r11
    srawi r23, r11, 31
    andc r11, r11, r23
    sraw r11, r11, r7
    subfic r23, r11, 31
    srawi r23, r23, 31
    andc r11, r11, r23
    andi. r25, r23, 31
    or r11, r11, r25
    stbx r11, r13, r10
    addi r10, r10, 1
    bdnz relu
    mr r18, r13
    addi r12, r12, 24
    b layer
last:
    fxvstax 0, r17, r30
    addi r24, r17, 128
    fxvstax 1, r24, r30
    sync
    addi r15, r15, 1
    addi r16, r16, 128
    addi r17, r17, 256
    b sample
finished:
    li r4, 0
    stw r4, 0(r31)             # status: idle
    b idle
reset:                         # both vectors of the row: one reset burst
    fxvoutx 12, r20, r30
    fxvoutx 12, r19, r30
    sync
    blr
sleep:                         # r9 cycles on the time base
    mfspr r24, 284
sleep_loop:
    mfspr r25, 284
    subf r25, r24, r25
    cmplw r25, r9
    blt sleep_loop
    blr
convert:                       # a conversion, then its buffered second vector
    fxvinx 0, r21, r30
    fxvinx 1, r22, r30
    fxvaddbm 0, 0, 10
    fxvaddbm 1, 1, 10
    sync
    blr
"""


@lru_cache(maxsize=1)
def ppu_program():
    """The assembled standalone PPU program."""
    from .nux.asm import assemble
    return assemble(program_text(), source="<standalone network PPU program>")


# --- the network and its placement --------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Placement:
    """Where each layer of a network sits in the block-diagonal tile."""

    rows: tuple
    """Row offset of each layer."""
    inputs: tuple
    """Inputs K of each layer."""
    cols: tuple
    """Column offset of each layer."""
    outputs: tuple
    """Outputs N of each layer."""
    shifts: tuple
    """Shift of the converting ReLU after each layer (None after the last)."""
    sends: int
    tile: np.ndarray
    """(128, 256) signed logical weights of the whole network."""


def place(layers, num_sends) -> Placement:
    """Validate ``layers``, a list of ``(w (K, N) -63..63, shift 0..7 or None
    for the last)``, and place them in one tile."""
    from .accelerator import check_weights
    from .events import check_num_sends
    from .ppu import CONVERTING_RELU_MAX_SHIFT
    if not isinstance(layers, (list, tuple)) or not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"layers must be a list of 1..{MAX_LAYERS} pairs (w, shift); got {str(layers)[:80]}")
    rows, inputs, cols, outputs, shifts, ws = [], [], [], [], [], []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
            raise ValueError(f"layers[{i}] must be a pair (w, shift)")
        w = check_weights(layer[0], f"layers[{i}] w")
        if w.ndim != 2 or min(w.shape) < 1:
            raise ValueError(f"layers[{i}] w has shape {w.shape}; expected (K, N) with K, N >= 1")
        if i and w.shape[0] != ws[-1].shape[1]:
            raise ValueError(f"layers[{i - 1}] has {ws[-1].shape[1]} outputs but layers[{i}] has "
                             f"{w.shape[0]} inputs; they must match")
        last = i == len(layers) - 1
        if last:
            if layer[1] is not None:
                raise ValueError(f"layers[{i}] is the last layer: its shift must be None (it returns int8)")
            shifts.append(None)
        else:
            shifts.append(check_int(f"layers[{i}] shift", layer[1], 0, CONVERTING_RELU_MAX_SHIFT))
        ws.append(w)
    total_k, total_n = sum(w.shape[0] for w in ws), sum(w.shape[1] for w in ws)
    if total_k > K.LOGICAL_ROWS_PER_HALF or total_n > K.COLUMNS_PER_HALF:
        raise ValueError(f"the network does not fit one half: its layers have {total_k} inputs and {total_n} "
                         f"outputs in all; allowed at most {K.LOGICAL_ROWS_PER_HALF} and {K.COLUMNS_PER_HALF}")
    tile = np.zeros((K.LOGICAL_ROWS_PER_HALF, K.COLUMNS_PER_HALF), np.int64)
    r = c = 0
    for w in ws:
        tile[r:r + w.shape[0], c:c + w.shape[1]] = w
        rows.append(r)
        inputs.append(w.shape[0])
        cols.append(c)
        outputs.append(w.shape[1])
        r += w.shape[0]
        c += w.shape[1]
    tile.setflags(write=False)
    return Placement(tuple(rows), tuple(inputs), tuple(cols), tuple(outputs), tuple(shifts),
                     check_num_sends(num_sends), tile)


def _config_words(pl: Placement):
    words = []
    for i in range(len(pl.rows)):
        s = LAST if pl.shifts[i] is None else pl.shifts[i]
        words += [pl.rows[i], pl.inputs[i], pl.cols[i], pl.outputs[i], s, pl.sends]
    return words


def build_chunk(pl: Placement, chunks, write_weights=False) -> pb.PlaybackProgram:
    """The playback program of one chunk: ``chunks[h]`` the (n_h, K0) inputs of PPU h."""
    b = pb.PlaybackBuilder()
    if write_weights:
        for h in range(K.NUM_HALVES):
            b.write_weights(h, pl.tile)
    words = _config_words(pl)
    k0 = -(-pl.inputs[0] // pb.PPU_WORD_BYTES) * pb.PPU_WORD_BYTES
    for h in range(K.NUM_HALVES):
        b.write_ppu_word(h, HALF_BITS_ADDRESS, h << pb.LABEL_HALF_SHIFT, category="transfers")
        for j, v in enumerate(words):
            b.write_ppu_word(h, CONFIG_ADDRESS + 4 * j, v, category="transfers")
        x = chunks[h]
        for n in range(len(x)):
            row = np.zeros(k0, np.uint8)
            row[:pl.inputs[0]] = x[n]
            for j in range(0, k0, pb.PPU_WORD_BYTES):
                b.write_ppu_word(h, INPUT_ADDRESS + 128 * n + j, int.from_bytes(row[j:j + 4].tobytes(), "big"),
                                 category="transfers")
        b.write_ppu_word(h, COUNT_ADDRESS, len(x), category="transfers")
    for h in range(K.NUM_HALVES):
        b.write_ppu_word(h, STATUS_ADDRESS, RUN)
    for h in range(K.NUM_HALVES):
        b.poll_ppu_word(h, STATUS_ADDRESS, 0, POLL_TIMEOUT)
    for h in range(K.NUM_HALVES):
        if len(chunks[h]):
            b.read_ppu_block(h, RESULT_ADDRESS, 256 * len(chunks[h]), tag="results")
    return b.build()


def split(first_id: int, B: int):
    """Per chunk, the row indices of each PPU's samples: ids of even parity on
    the top half, odd on the bottom, ``SAMPLES_PER_RUN`` per PPU and chunk."""
    ids = first_id + np.arange(B)
    per = [np.nonzero(ids % 2 == h)[0] for h in range(K.NUM_HALVES)]
    n_chunks = max(1, -(-max(len(p) for p in per) // SAMPLES_PER_RUN))
    return [[p[c * SAMPLES_PER_RUN:(c + 1) * SAMPLES_PER_RUN] for p in per] for c in range(n_chunks)]


def _outputs(data, n, pl):
    v = np.frombuffer(data, np.int8).reshape(n, 2, 128)
    cols = np.empty((n, K.COLUMNS_PER_HALF), np.int8)
    cols[:, 0::2] = v[:, 0]
    cols[:, 1::2] = v[:, 1]
    return cols[:, pl.cols[-1]:pl.cols[-1] + pl.outputs[-1]]


def run_cosim(chip, pl: Placement, x, first_id, noise_for):
    """The network on the co-simulation. ``noise_for(half, index, layer, kind)``
    gives each conversion's noise (``index`` the sample's id // 2, kind 0 the
    baseline, 1 the read). Returns int8 outputs (B, N_last) and the chip time
    per category (PPU cycles)."""
    from .cosim import CoSimulation
    B = len(x)
    ids = first_id + np.arange(B)
    out = np.zeros((B, pl.outputs[-1]), np.int8)
    total, events = {}, 0
    L = len(pl.rows)
    for ci, chunk in enumerate(split(first_id, B)):
        def source(h, chunk=chunk):
            rows = chunk[h]
            return lambda k: noise_for(h, int(ids[rows[k // (2 * L)]]) // 2, (k // 2) % L, k % 2)
        sim = CoSimulation(chip, ppu_program(), (source(0), source(1)))
        res = sim.run(build_chunk(pl, [x[rows] for rows in chunk], write_weights=ci == 0))
        for tag, ppu, data in res.reads:
            out[chunk[ppu]] = _outputs(data, len(chunk[ppu]), pl)
        for c, v in res.category_cycles.items():
            total[c] = total.get(c, 0) + v
        events += sum(k == "inject" for log in res.analog_log for k, _ in log)
    return out, total, events


# --- the profile ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StandaloneProfile:
    """Costs of the standalone program in PPU cycles, measured by co-simulation.

    Per layer, from ``R0``, its first reset write (the baseline's): the
    baseline's reset released at ``R0 + baseline_reset``, its conversion at
    ``R0 + baseline_conv``; the layer's reset released at ``R0 + reset``; input
    i of send s injected at ``R0 + inject + s * (S + send_overhead) + the costs
    of the inputs before i`` (``zero_cost`` per zero, ``event_cost`` per event,
    ``S`` their sum over the layer); the read conversion at ``R0 + inject +
    sends * S + (sends - 1) * send_overhead + read_tail``. The next layer's
    ``R0`` follows that read by ``relu_base + N * relu_per_output``, the next
    sample's by ``next_sample``; the first sample's ``R0`` follows the landing
    of the run command by ``first_layer``; the status word is written idle
    ``finish`` after the last read (``empty_finish`` after the landing for a
    PPU without samples).
    """

    baseline_reset: int
    baseline_conv: int
    reset: int
    inject: int
    zero_cost: int
    event_cost: int
    send_overhead: int
    read_tail: int
    relu_base: int
    relu_per_output: int
    next_sample: int
    first_layer: int
    finish: int
    empty_finish: int


def _logs(res, h):
    out = {"reset": [], "convert": [], "inject": []}
    for k, c in res.analog_log[h]:
        out[k].append(c)
    return out


def _run_lands(prog, spans):
    """FPGA cycle at which the run command lands on each PPU."""
    lands = {}
    for (i, a, b, cat), ins in zip(spans, prog.instructions):
        if isinstance(ins, pb.WritePPUWord) and ins.address == STATUS_ADDRESS and ins.value == RUN:
            lands[ins.ppu] = b
    return [lands[h] for h in range(K.NUM_HALVES)]


@lru_cache(maxsize=1)
def profile() -> StandaloneProfile:
    """Measure the program's costs by co-simulating probe networks (chip 0, no noise)."""
    from bss2sim.circuits import Chip

    from .cosim import CoSimulation

    def probe(layers, xs, sends=1):
        pl = place(layers, sends)
        prog = build_chunk(pl, [np.asarray(xs, np.int64), np.zeros((0, pl.inputs[0]), np.int64)])
        res = CoSimulation(Chip(0), ppu_program()).run(prog)
        return res, _logs(res, 0), _run_lands(prog, res.spans)

    def ones(k, n):
        return np.ones((k, n), np.int64)

    # One layer, inputs 5 0 7 7, two sends; the bottom PPU has no samples.
    res, log, lands = probe([(ones(4, 3), None)], [[5, 0, 7, 7]], 2)
    (r0, base_rel), (_, reset_rel) = reset_bursts(log["reset"])
    inj, conv = log["inject"], log["convert"]
    event_cost = inj[2] - inj[1]
    zero_cost = inj[1] - inj[0] - event_cost
    S = zero_cost + 3 * event_cost
    send_overhead = inj[3] - inj[0] - S
    inject = inj[0] - r0
    read_tail = conv[1] - (r0 + inject + 2 * S + send_overhead)
    first_layer = r0 - FPGA_TO_PPU * lands[0]
    finish = res.status_writes[0][-1][0] - conv[1]
    empty_finish = res.status_writes[1][-1][0] - FPGA_TO_PPU * lands[1]
    # Two layers (1 and 3 hidden outputs), two samples: the ReLU and the next sample.
    gaps = {}
    for n in (1, 3):
        res, log, _ = probe([(ones(4, n), 0), (ones(n, 2), None)], np.zeros((2, 4)))
        bursts = reset_bursts(log["reset"])
        gaps[n] = bursts[2][0] - log["convert"][1]
        next_sample = bursts[4][0] - log["convert"][3]
    relu_per_output = (gaps[3] - gaps[1]) // 2
    return StandaloneProfile(baseline_reset=base_rel - r0, baseline_conv=conv[0] - r0, reset=reset_rel - r0,
                             inject=inject, zero_cost=zero_cost, event_cost=event_cost,
                             send_overhead=send_overhead, read_tail=read_tail,
                             relu_base=gaps[1] - relu_per_output, relu_per_output=relu_per_output,
                             next_sample=next_sample, first_layer=first_layer, finish=finish,
                             empty_finish=empty_finish)


# --- the batched path -------------------------------------------------------------------------
def converting_relu_int8(y, shift):
    """The PPU's converting ReLU of int8 results: min(max(y, 0) >> shift, 31)."""
    return np.minimum(np.maximum(y.astype(np.int64), 0) >> shift, K.INPUT_MAX)


def _poll_end(start, write):
    """End (FPGA) of a poll that starts at ``start`` and reads back to back
    until it sees a store made at PPU cycle ``write``."""
    k = max(1, -(-(write + 1 - FPGA_TO_PPU * start) // (FPGA_TO_PPU * pb.WORD_READ_CYCLES)))
    # A read ending at FPGA cycle e sees stores that started before PPU cycle 2e.
    while FPGA_TO_PPU * (start + k * pb.WORD_READ_CYCLES) <= write:
        k += 1
    return start + k * pb.WORD_READ_CYCLES


def _sample_timeline(pl: Placement, prof: StandaloneProfile, layer_inputs, l):
    """PPU-cycle offsets of layer ``l`` of every sample, from that layer's
    ``R0``: the baseline's reset release and conversion, the layer's reset
    release, the injection time of every input (-1: no event) and the read."""
    x = layer_inputs
    cost = np.where(x != 0, prof.event_cost, prof.zero_cost)
    prefix = np.cumsum(cost, axis=1) - cost               # costs of the inputs before each
    S = cost.sum(axis=1)
    sends = np.arange(pl.sends)[None, :, None]
    inj = prof.inject + sends * (S + prof.send_overhead)[:, None, None] + prefix[:, None, :]
    inj = np.where((x != 0)[:, None, :], inj, -1)          # (n, sends, K)
    read = prof.inject + pl.sends * S + (pl.sends - 1) * prof.send_overhead + prof.read_tail
    return inj, read


def run_fast(pl: Placement, x, first_id, evaluate):
    """The batched path: the same outputs and chip time as :func:`run_cosim`.

    ``evaluate(half, layer, inputs (n, K), base_cycles (n,), events, read_cycles
    (n,), first_index)`` returns the int8 results (n, 256) of one layer for a
    batch of samples of one PPU: ``events`` is the :class:`EventSchedule` of the
    samples (cycles from the layer's reset), ``first_index`` the noise index of
    the first sample (consecutive after it).

    The analog results depend on absolute times only through the FPGA cycle
    (PPU cycle // 2) of each reset, event and read, so every layer is computed
    for both parities of a sample's start, and the samples are then chained
    in order, each taking the results of its actual parity."""
    from .cosim import category_cycles
    prof = profile()
    B = len(x)
    ids = first_id + np.arange(B)
    out = np.zeros((B, pl.outputs[-1]), np.int8)
    total, n_events = {}, 0
    chunks = split(first_id, B)
    # Every sample of a PPU, all chunks at once, for both parities of its start.
    per_ppu = []
    for h in range(K.NUM_HALVES):
        rows = np.concatenate([c[h] for c in chunks])
        per_ppu.append((rows, [_layers(pl, prof, x[rows], h, int(ids[rows[0]]) // 2 if len(rows) else 0,
                                       parity, evaluate) if len(rows) else None for parity in (0, 1)]))
    position = [{int(r): k for k, r in enumerate(rows)} for rows, _ in per_ppu]
    latency = convert_latency()
    for ci, chunk in enumerate(chunks):
        prog = build_chunk(pl, [x[rows] for rows in chunk], write_weights=ci == 0)
        static = prog.static_times()
        spans_static = [(i, t, None if t is None or ins.duration() is None else t + ins.duration(), c)
                        for i, (t, ins, c) in enumerate(zip(static, prog.instructions, prog.category))]
        lands = _run_lands(prog, spans_static)
        conversions, writes = [], []
        for h in range(K.NUM_HALVES):
            if len(chunk[h]) == 0:
                writes.append(FPGA_TO_PPU * lands[h] + prof.empty_finish)
                continue
            parities = per_ppu[h][1]
            # Chain the samples: each starts next_sample after the last read of the one before.
            r0 = FPGA_TO_PPU * lands[h] + prof.first_layer
            for row in chunk[h]:
                k = position[h][int(row)]
                results, convs, end, counts = parities[r0 % 2]
                out[row] = results[k]
                n_events += int(counts[k])
                for c in convs:
                    conversions.append((int(r0 + c[0, k]), int(r0 + c[0, k]) + latency))
                    conversions.append((int(r0 + c[1, k]), int(r0 + c[1, k]) + latency))
                last_read = r0 + int(end[k])
                r0 = last_read + prof.next_sample
            writes.append(last_read + prof.finish)
        # The polls end when they see the status written idle; the result reads follow.
        spans, t = [], 0
        for (i, _, _, cat), ins in zip(spans_static, prog.instructions):
            end = _poll_end(t, writes[ins.ppu]) if isinstance(ins, pb.PollPPUWord) else t + ins.duration()
            spans.append((i, t, end, cat))
            t = end
        polls = [isinstance(ins, pb.PollPPUWord) for ins in prog.instructions]
        for c, v in category_cycles(spans, polls, conversions, []).items():
            total[c] = total.get(c, 0) + v
    return out, total, n_events


def _layers(pl, prof, x, h, first_index, parity, evaluate):
    """Every layer of a PPU's samples for one parity of their starts: the
    outputs, the conversion times from each sample's start (baseline and read
    per layer), the last read's time and the events per sample."""
    n, L, fp = len(x), len(pl.rows), FPGA_TO_PPU
    cur = x.astype(np.int64)
    start = np.full(n, parity, np.int64)       # R0 of the layer, absolute up to a constant
    convs, counts = [], np.zeros(n, np.int64)
    for l in range(L):
        inj, read = _sample_timeline(pl, prof, cur, l)
        base_release, layer_release = start + prof.baseline_reset, start + prof.reset
        base_conv, read_abs = start + prof.baseline_conv, start + read
        # Events of every sample, in time order: by send, then by input.
        j, snd, i = np.nonzero(inj >= 0)
        per_sample = np.bincount(j, minlength=n)
        counts += per_sample
        events = EventSchedule.from_arrays(np.concatenate([[0], np.cumsum(per_sample)]), pl.rows[l] + i,
                                           cur[j, i], (start[j] + inj[j, snd, i]) // fp - layer_release[j] // fp)
        res = evaluate(h, l, cur, base_conv // fp - base_release // fp, events,
                       read_abs // fp - layer_release // fp, first_index)
        convs.append(np.stack([base_conv - parity, read_abs - parity]))
        cols = slice(pl.cols[l], pl.cols[l] + pl.outputs[l])
        if l < L - 1:
            cur = converting_relu_int8(res[:, cols], pl.shifts[l])
            start = read_abs + prof.relu_base + pl.outputs[l] * prof.relu_per_output
    return res[:, cols], convs, read_abs - parity, counts


def convert_latency():
    from .nux.timing import NuxTiming
    return NuxTiming().cadc_convert
