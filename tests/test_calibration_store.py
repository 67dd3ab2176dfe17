"""The calibration store: one calibration per chip shared by every command and
by load_calibration, found without typing package paths."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bss2sim.circuits import Chip, Faults
from bss2sim.digital import FaultyUnits
from bss2sim.experiments.calibration import (CalibrationTarget, calibrate, default_store,
                                             find_calibration, load_calibration, store)
from bss2sim.experiments.calibration.persistence import calibration_filename, calibration_settings
from bss2sim.experiments.cli import main


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    monkeypatch.setenv(store.STORE_ENV, str(folder))
    return folder


@pytest.fixture
def no_calibrating(monkeypatch):
    """Make calibrating a chip an error: a command that should find a stored
    calibration must not calibrate."""
    def refuse(*a, **k):
        raise AssertionError("calibrated although a calibration was stored")
    monkeypatch.setattr(store, "calibrate", refuse)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _same_settings(a: Chip, b: Chip):
    sa, sb = calibration_settings(a.config), calibration_settings(b.config)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_default_store_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(store.STORE_ENV, str(tmp_path / "s"))
    assert default_store() == tmp_path / "s"
    monkeypatch.delenv(store.STORE_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store() == tmp_path / "xdg" / "bss2sim" / "calibrations"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store() == tmp_path / "home" / ".local" / "share" / "bss2sim" / "calibrations"


def test_the_shipped_calibration_of_chip_0_is_found_without_paths(own_store, no_calibrating):
    chip = Chip(0)
    loaded = load_calibration(chip)
    assert loaded.origin == "shipped" and loaded.path.parent == store.SHIPPED_DIR
    assert "shipped" in loaded.describe()
    assert not np.array_equal(chip.config.capmem("reset_potential"), Chip(0).config.capmem("reset_potential"))


def test_a_missing_calibration_is_made_once_and_then_found(own_store):
    first = Chip(4)
    a = load_calibration(first)
    assert a.origin == "calibrated" and a.path.parent == own_store and a.path.is_file()
    assert a.calibration is not None
    second = Chip(4)
    b = load_calibration(second)
    assert b.origin == "store" and b.path == a.path and b.calibration is None
    _same_settings(first, second)
    with pytest.raises(ValueError, match="no calibration of chip seed 5"):
        load_calibration(Chip(5), calibrate_missing=False)


def test_calibrate_then_demo_uses_that_file(own_store, no_calibrating, tmp_path, capsys, monkeypatch):
    # Calibrate chip 3 through the command line (calibrating allowed here) ...
    monkeypatch.undo()
    monkeypatch.setenv(store.STORE_ENV, str(own_store))
    assert main(["calibrate", "--seed", "3", "--plots-dir", str(tmp_path / "p"), "--json"]) == 0
    made = _last_json(capsys)["calibration"]["path"]
    assert made == str(own_store / calibration_filename(3, CalibrationTarget().target_id))

    # ... then the demo must find it and not calibrate again.
    def refuse(*a, **k):
        raise AssertionError("calibrated although a calibration was stored")
    monkeypatch.setattr(store, "calibrate", refuse)
    assert main(["demo", "--seed", "3", "--images", "40", "--plots-dir", str(tmp_path / "p"), "--json"]) == 0
    res = _last_json(capsys)
    assert res["calibration"]["origin"] == "store" and res["calibration"]["path"] == made
    assert res["chip_seed"] == 3


@pytest.mark.parametrize("command", [["vmm", "--quick"], ["traces"], ["bench", "--vectors", "8"]])
def test_every_command_takes_and_reports_a_calibration_path(command, tmp_path, capsys, no_calibrating):
    folder = tmp_path / "cals"
    folder.mkdir()
    shipped, _ = find_calibration(0)
    path = folder / shipped.name
    shutil.copy(shipped, path)
    argv = command + ["--calibration", str(path), "--json"]
    if command[0] != "bench":
        argv += ["--plots-dir", str(tmp_path / "p")]
    assert main(argv) == 0
    res = _last_json(capsys)
    assert res["calibration"]["origin"] == "file" and res["calibration"]["path"] == str(path)
    # A folder works as well as the file.
    argv[argv.index(str(path))] = str(folder)
    assert main(argv) == 0
    assert _last_json(capsys)["calibration"]["path"] == str(path)


def test_none_means_uncalibrated(tmp_path, capsys, no_calibrating):
    ppu_src = tmp_path / "p.s"
    ppu_src.write_text("    li r3, 7\n    wait\n")
    assert main(["ppu", "run", str(ppu_src), "--calibration", "none", "--json"]) == 0
    res = _last_json(capsys)
    assert res["calibration"] is None and res["registers"]["r3"] == 7
    chip, loaded = store.chip_with_calibration(2, "none")
    assert loaded is None and "uncalibrated" in store.describe(loaded)
    _same_settings(chip, Chip(2))


def test_explicit_paths_are_never_second_guessed(tmp_path, no_calibrating):
    chip = Chip(3)
    before = calibration_settings(chip.config)
    with pytest.raises(ValueError, match="does not exist"):
        load_calibration(chip, tmp_path / "nope.npz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no calibration of chip seed 3"):
        load_calibration(chip, empty)
    # A file of another chip is refused and the chip stays as it was.
    shipped, _ = find_calibration(0)
    with pytest.raises(ValueError, match="chip seed 0, not 3"):
        load_calibration(chip, shipped)
    after = calibration_settings(chip.config)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    with pytest.raises(TypeError, match="path=3"):
        load_calibration(chip, 3)
    with pytest.raises(ValueError, match="calibrate_missing"):
        load_calibration(chip, calibrate_missing="yes")


def test_a_command_with_a_bad_calibration_path_fails_in_one_line(tmp_path, capsys):
    code = main(["demo", "--images", "5", "--calibration", str(tmp_path / "missing.npz"),
                 "--plots-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.npz" in err[0] and "does not exist" in err[0]


def test_faulty_units_travel_with_the_file(own_store):
    faults = Faults(dead_synapse_rows=((0, 40),), stuck_cadc_channels=((1, 17, 200),))
    chip = Chip(6, faults=faults)
    with np.errstate(invalid="ignore", divide="ignore"):
        cal = calibrate(chip)
    found = cal.faulty_units()
    assert (1, 17) in found.columns and (0, 20) in found.drivers
    path = store.store_calibration(cal, chip, own_store)
    loaded = load_calibration(Chip(6, faults=faults))
    assert loaded.path == path and loaded.faulty == found
    assert isinstance(loaded.faulty, FaultyUnits)
    assert loaded.to_dict()["faulty_units"] == found.to_dict()


def test_a_chip_of_another_preset_gets_its_own_calibration(own_store):
    """The shipped calibration of chip 0 belongs to the default preset: a harsh
    chip 0 is calibrated anew and stored under its own name, and a default-preset
    file given for it explicitly is refused."""
    harsh = Chip(0, preset="harsh")
    loaded = load_calibration(harsh)
    assert loaded.origin == "calibrated"
    assert loaded.path.name == calibration_filename(0, CalibrationTarget().target_id, "harsh")
    assert loaded.path.name.endswith("-harsh.npz") and loaded.metadata["preset"] == "harsh"
    assert load_calibration(Chip(0, preset="harsh")).origin == "store"
    assert load_calibration(Chip(0)).origin == "shipped"        # the default chip's file is untouched
    shipped, _ = find_calibration(0)
    before = calibration_settings(harsh.config)
    with pytest.raises(ValueError, match="preset 'default', not 'harsh'"):
        load_calibration(harsh, shipped)
    after = calibration_settings(harsh.config)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="preset='nope' is unknown"):
        calibration_filename(0, "t", "nope")
