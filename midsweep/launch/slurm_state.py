"""What SLURM says about a set of jobs (``squeue`` for live jobs, ``sacct`` for finished ones).

Both answer {job id ("123" or "123_4" for array task 4): {"state", "reason"}}; an empty dict where the
command is missing or fails (no SLURM here, accounting off), so callers fall back to the run directories.
"""
from __future__ import annotations

import getpass
import shutil
import subprocess
from typing import Iterable

LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
        "SUSPENDED", "PREEMPTED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
"""States after which the job can still run (PREEMPTED with PreemptMode=REQUEUE comes back)."""


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def _expand(job_id: str) -> list[str]:
    """'123_[5-7,9%4]' -> ['123_5', '123_6', '123_7', '123_9']; other ids as they are."""
    if "_[" not in job_id:
        return [job_id]
    main, ranges = job_id.split("_[", 1)
    out = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{main}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _parse(text: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or "." in fields[0]:  # job steps (123.batch) are not jobs
            continue
        state = fields[1].split()[0] if fields[1] else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        for jid in _expand(fields[0]):
            out[jid] = {"state": state, "reason": fields[2] if fields[2] not in ("None", "") else None}
    return out


def _base_ids(job_ids: Iterable[str]) -> list[str]:
    return sorted({str(j).split("_")[0] for j in job_ids if j})


def squeue(job_ids: Iterable[str]) -> dict[str, dict]:
    """Live jobs of this user among ``job_ids`` (reason: why a pending job waits)."""
    wanted = _base_ids(job_ids)
    if not wanted:
        return {}
    text = _run(["squeue", "-h", "--array", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
    return {k: v for k, v in _parse(text).items() if k.split("_")[0] in wanted}


def sacct(job_ids: Iterable[str]) -> dict[str, dict]:
    """Accounting records (the newest attempt of each job; reason: the exit code)."""
    wanted = _base_ids(job_ids)
    if not wanted:
        return {}
    text = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(wanted)])
    return _parse(text)


def states(job_ids: Iterable[str]) -> dict[str, dict]:
    """squeue where it knows the job (it is fresher), sacct for the rest."""
    job_ids = list(job_ids)
    return {**sacct(job_ids), **squeue(job_ids)}
