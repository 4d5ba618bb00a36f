"""The results contract (docs/results.md): the one writer of a run directory's result files."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

CONTRACT = 1
STATUSES = ("running", "done", "failed", "requeued")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_status(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / "status.json")


def read_summary(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / "summary.json")


class RunRecorder:
    """Writes status, metrics and summary of one run; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.dir, self.enabled = Path(run_dir), enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)

    def status(self, status: str, step: int, reason: str | None = None) -> None:
        assert status in STATUSES, status
        if not self.enabled:
            return
        atomic_write_json(self.dir / "status.json", {
            "contract": CONTRACT, "status": status, "step": step, "reason": reason,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
            "slurm_job_id": _slurm_job_id(), "log": str(self.dir / "train.log")})

    def config(self, yaml_text: str) -> None:
        if self.enabled:
            atomic_write_text(self.dir / "config.yaml", yaml_text)

    def append(self, name: str, rows: list[dict]) -> None:
        """Append rows to ``metrics.jsonl`` or ``train.jsonl`` (one JSON object per line)."""
        if self.enabled and rows:
            with open(self.dir / name, "a") as f:
                f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
                f.flush()
                os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop rows written after ``step``: a resumed run rewrites them exactly."""
        if not self.enabled:
            return
        for name in ("metrics.jsonl", "train.jsonl"):
            path = self.dir / name
            if path.exists():
                keep = []
                for line in path.read_text().splitlines():
                    try:
                        if json.loads(line)["step"] <= step:
                            keep.append(line + "\n")
                    except (json.JSONDecodeError, KeyError):
                        pass  # a line cut short by a kill
                atomic_write_text(path, "".join(keep))

    def read_metrics(self) -> list[dict]:
        path = self.dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def summary(self, summary: dict) -> None:
        if self.enabled:
            atomic_write_json(self.dir / "summary.json", {"contract": CONTRACT, **summary})


def losses_by_event(metrics: list[dict]) -> tuple[dict, dict]:
    """(losses of the last evaluation, {phase: losses at that phase's end}) from metrics rows."""
    final: dict = {}
    phase_end: dict = {}
    last_step = max((r["step"] for r in metrics), default=None)
    for r in metrics:
        if r["step"] == last_step:
            final[r["domain"]] = r["loss"]
        if r["event"] in ("phase_end", "final"):
            phase_end.setdefault(r["phase"], {})[r["domain"]] = r["loss"]
    return final, phase_end


def _slurm_job_id() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")
