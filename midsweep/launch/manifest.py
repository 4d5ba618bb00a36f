"""The sweep manifest: which SLURM job runs which run, written at submission (``midsweep status`` reads it).

One file per sweep directory (``train.out_dir``): ``<sweep_dir>/sweep_manifest.json``. Later launches into
the same directory update their runs' entries and keep the others, so a grid grown by one value keeps
one manifest; two launches at once each read, merge and write it under a lock, so neither loses the other's
entries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from filelock import FileLock

from midsweep import rundir

NAME = "sweep_manifest.json"
LOCK = "sweep_manifest.lock"
CONTRACT = 1


def path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / NAME


def read(sweep_dir: Path) -> dict:
    data = rundir.read_json(path(sweep_dir)) or {}
    return {"contract": CONTRACT, "runs": {}, **data}


def entry(overrides: list[str], run_dir: Path, action: str, job_id: Optional[str] = None,
          log: Optional[str] = None, stderr: Optional[str] = None, submission_dir: Optional[str] = None,
          prefix: Optional[dict] = None) -> dict:
    """One run's record: its overrides and directory, what the launch did, its job and log files, and for a fork
    the prefix it restores (key, step, parent run id: docs/prefix.md)."""
    return {"overrides": list(overrides), "run_dir": str(run_dir), "action": action, "job_id": job_id,
            "log": log, "stderr": stderr, "submission_dir": submission_dir, "prefix": prefix,
            "launched": rundir.utc_now()}


def update(sweep_dir: Path, runs: dict[str, dict]) -> Path:
    """Merge ``runs`` (run id -> entry) into the sweep's manifest; under the sweep's manifest lock, written
    atomically."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(sweep_dir / LOCK)):
        data = read(sweep_dir)
        for run_id, new in runs.items():
            old = data["runs"].get(run_id)
            # a skipped run keeps the job that produced it
            if old and new.get("job_id") is None and old.get("job_id") is not None:
                new = {**new, "job_id": old["job_id"], "log": old.get("log"), "stderr": old.get("stderr")}
            data["runs"][run_id] = new
        data["updated"] = rundir.utc_now()
        rundir.atomic_write_json(path(sweep_dir), data)
    return path(sweep_dir)
