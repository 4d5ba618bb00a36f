"""``midsweep status``: each run of a sweep directory as pending / running / requeued / done / failed.

Reads the run directories (status.json), the sweep manifest (which job runs which run) and SLURM
(squeue, sacct). A job SLURM has ended while its status.json still says running or requeued (SIGKILL,
out of memory, cancelled, not requeued) is reported as failed, with the job's log file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from midsweep.launch import manifest, rundir, slurm_state

STATES = ("pending", "running", "requeued", "done", "failed")
_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
_REQUEUEING = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "STOPPED"}


@dataclass
class RunState:
    run_id: str
    state: str
    step: Optional[int]
    job_id: Optional[str]
    reason: Optional[str]
    log: Optional[str]
    overrides: list


def classify(run_dir: Path, entry: dict, job: Optional[dict]) -> tuple[str, Optional[str], Optional[str]]:
    """(state, reason, log) of one run from its status.json, its manifest entry and SLURM's record of its job."""
    st = rundir.status(run_dir) or {}
    s, step = st.get("status"), st.get("step")
    train_log = st.get("log") or (str(run_dir / "train.log") if (run_dir / "train.log").exists() else None)
    job_log = entry.get("stderr") or entry.get("log")
    if s == "done":
        return "done", None, train_log
    if s == "failed":
        return "failed", st.get("reason") or "failed", train_log or job_log
    if job is None:  # no SLURM record (local launch, accounting off): trust the run directory
        if s in ("running", "requeued"):
            return s, f"at step {step}" if step is not None else None, train_log
        return "pending", "not started" if entry.get("job_id") else "not launched yet", job_log
    state, why = job["state"], job.get("reason")
    ckpt = rundir.latest_checkpoint(run_dir)
    if state == "PENDING":
        if s == "requeued" or ckpt is not None:
            return "requeued", f"resumes from step {ckpt} when it starts ({why or 'pending'})", job_log
        return "pending", why, job_log
    if state in _REQUEUEING:
        return "requeued", f"SLURM: {state}" + (f", checkpoint at step {ckpt}" if ckpt is not None else ""), job_log
    if state in _RUNNING:
        if s == "requeued":
            return "requeued", f"checkpointed at step {step}; requeueing", job_log
        return "running", f"at step {step}" if step is not None else "starting", train_log or job_log
    at = f" at step {step}" if step is not None else " before training started"
    code = f" (exit code {why})" if why else ""
    return "failed", f"SLURM job {entry.get('job_id')} ended {state}{code}{at}; the run did not finish", job_log


def collect(sweep_dir: Path, query: Callable[[list], dict] = slurm_state.states) -> list[RunState]:
    """Every run of the sweep: those in its manifest, then run directories the manifest does not list."""
    sweep_dir = Path(sweep_dir)
    runs = manifest.read(sweep_dir)["runs"]
    for d in rundir.run_dirs(sweep_dir):
        runs.setdefault(d.name, {"run_dir": str(d), "overrides": []})
    jobs = query([e["job_id"] for e in runs.values() if e.get("job_id")])
    out = []
    for run_id, entry in runs.items():
        run_dir = Path(entry.get("run_dir") or sweep_dir / run_id)
        job = jobs.get(str(entry.get("job_id"))) if entry.get("job_id") else None
        state, reason, log = classify(run_dir, entry, job)
        step = (rundir.status(run_dir) or {}).get("step")
        out.append(RunState(run_id, state, step, entry.get("job_id"), reason, log, entry.get("overrides") or []))
    return out


def table(rows: list[RunState]) -> str:
    head = f"{'run_id':12}  {'state':8}  {'step':>6}  {'job':10}  {'overrides':32}  reason / log"
    lines = [head]
    for r in rows:
        over = " ".join(r.overrides)
        over = over if len(over) <= 32 else over[:29] + "..."
        step = "-" if r.step is None else str(r.step)
        lines.append(f"{r.run_id:12}  {r.state:8}  {step:>6}  {str(r.job_id or '-'):10}  {over:32}  "
                     f"{r.reason or ''}{'  ' if r.reason else ''}{r.log or ''}")
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


def as_dicts(rows: list[RunState]) -> list[dict]:
    return [asdict(r) for r in rows]
