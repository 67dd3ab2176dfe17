"""Compile C programs for the simulated PPU with Debian's stock PowerPC cross
compiler (``gcc-powerpc-linux-gnu``), no vendor toolchain needed.

The chip group compiles PPU programs with its own GCC fork (``-mcpu=s2pp_hx``)
that knows the vector unit. A stock compiler does not, but it can do the rest:
:data:`CFLAGS` make it emit only 32-bit big-endian code for an embedded core
without floating point, AltiVec or other optional categories; the start-up
file ``toolchain/start.S`` and the linker script ``toolchain/nux.ld`` place the
program in the PPU's 16 KiB SRAM with the mailbox at its top; the header
``toolchain/fxv.h`` emits FXV vector instructions as ``.long`` encodings::

    from bss2sim.digital.nux.compile import compile_c
    from bss2sim.digital.nux.elf import load_elf
    elf = compile_c("prog.c", "prog.elf")      # #include "fxv.h" works
    program = load_elf(elf)                    # a Program for Nux.load()

The compiler is optional: only :func:`compile_c` needs it and raises
:class:`CompilerNotFoundError` (with the apt-get command) when it is missing.
Install it with ``apt-get install -y gcc-powerpc-linux-gnu`` (Debian/Ubuntu).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

from bss2sim.circuits import constants as K

TOOLCHAIN_DIR = Path(__file__).resolve().parent / "toolchain"
"""Folder with ``start.S``, ``nux.ld``, ``fxv.h``, ``runtime.c`` and ``examples/``."""
START_FILE = TOOLCHAIN_DIR / "start.S"
LINKER_SCRIPT = TOOLCHAIN_DIR / "nux.ld"
RUNTIME_FILE = TOOLCHAIN_DIR / "runtime.c"
EXAMPLES_DIR = TOOLCHAIN_DIR / "examples"

TARGET_PREFIX = "powerpc-linux-gnu-"
"""Debian's cross-tool prefix (packages gcc-powerpc-linux-gnu, binutils-powerpc-linux-gnu)."""
COMPILER_ENV = "BSS2SIM_PPC_GCC"
"""Environment variable naming another compiler executable (path or name)."""
APT_INSTALL = "apt-get update && apt-get install -y gcc-powerpc-linux-gnu"

CFLAGS = (
    # Target: 32-bit big-endian Power ISA. -mcpu=powerpc is the generic
    # subset with no core-specific assumption. Compared on a test program
    # with -mcpu=405/440/476/603/750/e300c3/e500mc/titan: the 4xx, 6xx, 7xx
    # and e300 choices emit the same kinds of instructions (other
    # scheduling); e500mc emits isel, which Nux's decoder lacks [nux rtl
    # pu_inst_pkg.sv]; e500mc and titan also pad with nops.
    "-m32", "-mbig-endian", "-mcpu=powerpc",
    # No FPU, no AltiVec/VSX on Nux (FXV is the vector unit): floating point
    # becomes soft-float library calls, and Debian's libgcc has hard-float
    # ones only, so a program using float or double fails to link.
    "-msoft-float", "-mno-altivec", "-mno-vsx",
    # Optional instructions off explicitly (all are off for -mcpu=powerpc
    # already; the flags keep it so if a user adds another -mcpu): isel,
    # single-field mfocrf/mtocrf, load/store multiple, popcntb, cmpb.
    # (-mno-string is not needed: GCC 12 lists -mstring as [ignored] and
    # never emits lswi/stswi.)
    "-mno-isel", "-mno-mfcrf", "-mno-multiple", "-mno-popcntb", "-mno-cmpb",
    # Every access aligned to its size: the PPU model faults on misaligned
    # accesses (the chip has an alignment interrupt [libnux crt.s]).
    "-mstrict-align",
    # No small-data area (r13/r2 not set up by start.S), no position
    # independence (Debian's GCC defaults to PIE), no GOT.
    "-msdata=none", "-G", "0", "-fno-pie", "-fno-pic",
    # Freestanding: no libc, no stack protector (Debian may enable it), no
    # unwind tables, no common symbols; no loops turned into memset calls.
    "-ffreestanding", "-fno-builtin", "-fno-common", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fno-tree-loop-distribute-patterns",
    # One section per function/object so --gc-sections drops unused code.
    "-ffunction-sections", "-fdata-sections",
    "-std=gnu11", "-Wall",
)
"""Compiler flags (C and the start-up assembly)."""

OPTIMIZE = "-O2"
"""Default optimisation level (override with ``optimize=``)."""

LDFLAGS = (
    "-nostdlib", "-nostartfiles", "-static", "-no-pie",
    "-Wl,--gc-sections", "-Wl,--build-id=none",
    # Segments need no page alignment in the file (nothing maps pages): keeps
    # the ELF file a few KiB instead of 64 KiB of padding.
    "-Wl,-z,max-page-size=16", "-Wl,-z,common-page-size=16",
    # Every input section must be placed by nux.ld: an unknown one is an error
    # rather than silently landing somewhere in the 16 KiB.
    "-Wl,--orphan-handling=error",
)
"""Linker flags; ``-T nux.ld`` and ``-lgcc`` are added by :func:`compile_command`."""

