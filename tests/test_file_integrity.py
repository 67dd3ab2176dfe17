"""Every file bss2sim writes or ships says what it is and is refused when damaged,
edited, of another kind or incomplete; writes are atomic and leave no temporaries
behind (bss2sim.experiments.common and its users)."""
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from bss2sim.circuits import constants as K
from bss2sim.circuits.chip import CAPMEM_PARAMETERS, ChipConfig
from bss2sim.experiments import common as C
from bss2sim.experiments.calibration import persistence as P
from bss2sim.experiments.datasets.mnist import load_test_set as _load_test_images
from bss2sim.experiments.train import NETWORK_FILE, PACKAGE_DATA, RESULTS_FILE, TEST_IMAGES_FILE
from bss2sim.experiments.training import Adam, MnistNet
from bss2sim.experiments.training import checkpoint as CK


# --- files of every kind ------------------------------------------------------------

def _calibration(path):
    rng = np.random.default_rng(1)
    cfg = ChipConfig()
    for half in range(K.NUM_HALVES):
        cfg.set_driver_offsets(half, rng.integers(0, K.DRIVER_OFFSET_MAX + 1, K.DRIVERS_PER_HALF))
    for p in CAPMEM_PARAMETERS.values():
        cfg.set_capmem(p.name, rng.integers(0, K.CAPMEM_MAX + 1, p.shape))
    return P.save_calibration(path, cfg, chip_seed=2, target_id="t1", metadata={"note": "x"})


def _checkpoint(path, stage="float training"):
    net = MnistNet(seed=0)
    opt = Adam(net.parameters(), lr=0.1)
    opt.step([np.ones_like(p) for p in net.parameters()])
    return CK.save_checkpoint(path, net, opt, 2, np.random.default_rng(5), metadata={"stage": stage})


def _test_images(path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    return C.save_test_images(path, images, labels, source="random test digits")


def _results(path):
    return C.save_results(path, {"chip_seed": 0, "float": 0.98, "further_chips": [
        {"chip_seed": 1, "without_fine_tuning": 0.97, "with_fine_tuning": 0.975}],
        "gain": np.float64(0.00144), "n": np.int64(3)})


WRITERS = {"calibration": _calibration, "checkpoint": _checkpoint, "test images": _test_images,
           "results": _results}
LOADERS = {"calibration": P.read_calibration, "checkpoint": CK.load_checkpoint,
           "test images": C.load_test_images, "results": C.load_results}
KIND = {"calibration": "bss2sim-calibration", "checkpoint": "bss2sim-checkpoint",
        "test images": "bss2sim-mnist-test-images", "results": "bss2sim-mnist-results"}
NPZ = ("calibration", "checkpoint", "test images")
SUFFIX = {"calibration": ".npz", "checkpoint": ".npz", "test images": ".npz", "results": ".json"}


def _make(tmp_path, which, name=None):
    return WRITERS[which](tmp_path / (name or f"file{SUFFIX[which]}"))


def _content(which, loaded):
    """What a loaded file hands on, as bytes: equal exactly when the results are."""
    if which == "calibration":
        parts = [loaded.chip_seed, loaded.target_id, loaded.metadata,
                 {k: v.tobytes().hex() for k, v in sorted(loaded.settings.items())}]
    elif which == "checkpoint":
        opt = {k: (v if k not in "mv" else [a.tobytes().hex() for a in v])
               for k, v in loaded.optimizer_state.items()}
        parts = [loaded.epoch, loaded.network_config, loaded.rng_state, loaded.accelerator_state,
                 loaded.metadata, opt, {k: v.tobytes().hex() for k, v in loaded.network_state.items()}]
    elif which == "test images":
        parts = [a.dtype.str + str(a.shape) + a.tobytes().hex() for a in loaded]
    else:
        parts = loaded
    return json.dumps(parts, sort_keys=True).encode()


def _refused(load, path, *fragments):
    """Loading ``path`` raises a ValueError that names the file (and says the fragments)."""
    with pytest.raises(ValueError) as e:
        load(path)
    msg = str(e.value)
    assert path.name in msg, msg
    for f in fragments:
        assert re.search(f, msg), (f, msg)
    return msg


# --- zip surgery: a changed member with a correct zip CRC ---------------------------

def _members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _rezip(path, members: dict, method=zipfile.ZIP_STORED):
    """Write ``members`` (name -> bytes) as a new zip, CRCs computed afresh."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())


def _npy(array, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=allow_pickle)
    return buf.getvalue()


def _header(path) -> dict:
    raw = _members(path)["header.npy"]
    return json.loads(np.load(io.BytesIO(raw)).tobytes())


def _edit_header(path, edit):
    """Apply ``edit`` to the header dict and store it back, the zip CRC redone
    but the file's own checksum left alone."""
    members = _members(path)
    header = _header(path)
    edit(header)
    members["header.npy"] = _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))
    _rezip(path, members)


