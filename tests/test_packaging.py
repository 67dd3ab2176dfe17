"""Packaging: one import name, ``bss2sim``.

The wheel holds only ``bss2sim/...`` (and its dist-info), with the shipped
data inside the package; an install is imported from where it was installed,
never from the source tree by accident; the numba cache survives between runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import bss2sim

REPO = Path(__file__).resolve().parents[1]
OLD_NAMES = ("circuits", "digital", "experiments")


def _env(**extra):
    """The environment of this run, without anything that would put the
    source tree on the import path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _python(code, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(out.glob("bss2sim-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_install(wheel, tmp_path_factory):
    """The wheel installed (without dependencies) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                           "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def test_wheel_holds_only_the_bss2sim_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"bss2sim", f"bss2sim-{bss2sim.__version__}.dist-info"}, top
    for old in OLD_NAMES:
        assert not any(n.startswith(old + "/") for n in names)
    for module in ("__init__.py", "__main__.py", "circuits/kernels.py", "digital/accelerator.py",
                   "experiments/cli.py", "experiments/calibration/run.py",
                   "experiments/training/network.py"):
        assert f"bss2sim/{module}" in names, module
    data = [n for n in names if n.startswith("bss2sim/experiments/data/")]
    for shipped in ("mnist_net.npz", "mnist_test.npz", "mnist_results.json"):
        assert f"bss2sim/experiments/data/{shipped}" in data
    assert any(n.startswith("bss2sim/experiments/data/bss2-calibration-seed0-") and n.endswith(".npz")
               for n in data)
    # Neither tests nor the top-level package's source folder leak in.
    assert not any(n.startswith(("bss2sim/tests", "tests/", "bss2sim/experiments/toplevel"))
                   for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        f"bss2sim-{bss2sim.__version__}.dist-info/entry_points.txt").decode()
    assert "bss2sim = bss2sim.experiments.cli:main" in entry_points


def test_wheel_install_is_imported_from_where_it_was_installed(wheel_install, tmp_path):
    code = (
        "import json, bss2sim, bss2sim.circuits, bss2sim.digital, bss2sim.experiments\n"
        "from bss2sim.experiments.train import PACKAGE_DATA, NETWORK_FILE, TEST_IMAGES_FILE\n"
        "from bss2sim.experiments.training import load_checkpoint\n"
        "NETWORK_FILE = PACKAGE_DATA / NETWORK_FILE\n"
        "TEST_IMAGES_FILE = PACKAGE_DATA / TEST_IMAGES_FILE\n"
        "ck = load_checkpoint(NETWORK_FILE)\n"
        "print(json.dumps({'files': [m.__file__ for m in (bss2sim, bss2sim.circuits, bss2sim.digital,"
        " bss2sim.experiments)], 'network': str(NETWORK_FILE), 'images': str(TEST_IMAGES_FILE),"
        " 'chip': bss2sim.Chip.__module__, 'version': bss2sim.__version__,"
        " 'layers': len(ck.network_state)}))\n")
    proc = _python(code, cwd=tmp_path, env=_env(PYTHONPATH=str(wheel_install)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    target = wheel_install.resolve()
    for path in (*found["files"], found["network"], found["images"]):
        assert Path(path).resolve().is_relative_to(target), path
    assert found["chip"] == "bss2sim.circuits.chip"
    assert found["version"] == bss2sim.__version__
    assert found["layers"] > 0
    # The command line of the wheel: python -m bss2sim.
    proc = subprocess.run([sys.executable, "-m", "bss2sim", "--help"], cwd=tmp_path,
                          env=_env(PYTHONPATH=str(wheel_install)), capture_output=True, text=True)
    assert proc.returncode == 0 and "demo" in proc.stdout


def test_installed_package_is_imported_from_another_folder(tmp_path):
    """From a folder that holds no source, bss2sim comes from the installed
    distribution (wheel or editable), and the old generic names do not exist."""
    code = (
        "import importlib.metadata as md, importlib.util, json, sys, sysconfig\n"
        "import bss2sim\n"
        "dist = md.distribution('bss2sim')\n"
        "direct = dist.read_text('direct_url.json')\n"
        "old = {n: importlib.util.find_spec(n) is not None for n in ('circuits', 'digital', 'experiments')}\n"
        "print(json.dumps({'origin': bss2sim.__spec__.origin, 'version': dist.version,"
        " 'direct_url': json.loads(direct) if direct else None,"
        " 'purelib': sysconfig.get_paths()['purelib'], 'old': old}))\n")
    proc = _python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["version"] == bss2sim.__version__
    assert not any(found["old"].values()), found["old"]
    origin = Path(found["origin"]).resolve()
    editable = bool(found["direct_url"] and found["direct_url"].get("dir_info", {}).get("editable"))
    if editable:
        # An editable install maps the name onto the source tree through its finder.
        assert origin == (REPO / "experiments" / "toplevel" / "__init__.py").resolve()
    else:
        assert origin.is_relative_to(Path(found["purelib"]).resolve())
    assert not origin.is_relative_to(tmp_path.resolve())


def test_this_test_run_uses_only_the_new_name():
    import bss2sim.experiments.cli  # noqa: F401  (imports the whole command line)
    for old in OLD_NAMES:
        assert old not in sys.modules, f"something imported the old top-level module {old!r}"


def test_python_dash_m_bss2sim(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bss2sim", "--help"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "calibrate" in proc.stdout


def test_top_level_names_and_lazy_import(tmp_path):
    code = ("import sys, bss2sim\n"
            "assert 'bss2sim.circuits' not in sys.modules, 'import bss2sim is not lazy'\n"
            "from bss2sim import Chip, Accelerator, calibrate, MnistNet\n"
            "from bss2sim.circuits import Chip as C2\n"
            "assert Chip is C2 and callable(calibrate)\n"
            "try:\n    bss2sim.no_such_name\nexcept AttributeError as e:\n    print(e)\n")
    proc = _python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no_such_name" in proc.stdout
    for name in bss2sim.__all__:
        assert getattr(bss2sim, name) is not None


_CACHE_PROBE = """
import json, numpy as np
from numba.core.registry import CPUDispatcher
from bss2sim.circuits import Chip, EventSchedule, TrialNoise, integrate_fast
from bss2sim.circuits import kernels, rng
chip = Chip(0)
chip.config.set_logical_weights(0, np.full((128, 256), 20))
x = np.random.default_rng(0).integers(0, 32, (4, 128))
s = EventSchedule.from_inputs(x, wait_between_events=5)
integrate_fast(chip, 0, s, s.last_cycle() + 125, noise=TrialNoise(1))
hits = misses = 0
for module in (kernels, rng):
    for f in vars(module).values():
        if isinstance(f, CPUDispatcher) and f.signatures:
            hits += sum(f.stats.cache_hits.values())
            misses += sum(f.stats.cache_misses.values())
print(json.dumps({"hits": hits, "misses": misses}))
"""


def test_numba_cache_is_reused_between_runs(tmp_path):
    """The second run loads every kernel it calls from the cache."""
    runs = []
    for _ in range(2):
        proc = _python(_CACHE_PROBE, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[1]["misses"] == 0, runs
    assert runs[1]["hits"] > 0, runs
