"""The Monte-Carlo sweep over chip seeds (``bss2sim sweep``) on local Dask
clusters: three chips on 50 test images each, on two workers and on one
(killed in the middle and resumed on an existing cluster); resumption, a
failing seed, corrupt, foreign and mismatched tables, bad options, the drift
part on one small chip.

The same seeds are computed several times (two workers, one worker, a
resumed run): every computation of a seed must give the same row, bit for
bit, except the columns that measure the run itself. The whole file takes
about a minute and a half on two cores."""
import argparse
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest

from bss2sim.circuits import Chip
from bss2sim.experiments import demo, sweep
from bss2sim.experiments.calibration import CalibrationTarget, calibrate, store_calibration
from bss2sim.experiments.calibration.persistence import calibration_filename
from bss2sim.experiments.common import canonical_json
from bss2sim.experiments.validation import check_targets

SEEDS = [0, 1, 2]
IMAGES = 50
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def results(row) -> bytes:
    """A row without the columns that measure the run, in one comparable form
    (NaN equal to NaN, floats compared by their exact repr)."""
    return canonical_json({k: v for k, v in row.items() if k not in sweep.MEASURED_COLUMNS})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A calibration store holding a damaged file for chip 1: a sweep that read
    the store would fail on it. The workers inherit the variable."""
    folder = tmp_path_factory.mktemp("store")
    (folder / calibration_filename(1, CalibrationTarget().target_id)).write_bytes(b"not a calibration")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BSS2SIM_CALIBRATIONS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def two(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-workers")
    res = sweep.run(seeds=SEEDS, images=IMAGES, out=out, workers=2)
    return out, res, sweep.read_table(out / sweep.TABLE_FILE)


def test_one_row_per_seed_with_settings_figures_and_summary(two, store):
    out, res, table = two
    assert sorted(table.rows) == SEEDS and res["computed_seeds"] == SEEDS and res["skipped_seeds"] == []
    assert res["failed"] == {} and res["table_rows"] == 3
    names = [n for n, _ in table.columns]
    for r in table.rows.values():
        assert list(r) == names
        assert r["mnist_images"] == IMAGES and 0.9 < r["mnist_accuracy_rel"] <= 1.0
        assert r["mnist_accuracy_rel"] == r["mnist_correct"] / IMAGES
        assert 0 < r["calibration_silicon_time_s"] < 60 and r["calibration_wall_time_s"] > 0
        assert r["calibration_measurements"] > 100 and r["calibration_capmem_writes"] > 10
        assert 0.0005 < r["gain_lsb_per_xw"] < 0.005 and 0.5 < r["noise_trial_lsb"] < 5
        assert r["noise_independent_lsb"] ** 2 + r["noise_shared_quadrant_lsb"] ** 2 == pytest.approx(
            r["noise_trial_lsb"] ** 2)
        assert r["linear_range_low_lsb"] < 0 < r["linear_range_high_lsb"]
        assert r["targets_met"] == sum(r[f"residual_{n}_met"] for n in sweep.RESIDUAL_TARGETS)
        assert 0 <= r["truth_cadc_fraction_within_1_rel"] <= 1
        # Peak memory of the worker process while the task ran: imports, chip, network.
        assert 100 < r["peak_rss_mib"] < 4096
        if sys.platform == "linux":
            assert r["peak_rss_method"].startswith("VmHWM")
        assert r["numba_threads"] == 1                   # several workers on one machine
        assert r["worker"].startswith("tcp://") and r["code_sha256"] == sweep.code_fingerprint()
    st = table.settings
    assert st["images"] == IMAGES and st["preset"] == "default" and st["drift"] is False
    assert st["bss2sim_version"] and st["numpy_version"] == np.__version__
    assert st["numba_version"] == numba.__version__ and st["python_version"]
    (entry,) = table.runs
    assert entry["seeds_computed"] == 3 and entry["dask_version"] and entry["workers"] == 2
    # The summary is the rows'.
    acc = {s: table.rows[s]["mnist_accuracy_rel"] for s in SEEDS}
    summ = res["summary"]["accuracy_rel"]
    assert summ["median"] == np.median(list(acc.values())) and summ["min"] == min(acc.values())
    assert summ["max"] == max(acc.values()) and acc[summ["worst_seed"]] == summ["min"]
    assert res["summary"]["chips"] == 3
    for name in sweep.FIGURE_ACCURACY, sweep.FIGURE_RESIDUALS:
        assert str(out / name) in res["figures"]
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    assert not (out / sweep.FIGURE_DRIFT).exists()
    # The store was neither read (its file for chip 1 is damaged) nor written.
    assert sorted(p.name for p in store.iterdir()) == [calibration_filename(1, CalibrationTarget().target_id)]


def test_the_rows_are_what_calibrate_validation_and_demo_give(two, tmp_path):
    _, _, table = two
    seed = SEEDS[-1]
    row = table.rows[seed]
    # One numba thread, as the tasks (other counts give the same results: test_determinism).
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        chip = Chip(seed)
        cal = calibrate(chip)
        store_calibration(cal, chip, tmp_path / "cal")
        d = demo.run(seed=seed, images=IMAGES, plots=tmp_path / "demo", calibration=tmp_path / "cal")
    finally:
        numba.set_num_threads(before)
    assert row["calibration_silicon_time_s"] == cal.silicon_time_s
    assert row["calibration_measurements"] == cal.measurements
    for name, c in check_targets(cal.residuals(), cal.target).items():
        assert row[f"residual_{name}_met"] == c["met"]
        assert canonical_json(row[sweep._residual_column(name)]) == canonical_json(c["value"])
    # bss2sim demo on the same calibration: the same accuracy and chip time.
    assert d["accuracy"] == row["mnist_accuracy_rel"]
    assert d["chip_time_per_image_s"] == row["mnist_chip_time_per_image_s"]


def test_a_second_run_computes_nothing(two, capsys):
    out, res, _ = two
    path = out / sweep.TABLE_FILE
    before = path.read_bytes()
    parser = sweep.add_arguments(argparse.ArgumentParser())
    capsys.readouterr()
    again = sweep.run_from_args(parser.parse_args(["--seeds", "0-2", "--images", str(IMAGES), "--out",
                                                   str(out), "--workers", "2", "--json"]))
    assert again["computed_seeds"] == [] and again["skipped_seeds"] == SEEDS
    assert again["cluster"].startswith("no cluster")          # none was even started
    assert path.read_bytes() == before                        # not rewritten
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["summary"] == json.loads(json.dumps(res["summary"]))
    assert printed["computed_seeds"] == [] and printed["table"] == str(path)


@contextlib.contextmanager
def cluster_in_this_process():
    """The address of a one-worker cluster whose worker runs in this process (so
    that a test can replace the computation of a seed)."""
    import distributed
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_one_worker_killed_then_resumed_gives_the_rows_of_two_workers(two, tmp_path):
    """One worker, the seeds in the other order, in a process killed (with its
    worker) right after its second row; then the same sweep again, on an
    existing one-worker cluster reached through --scheduler (its worker in this
    process): it computes the one missing seed only, and every row is the
    two-worker run's, bit for bit."""
    _, _, table = two
    folder = tmp_path / "killed"
    order = SEEDS[::-1]
    code = (f"from bss2sim.experiments import sweep; sweep.run(seeds={order!r}, images={IMAGES}, "
            f"out={str(folder)!r}, workers=1, progress=False)")
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    path = folder / sweep.TABLE_FILE

    def rows():
        return len(sweep.read_table(path).rows) if path.exists() else 0

    try:
        deadline = time.monotonic() + 120
        while rows() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # the sweep and its worker, in the middle of chip 0
        except ProcessLookupError:
            pass
        proc.wait()
    assert path.exists(), f"the sweep wrote no row within 120 s: {log.read_text()[-2000:]}"
    killed = sweep.read_table(path)                 # complete and checked, whenever it was killed
    assert sorted(killed.rows) == sorted(order[:2]), \
        f"rows when killed: {sorted(killed.rows)}; {log.read_text()[-2000:]}"
    assert killed.rows[order[0]]["worker"] == killed.rows[order[1]]["worker"]    # one process, in turn
    with cluster_in_this_process() as address:
        res = sweep.run(seeds=SEEDS, images=IMAGES, out=folder, scheduler=address, figures=False)
    assert res["computed_seeds"] == [order[2]] and res["skipped_seeds"] == sorted(order[:2])
    assert res["cluster"] == f"scheduler {address}"
    again = sweep.read_table(path)
    assert sorted(again.rows) == SEEDS and len(again.runs) == 2 and again.runs[1]["seeds_computed"] == 1
    assert again.settings == table.settings
    for s in SEEDS:
        assert results(again.rows[s]) == results(table.rows[s]), f"chip seed {s}"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]     # a killed write's, removed


