"""Saving and loading calibration results (bss2sim.experiments.calibration.persistence)."""
import dataclasses
import io
import json
import os
import zipfile

import numpy as np
import pytest

from bss2sim.circuits import constants as K
from bss2sim.circuits.chip import CAPMEM_PARAMETERS, CapmemParameter, ChipConfig
from bss2sim.experiments import common
from bss2sim.experiments.calibration import persistence as P


def _random_config(seed=0):
    """A configuration with random valid calibrated settings (and weights)."""
    rng = np.random.default_rng(seed)
    cfg = ChipConfig()
    for half in range(K.NUM_HALVES):
        cfg.set_driver_offsets(half, rng.integers(0, K.DRIVER_OFFSET_MAX + 1, K.DRIVERS_PER_HALF))
        cfg.set_cadc_digital_offsets(half, rng.integers(
            K.CADC_DIGITAL_OFFSET_MIN, K.CADC_DIGITAL_OFFSET_MAX + 1, K.COLUMNS_PER_HALF))
        cfg.set_weights(half, rng.integers(0, K.WEIGHT_MAX + 1,
                                           (K.SYNAPSE_ROWS_PER_HALF, K.COLUMNS_PER_HALF)))
    for p in CAPMEM_PARAMETERS.values():
        cfg.set_capmem(p.name, rng.integers(0, K.CAPMEM_MAX + 1, p.shape))
    return cfg


def _save(folder, cfg=None, seed=3, target="default", metadata=None):
    path = folder / P.calibration_filename(seed, target)
    return P.save_calibration(path, cfg if cfg is not None else _random_config(),
                              chip_seed=seed, target_id=target,
                              metadata=metadata if metadata is not None else {"note": "test"})


def _assert_same_settings(a, b):
    np.testing.assert_array_equal(a.driver_offset, b.driver_offset)
    np.testing.assert_array_equal(a.cadc_digital_offset, b.cadc_digital_offset)
    for name in CAPMEM_PARAMETERS:
        np.testing.assert_array_equal(a.capmem(name), b.capmem(name), err_msg=name)