def _rewrite_valid(path, fields=None, arrays=None, drop=(), kind=None, version=None):
    """Rewrite an archive through the real writer: a foreign file whose
    checksum is valid, so only the content checks can refuse it."""
    members = _members(path)
    stored = {n[:-4]: np.load(io.BytesIO(b)) for n, b in members.items()}
    header = json.loads(stored.pop("header").tobytes())
    old_kind, old_version = header.pop("kind"), header.pop("format_version")
    header.pop("sha256")
    header.update(fields or {})
    stored.update(arrays or {})
    for k in drop:
        stored.pop(k)
    C.write_archive(path, kind or old_kind, old_version if version is None else version, header, stored)


# --- what every file records ----------------------------------------------------

@pytest.mark.parametrize("which", list(WRITERS))
def test_every_file_records_kind_version_and_checksum(tmp_path, which):
    path = _make(tmp_path, which)
    if which in NPZ:
        header = _header(path)
        arrays = {n[:-4]: np.load(io.BytesIO(b)) for n, b in _members(path).items() if n != "header.npy"}
    else:
        header, arrays = json.loads(path.read_text()), {}
    assert header["kind"] == KIND[which] and isinstance(header["format_version"], int)
    assert header["sha256"] == C.content_checksum(header, arrays)
    loaded = LOADERS[which](path)
    assert _content(which, loaded) == _content(which, LOADERS[which](path))
    assert os.listdir(tmp_path) == [path.name]


def test_results_round_trip_converts_numpy_values(tmp_path):
    res = C.load_results(_results(tmp_path / "r.json"))
    assert res["gain"] == 0.00144 and res["n"] == 3 and type(res["n"]) is int
    assert "kind" not in res and "sha256" not in res
    assert res["further_chips"][0]["with_fine_tuning"] == 0.975


def test_checksum_is_canonical():
    """Key order and JSON spacing do not matter; every value, name, dtype,
    shape and byte does."""
    a = {"x": np.arange(6, dtype="<i4").reshape(2, 3), "y": np.zeros(3)}
    h = {"kind": "k", "format_version": 1, "f": {"b": 1, "a": [1.5, None]}}
    ref = C.content_checksum(h, a)
    assert C.content_checksum(dict(reversed(list(h.items()))), dict(reversed(list(a.items())))) == ref
    assert C.content_checksum({**h, "sha256": "0" * 64}, a) == ref
    changed = [
        ({**h, "f": {"b": 1, "a": [1.5, 0]}}, a),
        ({**h, "f": {"b": 1.0, "a": [1.5, None]}}, a),            # 1.0 is not 1
        (h, {**a, "x": a["x"].astype("<i8")}),
        (h, {**a, "x": a["x"].reshape(3, 2)}),
        (h, {"x2": a["x"], "y": a["y"]}),
        (h, {**a, "y": np.array([0.0, 0.0, -0.0])}),
        (h, {"x": a["x"]}),
    ]
    for hh, aa in changed:
        assert C.content_checksum(hh, aa) != ref


# --- edited headers (zip CRC redone) ---------------------------------------------------

