"""The main job: the shipped network, calibration and test images run offline."""
import json

from bss2sim.experiments.cli import main
from bss2sim.experiments.datasets.mnist import load_test_set
from bss2sim.experiments.train import PACKAGE_DATA, NETWORK_FILE, TEST_IMAGES_FILE


def test_shipped_files_exist_and_load():
    assert (PACKAGE_DATA / NETWORK_FILE).exists()
    assert (PACKAGE_DATA / TEST_IMAGES_FILE).exists()
    x, y = load_test_set()
    assert x.shape == (10_000, 28, 28) and len(y) == 10_000
    assert sorted(set(y.tolist())) == list(range(10))


def test_demo_classifies_through_the_chip(tmp_path, capsys):
    assert main(["demo", "--images", "300", "--json", "--plots-dir", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["images"] == 300
    assert res["accuracy"] > 0.93
    assert res["calibration"]["origin"] == "shipped" and res["chip_seed"] == 0
    assert res["chip_time_per_image_s"] > 1e-6 and res["asic_energy_per_image_j"] > 0
    for name in ("mnist_confusion.png", "mnist_misclassified.png", "mnist_accuracy_per_seed.png"):
        assert (tmp_path / name).stat().st_size > 5_000


def test_wilson_interval_matches_the_binomial_spread():
    import numpy as np
    from bss2sim.experiments.demo import wilson_interval
    lo, hi = wilson_interval(np.array([0.985, 0.5]), 10_000)
    # About +-1.96 sqrt(p (1 - p) / n): 0.24 points at 98.5 %, 0.98 points at 50 %.
    np.testing.assert_allclose((hi - lo) / 2, [1.96 * np.sqrt(0.985 * 0.015 / 1e4),
                                               1.96 * np.sqrt(0.25 / 1e4)], rtol=0.02)
    assert lo[0] < 0.985 < hi[0]


def test_a_short_run_still_draws_its_per_seed_figure(tmp_path):
    """Where an accuracy is 0 or 100 %, its interval's bound equals it up to
    rounding; the per-seed figure's error bars must not come out negative
    (100 images with the tight sequence, 100 %, made them so)."""
    from bss2sim.experiments.demo import run
    r = run(seed=0, images=100, plots=tmp_path, sequence="tight")
    assert r["accuracy"] == 1.0
    assert (tmp_path / "mnist_accuracy_per_seed.png").stat().st_size > 10_000
