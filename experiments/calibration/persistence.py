"""Saving and loading calibration results.

A calibration result is one ``.npz`` file per chip seed and target set (see
:func:`calibration_filename`). It holds the calibrated settings of a
:class:`~bss2sim.circuits.chip.ChipConfig` -- driver offsets, CADC digital offsets and
every capmem parameter in ``CAPMEM_PARAMETERS`` -- but no weights or row signs,
which belong to the network, not to the calibration.

File layout (kind ``"bss2sim-calibration"``, ``FORMAT_VERSION`` 2), a checked
archive of :func:`bss2sim.experiments.common.write_archive`, one array per ``.npy``
member:

* ``driver_offset``        uint8 (2, 128)
* ``cadc_digital_offset``  int16 (2, 256)
* ``capmem.<name>``        int16, the parameter's shape, one per capmem parameter
* ``header``               uint8 (n,): UTF-8 JSON object with ``kind``,
  ``format_version``, ``chip_seed``, ``target_id``, ``metadata`` (any JSON
  object) and ``sha256``, the checksum
  (:func:`bss2sim.experiments.common.content_checksum`) over all other header
  fields and all arrays.

Version 1 (before bss2sim recorded ``kind``) named the kind ``magic`` and its
checksum covered the arrays only (:func:`settings_checksum`); it is refused.

Files are written atomically (temporary file in the same folder, fsync, rename),
so a reader sees either the old file or the complete new one. Loading checks
everything it can and refuses anything wrong with a ``ValueError`` naming the
file and the problem.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bss2sim.circuits import constants as K
from bss2sim.circuits.chip import CAPMEM_PARAMETERS, ChipConfig
from bss2sim.circuits.params import PRESETS

from ..common import as_path, put_arrays, read_archive, write_archive

__all__ = [
    "FORMAT_VERSION", "KIND", "MAGIC", "CalibrationFile", "calibration_filename",
    "calibration_settings", "expected_layout", "read_calibration", "save_calibration",
    "settings_checksum",
]

FORMAT_VERSION = 2
"""Version of the file layout this module writes and the only one it reads."""

KIND = "bss2sim-calibration"
"""Value of the header's ``kind`` field."""
MAGIC = KIND
"""Former name of :data:`KIND`."""

CAPMEM_PREFIX = "capmem."

_TARGET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FIELDS = ("chip_seed", "target_id", "metadata")
_OLD_HINT = "recalibrate the chip (bss2sim calibrate) to write it in the current format"


# --- layout -----------------------------------------------------------------

def expected_layout() -> dict:
    """Name -> (dtype, shape, lo, hi) of every settings array a calibration file
    holds, for the capmem parameters that exist now."""
    layout = {
        "driver_offset": (np.dtype(np.uint8), (K.NUM_HALVES, K.DRIVERS_PER_HALF),
                          0, K.DRIVER_OFFSET_MAX),
        "cadc_digital_offset": (np.dtype("<i2"), (K.NUM_HALVES, K.COLUMNS_PER_HALF),
                                K.CADC_DIGITAL_OFFSET_MIN, K.CADC_DIGITAL_OFFSET_MAX),
    }
    for p in CAPMEM_PARAMETERS.values():
        layout[CAPMEM_PREFIX + p.name] = (np.dtype("<i2"), tuple(p.shape), 0, K.CAPMEM_MAX)
    return layout


def calibration_settings(config: ChipConfig) -> dict:
    """The calibrated settings of a configuration as name -> array (copies in
    the file's dtypes): driver offsets, CADC digital offsets, all capmem arrays."""
    if not isinstance(config, ChipConfig):
        raise ValueError(f"config={config!r} is not a bss2sim.circuits.ChipConfig")
    layout = expected_layout()
    settings = {
        "driver_offset": np.asarray(config.driver_offset),
        "cadc_digital_offset": np.asarray(config.cadc_digital_offset),
    }
    for name in CAPMEM_PARAMETERS:
        settings[CAPMEM_PREFIX + name] = np.asarray(config.capmem(name))
    return {k: np.ascontiguousarray(v, dtype=layout[k][0]) for k, v in settings.items()}


