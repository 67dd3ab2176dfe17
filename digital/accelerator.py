"""The user-facing API: integer matrix products and convolutions on a chip.

An :class:`Accelerator` is one chip with its two PPUs and the event interface,
at one of two fidelities behind the same calls:

* ``"chip"``: the cycle-level model. Every 128 x 256 tile is written into a
  half's synapse array; each vector pair runs as the chosen sequence's
  playback and PPU programs run it on silicon (baseline read, reset, events,
  read, the PPU's saturating int8 subtract; :mod:`bss2sim.digital.sequences`)
  through the analog kernels, and its chip time comes from those programs.
* ``"behavioural"``: ``gain * (x . W) * num_sends + N(0, sigma^2)`` plus one
  ``N(0, sigma_shared^2)`` per vector and quadrant of 128 columns, rounded to
  the nearest integer (``formula="unbiased"``, the default, unbiased like the
  chip's read minus baseline) or floored (``formula="hxtorch"``, hxtorch's mock
  formula) and clamped to int8 per tile, with gain and noise as measured on a
  chip (:func:`bss2sim.digital.measure.measure_behaviour`) [W20][SW].

Integer semantics as on the chip [W20][SW]: inputs 0..31, weights -63..63,
outputs -128..127. Matrices of any size are cut into tiles of 128 inputs x 256
outputs; both halves run at the same time on two tiles with the same
vectors, and a tile left over runs on both halves with each vector alone
(even ids on the top half, odd ones on the bottom); the partial sums of row
tiles are added digitally and clamped to int8. Every call adds its simulated chip time to
:attr:`Accelerator.ledger`.

With ``faulty=FaultyUnits(...)`` the tiles shrink to the healthy drivers and
columns (fault-aware mapping, :mod:`bss2sim.digital.mapping`): a tile holds
``R`` inputs x ``C`` outputs, the fewest healthy drivers and columns of the
two halves, and each half places them on its own healthy units in order.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass

import numpy as np

from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits.checks import WrongTypeError, as_int_array, check_instance, check_int, check_real, check_seed
from bss2sim.circuits import constants as K
from bss2sim.circuits.rng import add_keyed_normals, derive_seed, keyed_normals

from . import playback as pb
from . import sequences as seq
from .events import check_num_sends, check_wait, end_aligned_schedule
from .mapping import FaultyUnits
from .ppu import PPU, PPUCostParams
from .timing import TimeLedger, TimingParams

_STREAM_TAG = 0x73747265616D
"""Tag ("stream" in ASCII) that derives a noise stream's seed from the user's seed."""
ROWS = K.LOGICAL_ROWS_PER_HALF
COLS = K.COLUMNS_PER_HALF


ENGINES = ("fast", "cosim")
"""Allowed values of ``Accelerator(engine=...)``."""
FORMULAS = ("unbiased", "hxtorch")
"""Allowed values of :attr:`BehaviouralParams.formula`."""


@dataclass(frozen=True)
class BehaviouralParams:
    """Parameters of the behavioural model.

    Per tile of 128 inputs x 256 outputs and vector ``b``, output column ``c``
    (physical column of the half, in quadrant ``q = c // 128``)::

        y = gain * (x . W)[b, c] * num_sends + sigma * n[b, c] + sigma_shared * m[b, q]
        out = clamp_int8(round(y))

    with ``n`` and ``m`` independent standard normals (keyed per vector, so
    the same seed gives the same bits however a batch is split) and
    ``round`` set by :attr:`formula`.
    """

    gain: float
    """Output LSB per unit of x*w per send (silicon after calibration: about
    0.0012-0.002 [SW]); >= 0."""
    sigma: float
    """Trial-to-trial noise of one output in LSB that is independent between
    columns (silicon: about 2 [SW]); >= 0."""
    _: KW_ONLY
    sigma_shared: float = 0.0
    """Trial-to-trial noise in LSB shared by all 128 columns of one quadrant
    (common-mode noise of a conversion): per vector and physical quadrant one
    N(0, sigma_shared^2) added to each of its columns; >= 0 (default 0: none).
    One output's total noise is ``sqrt(sigma^2 + sigma_shared^2)``; the
    correlation of two columns of one quadrant ``sigma_shared^2 / (sigma^2 +
    sigma_shared^2)``."""
    formula: str = "unbiased"
    """Rounding of each tile's result to an integer: ``"unbiased"`` (default)
    rounds to the nearest integer with ``np.rint`` (a half-way value goes to
    the even neighbour), unbiased like the chip, whose result is the
    difference of two floored CADC codes; ``"hxtorch"`` floors, hxtorch's mock
    formula [SW], ``floor(gain * x.W * num_sends + noise)``: -0.5 LSB per tile
    on average against the chip."""

    def __post_init__(self):
        for name in ("gain", "sigma", "sigma_shared"):
            object.__setattr__(self, name, check_real(f"BehaviouralParams.{name}", getattr(self, name), 0.0,
                                                      unit="(LSB)" if name != "gain" else ""))
        if not isinstance(self.formula, str) or self.formula not in FORMULAS:
            err = ValueError if isinstance(self.formula, str) else WrongTypeError
            raise err(f"BehaviouralParams.formula={self.formula!r} is not allowed: must be one of "
                      f"{', '.join(repr(f) for f in FORMULAS)} ('unbiased': round to nearest, "
                      f"'hxtorch': floor)")


def check_inputs(x, name="x", dtype=np.int64):
    """Validate an integer input array with values 0..31 (any shape); a copy
    (int64, or ``dtype``)."""
    return as_int_array(name, x, 0, K.INPUT_MAX, dtype=dtype)


def check_weights(w, name="w"):
    """Validate an integer weight array with values -63..63 (any shape); int64 copy."""
    return as_int_array(name, w, -K.WEIGHT_MAX, K.WEIGHT_MAX)


def clamp_int8(a):
    return np.clip(a, K.OUTPUT_MIN, K.OUTPUT_MAX)


class Accelerator:
    """One chip with its PPUs and event interface.

    Parameters
    ----------
    chip : Chip, optional
        Cycle-level fidelity on this chip (its configuration is overwritten
        with each weight tile).
    behavioural : BehaviouralParams, optional
        Behavioural fidelity with this gain and noise. Give exactly one of
        ``chip`` and ``behavioural``.
    noise_seed : int or None
        Seed of the trial-to-trial noise (default 0), an integer in
        0..2**64-1; None switches it off. Every call names a noise stream
        (``stream=``, default 0); each stream counts its vectors, and a vector's
        noise comes from streams keyed by (seed, stream, id, pass): one call on a
        batch and consecutive calls on its slices give identical results, and
        the layers of a network (one stream each) stay so whatever the batch
        size.
    timing : TimingParams
        Power figures of the energy estimate (the waits are the sequence's).
    ppu_costs : PPUCostParams
        Cycle costs of the PPU operations.
    sequence : str
        How each vector pair runs (:mod:`bss2sim.digital.sequences`):
        ``"published"`` (default), the chip group's playback program and PPU
        command loop with their fixed waits (about 38 us plus the events per
        vector pair), or ``"tight"``, which polls the PPUs instead and waits
        as little as the circuits allow (about 8 us plus the events). The
        chip time of every category comes from these programs.
        ``"standalone"``: the PPUs run whole networks by themselves
        (:meth:`run_network` only; :mod:`bss2sim.digital.standalone`).
    engine : str
        ``"fast"`` (default): the batched path, which computes every vector's
        timing from the sequence's :func:`~bss2sim.digital.sequences.profile`;
        ``"cosim"``: run every pass as a playback program on the PPU programs
        and the analog halves (:mod:`bss2sim.digital.cosim`, slow; the
        reference the fast path is tested against: same bits, same chip time).
        Cycle-level fidelity only.
    faulty : FaultyUnits or None
        Drivers and columns (neurons / CADC channels) not to use (default None:
        none, the same as ``FaultyUnits()``). Logical inputs of a tile go to the
        healthy drivers and logical outputs to the healthy columns of each half,
        in increasing order: a tile then holds ``R`` inputs x ``C`` outputs,
        ``R`` (``C``) the fewest healthy drivers (columns) of the two halves, so
        both halves keep one tile shape. Faulty drivers get no events, faulty
        drivers' synapse rows and faulty columns get weight 0, and faulty
        columns are never returned. The cost: a matrix of K inputs x N outputs
        needs ``ceil(K / R) * ceil(N / C)`` tiles instead of
        ``ceil(K / 128) * ceil(N / 256)``, and the ledger counts the passes,
        events and weight writes of these tiles. Applied at both fidelities,
        so their tiling and chip time agree.

    Tiling: logical row ``k`` of a tile is the ``k``-th healthy synapse driver
    of the half and logical output ``j`` its ``j``-th healthy column (with no
    faulty units, driver ``k`` and column ``j``).
    """

    def __init__(self, chip: Chip | None = None, *, behavioural: BehaviouralParams | None = None,
                 noise_seed: int | None = 0, timing: TimingParams | None = None,
                 ppu_costs: PPUCostParams | None = None, faulty: FaultyUnits | None = None,
                 sequence: str = "published", engine: str = "fast"):
        if (chip is None) == (behavioural is None):
            raise ValueError("give exactly one of chip= (cycle-level) and behavioural= (behavioural model)")
        if chip is not None:
            check_instance("chip", chip, Chip, "bss2sim.circuits.Chip")
        if behavioural is not None:
            check_instance("behavioural", behavioural, BehaviouralParams, "BehaviouralParams")
        if noise_seed is not None:
            noise_seed = check_seed("noise_seed", noise_seed)
        if timing is not None:
            check_instance("timing", timing, TimingParams, "TimingParams")
        if ppu_costs is not None:
            check_instance("ppu_costs", ppu_costs, PPUCostParams, "PPUCostParams")
        sequence = seq.check_sequence(sequence)
        if not isinstance(engine, str) or engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not allowed: one of {', '.join(map(repr, ENGINES))}")
        if engine == "cosim" and chip is None:
            raise ValueError("engine='cosim' runs the chip's programs and needs chip=...; the behavioural "
                             "model has only the fast engine")
        if faulty is None:
            faulty = FaultyUnits()
        check_instance("faulty", faulty, FaultyUnits, "bss2sim.digital.FaultyUnits or None (no faulty units)")
        drivers = [faulty.healthy_drivers(h) for h in range(K.NUM_HALVES)]
        columns = [faulty.healthy_columns(h) for h in range(K.NUM_HALVES)]
        for h in range(K.NUM_HALVES):
            for what, healthy, total in (("drivers", drivers[h], ROWS), ("columns", columns[h], COLS)):
                if len(healthy) == 0:
                    raise ValueError(f"faulty.{what} names all {total} {what} of half {h} as faulty; "
                                     f"allowed: at most {total - 1} per half (at least one must remain)")
        self.chip = chip
        self.behavioural = behavioural
        self.noise_seed = noise_seed
        self.sequence = sequence
        self.engine = engine
        self._profile = seq.profile(sequence) if sequence in seq.VMM_SEQUENCES else None
        self._pending_tiles = (None, None)
        self._next_vector_ids = {}          # noise stream -> next vector id
        self.timing = timing if timing is not None else TimingParams()
        costs = ppu_costs if ppu_costs is not None else PPUCostParams()
        self.ppus = (PPU(0, costs), PPU(1, costs))
        self.ledger = TimeLedger()
        self._faulty = faulty
        # Both halves run tiles of one shape (pairs of tiles, a left-over tile
        # shared by both), so the half with fewer healthy units sets it; the
        # other half uses its first R drivers and C columns.
        self._tile_rows = min(len(d) for d in drivers)
        self._tile_cols = min(len(c) for c in columns)
        self._drivers = tuple(d[:self._tile_rows] for d in drivers)
        self._columns = tuple(c[:self._tile_cols] for c in columns)
        # Without faulty units the mapping is the identity: the tiles and results
        # are then used as they are, without gathers and scatters.
        self._identity = all(len(d) == ROWS and np.array_equal(d, np.arange(ROWS)) for d in self._drivers) \
            and all(len(c) == COLS and np.array_equal(c, np.arange(COLS)) for c in self._columns)

    @property
    def fidelity(self) -> str:
        return "chip" if self.chip is not None else "behavioural"

    @property
    def faulty(self) -> FaultyUnits:
        """The units left unused (``FaultyUnits()`` when none); read-only."""
        return self._faulty

    @property
    def tile_shape(self) -> tuple:
        """``(R, C)``: logical inputs x outputs of one weight tile, (128, 256)
        without faulty units; fewer when :attr:`faulty` names some."""
        return self._tile_rows, self._tile_cols

    # --- noise streams and state ---------------------------------------------
    def noise_state(self) -> dict:
        """Position of every noise stream, ``{stream: next vector id}``
        (JSON-able with string keys; see :meth:`set_noise_state`)."""
        return {int(s): int(n) for s, n in sorted(self._next_vector_ids.items())}

    def set_noise_state(self, state: dict):
        """Restore the positions saved by :meth:`noise_state` (resumed runs)."""
        if not isinstance(state, dict):
            raise WrongTypeError(f"state={state!r} must be a dict {{stream: next vector id}}")
        parsed = {}
        for s, n in state.items():
            stream = check_int("stream", int(s) if isinstance(s, str) and s.isdigit() else s, 0)
            parsed[stream] = check_int(f"state[{s!r}]", n, 0)
        self._next_vector_ids = parsed

    @contextmanager
    def _all_or_nothing(self):
        """A call that raises (bad input found late, an interrupt) leaves the
        accelerator, its PPUs and its chip as they were: noise counters, the
        time ledger and the chip's weights are put back."""
        saved = (dict(self._next_vector_ids), copy.deepcopy(self.ledger), self._pending_tiles,
                 [(p.cycles, p.stream_seconds) for p in self.ppus],
                 self.chip.config._snapshot() if self.chip is not None else None)
        try:
            yield
        except BaseException:
            self._next_vector_ids, self.ledger, self._pending_tiles = saved[0], saved[1], saved[2]
            for p, (cycles, stream) in zip(self.ppus, saved[3]):
                p.cycles, p.stream_seconds = cycles, stream
            if saved[4] is not None:
                self.chip.config._restore(saved[4])
            raise

    # --- timing helpers --------------------------------------------------------
    def _ppu_parallel(self, category, work):
        """Run ``work(ppu, half)`` on both PPUs; they run in parallel, so the
        slower one's time counts."""
        before = [(p.cycles, p.stream_seconds) for p in self.ppus]
        out = [work(p, h) for h, p in enumerate(self.ppus)]
        cyc = max(p.cycles - b[0] for p, b in zip(self.ppus, before))
        stream = max(p.stream_seconds - b[1] for p, b in zip(self.ppus, before))
        self.ledger.add(category, cyc / K.PPU_CLOCK_HZ)
        self.ledger.add("transfers", stream)
        return out

    def _write_tiles(self, tiles):
        """Write one weight tile (128 x 256 signed, or None) into each half: the
        next pass's playback program starts with these writes."""
        self._pending_tiles = tuple(tiles)
        self.ledger.weight_tile_writes += 1

    def _add_cycles(self, cycles: dict):
        """Chip time of one pass, PPU cycles per category (integers, so that both
        engines add the same seconds)."""
        for cat, c in cycles.items():
            if c:
                self.ledger.add(cat, c / K.PPU_CLOCK_HZ)

    def _noise(self, stream, first_id, pass_index, half, purpose, shared=None):
        """Noise source of one integration: streams keyed by the vectors' ids, so a
        batch split over several calls sees the same noise as one call.
        ``shared``: tag of the slow noise two integrations share (the baseline
        read and the read of one pass give the same tag); None: nothing shared."""
        if self.noise_seed is None:
            return None
        # Stream 0 keeps the seed itself, so that plain calls draw what they always drew.
        seed = self.noise_seed if stream == 0 else derive_seed(self.noise_seed, _STREAM_TAG, stream)
        shared_seed = None if shared is None else derive_seed(seed, pass_index, half, shared)
        return TrialNoise(derive_seed(seed, pass_index, half, purpose), first_id, shared_seed=shared_seed)

    # --- fault-aware mapping ---------------------------------------------------
    def _physical_tile(self, half, tile):
        """Logical (R, C) weights as the half's (128, 256) tile: row k on the k-th
        healthy driver, column j on the j-th healthy column, zeros elsewhere."""
        if self._identity:
            return tile
        out = np.zeros((ROWS, COLS), np.int64)
        out[np.ix_(self._drivers[half], self._columns[half])] = tile
        return out

    def _physical_inputs(self, half, x):
        """Logical inputs (B, R) as the half's (B, 128) driver inputs: zeros (no
        events) on faulty and unused drivers."""
        if self._identity:
            return x
        out = np.zeros((x.shape[0], ROWS), x.dtype)
        out[:, self._drivers[half]] = x
        return out

    def _pass(self, xs, tiles, num_sends, wait, first_ids, pass_index, mode=0, stream=0, returned=None,
              solo=None, add_time=True):
        """One analog pass of a batch of vector pairs; returns int8 results per half.
        ``xs[h]`` (B, 128) and ``tiles[h]`` (128, 256) are physical (drivers,
        columns; see :meth:`_physical_tile`), and so are the (B, 256) results.
        ``first_ids[h]``: noise stream index of half h's first vector; ``mode``
        separates the noise of split passes from that of paired ones.
        ``returned[h]``: logical output columns of half h's tile that the caller
        returns (default: all ``C``); only the physical columns up to the last of
        them are integrated, the others read 0 and are never returned.
        ``solo``: None, the vectors of both halves run in pairs (entry b holds
        ``xs[0][b]`` and ``xs[1][b]``); else the half of each entry in order
        (int array), every vector alone in its entry with the other half idle."""
        prof = self._profile
        if solo is not None:
            return self._pass_solo(xs, tiles, num_sends, wait, first_ids, pass_index, mode, stream,
                                   returned, solo)
        B = next(x.shape[0] for x in xs if x is not None)
        tiles_written, self._pending_tiles = self._pending_tiles, (None, None)
        nnz = [np.zeros(B, np.int64) if x is None else np.count_nonzero(x, axis=1) for x in xs]
        # Events of the two halves leave in pairs, the shorter stream late, so that
        # both halves' last events coincide: a pass lasts the longer stream.
        longest = np.maximum(nnz[0], nnz[1]) * num_sends
        self.ledger.vmm_passes += B
        self.ledger.events += int((nnz[0].sum() + nnz[1].sum()) * num_sends)
        if returned is None:
            returned = [self._tile_cols] * K.NUM_HALVES
        # Physical columns to integrate: up to the one holding the tile's last returned
        # logical column (the mapping keeps the order of the columns). Every returned
        # column is integrated, with or without weights, so it reads noise like the
        # others; the noise of a column does not depend on how many are integrated.
        used = [int(self._columns[h][max(1, int(returned[h])) - 1]) + 1 for h in range(K.NUM_HALVES)]
        if self.engine == "cosim":
            return self._pass_cosim(xs, tiles_written, num_sends, wait, first_ids, pass_index, mode, stream)
        weight_cycles = sum(t is not None for t in tiles_written) * K.SYNAPSE_ROWS_PER_HALF \
            * pb.WEIGHT_ROW_WRITE_CYCLES * 2
        cycles = prof.entry_categories(int(longest.sum()) * wait, B)
        cycles["weight_writes"] += weight_cycles
        results = [None, None]
        if self.chip is not None:
            for h, t in enumerate(tiles_written):
                if t is not None:
                    self.chip.config.set_logical_weights(h, t)
            empty = EventSchedule(np.zeros(B + 1, np.int64), *(np.zeros(0, np.int64) for _ in range(3)))
            for h in range(K.NUM_HALVES):
                if xs[h] is None:
                    continue
                # The baseline read and the read of one pass share their slow noise.
                base = integrate_fast(self.chip, h, empty, prof.baseline_cycles[h],
                                      noise=self._noise(stream, first_ids[h], pass_index, h, 0 + mode,
                                                        shared=100 + mode),
                                      columns=used[h], voltages=False)
                sched = end_aligned_schedule(xs[h], nnz[h], longest, prof.event_start[h], wait, num_sends)
                read_cycle = prof.event_start[h] + longest * wait + prof.read_after_events[h]
                read = integrate_fast(self.chip, h, sched, read_cycle,
                                      noise=self._noise(stream, first_ids[h], pass_index, h, 1 + mode,
                                                        shared=100 + mode),
                                      columns=used[h], voltages=False)
                # The PPU's saturating int8 subtract of (read - 128) - (baseline - 128).
                # Columns beyond used[h] read the same code twice (0, or a stuck
                # channel's): their difference is 0.
                diff = read.codes[:, :used[h]].astype(np.int16)
                diff -= base.codes[:, :used[h]]
                out = np.zeros((B, COLS), np.int8)
                out[:, :used[h]] = np.clip(diff, K.OUTPUT_MIN, K.OUTPUT_MAX, out=diff)
                results[h] = out
        else:
            p = self.behavioural
            for h in range(K.NUM_HALVES):
                if xs[h] is None:
                    continue
                n = used[h]
                # float32 BLAS is exact here: every product and partial sum is an
                # integer below 128 * 31 * 63 < 2**24.
                y = (xs[h].astype(np.float32) @ tiles[h][:, :n].astype(np.float32)).astype(np.float64)
                y *= p.gain * num_sends
                if self.noise_seed is not None and p.sigma > 0:
                    # Column c of a row is the c-th draw of the vector's stream, whatever n.
                    noise = self._noise(stream, first_ids[h], pass_index, h, 2 + mode)
                    add_keyed_normals(noise, y, p.sigma)
                if self.noise_seed is not None and p.sigma_shared > 0:
                    # One normal per vector and physical quadrant, for all its columns.
                    noise = self._noise(stream, first_ids[h], pass_index, h, 3 + mode)
                    common = keyed_normals(noise, B, K.QUADRANTS_PER_HALF)
                    y += p.sigma_shared * np.repeat(common, K.COLUMNS_PER_QUADRANT, axis=1)[:, :n]
                out = np.zeros((B, COLS), np.int8)
                y = np.rint(y, out=y) if p.formula == "unbiased" else np.floor(y, out=y)
                out[:, :n] = np.clip(y, K.OUTPUT_MIN, K.OUTPUT_MAX, out=y)
                results[h] = out
        if not add_time:
            return results, cycles
        self._add_cycles(cycles)
        return results

    def _pass_solo(self, xs, tiles, num_sends, wait, first_ids, pass_index, mode, stream, returned, halves):
        """Entries of one vector each (the other half idle): a half's vectors then
        run as pairs with an empty partner, and the pass lasts all the entries."""
        if self.engine == "cosim":
            tiles_written, self._pending_tiles = self._pending_tiles, (None, None)
            self.ledger.vmm_passes += len(halves)
            self.ledger.events += sum(int(np.count_nonzero(x)) * num_sends for x in xs if x is not None)
            order = [np.nonzero(halves == h)[0] for h in range(K.NUM_HALVES)]
            full = []
            for h in range(K.NUM_HALVES):
                f = np.zeros((len(halves), ROWS), np.uint8)
                if xs[h] is not None:
                    f[order[h]] = xs[h]
                full.append(f)
            index = [{int(e): first_ids[h] + k for k, e in enumerate(order[h])} for h in range(K.NUM_HALVES)]
            out = self._pass_cosim(full, tiles_written, num_sends, wait, None, pass_index, mode, stream,
                                   noise_index=index)
            return [None if xs[h] is None else out[h][order[h]] for h in range(K.NUM_HALVES)]
        out, total = [None, None], {}
        for h in range(K.NUM_HALVES):
            if xs[h] is None:
                continue
            alone = [None, None]
            alone[h] = xs[h]
            res, cycles = self._pass(alone, tiles, num_sends, wait, first_ids, pass_index, mode, stream,
                                     returned, add_time=False)
            out[h] = res[h]           # the first of the two consumed the weight writes
            for c, v in cycles.items():
                total[c] = total.get(c, 0) + v
        self._add_cycles(total)
        return out

    def _pass_cosim(self, xs, tiles_written, num_sends, wait, first_ids, pass_index, mode, stream,
                    noise_index=None):
        """One pass as a playback program on the PPU programs and the analog
        halves (:mod:`.cosim`): the reference of the batched path."""
        from .cosim import CoSimulation
        B = next(x.shape[0] for x in xs if x is not None)

        def source(h):
            if xs[h] is None or self.noise_seed is None:
                return None
            # Conversion 2e is entry e's baseline read, 2e + 1 its read.
            if noise_index is None:
                return lambda k: self._noise(stream, first_ids[h] + k // 2, pass_index, h, (k % 2) + mode,
                                             shared=100 + mode)
            return lambda k: (self._noise(stream, noise_index[h][k // 2], pass_index, h, (k % 2) + mode,
                                          shared=100 + mode) if k // 2 in noise_index[h] else None)
        program = seq.build_pass(self.sequence, xs, wait, num_sends, tiles_written)
        sim = CoSimulation(self.chip, seq.ppu_program(self.sequence), (source(0), source(1)))
        res = sim.run(program)
        self._add_cycles(res.category_cycles)
        out = seq.results_from_reads(res.reads, B)
        return [None if xs[h] is None else out[h] for h in range(K.NUM_HALVES)]

    # --- public operations -----------------------------------------------------
    def matmul(self, x, w, num_sends: int = 1, wait_between_events: int = 5, *,
               stream: int = 0) -> np.ndarray:
        """Integer matrix product on the chip: ``clamp_int8(sum over row tiles of
        tile(x . W))``.

        Parameters
        ----------
        x : int array (batch, K) or (K,), values 0..31
        w : int array (K, N), values -63..63
        num_sends : int, 1..256
            Repetitions of each vector within one integration (gain x num_sends).
        wait_between_events : int, FPGA cycles (8 ns), 1..255
            Event slot spacing (default 5 = 40 ns).
        stream : int >= 0
            Noise stream (default 0). Each stream numbers its vectors on its
            own: give each layer of a network its own stream, and its noise no
            longer depends on how the batches of the other layers were cut.

        Returns
        -------
        int64 array (batch, N) or (N,), values -128..127.

        Everything is checked before anything runs; a call that raises leaves
        the accelerator (noise counters, time ledger, PPUs) and the chip's
        configuration as they were.
        """
        x = check_inputs(x, dtype=np.uint8)
        w = check_weights(w)
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"x has shape {x.shape}; expected (batch, K) or (K,)")
        if w.ndim != 2:
            raise ValueError(f"w has shape {w.shape}; expected (K, N)")
        if x.shape[1] != w.shape[0]:
            raise ValueError(f"x has {x.shape[1]} inputs per vector but w has {w.shape[0]} rows; "
                             "they must match")
        num_sends = check_num_sends(num_sends)
        wait = check_wait(wait_between_events)
        stream = check_int("stream", stream, 0)
        if self._profile is None:
            raise ValueError(f"sequence={self.sequence!r} runs whole networks on the PPUs: use "
                             f"run_network(x, layers); matmul and the convolutions need 'published' or 'tight'")
        with self._all_or_nothing():
            out = self._matmul(x, w, num_sends, wait, stream)
        return out[0] if single else out

    def run_network(self, x, layers, num_sends: int = 1, wait_between_events: int = 5, *,
                    stream: int = 0) -> np.ndarray:
        """A network of dense layers: ``layers`` is a list of ``(w, shift)``,
        ``w`` (K_l, N_l) with values -63..63 and ``shift`` the converting ReLU
        (0..7) after the layer, None for the last one, which returns int8.

        With ``sequence="standalone"`` the PPUs run the whole network by
        themselves (:mod:`bss2sim.digital.standalone`): every layer sits in one
        block-diagonal tile, so the inputs of all layers may add up to at most
        128 and their outputs to 256, and the events leave as the PPU program
        injects them (``wait_between_events`` is not used). With the other
        sequences each layer is a :meth:`matmul` and the converting ReLU runs
        between them (noise stream ``stream + l`` for layer l).

        x : int (batch, K_0), values 0..31. Returns int64 (batch, N_last), -128..127.
        """
        x = check_inputs(x, dtype=np.uint8)
        if x.ndim != 2:
            raise ValueError(f"x has shape {x.shape}; expected (batch, K)")
        stream = check_int("stream", stream, 0)
        if self._profile is not None:
            from .standalone import place
            place(layers, num_sends)             # the same checks as the standalone path
            h = x
            for i, (w, shift) in enumerate(layers):
                y = self.matmul(h, w, num_sends, wait_between_events, stream=stream + i)
                if shift is not None:
                    h = self.converting_relu(y, shift)
            return y
        from . import standalone as sa
        pl = sa.place(layers, num_sends)
        if x.shape[1] != pl.inputs[0]:
            raise ValueError(f"x has {x.shape[1]} inputs per vector but layers[0] has {pl.inputs[0]} rows; "
                             f"they must match")
        with self._all_or_nothing():
            return self._run_standalone(x, pl, stream)

    def _run_standalone(self, x, pl, stream):
        from . import standalone as sa
        B = x.shape[0]
        first_id = self._next_vector_ids.get(stream, 0)
        self._next_vector_ids[stream] = first_id + B
        if B == 0:
            return np.zeros((0, pl.outputs[-1]), np.int64)

        def noise_for(half, index, layer, kind):
            # The baseline read and the read of one layer share their slow noise.
            return self._noise(stream, index, layer, half, 20 + kind, shared=120)

        if self.engine == "cosim":
            out, cycles, events = sa.run_cosim(self.chip, pl, x, first_id, noise_for)
        else:
            if self.chip is not None:
                for h in range(K.NUM_HALVES):
                    self.chip.config.set_logical_weights(h, pl.tile)
            out, cycles, events = sa.run_fast(pl, x, first_id, self._standalone_layer(pl, noise_for))
        L = len(pl.rows)
        self.ledger.vmm_passes += B * L
        self.ledger.events += events
        self.ledger.weight_tile_writes += 1
        self._add_cycles(cycles)
        return out.astype(np.int64)

    def _standalone_layer(self, pl, noise_for):
        """One layer of the standalone path for a batch of one PPU's samples."""
        def evaluate(h, layer, inputs, base_cycles, events, read_cycles, first_index):
            n = len(inputs)
            if self.chip is not None:
                cols = pl.cols[layer] + pl.outputs[layer]
                empty = EventSchedule.from_lists([[] for _ in range(n)])
                noise = [None if self.noise_seed is None else noise_for(h, first_index, layer, k) for k in (0, 1)]
                base = integrate_fast(self.chip, h, empty, base_cycles, noise=noise[0], columns=cols,
                                      voltages=False)
                read = integrate_fast(self.chip, h, events, read_cycles, noise=noise[1], columns=cols,
                                      voltages=False)
                diff = read.codes.astype(np.int16)
                diff -= base.codes
                return np.clip(diff, K.OUTPUT_MIN, K.OUTPUT_MAX).astype(np.int8)
            p = self.behavioural
            w = pl.tile[pl.rows[layer]:pl.rows[layer] + pl.inputs[layer]]
            y = (inputs.astype(np.float32) @ w.astype(np.float32)).astype(np.float64) * (p.gain * pl.sends)
            if self.noise_seed is not None and p.sigma > 0:
                add_keyed_normals(noise_for(h, first_index, layer, 2), y, p.sigma)
            y = np.rint(y) if p.formula == "unbiased" else np.floor(y)
            return np.clip(y, K.OUTPUT_MIN, K.OUTPUT_MAX).astype(np.int8)
        return evaluate

    def _matmul(self, x, w, num_sends, wait, stream):
        B, Kin = x.shape
        N = w.shape[1]
        if B == 0 or N == 0:
            return np.zeros((B, N), np.int64)
        R, C = self._tile_rows, self._tile_cols       # logical tile shape (128, 256 fault-free)
        n_row = -(-Kin // R)
        n_col = -(-N // C)
        # Inputs (0..31) and weights (-63..63) fit 8 bits; the sum over at most
        # ceil(K / 128) tiles of int8 results fits 32 bits for any K.
        if Kin == n_row * R:
            xp = x
        else:
            xp = np.zeros((B, n_row * R), np.uint8)
            xp[:, :Kin] = x
        wp = np.zeros((n_row * R, n_col * C), np.int8)
        wp[:Kin, :N] = w
        acc = np.zeros((B, n_col * C), np.int32)
        first_id = self._next_vector_ids.get(stream, 0)
        self._next_vector_ids[stream] = first_id + B
        tiles = [(r, c) for c in range(n_col) for r in range(n_row)]

        def tile_w(t, h):
            return self._physical_tile(h, wp[t[0] * R:(t[0] + 1) * R, t[1] * C:(t[1] + 1) * C])

        def tile_x(t, h, rows=slice(None)):
            return self._physical_inputs(h, xp[rows, t[0] * R:(t[0] + 1) * R])

        def returned(t):
            """Logical output columns of tile t that the call returns."""
            return min(C, N - t[1] * C)

        def logical(h, out):
            """The half's healthy columns of a physical (B, 256) result, in logical order."""
            return out if self._identity else out[:, self._columns[h]]

        for i in range(0, len(tiles), K.NUM_HALVES):
            pair = tiles[i:i + K.NUM_HALVES]
            if len(pair) == K.NUM_HALVES:
                wt = [tile_w(t, h) for h, t in enumerate(pair)]
                self._write_tiles(wt)
                outs = self._pass([tile_x(t, h) for h, t in enumerate(pair)], wt, num_sends, wait,
                                  [first_id] * 2, i, stream=stream, returned=[returned(t) for t in pair])
                for h, (t, o) in enumerate(zip(pair, outs)):
                    n = returned(t)
                    acc[:, t[1] * C:t[1] * C + n] += logical(h, o)[:, :n]
                continue
            # A tile left over: both halves hold it and each vector runs alone, even ids
            # on the top half and odd ids on the bottom, so that a vector meets the same
            # circuits and noise streams however the batch is split across calls, and
            # never shares its entry with another vector (whose event count would move
            # its timing; see _pass).
            t = pair[0]
            ids = first_id + np.arange(B)
            rows = [np.nonzero(ids % 2 == h)[0] for h in range(K.NUM_HALVES)]
            xs = [tile_x(t, h, rows[h]) if len(rows[h]) else None for h in range(K.NUM_HALVES)]
            starts = [int(ids[r[0]]) // 2 if len(r) else 0 for r in rows]
            wt = [tile_w(t, h) if x is not None else None for h, x in enumerate(xs)]
            self._write_tiles(wt)
            outs = self._pass(xs, wt, num_sends, wait, starts, i, mode=10, stream=stream,
                              returned=[returned(t)] * K.NUM_HALVES, solo=ids % 2)
            for h in range(K.NUM_HALVES):
                if xs[h] is not None:
                    n = returned(t)
                    acc[rows[h], t[1] * C:t[1] * C + n] += logical(h, outs[h])[:, :n]
        return clamp_int8(acc[:, :N]).astype(np.int64)

    def conv1d(self, x, w, stride: int = 1, padding: int = 0, **kw) -> np.ndarray:
        """1-D convolution by unfolding onto :meth:`matmul`.

        x : int (batch, C_in, L), values 0..31; w : int (C_out, C_in, k), -63..63.
        Returns int64 (batch, C_out, L_out) with L_out = (L + 2 padding - k) // stride + 1.
        """
        x = check_inputs(x)
        w = check_weights(w)
        if x.ndim != 3 or w.ndim != 3 or x.shape[1] != w.shape[1]:
            raise ValueError(f"conv1d expects x (batch, C_in, L) and w (C_out, C_in, k) with equal C_in; "
                             f"got {x.shape} and {w.shape}")
        y = self.conv2d(x[:, :, None, :], w[:, :, None, :], stride=(1, stride), padding=(0, padding), **kw)
        return y[:, :, 0, :]

    def conv2d(self, x, w, stride=1, padding=0, **kw) -> np.ndarray:
        """2-D convolution by unfolding onto :meth:`matmul` (zero padding sends no events).

        x : int (batch, C_in, H, W), values 0..31; w : int (C_out, C_in, kH, kW), -63..63;
        stride, padding : int or (int, int).
        Returns int64 (batch, C_out, H_out, W_out).
        """
        x = check_inputs(x)
        w = check_weights(w)
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ValueError(f"conv2d expects x (batch, C_in, H, W) and w (C_out, C_in, kH, kW) with "
                             f"equal C_in; got {x.shape} and {w.shape}")
        sh, sw = int_pair("stride", stride, 1)
        ph, pw = int_pair("padding", padding, 0)
        if max(ph, pw) > MAX_PADDING:
            raise ValueError(f"padding={padding!r} is not allowed: at most {MAX_PADDING} per side")
        if min(w.shape[2:]) < 1:
            raise ValueError(f"w has shape {w.shape}; the kernel needs at least one row and column")
        cols, (ho, wo) = unfold2d(x, w.shape[2:], (sh, sw), (ph, pw))
        y = self.matmul(cols, w.reshape(w.shape[0], cols.shape[1]).T, **kw)
        return y.reshape(x.shape[0], ho, wo, w.shape[0]).transpose(0, 3, 1, 2)

    def relu(self, x):
        """int8 ReLU on the PPUs (cycles counted)."""
        from .ppu import relu
        out = relu(as_int_array("x", x, K.OUTPUT_MIN, K.OUTPUT_MAX))
        self._count_simd(out.size, ops=1)
        return out

    def converting_relu(self, x, shift: int):
        """int8 to 5-bit: clamp to 0..127, shift right, clamp to 0..31 [W20][SW] (cycles counted)."""
        from .ppu import converting_relu
        out = converting_relu(as_int_array("x", x, K.OUTPUT_MIN, K.OUTPUT_MAX), shift)
        self._count_simd(out.size, ops=3)
        return out

    def add(self, a, b):
        """Saturating int8 addition on the PPUs (cycles counted)."""
        from .ppu import add_sat
        out = add_sat(as_int_array("a", a, K.OUTPUT_MIN, K.OUTPUT_MAX),
                      as_int_array("b", b, K.OUTPUT_MIN, K.OUTPUT_MAX), bits=8, signed=True)
        self._count_simd(out.size, ops=1)
        return out

    def _count_simd(self, n_elements, ops):
        lanes = K.PPU_SIMD_BITS // 8
        vectors = -(-int(n_elements) // (lanes * K.NUM_HALVES))
        self._ppu_parallel("ppu", lambda ppu, h: ppu.vector_ops(ops * vectors))

    def report(self) -> dict:
        """Simulated chip time by category, counters and the energy estimate."""
        return self.ledger.summary(self.timing)


MAX_PADDING = 4096
"""Largest zero padding of a convolution per side (*assumed*: far beyond any
layer on a chip of 256 columns; it keeps the unfolded input in memory)."""


def int_pair(name, v, minimum):
    """An integer or a pair of integers >= minimum, as a pair (stride, padding)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        v = (int(v), int(v))
    if not (isinstance(v, (tuple, list)) and len(v) == 2
            and all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in v)):
        raise ValueError(f"{name}={v!r} must be an integer or a pair of integers >= {minimum}")
    if min(v) < minimum:
        raise ValueError(f"{name}={v!r} is not allowed: must be >= {minimum}")
    return int(v[0]), int(v[1])


def unfold2d(x, kernel, stride, padding):
    """im2col: (batch, C, H, W) -> (batch * H_out * W_out, C * kH * kW), ordered
    (batch, row, column) x (channel, kernel row, kernel column)."""
    B, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if Hp < kh or Wp < kw:
        raise ValueError(f"kernel {kernel} is larger than the padded input {(Hp, Wp)}")
    xp = np.zeros((B, C, Hp, Wp), x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    ho = (Hp - kh) // sh + 1
    wo = (Wp - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(B * ho * wo, C * kh * kw)
    return np.ascontiguousarray(cols), (ho, wo)