def _rewrite(path, arrays=None, header=None, drop=(), recompute_checksum=True):
    """Rewrite a calibration file with some arrays or header fields changed.
    With ``recompute_checksum`` the checksum fits the new arrays, so the check
    under test is the one that fires, not the checksum."""
    with np.load(path, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    head = json.loads(stored.pop("header").tobytes().decode("utf-8"))
    stored.update(arrays or {})
    for k in drop:
        if k != "header":
            stored.pop(k)
    head.update(header or {})
    if recompute_checksum:
        head["sha256"] = common.content_checksum(head, stored)
    if "header" not in drop:
        stored["header"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **stored)


# --- round trip -------------------------------------------------------------

def test_round_trip_restores_every_setting(tmp_path):
    cfg = _random_config(1)
    path = _save(tmp_path, cfg, seed=3, target="vmm-default")
    assert path.name == "bss2-calibration-seed3-vmm-default.npz"
    cal = P.read_calibration(path, chip_seed=3, target_id="vmm-default")
    assert (cal.chip_seed, cal.target_id, cal.format_version) == (3, "vmm-default", P.FORMAT_VERSION)
    fresh = ChipConfig()
    assert not np.array_equal(fresh.driver_offset, cfg.driver_offset)
    version = fresh.version
    cal.apply(fresh)
    _assert_same_settings(fresh, cfg)
    assert fresh.version != version              # written through the setters
    # A calibration carries no weights or row signs.
    np.testing.assert_array_equal(fresh.weights, ChipConfig().weights)
    np.testing.assert_array_equal(fresh.row_sign, ChipConfig().row_sign)


def test_apply_leaves_weights_and_row_signs_alone(tmp_path):
    cal = P.read_calibration(_save(tmp_path, _random_config(2)))
    target = _random_config(7)
    weights, signs = np.array(target.weights), np.array(target.row_sign)
    cal.apply(target)
    np.testing.assert_array_equal(target.weights, weights)
    np.testing.assert_array_equal(target.row_sign, signs)
    _assert_same_settings(target, _random_config(2))


def test_file_holds_settings_and_header_only(tmp_path):
    path = _save(tmp_path)
    names = set(zipfile.ZipFile(path).namelist())
    expected = {"driver_offset.npy", "cadc_digital_offset.npy", "header.npy"} \
        | {f"capmem.{n}.npy" for n in CAPMEM_PARAMETERS}
    assert names == expected
    header = json.loads(np.load(path)["header"].tobytes())
    assert header["kind"] == "bss2sim-calibration" and "magic" not in header
    assert header["format_version"] == P.FORMAT_VERSION == 2 and header["chip_seed"] == 3
    assert header["sha256"] == common.content_checksum(header, P.calibration_settings(_random_config()))


def test_metadata_round_trip_converts_numpy_values(tmp_path):
    meta = {"residual_lsb": np.float64(0.25), "iterations": np.int32(7), "ok": np.bool_(True),
            "per_half": np.array([1.5, 2.5], np.float32), "nested": {"steps": (1, np.int64(2))},
            "note": "drift ok \u00fc", "nothing": None, "nan": float("nan")}
    cal = P.read_calibration(_save(tmp_path, metadata=meta))
    m = cal.metadata
    assert m["residual_lsb"] == 0.25 and type(m["residual_lsb"]) is float
    assert m["iterations"] == 7 and type(m["iterations"]) is int
    assert m["ok"] is True
    assert m["per_half"] == [1.5, 2.5]
    assert m["nested"] == {"steps": [1, 2]}
    assert m["note"] == "drift ok \u00fc" and m["nothing"] is None
    assert np.isnan(m["nan"])


def test_loaded_file_is_frozen_and_read_only(tmp_path):
    cal = P.read_calibration(_save(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.chip_seed = 5
    assert all(not a.flags.writeable for a in cal.settings.values())
    assert set(cal.settings) == set(P.expected_layout())


def test_new_capmem_parameter_is_saved_generically(tmp_path, monkeypatch):
    old = _save(tmp_path, seed=1)                      # made before the parameter existed
    monkeypatch.setitem(CAPMEM_PARAMETERS, "test_extra_bias",
                        CapmemParameter("test_extra_bias", "current", "quadrant", 100, "test"))
    cfg = _random_config(4)
    assert cfg.capmem("test_extra_bias").shape == (2, 2)
    cal = P.read_calibration(_save(tmp_path, cfg, seed=2))
    assert "capmem.test_extra_bias" in cal.settings
    fresh = ChipConfig()
    cal.apply(fresh)
    _assert_same_settings(fresh, cfg)
    with pytest.raises(ValueError, match="lacks the array.*capmem.test_extra_bias"):
        P.read_calibration(old)


# --- atomic writes ----------------------------------------------------------

def test_save_creates_folders_and_leaves_no_temp_files(tmp_path):
    path = _save(tmp_path / "a" / "b")
    assert path.exists()
    assert os.listdir(path.parent) == [path.name]


def test_overwrite_replaces_the_file(tmp_path):
    _save(tmp_path, _random_config(1))
    path = _save(tmp_path, _random_config(2))
    fresh = ChipConfig()
    P.read_calibration(path).apply(fresh)
    _assert_same_settings(fresh, _random_config(2))
    assert os.listdir(tmp_path) == [path.name]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = _save(tmp_path, _random_config(1))
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(P.np, "savez", broken_savez)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, _random_config(2))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    monkeypatch.undo()
    fresh = ChipConfig()
    P.read_calibration(path).apply(fresh)
    _assert_same_settings(fresh, _random_config(1))


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = _save(tmp_path, _random_config(1))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(common.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, _random_config(2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


# --- refusing bad files -----------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="nope.npz.*does not exist"):
        P.read_calibration(tmp_path / "nope.npz")


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.01, 0.3, 0.5, 0.9, 0.999, -1])
def test_truncated_file(tmp_path, keep):
    path = _save(tmp_path)
    data = path.read_bytes()
    n = len(data) - 1 if keep == -1 else int(len(data) * keep)
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match=f"{path.name}.*(not an .npz|not a readable|corrupt)"):
        P.read_calibration(path)


@pytest.mark.parametrize("content", [
    b"garbage" * 100,
    bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
    b"PK\x03\x04" + bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
])
def test_garbage_bytes(tmp_path, content):
    path = tmp_path / "cal.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cal.npz.*(not an .npz|not a readable)"):
        P.read_calibration(path)


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "cal.npz"
    buf = io.BytesIO()
    np.save(buf, np.arange(4))
    path.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="not an .npz"):
        P.read_calibration(path)


