"""Helpers of the SLURM tests: run directories, sweeps launched on the local cluster, reference runs."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "local_slurm"
# One thread per run: results are bitwise reproducible (the thread count changes float sums) and the
# concurrent jobs of the suite share the machine's cores instead of oversubscribing them.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def wait_for(what, timeout: float, every: float = 0.5, why: str = "", env: dict = ENV):
    """Poll ``what()`` until it returns something truthy; fail with the queue's state after ``timeout`` s (the
    queue of the cluster that ``env``'s SLURM_CONF names)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    queue = subprocess.run(["squeue"], capture_output=True, text=True, env=env).stdout
    raise AssertionError(f"timed out after {timeout}s waiting for {why or what}; squeue:\n{queue}")


def task_pid(job: str, env: dict = ENV) -> int:
    """The pid of the Python process that srun started for ``job`` (its step 0, task 0)."""
    # scontrol listpids wants the array task's own job id (squeue's %A), not "<array>_<task>"
    raw = subprocess.run(["squeue", "-h", "-j", job, "-o", "%A"], capture_output=True, text=True,
                         env=env).stdout.strip()
    listed = subprocess.run(["scontrol", "listpids", raw], capture_output=True, text=True, check=True, env=env).stdout
    # the batch step is the shell around it
    (pid,) = [int(f[0]) for f in map(str.split, listed.splitlines()[1:]) if f[2:4] == ["0", "0"]]
    return pid


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits, undelivered, at process ``pid`` (a stopped process keeps what it is sent)."""
    try:
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return False
    bit = 1 << (signum - 1)
    return any(int(fields.get(k, "0"), 16) & bit for k in ("ShdPnd", "SigPnd"))


class Run:
    """Read-only view of one run directory (docs/results.md)."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)

    def _json(self, name: str) -> dict:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return {}

    def status(self) -> dict:
        return self._json("status.json")

    def summary(self) -> dict:
        return self._json("summary.json")

    def is_done(self) -> bool:
        return self.status().get("status") == "done"

    def step(self) -> int:
        """The last step logged to train.jsonl (train.log_every) so far; -1 before the first."""
        try:
            lines = (self.dir / "train.jsonl").read_text().splitlines()
            return json.loads(lines[-1])["step"] if lines else -1
        except (OSError, ValueError, KeyError):
            return -1

    def log(self) -> str:
        f = self.dir / "train.log"
        return f.read_text() if f.exists() else ""

    def resumed_from(self) -> list[int]:
        """The step each restart of the run resumed from, in order (train.log)."""
        return [int(s) for s in re.findall(r"resuming \S+ from step (\d+)", self.log())]

    def losses(self) -> list[tuple]:
        """Every held-out evaluation of metrics.jsonl: (step, domain, event, loss)."""
        rows = [json.loads(line) for line in (self.dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["domain"], r["event"], r["loss"]) for r in rows]


class Sweep:
    """One sweep directory (train.out_dir) that multiruns of the real engine launch into, on the cluster that
    ``env`` names (SLURM_CONF; the single-node one by default)."""

    def __init__(self, out: Path, env: dict = ENV):
        self.out, self.env = Path(out), env

    def multirun(self, *overrides: str, timeout: float = 360) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "midsweep.train", "-m", "hydra/launcher=slurm_local",
               f"train.out_dir={self.out}", *overrides]
        out = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}"
        return out

    def submit(self, *overrides: str) -> tuple[Run, str]:
        """Launch one point without waiting; its run and SLURM job id."""
        self.multirun("hydra.launcher.wait=false", *overrides)
        (run_id, entry), = self.manifest().items()
        return self.run(run_id), entry["job_id"]

    def manifest(self) -> dict:
        return json.loads((self.out / "sweep_manifest.json").read_text())["runs"]

    def run(self, run_id: str) -> Run:
        return Run(self.out / run_id)

    def job_ids(self) -> list[str]:
        return [e["job_id"] for e in self.manifest().values() if e.get("job_id")] if self.out.exists() else []


class Scenarios:
    """Scenario drivers, each run in a thread of its own on a sweep of its own (under ``root``, on the cluster
    that ``env`` names), so that their waits overlap; ``close`` cancels what their sweeps left in the queue."""

    def __init__(self, root, env: dict = ENV, workers: int = 8):
        self.root, self.env = root, env  # root: pytest's tmp_path_factory
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.sweeps: list[Sweep] = []

    def start(self, driver, *args) -> Future:
        """``driver(sweep, *args)`` in the background; its future."""
        self.sweeps.append(Sweep(self.root.mktemp(driver.__name__) / "sweep", env=self.env))
        return self.pool.submit(driver, self.sweeps[-1], *args)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        jobs = [j for s in self.sweeps for j in s.job_ids()]
        if jobs:  # only these sweeps' jobs, should a test have failed before they ended
            subprocess.run(["scancel", *jobs], capture_output=True, env=self.env)


class References:
    """Uninterrupted local runs (the local launcher) of the configs the SLURM tests interrupt, made once per
    session in the background: the same config gives the same run id, whatever train.out_dir is."""

    def __init__(self, root: Path):
        self.root = root
        self._procs: dict[tuple, tuple[subprocess.Popen, Path]] = {}
        self._lock = threading.Lock()

    def start(self, *overrides: str) -> None:
        with self._lock:
            if overrides in self._procs:
                return
            out = self.root / f"ref{len(self._procs)}"
            out.mkdir()
            cmd = [sys.executable, "-m", "midsweep.train", f"train.out_dir={out}", *overrides]
            with open(out / "stderr.txt", "w") as err:
                proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
            self._procs[overrides] = (proc, out)

    def run(self, *overrides: str) -> Run:
        """The finished reference run of ``overrides`` (started now if it was not)."""
        self.start(*overrides)
        proc, out = self._procs[overrides]
        code = proc.wait(timeout=400)
        assert code == 0, f"reference run {overrides} failed:\n{(out / 'stderr.txt').read_text()[-3000:]}"
        (run_dir,) = [d for d in out.iterdir() if re.fullmatch(r"[0-9a-f]{12}", d.name)]
        return Run(run_dir)

    def stop(self) -> None:
        for proc, _ in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