def replace_computation(monkeypatch, table, fail=()):
    """Seeds compute to their rows of ``table`` at once (those of ``fail`` raise)."""
    known = {s: {k: v for k, v in r.items()
                 if k not in sweep.MEASURED_COLUMNS or k in ("calibration_wall_time_s", "mnist_wall_time_s",
                                                             "measure_wall_time_s")}
             for s, r in table.rows.items()}

    def compute(seed, rs, data_dir):
        if seed in fail:
            raise RuntimeError("the chip caught fire")
        return dict(known[seed])

    monkeypatch.setattr(sweep, "_compute", compute)


def test_a_failing_seed_is_named_and_the_others_are_kept(two, tmp_path, monkeypatch):
    _, _, table = two
    replace_computation(monkeypatch, table, fail=(1,))
    with cluster_in_this_process() as address:
        with pytest.raises(sweep.SweepError, match=r"1 of 3 seed\(s\) failed .*seed 1: RuntimeError: the "
                                                   r"chip caught fire"):
            sweep.run(seeds=SEEDS, images=IMAGES, out=tmp_path, scheduler=address)
    kept = sweep.read_table(tmp_path / sweep.TABLE_FILE)
    assert sorted(kept.rows) == [0, 2]
    for s in (0, 2):
        assert results(kept.rows[s]) == results(table.rows[s])
    assert (tmp_path / sweep.FIGURE_ACCURACY).exists()        # the summary of the others still came


