"""MNIST handwritten digits: the IDX reader, the chip's input quantisation and
the training augmentation.

The data set comes in the IDX layout of its authors (LeCun, Cortes and
Burges): a big-endian uint32 magic number (``0x00000803`` for images,
``0x00000801`` for labels), one big-endian uint32 per dimension, then the raw
uint8 data. The four files of a split are named

* ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (60,000 digits),
* ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (10,000 digits),

each either as is or gzip-compressed with the suffix ``.gz`` (an uncompressed
file is preferred when both exist). The folder is the ``data_dir`` argument,
else the environment variable ``BSS2SIM_MNIST_DIR``; the machines of this
project have no internet access, so nothing is downloaded.

Anything wrong with a file -- missing, not gzip when named ``.gz``, bad magic,
truncated header or data, trailing bytes, images that are not 28 x 28, labels
outside 0..9, image and label counts that differ -- raises a ``ValueError``
that names the file and the problem.

:func:`load_idx` reads the same four files for any image size and class
count (``bss2sim train --data FOLDER``) with the same checks, the image
shape and label range left to the caller; :func:`load_mnist` is
:func:`load_idx` with MNIST's 28 x 28 pixels and labels 0..9.

Only the 10,000 test images are shipped with the package (checked copy, see
:func:`load_test_set`); the 60,000 training images come from the authors' files,
which ``bss2sim train --data-dir`` (or ``BSS2SIM_MNIST_DIR``) points at.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from bss2sim.circuits import constants as K

from ..common import as_path, load_test_images

__all__ = ["ENV_VAR", "FILES", "IMAGE_MAGIC", "LABEL_MAGIC", "SHIPPED_TEST_SET", "find_data_dir",
           "load_idx", "load_mnist", "quantise_images", "random_shift", "read_idx", "load_test_set"]

ENV_VAR = "BSS2SIM_MNIST_DIR"
"""Environment variable naming the MNIST folder when no ``data_dir`` is given."""

IMAGE_MAGIC = 0x00000803
"""IDX magic of a 3-d uint8 array (images)."""
LABEL_MAGIC = 0x00000801
"""IDX magic of a 1-d uint8 array (labels)."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Base names (without ``.gz``) of the image and label file of each split."""

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


def find_data_dir(data_dir=None) -> Path:
    """The MNIST folder: ``data_dir`` if given, else ``$BSS2SIM_MNIST_DIR``."""
    if data_dir is None or data_dir == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise ValueError(f"no MNIST folder given: pass --data-dir (data_dir=...) or set the "
                             f"environment variable {ENV_VAR} to the folder holding "
                             f"{FILES['train'][0]}[.gz] and the other IDX files")
        data_dir = env
    path = as_path("data_dir", data_dir)
    if not path.is_dir():
        raise ValueError(f"MNIST folder {str(path)!r} does not exist or is not a folder; pass "
                         f"--data-dir (data_dir=...) or set {ENV_VAR} to the folder holding the "
                         "IDX files")
    return path


