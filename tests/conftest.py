"""Shared test setup: one corpus/shard cache for the whole suite (built once, reused by every run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("MIDSWEEP_CACHE", str(REPO / ".cache" / "midsweep"))


def train_cli(*overrides: str, check: bool = True, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m midsweep.train`` with ``overrides`` (a real process, as users run it)."""
    cmd = [sys.executable, "-m", "midsweep.train", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def nano(tmp_path):
    """Overrides of the smallest real run, writing into a fresh sweep directory."""
    return ["experiment=nano_test", f"train.out_dir={tmp_path / 'sweep'}"]