def test_new_rows_may_not_join_rows_of_other_code_unless_allowed(two, tmp_path, monkeypatch):
    out, _, table = two
    path = tmp_path / sweep.TABLE_FILE
    shutil.copy(out / sweep.TABLE_FILE, path)
    t = sweep.read_table(path)
    t.rows[0]["code_sha256"] = "0" * 64          # as if computed before the model changed
    del t.rows[1]
    sweep.write_table(path, t)
    with pytest.raises(ValueError, match=r"holds 1 row\(s\) computed with other source code.*"
                                         r"--allow-code-change"):
        sweep.run(seeds=SEEDS, images=IMAGES, out=tmp_path, workers=1)
    # Nothing to compute, nothing mixes: the summary of what is there, saying so.
    res = sweep.run(seeds=[0, 2], images=IMAGES, out=tmp_path, workers=1, figures=False)
    assert res["computed_seeds"] == [] and res["rows_of_other_code"] == 1
    replace_computation(monkeypatch, table)
    with cluster_in_this_process() as address:
        res = sweep.run(seeds=SEEDS, images=IMAGES, out=tmp_path, scheduler=address, allow_code_change=True,
                        figures=False)
    assert res["computed_seeds"] == [1]
    codes = {s: r["code_sha256"] for s, r in sweep.read_table(path).rows.items()}
    assert codes == {0: "0" * 64, 1: sweep.code_fingerprint(), 2: sweep.code_fingerprint()}


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _damage_a_value(path):
    lines = path.read_text().splitlines(keepends=True)
    cells = next(csv.reader([lines[2]]))
    i = [n for n, _ in sweep.read_table(path).columns].index("mnist_correct")
    cells[i] = str(int(cells[i]) - 1)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    lines[2] = buf.getvalue()
    path.write_text("".join(lines))


