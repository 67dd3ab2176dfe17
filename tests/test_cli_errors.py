"""Every failure of every command line is one line on stderr and exit code 2,
found before the work starts where it can be."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bss2sim.experiments.cli import main


def _one_error_line(capsys, code, *needles):
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _exit_code(fn, argv):
    """argparse errors leave through SystemExit(2); our own return 2."""
    try:
        return fn(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--images", "0"], "--images"),
    (["demo", "--images", "many"], "--images"),
    (["traces", "--half", "3"], "--half"),
    (["train", "--wait-between-events", "5", "5", "0"], "--wait-between-events"),
    (["bench", "--vectors", "-3"], "--vectors"),
    (["calibrate", "--validate", "0"], "--validate"),
    (["nosuchcommand"], "invalid choice"),
    ([], "required"),
])
def test_bad_options_are_one_line(capsys, argv, needle):
    _one_error_line(capsys, _exit_code(main, argv), needle)


@pytest.mark.parametrize("argv, option", [
    (["demo", "--images", "5"], "--plots-dir"),
    (["traces"], "--plots-dir"),
    (["vmm", "--quick"], "--plots-dir"),
    (["calibrate"], "--calibration"),
    (["calibrate"], "--plots-dir"),
    (["train"], "--out"),
])
def test_unwritable_output_folders_are_refused_before_the_work(tmp_path, capsys, argv, option):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = argv + [option, str(blocker / "sub")]
    if option == "--plots-dir" and argv[0] == "calibrate":
        argv += ["--calibration", str(tmp_path / "cal")]
    t0 = time.perf_counter()
    code = main(argv)
    line = _one_error_line(capsys, code, option, "a_file")
    assert time.perf_counter() - t0 < 5, "the check must come before the work"
    assert not (tmp_path / "cal").exists()
    assert line.startswith(f"bss2sim {argv[0]}: error:")


def test_too_many_images_and_an_empty_data_set(tmp_path, capsys):
    _one_error_line(capsys, main(["demo", "--images", "10001", "--plots-dir", str(tmp_path)]),
                    "10001", "10000")
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, magic, dims in (("t10k-images-idx3-ubyte", 0x803, (0, 28, 28)),
                              ("t10k-labels-idx1-ubyte", 0x801, (0,)),
                              ("train-images-idx3-ubyte", 0x803, (0, 28, 28)),
                              ("train-labels-idx1-ubyte", 0x801, (0,))):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
        with gzip.open(empty / f"{name}.gz", "wb") as f:
            f.write(header)
    _one_error_line(capsys, main(["demo", "--data-dir", str(empty), "--plots-dir", str(tmp_path)]),
                    "no images")
    _one_error_line(capsys, main(["train", "--data-dir", str(empty), "--out", str(tmp_path / "run")]),
                    "non-empty")
    _one_error_line(capsys, main(["train", "--data-dir", str(tmp_path / "missing"),
                                  "--out", str(tmp_path / "run")]))


def test_there_is_one_training_command_line():
    """The data-set module has no command line of its own: bss2sim train is the one."""
    import bss2sim.experiments.datasets.mnist as M
    assert not hasattr(M, "main") and not hasattr(M, "build_parser")
    with pytest.raises(ImportError):
        import bss2sim.experiments.mnist  # noqa: F401


def test_internal_errors_are_one_line_too(capsys, monkeypatch):
    from bss2sim.experiments import cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_dispatch", broken)
    line = _one_error_line(capsys, main(["bench"]), "internal error", "ZeroDivisionError")
    assert cli.DEBUG_ENV in line
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        main(["bench"])


def test_installed_entry_points_exit_2_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for argv in (["-m", "bss2sim", "demo", "--seed", "x"],
                 ["-m", "bss2sim.experiments", "traces", "--plots-dir", "/dev/null/x"]):
        proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_threads_option(capsys, monkeypatch):
    import numba
    before = numba.get_num_threads()
    try:
        assert main(["ppu", "run", "--threads", "1", "/nonexistent.s"]) == 2
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    capsys.readouterr()
    _one_error_line(capsys, _exit_code(main, ["demo", "--threads", "0"]), "--threads")
    _one_error_line(capsys, _exit_code(main, ["bench", "--threads", str(numba.config.NUMBA_NUM_THREADS + 1)]),
                    "--threads")


def test_json_mode_prints_only_the_json_object_on_stdout(tmp_path, capsys):
    import json
    src = tmp_path / "p.s"
    src.write_text("li r3, 5\n wait\n")
    assert main(["ppu", "run", str(src), "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["registers"]["r3"] == 5
    assert "instructions in" in captured.err          # the human summary went to stderr
    assert main(["ppu", "run", str(src)]) == 0        # without --json: text on stdout
    assert "instructions in" in capsys.readouterr().out


def test_readme_figures_only_in_a_source_checkout(tmp_path, monkeypatch, capsys):
    from bss2sim.experiments import common
    root = Path(common.__file__).resolve().parents[1]
    assert common.readme_figures_dir() == root / "plots"
    # An installation that is not a checkout (no pyproject, README or plots/ above it).
    fake = tmp_path / "site-packages" / "bss2sim" / "experiments" / "common.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(common, "__file__", str(fake))
    with pytest.raises(ValueError, match="not one"):
        common.readme_figures_dir()
    code = main(["traces", "--readme-figures"])
    _one_error_line(capsys, code, "--readme-figures", "source checkout")
