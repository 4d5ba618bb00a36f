"""How far a sweep is (``midsweep status``): each run's step / total, tokens/s, ETA and heartbeat age, the
sweep coordinates that vary between its runs, and the sweep's totals with an ETA.

Everything comes from the run directories: status.json (``step``, ``total_steps``, ``tok_per_s``, ``eta_s`` and
``updated``, refreshed by the training loop as its heartbeat, ``rundir.HEARTBEAT_S``), summary.json (``coords``,
``wall_time_s``) and, for a run that has no summary yet, config.yaml. A running run whose heartbeat is older than
``rundir.STALE_AFTER_S`` is flagged stale: its process is likely dead or hung.
"""
from __future__ import annotations

import calendar
import datetime
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import yaml

from midsweep import rundir
from midsweep.config.run import flatten

FINISHED = ("done", "failed")


@dataclass
class RunProgress:
    total_steps: Optional[int] = None
    """Optimizer steps of the whole run (None until its first heartbeat)."""
    tok_per_s: Optional[float] = None
    """Training throughput the run last reported."""
    eta_s: Optional[float] = None
    """Seconds left: the run's last estimate, less the time since if it is running (0 when done, None when
    unknown)."""
    heartbeat_age_s: Optional[float] = None
    """Seconds since status.json was last written."""
    stale: bool = False
    """Running, but its heartbeat is older than ``rundir.STALE_AFTER_S``."""
    run_s: Optional[float] = None
    """The run's whole duration: its wall time when done, else projected from its rate."""


def of_run(st: dict, summary: dict, state: str, now: Optional[float] = None) -> RunProgress:
    """The progress of a run from its status.json and summary.json (checked: ``midsweep.runfiles``), whose state
    (``midsweep.launch.status``) is ``state``."""
    now = time.time() if now is None else now
    p = RunProgress(total_steps=st.get("total_steps"), tok_per_s=st.get("tok_per_s"))
    if st.get("updated"):
        p.heartbeat_age_s = max(0.0, now - calendar.timegm(time.strptime(st["updated"], "%Y-%m-%dT%H:%M:%SZ")))
        p.stale = state == "running" and p.heartbeat_age_s > rundir.STALE_AFTER_S
    step, eta = st.get("step"), st.get("eta_s")
    if state == "done":
        p.eta_s, p.run_s = 0.0, summary.get("wall_time_s")
    elif eta is not None:
        # a stale run keeps its last estimate: what it has left once restarted
        p.eta_s = max(0.0, eta - (p.heartbeat_age_s or 0.0)) if state == "running" and not p.stale else eta
        if p.total_steps and step is not None and step < p.total_steps:
            p.run_s = eta * p.total_steps / (p.total_steps - step)
    return p


def varying_coords(run_dirs: dict[str, Path], overrides: dict[str, list],
                   summaries: dict[str, dict]) -> dict[str, dict]:
    """{run id: {key: value}} for the sweep coordinates whose values differ between the runs.

    A run's coordinates are its summary's ``coords`` (``summaries``: each run's checked summary.json); a run
    without them takes the same keys from its config.yaml. Keys set on the command line (``overrides``) count
    too, so that a grid's axes show before any run has written a summary."""
    coords = {rid: summaries[rid].get("coords") for rid in run_dirs}
    keys = set().union(*(c for c in coords.values() if c))
    keys |= {o.split("=", 1)[0].lstrip("+~") for over in overrides.values() for o in over if "=" in o}
    for rid, c in coords.items():
        if not c:
            flat = _flat_config(run_dirs[rid])
            coords[rid] = {k: flat[k] for k in keys if k in flat}
    vary = sorted(k for k in keys if len({repr(c.get(k)) for c in coords.values()}) > 1)
    return {rid: {k: c.get(k) for k in vary} for rid, c in coords.items()}


def totals(rows: Iterable) -> str:
    """One line: steps done / total, throughput of the running runs, and the sweep's ETA.

    The ETA assumes as many runs keep running at once as run now (at least one): the running runs' time left
    plus, for each run not started or requeued, its own estimate or else the typical run's duration (median of
    the known ones), divided by that concurrency."""
    rows = list(rows)
    known = [r for r in rows if r.progress.total_steps]
    done_steps = sum(min(r.step or 0, r.progress.total_steps) for r in known)
    all_steps = sum(r.progress.total_steps for r in known)
    running = [r for r in rows if r.state == "running" and not r.progress.stale]
    rate = sum(r.progress.tok_per_s or 0.0 for r in running)
    typical = [r.progress.run_s for r in rows if r.progress.run_s]
    left, unknown = 0.0, 0
    for r in rows:
        if r.state in FINISHED:
            continue
        if r.progress.eta_s is not None:
            left += r.progress.eta_s
        elif typical:
            left += statistics.median(typical)
        else:
            unknown += 1
    share = f" ({100 * done_steps / all_steps:.0f}%)" if all_steps else ""
    line = f"steps {done_steps}/{all_steps}{share} in {len(known)} run(s) reporting"
    line += f", {rate:,.0f} tok/s over {len(running)} running" if running else ""
    if all(r.state in FINISHED for r in rows):
        return line + ", nothing left to run"
    eta = "unknown" if unknown and not left else duration(left / max(1, len(running)))
    return line + f", sweep ETA {eta}" + (f" ({unknown} run(s) without an estimate yet)" if unknown and left else "")


def duration(seconds: Optional[float]) -> str:
    return "-" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def _flat_config(run_dir: Path) -> dict:
    try:
        tree = yaml.safe_load((Path(run_dir) / rundir.CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(tree) if isinstance(tree, dict) else {}


class SweepMeter:
    """The local launcher's line between runs: runs done / total, failed, elapsed and ETA.

    The ETA scales the time spent so far by the FLOPs left over the FLOPs done (``RunConfig.plan``), so a grid
    of unequal runs (model sizes, lengths) is estimated by its work, not its run count."""

    def __init__(self, points: list, skipped: int = 0):
        self.flops = {p.run_id: float(p.run.plan()["flops"]) for p in points}
        self.skipped, self.done, self.failed = skipped, 0, 0
        self.flops_done, self.t0 = 0.0, time.monotonic()

    def finished(self, run_id: str, failed: bool) -> str:
        """Count one run as ended; the line to print."""
        self.done += 1
        self.failed += failed
        self.flops_done += self.flops[run_id]
        elapsed = time.monotonic() - self.t0
        left = sum(self.flops.values()) - self.flops_done
        eta = elapsed * left / self.flops_done if self.flops_done else None
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        return (f"sweep: {self.done}/{len(self.flops)} run(s) done{skipped}, {self.failed} failed, "
                f"{duration(elapsed)} elapsed, ETA {duration(eta)}")
