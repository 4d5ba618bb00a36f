"""Which run of a sweep trains each shared prefix, and which runs fork from it (pure: no torch, no files).

Runs are taken trunk-like first (those whose mixture departs from the base mix latest, e.g. the
no-introduction baseline). Each run forks from the earlier run it agrees with longest (midsweep.sharing.keys),
at the step where they part: the prefix is published by whichever run actually trains that step (walking up
from a parent that itself forked at or after it). Every run then trains only what no earlier run trains: the
steps a sweep trains with sharing are the edges of the trie of its runs' step sequences, e.g. 23 of 41
run-lengths for the standard plasticity grid (8 introduction times x 5 weights + the baseline, one cosine).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from midsweep.sharing.keys import Signature, agreement


@dataclass(frozen=True)
class Job:
    """One run to launch, as the planner sees it."""

    sig: Signature
    start: int = 0
    """The step it resumes from (its newest complete checkpoint; 0 for a fresh run)."""
    checkpoints: frozenset = frozenset()
    """Steps of its complete checkpoints (it can publish those without training them again)."""
    shares: bool = True
    """``train.share_prefixes``: False keeps it out of the plan (it neither forks nor publishes)."""
    store: str = ""
    """The prefix store it reads and publishes to (its sweep directory): runs share only within one."""


@dataclass(frozen=True)
class Fork:
    step: int
    """The run restores the state after this many steps."""
    key: str
    """The prefix key at ``step`` (the store entry it restores)."""
    parent: Optional[int]
    """Index of the run that trains and publishes the prefix; None: it is in the store already."""


@dataclass
class Plan:
    jobs: list[Job]
    forks: dict[int, Fork] = field(default_factory=dict)
    publish: dict[int, list[int]] = field(default_factory=dict)
    """Run index -> the steps it publishes for its forks."""
    order: list[int] = field(default_factory=list)
    """Every run after the run it forks from (roots first, then forks by depth)."""

    def depth(self, i: int) -> int:
        """0 for a run that waits for no other run, else 1 + its parent's depth."""
        fork = self.forks.get(i)
        return 0 if fork is None or fork.parent is None else 1 + self.depth(fork.parent)

    def steps(self, i: int, shared: bool = True) -> int:
        """Optimizer steps run ``i`` trains itself, with sharing or without."""
        job, fork = self.jobs[i], self.forks.get(i) if shared else None
        return job.sig.total - max(job.start, fork.step if fork else 0)


def _trunk_first(job: Job) -> tuple:
    """Sort key: runs whose mixture leaves the base mix latest, then the longest, come first."""
    segments = job.sig.segments
    departs = segments[1][0] if len(segments) > 1 else float("inf")
    return (-departs, -job.sig.total)


def plan(jobs: list[Job], available: Iterable[tuple[str, str, int, str]] = ()) -> Plan:
    """The fork tree of ``jobs``. ``available``: (store, static key, step, prefix key) of published entries."""
    published: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for where, static, step, key in available:
        published.setdefault((where, static), []).append((step, key))
    out = Plan(jobs)
    first = sorted(range(len(jobs)), key=lambda i: (_trunk_first(jobs[i]), i))
    placed: dict[tuple[str, str], list[int]] = {}
    for r in first:
        job = jobs[r]
        if not job.shares:
            continue
        group = (job.store, job.sig.static)
        best_step, best_key, best_parent = 0, "", None
        for step, key in published.get(group, []):
            if best_step < step <= job.sig.total and job.sig.key(step) == key:
                best_step, best_key = step, key
        for p in placed.get(group, []):
            a = agreement(jobs[p].sig, job.sig)
            if a <= best_step:
                continue
            q = p  # the run that trains step a: walk up past parents that restore at or after it
            while q in out.forks and out.forks[q].step >= a and out.forks[q].parent is not None:
                q = out.forks[q].parent
            restores_past = q in out.forks and out.forks[q].step >= a
            resumes_past = jobs[q].start > a and a not in jobs[q].checkpoints
            if not (restores_past or resumes_past):
                best_step, best_key, best_parent = a, "", q
        if best_step > job.start:
            out.forks[r] = Fork(best_step, best_key or job.sig.key(best_step), best_parent)
            if best_parent is not None:
                out.publish.setdefault(best_parent, [])
                if best_step not in out.publish[best_parent]:
                    out.publish[best_parent].append(best_step)
        placed.setdefault(group, []).append(r)
    for steps in out.publish.values():
        steps.sort()
    rank = {r: n for n, r in enumerate(first)}
    out.order = sorted(range(len(jobs)), key=lambda i: (out.depth(i), rank[i]))
    return out
