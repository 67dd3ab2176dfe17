"""Simulated chip time and energy: where the time of a run goes.

Every operation of the model adds to a :class:`TimeLedger` in seconds of chip
time, by category. Energy is estimated from the time with the assumptions
stated in :class:`TimingParams`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bss2sim.circuits.checks import check_real

CATEGORIES = ("event_phase", "waits", "cadc_conversions", "ppu", "weight_writes", "result_reads", "transfers")
"""Where chip time goes: the events; fixed waits; CADC conversions and PPU work
(during the waits, or the FPGA polling the PPU); weight writes; reading the
results back; streaming data through the link (operations outside VMMs)."""


@dataclass(frozen=True)
class TimingParams:
    """Power figures (SI units). The waits of a VMM are those of its sequence's
    playback and PPU programs (:mod:`bss2sim.digital.sequences`)."""

    asic_power_w: float = 192e-6 / 276e-6
    """ASIC power while busy: 192 uJ per 276 us ECG sample on the mobile system [S22],
    about 0.70 W; energy = power x chip time (*assumed* constant while busy)."""
    system_power_w: float = 5.6
    """Whole mobile system (FPGA, board) power [S22]."""

    def __post_init__(self):
        for name in ("asic_power_w", "system_power_w"):
            check_real(f"TimingParams.{name}", getattr(self, name), 0.0)


@dataclass
class TimeLedger:
    """Accumulated chip time by category (seconds) and counters."""

    seconds: dict = field(default_factory=lambda: {c: 0.0 for c in CATEGORIES})
    vmm_passes: int = 0
    """Analog passes (both halves at once count as one)."""
    events: int = 0
    weight_tile_writes: int = 0

    def add(self, category: str, seconds: float):
        if category not in self.seconds:
            raise ValueError(f"unknown time category {category!r}; allowed: {', '.join(CATEGORIES)}")
        self.seconds[category] += float(seconds)

    @property
    def total_s(self) -> float:
        return float(sum(self.seconds.values()))

    def energy_j(self, params: TimingParams) -> dict:
        """Energy estimate: power x chip time, for the ASIC and for the whole system."""
        return {"asic_j": params.asic_power_w * self.total_s,
                "system_j": params.system_power_w * self.total_s}

    def summary(self, params: TimingParams) -> dict:
        out = {"total_s": self.total_s, **{f"{k}_s": v for k, v in self.seconds.items()},
               "vmm_passes": self.vmm_passes, "events": self.events,
               "weight_tile_writes": self.weight_tile_writes}
        out.update(self.energy_j(params))
        out["energy_assumption"] = (f"ASIC {params.asic_power_w:.2f} W and system "
                                    f"{params.system_power_w:.1f} W while busy [S22], times chip time")
        return out

    def reset(self):
        self.seconds = {c: 0.0 for c in CATEGORIES}
        self.vmm_passes = self.events = self.weight_tile_writes = 0
