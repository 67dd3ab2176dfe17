"""Shared helpers of the experiments: output folders, JSON output, and a
standard chip with random weights."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np


def plots_dir(path) -> Path:
    """Create (if needed) and return the folder figures are written to."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def save_figure(fig, path: Path):
    """Write a matplotlib figure atomically (temporary file, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_savez(path, arrays: dict) -> Path:
    """Write ``arrays`` as an .npz file atomically: a temporary file in the same
    folder, flushed and synced, then renamed over ``path``; on any error the old
    file stays and the temporary one is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                # mkstemp creates 0600; give the file the usual permissions.
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(f.fileno(), 0o666 & ~umask)
            np.savez(f, **arrays)
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


def read_npz_arrays(path, where: str, header_name: str, what: str) -> dict:
    """Every array of an .npz file written by :func:`atomic_savez`, read with
    ``allow_pickle=False``. Anything unreadable (missing, not a zip, truncated,
    a lone .npy, a repeated name, no ``header_name`` array, an array whose data
    is corrupt) raises ``ValueError`` naming ``where``; ``what`` says what kind of
    file was expected ("a calibration", "a checkpoint")."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{where} does not exist")
    if not path.is_file():
        raise ValueError(f"{where} is not a regular file")
    # np.load and the zip layer raise all of these for damaged files.
    unreadable = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError,
                  NotImplementedError)
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as e:
        raise ValueError(f"{where} cannot be read: {e}") from e
    if start != b"PK\x03\x04":
        raise ValueError(f"{where} is not an .npz (zip) file: it is empty, truncated or "
                         "holds other data")
    try:
        npz = np.load(path, allow_pickle=False)
    except unreadable as e:
        raise ValueError(f"{where} is not a readable .npz file (truncated or corrupt?): {e}") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is a single .npy array, not {what} .npz file")
    arrays = {}
    with npz:
        names = list(npz.files)
        if len(set(names)) != len(names):
            raise ValueError(f"{where} is corrupt: it holds an array name twice")
        if header_name not in names:
            raise ValueError(f"{where} has no header (array {header_name!r}); it is not {what} file")
        for name in names:
            try:
                arrays[name] = npz[name]
            except unreadable as e:
                raise ValueError(f"{where} is corrupt: array {name!r} cannot be read: {e}") from e
    return arrays


def emit_json(obj):
    """Print one JSON object as the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(obj, default=_jsonable))


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
