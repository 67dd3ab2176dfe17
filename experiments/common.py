"""Shared helpers of the experiments: output folders, JSON output, atomic file
writes, and the checked container every data file of the project is stored in.

Data files
----------
Every file the project writes or ships (calibrations, training checkpoints and
networks, the shipped test images, results) says what it is and is checked
completely on loading:

* an ``.npz`` archive holds its arrays and one ``header`` array, a 1-d uint8
  array of UTF-8 JSON (see :func:`write_archive`, :func:`read_archive`);
* a JSON file is one object (see :func:`write_json_file`,
  :func:`read_json_file`).

Both record ``kind`` (what the file is, e.g. ``"bss2sim-calibration"``),
``format_version`` (the layout of that kind) and ``sha256``, a checksum
(:func:`content_checksum`) over everything else in the file: every header field
and every array's name, dtype, shape and bytes. A loader refuses another kind,
another version, a checksum mismatch, missing or extra arrays or fields and
anything unreadable with a ``ValueError`` that names the file.

Writes are atomic: a temporary file in the same folder, flushed and synced,
then renamed over the target, so a reader sees the old file or the complete new
one. The temporary's name, ``.<target name>.<pid>-<random>.tmp``, says which
process wrote it; every write first removes those of the same target whose
process no longer runs (killed in the middle of a write), so they do not pile up.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import lzma
import math
import os
import re
import secrets
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from bss2sim.circuits.checks import WrongTypeError

try:
    import fcntl
except ImportError:         # not POSIX: no advisory locks
    fcntl = None

HEADER_NAME = "header"
"""Name of the header array in every archive."""

KINDS = {
    "bss2sim-calibration": "a chip calibration",
    "bss2sim-checkpoint": "a training checkpoint or trained network",
    "bss2sim-mnist-test-images": "the MNIST test images",
    "bss2sim-mnist-results": "the results of a bss2sim train run on MNIST",
    "bss2sim-training-results": "the results of a bss2sim train run on another data set",
    "bss2sim-sweep": "the table of a bss2sim sweep over chip seeds",
}
"""Every ``kind`` the project writes, with what it is (for error messages)."""

TEST_IMAGES_KIND = "bss2sim-mnist-test-images"
TEST_IMAGES_FORMAT_VERSION = 1
RESULTS_KIND = "bss2sim-mnist-results"
RESULTS_FORMAT_VERSION = 1
TRAINING_RESULTS_KIND = "bss2sim-training-results"
"""Kind of the results of a ``bss2sim train`` run on a data set other than MNIST."""

_BOOKKEEPING = ("kind", "format_version", "sha256")
_TEMP_SUFFIX = ".tmp"
_TEMP_TAG = re.compile(r"(\d{1,10})-[0-9a-f]{8}")

# What the zip, zlib/lzma/bz2 and npy layers raise on damaged input: a bad CRC
# or directory (BadZipFile), a broken deflate stream (zlib.error), truncation
# (EOFError, struct.error), an unsupported compression or encryption
# (NotImplementedError, RuntimeError), a bad npy header (ValueError,
# SyntaxError), an absurd size (OverflowError, MemoryError), a bz2 stream
# (OSError), a missing member (KeyError).
_UNREADABLE = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError,
               MemoryError, RuntimeError, SyntaxError, struct.error, zlib.error, lzma.LZMAError,
               zipfile.BadZipFile, zipfile.LargeZipFile)


# --- argument types of the command line ------------------------------------------------

MAX_LIST_VALUES = 20
"""Most numbers a comma-separated option takes (*assumed*: a guard against a
typo that would run for days; every study here uses a handful)."""


def int_range(option: str, lo: int, hi: int):
    """argparse type of an integer in ``lo..hi``; the message names the option,
    the bad value and the range."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r} is not an integer; allowed: {lo}..{hi}") \
                from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{option} {v} is not allowed: must be an integer in {lo}..{hi}")
        return v
    return parse


