"""A small two-pass assembler and a listing disassembler for the Nux core.

:func:`assemble` turns GNU-style PowerPC assembly (with the FXV vector
instructions) into a :class:`~.program.Program`; :func:`disassemble_program`
lists one. Instruction encodings come from the table of :mod:`.isa`, so
``assemble(isa.disassemble(w, a), origin=a)`` gives back ``w`` for every word
``w`` the decoder accepts.

Syntax
------
* Statements end at a newline or ``;``. Comments: ``#`` and ``//`` to the end
  of the line, ``/* ... */`` across lines.
* Labels ``name:`` (several per line allowed), numeric local labels ``1:``
  referenced as ``1b`` (backwards) and ``1f`` (forwards). Symbols:
  ``.set name, expr``, ``.equ name, expr``, ``name = expr``. ``.`` is the
  address of the current statement.
* Expressions: integers (decimal, ``0x``, ``0b``, ``0o`` and C-style leading-0
  octal, ``'c'``), symbols, ``+ - * / % << >> | & ^ ~`` with C precedence,
  parentheses; ``hi(x)``, ``lo(x)``, ``ha(x)`` and GNU ``x@h``, ``x@l``,
  ``x@ha`` (``ha`` adjusts for the sign of the low half, for ``addi``). A
  value from ``lo``/``@l`` fits both signed and unsigned 16-bit fields.
* Registers: ``r3``, ``%r3`` or ``3`` (``sp`` is r1), vector registers ``v3``
  or ``3``, CR fields ``cr2`` or ``2``; CR bit operands take expressions such
  as ``4*cr1+eq``.
* Directives: ``.long``/``.word``/``.int`` (32 bit), ``.short``/``.half``/
  ``.hword`` (16 bit), ``.byte``, ``.ascii``/``.asciz``/``.string``,
  ``.fill n[,size[,value]]``, ``.space``/``.skip`` ``n[,fill]``, ``.zero n``,
  ``.align n[,fill]`` and ``.p2align`` (align to 2**n bytes, the GNU
  PowerPC meaning), ``.balign n[,fill]`` (n bytes), ``.org address``,
  ``.text``, ``.data``, ``.bss``, ``.section name[,...]``; ``.global``,
  ``.globl``, ``.extern``, ``.type``, ``.size``, ``.file``, ``.ident`` are
  accepted and have no effect. Alignment padding in ``.text`` is ``nop``.
* Simplified mnemonics: ``li lis la mr mr. not not. nop subi subis subic
  subic. sub subc (and their . / o forms) slwi srwi rotlwi rotrwi rotlw clrlwi
  clrrwi extlwi extrwi inslwi insrwi cmpw cmpwi cmplw cmplwi mtlr mflr mtctr
  mfctr mtxer mfxer mftb mftbu mtcr crset crclr crmove crnot lwsync``, and
  the branch family ``b<cond>[lr|ctr][l][a][+|-]`` with cond in ``lt le eq
  ge gt nl ne ng so ns un nu dnz dz dnzt dnzf dzt dzf t f`` (``blr``,
  ``bctrl``, ``beq cr1,label``, ``bdnz loop``, ``bnelr``, ``bgt+ x``, ...).
  The hints set the "at" bits of BO (``+`` likely, ``-`` unlikely).

Layout
------
Sections are laid out one after another from ``origin`` in the order
``.text``, ``.data``, ``.bss``, then other sections in the order they first
appear; each starts at the next multiple of its largest alignment. ``.org X``
(an absolute address) at the start of a section places that section at X; later
in a section it pads up to X, which needs the section's address known then
(``.text`` when it is laid at ``origin``, or a section placed by ``.org``).
The entry point is the symbol ``_start`` if defined, else the start of
``.text``.

Errors are :class:`AssemblyError` (a ValueError) naming the line number, the
line and what is wrong.
"""
from __future__ import annotations

import re

from . import isa
from .program import Program, Segment

__all__ = ["AssemblyError", "assemble", "disassemble_program"]

NOP = 0x6000_0000
"""``ori r0,r0,0``: the padding of code sections."""


class AssemblyError(ValueError):
    """An error in assembly source.

    Attributes
    ----------
    line : int or None
        Line number (1-based).
    text : str or None
        The line.
    source : str
        Name of the source.
    detail : str
        What is wrong.
    """

    def __init__(self, detail: str, line: int | None = None, text: str | None = None,
                 source: str = "<assembly>"):
        self.detail = detail
        self.line = line
        self.text = text
        self.source = source
        where = f"{source}, line {line}" if line is not None else source
        msg = f"{where}: {detail}"
        if text is not None:
            msg += f"\n    {text.strip()}"
        super().__init__(msg)


class _Err(Exception):
    """An error without line information (added by the statement loop)."""


class _Undefined(_Err):
    def __init__(self, name):
        super().__init__(f"undefined symbol {name!r}")
        self.name = name


class _Lo16(int):
    """A value from lo()/@l: the low 16 bits, fitting signed and unsigned fields."""


