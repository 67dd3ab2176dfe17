"""The Yin-Yang data set (bss2sim.experiments.datasets.yinyang) against a plain
Python reference of its geometry and sampling, its balance and seeding, and
the study of bss2sim.experiments.yinyang on a tiny setting."""
import math

import numpy as np
import pytest

from bss2sim.experiments.datasets import yinyang as Y

R_BIG, R_SMALL = 0.5, 0.1


def reference_class(x, y):
    """The class of one point, written out from the definition of Kriener et al. (2021)."""
    d_right = math.sqrt((x - 1.5 * R_BIG) ** 2 + (y - R_BIG) ** 2)
    d_left = math.sqrt((x - 0.5 * R_BIG) ** 2 + (y - R_BIG) ** 2)
    if d_right < R_SMALL or d_left < R_SMALL:
        return 2                                              # dot
    criterion1 = d_right <= R_SMALL
    criterion2 = R_SMALL < d_left <= 0.5 * R_BIG
    criterion3 = y > R_BIG and d_right > 0.5 * R_BIG
    return 1 if (criterion1 or criterion2 or criterion3) else 0


def reference_generator(size, seed):
    """Rejection sampling as the authors do it, with numpy's default_rng(seed):
    the goal class first, then points until one of that class (inside the circle) comes."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(size):
        goal = rng.integers(3)
        while True:
            x, y = rng.random(2) * 2 * R_BIG
            if math.hypot(x - R_BIG, y - R_BIG) > R_BIG:
                continue
            if reference_class(x, y) == goal:
                break
        rows.append([x, y, 1 - x, 1 - y])
        labels.append(goal)
    return np.array(rows), np.array(labels)


def test_class_geometry_matches_the_reference():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(0, 1, (4000, 2)),
                          np.stack(np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41)), -1).reshape(-1, 2),
                          # on and near the boundaries: the dots' rims, the inner circles, the midline
                          [[0.75, 0.6], [0.75, 0.5 + 0.25], [0.25, 0.5 + 0.1], [0.25, 0.75], [0.5, 0.5],
                           [0.9, 0.5 + 1e-9], [0.1, 0.5 - 1e-9]]])
    got = Y.which_class(pts[:, 0], pts[:, 1])
    ref = np.array([reference_class(float(a), float(b)) for a, b in pts])
    assert got.dtype == np.int64 and np.array_equal(got, ref)
    assert set(ref.tolist()) == {0, 1, 2}
    # The picture: the dot centres are dots, above the midline far from the right dot is yin.
    assert Y.which_class(0.75, 0.5) == 2 and Y.which_class(0.25, 0.5) == 2
    assert Y.which_class(0.5, 0.95) == 1 and Y.which_class(0.5, 0.05) == 0


def test_generator_is_the_reference_sampling():
    for size, seed in ((300, 5), (50, 2**63 + 11)):
        x, y = Y.yin_yang(size, seed)
        rx, ry = reference_generator(size, seed)
        assert x.dtype == np.float64 and x.shape == (size, 4) and y.dtype == np.int64
        assert np.array_equal(x, rx) and np.array_equal(y, ry)


def test_samples_lie_in_the_circle_with_their_class_and_mirrored_features():
    x, y = Y.load_split("validation")
    assert x.shape == (1000, 4)
    assert np.all(np.hypot(x[:, 0] - R_BIG, x[:, 1] - R_BIG) <= R_BIG)
    assert np.array_equal(x[:, 2], 1 - x[:, 0]) and np.array_equal(x[:, 3], 1 - x[:, 1])
    assert x.min() >= 0 and x.max() <= 1
    assert np.array_equal(Y.which_class(x[:, 0], x[:, 1]), y)


def test_classes_are_balanced():
    _, y = Y.yin_yang(6000, 3)
    counts = np.bincount(y, minlength=3)
    # Goal classes drawn uniformly: each count is binomial(6000, 1/3), sd 36.5.
    assert np.all(np.abs(counts - 2000) < 5 * 36.5), counts
    # Without rejection sampling the dots would be 8 % of the circle's points.
    assert counts[2] > 1500


def test_seeding_and_standard_splits():
    a = Y.yin_yang(100, 7)
    b = Y.yin_yang(100, 7)
    c = Y.yin_yang(100, 8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # A shorter draw with the same seed is the start of a longer one.
    assert np.array_equal(Y.yin_yang(40, 7)[0], a[0][:40])
    assert Y.SPLITS == {"train": (5000, 42), "validation": (1000, 41), "test": (1000, 40)}
    splits = Y.standard_splits()
    for name, (size, seed) in Y.SPLITS.items():
        xs, ys = splits[name]
        assert len(ys) == size and np.array_equal(xs, Y.yin_yang(size, seed)[0])
    assert not np.array_equal(splits["test"][0][:100], splits["validation"][0][:100])


def test_quantised_features():
    q = Y.quantise_features(np.array([[0.0, 0.5, 1.0, 0.49]]))
    assert q.dtype == np.int64 and q.tolist() == [[0, 16, 31, 15]]
    x, _ = Y.load_split("test")
    q = Y.quantise_features(x)
    assert q.min() >= 0 and q.max() <= 31 and np.all(q[:, 0] + q[:, 2] == 31)
    from bss2sim.experiments.training.sequential import QuantiseInput
    assert np.array_equal(QuantiseInput(4, "unit").forward(x), q)


@pytest.mark.parametrize("call, fragment", [
    (lambda: Y.yin_yang(0, 1), "size=0 is not allowed"),
    (lambda: Y.yin_yang(10, -1), "seed=-1"),
    (lambda: Y.yin_yang(2.5, 1), "size=2.5"),
    (lambda: Y.load_split("dev"), "split='dev'"),
    (lambda: Y.quantise_features(np.array([[1.2]])), "0..1"),
    (lambda: Y.quantise_features(np.array([[1]])), "dtype"),
])
def test_bad_arguments(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


# --- the study ---------------------------------------------------------------------------

TINY = dict(float_epochs=3, noise_epochs=1, hil_epochs=1, train_size=300, test_size=150, batch_size=50)


def test_study_on_a_tiny_setting(tmp_path, capsys):
    from bss2sim.experiments import yinyang
    res = yinyang.run(seed=1, out=tmp_path / "ck", **TINY)
    printed = capsys.readouterr().out
    assert "float training (3 epochs)" in printed and "after fine-tuning" in printed
    assert [s["stage"] for s in res["stages"]] == ["float training", "noise-aware training", "fine-tuning"]
    t = res["test"]
    assert set(t) == {"float", "behavioural", "chip_without_fine_tuning", "chip_after_fine_tuning"}
    assert all(0 <= v <= 1 for v in t.values())
    assert t["float"] > 0.5                        # three classes: chance is a third
    assert res["settings"]["repeat"] == 16 and res["settings"]["num_sends"][0] <= 10
    assert all(s["train_wall_s"] >= 0 and s["eval_wall_s"]["chip"] > 0 for s in res["stages"])
    assert res["chip_time_per_sample_s"] > 0 and res["wall_time_s"] > 0
    assert res["published"]["ANN 4-30-3"] == [0.976, 0.015]
    # Started again with its checkpoints: every stage resumes, the same figures.
    again = yinyang.run(seed=1, out=tmp_path / "ck", **TINY)
    assert again["test"] == t
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "yinyang_fine-tuning.npz", "yinyang_float_training.npz", "yinyang_noise-aware_training.npz"]


def test_study_checks_its_settings_first():
    from bss2sim.experiments import yinyang
    for kw, fragment in (({"repeat": 40}, "repeat=40"), ({"hidden": -1}, "hidden=-1"),
                         ({"train_size": 6000}, "train_size=6000"), ({"hil_lr": 0}, "hil_lr=0")):
        with pytest.raises(ValueError, match=fragment):
            yinyang.run(**kw)
