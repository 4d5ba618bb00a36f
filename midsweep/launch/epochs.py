"""How many times each run of a sweep repeats each domain's training data, from config arithmetic only.

The tokens a run draws from a domain come from its mixture schedule (and post-training); the size of the
domain's training split from its prepared shards when they are cached, else the source's declared cap
(``max_tokens``), else it is unknown. A small domain silently repeated dozens of times is a classic mistake,
so the preview warns above EPOCH_WARN epochs.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from midsweep.config import RunConfig
from midsweep.data.shards import cached_train_tokens
from midsweep.schedules import MixtureSchedule

EPOCH_WARN = 4.0
"""Epochs of one domain in one run above which the preview warns."""


def tokens_by_domain(run: RunConfig) -> dict[str, float]:
    """Training tokens the run draws from each domain (main phases and post-training)."""
    schedule, total = MixtureSchedule(run), run.total_steps
    cuts = sorted({0, total, *(c for s in schedule.segments for c in (s.start, s.end) if 0 < c < total)})
    drawn: dict[str, float] = defaultdict(float)
    for a, b in zip(cuts, cuts[1:]):
        in_ramp = any(s.start <= a < s.end for s in schedule.segments)
        # weights are constant between two cuts unless a ramp blends them: then step by step
        for step, end in ([(s, s + 1) for s in range(a, b)] if in_ramp else [(a, b)]):
            for domain, weight in schedule.weights_at(step).items():
                drawn[domain] += weight * (run.tokens_at(end) - run.tokens_at(step))
    return dict(drawn)


def split_sizes(run: RunConfig) -> dict[str, tuple[Optional[int], str]]:
    """Domain -> (training split tokens, where the number comes from), or (None, "unknown")."""
    cached = cached_train_tokens(run.data)
    out = {}
    for name, source in run.data.domains.items():
        if cached.get(name) is not None:
            out[name] = (cached[name], "prepared shards")
        elif source.max_tokens is not None:
            out[name] = (source.max_tokens, "max_tokens")
        else:
            out[name] = (None, "unknown until prepared")
    return out


def report(runs: dict[int, RunConfig]) -> list[str]:
    """Preview lines: per domain (and split size, where runs differ in data) the largest epoch count over the
    runs (point index -> run), and a warning naming every (point, domain) above EPOCH_WARN."""
    sizes: dict[tuple, dict] = {}
    worst: dict[tuple, tuple[float, int]] = {}  # (domain, split tokens, origin) -> (epochs, point)
    unknown: set[tuple] = set()
    over = []
    for index, run in runs.items():
        key = (run.data.tokenizer, repr(run.data.domains))
        if key not in sizes:
            sizes[key] = split_sizes(run)
        for domain, drawn in tokens_by_domain(run).items():
            size, origin = sizes[key][domain]
            if not size:
                unknown.add((domain, origin))
                continue
            epochs = drawn / size
            if epochs > worst.get((domain, size, origin), (-1.0, 0))[0]:
                worst[(domain, size, origin)] = (epochs, index)
            if epochs > EPOCH_WARN:
                over.append((index, domain, epochs))
    if not runs:
        return []
    lines = [f"epochs of each domain's training data (most in any run; > {EPOCH_WARN:g} warns):"]
    for (domain, size, origin), (epochs, index) in sorted(worst.items()):
        lines.append(f"  {domain:14} {epochs:8.3g} epochs (point #{index}) of {size:.3g} tokens ({origin})")
    for domain, origin in sorted(unknown):
        lines.append(f"  {domain:14} {'?':>8} epochs: split size {origin} (`midsweep prepare` to know it)")
    if over:
        shown = ", ".join(f"#{i} {d} {e:.3g}" for i, d, e in over[:8]) + (" ..." if len(over) > 8 else "")
        lines.append(f"WARNING: {len(over)} (point, domain) pair(s) repeat a domain more than {EPOCH_WARN:g} "
                     f"times: {shown}. Fix: add data to the domain (raise max_tokens/max_documents), lower its "
                     "weight or the run's tokens")
    return lines
