"""``midsweep status``: each run of a sweep directory as pending / running / requeued / interrupted / done / failed.

Reads the run directories (status.json), the sweep manifest (which job runs which run) and SLURM
(squeue, sacct). A job SLURM has ended while its status.json still says running or requeued (SIGKILL,
out of memory, cancelled, not requeued) is reported as failed, with the job's log file.

Run directories are those under the sweep directory given (``<sweep_dir>/<run_id>``), whatever path the
manifest recorded: a moved or copied sweep reports its own state.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from midsweep import rundir
from midsweep.launch import manifest, progress, slurm_state

STATES = ("pending", "running", "requeued", "interrupted", "done", "failed")
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
    coords: dict = field(default_factory=dict)
    """The sweep coordinates that vary between the sweep's runs (``progress.varying_coords``)."""
    progress: progress.RunProgress = field(default_factory=progress.RunProgress)
    """step / total, tokens/s, ETA, heartbeat age and staleness."""
    fork_of: Optional[str] = None
    """``<parent run id>@<step>``: the shared prefix this run starts from (docs/prefix.md), planned or done."""


def classify(run_dir: Path, entry: dict, job: Optional[dict]) -> tuple[str, Optional[str], Optional[str]]:
    """(state, reason, log) of one run from its status.json, its manifest entry and SLURM's record of its job."""
    st = rundir.read_status(run_dir) or {}
    s, step = st.get("status"), st.get("step")
    train_log = str(run_dir / rundir.TRAIN_LOG) if (run_dir / rundir.TRAIN_LOG).exists() else None
    job_log = entry.get("stderr") or entry.get("log")
    if s == "done":
        return "done", None, train_log
    if s == "failed":
        return "failed", st.get("reason") or "failed", train_log or job_log
    if s == "interrupted":  # stopped by Ctrl-C: whatever its job did after, it waits for a rerun
        return "interrupted", st.get("reason"), train_log
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
    sweep_dir = Path(sweep_dir).absolute()
    runs = manifest.read(sweep_dir)["runs"]
    for d in rundir.run_dirs(sweep_dir):
        runs.setdefault(d.name, {"overrides": []})
    jobs = query([e["job_id"] for e in runs.values() if e.get("job_id")])
    out = []
    for run_id, entry in runs.items():
        run_dir = sweep_dir / run_id
        job = jobs.get(str(entry.get("job_id"))) if entry.get("job_id") else None
        state, reason, log = classify(run_dir, entry, job)
        step = (rundir.read_status(run_dir) or {}).get("step")
        fork = (rundir.read_summary(run_dir) or {}).get("prefix") or entry.get("prefix")
        parent = (rundir.read_status(sweep_dir / fork["parent"]) or {}) if fork and fork.get("parent") else {}
        never_ran = rundir.read_status(run_dir) is None  # SLURM held or cancelled it (afterok), or it never ran
        if never_ran and state in ("pending", "failed") and parent.get("status") == "failed":
            state, reason = "failed", (f"forks from run {fork['parent']}, which failed at step {parent.get('step')}: "
                                       f"{parent.get('reason')}; rerun the sweep (the parent runs first)")
        out.append(RunState(run_id, state, step, entry.get("job_id"), reason, log, entry.get("overrides") or [],
                            progress=progress.of_run(run_dir, state),
                            fork_of=f"{fork['parent'] or 'store'}@{fork['step']}" if fork else None))
    coords = progress.varying_coords({r.run_id: sweep_dir / r.run_id for r in out},
                                     {r.run_id: r.overrides for r in out})
    for r in out:
        r.coords = coords[r.run_id]
    return out


def table(rows: list[RunState]) -> str:
    """One line per run (its varying coordinates as columns), the counts per state and the sweep's totals."""
    keys = sorted({k for r in rows for k in r.coords})
    head = ["run_id", "state", "step/total", "tok/s", "ETA", "heartbeat", *keys, "fork of", "job", "reason / log"]
    cells = [head]
    for r in rows:
        p = r.progress
        step = f"{'-' if r.step is None else r.step}/{p.total_steps or '?'}"
        beat = "-" if p.heartbeat_age_s is None else _ago(p.heartbeat_age_s) + (" STALE" if p.stale else "")
        why = "  ".join(x for x in (r.reason, r.log) if x)
        cells.append([r.run_id, r.state, step, "-" if p.tok_per_s is None else f"{p.tok_per_s:,.0f}",
                      progress.duration(p.eta_s), beat, *(_value(r.coords.get(k)) for k in keys),
                      r.fork_of or "-", str(r.job_id or "-"), why])
    widths = [max(len(row[i]) for row in cells) for i in range(len(head) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in cells]
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if any(r.progress.stale for r in rows):
        lines.append(f"STALE: running, but no heartbeat for over {rundir.STALE_AFTER_S // 60} min: the process is "
                     "likely dead or hung; check its log, stop it, and rerun the sweep to resume the run")
    if rows:
        lines.append(progress.totals(rows))
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _value(v) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def as_dicts(rows: list[RunState]) -> list[dict]:
    return [asdict(r) for r in rows]
