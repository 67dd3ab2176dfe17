"""Chip constants of BrainScaleS-2 (HICANN-X) in vector-matrix-multiply mode.

This module is the single home for sizes, bit widths, clocks and ranges that
are fixed by the silicon. Values come from ``bss2-facts`` sources:
[TH] Billaudelle 2022 thesis (system chapter), [SW] the group's public
software (hxtorch, grenade, calix), [W20] Weis et al. 2020 (arXiv:2006.13177).
Anything tunable (mismatch amplitudes, nominal circuit values) lives in
:mod:`bss2sim.circuits.params` instead.
"""

# --- organisation [TH] ---------------------------------------------------
NUM_HALVES = 2
"""Top and bottom half of the chip, each with its own synapse array, CADC and PPU."""
COLUMNS_PER_HALF = 256
"""Neuron columns (and CADC channels) per half."""
NUM_NEURONS = NUM_HALVES * COLUMNS_PER_HALF
SYNAPSE_ROWS_PER_HALF = 256
"""Physical synapse rows per half."""
DRIVERS_PER_HALF = 128
"""Synapse drivers per half; driver ``d`` feeds physical rows ``2d`` and ``2d + 1``."""
ROWS_PER_DRIVER = 2
LOGICAL_ROWS_PER_HALF = DRIVERS_PER_HALF
"""Signed logical input rows per half (one excitatory + one inhibitory physical row each) [W20][SW]."""
QUADRANTS_PER_HALF = 2
COLUMNS_PER_QUADRANT = COLUMNS_PER_HALF // QUADRANTS_PER_HALF
DRIVERS_PER_CAPMEM_BLOCK = DRIVERS_PER_HALF // QUADRANTS_PER_HALF
"""Drivers whose pulse-shaping ramp comes from one quadrant's capmem block
(*assumed*: drivers 0..63 of a half belong to its left block, 64..127 to its right)."""
PADI_BUSES_PER_HALF = 4
DRIVERS_PER_PADI_BUS = DRIVERS_PER_HALF // PADI_BUSES_PER_HALF

# --- bit widths [TH][W20] --------------------------------------------------
INPUT_BITS = 5
INPUT_MAX = (1 << INPUT_BITS) - 1
"""Largest input value (31); 0 sends no event."""
WEIGHT_BITS = 6
WEIGHT_MAX = (1 << WEIGHT_BITS) - 1
"""Largest synapse weight magnitude (63); the sign comes from the row."""
DRIVER_OFFSET_BITS = 6
DRIVER_OFFSET_MAX = (1 << DRIVER_OFFSET_BITS) - 1
CADC_BITS = 8
CADC_MAX = (1 << CADC_BITS) - 1
CADC_DIGITAL_OFFSET_MIN = -128
"""Per-channel digital offset range (*assumed* signed 8-bit SRAM word)."""
CADC_DIGITAL_OFFSET_MAX = 127
CAPMEM_BITS = 10
CAPMEM_MAX = (1 << CAPMEM_BITS) - 1
CAPMEM_VOLTAGE_FULL_SCALE_V = 1.6
"""Capmem voltage cells span about 0..1.6 V [TH]."""
CAPMEM_CURRENT_FULL_SCALE_A = 1.0e-6
"""Capmem current cells span about 0..1 uA [TH]."""
OUTPUT_MIN = -128
OUTPUT_MAX = 127

# --- clocks and timing [TH][SW] -------------------------------------------
FPGA_CLOCK_HZ = 125e6
FPGA_CYCLE_S = 1.0 / FPGA_CLOCK_HZ
"""One FPGA event-timer cycle: 8 ns."""
MAX_CYCLE = 2**31 - 1
"""Latest FPGA cycle of an event or of a CADC read after the reset, 17.2 s
(*assumed*: a 31-bit timestamp; far beyond any integration, it only keeps
cycle counts within the int64 arithmetic of the kernels and the schedules)."""
DRIVER_MIN_EVENT_INTERVAL_CYCLES = 1
"""A driver accepts at most one event per 8 ns (one FPGA cycle)."""
PPU_CLOCK_HZ = 250e6
PPU_MEMORY_BYTES = 16 * 1024
"""Internal SRAM of one PPU: code, data, stack and the mailbox [LNX]."""
PPU_MAILBOX_BYTES = 4096
"""Mailbox at the top of the PPU's SRAM, for results the host reads (4 KiB as
the group's VMM software and libnux's builds link it [SW])."""
PPU_SIMD_BITS = 1024
CADC_CONVERSION_S = 0.54e-6
"""One single-slope conversion of all channels (about 1.85 MSample/s) [TH]."""
CADC_RAMP_STEPS = CADC_MAX + 1
CADC_TICK_S = CADC_CONVERSION_S / CADC_RAMP_STEPS
"""Time between two ramp steps of the CADC counter."""
CAPMEM_SETTLING_S = 20e-3
"""Settling time after a capmem write, as calibration software waits for it [SW]."""
