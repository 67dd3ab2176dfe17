"""The README's examples run as written: every Python block and the command
lines of the calibration store, each in a fresh interpreter, in an empty
folder, with a calibration store of its own."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()


def _blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", TEXT, flags=re.S | re.M)


PYTHON_BLOCKS = _blocks("python")
PPU_PROGRAM = TEXT.split("<!-- ppu-example -->", 1)[1].split("```asm\n", 1)[1].split("```", 1)[0]


def _env(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", BSS2SIM_CALIBRATIONS=str(tmp_path / "store"))
    return env


def _run(args, tmp_path, timeout=600):
    return subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_the_readme_has_the_examples_this_file_runs():
    assert len(PYTHON_BLOCKS) >= 4
    assert any("steps=[" in b for b in PYTHON_BLOCKS)
    assert any("cal.describe()" in b for b in PYTHON_BLOCKS)
    assert any("torchbridge" in b for b in PYTHON_BLOCKS)
    assert any("CoSimulation" in b for b in PYTHON_BLOCKS)
    assert "wait" in PPU_PROGRAM


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_example_runs_as_written(index, tmp_path):
    block = PYTHON_BLOCKS[index]
    if "import torch" in block and importlib.util.find_spec("torch") is None:
        # The optional extra; CI installs it and refuses to run without it (conftest).
        pytest.skip("the torch extra is not installed")
    (tmp_path / "example.s").write_text(PPU_PROGRAM)    # the PPU example reads the program above it
    (tmp_path / "example.py").write_text(block)
    r = _run([sys.executable, "example.py"], tmp_path)
    assert r.returncode == 0, f"README example {index} failed:\n{block}\n--- stderr:\n{r.stderr[-3000:]}"
    if "steps=[" in block:
        # The user's step is validated on 5 chips, each within a few capmem steps.
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("chip ")]
        assert len(lines) == 5, r.stdout
        for ln in lines:
            median = float(re.search(r"median ([0-9.]+)", ln).group(1))
            assert median < 2.0, ln
    if "CoSimulation" in block:
        # 32 events 5 FPGA cycles apart: 160 FPGA cycles = 320 PPU cycles of event phase.
        assert "'event_phase': 320" in r.stdout, r.stdout
    if "cal.describe()" in block:
        out = r.stdout.splitlines()
        assert "calibrated now, saved to" in out[0]
        assert float(out[1]) > 0.9, "the calibrated chip's output correlates with x.W"


def test_the_calibration_store_command_lines_run_as_written(tmp_path):
    block = next(b for b in _blocks("") if "bss2sim calibrate --seed 3" in b)
    lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    outputs = []
    for ln in lines:
        argv = shlex.split(ln)
        assert argv[0] == "bss2sim"
        r = _run([sys.executable, "-m", "bss2sim", *argv[1:]], tmp_path)
        assert r.returncode == 0, f"{ln}:\n{r.stderr[-2000:]}"
        outputs.append(r.stdout + r.stderr)
    # The demo and the first vmm use the calibration that `calibrate` stored; the
    # last one none.
    stored = str(tmp_path / "store")
    assert "from the store" in outputs[1] and stored in outputs[1]
    assert "from the store" in outputs[2]
    assert "uncalibrated" in outputs[3]
    assert not (tmp_path / "plots").exists() and (tmp_path / "bss2sim-output").is_dir()
