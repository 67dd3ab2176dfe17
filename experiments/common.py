"""Shared helpers of the experiments: output folders, JSON output, and a
standard chip with random weights."""
from __future__ import annotations

import json
import os
import sys
import tempfile
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
