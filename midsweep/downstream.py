"""midsweep evaluate RUN_DIR --tasks TASK [TASK ...] [--steps N ...]: lm-evaluation-harness on a run's checkpoints.

Each checkpoint is exported to transformers (midsweep export) into a temporary directory and evaluated with
lm-eval's Python API; one row per step, task and metric is appended to the run's downstream.jsonl, where the
scores line up with the held-out losses by step and tokens. Needs the eval extra: pip install "midsweep[eval]".
A step and task already in downstream.jsonl is not evaluated again; --redo evaluates it again and replaces its
rows. Task files of your own (YAML task configs, e.g. over a local jsonl file) come in with --include-path DIR.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from midsweep import rundir
from midsweep.export import ExportError, checkpoint_steps, export, load_run

ROW_KEYS = ("step", "tokens", "request", "task", "metric", "filter", "value", "stderr", "num_fewshot", "samples")
"""A downstream.jsonl row: the checkpoint (step, tokens), the task asked for (request: a task or group name) and
the lm-eval entry it produced (task: the task or subtask), the metric with its lm-eval filter (e.g. acc, none),
its value and standard error (null where lm-eval gives none), the shots and the number of documents scored."""


@dataclass
class Request:
    """What to ask lm-eval for, at every step."""

    tasks: list[str]
    num_fewshot: Optional[int] = None
    limit: Optional[float] = None
    """Documents per task (a fraction when < 1): for quick looks; rows then say how many were scored."""
    batch_size: int = 8
    device: Optional[str] = None
    """None: cuda when available, else cpu."""
    include_path: list[str] = field(default_factory=list)


class UnknownTask(ValueError):
    """A task name lm-eval does not know (checked before any checkpoint is exported)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="the run directory (train.out_dir/<run_id>)")
    p.add_argument("--tasks", nargs="+", required=True, help="lm-eval task or group names, e.g. lambada_openai")
    p.add_argument("--steps", nargs="+", type=int, help="checkpoint steps (default: every complete checkpoint)")
    p.add_argument("--num-fewshot", type=int, help="shots (default: each task's own)")
    p.add_argument("--limit", type=float, help="documents per task (a fraction when < 1), for a quick look")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of lm-eval task YAML files of your own (repeatable)")
    p.add_argument("--redo", action="store_true", help="evaluate steps and tasks already in downstream.jsonl again")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    req = Request(args.tasks, args.num_fewshot, args.limit, args.batch_size, args.device, args.include_path)
    try:
        rows = evaluate(args.run_dir, req, args.steps, args.redo)
    except (ExportError, ImportError, UnknownTask) as err:
        sys.exit(f"midsweep evaluate: {err}")
    print(f"{len(rows)} row(s) appended to {Path(args.run_dir) / rundir.DOWNSTREAM}")
    return 0


def evaluate(run_dir: Path, req: Request, steps: Optional[list[int]] = None, redo: bool = False) -> list[dict]:
    """Evaluate ``req.tasks`` at ``steps`` (default: every complete checkpoint); returns the rows appended."""
    run_dir = Path(run_dir)
    load_run(run_dir)  # a clear error for a directory that is not a run, before lm-eval is imported
    steps = checkpoint_steps(run_dir, steps)
    path = run_dir / rundir.DOWNSTREAM
    plan = {(s, t) for s in steps for t in req.tasks}
    old = rundir.read_jsonl(path)
    if not redo:
        plan -= {(r["step"], r["request"]) for r in old}
    if not plan:
        return []
    lm_eval, HFLM, manager = _lm_eval(req.include_path)
    known = set(manager.all_tasks)  # tasks, groups and tags, --include-path's among them
    unknown = [t for t in req.tasks if t not in known]
    if unknown:
        raise UnknownTask(f"lm-eval knows no task or group {', '.join(map(repr, unknown))}. Fix: check the name "
                          "(lm_eval --tasks list), or give the folder of your own task files with --include-path DIR")
    if redo:  # after the import: a missing lm-eval leaves the old rows in place
        with rundir.atomic_open(path) as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in old if (r["step"], r["request"]) not in plan)
    appended = []
    for step in sorted({s for s, _ in plan}):
        with tempfile.TemporaryDirectory(prefix="midsweep-export-") as tmp:
            done = export(run_dir, tmp, step)
            lm = HFLM(pretrained=tmp, dtype="float32", batch_size=req.batch_size, device=req.device or _device())
            for task in (t for t in req.tasks if (step, t) in plan):
                # one call per task: every entry of a result comes from the task asked for (a group's subtasks)
                results = lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=req.num_fewshot,
                                                  limit=req.limit, task_manager=manager, log_samples=False)
                rows = rows_from_results(results, done.step, done.tokens, task)
                rundir.append_jsonl(path, rows)
                appended += rows
    return appended


def rows_from_results(results: dict, step: int, tokens: int, request: str) -> list[dict]:
    """The downstream.jsonl rows of one ``lm_eval.simple_evaluate`` result: every numeric metric of every entry
    of ``results["results"]`` (keys ``"<metric>,<filter>"``, standard errors under ``"<metric>_stderr,<filter>"``)."""
    rows = []
    for task, entry in results["results"].items():
        samples = results.get("n-samples", {}).get(task, {}).get("effective")
        shots = results.get("n-shot", {}).get(task)
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not _number(value):
                continue
            stderr = entry.get(f"{metric}_stderr,{filt}")
            rows.append({"step": step, "tokens": tokens, "request": request, "task": task, "metric": metric,
                         "filter": filt, "value": float(value), "stderr": float(stderr) if _number(stderr) else None,
                         "num_fewshot": shots, "samples": samples})
    return rows


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _lm_eval(include_path: list[str]):
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError(f"lm-evaluation-harness is not installed ({err}). Fix: pip install 'midsweep[eval]'") from err
    return lm_eval, HFLM, TaskManager(include_path=include_path or None)