def test_flipped_byte_in_array_data(tmp_path):
    cfg = _random_config(5)
    path = _save(tmp_path, cfg)
    data = bytearray(path.read_bytes())
    raw = np.ascontiguousarray(cfg.capmem("leak_potential"), "<i2").tobytes()
    start = bytes(data).find(raw)
    assert start > 0
    data[start + len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path.name}.*corrupt.*(CRC|checksum)"):
        P.read_calibration(path)


def test_checksum_catches_changed_array_in_valid_zip(tmp_path):
    path = _save(tmp_path)
    changed = np.full((2, 256), 500, np.int16)
    _rewrite(path, arrays={"capmem.leak_potential": changed}, recompute_checksum=False)
    with pytest.raises(ValueError, match="corrupt: the SHA-256 checksum"):
        P.read_calibration(path)


@pytest.mark.parametrize("field, value", [("chip_seed", 4), ("target_id", "other"),
                                          ("metadata", {"note": "edited"})])
def test_checksum_covers_the_header(tmp_path, field, value):
    path = _save(tmp_path)
    _rewrite(path, header={field: value}, recompute_checksum=False)
    with pytest.raises(ValueError, match=f"{path.name}.*corrupt: the SHA-256 checksum"):
        P.read_calibration(path)


def test_missing_header(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, drop=["header"])
    with pytest.raises(ValueError, match="has no header"):
        P.read_calibration(path)


def test_header_not_json(tmp_path):
    path = _save(tmp_path)
    _rewrite(path)
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    stored["header"] = np.frombuffer(b"{not json", np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **stored)
    with pytest.raises(ValueError, match="header is not valid JSON"):
        P.read_calibration(path)


def test_wrong_kind(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, header={"kind": "something-else"})
    with pytest.raises(ValueError, match="kind 'something-else', not of kind 'bss2sim-calibration'"):
        P.read_calibration(path)


def test_unexpected_header_field(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, header={"gain": 0.5})
    with pytest.raises(ValueError, match="unexpected field.*gain"):
        P.read_calibration(path)