def settings_checksum(arrays: dict) -> str:
    """SHA-256 (hex) over name, dtype, shape and raw bytes of every array, in
    sorted name order. Each field is length-prefixed so that no two different
    sets of arrays give the same byte stream. This was the whole checksum of
    format version 1 (it did not cover the header); files now carry
    :func:`bss2sim.experiments.common.content_checksum`."""
    h = hashlib.sha256()

    def put(b: bytes):
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    put_arrays(put, arrays)
    return h.hexdigest()


def calibration_filename(chip_seed: int, target_id: str, preset: str = "default") -> str:
    """File name of the calibration of one chip for one target set, e.g.
    ``bss2-calibration-seed3-default.npz``; a chip of another effect preset
    than ``"default"`` (``Chip(seed, preset=...)``) gets its own file,
    ``bss2-calibration-seed3-default-harsh.npz``: the effects differ, so
    its calibration does too."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    suffix = "" if preset == "default" else f"-{preset}"
    return f"bss2-calibration-seed{_check_seed(chip_seed)}-{_check_target(target_id)}{suffix}.npz"


def _check_seed(chip_seed, what="chip_seed"):
    if isinstance(chip_seed, (bool, np.bool_)) or not isinstance(chip_seed, (int, np.integer)) \
            or chip_seed < 0:
        raise ValueError(f"{what}={chip_seed!r} is not allowed: must be an integer >= 0")
    return int(chip_seed)


def _check_target(target_id, what="target_id"):
    if not isinstance(target_id, str) or not _TARGET_ID.fullmatch(target_id):
        raise ValueError(f"{what}={target_id!r} is not allowed: must be a non-empty string of "
                         "letters, digits, '.', '_' or '-' that starts with a letter or digit")
    return target_id


def _jsonable(x, where):
    """Convert metadata to plain JSON types (numpy scalars and arrays included)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"metadata{where} is an array of dtype {x.dtype}, which cannot "
                             "be stored as JSON")
        x = x.tolist()
    elif isinstance(x, np.generic):
        x = x.item()
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise ValueError(f"metadata{where} has key {k!r}; JSON keys must be strings")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(x)]
    raise ValueError(f"metadata{where} has type {type(x).__name__}, which cannot be stored as JSON")


def _check_settings(settings: dict, where: str) -> dict:
    """Check names, dtypes, shapes and ranges against :func:`expected_layout`."""
    layout = expected_layout()
    missing = [n for n in layout if n not in settings]
    extra = sorted(n for n in settings if n not in layout)
    if missing:
        raise ValueError(f"{where} lacks the array(s) {', '.join(missing)}")
    if extra:
        raise ValueError(f"{where} has unexpected array(s) {', '.join(extra)}; expected "
                         f"{', '.join(layout)}")
    out = {}
    for name, (dtype, shape, lo, hi) in layout.items():
        a = settings[name]
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{where}: {name} is a {type(a).__name__}, not an array")
        if a.dtype != dtype:
            raise ValueError(f"{where}: {name} has dtype {a.dtype}; expected {dtype}")
        if a.shape != shape:
            raise ValueError(f"{where}: {name} has shape {a.shape}; expected {shape}")
        bad = (a < lo) | (a > hi)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{where}: {name}{list(idx)}={a[idx]} is out of range {lo}..{hi}")
        a = np.array(a, dtype=dtype, copy=True)
        a.setflags(write=False)
        out[name] = a
    return out


# --- the loaded file ----------------------------------------------------------