def check_reals(option, values, lo, hi, unit, max_values: int = MAX_LIST_VALUES) -> tuple:
    """``values`` as a sorted tuple of floats, each finite and within ``lo..hi``
    (``unit`` for the message), none twice, 1..``max_values`` of them; else
    ``ValueError`` (``WrongTypeError`` for a non-list) naming ``option``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise WrongTypeError(f"{option} {values!r} is not allowed: give a list of numbers in "
                             f"{lo:g}..{hi:g} {unit}")
    values = list(values)
    if not values:
        raise ValueError(f"{option} is empty: give at least one number in {lo:g}..{hi:g} {unit}")
    if len(values) > max_values:
        raise ValueError(f"{option} gives {len(values)} values; at most {max_values} are allowed")
    out = []
    for v in values:
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        if not ok or not math.isfinite(float(v)) or not lo <= float(v) <= hi:
            shown = f"{float(v):g}" if ok else repr(v)
            raise ValueError(f"{option} {shown} is not allowed: must be a number in {lo:g}..{hi:g} {unit}")
        out.append(float(v))
    twice = sorted({v for v in out if out.count(v) > 1})
    if twice:
        raise ValueError(f"{option} names {', '.join(f'{v:g}' for v in twice)} more than once")
    return tuple(sorted(out))


def parse_reals(option: str, lo: float, hi: float, unit: str, max_values: int = MAX_LIST_VALUES):
    """argparse type of a comma-separated list of numbers within ``lo..hi``
    (``--hours 0,1,24``), checked by :func:`check_reals`."""
    def parse(text):
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                values.append(float(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{option} {text!r}: {part!r} is not a number; give "
                                                 f"comma-separated numbers in {lo:g}..{hi:g} {unit}") from None
        try:
            return check_reals(option, values, lo, hi, unit, max_values)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def seed_list(max_seeds: int, option: str = "--seeds"):
    """argparse type of chip seeds: comma-separated seeds and inclusive ranges
    ``low-high`` (``0-99``, ``3``, ``1,5,7-9``); a bare number is that one seed;
    seeds are integers 0..2**64-1, none twice, at most ``max_seeds``."""
    def parse(text):
        seeds = []
        for part in str(text).split(","):
            part = part.strip()
            lo, sep, hi = part.partition("-")
            try:
                a = int(lo)
                b = int(hi) if sep else a
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{option} {text!r}: {part!r} is neither a chip seed nor a range low-high; seeds are "
                    "integers 0..18446744073709551615, e.g. 0-99 or 3,7,20-29") from None
            if not 0 <= a <= 2**64 - 1 or not 0 <= b <= 2**64 - 1:
                raise argparse.ArgumentTypeError(f"{option} {text!r}: {part!r} is not allowed: seeds are "
                                                 "integers 0..18446744073709551615")
            if b < a:
                raise argparse.ArgumentTypeError(f"{option} {text!r}: the range {part!r} is not allowed: "
                                                 "a range low-high needs low <= high")
            if b - a >= max_seeds or len(seeds) + b - a + 1 > max_seeds:
                raise argparse.ArgumentTypeError(f"{option} {text!r} names more than {max_seeds} chip "
                                                 f"seeds; allowed: 1..{max_seeds}")
            seeds.extend(range(a, b + 1))
        if len(set(seeds)) != len(seeds):
            raise argparse.ArgumentTypeError(f"{option} {text!r} names a chip seed more than once")
        return seeds
    return parse



def peak_memory_mib() -> float:
    """Peak resident set size of this process since it started, MiB (the
    kernel's ``ru_maxrss``: KiB on Linux, bytes on macOS); NaN where the
    platform has no ``resource`` module."""
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def as_path(name: str, value) -> Path:
    """``value`` (a str or an os.PathLike) as a Path; anything else is a
    WrongTypeError naming the parameter."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return Path(text)
        raise ValueError(f"{name}={value!r} is not allowed: an empty path")
    raise WrongTypeError(f"{name}={value!r} is not allowed: got a {type(value).__name__}, "
                         "must be a path (str or pathlib.Path)")


DEFAULT_OUTPUT_DIR = "bss2sim-output"
"""Folder (in the working directory) that the commands write their figures to
by default; never the repository's ``plots/``, whose figures the README shows."""


def readme_figures_dir() -> Path:
    """The source checkout's ``plots/`` folder, where the README's figures live
    (``--readme-figures`` writes there). Refused outside a source checkout."""
    root = Path(__file__).resolve().parent.parent
    plots = root / "plots"
    if not ((root / "pyproject.toml").is_file() and (root / "README.md").is_file() and plots.is_dir()):
        raise ValueError("--readme-figures regenerates the README's figures in a source checkout "
                         f"of bss2sim; this installation ({root}) is not one")
    return plots


def plots_dir(path) -> Path:
    """Create (if needed) and return the folder figures are written to."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


# --- atomic writes ---------------------------------------------------------------

def _writer_gone(pid: int) -> bool:
    """True only if process ``pid`` certainly does not run (on this machine)."""
    if os.name != "posix" or pid == os.getpid():
        return False        # no safe liveness test (os.kill would signal on Windows)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False        # it runs under another user, or the pid is impossible
    return False


def _lock(f) -> bool:
    """Take a non-blocking exclusive lock on an open file; False if another
    open file holds one. Without ``fcntl`` (or where the file system refuses
    locks) every lock succeeds."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def temporary_files(path) -> list:
    """The temporaries of writes of ``path`` now in its folder (of running
    writers and of killed ones), sorted by name."""
    path = as_path("path", path)
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / n for n in names
                  if n.startswith(prefix) and n.endswith(_TEMP_SUFFIX)
                  and _TEMP_TAG.fullmatch(n[len(prefix):-len(_TEMP_SUFFIX)]))