def test_old_format_is_refused(tmp_path):
    """A version-1 file (``magic`` instead of ``kind``, checksum of the arrays
    only) names itself as old and says what to do."""
    path = _save(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    head = json.loads(stored.pop("header").tobytes())
    old = {"magic": "bss2sim-calibration", "format_version": 1, "chip_seed": head["chip_seed"],
           "target_id": head["target_id"], "metadata": head["metadata"],
           "sha256": P.settings_checksum(stored)}
    stored["header"] = np.frombuffer(json.dumps(old).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **stored)
    with pytest.raises(ValueError, match=f"{path.name}.*old bss2sim file format.*recalibrate"):
        P.read_calibration(path)


@pytest.mark.parametrize("version, fragment", [(P.FORMAT_VERSION + 1, "newer than"),
                                               (P.FORMAT_VERSION - 1, "older than"),
                                               ("2", "not an integer")])
def test_unsupported_format_version(tmp_path, version, fragment):
    path = _save(tmp_path)
    _rewrite(path, header={"format_version": version})
    with pytest.raises(ValueError, match=f"format_version.*{fragment}|{fragment}"):
        P.read_calibration(path)


def test_chip_seed_mismatch(tmp_path):
    path = _save(tmp_path, seed=3)
    assert P.read_calibration(path, chip_seed=3).chip_seed == 3
    with pytest.raises(ValueError, match="calibration is for chip seed 3, not 5"):
        P.read_calibration(path, chip_seed=5)


def test_target_mismatch(tmp_path):
    path = _save(tmp_path, target="vmm-default")
    assert P.read_calibration(path, target_id="vmm-default").target_id == "vmm-default"
    with pytest.raises(ValueError, match="calibration is for target 'vmm-default', not 'other'"):
        P.read_calibration(path, target_id="other")


def test_missing_array(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, drop=["capmem.leak_bias"])
    with pytest.raises(ValueError, match="lacks the array.*capmem.leak_bias"):
        P.read_calibration(path)


def test_extra_array(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, arrays={"weights": np.zeros((2, 256, 256), np.uint8)})
    with pytest.raises(ValueError, match="unexpected array.*weights"):
        P.read_calibration(path)


def test_wrong_dtype(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, arrays={"capmem.synapse_bias": np.full((2, 2), 500, np.int32)})
    with pytest.raises(ValueError, match="capmem.synapse_bias has dtype int32"):
        P.read_calibration(path)


def test_wrong_shape(tmp_path):
    path = _save(tmp_path)
    _rewrite(path, arrays={"driver_offset": np.full((2, 64), 32, np.uint8)})
    with pytest.raises(ValueError, match=r"driver_offset has shape \(2, 64\)"):
        P.read_calibration(path)


@pytest.mark.parametrize("name, array, fragment", [
    ("capmem.leak_potential", np.full((2, 256), 2000, np.int16), "2000 is out of range 0..1023"),
    ("capmem.cadc_ramp_start", np.full((2, 2), -1, np.int16), "-1 is out of range 0..1023"),
    ("driver_offset", np.full((2, 128), 64, np.uint8), "64 is out of range 0..63"),
    ("cadc_digital_offset", np.full((2, 256), 200, np.int16), "200 is out of range -128..127"),
])
def test_out_of_range_values(tmp_path, name, array, fragment):
    path = _save(tmp_path)
    _rewrite(path, arrays={name: array})
    with pytest.raises(ValueError, match=f"{name}.*{fragment}"):
        P.read_calibration(path)


# --- arguments --------------------------------------------------------------

def test_calibration_filename():
    assert P.calibration_filename(3, "vmm-default") == "bss2-calibration-seed3-vmm-default.npz"
    assert P.calibration_filename(np.int64(12), "t1.v2") == "bss2-calibration-seed12-t1.v2.npz"
    for seed, target in [(-1, "t"), (True, "t"), (1.5, "t"), (1, ""), (1, "../x"), (1, "a/b")]:
        with pytest.raises(ValueError, match="is not allowed"):
            P.calibration_filename(seed, target)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"chip_seed": -1}, "chip_seed=-1 is not allowed"),
    ({"target_id": "a/b"}, "target_id='a/b' is not allowed"),
    ({"metadata": [1, 2]}, "metadata must be a dict"),
    ({"metadata": {"s": {1, 2}}}, r"metadata\['s'\] has type set"),
    ({"metadata": {1: "x"}}, "JSON keys must be strings"),
])
def test_save_refuses_bad_arguments(tmp_path, kwargs, fragment):
    args = dict(chip_seed=1, target_id="t", metadata={})
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        P.save_calibration(tmp_path / "cal.npz", ChipConfig(), **args)
    assert os.listdir(tmp_path) == []


def test_apply_refuses_invalid_settings_without_partial_writes(tmp_path):
    cal = P.read_calibration(_save(tmp_path, _random_config(1)))
    settings = dict(cal.settings)
    settings["capmem.leak_potential"] = np.full((2, 256), 2000, np.int16)
    bad = dataclasses.replace(cal, settings=settings)
    target = ChipConfig()
    with pytest.raises(ValueError, match="out of range"):
        bad.apply(target)
    _assert_same_settings(target, ChipConfig())
