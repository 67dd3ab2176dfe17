"""Test-session settings: a calibration store of its own.

Commands calibrate chips they find no calibration for and save the result
into the store; the tests must neither read a developer's store nor leave
files in it, so the session points ``BSS2SIM_CALIBRATIONS`` (inherited by the
subprocesses some tests start) at a temporary folder, removed at the end.
"""
import os
import shutil
import tempfile

_STORE = tempfile.mkdtemp(prefix="bss2sim-test-store-")
os.environ["BSS2SIM_CALIBRATIONS"] = _STORE


def pytest_unconfigure(config):
    shutil.rmtree(_STORE, ignore_errors=True)
