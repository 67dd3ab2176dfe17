"""``bss2sim ppu run FILE``: run a PPU program (assembly or ELF) on a chip's PPU.

Prints the cycle count, the instruction count, the registers r3..r10 and the
memory asked for with ``--show``; ``--json`` prints the same as one JSON
object.
"""
from __future__ import annotations

import re
from pathlib import Path

from bss2sim.circuits import constants as K

from .calibration.store import chip_with_calibration, describe
from .common import emit_json

_SHOW = re.compile(r"^(?P<where>[A-Za-z_.$][\w.$]*|0x[0-9a-fA-F]+|\d+)(?::(?P<size>0x[0-9a-fA-F]+|\d+))?$")


def parse_show(text: str):
    """``SYMBOL[:BYTES]`` or ``ADDRESS[:BYTES]`` (default 16 bytes)."""
    m = _SHOW.match(text)
    if not m:
        raise ValueError(f"--show {text!r} is not SYMBOL[:BYTES] or ADDRESS[:BYTES] "
                         "(e.g. result:128 or 0x3000:16)")
    size = int(m["size"], 0) if m["size"] else 16
    if not 1 <= size <= K.PPU_MEMORY_BYTES:
        raise ValueError(f"--show {text!r}: the size {size} is out of range 1..{K.PPU_MEMORY_BYTES} bytes")
    return m["where"], size


def load_program(path: Path):
    """An ELF file (by its magic number) or an assembly source file."""
    from bss2sim.digital.nux import assemble, load_elf
    if not path.is_file():
        raise ValueError(f"program file {str(path)!r} does not exist")
    head = path.read_bytes()[:4]
    if head == b"\x7fELF":
        return load_elf(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"program file {str(path)!r} is neither an ELF file nor assembly text") from None
    return assemble(text, source=str(path))


def run(file, seed=0, half=0, show=(), max_cycles=10_000_000, as_json=False, calibration=None):
    """Run a PPU program on half ``half`` of chip ``seed`` (calibrated as
    ``calibration`` says: None the store, then the shipped one, else calibrate
    now; ``"none"`` uncalibrated; or a path) and print what it did."""
    from bss2sim.digital.nux import Nux, PPUError
    shows = [parse_show(s) for s in show]
    program = load_program(Path(file))
    places = []
    for where, size in shows:
        if where in program.symbols:
            places.append((where, program.symbols[where], size))
        elif re.match(r"^(0x[0-9a-fA-F]+|\d+)$", where):
            places.append((where, int(where, 0), size))
        else:
            program.symbol(where)           # raises with the known names
    chip, loaded = chip_with_calibration(seed, calibration)
    ppu = Nux(chip, half=half, noise_seed=seed)
    ppu.load(program)
    try:
        result = ppu.run(max_cycles=max_cycles)
    except PPUError as e:
        # The user's program stopped: an input error of this command, not a crash.
        raise ValueError(f"{program.source}: {e}") from None
    memory = {name: ppu.read_memory(address, size).hex() for name, address, size in places}
    regs = {f"r{i}": ppu.state.gpr[i] for i in range(3, 11)}
    print(f"{program.source}: {result.instructions} instructions in {result.cycles} PPU cycles "
          f"({result.seconds * 1e6:.3f} us) on chip {seed}, half {half}")
    print(f"  calibration: {describe(loaded)}")
    print("  " + "  ".join(f"{k}=0x{v:08x}" for k, v in regs.items()))
    for name, address, size in places:
        print(f"  {name} @ 0x{address:08x}: {memory[name]}")
    out = {"file": str(file), "chip_seed": seed, "calibration": None if loaded is None else loaded.to_dict(),
           "half": half, "cycles": result.cycles,
           "instructions": result.instructions, "chip_time_s": result.seconds, "registers": regs,
           "memory": memory}
    if as_json:
        emit_json(out)
    return out
