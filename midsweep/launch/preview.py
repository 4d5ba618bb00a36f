"""Dry run of a sweep: the grid, the jobs, what would be skipped, and the estimated cost."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from midsweep.config import RunConfig
from midsweep.launch import cache_plan, epochs, memory
from midsweep.launch.sharing import SweepPlan, cost
from midsweep.launch.sweep import DUPLICATE, Point


@dataclass(frozen=True)
class Throughput:
    """How fast a GPU is assumed to train, to turn FLOPs into GPU-hours (launcher keys peak_tflops, mfu)."""

    peak_tflops: float = 312.0
    """Peak dense bf16 TFLOP/s of one GPU (A100: 312, H100 SXM: 989)."""
    mfu: float = 0.35
    """Fraction of peak a small LM training run reaches (model FLOPs utilisation)."""

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.peak_tflops * 1e12 * self.mfu) / 3600


def _num(x: float) -> str:
    return f"{x:.3g}"


def duplicates_line(points: list[Point]) -> str:
    """One line for the points that repeat the run of an earlier point (every weight of a no-introduction
    baseline, say), which a table would list one by one; '' when there are none."""
    dups = [p for p in points if p.action == DUPLICATE]
    if not dups:
        return ""
    first = {}
    for p in points:
        first.setdefault(p.run_id, p.index)
    repeated = sorted({first[p.run_id] for p in dups})
    shown = ", ".join(f"#{i}" for i in repeated[:8]) + (", ..." if len(repeated) > 8 else "")
    return (f"{len(dups)} duplicate point(s) not listed: the same run as one of {len(repeated)} earlier point(s) "
            f"({shown}), run once; hydra.launcher.list_duplicates=true lists them")


def unknown_posttrain_line(runs: dict[int, RunConfig]) -> list[str]:
    """The runs whose post-training step count is unknown (``posttrain.epochs`` of a split not prepared)."""
    unknown = sorted(i for i, run in runs.items() if not run.posttrain_known)
    if not unknown:
        return []
    domains = sorted({runs[i].posttrain.domain for i in unknown})
    shown = ", ".join(f"#{i}" for i in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
    return [f"post-training steps unknown until `midsweep prepare` for {len(unknown)} run(s) ({shown}): "
            f"posttrain.epochs counts passes over the training split of {', '.join(domains)}, not prepared yet; "
            "the tokens, FLOPs and GPU-hours above leave their post-training out"]


def memory_line(peaks: dict[int, float], gpus: memory.Gpus) -> list[str]:
    """The largest estimated peak per GPU and the points over ``gpu_memory_gb`` (marked ! in the table)."""
    if not peaks:
        return []
    worst = max(peaks, key=peaks.get)
    over = sum(gib > gpus.memory_gb for gib in peaks.values())
    return [f"peak memory per GPU, estimated (docs/slurm.md#gpu-memory): up to {peaks[worst]:.1f} GiB (#{worst}) of "
            f"{gpus.memory_gb:g} (hydra.launcher.gpu_memory_gb); "
            + (f"{over} point(s) marked ! do not fit" if over else "every point fits")]


def preview(points: list[Point], throughput: Throughput, gpus: Optional[memory.Gpus] = None, launcher: str = "",
            sharing: Optional[SweepPlan] = None, list_duplicates: bool = False) -> str:
    """A table of every point (duplicates in one line unless ``list_duplicates``) and the totals of the points
    that would be submitted; with ``sharing`` (the launch's fork plan, docs/sharing.md), which point forks from
    which at what step and the totals without it. Column GiB/GPU: the estimated peak memory per GPU of the runs
    on ``gpus`` (midsweep.launch.memory; default one GPU), ! where it exceeds theirs."""
    gpus = gpus or memory.Gpus()
    todo = [p for p in points if p.submit]
    plans = {p.index: p.run.plan() for p in todo}
    peaks = {p.index: memory.estimate(p.run, gpus).gib() for p in todo
             if isinstance(p.run, RunConfig) and gpus.runs_on_gpu(p.run)}
    rows = [f"{'#':>4}  {'run_id':12}  {'action':9}  {'tokens':>9}  {'tok/param':>9}  {'FLOPs':>9}  {'GiB/GPU':>7}  "
            f"{'forks from':15}  overrides / reason"]
    for p in points if list_duplicates else [p for p in points if p.action != DUPLICATE]:
        plan = plans.get(p.index)
        tokens, flops = (_num(plan["tokens"]), _num(plan["flops"])) if plan else ("-", "-")
        per_param = _num(plan["tokens"] / plan["all_params"]) if plan and plan.get("all_params") else "-"
        peak = peaks.get(p.index)
        gib = "-" if peak is None else f"{peak:.1f}" + ("!" if peak > gpus.memory_gb else "")
        extra = f"  ({p.reason})" if p.reason else ""
        fork, parent = (sharing.fork(p), sharing.parent(p)) if sharing else (None, None)
        source = (f"#{parent.index} @{fork.step}" if parent else f"store @{fork.step}") if fork else "-"
        rows.append(f"{p.index:>4}  {p.run_id:12}  {p.action:9}  {tokens:>9}  {per_param:>9}  {flops:>9}  {gib:>7}  "
                    f"{source:15}  {' '.join(p.overrides)}{extra}")
    tokens = sum(plan["tokens"] for plan in plans.values())
    flops = sum(plan["flops"] for plan in plans.values())
    skipped = len(points) - len(todo)
    rows += ["", *filter(None, [None if list_duplicates else duplicates_line(points)]),
             f"{len(points)} point(s); {len(todo)} job(s) to submit{f' with {launcher}' if launcher else ''}, "
             f"{skipped} skipped (done or duplicate)",
             f"estimated{' without prefix sharing' if sharing else ''}: {_num(tokens)} tokens, {_num(flops)} FLOPs, "
             f"{throughput.gpu_hours(flops):.3g} GPU-hours "
             f"(at {throughput.mfu:.0%} of {throughput.peak_tflops:g} TFLOP/s per GPU; "
             f"hydra.launcher.peak_tflops / mfu), {gpus.count} GPU(s) per job"]
    if sharing is not None and sharing.points:
        c = cost(sharing)
        rows += [f"with prefix sharing (train.share_prefixes): {_num(c['tokens_shared'])} tokens "
                 f"({c['tokens_shared'] / max(c['tokens'], 1):.0%} of the above), {_num(c['flops_shared'])} FLOPs, "
                 f"{throughput.gpu_hours(c['flops_shared']):.3g} GPU-hours; "
                 f"{len(sharing.plan.forks)} run(s) fork from a shared prefix (column 'forks from': point @ step)"]
    rows += memory_line(peaks, gpus)
    # a launcher's run_config may return another type (it needs only run_id/run_dir/plan): no epochs to report
    runs = {p.index: p.run for p in todo if isinstance(p.run, RunConfig)}
    rows += unknown_posttrain_line(runs)
    rows += epochs.report(runs)
    rows += cache_plan.report(list(runs.values()))
    rows.append("preview only: nothing was submitted (drop hydra.launcher.preview=true to launch)")
    return "\n".join(rows)