CHECKPOINT_EDITS = {
    "num_sends": lambda h: h["network"]["num_sends"].__setitem__(0, h["network"]["num_sends"][0] + 1),
    "gain": lambda h: h["network"].__setitem__("gain", h["network"]["gain"] * 1.01),
    "seed": lambda h: h["network"].__setitem__("seed", 7),
    "shifts": lambda h: h["network"].__setitem__("shifts", [2, 1]),
    "epoch": lambda h: h.__setitem__("epoch", h["epoch"] + 1),
    "lr": lambda h: h["optimizer"].__setitem__("lr", 0.5),
    "betas": lambda h: h["optimizer"]["betas"].__setitem__(0, 0.8),
    "t": lambda h: h["optimizer"].__setitem__("t", 0),
    "rng": lambda h: h["rng"]["state"].__setitem__("state", h["rng"]["state"]["state"] + 1),
    "accelerator": lambda h: h.__setitem__("accelerator", {"fidelity": "fast", "noise_seed": 0,
                                                           "noise_state": {"0": 5}}),
    "metadata": lambda h: h["metadata"].__setitem__("stage", "fine-tuned"),
    "param_names": lambda h: h["param_names"].reverse(),
    "sha256 only": lambda h: h.__setitem__("sha256", "0" * 64),
}


@pytest.mark.parametrize("edit", list(CHECKPOINT_EDITS))
def test_checkpoint_header_edit_is_refused(tmp_path, edit):
    path = _checkpoint(tmp_path / "ck.npz")
    _edit_header(path, CHECKPOINT_EDITS[edit])
    _refused(CK.load_checkpoint, path, "corrupt: the SHA-256 checksum")


@pytest.mark.parametrize("which, field, value", [
    ("calibration", "chip_seed", 0), ("calibration", "target_id", "t2"),
    ("calibration", "metadata", {}), ("test images", "count", 29),
    ("test images", "source", "other")])
def test_header_edit_is_refused(tmp_path, which, field, value):
    path = _make(tmp_path, which)
    _edit_header(path, lambda h: h.__setitem__(field, value))
    _refused(LOADERS[which], path, "corrupt: the SHA-256 checksum")


@pytest.mark.parametrize("which", NPZ)
def test_kind_version_and_field_edits(tmp_path, which):
    path = _make(tmp_path, which)
    good = path.read_bytes()
    _edit_header(path, lambda h: h.__setitem__("format_version", h["format_version"] + 1))
    _refused(LOADERS[which], path, "newer than this code reads")
    path.write_bytes(good)
    _edit_header(path, lambda h: h.__setitem__("kind", "bss2sim-other"))
    _refused(LOADERS[which], path, "kind 'bss2sim-other'", f"not of kind '{KIND[which]}'")
    path.write_bytes(good)
    _edit_header(path, lambda h: h.pop("kind"))
    _refused(LOADERS[which], path, "does not say what kind")
    path.write_bytes(good)
    _edit_header(path, lambda h: h.update(extra=1))
    _refused(LOADERS[which], path, "unexpected field.*extra")
    path.write_bytes(good)
    _edit_header(path, lambda h: h.pop("sha256"))
    _refused(LOADERS[which], path, "lacks sha256")


def test_results_edits_are_refused(tmp_path):
    path = _results(tmp_path / "r.json")
    good = path.read_text()
    for old, new, fragment in [('"float": 0.98', '"float": 0.99', "checksum"),
                               ('"chip_seed": 1', '"chip_seed": 2', "checksum"),
                               ('"kind": "bss2sim-mnist-results"', '"kind": "bss2sim-calibration"',
                                "kind 'bss2sim-calibration'"),
                               ('"format_version": 1', '"format_version": 2', "newer than"),
                               ('"chip_seed": 0,', '"chip_seed": 0, "chip_seed": 3,', "occurs twice")]:
        assert old in good
        path.write_text(good.replace(old, new, 1))
        _refused(C.load_results, path, fragment)
    # Spacing is not content.
    path.write_text(json.dumps(json.loads(good)))
    assert C.load_results(path)["float"] == 0.98


# --- a file of another kind -------------------------------------------------------

@pytest.mark.parametrize("given, expected", [(g, e) for g in WRITERS for e in LOADERS if g != e])
def test_file_of_another_kind_is_refused(tmp_path, given, expected):
    # Named as the loader expects: a file renamed or copied over another one.
    path = _make(tmp_path, given, name=f"target{SUFFIX[expected]}")
    if given in NPZ and expected in NPZ:
        _refused(LOADERS[expected], path, f"kind '{KIND[given]}'", f"not of kind '{KIND[expected]}'")
    else:
        _refused(LOADERS[expected], path)


