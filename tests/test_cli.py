"""The command line: each subcommand runs, writes its figures and ends its
stdout with one JSON object."""
import json

import pytest

from bss2sim.experiments.cli import main


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_traces_json_and_figure(tmp_path, capsys):
    assert main(["traces", "--json", "--plots-dir", str(tmp_path)]) == 0
    res = _last_json(capsys)
    assert (tmp_path / "membrane_traces.png").stat().st_size > 10_000
    assert len(res["cases"]) == 2
    for case in res["cases"]:
        assert case["fast_vs_trace_rms_lsb"] <= 0.5
        assert case["fast_vs_trace_max_lsb"] <= 1
        assert len(case["codes_fast"]) == 256
    # The saturating case really saturates: some plotted column sits far from rest.
    strong = res["cases"][1]["codes_trace"]
    assert max(strong) - min(strong) > 100


def test_vmm_quick_json_and_figures(tmp_path, capsys):
    assert main(["vmm", "--quick", "--json", "--plots-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out.strip().splitlines()[-1])
    # The noise correlation between columns, in the text (on stderr with --json) and the JSON.
    assert "noise between columns: correlation" in captured.out + captured.err
    assert -1 <= res["noise_correlation_other_quadrant"] <= 1
    assert -1 <= res["noise_correlation_same_quadrant"] <= 1
    assert res["noise_independent_lsb"] ** 2 + res["noise_shared_quadrant_lsb"] ** 2 == \
        pytest.approx(res["noise_trial_lsb"] ** 2, rel=1e-9)
    for name in ("linearity", "gain_histogram", "noise", "saturation", "gain_map", "gain_vs_wait"):
        assert (tmp_path / f"vmm_{name}.png").stat().st_size > 10_000
    assert 0.001 < res["gain_lsb_per_xw"] < 0.0025
    assert 1.0 < res["noise_trial_lsb"] < 3.5
    assert res["linear_range_lsb"][0] < -40 and res["linear_range_lsb"][1] > 40
    assert res["chip_time_per_vmm_s"] > 1e-6
    # The shipped calibration of chip 0 was used, and the quick ramp locates the
    # saturation point of nearly every neuron.
    assert res["calibration"]["origin"] in ("shipped", "store")
    assert max(res["saturation_unreliable_neurons"]) <= 512 * 0.05


def test_bench_small_json(capsys):
    assert main(["bench", "--vectors", "64", "--json"]) == 0
    res = _last_json(capsys)
    a = res["analog"]
    assert a["vectors"] == 64
    assert a["fast_over_matmul"] > 0 and a["trace_path_s_per_vector"] > 0
    assert 0 < res["calibration_benchmark"]["wall_time_s"] < res["calibration_benchmark"]["silicon_time_s"] * 100
    assert res["vectors"] == 64 and res["mnist"]["images"] == 64
    n = res["network"]
    for name in ("cycle_level", "behavioural"):
        assert n[name]["chip_time_per_image_s"] > 0
        assert n[name]["images_per_s"] > 0
    p = res["ppu"]
    assert p["instructions"] >= 20_000 and p["instructions_per_second"] > 0
    assert p["speedup"] > 1 and all(r["within_tolerance"] for r in p["speed_tests"])


@pytest.mark.parametrize("argv", [["traces", "--seed", "-1"], ["bench", "--vectors", "0"],
                                  ["vmm", "--seed", "x"], ["nosuch"]])
def test_bad_arguments_exit_with_message(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["train", "--num-sends", "257", "5", "9"], "num_sends=257 is not allowed: must be an integer in 1..256"),
    (["train", "--wait-between-events", "5", "5", "300"],
     "wait_between_events=300 is not allowed: must be an integer in 1..255"),
])
def test_train_rejects_bad_layer_settings_before_running(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "bss2sim train: error:" in err and match in err
    assert not (tmp_path / "run").exists()


def test_validate_any_list_of_seeds(tmp_path, capsys):
    assert main(["calibrate", "--validate", "3,5", "--plots-dir", str(tmp_path), "--json"]) == 0
    res = _last_json(capsys)
    assert sorted(r["chip_seed"] for r in res["per_seed"]) == [3, 5]
    assert (tmp_path / "calibration_validation.png").stat().st_size > 10_000
