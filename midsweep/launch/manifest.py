"""The sweep manifest: which SLURM job runs which run, written at submission (``midsweep status`` reads it).

One file per sweep directory (``train.out_dir``): ``<sweep_dir>/sweep_manifest.json``. Later launches into
the same directory update their runs' entries and keep the others, so a grid grown by one value keeps
one manifest; two launches at once each read, merge and write it under a lock, so neither loses the other's
entries, and a launch holds the sweep's launch lock from its check of what is queued until its manifest is
written, so two launches at once never both submit a run.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterable, Iterator, Optional

from filelock import FileLock, Timeout

from midsweep import rundir, runfiles

log = logging.getLogger(__name__)

NAME = "sweep_manifest.json"
LOCK = "sweep_manifest.lock"
LAUNCH_LOCK = "sweep_launch.lock"
"""Held by a launch from its check of what is queued until its manifest is written (``launching``)."""
CONTRACT = 1


def path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / NAME


def read(sweep_dir: Path, problems: Optional[list[str]] = None) -> dict:
    """The sweep's manifest ({"runs": {}} when there is none). An entry or field that is not what ``entry`` writes
    (a damaged or hand-edited file) is left out, and named in ``problems`` when given."""
    where = str(path(sweep_dir))
    got = runfiles.read(where, runfiles.MANIFEST)
    data, found = got.data or {}, got.problems
    runs = {}
    for run_id, e in (data.get("runs") or {}).items():
        if not rundir.RUN_ID.match(run_id) or not isinstance(e, dict):
            found.append(f"{where}: entry {run_id!r} is not a run id with an object; ignored")
            continue
        checked = runfiles.check(f"{where}: run {run_id}", e, runfiles.MANIFEST_ENTRY)
        runs[run_id] = checked.data
        found += checked.problems
    if problems is not None:
        problems += found
    return {"contract": CONTRACT, **data, "runs": runs}


def entry(overrides: list[str], run_dir: Path, action: str, job_id: Optional[str] = None,
          log: Optional[str] = None, stderr: Optional[str] = None, submission_dir: Optional[str] = None,
          prefix: Optional[dict] = None) -> dict:
    """One run's record: its overrides and directory, what the launch did, its job and log files, and for a fork
    the prefix it restores (key, step, parent run id: docs/sharing.md)."""
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


@contextlib.contextmanager
def launching(sweep_dirs: Iterable[Path]) -> Iterator[None]:
    """Hold the launch lock of each sweep directory for the block, in sorted order (two launches never hold one
    each and wait for the other). Around the check of which runs are queued, the submission and the manifest
    update, it makes a second launch of the same sweep see the first one's jobs instead of submitting every run
    again. The lock is the operating system's: a killed launch releases it."""
    with contextlib.ExitStack() as held:
        for d in sorted({Path(d) for d in sweep_dirs}):
            d.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(d / LAUNCH_LOCK))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("another launch into %s is submitting; waiting for it, then submitting only what it did "
                         "not", d)
                lock.acquire()
            held.callback(lock.release)
        yield