def test_foreign_kind_with_valid_checksum(tmp_path):
    path = C.write_archive(tmp_path / "cal.npz", "someone-else", 1, {"chip_seed": 0}, {"a": np.zeros(3)})
    _refused(P.read_calibration, path, "kind 'someone-else'", "not of kind 'bss2sim-calibration'")
    C.write_json_file(tmp_path / "r.json", "bss2sim-calibration", 1, {"x": 1})
    _refused(C.load_results, tmp_path / "r.json", "kind 'bss2sim-calibration' \\(a chip calibration\\)")


def test_checkpoint_of_another_stage_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "ckpt_noise.npz", stage="float training")
    assert CK.load_checkpoint(path, expect_metadata={"stage": "float training"}).epoch == 2
    _refused(lambda p: CK.load_checkpoint(p, expect_metadata={"stage": "noise-aware training"}), path,
             "stage='float training', not 'noise-aware training'")
    _refused(lambda p: CK.load_checkpoint(p, expect_metadata={"chip_seed": 0}), path, "chip_seed=none")


def test_old_format_files_are_refused(tmp_path):
    """Files as bss2sim wrote them before it recorded a kind."""
    path = _checkpoint(tmp_path / "ck.npz")
    _edit_header(path, lambda h: (h.pop("kind"), h.update(magic="bss2sim-training-checkpoint")))
    _refused(CK.load_checkpoint, path, "old bss2sim file format", "train again")
    images = tmp_path / "mnist_test.npz"
    np.savez_compressed(images, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.uint8))
    _refused(C.load_test_images, images, "has no header")
    results = tmp_path / "mnist_results.json"
    results.write_text(json.dumps({"chip_seed": 0, "float": 0.98}))
    _refused(C.load_results, results, "does not say what kind", "run bss2sim train again")


# --- foreign content with a valid checksum ----------------------------------------

@pytest.mark.parametrize("which, change, fragment", [
    ("test images", dict(arrays={"labels": np.arange(30, dtype=np.int64) % 10}), "labels have dtype int64"),
    ("test images", dict(arrays={"images": np.zeros((30, 28, 27), np.uint8)}), "images have dtype"),
    ("test images", dict(arrays={"labels": np.full(30, 10, np.uint8)}), "a label is 10"),
    ("test images", dict(fields={"count": 31}), "says 31 images"),
    ("test images", dict(drop=["labels"]), "lacks the array.*labels"),
    ("test images", dict(arrays={"extra": np.zeros(2)}), "unexpected array.*extra"),
    ("test images", dict(version=2), "newer than"),
    ("test images", dict(version=0), "older than"),
    ("test images", dict(fields={"more": 1}), "unexpected field.*more"),
    ("checkpoint", dict(arrays={"param.fc2.weight": np.zeros((128, 10), np.float32)}), "dtype float32"),
    ("checkpoint", dict(arrays={"param.fc2.weight": np.zeros((10, 10)), "adam.m.2": np.zeros((10, 10)),
                                "adam.v.2": np.zeros((10, 10))}), "cannot be rebuilt.*shape"),
    ("checkpoint", dict(arrays={"adam.v.1": np.zeros((3, 3))}), r"adam.v.1 has shape \(3, 3\)"),
    ("checkpoint", dict(arrays={"param.fc1.weight": np.full((500, 128), np.nan)}), "NaN"),
    ("checkpoint", dict(drop=["adam.m.0"]), "lacks the array.*adam.m.0"),
    ("checkpoint", dict(fields={"network": {"gain": 0.001, "colour": "red"}}), "cannot be rebuilt"),
    ("checkpoint", dict(fields={"epoch": -1}), "epoch -1"),
    ("checkpoint", dict(fields={"optimizer": {"lr": -1.0, "betas": [0.9, 0.999], "eps": 1e-8, "t": 1}}),
     "cannot be rebuilt.*lr"),
    ("checkpoint", dict(fields={"rng": {"bit_generator": "Nope"}}), "bit generator 'Nope'"),
    ("checkpoint", dict(fields={"param_names": "conv.weight"}), "param_names"),
    ("calibration", dict(arrays={"driver_offset": np.full((2, 128), 64, np.uint8)}), "out of range"),
    ("calibration", dict(arrays={"driver_offset": np.zeros((2, 128), np.int16)}), "dtype int16"),
    ("calibration", dict(fields={"chip_seed": -3}), "chip_seed in the header"),
    ("calibration", dict(drop=["capmem.leak_bias"]), "lacks the array.*capmem.leak_bias"),
])
def test_foreign_content_with_valid_checksum(tmp_path, which, change, fragment):
    path = _make(tmp_path, which)
    _rewrite_valid(path, **change)
    _refused(LOADERS[which], path, fragment)


