"""The run directory (docs/results.md): its file names, the results-contract version, and every reader and writer
of its files. Torch-free (stdlib + filelock), so the launcher, ``midsweep status`` and the analysis read run
directories exactly as the engine writes them.

A sweep directory (``train.out_dir``) holds one run directory per run, named by the run id. Files are replaced
atomically (a temporary file renamed over the old one) with the permissions the umask gives a new file; jsonl
files are appended to, and a line torn by a kill is dropped when read.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

CONTRACT = 2
"""Version of the results contract (docs/results.md), in status.json and summary.json."""

CONFIG = "config.yaml"
STATUS = "status.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
TRAIN_LOG_JSONL = "train.jsonl"
TRAIN_LOG = "train.log"
DOWNSTREAM = "downstream.jsonl"
"""lm-evaluation-harness results (``midsweep evaluate``): one row per step, task and metric (midsweep.downstream)."""
CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
"""Marker file written last into a checkpoint directory: only checkpoints that have it count. It records the step
and the sha256 of each file as written (JSON), checked before the checkpoint is loaded or published; an older
midsweep's marker holds the step only, and its checkpoint is loaded unchecked."""
CORRUPT = ".corrupt"
"""Suffix of a checkpoint directory set aside because its files differ from what was written."""
LOCK = "run.lock"
"""Locked (filelock) by the process training the run, for the run's life."""
LOCK_HOLDER = "run.lock.json"
"""Who holds LOCK: host, pid, since, SLURM job (removed when the lock is released)."""

STATUSES = ("running", "done", "failed", "requeued", "interrupted")
HEARTBEAT_S = 30
"""A training run rewrites status.json (``updated``, ``step``, ``tok_per_s``, ``eta_s``) at its train.log_every
rows, at most once per HEARTBEAT_S seconds, and at every evaluation and change of status."""
STALE_AFTER_S = 900
"""``midsweep status`` flags a running run whose status.json is older than this: 15 minutes, far more than a
heartbeat, an evaluation or a checkpoint take, so its process is likely dead (SIGKILL, lost node) or hung."""
RUN_ID = re.compile(r"^[0-9a-f]{12}$")
_STEP_DIR = re.compile(r"^step_(\d+)$")


# ---- writing


@contextlib.contextmanager
def atomic_open(path: Path, binary: bool = False) -> Iterator[IO]:
    """A file to write ``path``'s new content into; on a clean exit it replaces ``path`` in one rename.

    The temporary file is created with mode 0666 less the umask (as ``open`` would), not mkstemp's 0600, so a
    teammate can read the results; a failure inside the block leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append one JSON object per line, flushed to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def rewind_jsonl(path: Path, keep_through: Optional[int]) -> None:
    """Keep the rows of ``path`` with ``step <= keep_through`` (none when it is None) and rewrite it, so that a
    restart appends after them: rows stay unique. A torn or unreadable line (a kill mid-write) is dropped."""
    path = Path(path)
    if not path.exists():
        return
    rows, bad = _parse_jsonl(path.read_text(encoding="utf-8"))
    if bad:
        log.warning("%s: dropped %d unreadable line(s) (a write cut short by a kill)", path, bad)
    keep = [r for r in rows if keep_through is not None and r.get("step", 0) <= keep_through]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- reading


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, or None when it is missing or not a JSON object (files are replaced
    atomically, so unreadable means corrupt, which callers report like a missing file). PermissionError is
    raised: the file is there, and pretending otherwise would hide it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: Path) -> Optional[dict]:
    return read_json(Path(run_dir) / STATUS)


def read_summary(run_dir: Path) -> Optional[dict]:
    return read_json(Path(run_dir) / SUMMARY)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a jsonl file ([] when missing); a torn last line (a kill mid-append) is dropped, an
    unreadable line before the last raises ValueError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}") from None
    return rows


def _parse_jsonl(text: str) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep directory (directories named by 12-hex-character run ids), sorted. A symlink
    is not one: the engine never makes one, and reading through it would report another directory's run."""
    root = Path(sweep_dir)
    return sorted(p for p in root.iterdir()
                  if RUN_ID.match(p.name) and p.is_dir() and not p.is_symlink()) if root.is_dir() else []


def strays(sweep_dir: Path) -> list[Path]:
    """Entries of a sweep directory named like a run that are not a run directory (a symlink, a file), sorted."""
    root = Path(sweep_dir)
    return sorted(p for p in root.iterdir()
                  if RUN_ID.match(p.name) and (p.is_symlink() or not p.is_dir())) if root.is_dir() else []


def stray(path: Path) -> str:
    """The problem line of a ``strays`` entry."""
    kind = f"a symlink to {os.readlink(path)}" if path.is_symlink() else "not a directory"
    return f"{path} is named like a run but is {kind}; ignored. Fix: remove it (a run directory is a plain directory)"