def _find_file(folder: Path, base: str, what: str = "MNIST") -> Path:
    for name in (base, base + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    raise ValueError(f"{what} file {base!r} (or {base + '.gz'!r}) is missing in {str(folder)!r}")


def _read_bytes(path: Path, what: str = "MNIST") -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{what} file {str(path)!r} cannot be read: {e}") from e
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{what} file {str(path)!r} is not a readable gzip file (corrupt or "
                             f"truncated): {e}") from e
    return raw


def read_idx(path, magic: int, what: str = "MNIST") -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip-compressed if its name ends in
    ``.gz``) and check its magic number, header and length. Returns a uint8
    array with the shape the header gives. ``what`` names the data set in
    messages ("MNIST file ...")."""
    path = as_path("path", path)
    data = _read_bytes(path, what)
    where = f"{what} file {str(path)!r}"
    if len(data) < 4:
        raise ValueError(f"{where} has a truncated header: {len(data)} bytes, fewer than the "
                         "4 of the magic number")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ValueError(f"{where} has bad magic number 0x{got:08x}; expected 0x{magic:08x} "
                         f"({'images' if magic == IMAGE_MAGIC else 'labels'}, IDX unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{where} has a truncated header: {len(data)} bytes, fewer than the "
                         f"{header} of the magic number and {ndim} dimension(s)")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)            # Python ints: no overflow for any header
    body = len(data) - header
    if body < size:
        raise ValueError(f"{where} has truncated data: the header gives dimensions {dims} "
                         f"({size} bytes) but only {body} bytes follow")
    if body > size:
        raise ValueError(f"{where} has {body - size} trailing bytes after the {size} bytes of "
                         f"data its header gives (dimensions {dims}); the file is corrupt")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims).copy()


def load_idx(split: str = "train", data_dir=None, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
             what: str = "MNIST"):
    """Images and labels of one split of a folder of IDX files named as MNIST's.

    Parameters
    ----------
    split : "train" or "test" (the file names of :data:`FILES`)
    data_dir : the folder; default ``$BSS2SIM_MNIST_DIR``
    image_shape : (height, width) every image must have, or None for any
        (at least 1 x 1)
    num_classes : labels must be in 0..num_classes-1, or None for any 0..255
    what : names the data set in messages

    Returns
    -------
    images : uint8 (N, height, width), values 0..255
    labels : uint8 (N,)
    """
    if split not in FILES:
        raise ValueError(f"split={split!r} is not allowed: use 'train' or 'test'")
    folder = find_data_dir(data_dir)
    img_path = _find_file(folder, FILES[split][0], what)
    lab_path = _find_file(folder, FILES[split][1], what)
    images = read_idx(img_path, IMAGE_MAGIC, what)
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise ValueError(f"{what} file {str(img_path)!r} holds images of {images.shape[1]} x "
                         f"{images.shape[2]} pixels; expected {image_shape[0]} x {image_shape[1]}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"{what} file {str(img_path)!r} holds images of {images.shape[1]} x "
                         f"{images.shape[2]} pixels; they need at least 1 x 1")
    labels = read_idx(lab_path, LABEL_MAGIC, what)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{what} files {str(img_path)!r} and {str(lab_path)!r} do not match: "
                         f"{images.shape[0]} images but {labels.shape[0]} labels")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        i = int(np.argmax(labels >= num_classes))
        raise ValueError(f"{what} file {str(lab_path)!r} has label {int(labels[i])} at index {i}; "
                         f"labels must be in 0..{num_classes - 1}")
    return images, labels


def load_mnist(split: str = "train", data_dir=None):
    """Images and labels of one MNIST split.

    Parameters
    ----------
    split : "train" (60,000 digits) or "test" (10,000 digits)
    data_dir : folder of the IDX files; default ``$BSS2SIM_MNIST_DIR``

    Returns
    -------
    images : uint8 (N, 28, 28), values 0..255
    labels : uint8 (N,), values 0..9
    """
    return load_idx(split, data_dir, IMAGE_SHAPE, NUM_CLASSES, "MNIST")


def quantise_images(images, bits: int = 5) -> np.ndarray:
    """Pixels 0..255 to chip inputs 0..2**bits - 1: ``round(pixel / 255 * (2**bits - 1))``
    (round half to even). Returns int64 of the same shape."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) \
            or not 1 <= bits <= K.INPUT_BITS:
        raise ValueError(f"bits={bits!r} is not allowed: must be an integer in 1..{K.INPUT_BITS}")
    a = np.asarray(images)
    if a.dtype.kind not in "iu":
        raise ValueError(f"images have dtype {a.dtype}; expected integers 0..255 (uint8)")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"images hold values {a.min()}..{a.max()}; expected 0..255")
    top = (1 << int(bits)) - 1
    return np.rint(a.astype(np.float64) * (top / 255.0)).astype(np.int64)


def random_shift(images, max_shift: int, rng) -> np.ndarray:
    """Training augmentation: each image moved by a whole number of pixels drawn
    uniformly from -max_shift..max_shift in each direction (rows first, then
    columns, from ``rng``), the uncovered border filled with 0. ``max_shift=0``
    returns the images unchanged.

    images : uint8 (batch, 28, 28); max_shift : pixels, 0..27; rng : numpy Generator.
    """
    a = np.asarray(images)
    if a.ndim != 3:
        raise ValueError(f"images have shape {a.shape}; expected (batch, height, width)")
    if isinstance(max_shift, (bool, np.bool_)) or not isinstance(max_shift, (int, np.integer)) \
            or not 0 <= max_shift < min(a.shape[1:], default=1):
        raise ValueError(f"max_shift={max_shift!r} is not allowed: must be an integer in "
                         f"0..{min(a.shape[1:], default=1) - 1} pixels")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r} is not a numpy.random.Generator")
    m = int(max_shift)
    if m == 0:
        return a.copy()
    B, H, W = a.shape
    dy = rng.integers(-m, m + 1, B)
    dx = rng.integers(-m, m + 1, B)
    padded = np.pad(a, ((0, 0), (m, m), (m, m)))
    out = np.empty_like(a)
    # One slice per distinct shift (at most (2m + 1)^2), not one per image.
    for sy in range(-m, m + 1):
        for sx in range(-m, m + 1):
            sel = np.nonzero((dy == sy) & (dx == sx))[0]
            if sel.size:
                # Content moves by (sy, sx): output pixel (i, j) shows input (i - sy, j - sx).
                out[sel] = padded[sel, m - sy:m - sy + H, m - sx:m - sx + W]
    return out


SHIPPED_TEST_SET = Path(__file__).resolve().parent.parent / "data" / "mnist_test.npz"
"""The checked copy of the MNIST test set shipped in the package."""


def load_test_set(data_dir=None):
    """``(images, labels)`` of the MNIST test set: from the IDX files in
    ``data_dir`` when given, else the shipped, checked copy."""
    if data_dir is not None:
        return load_mnist("test", data_dir)
    if not SHIPPED_TEST_SET.exists():
        raise ValueError(f"the shipped test images ({SHIPPED_TEST_SET.name}) are missing from the "
                         "package; pass --data-dir with the MNIST files")
    return load_test_images(SHIPPED_TEST_SET)