# --- damaged bytes --------------------------------------------------------------------

@pytest.mark.parametrize("which", list(WRITERS))
def test_not_a_file_of_ours(tmp_path, which):
    load = LOADERS[which]
    path = tmp_path / f"x{SUFFIX[which]}"
    _refused(load, path, "does not exist")
    path.mkdir()
    _refused(load, path, "not a regular file")
    path.rmdir()
    for content in (b"", b"\n", b"garbage" * 50, b"PK\x03\x04" + bytes(range(256)) * 4,
                    b"\x93NUMPY" + bytes(100), b"\xff\xfe{}", b"[1, 2]", b"{\"a\": 1}",
                    b"\x1f\x8b\x08" + bytes(40)):
        path.write_bytes(content)
        _refused(load, path)


def test_damaged_zip_structures(tmp_path):
    path = _test_images(tmp_path / "t.npz")
    members = _members(path)
    cases = {
        "not an .npy array": {**members, "notes.txt": b"hello"},
        "holds an array name twice": None,
        "cannot be read": {**members, "labels.npy": _npy(np.zeros(30, np.uint8))[:-5]},
        "Python objects": {**members, "labels.npy": _npy(np.array([1, "a"], object), allow_pickle=True)},
        "has no header": {k: v for k, v in members.items() if k != "header.npy"},
    }
    for fragment, m in cases.items():
        if m is None:
            with pytest.warns(UserWarning):        # zipfile warns about the duplicate
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as z:
                    for name, data in [*members.items(), ("labels.npy", members["labels.npy"])]:
                        z.writestr(name, data)
            path.write_bytes(buf.getvalue())
        else:
            _rezip(path, m)
        _refused(C.load_test_images, path, fragment)
    # A shape that claims more data than the member holds (npy header
    # rewritten, CRC redone): refused before anything is allocated.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (99_999_999_999,)})
    _rezip(path, {**members, "labels.npy": buf.getvalue() + bytes(30)})
    _refused(C.load_test_images, path, "cannot be read", "holds 30 bytes of data")


@pytest.mark.parametrize("flag_offset, value, fragment", [(10, 99, "compression method"),
                                                          (8, 1, "encrypted")])