@pytest.mark.parametrize("damage, match", [
    (_damage_a_value, r"is corrupt: the SHA-256 checksum"),
    (lambda p: p.write_text(p.read_text()[:-40]), r"line 5 has \d+ values|is corrupt"),
    (lambda p: p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1])), r"is corrupt"),
    (lambda p: _edit(p, f'"images": {IMAGES}', f'"images": {IMAGES + 1}'), r"is corrupt"),
    (lambda p: _edit(p, '"kind": "bss2sim-sweep"', '"kind": "bss2sim-calibration"'),
     r"of kind 'bss2sim-calibration', not 'bss2sim-sweep'"),
    (lambda p: _edit(p, '"format_version": 1', '"format_version": 2'), r"format_version 2, which is newer"),
    (lambda p: p.write_text("chip_seed,mnist_accuracy_rel\n0,0.99\n"), r"does not start with a bss2sim header"),
    (lambda p: p.write_bytes(b""), r"is empty"),
    (lambda p: p.write_bytes(b"PK\x03\x04\x00\xff\xfe"), r"not UTF-8 text|does not start"),
    (lambda p: p.write_text("# {\"kind\": \"bss2sim-sweep\"\n"), r"header line is not valid JSON"),
])
def test_corrupt_truncated_or_foreign_tables_fail_loudly(two, tmp_path, damage, match):
    out, _, _ = two
    folder = tmp_path / "damaged"
    folder.mkdir()
    path = folder / sweep.TABLE_FILE
    shutil.copy(out / sweep.TABLE_FILE, path)
    damage(path)
    with pytest.raises(ValueError, match=match) as e:
        sweep.read_table(path)
    assert str(path) in str(e.value)
    # The sweep refuses it before any work, and leaves it as it was.
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        sweep.run(seeds=SEEDS, images=IMAGES, out=folder, workers=1)
    assert path.read_bytes() == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=IMAGES - 1), rf"--images: the table has {IMAGES}, this run {IMAGES - 1}"),
    (dict(preset="harsh"), r"--preset: the table has \"default\", this run \"harsh\""),
    (dict(drift=True, data_dir=str(DATA)), r"--drift: the table has false, this run true"),
])
def test_other_settings_are_refused_naming_them(two, kwargs, match):
    out, _, _ = two
    before = (out / sweep.TABLE_FILE).read_bytes()
    args = {**dict(seeds=SEEDS, images=IMAGES, out=out, workers=1), **kwargs}
    with pytest.raises(ValueError, match=match) as e:
        sweep.run(**args)
    assert str(out / sweep.TABLE_FILE) in str(e.value) and "another --out" in str(e.value)
    assert (out / sweep.TABLE_FILE).read_bytes() == before


