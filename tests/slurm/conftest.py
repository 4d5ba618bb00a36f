"""A real single-node SLURM for the tests marked ``slurm`` (scripts/local_slurm/start.sh, as root).

Skipped, with the reason, where it cannot run (not root, no apt, install or start failed). The cluster is
stopped at the end of the session (only the daemons start.sh started) unless MIDSWEEP_KEEP_SLURM=1.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "local_slurm"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install (apt) and start a local SLURM cluster")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM tests need apt-get to install slurm-wlm (or an installed SLURM)")
    env = {**os.environ, "LOCAL_SLURM_CPUS": os.environ.get("LOCAL_SLURM_CPUS", "8")}
    started = subprocess.run([str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"could not start the local SLURM cluster: {started.stderr.strip()[-800:]}")
    yield
    if os.environ.get("MIDSWEEP_KEEP_SLURM") != "1":
        subprocess.run([str(SCRIPTS / "stop.sh")], capture_output=True, timeout=300)


class Sweep:
    """A copy of the stub app in a temporary directory, launched with the project's launcher profiles."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copy(HERE / "stub_app.py", root)
        shutil.copytree(HERE / "conf", root / "conf")
        self.out = root / "out"
        self.out.mkdir()

    def multirun(self, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "stub_app.py", "-m", f"hydra.searchpath=[file://{REPO}/conf]", *overrides]
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def manifest(self) -> dict:
        return json.loads((self.out / "sweep_manifest.json").read_text())["runs"]

    def run_dir(self, run_id: str) -> Path:
        return self.out / run_id

    def status(self, run_id: str) -> dict:
        f = self.run_dir(run_id) / "status.json"
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            return {}

    def attempts(self, run_id: str) -> list[dict]:
        f = self.run_dir(run_id) / "attempts.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def final(self, run_id: str) -> float:
        return json.loads((self.run_dir(run_id) / "summary.json").read_text())["final"]["value"]

    def wait_for(self, what, timeout: float = 180, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout}s waiting for {getattr(what, '__name__', what)}; "
                             f"squeue: {subprocess.run(['squeue'], capture_output=True, text=True).stdout}")


@pytest.fixture
def sweep(slurm_cluster, tmp_path) -> Sweep:
    return Sweep(tmp_path)


def expected(w: float, steps: int, world: int = 1) -> float:
    """The stub's result of an uninterrupted run (its arithmetic, in one process)."""
    value = 0.0
    for step in range(steps):
        value = value * 0.5 + sum(((step * 8 + i) % 7) * w for i in range(8))
    return value
