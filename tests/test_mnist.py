"""The MNIST IDX reader (bss2sim.experiments.datasets.mnist) on the real files and on corrupt ones."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bss2sim.experiments.datasets import mnist as M

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def require_data():
    """The real MNIST folder; its absence fails the test (it is part of the setup)."""
    names = [n for pair in M.FILES.values() for n in pair]
    if not DATA_DIR.is_dir() or not all((DATA_DIR / n).is_file() or (DATA_DIR / (n + ".gz")).is_file()
                                        for n in names):
        pytest.fail(f"MNIST data not found in {DATA_DIR} (expected the four IDX files, "
                    f"optionally .gz); the tests need the shared data folder")
    return DATA_DIR


@pytest.fixture(scope="module")
def train_set():
    return M.load_mnist("train", require_data())


@pytest.fixture(scope="module")
def test_set():
    return M.load_mnist("test", require_data())


# --- the real data ----------------------------------------------------------------------

def test_train_split_counts_and_first_labels(train_set):
    x, y = train_set
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == TRAIN_COUNTS
    # The first training digits of MNIST are 5 0 4 1 9 2 1 3 1 4.
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert x.max() == 255 and x.min() == 0
    # Digits are white on black: the border is dark, the centre bright.
    assert x[:, :2, :].mean() < 1 and x[:, 10:18, 10:18].mean() > 60


def test_test_split_counts(test_set):
    x, y = test_set
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y, minlength=10).tolist() == TEST_COUNTS
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_env_var_and_argument(monkeypatch):
    d = require_data()
    monkeypatch.setenv(M.ENV_VAR, str(d))
    x, y = M.load_mnist("test")
    monkeypatch.setenv(M.ENV_VAR, "/nonexistent/folder")
    x2, y2 = M.load_mnist("test", data_dir=d)      # the argument wins over the variable
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_missing_data_dir_without_env_var(monkeypatch):
    monkeypatch.delenv(M.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"--data-dir.*BSS2SIM_MNIST_DIR"):
        M.load_mnist("train")
    with pytest.raises(ValueError, match="does not exist"):
        M.load_mnist("train", data_dir="/nonexistent/mnist")


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        M.load_mnist("validation", tmp_path)


def test_quantise_images():
    a = np.array([[0, 4, 5, 128, 250, 255]], np.uint8)
    q = M.quantise_images(a)
    assert q.dtype == np.int64
    assert q.tolist() == [[0, 0, 1, 16, 30, 31]]
    assert np.array_equal(q, np.round(a / 255 * 31))
    assert M.quantise_images(np.arange(256, dtype=np.uint8), bits=1).tolist() == \
        [0] * 128 + [1] * 128
    with pytest.raises(ValueError, match="bits"):
        M.quantise_images(a, bits=6)
    with pytest.raises(ValueError, match="dtype"):
        M.quantise_images(a.astype(float))


# --- synthetic and corrupt files ---------------------------------------------------------

def idx_bytes(magic, dims, data):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def write_split(folder, n=5, labels=None, images=None, gz=True, split="test", image_dims=None,
                label_dims=None, image_magic=M.IMAGE_MAGIC, label_magic=M.LABEL_MAGIC):
    """Write a small split; returns (images, labels) it holds."""
    rng = np.random.default_rng(0)
    if images is None:
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    if labels is None:
        labels = (np.arange(n) % 10).astype(np.uint8)
    img = idx_bytes(image_magic, image_dims or images.shape, images.tobytes())
    lab = idx_bytes(label_magic, label_dims or labels.shape, np.asarray(labels, np.uint8).tobytes())
    img_name, lab_name = M.FILES[split]
    for name, raw in ((img_name, img), (lab_name, lab)):
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_synthetic_roundtrip(tmp_path, gz):
    images, labels = write_split(tmp_path, n=7, gz=gz)
    x, y = M.load_mnist("test", tmp_path)
    assert np.array_equal(x, images) and np.array_equal(y, labels)


def _replace(folder, name, raw, gz=True):
    p = folder / (name + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p


def test_bad_magic(tmp_path):
    write_split(tmp_path, image_magic=0x00000801)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*bad magic number 0x00000801"):
        M.load_mnist("test", tmp_path)
    write_split(tmp_path, label_magic=0x00000803)
    with pytest.raises(ValueError, match=r"t10k-labels.*bad magic"):
        M.load_mnist("test", tmp_path)


def test_truncated_header(tmp_path):
    write_split(tmp_path)
    _replace(tmp_path, M.FILES["test"][0], struct.pack(">I", M.IMAGE_MAGIC) + struct.pack(">I", 5))
    with pytest.raises(ValueError, match=r"t10k-images.*truncated header"):
        M.load_mnist("test", tmp_path)
    _replace(tmp_path, M.FILES["test"][0], b"\x00\x00")
    with pytest.raises(ValueError, match="truncated header"):
        M.load_mnist("test", tmp_path)


def test_truncated_data(tmp_path):
    images, labels = write_split(tmp_path, n=4)
    raw = idx_bytes(M.IMAGE_MAGIC, images.shape, images.tobytes())
    _replace(tmp_path, M.FILES["test"][0], raw[:-100])
    with pytest.raises(ValueError, match=r"t10k-images.*truncated data.*\(4, 28, 28\)"):
        M.load_mnist("test", tmp_path)
    _replace(tmp_path, M.FILES["test"][0], raw + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        M.load_mnist("test", tmp_path)


def test_truncated_data_uncompressed(tmp_path):
    images, labels = write_split(tmp_path, n=4, gz=False)
    raw = idx_bytes(M.LABEL_MAGIC, labels.shape, labels.tobytes())
    _replace(tmp_path, M.FILES["test"][1], raw[:-1], gz=False)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte'.*truncated data"):
        M.load_mnist("test", tmp_path)


def test_count_mismatch(tmp_path):
    images, _ = write_split(tmp_path, n=6, labels=np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        M.load_mnist("test", tmp_path)


def test_bad_gzip(tmp_path):
    write_split(tmp_path)
    (tmp_path / (M.FILES["test"][1] + ".gz")).write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*not a readable gzip"):
        M.load_mnist("test", tmp_path)
    # A gzip stream cut short.
    good = gzip.compress(idx_bytes(M.LABEL_MAGIC, (5,), bytes(5)))
    (tmp_path / (M.FILES["test"][1] + ".gz")).write_bytes(good[:len(good) // 2])
    with pytest.raises(ValueError, match="not a readable gzip"):
        M.load_mnist("test", tmp_path)


def test_label_out_of_range(tmp_path):
    write_split(tmp_path, n=5, labels=np.array([1, 2, 10, 3, 4], np.uint8))
    with pytest.raises(ValueError, match=r"t10k-labels.*label 10 at index 2.*0\.\.9"):
        M.load_mnist("test", tmp_path)


def test_wrong_image_dimensions(tmp_path):
    rng = np.random.default_rng(1)
    write_split(tmp_path, images=rng.integers(0, 256, (3, 32, 32)).astype(np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images.*32 x 32.*expected 28 x 28"):
        M.load_mnist("test", tmp_path)


def test_missing_file(tmp_path):
    write_split(tmp_path)
    (tmp_path / (M.FILES["test"][1] + ".gz")).unlink()
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*missing"):
        M.load_mnist("test", tmp_path)


# --- training augmentation -----------------------------------------------------------

def _shift_one(img, dy, dx):
    """Slow reference: move one image by (dy, dx) pixels, pixel by pixel."""
    out = np.zeros_like(img)
    h, w = img.shape
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[i, j] = img[si, sj]
    return out


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_random_shift_matches_pixel_loop(max_shift):
    rng = np.random.default_rng(max_shift)
    imgs = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8)
    out = M.random_shift(imgs, max_shift, np.random.default_rng(9))
    # The documented draw order: row shifts for the batch, then column shifts.
    draw = np.random.default_rng(9)
    dy = draw.integers(-max_shift, max_shift + 1, 40)
    dx = draw.integers(-max_shift, max_shift + 1, 40)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    for b in range(40):
        np.testing.assert_array_equal(out[b], _shift_one(imgs[b], dy[b], dx[b]))
    # Several different shifts were exercised, including a diagonal one.
    assert len(set(zip(dy, dx))) > 5 and np.any((dy != 0) & (dx != 0))


def test_random_shift_zero_is_a_copy_and_input_untouched():
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    keep = imgs.copy()
    out = M.random_shift(imgs, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, imgs)
    assert out is not imgs
    M.random_shift(imgs, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(imgs, keep)


@pytest.mark.parametrize("bad,match", [(-1, r"max_shift=-1 is not allowed: must be an integer in 0\.\.27"),
                                       (28, r"max_shift=28 is not allowed"),
                                       (1.5, r"max_shift=1\.5 is not allowed"),
                                       (True, r"max_shift=True is not allowed")])
def test_random_shift_bad_shift(bad, match):
    with pytest.raises(ValueError, match=match):
        M.random_shift(np.zeros((1, 28, 28), np.uint8), bad, np.random.default_rng(0))


def test_random_shift_bad_images_and_rng():
    with pytest.raises(ValueError, match=r"images have shape \(28, 28\); expected \(batch, height, width\)"):
        M.random_shift(np.zeros((28, 28), np.uint8), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rng=3 is not a numpy.random.Generator"):
        M.random_shift(np.zeros((1, 28, 28), np.uint8), 1, 3)