def test_a_second_sweep_on_the_same_folder_is_refused(two):
    fcntl = pytest.importorskip("fcntl")
    out, _, _ = two
    with open(out / f".{sweep.TABLE_FILE}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)     # a sweep running there
        with pytest.raises(ValueError, match=r"another bss2sim sweep is writing the table"):
            sweep.run(seeds=SEEDS, images=IMAGES, out=out, workers=1)


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "5-3"], r"argument --seeds: --seeds '5-3': the range '5-3' is not allowed: a range "
                         r"low-high needs low <= high"),
    (["--seeds", "x"], r"--seeds 'x': 'x' is neither a chip seed nor a range low-high; seeds are integers "
                       r"0\.\.18446744073709551615"),
    (["--seeds", "1,3,1-2"], r"--seeds '1,3,1-2' names a chip seed more than once"),
    (["--seeds", "0-10000"], r"--seeds '0-10000' names more than 10000 chip seeds; allowed: 1\.\.10000"),
    (["--seeds", "0-5000,6000-11000"], r"names more than 10000 chip seeds"),
    (["--seeds", "1", "--workers", "0"], r"argument --workers: --workers 0 is not allowed: must be an "
                                         r"integer in 1\.\.256"),
    (["--seeds", "1", "--workers", "two"], r"--workers 'two' is not an integer; allowed: 1\.\.256"),
    (["--seeds", "1", "--images", "10001"], r"--images 10001 is not allowed: must be an integer in 1\.\.10000"),
    (["--seeds", "1", "--worker-threads", "0"], r"--worker-threads 0 is not allowed: .* 1\.\.256"),
    (["--seeds", "1", "--connect-timeout", "0"], r"--connect-timeout 0 is not allowed: .* 0\.1\.\.3600"),
    (["--seeds", "1", "--drift-hours", "-1"], r"--drift-hours -1 is not allowed: must be a number in 0\.\.1e\+06"),
    (["--images", "5"], r"the following arguments are required: --seeds"),
])
def test_bad_options_are_refused_naming_option_value_and_range(argv, match, capsys):
    parser = sweep.add_arguments(argparse.ArgumentParser(prog="bss2sim sweep"))
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=[]), r"--seeds gives 0 chip seeds; allowed: 1\.\.10000"),
    (dict(seeds="7-5"), r"--seeds '7-5': the range '7-5' is not allowed"),
    (dict(seeds=[1, 1]), r"--seeds names a chip seed more than once"),
    (dict(seeds=[-1]), r"--seeds=-1 is not allowed: a seed must be an integer in 0\.\.2\*\*64-1"),
    (dict(seeds=[1], workers=0), r"--workers=0 is not allowed: must be an integer in 1\.\.256"),
    (dict(seeds=[1], images=0), r"--images=0 is not allowed: must be an integer in 1\.\.10000"),
    (dict(seeds=[1], preset="warm"), r"--preset 'warm' is not allowed: one of ideal, default, harsh"),
    (dict(seeds=[1], scheduler="tcp://127.0.0.1:8786", workers=2),
     r"--workers 2 is not allowed with --scheduler"),
    (dict(seeds=[1], data_dir="/nowhere"), r"--data-dir '/nowhere' is only used by --drift"),
    (dict(seeds=[1], drift=True, drift_treatments=("cooled",)),
     r"--drift-treatments cooled is not allowed: give each of no_recalibration, recalibrated, refreshed"),
    (dict(seeds=[1], drift=True, drift_images=0), r"--drift-images=0 is not allowed: .* 1\.\.10000"),
])
def test_bad_arguments_are_refused_before_any_work(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        sweep.run(out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_drift_without_training_images_names_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("BSS2SIM_MNIST_DIR", raising=False)
    with pytest.raises(ValueError, match=r"--drift needs the MNIST training images \(--data-dir\)"):
        sweep.run(seeds=[1], drift=True, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"--scheduler 'tcp://127\.0\.0\.1:9' cannot be reached within 1 s"):
        sweep.run(seeds=[1], images=10, out=out, scheduler="tcp://127.0.0.1:9", connect_timeout=1)
    assert time.monotonic() - t0 < 30
    assert not (out / sweep.TABLE_FILE).exists()


def test_the_drift_part_on_one_small_chip(store, tmp_path):
    assert DATA.is_dir(), f"MNIST data folder {DATA} is missing"
    out = tmp_path / "drift"
    res = sweep.run(seeds=[3], images=20, out=out, workers=1, drift=True, drift_hours=(0.0,),
                    drift_temperatures=(0.0,), drift_images=20, drift_fine_tune_images=10,
                    drift_refresh_images=10, data_dir=str(DATA))
    table = sweep.read_table(out / sweep.TABLE_FILE)
    (row,) = table.rows.values()
    st = table.settings
    assert st["drift"] is True and st["drift_hours_h"] == [0.0] and st["drift_images"] == 20
    assert len(st["drift_training_data_sha256"]) == 64
    drift_cols = [n for n, _ in table.columns if n.startswith("drift_")]
    assert drift_cols == ["drift_baseline_shipped_rel", "drift_baseline_fine_tuned_rel",
                          *[f"drift_0h_+0k_{tr}_{n}_rel" for tr in sweep.DRIFT_TREATMENTS
                            for n in sweep.DRIFT_NETWORKS],
                          "drift_0h_+0k_recalibration_silicon_time_s", "drift_wall_time_s"]
    for c in drift_cols[:-2]:
        assert 0.0 <= row[c] <= 1.0 and (row[c] * 20) == pytest.approx(round(row[c] * 20))
    # The study's baseline is the sweep's own evaluation: the same calibration
    # (read back from its file), noise seed and images.
    assert row["drift_baseline_shipped_rel"] == row["mnist_accuracy_rel"]
    assert row["drift_0h_+0k_no_recalibration_shipped_rel"] == row["drift_baseline_shipped_rel"]
    # A recalibration that starts from the chip's calibration reads less than a fresh one.
    assert 0 < row["drift_0h_+0k_recalibration_silicon_time_s"] < row["calibration_silicon_time_s"]
    assert row["drift_wall_time_s"] > 0
    assert (out / sweep.FIGURE_DRIFT).stat().st_size > 10_000
    assert res["summary"]["drift"]["baseline"]["shipped"]["median"] == row["mnist_accuracy_rel"]
