"""Shared test setup: one corpus/shard cache for the whole suite (built once, reused by every run), no user
config directory, and the rule that keeps ``make test-fast`` fast.

The rule: a test that starts a process (``python ...``, ``midsweep-train`` or ``python -m midsweep...``, a
local Hydra multirun, ``torchrun``, ``make``), or uses a fixture that does, or trains more than 50 steps in
process, is marked ``@pytest.mark.slow`` (tests on a real SLURM cluster ``slurm``). ``make test-fast`` leaves
those out; ``make test`` runs everything. The process half is enforced (tests/process_guard.py): a test not so
marked that starts such a command fails, naming the marker. The one exception is the analysis templates
(tests/analysis_templates.py): a few engine runs, made once per session, that many fast analysis tests copy.
"""
import os

import pytest

import process_guard
from runner import REPO

os.environ.setdefault("MIDSWEEP_CACHE", str(REPO / ".cache" / "midsweep"))
# the developer's own ~/.config/midsweep would change what the tests compose (midsweep/user_config.py)
os.environ["MIDSWEEP_CONFIG_DIR"] = str(REPO / "tests" / "no-user-config")
process_guard.install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    process_guard.GUARD.item = item  # fixtures are made here: one that starts a process counts for the test
    yield
    process_guard.GUARD.item = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    process_guard.GUARD.item = item
    yield
    process_guard.GUARD.item = None


@pytest.fixture
def nano(tmp_path):
    """Overrides of the smallest real run, writing into a fresh sweep directory."""
    return ["experiment=nano_test", f"train.out_dir={tmp_path / 'sweep'}"]
