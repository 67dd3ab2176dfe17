"""The drift study (``bss2sim drift``) on a small scale: one chip, two
conditions, 100 test images and tiny fine-tuning and refresh sets."""
import json
from pathlib import Path

import pytest

from bss2sim.experiments import drift
from bss2sim.experiments.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SMALL = dict(seeds=(1,), hours=(0.0, 24.0), temperatures=(0.0,), images=100, fine_tune_images=50,
             refresh_images=50, data_dir=str(DATA))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    assert DATA.is_dir(), f"MNIST data folder {DATA} is missing"
    plots = tmp_path_factory.mktemp("drift-plots")
    return drift.run(**SMALL, plots=str(plots)), plots


def test_structure_and_figure(study):
    res, plots = study
    assert res["chip_seeds"] == [1] and res["images"] == 100
    assert res["settings"]["refresh_images"] == 50 and res["settings"]["fine_tune_images"] == 50
    assert res["settings"]["hours_h"] == [0.0, 24.0] and res["settings"]["temperature_offsets_k"] == [0.0]
    assert res["versions"]["bss2sim"] and res["wall_time_s"] > 0
    json.dumps(res)                                  # the --json object is plain JSON
    (chip,) = res["chips"]
    assert chip["chip_seed"] == 1 and chip["calibration"]["chip_seed"] == 1
    assert chip["recalibration"] in ("from_previous", "fresh")
    conditions = [(c["hours_h"], c["temperature_offset_k"]) for c in chip["conditions"]]
    assert conditions == [(0.0, 0.0), (24.0, 0.0)]
    for c in chip["conditions"]:
        assert set(c["accuracy_rel"]) == set(drift.TREATMENTS)
        for tr in drift.TREATMENTS:
            for n in drift.NETWORKS:
                a = c["accuracy_rel"][tr][n]
                assert 0.0 <= a <= 1.0 and round(a * 100) == pytest.approx(a * 100)
        assert c["temperature_c"] == 25.0
        assert "faulty_units" in c["recalibration"]
        assert c["recalibration"]["from_previous"] == (chip["recalibration"] == "from_previous")
    for n in drift.NETWORKS:
        # The networks work on the calibrated chip at all (100 images: a loose bound).
        assert chip["baseline_accuracy_rel"][n] > 0.9
    summ = res["summary"]
    assert [r["hours_h"] for r in summ["vs_hours"]] == [0.0, 24.0]
    assert [r["temperature_offset_k"] for r in summ["vs_temperature"]] == [0.0]
    st = summ["vs_hours"][1]["recalibrated"]["fine_tuned"]
    assert st["chips"] == 1 and st["std_rel"] is None
    assert st["mean_rel"] == chip["conditions"][1]["accuracy_rel"]["recalibrated"]["fine_tuned"]
    fig = plots / drift.FIGURE
    assert res["figures"] == [str(fig)]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000