@dataclass(frozen=True)
class CalibrationFile:
    """A loaded (and fully checked) calibration result.

    ``settings`` maps ``driver_offset``, ``cadc_digital_offset`` and
    ``capmem.<name>`` to read-only arrays."""

    chip_seed: int
    target_id: str
    metadata: dict
    format_version: int
    settings: dict = field(repr=False)

    def apply(self, config: ChipConfig) -> None:
        """Write the settings into ``config`` through its validating setters.
        Weights, row signs and other settings of ``config`` are left alone. If
        any value is refused, ``config`` is left unchanged."""
        if not isinstance(config, ChipConfig):
            raise ValueError(f"config={config!r} is not a bss2sim.circuits.ChipConfig")
        self._write(ChipConfig())   # dry run: raises before touching config
        self._write(config)

    def _write(self, config):
        s = self.settings
        layout = expected_layout()
        unknown = sorted(set(s) - set(layout))
        if unknown:
            raise ValueError(f"calibration for chip seed {self.chip_seed}, target "
                             f"{self.target_id!r} has settings {', '.join(unknown)} that "
                             "this chip model does not know")
        for half in range(K.NUM_HALVES):
            config.set_driver_offsets(half, s["driver_offset"][half])
            config.set_cadc_digital_offsets(half, s["cadc_digital_offset"][half])
        for name in layout:
            if name.startswith(CAPMEM_PREFIX):
                config.set_capmem(name[len(CAPMEM_PREFIX):], s[name])


# --- saving -------------------------------------------------------------------

def save_calibration(path, config: ChipConfig, *, chip_seed: int, target_id: str,
                     metadata: dict) -> Path:
    """Write the calibrated settings of ``config`` to ``path`` atomically and
    return the path. Parent folders are created. ``metadata`` is a dict that can
    be stored as JSON once numpy scalars and arrays are converted."""
    path = as_path("path", path)
    chip_seed = _check_seed(chip_seed)
    target_id = _check_target(target_id)
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, not {type(metadata).__name__}")
    settings = _check_settings(calibration_settings(config), "configuration")
    fields = {"chip_seed": chip_seed, "target_id": target_id, "metadata": _jsonable(metadata, "")}
    return write_archive(path, KIND, FORMAT_VERSION, fields, settings)


# --- loading ------------------------------------------------------------------

def read_calibration(path, *, chip_seed: int | None = None,
                     target_id: str | None = None) -> CalibrationFile:
    """Read and check a calibration file. With ``chip_seed`` / ``target_id``
    given, also refuse a file made for another chip or target set. (To apply
    a calibration to a chip, found in the store, use
    :func:`bss2sim.experiments.calibration.load_calibration`.)"""
    path = as_path("path", path)
    if chip_seed is not None:
        chip_seed = _check_seed(chip_seed)
    if target_id is not None:
        target_id = _check_target(target_id)
    where = f"calibration file {str(path)!r}"
    layout = expected_layout()
    header, arrays = read_archive(path, kind=KIND, format_version=FORMAT_VERSION, fields=_FIELDS,
                                  what="a calibration", where=where, old_hint=_OLD_HINT)
    missing = [n for n in layout if n not in arrays]
    extra = sorted(n for n in arrays if n not in layout)
    if missing:
        raise ValueError(f"{where} lacks the array(s) {', '.join(missing)} (made with other "
                         "capmem parameters? recalibrate the chip)")
    if extra:
        raise ValueError(f"{where} has unexpected array(s) {', '.join(extra)}")
    try:
        _check_seed(header["chip_seed"], "chip_seed in the header")
        _check_target(header["target_id"], "target_id in the header")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if not isinstance(header["metadata"], dict):
        raise ValueError(f"{where}: metadata in the header is not a JSON object")
    settings = _check_settings(arrays, where)

    if chip_seed is not None and header["chip_seed"] != chip_seed:
        raise ValueError(f"{where}: calibration is for chip seed {header['chip_seed']}, "
                         f"not {chip_seed}")
    if target_id is not None and header["target_id"] != target_id:
        raise ValueError(f"{where}: calibration is for target {header['target_id']!r}, "
                         f"not {target_id!r}")
    return CalibrationFile(chip_seed=header["chip_seed"], target_id=header["target_id"],
                           metadata=header["metadata"], format_version=header["format_version"],
                           settings=settings)
