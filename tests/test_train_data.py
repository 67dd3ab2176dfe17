"""bss2sim train on data of your own: an .npz file, the built-in Yin-Yang set,
an IDX folder of any image size; bad data refused in one line before the work."""
import gzip
import json
import time

import numpy as np
import pytest

from bss2sim.experiments import train
from bss2sim.experiments.cli import main
from bss2sim.experiments.datasets import yinyang as Y
from bss2sim.experiments.training import MnistNet
from bss2sim.experiments.training import checkpoint as CK
from bss2sim.experiments.training.sequential import Sequential


def _one_error_line(capsys, code, *needles):
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("bss2sim train: error:") and "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _two_blobs(n, seed):
    """Two classes of 3-feature integer samples 0..31 (chip inputs as they are):
    class c is bright in feature c (the chip has no biases, so the classes
    differ in direction, not in scale)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(8, 3, (n, 3))
    x[np.arange(n), y] += 14
    return np.clip(np.rint(x), 0, 31).astype(np.int16), y


def test_train_on_an_npz_file(tmp_path):
    xtr, ytr = _two_blobs(400, 0)
    xte, yte = _two_blobs(100, 1)
    data = _npz(tmp_path / "moons.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    out = tmp_path / "run"
    res = train.run(data=str(data), hidden=16, seed=0, out=str(out), float_epochs=12, noise_epochs=1,
                    hil_images=60, extra_seeds=(), test_images=80)
    assert res["data"] == {"name": str(data), "source": "npz", "train": 400, "test": 100,
                           "sample_shape": [3], "encoding": "int5", "classes": 2}
    assert "dense 3 -> 16" in res["network"] and res["settings"]["augment_shift"] == 0
    assert res["settings"]["hil_images"] == 60 and res["test_images"] == 80
    for key in ("float", "behavioural", "chip_without_fine_tuning", "chip_after_fine_tuning"):
        assert 0.8 < res[key] <= 1.0, key                 # well-separated classes
    saved = json.loads((out / train.OTHER_RESULTS_FILE).read_text())
    assert saved["chip_after_fine_tuning"] == res["chip_after_fine_tuning"]
    # Labelled as what it is: not MNIST results.
    assert saved["kind"] == "bss2sim-training-results"
    from bss2sim.experiments.common import TRAINING_RESULTS_KIND, load_results
    assert load_results(out / train.OTHER_RESULTS_FILE, TRAINING_RESULTS_KIND)["chip_seed"] == 0
    with pytest.raises(ValueError, match="kind"):
        load_results(out / train.OTHER_RESULTS_FILE)
    ck = CK.load_checkpoint(out / train.OTHER_NETWORK_FILE, expect_metadata={"stage": "fine-tuned"})
    net = ck.make_network()
    assert ck.model_type == "Sequential" and type(net) is Sequential and net.num_classes == 2
    assert not (out / train.NETWORK_FILE).exists()
    # Started again: every stage resumes from its checkpoint, the same figures.
    again = train.run(data=str(data), hidden=16, seed=0, out=str(out), float_epochs=12, noise_epochs=1,
                      hil_images=60, extra_seeds=(), test_images=80)
    for key in ("float", "behavioural", "chip_without_fine_tuning", "chip_after_fine_tuning"):
        assert again[key] == res[key], key


def test_train_yinyang_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "yy"
    code = main(["train", "--data", "yinyang", "--hidden", "32", "--out", str(out), "--float-epochs", "1",
                 "--noise-epochs", "0", "--hil-images", "100", "--test-images", "100",
                 "--further-seeds", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["data"]["name"] == "Yin-Yang" and res["data"]["train"] == 5000
    assert res["data"]["encoding"] == "unit" and res["data"]["classes"] == 3
    assert "dense 4 -> 32" in res["network"]
    assert res["float"] > 0.45 and res["chip_after_fine_tuning"] > 0.4
    assert (out / train.OTHER_RESULTS_FILE).exists()


def _idx(folder, images, labels):
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        img_name, lab_name = train.IDX_FILES[split]
        header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
        with gzip.open(folder / f"{img_name}.gz", "wb") as f:
            f.write(header + images.tobytes())
        header = (0x801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        (folder / lab_name).write_bytes(header + labels.astype(np.uint8).tobytes())
    return folder


def test_idx_folder_of_any_size_and_the_networks_chosen(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 8, 6), dtype=np.uint8)
    labels = np.arange(30) % 4
    ds = train.load_data(str(_idx(tmp_path / "small", images, labels)))
    assert ds.source == "idx" and ds.sample_shape == (8, 6) and ds.classes == 4 and ds.images
    assert np.array_equal(ds.x_train, images) and ds.encoding == "uint8"
    net = train.make_network(ds, 0.0015, 0, hidden=10, rms=train.input_rms(ds))
    assert type(net) is Sequential and net.names[:3] == ("input", "flatten", "fc1")
    assert net.forward(images[:2]).shape == (2, 4)
    # 28 x 28 images with 10 classes: the MNIST network; as floats, the same architecture.
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    ds = train.check_data("m", "npz", x, y, x, y, "--data m")
    assert ds.mnist_network and type(train.make_network(ds, 0.0015, 3)) is MnistNet
    ds = train.check_data("m", "npz", x / 255.0, y, x / 255.0, y, "--data m")
    seq = train.make_network(ds, 0.0015, 3)
    ref = MnistNet(gain=0.0015, seed=3)
    assert type(seq) is Sequential and seq.config()["layers"][0]["encoding"] == "unit"
    assert seq.config()["layers"][1:] == ref.spec()["layers"][1:]
    assert all(np.array_equal(p, q) for p, q in zip(seq.parameters(), ref.parameters()))


def test_the_mnist_defaults_are_those_of_before():
    """No --data: the same network, the same number of fine-tuning images."""
    ds = train.DataSet("MNIST", "mnist", np.zeros((5, 28, 28), np.uint8), np.arange(5) % 10,
                       np.zeros((2, 28, 28), np.uint8), np.arange(2), "uint8", 10)
    net = train.make_network(ds, 0.0015, 4)
    assert type(net) is MnistNet and net.config() == MnistNet(gain=0.0015, seed=4).config()
    assert train.HIL_IMAGES == 10_000 and train.AUGMENT_SHIFT == 2


GOOD = dict(x_train=np.zeros((10, 4)), y_train=np.arange(10) % 3, x_test=np.zeros((5, 4)),
            y_test=np.arange(5) % 3)


@pytest.mark.parametrize("arrays, needles", [
    ({**GOOD, "x_val": np.zeros(3)}, ["unexpected ['x_val']"]),
    ({k: v for k, v in GOOD.items() if k != "y_test"}, ["missing ['y_test']"]),
    ({**GOOD, "y_test": np.array([0, 1, 2, 3, 0])}, ["y_test holds label 3 at index 3", "0..2"]),
    ({**GOOD, "y_train": np.array([0, 1, -1, 2, 0, 1, 2, 0, 1, 2])}, ["y_train holds label -1 at index 2"]),
    ({**GOOD, "y_train": np.zeros(10, np.int64)}, ["at least 2 classes"]),
    ({**GOOD, "y_train": np.arange(9) % 3}, ["y_train has shape (9,)", "(10,)"]),
    ({**GOOD, "y_train": (np.arange(10) % 3).astype(float)}, ["y_train has dtype float64"]),
    ({**GOOD, "x_train": np.zeros((0, 4)), "y_train": np.zeros(0, np.int64)}, ["x_train holds no samples"]),
    ({**GOOD, "x_test": np.zeros((5, 3))}, ["x_train samples have shape (4,) but x_test samples (3,)"]),
    ({**GOOD, "x_train": np.full((10, 4), 1.5)}, ["x_train holds floats 1.5..1.5", "0..1"]),
    ({**GOOD, "x_train": np.full((10, 4), 40, np.int32)}, ["integers 40..40", "0..31"]),
    ({**GOOD, "x_train": np.zeros((10, 4), bool)}, ["x_train has dtype bool"]),
    ({**GOOD, "x_test": np.zeros((5, 4), np.uint8)}, ["x_train is unit (float64) but x_test is uint8"]),
    ({**GOOD, "x_train": np.zeros(10)}, ["x_train has shape (10,)"]),
    ({**GOOD, "x_train": np.array([None] * 40, object).reshape(10, 4)}, ["cannot be read", "pickle"]),
])
def test_bad_npz_data_is_refused_in_one_line_before_the_work(tmp_path, capsys, arrays, needles):
    data = _npz(tmp_path / "d.npz", **arrays)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    _one_error_line(capsys, main(["train", "--data", str(data), "--out", str(out)]), "--data", *needles)
    assert time.perf_counter() - t0 < 5 and not out.exists()


@pytest.mark.parametrize("extra, needles", [
    (["--data-dir", "somewhere"], ["--data and --data-dir are both given"]),
    (["--augment-shift", "1"], ["--augment-shift 1 shifts images", "use 0"]),
    (["--hil-images", "11"], ["--hil-images 11 is more than the 10 samples"]),
    (["--test-images", "6"], ["--test-images 6 is more than the 5 samples"]),
    (["--num-sends", "3", "4", "5"], ["num_sends=[3, 4, 5] is not allowed", "2: fc1 fc2"]),
    (["--num-sends", "257"], ["num_sends=257 is not allowed: must be an integer in 1..256"]),
    (["--hidden", "0", "--wait-between-events", "5", "6"], ["wait_between_events=[5, 6]", "1: fc1"]),
    (["--ship"], ["--ship copies the MNIST network", "not --data"]),
])
def test_bad_options_with_data_are_refused_before_the_work(tmp_path, capsys, extra, needles):
    data = _npz(tmp_path / "d.npz", **GOOD)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out)] + extra
    if "--ship" in extra:
        # --ship checks the package's data folder first; that check is not the one tested here.
        _one_error_line(capsys, train_run_error(argv), *needles)
    else:
        _one_error_line(capsys, _exit_code(argv), *needles)
    assert not out.exists()


def train_run_error(argv):
    """The error of train.run itself for these options (exit code 2 like the command line)."""
    from bss2sim.experiments.cli import report_errors
    return report_errors("bss2sim train", lambda: train.run(data=argv[2], out=argv[4], ship=True))


def test_data_that_is_not_there_or_not_data(tmp_path, capsys):
    _one_error_line(capsys, main(["train", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "r")]),
                    "does not exist", "yinyang")
    (tmp_path / "notes.txt").write_text("x")
    _one_error_line(capsys, main(["train", "--data", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "r")]),
                    "neither an .npz file nor a folder")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    _one_error_line(capsys, main(["train", "--data", str(tmp_path / "broken.npz"), "--out", str(tmp_path / "r")]),
                    "broken.npz")
    (tmp_path / "empty_idx").mkdir()
    _one_error_line(capsys, main(["train", "--data", str(tmp_path / "empty_idx"), "--out", str(tmp_path / "r")]),
                    "train-images-idx3-ubyte", "missing")
    # An IDX folder whose test set is empty.
    _idx(tmp_path / "idx0", np.zeros((0, 5, 5), np.uint8), np.zeros(0, np.uint8))
    _one_error_line(capsys, main(["train", "--data", str(tmp_path / "idx0"), "--out", str(tmp_path / "r")]),
                    "no samples")
    assert not (tmp_path / "r").exists()


def test_yinyang_data_is_the_standard_split():
    ds = train.load_data("yinyang")
    x, y = Y.load_split("train")
    assert np.array_equal(ds.x_train, x) and np.array_equal(ds.y_train, y)
    assert np.array_equal(ds.x_test, Y.load_split("test")[0]) and ds.classes == 3 and not ds.images
