"""The engine's side of the results contract (docs/results.md): what one run records, when. The files, their
names and how they are written belong to ``midsweep.rundir``."""
from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Optional

from midsweep import rundir


class RunRecorder:
    """Writes status, metrics and summary of one run; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.dir, self.enabled = Path(run_dir), enabled
        self.progress: dict = {}
        """The loop's last progress report (total_steps, tok_per_s, eta_s), repeated in every status.json."""
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)

    def status(self, status: str, step: int, reason: Optional[str] = None) -> None:
        assert status in rundir.STATUSES, status
        if not self.enabled:
            return
        rundir.atomic_write_json(self.dir / rundir.STATUS, {
            "contract": rundir.CONTRACT, "status": status, "step": step, "reason": reason,
            "updated": rundir.utc_now(), "host": socket.gethostname(), "slurm_job_id": rundir.slurm_job_id(),
            "log": str((self.dir / rundir.TRAIN_LOG).absolute()), **self.progress})

    def heartbeat(self, step: int, **progress) -> None:
        """Status ``running`` at ``step`` with the loop's progress (total_steps, tok_per_s, eta_s as of now)."""
        self.progress = progress
        self.status("running", step)

    def config(self, yaml_text: str) -> None:
        if self.enabled:
            rundir.atomic_write_text(self.dir / rundir.CONFIG, yaml_text)

    def append(self, name: str, rows: list[dict]) -> None:
        """Append rows to ``rundir.METRICS`` (one per evaluated (step, domain, event)) or ``rundir.TRAIN_LOG_JSONL``."""
        if self.enabled and rows:
            rundir.append_jsonl(self.dir / name, rows)

    def rewind(self, step: Optional[int]) -> None:
        """Restart the records at checkpoint ``step`` (None: from scratch): rows after it are dropped, since the
        run writes them again, and so is a line torn by a kill."""
        if self.enabled:
            for name in (rundir.METRICS, rundir.TRAIN_LOG_JSONL):
                rundir.rewind_jsonl(self.dir / name, step)

    def read_metrics(self) -> list[dict]:
        return rundir.read_jsonl(self.dir / rundir.METRICS)

    def summary(self, summary: dict) -> None:
        if self.enabled:
            rundir.atomic_write_json(self.dir / rundir.SUMMARY, {"contract": rundir.CONTRACT, **summary})


def logs_train_row(step: int, log_every: int, total: int) -> bool:
    """Whether step ``step`` (of ``total``) gets a train.jsonl row: every ``log_every`` steps and the last step.
    A fork keeps its parent's row at the fork step only where this says so, so forks and scratch runs match."""
    return step % log_every == 0 or step == total


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


def closing_lines(summary: dict, run_dir: Path) -> list[str]:
    """What a finished (or requeued) run ends its log with: where it went, how long it took and its final
    held-out loss per domain."""
    took = datetime.timedelta(seconds=round(summary.get("wall_time_s") or 0))
    lines = [f"run {summary.get('run_id')} {summary.get('status')}: {summary.get('steps')} steps, "
             f"{summary.get('tokens', 0):,} tokens in {took}; run directory {Path(run_dir).absolute()}"]
    final = summary.get("final") or {}
    if final:
        # a done run's last evaluation is at its last step; a requeued run's may be earlier
        when = f"at step {summary.get('steps')}" if summary.get("status") == "done" else "at the last evaluation"
        lines.append(f"held-out loss {when}: " + "  ".join(f"{d} {loss:.4f}" for d, loss in sorted(final.items())))
    return lines
