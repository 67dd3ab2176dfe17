"""A program for the PPU: memory segments, an entry point and symbols.

Both the assembler (:mod:`.asm`) and the ELF loader (:mod:`.elf`) produce a
:class:`Program`; the core (:mod:`.core`) loads one into a PPU's memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """Bytes placed at an address of the PPU's address space (big-endian words)."""

    address: int
    """First byte's address."""
    data: bytes
    """Contents; a ``.bss``-like segment holds zero bytes."""
    name: str = ""
    """Section name, for messages (``.text``, ``.data``, ...)."""

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class Program:
    """What a PPU runs: segments, where execution starts, and named addresses."""

    segments: tuple
    """:class:`Segment` objects, not overlapping."""
    entry: int = 0
    """Address of the first instruction."""
    symbols: dict = field(default_factory=dict)
    """Name -> address (labels of the assembly, symbols of the ELF file)."""
    source: str = ""
    """Where the program came from (a file name or "<assembly>"), for messages."""

    def symbol(self, name: str) -> int:
        """Address of ``name``; a ValueError that lists the known names otherwise."""
        if name not in self.symbols:
            known = ", ".join(sorted(self.symbols)[:20])
            raise ValueError(f"symbol {name!r} is not defined in {self.source or 'the program'}; "
                           f"known: {known}")
        return self.symbols[name]