def test_deterministic_and_hour0_without_recalibration_is_the_baseline(study):
    res, _ = study
    # The same study again (without the recalibrations, which are the slow part),
    # the hour-0 condition measured instead of copied from the baseline.
    again = drift.drift_study(**SMALL, treatments=("no_recalibration", "refreshed"),
                              reuse_baseline=False, progress=False)
    a, b = res["chips"][0], again["chips"][0]
    assert a["baseline_accuracy_rel"] == b["baseline_accuracy_rel"]
    for ca, cb in zip(a["conditions"], b["conditions"]):
        for tr in ("no_recalibration", "refreshed"):
            assert ca["accuracy_rel"][tr] == cb["accuracy_rel"][tr], (ca["hours_h"], tr)
    # Physics: at the calibration's own condition (25 degrees C, hour 0), after
    # the chip has run at hour 24, nothing has drifted: exactly the baseline.
    hour0 = b["conditions"][0]
    assert "baseline_reused" not in hour0
    assert hour0["accuracy_rel"]["no_recalibration"] == b["baseline_accuracy_rel"]
    assert a["conditions"][0]["baseline_reused"] is True


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=0), r"--images=0 is not allowed: must be an integer in 1\.\.10000"),
    (dict(images=10_001), r"--images=10001 .* 1\.\.10000"),
    (dict(refresh_images=0), r"--refresh-images=0 .* 1\.\.60000"),
    (dict(fine_tune_images=1.5), r"--fine-tune-images=1\.5 .* 1\.\.60000"),
    (dict(hours=(0.0, -1.0)), r"--hours -1 is not allowed: must be a number in 0\.\.1e\+06"),
    (dict(hours=()), r"--hours is empty"),
    (dict(temperatures=(200.0,)), r"--temperatures 200 is not allowed: must be a number in -65\.\.100"),
    (dict(temperatures=(2.0, 2.0)), r"--temperatures names 2 more than once"),
    (dict(seeds=(1, 1)), r"--seeds \[1, 1\] names a chip seed more than once"),
    (dict(seeds=(-1,)), r"--seeds=-1 is not allowed"),
    (dict(seeds="1"), r"--seeds '1' is not allowed"),
    (dict(treatments=("recalibrated", "bake")), r"--treatments recalibrated,bake is not allowed"),
    (dict(calibration="/nonexistent/calibrations"), r"calibration path '/nonexistent/calibrations'"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, match, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("a chip was calibrated before the arguments were checked")
    monkeypatch.setattr(drift, "chip_with_calibration", no_work)
    with pytest.raises(ValueError, match=match):
        drift.drift_study(**{**SMALL, **kwargs}, progress=False)


@pytest.mark.parametrize("argv, needle", [
    (["--hours", "0,-1"], "--hours -1 is not allowed: must be a number in 0..1e+06"),
    (["--temperatures=-70"], "--temperatures -70 is not allowed: must be a number in -65..100"),
    (["--images", "0"], "--images 0 is not allowed: must be an integer in 1..10000"),
    (["--refresh-images", "x"], "--refresh-images 'x' is not an integer; allowed: 1..60000"),
    (["--seeds", "3-1"], "--seeds '3-1'"),
    (["--treatments", "bake"], "--treatments bake is not allowed"),
])
def test_command_line_refuses_bad_options_in_one_line(argv, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(drift, "drift_study", lambda *a, **k: pytest.fail("the study ran"))
    try:
        code = main(["drift", "--plots-dir", str(tmp_path), "--data-dir", str(DATA), *argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_command_line_passes_its_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(drift, "run", lambda **k: seen.update(k))
    assert main(["drift", "--seeds", "2-3,7", "--hours", "0,5", "--temperatures=-5,0", "--images", "20",
                 "--refresh-images", "1500", "--treatments", "refreshed,no_recalibration",
                 "--plots-dir", str(tmp_path)]) == 0
    assert seen["seeds"] == (2, 3, 7) and seen["hours"] == (0.0, 5.0) and seen["temperatures"] == (-5.0, 0.0)
    assert seen["images"] == 20 and seen["refresh_images"] == 1500 and seen["fine_tune_images"] == 10_000
    assert seen["treatments"] == ("refreshed", "no_recalibration") and seen["plots"] == str(tmp_path)
    seen.clear()
    assert main(["drift", "--plots-dir", str(tmp_path)]) == 0
    assert seen["seeds"] == (0, 1, 2, 3, 4) and seen["hours"] == drift.DEFAULT_HOURS
    assert seen["temperatures"] == drift.DEFAULT_TEMPERATURES_K and seen["images"] is None


def test_preset_is_checked_and_recorded():
    with pytest.raises(ValueError, match="--preset 'nope' is not allowed"):
        drift.check_arguments(seeds=[1], preset="nope")
    s = drift.check_arguments(seeds=[1], preset="harsh")
    assert s.preset == "harsh" and s.to_dict()["preset"] == "harsh"