def test_unsupported_zip_features(tmp_path, flag_offset, value, fragment):
    path = _test_images(tmp_path / "t.npz")
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")            # first central directory entry
    data[entry + flag_offset:entry + flag_offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    _refused(C.load_test_images, path, "cannot be read", fragment)


@pytest.mark.parametrize("which", list(WRITERS))
def test_every_truncation_and_flipped_byte_is_refused_or_harmless(tmp_path, which):
    """Truncated anywhere: always refused. A flipped byte anywhere (sampled, and
    every byte of the header member): refused with a ValueError naming the
    file, or -- in bytes that carry nothing, like zip timestamps -- the same
    content as before. Never another exception."""
    path = _make(tmp_path, which)
    load = LOADERS[which]
    good = path.read_bytes()
    ref = _content(which, load(path))
    rng = np.random.default_rng(0)
    cuts = np.unique(np.concatenate([np.arange(0, min(len(good), 200)),
                                     rng.integers(0, len(good), 60), [len(good) - 1]]))
    for n in cuts:
        path.write_bytes(good[:n])
        if good[n:].strip() == b"":               # a JSON file without its final newline
            assert _content(which, load(path)) == ref
        else:
            _refused(load, path)
    # The checkpoint (1.6 MB) is sampled more sparsely to keep the test quick.
    step = {"checkpoint": 4, "calibration": 2}.get(which, 1)
    where = good.find(b"header.npy")
    spots = set(rng.integers(0, len(good), 100).tolist()) | set(range(len(good) - 300, len(good), step))
    if which in NPZ:
        spots |= set(range(max(0, where - 40), min(len(good), where + 700), step))
    harmless = 0
    for i in sorted(s for s in spots if 0 <= s < len(good)):
        data = bytearray(good)
        data[i] ^= 0x5A
        path.write_bytes(bytes(data))
        try:
            loaded = load(path)
        except ValueError as e:
            assert path.name in str(e), str(e)
        else:
            assert _content(which, loaded) == ref, f"byte {i} changed the content silently"
            harmless += 1
    assert harmless < len(spots)


# --- atomic writes, interrupted writes and their temporaries ---------------------

def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp_of(path, pid):
    tmp = path.parent / f".{path.name}.{pid}-0123abcd.tmp"
    tmp.write_bytes(b"PK\x03\x04 half a file")
    return tmp


def test_leftover_temporaries_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "cal.npz"
    dead = _temp_of(path, _dead_pid())
    mine = _temp_of(path, os.getpid())                       # a write in progress here
    parent = _temp_of(path, os.getppid())                    # ... or in a running process
    other_target = _temp_of(tmp_path / "other.npz", _dead_pid())
    unrelated = tmp_path / ".cal.npz.notes.tmp"
    unrelated.write_text("mine")
    assert set(C.temporary_files(path)) == {dead, mine, parent}
    _calibration(path)
    assert not dead.exists()
    assert mine.exists() and parent.exists() and other_target.exists() and unrelated.exists()
    P.read_calibration(path)


@pytest.mark.skipif(C.fcntl is None, reason="no advisory locks on this platform")
def test_locked_temporary_is_left_alone(tmp_path):
    """A temporary whose pid looks free but whose writer still holds its lock
    (another pid namespace, a shared folder) is not removed."""
    path = tmp_path / "t.npz"
    tmp = _temp_of(path, _dead_pid())
    with open(tmp, "rb") as f:
        C.fcntl.flock(f.fileno(), C.fcntl.LOCK_EX)
        assert C.remove_stale_temporaries(path) == []
        assert tmp.exists()
    assert C.remove_stale_temporaries(path) == [tmp]


@pytest.mark.parametrize("error", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, error):
    path = _results(tmp_path / "r.json")
    before = path.read_bytes()

    def broken(f):
        f.write(b"{\"half\": ")
        raise error

    with pytest.raises(type(error)):
        C.atomic_write(path, broken)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_figure_is_written_atomically(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    _temp_of(tmp_path / "f.png", _dead_pid())
    C.save_figure(fig, tmp_path / "f.png")
    plt.close(fig)
    assert os.listdir(tmp_path) == ["f.png"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KILLED_WRITER = """
import sys
import numpy as np
from bss2sim.experiments.common import write_archive
path = sys.argv[1]
print("ready", flush=True)
i = 0
while True:
    i += 1
    write_archive(path, "bss2sim-kill-test", 1, {"i": i}, {"a": np.full(1_500_000, i, np.int32)})
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_killed_writes_leave_a_complete_file_and_no_pile_of_temporaries(tmp_path):
    """SIGKILL a process at random moments while it rewrites a 6 MB archive in
    a loop, 20 times: the target is always the old complete file or a new
    complete one that verifies, killed writers' temporaries never pile up, and
    the next successful write leaves none behind."""
    path = tmp_path / "big.npz"

    def check():
        header, arrays = C.read_archive(path, kind="bss2sim-kill-test", format_version=1,
                                        fields=("i",), what="a test file", array_names={"a"})
        assert arrays["a"].shape == (1_500_000,) and np.all(arrays["a"] == header["i"])
        return header["i"]

    t = time.perf_counter()
    C.write_archive(path, "bss2sim-kill-test", 1, {"i": 0}, {"a": np.zeros(1_500_000, np.int32)})
    write_s = time.perf_counter() - t
    rng = np.random.default_rng(7)
    orphans = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 2.5 * write_s))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        check()
        # Each write removes the temporaries of killed writers first.
        left = C.temporary_files(path)
        assert len(left) <= 1, left
        orphans += len(left)
    assert orphans > 0, "no kill hit a write in progress"
    C.write_archive(path, "bss2sim-kill-test", 1, {"i": 99}, {"a": np.full(1_500_000, 99, np.int32)})
    assert os.listdir(tmp_path) == [path.name] and check() == 99


# --- the shipped files --------------------------------------------------------------

SHIPPED_ARRAYS = {
    # settings_checksum of the arrays as shipped before the files recorded a
    # kind: converting the files changed no array bit.
    NETWORK_FILE: "8388ffccd0eb9786247f9addbfe47d9c8cefa0f39533fbdcd385b3e833fd2cc8",
    # Chip 0's calibration was remade when the analog model gained its
    # second-order effects and the synaptic time-constant cells (new capmem arrays).
    "bss2-calibration-seed0-e0209e9683.npz":
        "61ffffa0739027b475a743404fed9a85f3e71886b3ecf3dcb07c386261619e46",
}


def test_shipped_files_record_their_kind_and_load_unchanged():
    names = sorted(p.name for p in PACKAGE_DATA.iterdir() if not p.name.startswith("."))
    cal = [n for n in names if n.startswith("bss2-calibration-seed0-")]
    assert len(cal) == 1 and set(names) == {NETWORK_FILE, TEST_IMAGES_FILE, RESULTS_FILE, *cal}
    kinds = {NETWORK_FILE: "bss2sim-checkpoint", TEST_IMAGES_FILE: "bss2sim-mnist-test-images",
             cal[0]: "bss2sim-calibration"}
    for name, kind in kinds.items():
        header = _header(PACKAGE_DATA / name)
        assert header["kind"] == kind and header["format_version"] >= 1, name
    results = json.loads((PACKAGE_DATA / RESULTS_FILE).read_text())
    assert results["kind"] == "bss2sim-mnist-results"
    assert C.load_results(PACKAGE_DATA / RESULTS_FILE)["chip_seed"] == 0

    ck = CK.load_checkpoint(PACKAGE_DATA / NETWORK_FILE, expect_metadata={"stage": "fine-tuned"})
    arrays = {f"param.{k}": v for k, v in ck.network_state.items()}
    arrays.update({f"adam.{k}.{i}": a for k in "mv" for i, a in enumerate(ck.optimizer_state[k])})
    assert P.settings_checksum(arrays) == SHIPPED_ARRAYS[NETWORK_FILE]
    calib = P.read_calibration(PACKAGE_DATA / cal[0], chip_seed=0)
    assert P.settings_checksum(dict(calib.settings)) == SHIPPED_ARRAYS[cal[0]]
    x, y = _load_test_images()
    assert hashlib.sha256(x.tobytes()).hexdigest() == \
        "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"
    assert hashlib.sha256(y.tobytes()).hexdigest() == \
        "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"
    assert x.dtype == np.uint8 and x.shape == (10_000, 28, 28) and y.dtype == np.uint8


def test_damaged_copy_of_the_shipped_test_images(tmp_path, monkeypatch):
    """The demo's loader refuses a damaged shipped file with a message that
    names it, never a raw traceback from zip or zlib."""
    from bss2sim.experiments.datasets import mnist
    good = (PACKAGE_DATA / TEST_IMAGES_FILE).read_bytes()
    path = tmp_path / TEST_IMAGES_FILE
    monkeypatch.setattr(mnist, "SHIPPED_TEST_SET", path)
    for damage in (lambda d: d[: len(d) // 2], lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:],
                   lambda d: d[:800_000] + bytes([d[800_000] ^ 1]) + d[800_001:], lambda d: b""):
        path.write_bytes(damage(good))
        _refused(lambda p: mnist.load_test_set(), path)


def test_checkpoint_keeps_every_noise_stream_position(tmp_path):
    """The accelerator's noise positions are part of what the checksum covers
    and are restored stream by stream."""
    from bss2sim.digital import Accelerator
    from bss2sim.digital.accelerator import BehaviouralParams
    beh = BehaviouralParams(0.0015, 2.0)
    acc = Accelerator(behavioural=beh, noise_seed=5)
    if not hasattr(acc, "set_noise_state"):
        pytest.skip("this accelerator has a single noise stream")
    acc.set_noise_state({0: 3, 2: 7})
    net = MnistNet(seed=0)
    path = CK.save_checkpoint(tmp_path / "ck.npz", net, Adam(net.parameters()), 1,
                              np.random.default_rng(0), accelerator=acc)
    ck = CK.load_checkpoint(path)
    assert ck.accelerator_state["noise_state"] == {"0": 3, "2": 7}
    fresh = Accelerator(behavioural=beh, noise_seed=5)
    ck.build(accelerator=fresh)
    assert fresh.noise_state() == {0: 3, 2: 7}
    _edit_header(path, lambda h: h["accelerator"]["noise_state"].__setitem__("2", 8))
    _refused(CK.load_checkpoint, path, "checksum")