# ---- checkpoints (their content is midsweep.train.checkpoint's; docs/results.md)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """``checkpoints/step_00000120``: the state after 120 optimizer steps."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def complete_steps(run_dir: Path) -> list[int]:
    """Steps of the checkpoints that have their COMPLETE marker, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir()
                  if (m := _STEP_DIR.match(p.name)) and (p / COMPLETE).exists())


def latest_checkpoint(run_dir: Path) -> Optional[int]:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


class CorruptCheckpoint(ValueError):
    """A checkpoint whose files differ from what was written (a flipped bit, a truncated or replaced file)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def mark_complete(ckpt: Path, step: int, sums: Optional[dict] = None) -> None:
    """Write the COMPLETE marker of checkpoint directory ``ckpt``, last: the step and the sha256 of each file
    (``sums`` by file name where they are known already, else read now)."""
    if sums is None:
        sums = {p.name: sha256_file(p) for p in sorted(Path(ckpt).iterdir()) if p.is_file() and p.name != COMPLETE}
    atomic_write_json(Path(ckpt) / COMPLETE, {"step": step, "sha256": sums})


def staging_dir(final: Path) -> Path:
    """An empty directory next to ``final`` to write its content into before ``commit_dir`` (what a killed
    writer left there is removed)."""
    tmp = Path(final).with_name(Path(final).name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path, step: Optional[int] = None, sums: Optional[dict] = None) -> None:
    """Make the fully written directory ``tmp`` the directory ``final`` in one rename (replacing an older
    ``final``), then, for a checkpoint (``step`` given), write its COMPLETE marker (``mark_complete``), and fsync
    the parent so that the rename outlives a power loss. Every checkpoint a run writes and every checkpoint or
    prefix the prefix store places is committed here: a reader sees the whole directory or none of it."""
    final = Path(final)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    if step is not None:
        mark_complete(final, step, sums)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(ckpt: Path, names: Optional[Iterable[str]] = None,
                       digests: Optional[dict] = None) -> Optional[str]:
    """Why files ``names`` (default: all recorded) of checkpoint ``ckpt`` differ from what was written (a changed
    or missing file, an unreadable marker), or None when they match or the marker records no checksums (an
    older midsweep's). ``digests``: their sha256 computed already, by name (not read again)."""
    text = (Path(ckpt) / COMPLETE).read_text(encoding="utf-8", errors="replace").strip()
    if text.isdigit():
        return None
    try:
        sums = json.loads(text)["sha256"]
    except (ValueError, TypeError, KeyError):
        sums = None
    if not isinstance(sums, dict):
        return f"unreadable {COMPLETE} marker {text[:40]!r}"
    for name in sorted(sums) if names is None else names:
        path = Path(ckpt) / name
        if name not in sums or not path.is_file():
            return f"{name} {'missing' if name in sums else 'not recorded'}"
        if (digests[name] if digests and name in digests else sha256_file(path)) != sums[name]:
            return f"checksum mismatch in {name}"
    return None


def sound_checkpoint(run_dir: Path) -> Optional[int]:
    """The newest complete checkpoint whose files are as written. Each newer one is set aside with a warning
    (renamed ``step_XXXXXXXX.corrupt``, kept for inspection), so that nothing resumes from it."""
    for step in reversed(complete_steps(run_dir)):
        path = checkpoint_dir(run_dir, step)
        problem = checkpoint_problem(path)
        if problem is None:
            return step
        aside = path.with_name(path.name + CORRUPT)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        log.warning("checkpoint %s is corrupt (%s): set aside as %s, not resumed from", path, problem, aside.name)
    return None


# ---- the run lock


class RunLocked(RuntimeError):
    """Another process holds the run directory."""


class DiskFull(RuntimeError):
    """The file system a run writes to is full; the message names it and the fix."""


def slurm_job_id() -> Optional[str]:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def lock_holder(run_dir: Path) -> str:
    """Who holds the run directory's lock, in words (from LOCK_HOLDER)."""
    h = read_json(Path(run_dir) / LOCK_HOLDER)
    if not h:
        return "another process (its host and pid are not recorded yet)"
    job = f", SLURM job {h['slurm_job_id']}" if h.get("slurm_job_id") else ""
    return f"pid {h.get('pid')} on host {h.get('host')}{job}, since {h.get('since')}"


@contextlib.contextmanager
def hold(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the run directory's lock for the block: one process trains a run at a time.

    Without ``wait``, a run directory locked by another process raises RunLocked naming its holder; with it,
    this waits until the holder ends. The lock is the operating system's (flock, or filelock's lock-file
    fallback where the file system has none): a killed holder releases it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise RunLocked(
                f"run directory {run_dir} is being trained by {lock_holder(run_dir)}. Fix: let that process finish "
                "(rerun afterwards to resume or skip it), stop it, or pass train.wait_for_lock=true to wait for "
                "it") from None
        log.warning("waiting for run directory %s, held by %s", run_dir, lock_holder(run_dir))
        lock.acquire()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": utc_now(), "slurm_job_id": slurm_job_id()}
    try:
        atomic_write_json(run_dir / LOCK_HOLDER, me)
        yield
    finally:
        if read_json(run_dir / LOCK_HOLDER) == me:
            with contextlib.suppress(OSError):
                os.unlink(run_dir / LOCK_HOLDER)
        lock.release()
