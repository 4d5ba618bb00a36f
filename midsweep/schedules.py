"""Mixture and learning-rate schedules: pure functions of the optimizer step.

Two runs whose configs agree up to step t get the same weights and learning rates up to t, which is what
lets a forked run and an unforked one see identical data and updates before the fork.
"""
from __future__ import annotations

import math

import numpy as np

from midsweep.config import RunConfig
from midsweep.config.mixture import Segment


class MixtureSchedule:
    """Domain weights and phase at every step: the base mix, the segments the mixture's kind compiles to
    (midsweep.config.mixture.KINDS), then post-training."""

    def __init__(self, run: RunConfig):
        mix, n = run.mixture, run.main_steps
        segments = [Segment(0, 0, dict(mix.base_weights), "pretrain"), *mix.segments(run.to_step, n)]
        # A segment starting at step 0 replaces the base mix (e.g. introduction at time 0).
        while len(segments) > 1 and segments[1].start == 0 and segments[1].end == 0:
            segments.pop(0)
        self.main_boundaries = sorted({s.start for s in segments if 0 < s.start < n})
        """Where the main mix changes over the whole main training, post-training or not (the LR policy's
        boundaries: a run post-trained from the middle keeps the main run's LR before it)."""
        if run.posttrain.enabled:  # the main training is cut where post-training starts (posttrain.after)
            start = run.posttrain_start
            segments = [s for s in segments if s.start < start or s is segments[0]]
            segments.append(Segment(start, start, {run.posttrain.domain: 1.0}, "posttrain"))
        self.segments = segments
        self.domains = sorted({d for s in segments for d in s.weights})

    def weights_at(self, step: int) -> dict:
        """Domain -> weight at ``step`` (linear blend inside a ramp)."""
        current = self.segments[0].weights
        for seg in self.segments[1:]:
            if step < seg.start:
                break
            if step < seg.end:
                a = (step - seg.start) / (seg.end - seg.start)
                names = set(current) | set(seg.weights)
                current = {d: (1 - a) * current.get(d, 0.0) + a * seg.weights.get(d, 0.0) for d in names}
            else:
                current = seg.weights
        return {d: w for d, w in current.items() if w > 0}

    def vector_at(self, step: int) -> np.ndarray:
        """Weights at ``step`` in the order of ``self.domains``."""
        w = self.weights_at(step)
        return np.array([w.get(d, 0.0) for d in self.domains])

    def phase_at(self, step: int) -> str:
        phase = self.segments[0].phase
        for seg in self.segments[1:]:
            if step >= seg.start:
                phase = seg.phase
        return phase

    def boundaries(self) -> list[int]:
        """Steps at which a new phase starts (after step 0)."""
        return sorted({s.start for s in self.segments if s.start > 0})


def _decay(shape: str, progress: float) -> float:
    """Fraction of the way from the peak (1) to the floor (0) still left at ``progress`` in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - progress
    if shape == "sqrt":
        return 1.0 - math.sqrt(progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _warmup_decay(step: int, start: int, end: int, warmup: int, peak: float, floor: float, begin: float,
                  shape: str = "cosine") -> float:
    """Linear warmup from ``begin`` to ``peak`` over ``warmup`` steps after ``start``, then decay to ``floor`` at
    ``end``."""
    t = step - start
    if t < warmup:
        return begin + (peak - begin) * (t + 1) / warmup
    return floor + (peak - floor) * _decay(shape, (t - warmup) / max(1, end - start - warmup))


class LRSchedule:
    """Learning rate at every step: the main schedule, the phase-boundary policy, then post-training."""

    def __init__(self, run: RunConfig, mixture: MixtureSchedule):
        o = run.optim
        self.optim, self.n = o, run.main_steps
        self.floor = o.lr * o.min_lr_ratio
        first = next(iter(mixture.main_boundaries), None)
        self.boundary = first if o.boundary != "continue" else None
        # optim.horizon=boundary: the main schedule is complete by the boundary (a whole pretraining that does not
        # depend on what follows the switch; after it, ``continue`` stays at the floor); a token count: the
        # schedule's own length, whatever the run's (it may stop before the decay ends); else all main steps
        tokens = o.horizon_tokens()
        if tokens:
            self.horizon = max(1, tokens // run.tokens_per_step)
        else:
            self.horizon = first if o.horizon == "boundary" and first else self.n
        self.warmup = int(round(o.warmup * self.horizon))
        self.post = run.posttrain if run.posttrain.enabled else None
        self.post_start, self.post_steps = run.posttrain_start, run.posttrain_steps

    def base(self, step: int) -> float:
        """The main schedule without boundary policy (over ``horizon`` steps)."""
        o, n = self.optim, self.horizon
        if step < self.warmup:
            return o.lr * (step + 1) / self.warmup
        if o.schedule == "constant":
            return o.lr
        if o.schedule == "wsd":
            decay_start = n - int(round(o.decay_fraction * n))
            if step < decay_start:
                return o.lr
            progress = (step - decay_start) / max(1, n - decay_start)
            return self.floor + (o.lr - self.floor) * _decay(o.decay_shape, progress)
        return _warmup_decay(step, 0, n, self.warmup, o.lr, self.floor, 0.0)

    def __call__(self, step: int) -> float:
        if self.post is not None and step >= self.post_start:
            p, start = self.post, self.post_start
            warm = int(round(p.warmup * self.post_steps))
            return _warmup_decay(step, start, start + self.post_steps, warm, p.lr, p.lr * p.min_lr_ratio, 0.0)
        b, o = self.boundary, self.optim
        if b is None or step < b:
            return self.base(step)
        at_boundary = self.base(b - 1) if b > 0 else 0.0
        if o.boundary == "cooldown":
            return self.floor + (at_boundary - self.floor) * _decay(o.decay_shape, (step - b) / max(1, self.n - b))
        peak = o.rewarm_lr or o.lr
        warm = int(round(o.rewarm_warmup * self.n))
        return _warmup_decay(step, b, self.n, warm, peak, peak * o.min_lr_ratio, at_boundary)
