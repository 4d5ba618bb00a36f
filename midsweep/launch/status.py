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

from midsweep import rundir, runfiles
from midsweep.launch import manifest, progress, slurm_state
from midsweep.sharing import store

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
    """``<parent run id>@<step>``: the shared prefix this run starts from (docs/sharing.md): what the run recorded
    once it has, the launch's plan before; ``none (planned ...)`` for a fork that trained from scratch."""
    final: dict = field(default_factory=dict)
    """The final held-out loss per domain (summary.json) of a done run; empty otherwise."""
    problems: list = field(default_factory=list)
    """Files of the run that could not be used (``midsweep.runfiles``): path, what is wrong, the fix."""


@dataclass
class RunFiles:
    """What a run directory says about itself, read once; a file or field that is not what the results contract
    says is left out and named in ``problems``."""

    status: dict
    summary: dict
    prefix: Optional[dict]
    """prefix.json: the shared prefix a fork started from."""
    problems: list
    status_unusable: bool = False
    """status.json is there but is no object (its problem is in ``problems``)."""

    @classmethod
    def read(cls, run_dir: Path) -> "RunFiles":
        st, summary, prefix = (runfiles.read(run_dir / name, fields) for name, fields in (
            (rundir.STATUS, runfiles.STATUS), (rundir.SUMMARY, runfiles.SUMMARY), (store.META, runfiles.PREFIX)))
        return cls(st.data or {}, summary.data or {}, prefix.data, st.problems + summary.problems + prefix.problems,
                   status_unusable=st.data is None and bool(st.problems))

    def fork(self, planned: Optional[dict]) -> Optional[str]:
        """Where the run forked from: what it recorded (summary.json, else prefix.json, else none once it has
        trained steps without one), the plan until then."""
        if "prefix" in self.summary:
            recorded = self.summary["prefix"]
        elif self.prefix is not None:
            recorded = self.prefix
        elif self.status.get("step"):
            recorded = None
        else:
            return _at(planned)
        if recorded or not planned:
            return _at(recorded)
        return f"none (planned {_at(planned)})"


def _at(prefix: Optional[dict]) -> Optional[str]:
    return f"{prefix.get('parent') or 'store'}@{prefix.get('step')}" if prefix else None


def classify(files: RunFiles, run_dir: Path, job_id: Optional[str], entry: dict,
             job: Optional[dict]) -> tuple[str, Optional[str], Optional[str]]:
    """(state, reason, log) of one run from its files, its manifest entry and SLURM's record of ``job_id``."""
    st = files.status
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
        return "pending", "not started" if job_id else "not launched yet", job_log
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
    return "failed", f"SLURM job {job_id} ended {state}{code}{at}; the run did not finish", job_log


def job_of(files: RunFiles, entry: dict, jobs: dict) -> Optional[str]:
    """The job whose SLURM record tells the run's state. The run's own word first: the job its status.json says
    trains it, unless that one has ended and the manifest's job (a later launch that resumes it) is still live.
    Two launches at once may leave the manifest naming the job that lost the run lock, not the one training."""
    own = files.status.get("slurm_job_id") if files.status.get("status") in ("running", "requeued") else None
    planned = entry.get("job_id")
    live = [j for j in (own, planned) if j and (jobs.get(str(j)) or {}).get("state") in slurm_state.LIVE]
    return (live or [own or planned])[0]


def collect(sweep_dir: Path, query: Callable[[list], dict] = slurm_state.states) -> list[RunState]:
    """Every run of the sweep: those in its manifest, then run directories the manifest does not list."""
    sweep_dir = Path(sweep_dir).absolute()
    runs = manifest.read(sweep_dir)["runs"]
    for d in rundir.run_dirs(sweep_dir):
        runs.setdefault(d.name, {"overrides": []})
    files = {run_id: RunFiles.read(sweep_dir / run_id) for run_id in runs}
    jobs = query([j for run_id, e in runs.items()
                  for j in (e.get("job_id"), files[run_id].status.get("slurm_job_id")) if j])
    out = []
    for run_id, entry in runs.items():
        run_dir, f = sweep_dir / run_id, files[run_id]
        job_id = job_of(f, entry, jobs)
        state, reason, log = classify(f, run_dir, job_id, entry, jobs.get(str(job_id)) if job_id else None)
        if f.status_unusable and state == "pending":
            reason = "unknown: its status.json cannot be used (listed below the table)"
        out.append(RunState(run_id, state, f.status.get("step"), job_id, reason, log, entry.get("overrides") or [],
                            progress=progress.of_run(f.status, f.summary, state), fork_of=f.fork(entry.get("prefix")),
                            final=(f.summary.get("final") or {}) if state == "done" else {}, problems=f.problems))
    _name_failed_parents(out, files, runs)
    coords = progress.varying_coords({r.run_id: sweep_dir / r.run_id for r in out},
                                     {r.run_id: r.overrides for r in out},
                                     {r.run_id: files[r.run_id].summary for r in out})
    for r in out:
        r.coords = coords[r.run_id]
    return out


def _name_failed_parents(rows: list[RunState], files: dict, runs: dict) -> None:
    """A fork that never ran because the run it forks from failed (SLURM cancelled it, afterok) says so, naming
    that run and why it failed, even where the parent's status.json still says running (a killed job)."""
    by_id = {r.run_id: r for r in rows}
    for r in rows:
        planned = runs[r.run_id].get("prefix") or {}
        parent = by_id.get(planned.get("parent"))
        if files[r.run_id].status or r.state not in ("pending", "failed") or parent is None or parent.state != "failed":
            continue
        r.state, r.reason = "failed", (f"forks from run {parent.run_id} at step {planned.get('step')}, which failed: "
                                       f"{parent.reason}; rerun the sweep (the parent runs first)")


def problems(sweep_dir: Path, rows: list[RunState]) -> list[str]:
    """What could not be used: each run's unusable files, and entries named like a run that are not one."""
    found: list[str] = []
    manifest.read(sweep_dir, found)
    return found + [p for r in rows for p in r.problems] + [rundir.stray(p) for p in rundir.strays(sweep_dir)]


def as_dicts(rows: list[RunState]) -> list[dict]:
    return [asdict(r) for r in rows]