def remove_stale_temporaries(path) -> list:
    """Remove the temporaries of writes of ``path`` whose writing process no
    longer runs, and return their paths. A writer holds a lock on its temporary
    while it writes, so one whose pid looks free (another pid namespace, a
    shared folder) is left alone too. Best effort: errors are ignored."""
    removed = []
    prefix_len = len(f".{Path(path).name}.")
    for tmp in temporary_files(path):
        pid = int(_TEMP_TAG.fullmatch(tmp.name[prefix_len:-len(_TEMP_SUFFIX)])[1])
        if not _writer_gone(pid):
            continue
        try:
            with open(tmp, "rb") as f:
                if not _lock(f):
                    continue
                os.unlink(tmp)
            removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_write(path, write) -> Path:
    """Write a file atomically and return its path (parent folders are created).

    ``write(f)`` writes the content to the binary file object ``f``, a
    temporary file ``.<name>.<pid>-<random>.tmp`` in the same folder, which is
    then flushed, synced and renamed over ``path``. On any error (or
    interrupt) the old file stays and the temporary is removed; temporaries
    of earlier writes of ``path`` by processes that were killed are removed
    first (:func:`remove_stale_temporaries`)."""
    path = as_path("path", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    # O_EXCL: never write into another writer's file; 0o666 & ~umask: usual permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _lock(f)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename durable where the platform allows it (best effort).
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return path


def save_figure(fig, path: Path):
    """Write a matplotlib figure atomically (:func:`atomic_write`); the format
    follows the file name's suffix."""
    path = as_path("path", path)
    fmt = path.suffix[1:] or None
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=fmt))


def atomic_savez(path, arrays: dict, *, compress: bool = False) -> Path:
    """Write ``arrays`` as an .npz file atomically (:func:`atomic_write`),
    deflate-compressed with ``compress``."""
    def write(f):
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return atomic_write(path, write)


# --- checksums and headers -------------------------------------------------------

