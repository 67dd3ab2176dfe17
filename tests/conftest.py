"""Test-session settings: a calibration store of its own.

Commands calibrate chips they find no calibration for and save the result
into the store; the tests must neither read a developer's store nor leave
files in it, so the session points ``BSS2SIM_CALIBRATIONS`` (inherited by the
subprocesses some tests start) at a temporary folder, removed at the end.
"""
import importlib.util
import os
import shutil
import tempfile

import pytest

_STORE = tempfile.mkdtemp(prefix="bss2sim-test-store-")
os.environ["BSS2SIM_CALIBRATIONS"] = _STORE


REQUIRE_TORCH_ENV = "BSS2SIM_REQUIRE_TORCH"
"""Set (CI sets it) to make a missing torch extra an error instead of skipped tests."""


def pytest_configure(config):
    if os.environ.get(REQUIRE_TORCH_ENV) and importlib.util.find_spec("torch") is None:
        raise pytest.UsageError(f"{REQUIRE_TORCH_ENV} is set but torch is not installed: "
                                'pip install -e ".[test,torch]"')


def pytest_unconfigure(config):
    shutil.rmtree(_STORE, ignore_errors=True)
