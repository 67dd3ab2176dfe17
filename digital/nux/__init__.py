"""The PPU as a processor: an instruction-level model of the Nux core.

One table of instructions (:mod:`.isa`) drives the decoder, the encoder, the
assembler and the disassembler (:mod:`.asm`); :mod:`.reference` defines what
each instruction does in plain Python; :mod:`.core` runs programs with the
cycle model of :mod:`.timing` on the memory map of :mod:`.memory`, whose
vector bus reaches the analog model of the PPU's chip half; :mod:`.elf` and
:mod:`.compile` bring C programs in. See ``digital/README.md``.

The names used most are importable from here (on first use)::

    from bss2sim.digital.nux import Nux, assemble
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Nux": ".core", "PPUError": ".core", "RunResult": ".core",
    "assemble": ".asm", "AssemblyError": ".asm", "disassemble_program": ".asm",
    "decode": ".isa", "encode": ".isa", "disassemble": ".isa", "IllegalInstruction": ".isa",
    "INSTRUCTIONS": ".isa",
    "load_elf": ".elf", "compile_c": ".compile",
    "Program": ".program", "Segment": ".program",
    "NuxTiming": ".timing",
    "run_speed_tests": ".speedtests",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bss2sim.digital.nux' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
