"""Run the engine as users do: ``python -m midsweep.train`` in a real process."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def train_cli(*overrides: str, check: bool = True, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m midsweep.train`` with ``overrides``; raise with its stderr if it fails and ``check``."""
    cmd = [sys.executable, "-m", "midsweep.train", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc
