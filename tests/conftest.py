"""Shared test setup: one corpus/shard cache for the whole suite (built once, reused by every run), and no user
config directory."""
import os

import pytest

from runner import REPO

os.environ.setdefault("MIDSWEEP_CACHE", str(REPO / ".cache" / "midsweep"))
# the developer's own ~/.config/midsweep would change what the tests compose (midsweep/user_config.py)
os.environ["MIDSWEEP_CONFIG_DIR"] = str(REPO / "tests" / "no-user-config")


@pytest.fixture
def nano(tmp_path):
    """Overrides of the smallest real run, writing into a fresh sweep directory."""
    return ["experiment=nano_test", f"train.out_dir={tmp_path / 'sweep'}"]