def canonical_json(obj) -> bytes:
    """The one byte form of a JSON value the checksums are computed over:
    sorted keys, no spaces, ASCII only (floats as Python's shortest repr, which
    reads back to the same float; NaN and infinities as ``NaN``, ``Infinity``)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def content_checksum(header: dict, arrays: dict | None = None) -> str:
    """SHA-256 (hex) over a file's header and arrays.

    Fed to the hash, each field prefixed by its length (8 bytes, little
    endian) so that no two different contents give the same stream: a tag of
    this checksum scheme, the canonical JSON (:func:`canonical_json`) of
    ``header`` without its ``sha256`` field, the number of arrays, then for
    each array in sorted name order its name, dtype string (with byte order),
    shape (JSON) and raw bytes in C order."""
    h = hashlib.sha256()

    def put(b: bytes):
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    arrays = arrays or {}
    put(b"bss2sim content checksum 1")
    put(canonical_json({k: v for k, v in header.items() if k != "sha256"}))
    put(str(len(arrays)).encode("ascii"))
    put_arrays(put, arrays)
    return h.hexdigest()


def put_arrays(put, arrays: dict):
    """Feed every array's name, dtype, shape and bytes, in name order, to
    ``put`` (a length-prefixing hash update): two different sets of arrays never
    give the same byte stream."""
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        put(name.encode("utf-8"))
        put(a.dtype.str.encode("ascii"))
        put(json.dumps(list(a.shape)).encode("ascii"))
        put(a.tobytes())


def _read_file(path, where: str) -> bytes:
    """All bytes of a regular file; ``ValueError`` naming ``where`` otherwise."""
    path = as_path("path", path)
    try:
        if not path.is_file():
            raise ValueError(f"{where} does not exist" if not path.exists()
                             else f"{where} is not a regular file")
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{where} cannot be read: {e}") from None


def no_duplicate_keys(pairs):
    """``object_pairs_hook`` of ``json.loads`` that refuses a key given twice
    (a JSON header must say one thing per field)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} occurs twice")
        out[k] = v
    return out


def _parse_json(data: bytes, where: str, what_part: str):
    """Parse UTF-8 JSON text that must be an object; repeated keys are refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: {what_part} is not UTF-8 text: {e}") from None
    try:
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{where}: {what_part} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: {what_part} is a JSON {type(obj).__name__}, not an object")
    return obj


def _check_header(header: dict, where: str, kind: str, format_version: int, fields, what: str,
                  old_hint: str):
    """Kind, format version, the exact set of fields and the checksum's form."""
    if "kind" not in header:
        old = header.get("magic")
        if isinstance(old, str) and old.startswith("bss2sim-"):
            raise ValueError(f"{where} is in an old bss2sim file format (it names itself "
                             f"{old!r} under 'magic' and has no 'kind'), which this code does not "
                             f"read; {old_hint}")
        raise ValueError(f"{where} does not say what kind of file it is (no 'kind' in its "
                         f"header): it is not {what}, or an older bss2sim that recorded no kind "
                         f"wrote it ({old_hint})")
    found = header["kind"]
    if found != kind:
        desc = f" ({KINDS[found]})" if isinstance(found, str) and found in KINDS else ""
        raise ValueError(f"{where} is a file of kind {found!r}{desc}, not of kind {kind!r} "
                         f"({what}); another kind of file was given (or renamed or copied "
                         "over this one)")
    if "format_version" not in header:
        raise ValueError(f"{where}: the header lacks format_version")
    v = header["format_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: format_version {v!r} is not an integer")
    if v > format_version:
        raise ValueError(f"{where} has format_version {v}, which is newer than this code reads "
                         f"(only version {format_version}); update bss2sim to read it")
    if v < format_version:
        raise ValueError(f"{where} has format_version {v}, which is older than this code reads "
                         f"(only version {format_version}); {old_hint}")
    expected = set(_BOOKKEEPING) | set(fields)
    missing = [k for k in (*_BOOKKEEPING, *fields) if k not in header]
    extra = sorted(set(header) - expected)
    if missing:
        raise ValueError(f"{where}: the header lacks {', '.join(missing)}")
    if extra:
        raise ValueError(f"{where}: the header has unexpected field(s) {', '.join(extra)}; it is "
                         f"not {what} of format version {v} as bss2sim writes it")
    s = header["sha256"]
    if not isinstance(s, str) or not re.fullmatch(r"[0-9a-f]{64}", s):
        raise ValueError(f"{where}: the header's sha256 {s!r} is not a SHA-256 hex digest")