LIBS = ("-lgcc",)
"""libgcc for 64-bit integer helpers (__udivdi3, __ashldi3, ...; only the
members a program references are linked; they use Base instructions only)."""


class CompilerNotFoundError(FileNotFoundError):
    """The PowerPC cross compiler is not installed."""


class CompilerWarning(UserWarning):
    """The compiler or linker printed warnings; the ELF file was written."""


class CompileError(RuntimeError):
    """The compiler or linker failed; ``stderr`` holds its messages."""

    def __init__(self, message: str, command, stderr: str):
        super().__init__(message)
        self.command = list(command)
        self.stderr = stderr


def find_tool(tool: str = "gcc", compiler: str | os.PathLike | None = None) -> Path:
    """Path of ``powerpc-linux-gnu-<tool>`` (``gcc``, ``objdump``, ...).

    ``compiler`` (or the environment variable ``BSS2SIM_PPC_GCC``) names the
    compiler explicitly; other tools are looked for next to it with the same
    prefix. Raises :class:`CompilerNotFoundError` with the install command.
    """
    explicit = compiler if compiler is not None else os.environ.get(COMPILER_ENV)
    if explicit:
        explicit = str(explicit)
        gcc = shutil.which(explicit)
        if gcc is None:
            src = "compiler" if compiler is not None else f"${COMPILER_ENV}"
            raise CompilerNotFoundError(f"{src} = {explicit!r}: no such executable")
        if tool == "gcc":
            return Path(gcc)
        name = Path(gcc).name
        prefix = name[:-3] if name.endswith("gcc") else TARGET_PREFIX
        other = shutil.which(str(Path(gcc).with_name(prefix + tool))) or shutil.which(prefix + tool)
        if other is None:
            raise CompilerNotFoundError(f"{prefix + tool} (next to {gcc}) is not installed; "
                                        f"install with: {APT_INSTALL}")
        return Path(other)
    found = shutil.which(TARGET_PREFIX + tool)
    if found is None:
        raise CompilerNotFoundError(
            f"{TARGET_PREFIX}{tool} is not installed (needed only to compile C programs for the PPU); "
            f"install it with: {APT_INSTALL}  (or set ${COMPILER_ENV} to a PowerPC gcc)")
    return Path(found)


def compiler_available() -> bool:
    """Whether :func:`compile_c` can run (compiler found)."""
    try:
        find_tool("gcc")
    except CompilerNotFoundError:
        return False
    return True