# --- expressions -----------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|\d+)(?P<local>[bf])?(?![\w.$])
    | (?P<char>'(?:\\.|[^\\'])')
    | (?P<id>[A-Za-z_.$][\w.$]*)
    | (?P<op><<|>>|[-+*/%|&^~()@!])
    )""", re.VERBOSE)

_CR_NAMES = {**{f"cr{i}": i for i in range(8)}, "lt": 0, "gt": 1, "eq": 2, "so": 3, "un": 3}


def _tokens(text):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _Err(f"cannot read the expression {text!r} at {text[pos:].strip()!r}")
        pos = m.end()
        if m.group("num") is not None:
            s = m.group("num")
            if m.group("local"):
                out.append(("local", s + m.group("local")))
                continue
            if len(s) > 1 and s[0] == "0" and s[1] in "0123456789":
                value = int(s, 8) if all(ch in "01234567" for ch in s) else None
                if value is None:
                    raise _Err(f"bad octal number {s!r}")
            else:
                value = int(s, 0)
            out.append(("num", value))
        elif m.group("char") is not None:
            out.append(("num", ord(_unescape(m.group("char")[1:-1]))))
        elif m.group("id") is not None:
            out.append(("id", m.group("id")))
        else:
            out.append(("op", m.group("op")))
    return out


def _lo(x):
    return _Lo16(x & 0xFFFF)


def _hi(x):
    return (x >> 16) & 0xFFFF


def _ha(x):
    return ((x + 0x8000) >> 16) & 0xFFFF


_FUNCS = {"lo": _lo, "hi": _hi, "ha": _ha, "l": _lo, "h": _hi}


class _Expr:
    """Recursive-descent evaluator; ``resolve(name)`` gives a symbol's value."""

    def __init__(self, text, resolve, extra=None):
        self.toks = _tokens(text)
        self.i = 0
        self.resolve = resolve
        self.extra = extra or {}
        self.text = text

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            want = value or kind or "more"
            raise _Err(f"expected {want!r} in expression {self.text.strip()!r}")
        self.i += 1
        return tok

    def run(self):
        if not self.toks:
            raise _Err("missing expression")
        v = self.binary(0)
        if self.i != len(self.toks):
            raise _Err(f"unexpected {self.toks[self.i][1]!r} in expression {self.text.strip()!r}")
        return v

    _LEVELS = (("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level):
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            kind, op = self.peek()
            if kind != "op" or op not in self._LEVELS[level]:
                return left
            self.i += 1
            right = self.binary(level + 1)
            left = self.apply(op, int(left), int(right))

    def apply(self, op, a, b):
        if op in ("/", "%") and b == 0:
            raise _Err(f"division by zero in {self.text.strip()!r}")
        if op in ("<<", ">>") and b < 0:
            raise _Err(f"negative shift in {self.text.strip()!r}")
        if op == "/":
            q = abs(a) // abs(b)
            return q if (a < 0) == (b < 0) else -q
        if op == "%":
            return a - b * self.apply("/", a, b)
        return {"|": a | b, "^": a ^ b, "&": a & b, "<<": a << b, ">>": a >> b, "+": a + b,
                "-": a - b, "*": a * b}[op]

    def unary(self):
        kind, op = self.peek()
        if kind == "op" and op in ("-", "+", "~", "!"):
            self.i += 1
            v = int(self.unary())
            return {"-": -v, "+": v, "~": ~v, "!": int(not v)}[op]
        return self.postfix()

    def postfix(self):
        v = self.primary()
        kind, op = self.peek()
        if kind == "op" and op == "@":
            self.i += 1
            _, name = self.take("id")
            if name not in ("l", "h", "ha"):
                raise _Err(f"unknown modifier @{name} (known: @l, @h, @ha)")
            v = _FUNCS[name](int(v))
        return v

    def primary(self):
        kind, value = self.take()
        if kind == "num":
            return value
        if kind == "local":
            return self.resolve(value)
        if kind == "id":
            nxt = self.peek()
            if value in ("lo", "hi", "ha") and nxt == ("op", "("):
                self.i += 1
                v = self.binary(0)
                self.take("op", ")")
                return _FUNCS[value](int(v))
            if value in self.extra:
                return self.extra[value]
            return self.resolve(value)
        if kind == "op" and value == "(":
            v = self.binary(0)
            self.take("op", ")")
            return v
        raise _Err(f"unexpected {value!r} in expression {self.text.strip()!r}")


# --- strings ---------------------------------------------------------------------------------------
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(s):
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(s):
            raise _Err("string ends with a backslash")
        ch = s[i]
        if ch == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", s[i + 1:])
            if not m:
                raise _Err("\\x needs hex digits")
            out.append(chr(int(m.group(), 16)))
            i += 1 + len(m.group())
        elif ch in "01234567":
            m = re.match(r"[0-7]{1,3}", s[i:])
            out.append(chr(int(m.group(), 8) & 0xFF))
            i += len(m.group())
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
            i += 1
        else:
            raise _Err(f"unknown escape \\{ch}")
    return "".join(out)


def _strings(text):
    """The string literals of a directive's argument list."""
    out, rest = [], text.strip()
    while rest:
        m = re.match(r'"((?:\\.|[^\\"])*)"\s*(,\s*)?', rest)
        if not m:
            raise _Err(f"expected a string literal, got {rest!r}")
        out.append(_unescape(m.group(1)).encode("latin-1"))
        rest = rest[m.end():]
        if rest and not m.group(2):
            raise _Err(f"expected ',' between strings, got {rest!r}")
    return out


# --- source splitting -------------------------------------------------------------------------------
def _strip_block_comments(text):
    """Replace /* */ comments by spaces, keeping newlines (line numbers)."""
    out, i = [], 0
    while True:
        j = text.find("/*", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        k = text.find("*/", j + 2)
        if k < 0:
            line = text.count("\n", 0, j) + 1
            raise AssemblyError("unterminated /* comment", line, text.split("\n")[line - 1])
        out.append(text[i:j])
        out.append(re.sub(r"[^\n]", " ", text[j:k + 2]))
        i = k + 2


def _split_line(line):
    """Statements of one line, without the comment; quotes protect # ; //."""
    parts, cur, quote, i = [], [], None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(line):
                cur.append(line[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            # A character literal 'c' or a string.
            quote = ch
            cur.append(ch)
        elif ch == "#" or line.startswith("//", i):
            break
        elif ch == ";":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def _split_operands(text):
    """Comma-separated operands at parenthesis depth 0."""
    text = text.strip()
    if not text:
        return []
    parts, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    if any(not p for p in parts):
        raise _Err(f"empty operand in {text!r}")
    return parts


_LABEL = re.compile(r"\s*([A-Za-z_.$][\w.$]*|\d+)\s*:(?!=)")
_ASSIGN = re.compile(r"\s*([A-Za-z_.$][\w.$]*)\s*=(?!=)\s*(.+)$")
_MNEMONIC = re.compile(r"\s*([A-Za-z_.][\w.]*[+-]?)(?:\s+|$)(.*)$")

_REG = {
    "gpr": re.compile(r"^%?r(\d+)$", re.I),
    "vr": re.compile(r"^%?v(\d+)$", re.I),
    "crf": re.compile(r"^%?cr(\d+)$", re.I),
}


# --- the assembler ---------------------------------------------------------------------------------
class _Section:
    def __init__(self, name, order):
        self.name = name
        self.order = order
        self.size = 0
        self.align = 4            # *assumed* word alignment of every section, as linkers do
        self.base = None          # absolute address when known in pass 1
        self.fixed = False        # placed by .org
        self.stmts = []
        self.data = None


class _Stmt:
    __slots__ = ("line", "text", "kind", "args", "offset", "size", "seq", "section")

    def __init__(self, line, text, kind, args, section, offset, size, seq):
        self.line, self.text, self.kind, self.args = line, text, kind, args
        self.section, self.offset, self.size, self.seq = section, offset, size, seq


_DATA_SIZES = {".long": 4, ".word": 4, ".int": 4, ".4byte": 4, ".short": 2, ".half": 2,
               ".hword": 2, ".2byte": 2, ".byte": 1}
_IGNORED = {".global", ".globl", ".extern", ".type", ".size", ".file", ".ident", ".local",
            ".weak", ".hidden", ".machine", ".abiversion", ".gnu_attribute", ".end"}


class _Assembler:
    def __init__(self, text, origin, source):
        self.source = source
        self.origin = origin
        self.sections = {}
        self.labels = {}          # name -> (section, offset)
        self.sets = {}            # name -> (expression text, line, stmt seq)
        self.defined_at = {}
        self.local_defs = {}      # number -> [(seq, section, offset)]
        self.seq = 0
        self.evaluating = set()
        self.addresses = None     # section name -> base, after layout
        self.text = text

    # errors with line info
    def error(self, detail, line=None, text=None):
        return AssemblyError(detail, line, text, self.source)

    def section(self, name):
        if name not in self.sections:
            sec = _Section(name, len(self.sections))
            if name == ".text":
                sec.base = self.origin      # the first section: its address is known
            self.sections[name] = sec
        return self.sections[name]

    # -- symbols
    def resolve(self, name, seq=None, address=None, final=True):
        if name == ".":
            if address is None:
                raise _Err("'.' (the current address) is not known yet here")
            return address
        if re.fullmatch(r"\d+[bf]", name):
            defs = self.local_defs.get(name[:-1], [])
            if name[-1] == "b":
                cands = [d for d in defs if d[0] < seq]
                chosen = cands[-1] if cands else None
            else:
                cands = [d for d in defs if d[0] > seq]
                chosen = cands[0] if cands else None
            if chosen is None:
                raise _Undefined(name)
            return self.label_address(chosen[1], chosen[2], name)
        if name in self.labels:
            sec, off = self.labels[name]
            return self.label_address(sec, off, name)
        if name in self.sets:
            expr, line, set_seq = self.sets[name]
            if name in self.evaluating:
                raise _Err(f"symbol {name!r} is defined in terms of itself")
            self.evaluating.add(name)
            try:
                return self.evaluate(expr, set_seq, None)
            finally:
                self.evaluating.discard(name)
        raise _Undefined(name)

    def label_address(self, sec, off, name):
        base = self.addresses[sec] if self.addresses is not None else self.sections[sec].base
        if base is None:
            raise _Err(f"the address of {name!r} is not known yet here (a label used where "
                       "a constant is needed before the layout)")
        return base + off

    def evaluate(self, text, seq, address, extra=None):
        return _Expr(text, lambda n: self.resolve(n, seq, address), extra).run()

    def define(self, name, line, text):
        if name in self.labels or name in self.sets:
            raise self.error(f"symbol {name!r} is already defined (line {self.defined_at[name]})",
                             line, text)
        self.defined_at[name] = line

    # -- pass 1
    def pass1(self):
        try:
            source = _strip_block_comments(self.text)
        except AssemblyError as e:
            raise self.error(e.detail, e.line, e.text) from None
        cur = self.section(".text")
        for lineno, raw in enumerate(source.split("\n"), 1):
            for stmt in _split_line(raw):
                try:
                    cur = self.statement1(stmt, lineno, raw, cur)
                except _Err as e:
                    raise self.error(str(e), lineno, raw) from None

    def here(self, sec):
        return None if sec.base is None else sec.base + sec.size

    def statement1(self, stmt, lineno, raw, cur):
        rest = stmt
        while True:
            m = _LABEL.match(rest)
            if not m:
                break
            name = m.group(1)
            self.seq += 1
            if name.isdigit():
                self.local_defs.setdefault(name, []).append((self.seq, cur.name, cur.size))
            else:
                self.define(name, lineno, raw)
                self.labels[name] = (cur.name, cur.size)
            rest = rest[m.end():]
        if not rest.strip():
            return cur
        self.seq += 1
        m = _ASSIGN.match(rest)
        if m and not rest.strip().startswith("."):
            self.define(m.group(1), lineno, raw)
            self.sets[m.group(1)] = (m.group(2), lineno, self.seq)
            return cur
        m = _MNEMONIC.match(rest)
        if not m:
            raise _Err(f"cannot read the statement {rest.strip()!r}")
        name, args = m.group(1), m.group(2).strip()
        if name.startswith("."):
            return self.directive1(name.lower(), args, lineno, raw, cur)
        if cur.name == ".bss":
            raise _Err(f"instruction {name!r} in .bss (it holds zeros only)")
        if cur.size % 4:
            raise _Err(f"misaligned instruction at section offset 0x{cur.size:x} "
                       "(instructions need 4-byte alignment; use .align 2)")
        cur.align = max(cur.align, 4)
        self.add(cur, lineno, raw, "insn", (name, args), 4)
        return cur

    def add(self, sec, lineno, raw, kind, args, size):
        sec.stmts.append(_Stmt(lineno, raw, kind, args, sec.name, sec.size, size, self.seq))
        sec.size += size

    def const(self, text, what):
        try:
            return int(self.evaluate(text, self.seq, None))
        except _Undefined as e:
            raise _Err(f"{what} must be a constant known at this point ({e})") from None

    def pad_to(self, sec, lineno, raw, multiple, fill):
        """Padding to a multiple of ``multiple`` bytes (absolute if the base is known)."""
        sec.align = max(sec.align, multiple)
        pos = sec.size if sec.base is None else sec.base + sec.size
        pad = -pos % multiple
        if pad:
            self.add(sec, lineno, raw, "pad", (fill, pos), pad)

    def directive1(self, name, args, lineno, raw, cur):
        if name in (".text", ".data", ".bss"):
            return self.section(name)
        if name == ".section":
            parts = _split_operands(args) if args else []
            if not parts:
                raise _Err(".section needs a name")
            sec_name = parts[0].strip().strip('"')
            return self.section(sec_name)
        if name in (".set", ".equ", ".equiv"):
            parts = _split_operands(args)
            if len(parts) != 2 or not re.fullmatch(r"[A-Za-z_.$][\w.$]*", parts[0]):
                raise _Err(f"{name} needs a symbol name and a value: {name} name, expression")
            self.define(parts[0], lineno, raw)
            self.sets[parts[0]] = (parts[1], lineno, self.seq)
            return cur
        if name in _IGNORED:
            return cur
        if name in _DATA_SIZES:
            items = _split_operands(args)
            if not items:
                raise _Err(f"{name} needs at least one value")
            size = _DATA_SIZES[name]
            self.add(cur, lineno, raw, "data", (size, items), size * len(items))
            return cur
        if name in (".ascii", ".asciz", ".string"):
            blobs = _strings(args)
            if name != ".ascii":
                blobs = [b + b"\0" for b in blobs]
            blob = b"".join(blobs)
            self.add(cur, lineno, raw, "bytes", blob, len(blob))
            return cur
        if name in (".space", ".skip", ".zero"):
            parts = _split_operands(args)
            if not 1 <= len(parts) <= (1 if name == ".zero" else 2):
                raise _Err(f"{name} needs a size{' and an optional fill byte' if name != '.zero' else ''}")
            n = self.const(parts[0], f"the size of {name}")
            fill = self.const(parts[1], "the fill byte") if len(parts) > 1 else 0
            if n < 0:
                raise _Err(f"negative size {n} of {name}")
            if not 0 <= fill <= 255 and not -128 <= fill < 0:
                raise _Err(f"fill byte {fill} out of range -128..255")
            self.add(cur, lineno, raw, "bytes", bytes([fill & 0xFF]) * n, n)
            return cur
        if name == ".fill":
            parts = _split_operands(args)
            if not 1 <= len(parts) <= 3:
                raise _Err(".fill needs repeat[, size[, value]]")
            rep = self.const(parts[0], "the repeat count of .fill")
            size = self.const(parts[1], "the size of .fill") if len(parts) > 1 else 1
            if rep < 0 or not 0 <= size <= 8:
                raise _Err(f".fill repeat {rep} must be >= 0 and size {size} 0..8")
            self.add(cur, lineno, raw, "fill", (rep, size, parts[2] if len(parts) > 2 else "0"),
                     rep * size)
            return cur
        if name in (".align", ".p2align", ".balign"):
            parts = _split_operands(args)
            if not 1 <= len(parts) <= 3:
                raise _Err(f"{name} needs an alignment and an optional fill")
            n = self.const(parts[0], f"the alignment of {name}")
            if name == ".balign":
                if n <= 0 or n & (n - 1):
                    raise _Err(f".balign {n}: the alignment must be a power of two")
                multiple = n
            else:
                if not 0 <= n <= 16:   # *assumed* limit: 64 KiB, four times the SRAM
                    raise _Err(f"{name} {n}: the exponent must be 0..16 (align to 2**n bytes)")
                multiple = 1 << n
            fill = self.const(parts[1], "the fill byte") if len(parts) > 1 and parts[1] else None
            self.pad_to(cur, lineno, raw, multiple, fill)
            return cur
        if name == ".org":
            target = self.const(args, "the address of .org")
            if cur.size == 0 and not cur.fixed and not cur.stmts:
                cur.base = target
                cur.fixed = True
                return cur
            if cur.base is None:
                raise _Err(".org inside a section whose address is not known yet: put .org at "
                           "the start of the section to fix its address")
            here = cur.base + cur.size
            if target < here:
                raise _Err(f".org 0x{target:x} moves backwards (the section is at 0x{here:x})")
            if target > here:
                self.add(cur, lineno, raw, "bytes", bytes(target - here), target - here)
            return cur
        raise _Err(f"unknown directive {name}")

    # -- layout
    def layout(self):
        order = [".text", ".data", ".bss"]
        rest = sorted((s for s in self.sections.values() if s.name not in order),
                      key=lambda s: s.order)
        seq = [self.sections[n] for n in order if n in self.sections] + rest
        self.addresses = {}
        cursor = self.origin
        placed = []
        for sec in seq:
            if sec.base is not None:
                base = sec.base
            else:
                base = -(-cursor // sec.align) * sec.align
            self.addresses[sec.name] = base
            if sec.size:
                placed.append((base, base + sec.size, sec.name))
            cursor = base + sec.size
        placed.sort()
        for (a0, a1, n0), (b0, b1, n1) in zip(placed, placed[1:]):
            if b0 < a1:
                raise self.error(f"sections {n0} (0x{a0:x}..0x{a1 - 1:x}) and {n1} "
                                 f"(0x{b0:x}..0x{b1 - 1:x}) overlap")
        for s, e, n in placed:
            if s < 0 or e > 1 << 32:
                raise self.error(f"section {n} lies outside the 32-bit address space")
        return seq

    # -- pass 2
    def pass2(self, seq):
        for sec in seq:
            out = bytearray()
            base = self.addresses[sec.name]
            for st in sec.stmts:
                address = base + st.offset
                try:
                    out += self.emit(st, address, sec)
                except _Err as e:
                    raise self.error(str(e), st.line, st.text) from None
                if len(out) != st.offset + st.size:
                    raise self.error("internal size mismatch", st.line, st.text)
            sec.data = bytes(out)

    def emit(self, st, address, sec):
        kind = st.kind
        if kind == "bytes":
            return st.args
        if kind == "pad":
            fill, _ = st.args
            if fill is None and sec.name.startswith(".text") and address % 4 == 0 \
                    and st.size % 4 == 0:
                return NOP.to_bytes(4, "big") * (st.size // 4)
            return bytes([(fill or 0) & 0xFF]) * st.size
        if kind == "data":
            size, items = st.args
            out = b""
            for item in items:
                v = int(self.evaluate(item, st.seq, address))
                if not -(1 << (8 * size - 1)) <= v < (1 << (8 * size)):
                    raise _Err(f"value {v} does not fit {8 * size} bits")
                out += (v & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
            return out
        if kind == "fill":
            rep, size, value = st.args
            v = int(self.evaluate(value, st.seq, address))
            return (v & ((1 << (8 * size)) - 1)).to_bytes(size, "big") * rep if size else b""
        word = self.instruction(st, address)
        return word.to_bytes(4, "big")

    # -- instructions
    def instruction(self, st, address):
        name, args = st.args
        texts = _split_operands(args)
        ctx = _Operands(self, st.seq, address)
        mnemonic = name.lower()
        if mnemonic in isa.BY_MNEMONIC:
            ins = isa.BY_MNEMONIC[mnemonic]
            values = ctx.for_instruction(ins, texts)
        elif mnemonic in _SIMPLIFIED:
            mnemonic, values = _SIMPLIFIED[mnemonic](ctx, texts)
        else:
            simple = _branch_mnemonic(ctx, mnemonic, texts)
            if simple is None:
                raise _Err(f"unknown mnemonic {name!r}")
            mnemonic, values = simple
        try:
            return isa.encode(mnemonic, **values)
        except ValueError as e:
            raise _Err(str(e)) from None

    def run(self):
        self.pass1()
        seq = self.layout()
        self.pass2(seq)
        segments = tuple(Segment(self.addresses[s.name], s.data, s.name) for s in seq if s.data)
        symbols = {}
        for name in self.labels:
            sec, off = self.labels[name]
            symbols[name] = self.addresses[sec] + off
        for name in self.sets:
            try:
                symbols[name] = int(self.resolve(name, self.sets[name][2], None))
            except _Err:
                pass          # e.g. a set symbol that uses '.', meaningful only where used
        if "_start" in symbols:
            entry = symbols["_start"]
        elif ".text" in self.addresses:
            entry = self.addresses[".text"]
        else:
            entry = self.origin
        return Program(segments=segments, entry=entry, symbols=symbols, source=self.source)


class _Operands:
    """Operand parsing for one instruction statement."""

    def __init__(self, asm, seq, address):
        self.asm, self.seq, self.address = asm, seq, address

    def expr(self, text, extra=None):
        return self.asm.evaluate(text, self.seq, self.address, extra)

    def reg(self, text, kind):
        """A register number of ``kind`` ('gpr', 'vr', 'crf')."""
        t = text.strip()
        limit = 7 if kind == "crf" else 31
        names = {"gpr": "general-purpose register", "vr": "vector register",
                 "crf": "CR field"}
        m = _REG[kind].match(t)
        if m:
            n = int(m.group(1))
        elif kind == "gpr" and t.lower() in ("sp", "%sp"):
            n = 1
        else:
            for other, rx in _REG.items():
                if other != kind and rx.match(t):
                    raise _Err(f"expected a {names[kind]}, got {t!r}")
            try:
                n = int(self.expr(t))
            except _Undefined:
                raise _Err(f"expected a {names[kind]}, got {t!r}") from None
        if not 0 <= n <= limit:
            raise _Err(f"{names[kind]} {t!r} out of range 0..{limit}")
        return n

    def imm(self, text, kind="simm", width=16):
        v = self.expr(text)
        if isinstance(v, _Lo16) and kind == "simm":
            v = v - 0x10000 if v & 0x8000 else int(v)
        return int(v)

    def crbit(self, text):
        return int(self.expr(text, _CR_NAMES))

    def target(self, text, op, absolute):
        t = self.expr(text)
        t = int(t)
        if absolute:
            v = t & 0xFFFF_FFFF
            v = v - (1 << 32) if v & 0x8000_0000 else v
        else:
            v = ((t - self.address + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)
        lo, hi, _ = op.value_range()
        if v % 4:
            raise _Err(f"branch target 0x{t & 0xFFFF_FFFF:x} is misaligned (not a multiple of 4)")
        if not lo <= v <= hi:
            what = "absolute target" if absolute else "displacement"
            raise _Err(f"branch target 0x{t & 0xFFFF_FFFF:x} out of range: {what} {v} outside "
                       f"{lo}..{hi}")
        return v

    def disp_base(self, text):
        t = text.strip()
        if not t.endswith(")"):
            raise _Err(f"expected d(rA), got {t!r}")
        depth = 0
        for i in range(len(t) - 1, -1, -1):
            if t[i] == ")":
                depth += 1
            elif t[i] == "(":
                depth -= 1
                if depth == 0:
                    break
        else:
            raise _Err(f"unbalanced parentheses in {t!r}")
        d_text, r_text = t[:i].strip(), t[i + 1:-1]
        d = self.imm(d_text) if d_text else 0
        return d, self.reg(r_text, "gpr")

    def value(self, op, text, ins):
        kind = op.kind
        if kind in ("gpr", "gpr0"):
            return self.reg(text, "gpr")
        if kind in ("vr", "crf"):
            return self.reg(text, kind)
        if kind == "crbit":
            return self.crbit(text)
        if kind in ("bd", "li"):
            return self.target(text, op, bool(ins.aa))
        if kind in ("simm", "uimm"):
            return self.imm(text, kind, op.width)
        return int(self.expr(text))

    def for_instruction(self, ins, texts):
        groups, i, ops = [], 0, ins.operands
        while i < len(ops):
            if ops[i].kind == "disp":
                groups.append((ops[i], ops[i + 1]))
                i += 2
            else:
                groups.append((ops[i],))
                i += 1
        required = sum(1 for g in groups if not g[0].optional)
        if not required <= len(texts) <= len(groups):
            syntax = ",".join(f"{g[0].name}({g[1].name})" if len(g) == 2 else g[0].name
                              for g in groups)
            count = f"{required}" if required == len(groups) else f"{required}..{len(groups)}"
            raise _Err(f"{ins.mnemonic} takes {count} operands ({ins.mnemonic} {syntax}), "
                       f"got {len(texts)}")
        values = {}
        for group, text in zip(groups, texts):
            if len(group) == 2:
                values[group[0].name], values[group[1].name] = self.disp_base(text)
            else:
                values[group[0].name] = self.value(group[0], text, ins)
        return values

    def parse(self, texts, kinds, name):
        """Operands of a simplified mnemonic: kinds like 'gpr', 'simm', 'uimm', 'expr', 'crbit'."""
        if len(texts) != len(kinds):
            raise _Err(f"{name} takes {len(kinds)} operands ({', '.join(kinds) or 'none'}), "
                       f"got {len(texts)}")
        out = []
        for text, kind in zip(texts, kinds):
            if kind in ("gpr", "vr", "crf"):
                out.append(self.reg(text, kind))
            elif kind == "crbit":
                out.append(self.crbit(text))
            elif kind == "dra":
                out.append(self.disp_base(text))
            elif kind == "simm":
                out.append(self.imm(text, "simm"))
            else:
                out.append(int(self.expr(text)))
        return out


# --- simplified mnemonics -------------------------------------------------------------------------
def _opt_crf(ctx, texts, n, name):
    """Split an optional leading CR field off operands that otherwise number n."""
    if len(texts) == n + 1:
        return ctx.reg(texts[0], "crf"), texts[1:]
    if len(texts) == n:
        return 0, texts
    raise _Err(f"{name} takes [crN,] and {n} operands, got {len(texts)}")


def _shift_amount(n, name, low=0, high=31):
    if not low <= n <= high:
        raise _Err(f"{name}: shift/bit count {n} out of range {low}..{high}")
    return n


def _make_simplified():
    s = {}

    def li(ctx, t):
        rt, v = ctx.parse(t, ("gpr", "simm"), "li")
        return "addi", dict(rt=rt, ra=0, si=v)

    def lis(ctx, t):
        rt, v = ctx.parse(t, ("gpr", "expr"), "lis")
        if not -0x8000 <= v <= 0xFFFF:
            raise _Err(f"lis: value {v} out of range -32768..65535")
        return "addis", dict(rt=rt, ra=0, si=v - 0x10000 if v > 0x7FFF else v)

    def la(ctx, t):
        rt, (d, ra) = ctx.parse(t, ("gpr", "dra"), "la")
        return "addi", dict(rt=rt, ra=ra, si=d)

    s.update(li=li, lis=lis, la=la)
    for suffix in ("", "."):
        def mr(ctx, t, suffix=suffix):
            ra, rs = ctx.parse(t, ("gpr", "gpr"), "mr" + suffix)
            return "or" + suffix, dict(ra=ra, rs=rs, rb=rs)

        def not_(ctx, t, suffix=suffix):
            ra, rs = ctx.parse(t, ("gpr", "gpr"), "not" + suffix)
            return "nor" + suffix, dict(ra=ra, rs=rs, rb=rs)
        s["mr" + suffix], s["not" + suffix] = mr, not_

    s["nop"] = lambda ctx, t: (ctx.parse(t, (), "nop"), ("ori", dict(ra=0, rs=0, ui=0)))[1]

    for name, base in (("subi", "addi"), ("subis", "addis"), ("subic", "addic"),
                       ("subic.", "addic.")):
        def sub_imm(ctx, t, name=name, base=base):
            rt, ra, v = ctx.parse(t, ("gpr", "gpr", "simm"), name)
            v = -v
            if base == "addis" and 0x8000 <= v <= 0xFFFF:
                v -= 0x10000
            return base, dict(rt=rt, ra=ra, si=v)
        s[name] = sub_imm

    for name, base in (("sub", "subf"), ("subc", "subfc")):
        for suffix in ("", ".", "o", "o."):
            def sub(ctx, t, name=name + suffix, base=base + suffix):
                rt, ra, rb = ctx.parse(t, ("gpr", "gpr", "gpr"), name)
                return base, dict(rt=rt, ra=rb, rb=ra)
            s[name + suffix] = sub

    def rot(name, make):
        for suffix in ("", "."):
            def f(ctx, t, suffix=suffix):
                base, values = make(ctx, t, name + suffix)
                return base + suffix, values
            s[name + suffix] = f

    def slwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        n = _shift_amount(n, name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=n, mb=0, me=31 - n)

    def srwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        n = _shift_amount(n, name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=(32 - n) % 32, mb=n, me=31)

    def rotlwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=_shift_amount(n, name), mb=0, me=31)

    def rotrwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=(32 - _shift_amount(n, name)) % 32, mb=0, me=31)

    def clrlwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=0, mb=_shift_amount(n, name), me=31)

    def clrrwi(ctx, t, name):
        ra, rs, n = ctx.parse(t, ("gpr", "gpr", "expr"), name)
        return "rlwinm", dict(ra=ra, rs=rs, sh=0, mb=0, me=31 - _shift_amount(n, name))

    def extlwi(ctx, t, name):
        ra, rs, n, b = ctx.parse(t, ("gpr", "gpr", "expr", "expr"), name)
        _shift_amount(n, name, 1, 32)
        _shift_amount(b, name, 0, 31)
        return "rlwinm", dict(ra=ra, rs=rs, sh=b, mb=0, me=n - 1)

    def extrwi(ctx, t, name):
        ra, rs, n, b = ctx.parse(t, ("gpr", "gpr", "expr", "expr"), name)
        _shift_amount(n, name, 1, 32)
        _shift_amount(b + n, name, 1, 32)
        return "rlwinm", dict(ra=ra, rs=rs, sh=(b + n) % 32, mb=32 - n, me=31)

    def rotlw(ctx, t, name):
        ra, rs, rb = ctx.parse(t, ("gpr", "gpr", "gpr"), name)
        return "rlwnm", dict(ra=ra, rs=rs, rb=rb, mb=0, me=31)

    for name, make in (("slwi", slwi), ("srwi", srwi), ("rotlwi", rotlwi), ("rotrwi", rotrwi),
                       ("clrlwi", clrlwi), ("clrrwi", clrrwi), ("extlwi", extlwi),
                       ("extrwi", extrwi), ("rotlw", rotlw)):
        rot(name, make)

    def ins_(kind):
        def f(ctx, t, name):
            ra, rs, n, b = ctx.parse(t, ("gpr", "gpr", "expr", "expr"), name)
            _shift_amount(n, name, 1, 32)
            _shift_amount(b + n, name, 1, 32)
            sh = (32 - b) % 32 if kind == "l" else (32 - (b + n)) % 32
            return "rlwimi", dict(ra=ra, rs=rs, sh=sh, mb=b, me=b + n - 1)
        return f
    rot("inslwi", ins_("l"))
    rot("insrwi", ins_("r"))

    for name, base, last in (("cmpw", "cmp", "gpr"), ("cmpwi", "cmpi", "simm"),
                             ("cmplw", "cmpl", "gpr"), ("cmplwi", "cmpli", "uimm")):
        def cmp(ctx, t, name=name, base=base, last=last):
            bf, rest = _opt_crf(ctx, t, 2, name)
            ra, v = ctx.parse(rest, ("gpr", "gpr" if last == "gpr" else "simm" if last == "simm"
                                     else "expr"), name)
            key = "rb" if last == "gpr" else "si" if last == "simm" else "ui"
            return base, {"bf": bf, "l": 0, "ra": ra, key: v}
        s[name] = cmp

    for reg, spr in (("lr", 8), ("ctr", 9), ("xer", 1)):
        s["mt" + reg] = lambda ctx, t, spr=spr, reg=reg: (
            "mtspr", dict(spr=spr, rs=ctx.parse(t, ("gpr",), "mt" + reg)[0]))
        s["mf" + reg] = lambda ctx, t, spr=spr, reg=reg: (
            "mfspr", dict(rt=ctx.parse(t, ("gpr",), "mf" + reg)[0], spr=spr))
    s["mftb"] = lambda ctx, t: ("mfspr", dict(rt=ctx.parse(t, ("gpr",), "mftb")[0], spr=268))
    s["mftbu"] = lambda ctx, t: ("mfspr", dict(rt=ctx.parse(t, ("gpr",), "mftbu")[0], spr=269))
    s["mtcr"] = lambda ctx, t: ("mtcrf", dict(fxm=0xFF, rs=ctx.parse(t, ("gpr",), "mtcr")[0]))
    s["lwsync"] = lambda ctx, t: (ctx.parse(t, (), "lwsync"), ("sync", dict(l=1)))[1]

    def crset(ctx, t):
        (bx,) = ctx.parse(t, ("crbit",), "crset")
        return "creqv", dict(bt=bx, ba=bx, bb=bx)

    def crclr(ctx, t):
        (bx,) = ctx.parse(t, ("crbit",), "crclr")
        return "crxor", dict(bt=bx, ba=bx, bb=bx)

    def crmove(ctx, t):
        bx, by = ctx.parse(t, ("crbit", "crbit"), "crmove")
        return "cror", dict(bt=bx, ba=by, bb=by)

    def crnot(ctx, t):
        bx, by = ctx.parse(t, ("crbit", "crbit"), "crnot")
        return "crnor", dict(bt=bx, ba=by, bb=by)
    s.update(crset=crset, crclr=crclr, crmove=crmove, crnot=crnot)
    return s


_SIMPLIFIED = _make_simplified()

_BRANCH = re.compile(r"^b(?P<cond>dnzt|dnzf|dzt|dzf|dnz|dz|lt|le|eq|ge|gt|nl|ne|ng|so|ns|un|nu|t|f)?"
                     r"(?P<reg>lr|ctr)?(?P<l>l)?(?P<a>a)?(?P<hint>[+-])?$")
# cond -> (BO without hint, CR bit within the field or None)
_BRANCH_CONDS = {
    "lt": (12, 0), "gt": (12, 1), "eq": (12, 2), "so": (12, 3), "un": (12, 3),
    "ge": (4, 0), "nl": (4, 0), "le": (4, 1), "ng": (4, 1), "ne": (4, 2), "ns": (4, 3),
    "nu": (4, 3),
}
_CTR_CONDS = {"dnz": 16, "dz": 18}
_CTR_BIT_CONDS = {"dnzt": 8, "dnzf": 0, "dzt": 10, "dzf": 2, "t": 12, "f": 4}


def _branch_mnemonic(ctx, mnemonic, texts):
    """(base mnemonic, operands) of a simplified branch, or None if it is none."""
    m = _BRANCH.match(mnemonic)
    if not m:
        return None
    cond, reg, lk, aa, hint = (m.group("cond"), m.group("reg"), m.group("l"), m.group("a"),
                               m.group("hint"))
    if reg and aa:
        raise _Err(f"{mnemonic}: a branch to {reg.upper()} has no absolute form")
    if cond is None and not reg:
        return None      # b, bl, ba, bla are table instructions
    base = ("bc" if not reg else "bclr" if reg == "lr" else "bcctr") + (lk or "") + (aa or "")
    ins = isa.BY_MNEMONIC[base]
    hint_bits = {None: 0, "-": 0b10, "+": 0b11}[hint]
    target_needed = not reg
    if cond is None:                                  # blr, bctr, blrl, bctrl
        if hint:
            raise _Err(f"{mnemonic}: an unconditional branch takes no hint")
        ctx.parse(texts, (), mnemonic)
        return base, dict(bo=20, bi=0)
    if cond in _BRANCH_CONDS:
        bo, bit = _BRANCH_CONDS[cond]
        n = 1 if target_needed else 0
        crf, rest = _opt_crf(ctx, texts, n, mnemonic)
        values = dict(bo=bo | hint_bits, bi=4 * crf + bit)
    elif cond in _CTR_CONDS:
        bo = _CTR_CONDS[cond] | (hint_bits << 2 & 0b01000) | (hint_bits & 1)
        rest = texts
        if len(rest) != (1 if target_needed else 0):
            raise _Err(f"{mnemonic} takes {'a target' if target_needed else 'no operands'}, "
                       f"got {len(rest)} operands")
        values = dict(bo=bo, bi=0)
    else:
        if hint and cond not in ("t", "f"):
            raise _Err(f"{mnemonic}: hints are not supported for b{cond}")
        bo = _CTR_BIT_CONDS[cond] | (hint_bits if cond in ("t", "f") else 0)
        want = 2 if target_needed else 1
        if len(texts) != want:
            raise _Err(f"{mnemonic} takes {'BI and a target' if target_needed else 'BI'}, "
                       f"got {len(texts)} operands")
        values = dict(bo=bo, bi=ctx.crbit(texts[0]))
        rest = texts[1:]
    if target_needed:
        if len(rest) != 1:
            raise _Err(f"{mnemonic} needs a branch target")
        values["bd"] = ctx.target(rest[0], ins.operand("bd"), bool(ins.aa))
    return base, values


# --- entry points ---------------------------------------------------------------------------------
def assemble(text: str, origin: int = 0, source: str = "<assembly>") -> Program:
    """Assemble source text into a :class:`~.program.Program`.

    Parameters
    ----------
    text : str
        Assembly source (syntax in the module docstring).
    origin : int
        Byte address where the first section (``.text``) starts.
    source : str
        Name of the source, for messages and ``Program.source``.

    Returns
    -------
    Program
        One segment per non-empty section, the entry point (``_start`` or the
        start of ``.text``) and every label and ``.set`` symbol.

    Raises
    ------
    AssemblyError
        Naming the line, its text and what is wrong.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(origin, bool) or not isinstance(origin, int) or not 0 <= origin < 1 << 32:
        raise ValueError(f"origin must be an address 0..2**32-1, got {origin!r}")
    return _Assembler(text, origin, source).run()


def _listing(address, data, out):
    i = 0
    while i < len(data):
        a = address + i
        if a % 4 == 0 and i + 4 <= len(data):
            word = int.from_bytes(data[i:i + 4], "big")
            out.append(f"{a:08x}:  {word:08x}  {isa.disassemble(word, a)}")
            i += 4
        else:
            out.append(f"{a:08x}:  {data[i]:02x}        .byte 0x{data[i]:02x}")
            i += 1


def disassemble_program(program_or_words, origin: int = 0) -> str:
    """A listing: one line per word with address, word and assembly text.

    Parameters
    ----------
    program_or_words : Program, bytes or iterable of int
        A program (every segment is listed, each under a ``# name at address``
        header), raw big-endian bytes, or 32-bit words.
    origin : int
        Address of the first byte or word (not used for a Program).
    """
    out = []
    if isinstance(program_or_words, Program):
        for seg in program_or_words.segments:
            out.append(f"# {seg.name or 'segment'} at 0x{seg.address:08x} ({len(seg.data)} bytes)")
            _listing(seg.address, seg.data, out)
    elif isinstance(program_or_words, (bytes, bytearray)):
        _listing(origin, bytes(program_or_words), out)
    else:
        data = b"".join((int(w) & 0xFFFF_FFFF).to_bytes(4, "big") for w in program_or_words)
        _listing(origin, data, out)
    return "\n".join(out)