def _verify(header: dict, arrays: dict, where: str, what_parts: str):
    if content_checksum(header, arrays) != header["sha256"]:
        raise ValueError(f"{where} is corrupt: the SHA-256 checksum of its {what_parts} does not "
                         "match the one it records (damaged, or edited after it was written)")


# --- archives (.npz) -----------------------------------------------------------

def _read_npy(raw: bytes) -> np.ndarray:
    """One .npy member; its declared size must be exactly the data it holds,
    so that a damaged shape neither reads past the data nor allocates a huge array."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"npy format version {version} is not supported")
    if dtype.hasobject:
        raise ValueError(f"it holds Python objects (dtype {dtype}), which are never loaded")
    count = math.prod(shape)
    size = len(raw) - f.tell()
    if size != count * dtype.itemsize:
        raise ValueError(f"it holds {size} bytes of data but its header declares shape {shape} "
                         f"of {dtype} ({count * dtype.itemsize} bytes)")
    a = np.frombuffer(raw, dtype=dtype, count=count, offset=f.tell())
    a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return np.array(a, order="C")


def read_npz_arrays(path, where: str, header_name: str = HEADER_NAME, what: str = "a bss2sim") -> dict:
    """Every array of an .npz file, read without pickles. Anything unreadable
    (missing, empty, not a zip, truncated, a lone .npy, a member that is not
    an .npy array or occurs twice, no ``header_name`` array, a bad CRC or
    compressed stream, a damaged .npy header) raises ``ValueError`` naming
    ``where``; ``what`` says what was expected ("a calibration")."""
    data = _read_file(path, where)
    if not data:
        raise ValueError(f"{where} is not an .npz (zip) file: it is empty")
    if not data.startswith(b"PK\x03\x04"):
        raise ValueError(f"{where} is not an .npz (zip) file: it is truncated or holds other data")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except _UNREADABLE as e:
        raise ValueError(f"{where} is not a readable .npz file (truncated or corrupt?): {e}") from None
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ValueError(f"{where} is corrupt: it holds an array name twice")
    for n in names:
        if not n.endswith(".npy") or len(n) == 4:
            raise ValueError(f"{where} holds a member {n!r} that is not an .npy array; it is not "
                             f"{what} file")
    if header_name + ".npy" not in names:
        raise ValueError(f"{where} has no header (array {header_name!r}): it is not {what} file "
                         "written by this version of bss2sim")
    arrays = {}
    for info in infos:
        name = info.filename[:-4]
        try:
            arrays[name] = _read_npy(zf.read(info))
        except _UNREADABLE as e:
            raise ValueError(f"{where} is corrupt: array {name!r} cannot be read: {e}") from None
    return arrays


def write_archive(path, kind: str, format_version: int, fields: dict, arrays: dict, *,
                  compress: bool = False) -> Path:
    """Write arrays and header fields as a checked .npz archive, atomically.

    The header is ``kind``, ``format_version``, ``fields`` (plain JSON values;
    they are stored as JSON reads them back) and ``sha256``, the
    :func:`content_checksum` of header and arrays. ``arrays`` must not be named
    like the header. Returns the path."""
    if HEADER_NAME in arrays:
        raise ValueError(f"an array may not be named {HEADER_NAME!r}")
    clash = [k for k in _BOOKKEEPING if k in fields]
    if clash:
        raise ValueError(f"header field(s) {', '.join(clash)} are set by write_archive")
    header = json.loads(json.dumps({"kind": kind, "format_version": format_version, **fields}))
    stored = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    header["sha256"] = content_checksum(header, stored)
    stored[HEADER_NAME] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    return atomic_savez(path, stored, compress=compress)


def read_archive(path, *, kind: str, format_version: int, fields, what: str, where: str | None = None,
                 array_names=None, old_hint: str = "write it again with this version of bss2sim"):
    """Read and check an archive written by :func:`write_archive`.

    Parameters
    ----------
    kind, format_version : what the file must be.
    fields : the header fields it must have besides ``kind``,
        ``format_version`` and ``sha256`` (no others).
    what : what is expected, for messages ("a calibration").
    where : how messages name the file (default: ``what`` and the path).
    array_names : the names the arrays must have (a set, or a function of the
        header that returns one and raises ``ValueError`` on a bad header);
        None leaves the names to the caller.
    old_hint : what to do about an older format.

    Returns
    -------
    (header, arrays) : the header dict (all fields) and the arrays by name,
        after the checksum was verified.
    """
    where = where if where is not None else f"{what} file {str(path)!r}"
    arrays = read_npz_arrays(path, where, HEADER_NAME, what)
    raw = arrays.pop(HEADER_NAME)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{where}: the header has dtype {raw.dtype} and shape {raw.shape}; "
                         "expected a 1-d uint8 array of UTF-8 JSON")
    header = _parse_json(raw.tobytes(), where, "the header")
    _check_header(header, where, kind, format_version, fields, what, old_hint)
    names = array_names(header) if callable(array_names) else array_names
    if names is not None:
        missing = sorted(set(names) - set(arrays))
        extra = sorted(set(arrays) - set(names))
        if missing:
            raise ValueError(f"{where} lacks the array(s) {', '.join(missing)}")
        if extra:
            raise ValueError(f"{where} has unexpected array(s) {', '.join(extra)}")
    _verify(header, arrays, where, "header and arrays")
    return header, arrays


# --- JSON files -----------------------------------------------------------------

def write_json_file(path, kind: str, format_version: int, obj: dict) -> Path:
    """Write a JSON object with ``kind``, ``format_version`` and ``sha256``
    (the :func:`content_checksum` of everything else) added, atomically and
    indented for reading. numpy scalars and arrays become plain JSON."""
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON file holds an object, not a {type(obj).__name__}")
    clash = [k for k in _BOOKKEEPING if k in obj]
    if clash:
        raise ValueError(f"field(s) {', '.join(clash)} are set by write_json_file")
    content = json.loads(json.dumps({"kind": kind, "format_version": format_version, **obj},
                                    default=_jsonable))
    content["sha256"] = content_checksum(content)
    text = json.dumps(content, indent=1, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json_file(path, *, kind: str, format_version: int, what: str, where: str | None = None,
                   fields=None, old_hint: str = "write it again with this version of bss2sim") -> dict:
    """Read and check a file written by :func:`write_json_file`; returns the
    object without ``kind``, ``format_version`` and ``sha256``. ``fields``
    (optional) are the fields it must hold, no others. Every problem is a
    ``ValueError`` naming the file."""
    where = where if where is not None else f"{what} file {str(path)!r}"
    data = _read_file(path, where)
    if not data.strip():
        raise ValueError(f"{where} is empty")
    obj = _parse_json(data, where, "the file")
    if fields is None:
        fields = [k for k in obj if k not in _BOOKKEEPING]
    _check_header(obj, where, kind, format_version, fields, what, old_hint)
    _verify(obj, {}, where, "content")
    return {k: v for k, v in obj.items() if k not in _BOOKKEEPING}


# --- the shipped MNIST test images -------------------------------------------

def save_test_images(path, images, labels, source: str) -> Path:
    """Write MNIST test images (uint8 (n, 28, 28), grey levels 0..255) and
    labels (uint8 (n,), digits 0..9) as a checked, compressed archive of kind
    ``bss2sim-mnist-test-images``; ``source`` says where they came from."""
    images, labels = np.asarray(images), np.asarray(labels)
    _check_test_images(images, labels, "the test images to save")
    return write_archive(path, TEST_IMAGES_KIND, TEST_IMAGES_FORMAT_VERSION,
                         {"count": int(len(labels)), "source": str(source)},
                         {"images": images, "labels": labels}, compress=True)


def load_test_images(path):
    """``(images, labels)`` from a file written by :func:`save_test_images`,
    fully checked (``ValueError`` naming the file otherwise)."""
    where = f"test image file {str(path)!r}"
    header, arrays = read_archive(path, kind=TEST_IMAGES_KIND, format_version=TEST_IMAGES_FORMAT_VERSION,
                                  fields=("count", "source"), what="the MNIST test images", where=where,
                                  array_names={"images", "labels"})
    images, labels = arrays["images"], arrays["labels"]
    _check_test_images(images, labels, where)
    n = header["count"]
    if n != len(labels):
        raise ValueError(f"{where}: the header says {n!r} images but the file holds {len(labels)}")
    return images, labels


def _check_test_images(images, labels, where):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{where}: images have dtype {images.dtype} and shape {images.shape}; "
                         "expected uint8 (n, 28, 28)")
    if labels.dtype != np.uint8 or labels.shape != (len(images),) or len(images) == 0:
        raise ValueError(f"{where}: labels have dtype {labels.dtype} and shape {labels.shape}; "
                         f"expected uint8 ({len(images)},), at least one")
    if labels.max() > 9:
        raise ValueError(f"{where}: a label is {int(labels.max())}; digits are 0..9")


# --- results of a training run ------------------------------------------------

def save_results(path, results: dict, kind: str = RESULTS_KIND) -> Path:
    """Write the results of a ``bss2sim train`` run (a JSON object) as a checked
    JSON file, atomically: of kind ``bss2sim-mnist-results`` for MNIST, or
    :data:`TRAINING_RESULTS_KIND` for any other data set."""
    if kind not in (RESULTS_KIND, TRAINING_RESULTS_KIND):
        raise ValueError(f"kind={kind!r} is not a results kind; use {RESULTS_KIND!r} or "
                         f"{TRAINING_RESULTS_KIND!r}")
    return write_json_file(path, kind, RESULTS_FORMAT_VERSION, results)


def load_results(path, kind: str = RESULTS_KIND) -> dict:
    """The results written by :func:`save_results` (of ``kind``), checked
    (``ValueError`` naming the file if it is damaged, edited or another kind)."""
    what = "MNIST results" if kind == RESULTS_KIND else "training results"
    return read_json_file(path, kind=kind, format_version=RESULTS_FORMAT_VERSION,
                          what=what, where=f"results file {str(path)!r}",
                          old_hint="run bss2sim train again to write it in the current format")


# --- output ---------------------------------------------------------------------

_JSON_STREAM = None
"""Where :func:`emit_json` writes while a command runs with ``--json`` (the
real stdout; everything else printed meanwhile goes to stderr)."""


@contextlib.contextmanager
def json_only_stdout():
    """With ``--json``: human text goes to stderr and stdout holds only the JSON object."""
    global _JSON_STREAM
    real = sys.stdout
    _JSON_STREAM = real
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _JSON_STREAM = None


def emit_json(obj):
    """Print one JSON object as the last line of stdout."""
    stream = _JSON_STREAM if _JSON_STREAM is not None else sys.stdout
    sys.stdout.flush()
    print(json.dumps(obj, default=_jsonable), file=stream, flush=True)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def note(msg: str):
    """A progress line on stderr (stdout stays for results)."""
    print(msg, file=sys.stderr, flush=True)
