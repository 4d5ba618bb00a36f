"""What both midsweep launchers do before launching: validate the grid, skip finished runs, preview."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.midsweep_launcher.config import MidsweepOptions
from midsweep import user_config
from midsweep.config import RunConfig
from midsweep.launch import manifest, memory, sharing as launch_sharing, status, status_table
from midsweep.launch.compose import PointComposer
from midsweep.launch.preview import Throughput, duplicates_line, preview
from midsweep.launch.sweep import DUPLICATE, Point, done_result, format_losses, load_function, preflight

log = logging.getLogger("midsweep.launch")
OPTIONS = tuple(f.name for f in dataclasses.fields(MidsweepOptions))


def split_options(params: dict) -> tuple[dict, dict]:
    """(midsweep options, each given or its MidsweepOptions default; the rest) of a launcher's constructor
    arguments."""
    defaults = MidsweepOptions()
    return ({k: params.get(k, getattr(defaults, k)) for k in OPTIONS},
            {k: v for k, v in params.items() if k not in OPTIONS})


def plan(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Point]:
    """Validate every point (all errors at once) and log what happens to each."""
    user_config.check(launcher.config.hydra.runtime.config_sources)
    tic = time.perf_counter()
    composer = PointComposer(launcher.hydra_context.config_loader, launcher.config)
    points = preflight(job_overrides, composer.task_config, load_function(launcher.opts["run_config"]),
                       skip_done=launcher.opts["skip_done"], initial_index=initial_job_idx,
                       preview=bool(launcher.opts["preview"]))
    todo = sum(p.submit for p in points)
    log.info(f"validated {len(points)} grid point(s) in {time.perf_counter() - tic:.2f}s: "
             f"{todo} to launch, {len(points) - todo} skipped")
    for p in points:
        if p.action == "done":
            log.info(f"\t#{p.index} {p.run_id} done, skipped: final {format_losses(done_result(p)['final'])}")
        elif not p.submit and (p.action != DUPLICATE or launcher.opts["list_duplicates"]):
            log.info(f"\t#{p.index} {p.run_id} {p.action}, skipped: {p.reason}")
    if not launcher.opts["list_duplicates"] and duplicates_line(points):
        log.info(f"\t{duplicates_line(points)}")
    return points


def share(points: list[Point]) -> launch_sharing.SweepPlan:
    """The fork plan of the points to launch (docs/sharing.md), logged."""
    tic = time.perf_counter()
    sharing = launch_sharing.share(points)
    if sharing.plan.forks:
        c = launch_sharing.cost(sharing)
        log.info(f"prefix sharing: {len(sharing.plan.forks)} run(s) fork from a shared prefix; "
                 f"{c['tokens_shared']:.3g} of {c['tokens']:.3g} tokens trained "
                 f"({c['tokens_shared'] / max(c['tokens'], 1):.0%}); planned in {time.perf_counter() - tic:.2f}s\n"
                 + launch_sharing.describe(sharing))
    return sharing


def gpus(launcher: Any, per_node: int, nodes: int, slurm: bool) -> memory.Gpus:
    """The GPUs of one job of ``launcher`` with its ``gpu_memory_gb``."""
    return memory.Gpus(per_node, nodes, float(launcher.opts["gpu_memory_gb"]), slurm)


def check_memory(points: list[Point], gpus: memory.Gpus) -> None:
    """Refuse the launch (memory.DoesNotFit) if a point to launch would not fit in its GPUs' memory."""
    memory.check({p.index: p.run for p in points if p.submit and isinstance(p.run, RunConfig)}, gpus)


def show_preview(launcher: Any, points: list[Point], gpus: memory.Gpus, name: str,
                 sharing: launch_sharing.SweepPlan | None = None) -> list[JobReturn]:
    """Print the preview, then refuse (as a launch would) points that would not fit in their GPUs' memory."""
    o = launcher.opts
    print(preview(points, Throughput(o["peak_tflops"], o["mfu"]), gpus, name,
                  sharing, list_duplicates=o["list_duplicates"]))
    check_memory(points, gpus)
    return [returned(p, {"preview": p.action, "run_id": p.run_id}) for p in points]


def returned(point: Point, value: Any, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    """A JobReturn for a point that ran elsewhere or not at all (Hydra's sweeper wants one per point)."""
    return JobReturn(overrides=point.overrides, working_dir=str(point.run_dir), task_name=point.run_id,
                     status=status, _return_value=value)


def skipped(point: Point) -> JobReturn:
    return returned(point, done_result(point))


def write_manifests(points: list[Point], extra: dict[str, dict],
                    sharing: launch_sharing.SweepPlan | None = None) -> list[str]:
    """One manifest per sweep directory (the parent of the run directories); a fork's entry has its ``prefix``."""
    by_dir: dict = {}
    for p in points:
        if p.action == "duplicate":
            continue
        fields = extra.get(p.run_id, {})
        if sharing is not None and sharing.record(p):
            fields = {**fields, "prefix": sharing.record(p)}
        by_dir.setdefault(p.run_dir.parent, {})[p.run_id] = manifest.entry(p.overrides, p.run_dir, p.action, **fields)
    return [str(manifest.update(d, runs)) for d, runs in by_dir.items()]


def show_sweeps(points: list[Point]) -> None:
    """The launchers' last lines once every run has ended: each sweep's table as ``midsweep status`` shows it."""
    for sweep_dir in sorted({p.run_dir.parent for p in points}):
        log.info(f"sweep {sweep_dir}:\n{status_table.table(status.collect(sweep_dir))}")
