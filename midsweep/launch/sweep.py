"""Pre-flight of a sweep: validate every grid point, find its run directory and decide what to do with it.

Nothing is submitted unless every point is valid; all invalid points are reported in one error.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.errors import CompactHydraException, HydraException
from omegaconf.errors import OmegaConfBaseException

from midsweep import rundir
from midsweep.config import RunConfig
from midsweep.config.errors import ConfigError, Problem
from midsweep.data.posttrain import resolve_epochs
from midsweep.launch.compose import OverrideProblems

NEW, DONE, RESUME, RERUN, DUPLICATE = "new", "done", "resume", "rerun", "duplicate"
"""What the launcher does with a point: submit it (new / resume from its checkpoint / rerun after a failure),
or not (done: finished before; duplicate: another point of the grid has the same run id)."""


@dataclass
class Point:
    index: int
    overrides: list[str]
    run_id: str
    run_dir: Path
    action: str
    reason: str = ""
    run: Any = field(default=None, repr=False)
    """The validated run config (``midsweep.config.RunConfig``)."""

    @property
    def submit(self) -> bool:
        return self.action in (NEW, RESUME, RERUN)


class InvalidSweep(ConfigError, CompactHydraException):
    """Some grid points are invalid; lists every problem of every point (Hydra prints it without a traceback)."""

    def __init__(self, invalid: list[tuple[list[str], list[Problem]]], total: int):
        self.invalid = invalid
        super().__init__([p for _, problems in invalid for p in problems])
        lines = [f"{len(invalid)} of {total} grid point(s) are invalid; nothing was submitted:"]
        for overrides, problems in invalid:
            lines.append(f"  point [{' '.join(overrides) or '(no overrides)'}]:")
            lines += [f"    - {p}" for p in problems]
        self.args = ("\n".join(lines),)


def load_function(dotted: str) -> Callable:
    """``package.module.function`` -> the function (the launcher's ``run_config`` key)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _problems(error: Exception) -> list[Problem]:
    if isinstance(error, ConfigError):
        return error.problems
    key = str(getattr(error, "full_key", "") or "config")
    message = str(error).splitlines()[0]
    return [Problem(key, message, "check the spelling and type of the override")]


def _remaining_problems(config: Any, to_run_config: Callable, known: list[Problem]) -> list[Problem]:
    """The problems of a point composed without its overrides that failed, less those already reported."""
    try:
        to_run_config(config)
    except (ConfigError, OmegaConfBaseException, HydraException) as e:
        return [p for p in _problems(e) if p.key not in {k.key for k in known}]
    return []


def action_for(run_dir: Path) -> tuple[str, str]:
    """What a (re)launch does with an existing run directory, and why."""
    st = rundir.read_status(run_dir)
    if st is None:
        return NEW, ""
    state = st.get("status")
    if state == "done":
        return DONE, "finished before"
    step = rundir.latest_checkpoint(run_dir)
    if state == "failed":
        return RERUN, f"failed before: {st.get('reason') or '?'}"
    if step is not None:
        return RESUME, f"resumes from step {step}"
    return RERUN, f"was {state} without a checkpoint"


def unknown_split(run: RunConfig) -> Problem:
    """Why a run post-trained for ``posttrain.epochs`` has no step count yet."""
    return Problem("posttrain.epochs", f"counts passes over the training split of domain {run.posttrain.domain!r}, "
                   "whose shards are not prepared: the post-training step count is unknown",
                   "run `midsweep prepare` with the same overrides first (add --slurm slurm_cpu for a CPU job)")


def preflight(job_overrides: Sequence[Sequence[str]], task_config: Callable, to_run_config: Callable,
              skip_done: bool = True, initial_index: int = 0, preview: bool = False) -> list[Point]:
    """Validate every point (raising InvalidSweep listing all invalid ones) and decide each point's action. A run
    post-trained for ``posttrain.epochs`` reads its split's size from the prepared shards: without them only a
    ``preview`` goes on (it says the step count is unknown)."""
    points: list[Point] = []
    invalid: list[tuple[list[str], list[Problem]]] = []
    seen: dict[str, int] = {}
    for i, overrides in enumerate(job_overrides):
        overrides = list(overrides)
        try:
            run = to_run_config(task_config(overrides))
        except OverrideProblems as e:  # a typo in one override: still list the problems of the others
            invalid.append((overrides, e.problems + _remaining_problems(e.config, to_run_config, e.problems)))
            continue
        except (ConfigError, OmegaConfBaseException, HydraException) as e:  # collected, then raised at once
            invalid.append((overrides, _problems(e)))
            continue
        if isinstance(run, RunConfig):  # a launcher's run_config may return another type
            run = resolve_epochs(run)
        run_id, run_dir = run.run_id(), Path(os.path.abspath(run.run_dir()))
        if run_id in seen:
            action, reason = DUPLICATE, f"same run as point #{seen[run_id]}"
        else:
            seen[run_id] = initial_index + i
            action, reason = action_for(run_dir)
            if action == DONE and not skip_done:
                action, reason = RERUN, "finished before; skip_done=false"
        point = Point(initial_index + i, overrides, run_id, run_dir, action, reason, run)
        if point.submit and not preview and not getattr(run, "posttrain_known", True):
            invalid.append((overrides, [unknown_split(run)]))
        points.append(point)
    if invalid:
        raise InvalidSweep(invalid, len(job_overrides))
    return points


def done_result(point: Point) -> dict:
    """What the launcher reports for a point it skipped."""
    return {"run_id": point.run_id, "run_dir": str(point.run_dir), "skipped": point.action,
            "reason": point.reason, "final": (rundir.read_summary(point.run_dir) or {}).get("final") or {}}


def format_losses(losses: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in losses.items())
