"""The MNIST pipeline end to end on a small scale, and its resumption."""
import json
from pathlib import Path

import pytest

from bss2sim.experiments import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    assert DATA.is_dir(), f"MNIST data folder {DATA} is missing"
    out = tmp_path_factory.mktemp("run")
    res = train.run(data_dir=str(DATA), seed=1, out=str(out), float_epochs=1, noise_epochs=0,
                    hil_images=100, extra_seeds=(), test_images=200)
    return out, res


def test_pipeline_reports_every_stage(small_run):
    out, res = small_run
    for key in ("float", "behavioural", "chip_without_fine_tuning", "chip_after_fine_tuning"):
        assert 0.85 < res[key] <= 1.0, key
    assert 0.001 < res["behaviour"]["gain_lsb_per_xw"] < 0.0025
    assert res["chip_time_per_image_s"] > 0
    # Chip 1 has no calibration in the session's store at first: the run calibrated
    # it and stored it, and says so.
    assert res["calibration"]["chip_seed"] == 1 and res["calibration"]["origin"] in ("calibrated", "store")
    saved = json.loads((out / train.RESULTS_FILE).read_text())
    assert saved["chip_after_fine_tuning"] == res["chip_after_fine_tuning"]
    assert (out / train.NETWORK_FILE).exists()


def test_stopped_run_resumes_from_its_checkpoints(small_run, capsys):
    out, res = small_run
    again = train.run(data_dir=str(DATA), seed=1, out=str(out), float_epochs=1, noise_epochs=0,
                      hil_images=100, extra_seeds=(), test_images=200)
    assert "resuming ckpt_float.npz after epoch 1" in capsys.readouterr().err
    for key in ("float", "chip_without_fine_tuning", "chip_after_fine_tuning"):
        assert again[key] == res[key], key


def test_resumed_run_refuses_other_layer_settings(small_run):
    out, _ = small_run
    with pytest.raises(ValueError, match=r"num_sends=\[2, 2, 2\] differs from the run in .*, which has "
                                         r"num_sends=\[\d+, \d+, \d+\] \(conv\); use another --out folder"):
        train.run(data_dir=str(DATA), seed=1, out=str(out), float_epochs=1, noise_epochs=0,
                  hil_images=100, extra_seeds=(), test_images=200, num_sends=2)