def _sources(source_path) -> list[Path]:
    if isinstance(source_path, (str, os.PathLike)):
        paths = [Path(source_path)]
    else:
        paths = [Path(p) for p in source_path]
    if not paths:
        raise ValueError("source_path: no source file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"source_path: {p} does not exist or is not a file")
        if p.suffix not in (".c", ".S", ".s"):
            raise ValueError(f"source_path: {p} is not a C (.c) or assembly (.S, .s) file")
    return paths


def compile_command(source_path, out_elf, extra_flags=(), *, optimize: str = OPTIMIZE,
                    mailbox_size: int | None = None, compiler=None) -> list[str]:
    """The compiler command line :func:`compile_c` runs (a list of strings)."""
    gcc = find_tool("gcc", compiler)
    sources = _sources(source_path)
    if isinstance(extra_flags, str):
        raise TypeError("extra_flags: give a sequence of flags, e.g. ('-DN=4',), not one string")
    cmd = [str(gcc), *CFLAGS, optimize, f"-I{TOOLCHAIN_DIR}", *extra_flags, *LDFLAGS,
           "-T", str(LINKER_SCRIPT)]
    if mailbox_size is not None:
        if not isinstance(mailbox_size, int) or mailbox_size < 16 or mailbox_size % 16 \
                or mailbox_size >= K.PPU_MEMORY_BYTES:
            raise ValueError(f"mailbox_size = {mailbox_size!r}: expected a multiple of 16 bytes, "
                             f"16 .. 16 KiB - 16 (start.S stores main's result in its first word)")
        cmd.append(f"-Wl,--defsym=_mailbox_size={mailbox_size}")
    cmd += [str(START_FILE), str(RUNTIME_FILE), *map(str, sources), *LIBS, "-o", str(out_elf)]
    return cmd


_FLOAT_HELPER = re.compile(r"undefined reference to `(__(?:add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|"
                           r"unord|fix|fixuns|float|floatun|extend|trunc)[a-z]*[sdt]f[0-9a-z]*)'")

_HARD_FLOAT_MEMBER = re.compile(r"libgcc\.a\((\w+)\.o\) uses hard float")


def compile_c(source_path, out_elf, extra_flags=(), *, optimize: str = OPTIMIZE,
              mailbox_size: int | None = None, compiler=None, timeout_s: float = 120.0) -> Path:
    """Compile and link C (or assembly) sources into a PPU ELF executable.

    Parameters
    ----------
    source_path : path or sequence of paths
        ``.c``, ``.S`` or ``.s`` files; ``main`` (``int main(void)``) is the
        program. ``#include "fxv.h"`` finds the FXV header.
    out_elf : path
        The ELF file to write (its folder must exist).
    extra_flags : sequence of str
        More compiler/linker flags (``-DNAME=1``, ``-O0``, ``-g``, ...).
    optimize : str
        Optimisation flag (default ``-O2``).
    mailbox_size : int or None
        Mailbox bytes at the top of the SRAM (default 4096, nux.ld's).
    compiler : path or None
        A PowerPC gcc to use instead of ``powerpc-linux-gnu-gcc`` found on PATH.

    Returns the path of the ELF file. Raises :class:`CompilerNotFoundError`
    when the compiler is missing and :class:`CompileError` with the
    compiler's messages when compiling or linking fails; warnings of a
    successful build come as a :class:`CompilerWarning`.
    """
    out_elf = Path(out_elf)
    if not out_elf.parent.is_dir():
        raise FileNotFoundError(f"out_elf: folder {out_elf.parent} does not exist")
    cmd = compile_command(source_path, out_elf, extra_flags, optimize=optimize,
                          mailbox_size=mailbox_size, compiler=compiler)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise CompileError(f"compiling {source_path} took longer than {timeout_s} s", cmd, "") from None
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        hint = ""
        m = _FLOAT_HELPER.search(stderr) or _HARD_FLOAT_MEMBER.search(stderr)
        if m:
            hint = (f" (it uses floating point: {m.group(1)} is a floating-point helper; the PPU has "
                    "no FPU and Debian's libgcc holds only hard-float ones; use integer or "
                    "fixed-point arithmetic)")
        elif "will not fit in region" in stderr or "_min_stack_size" in stderr:
            hint = " (the program does not fit the 16 KiB SRAM below the mailbox and the stack)"
        raise CompileError(f"compiling {', '.join(map(str, _sources(source_path)))} failed{hint}:\n"
                           f"{stderr}", cmd, stderr)
    if proc.stderr.strip():
        # Warnings only (the build succeeded): pass them on, naming the sources.
        warnings.warn(f"compiling {', '.join(map(str, _sources(source_path)))}:\n{proc.stderr.strip()}",
                      CompilerWarning, stacklevel=2)
    return out_elf


def disassemble(elf_path, *, compiler=None, section: str = ".text") -> str:
    """``powerpc-linux-gnu-objdump -d`` of one section of an ELF file (text)."""
    objdump = find_tool("objdump", compiler)
    proc = subprocess.run([str(objdump), "-d", "-j", section, str(elf_path)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CompileError(f"objdump of {elf_path} failed:\n{proc.stderr.strip()}",
                           [str(objdump), "-d", str(elf_path)], proc.stderr)
    return proc.stdout


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} ){3}[0-9a-f]{2})\s+(\S+)")
_XO_DEFINE = re.compile(r"^#define FXV_XO_([A-Z0-9]+) (\d+)\b", re.M)


def fxv_opcodes() -> dict[int, str]:
    """FXV extended opcode -> mnemonic, read from ``toolchain/fxv.h``
    (``FXV_XO_ADDBM 461`` -> ``{461: "fxvaddbm"}``)."""
    text = (TOOLCHAIN_DIR / "fxv.h").read_text()
    return {int(xo): "fxv" + name.lower() for name, xo in _XO_DEFINE.findall(text)}


def instruction_words(elf_path, *, compiler=None) -> list[tuple[int, int, str]]:
    """(address, 32-bit word, mnemonic) of every instruction objdump lists in
    ``.text``. Words with primary opcode 4 are named by their FXV extended
    opcode (objdump decodes them as unrelated AltiVec/SPE instructions) or
    ``fxv?<xo>`` if fxv.h does not list it; objdump's ``hwsync`` is named
    ``sync`` (the same word, 0x7c0004ac)."""
    xo_names = fxv_opcodes()
    out = []
    for line in disassemble(elf_path, compiler=compiler).splitlines():
        m = _OBJDUMP_LINE.match(line)
        if not m:
            continue
        address = int(m.group(1), 16)
        word = int(m.group(2).replace(" ", ""), 16)
        name = m.group(3)
        if word >> 26 == 4:
            xo = (word >> 2) & 0x1FF
            name = xo_names.get(xo, f"fxv?{xo}")
        elif name == "hwsync":
            name = "sync"
        out.append((address, word, name))
    return out


def mnemonics(elf_path, *, compiler=None) -> set[str]:
    """The set of distinct mnemonics in ``.text`` (objdump's extended
    mnemonics such as ``li``, ``mr``, ``slwi``; FXV words by their fxv.h
    names; see :func:`instruction_words`)."""
    return {name for _, _, name in instruction_words(elf_path, compiler=compiler)}
