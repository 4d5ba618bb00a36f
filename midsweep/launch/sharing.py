"""Prefix sharing for a launch (docs/sharing.md): the fork plan of a grid's points, as the launchers use it.

The plan (midsweep.sharing.plan) says which point trains each shared prefix and which points fork from it.
Here it becomes what a launcher acts on: the order to run points in (parents first), the parent each fork
waits for (a SLURM ``afterok`` dependency, lifted by the parent once it has published the prefix), the
``train.publish_steps`` override of each parent, the claims that tell a fork which run will publish its prefix
(and the parent which jobs to start then), the manifest's record of it, and the cost with and without sharing
for the preview.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from midsweep import rundir
from midsweep.config import RunConfig
from midsweep.launch.sweep import Point
from midsweep.sharing import slurm_jobs, store
from midsweep.sharing.keys import Signature
from midsweep.sharing.plan import Fork, Job, Plan, plan

OVERRIDE = "train.publish_steps"


@dataclass
class SweepPlan:
    points: list[Point]
    """The points to launch, in grid order (the plan's job indices)."""
    plan: Plan

    def fork(self, point: Point) -> Optional[Fork]:
        i = self._where.get(point.index)
        return None if i is None else self.plan.forks.get(i)

    def parent(self, point: Point) -> Optional[Point]:
        """The point whose run publishes this point's prefix (None: a root, or its prefix is published)."""
        fork = self.fork(point)
        return self.points[fork.parent] if fork and fork.parent is not None else None

    def depth(self, point: Point) -> int:
        """0 for a point that waits for no other, else 1 + its parent's depth (SLURM submits by depth)."""
        i = self._where.get(point.index)
        return 0 if i is None else self.plan.depth(i)

    def ordered(self, points: list[Point]) -> list[Point]:
        """The points to launch of ``points``: the planned ones in plan order (every fork after its parent),
        then the others in grid order."""
        planned = [self.points[i] for i in self.plan.order]
        return planned + [p for p in points if p.submit and p.index not in self._where]

    def overrides(self, point: Point) -> list[str]:
        """The point's overrides, plus the steps it publishes for its forks (with any it publishes anyway)."""
        steps = self.plan.publish.get(self._where.get(point.index))
        if not steps:
            return list(point.overrides)
        steps = sorted(set(steps) | set(point.run.train.publish_steps))
        kept = [o for o in point.overrides if o.split("=", 1)[0].lstrip("+~") != OVERRIDE]
        return kept + [f"{OVERRIDE}=[{','.join(map(str, steps))}]"]

    def record(self, point: Point) -> Optional[dict]:
        """The manifest's ``prefix`` of a fork: the key and step it restores and the run that publishes it."""
        fork = self.fork(point)
        if fork is None:
            return None
        parent = self.parent(point)
        return {"key": fork.key, "step": fork.step, "parent": parent.run_id if parent else None}

    def claim(self) -> None:
        """Record in each sweep's store which run publishes which prefix, before anything runs: a fork that
        starts before its parent has published waits for it, or fails with its reason if it failed."""
        for i, steps in self.plan.publish.items():
            p, sig = self.points[i], self.plan.jobs[i].sig
            for step in steps:
                store.claim(store.store_dir(p.run_dir.parent), sig.static, step, sig.key(step), p.run_id, p.run_dir)

    def wait_for(self, point: Point, job: str) -> None:
        """``job`` is the fork ``point``'s SLURM job, submitted with ``afterok`` on its parent's job: name it in the
        claim of its prefix, so that the parent starts it once it has published it (or start it now, when the
        prefix is published already)."""
        fork, parent = self.fork(point), self.parent(point)
        if fork is None or parent is None:
            return
        sig = self.plan.jobs[self._index(parent)].sig
        if not store.wait_for(store.store_dir(parent.run_dir.parent), sig.static, fork.step, fork.key, job):
            slurm_jobs.start([job])

    def steps(self, point: Point, shared: bool = True) -> int:
        return self.plan.steps(self._index(point), shared)

    def _index(self, point: Point) -> int:
        return self._where[point.index]

    def __post_init__(self) -> None:
        self._where = {p.index: i for i, p in enumerate(self.points)}


def share(points: list[Point]) -> SweepPlan:
    """The fork plan of the points a launch submits (runs with ``train.share_prefixes=false`` stay out)."""
    todo = [p for p in points if p.submit and isinstance(p.run, RunConfig)]
    jobs, available = [], []
    listed: set[tuple[str, str]] = set()
    for p in todo:
        sig, where = Signature.of(p.run), str(store.store_dir(p.run_dir.parent))
        done = rundir.complete_steps(p.run_dir)
        jobs.append(Job(sig, done[-1] if done else 0, frozenset(done), p.run.train.share_prefixes, where))
        if (where, sig.static) not in listed:  # prefixes published by earlier launches
            listed.add((where, sig.static))
            available += [(where, sig.static, e.step, e.key) for e in store.entries(Path(where), sig.static)]
    return SweepPlan(todo, plan(jobs, available))


def cost(sp: SweepPlan) -> dict:
    """Tokens and FLOPs of the submitted points with and without sharing (RunConfig.plan() scaled by the tokens
    of the steps each trains: its last ones, whose batch may be post-training's)."""
    out = {"tokens": 0.0, "flops": 0.0, "tokens_shared": 0.0, "flops_shared": 0.0}
    for p in sp.points:
        plan_, run = p.run.plan(), p.run
        full = max(1, run.tokens_at(run.total_steps))
        for shared, suffix in ((False, ""), (True, "_shared")):
            part = (full - run.tokens_at(run.total_steps - sp.steps(p, shared))) / full
            out["tokens" + suffix] += plan_["tokens"] * part
            out["flops" + suffix] += plan_["flops"] * part
    return out


def needed_keys(sweep_dir: Path, runs: dict) -> set[str]:
    """Prefix keys that a run of the manifest's ``runs`` which is not done yet will fork from."""
    keep = set()
    for run_id, entry in runs.items():
        prefix = entry.get("prefix")
        run_dir = Path(entry.get("run_dir") or Path(sweep_dir) / run_id)
        if prefix and (rundir.read_status(run_dir) or {}).get("status") != "done":
            keep.add(prefix["key"])
    return keep


def gc(sweep_dir: Path, runs: dict, dry_run: bool = False) -> list[Path]:
    """Remove the prefixes of ``sweep_dir`` that no pending run of the manifest's ``runs`` needs (``midsweep gc``)."""
    return store.gc(store.store_dir(sweep_dir), needed_keys(sweep_dir, runs), dry_run=dry_run)


def describe(sp: SweepPlan) -> str:
    """One line per fork: which point forks from which at what step (for logs)."""
    lines = []
    for p in sp.ordered(sp.points):
        fork, parent = sp.fork(p), sp.parent(p)
        if fork:
            source = f"#{parent.index} {parent.run_id}" if parent else "a published prefix"
            lines.append(f"\t#{p.index} {p.run_id} forks from {source} at step {fork.step}")
    return "\n".join(lines)
