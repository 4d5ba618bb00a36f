"""Prefix keys: which runs train identically up to which step.

The state of a run after ``t`` optimizer steps and the rows it has recorded by then are determined by

- its *static* part: everything that shapes training or its records but is not a schedule (model and init
  seed, data and tokenizer, batch, sequence length, precision, optimizer settings, evaluation, the logging
  cadence, ``train.init_from``), and
- its schedules restricted to ``[0, t)``: the mixture segments starting before ``t`` (weights, ramps, phase
  labels, prompt masking) and the learning rate of every step before ``t``.

``Signature.key(t)`` hashes exactly those, so two runs with equal keys at ``t`` hold bitwise the same state
after ``t`` steps (on the same kind of hardware and world size, which are runtime facts recorded with each
published prefix), and ``agreement(a, b)`` is the largest such ``t``. The total length of training, the weight
of a domain introduced at ``t`` and anything else after ``t`` do not enter the key at ``t``; the total does
change the key where it changes the learning rate before ``t`` (cosine), not where it does not (WSD, constant
before their decay).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from midsweep.config import RunConfig
from midsweep.config.run import NON_SEMANTIC, flatten
from midsweep.schedules import LRSchedule, MixtureSchedule

KEY_VERSION = "midsweep-prefix-1"
"""Salts every key; bump it when the meaning of a prefix changes (e.g. the checkpoint content)."""

SCHEDULE_KEYS = {
    "mixture", "train.tokens", "optim.lr", "optim.min_lr_ratio", "optim.schedule", "optim.warmup",
    "optim.decay_fraction", "optim.decay_shape", "optim.boundary", "optim.rewarm_lr", "optim.rewarm_warmup",
    "optim.horizon", "posttrain",
}
"""Config keys whose whole effect on training is through the mixture segments and the learning rate of each
step (the signature's arrays; the post-training segment carries every post-training setting), so they stay out
of the static key. A key not listed here or as a bystander is
static: new config fields are never shared wrongly, at worst not shared."""

RECORDED = {"train.log_every", "train.device", "train.compile", "train.deterministic", "eval.batch",
            "data.vocab_size"}
"""Keys left out of the run id (``NON_SEMANTIC``) that still change the bits or the rows a run records before
a step: a fork copies its parent's rows and state, so they must agree."""


def _under(key: str, prefixes: set[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def static_key(run: RunConfig) -> str:
    """sha256 of everything but the schedules that shapes training or its records (see the module doc)."""
    bystanders = NON_SEMANTIC - RECORDED
    flat = flatten(dataclasses.asdict(run))
    static = {k: v for k, v in flat.items() if not _under(k, SCHEDULE_KEYS | bystanders)}
    blob = json.dumps({"version": KEY_VERSION, "static": static}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _posttrain(run: RunConfig) -> str:
    """Everything post-training does, its defaults resolved (``posttrain.seed`` unset = ``train.seed``), so runs
    that differ only after post-training starts part there and runs that do the same share it."""
    p = dataclasses.asdict(run.posttrain) | {"global_batch": run.posttrain_batch, "seed": run.posttrain_seed}
    return json.dumps(p, sort_keys=True)


def _segments(run: RunConfig, schedule: MixtureSchedule) -> tuple:
    """The mixture segments as comparable tuples: (start, end, nonzero weights, phase, and the post-training
    settings for post-training, else False)."""
    post = schedule.segments[-1] if run.posttrain.enabled else None  # post-training is the last segment
    out = tuple((s.start, s.end, tuple(sorted((d, float(w)) for d, w in s.weights.items() if w > 0)), s.phase,
                 _posttrain(run) if s is post else False) for s in schedule.segments)
    assert all(a[0] <= b[0] for a, b in zip(out, out[1:])), "mixture segments must start in order"
    return out


_LR_CACHE: dict[str, np.ndarray] = {}


def _lr(run: RunConfig, schedule: MixtureSchedule) -> np.ndarray:
    """The learning rate of every step (exactly the loop's ``lr_at``), computed once per distinct input of
    LRSchedule: the optim and posttrain groups, the step counts and the mixture's phase boundaries."""
    flat = flatten(dataclasses.asdict(run))
    inputs = {k: v for k, v in flat.items() if _under(k, {"optim", "posttrain"})}
    blob = json.dumps([inputs, run.main_steps, run.posttrain_start, run.posttrain_steps, schedule.main_boundaries],
                      sort_keys=True,
                      default=str)
    if blob not in _LR_CACHE:
        if len(_LR_CACHE) >= 256:
            _LR_CACHE.clear()
        lr = LRSchedule(run, schedule)
        array = np.array([lr(s) for s in range(run.total_steps)], dtype=np.float64)
        array.setflags(write=False)
        _LR_CACHE[blob] = array
    return _LR_CACHE[blob]


@dataclass(frozen=True)
class Signature:
    """What a run's training is, step by step: its static key, mixture segments and LR array."""

    static: str
    segments: tuple
    lr: np.ndarray
    """Learning rate of each step (length ``total``)."""
    total: int
    """Optimizer steps of the whole run."""

    @classmethod
    def of(cls, run: RunConfig) -> "Signature":
        schedule = MixtureSchedule(run)
        return cls(static_key(run), _segments(run, schedule), _lr(run, schedule), run.total_steps)

    def key(self, t: int) -> str:
        """The prefix key at step ``t``: equal for two runs iff their first ``t`` steps are identical."""
        if not 0 <= t <= self.total:
            raise ValueError(f"step {t} is outside the run (0..{self.total})")
        h = hashlib.sha256()
        h.update(json.dumps([KEY_VERSION, self.static, t, [s for s in self.segments if s[0] < t]]).encode())
        h.update(self.lr[:t].tobytes())
        return h.hexdigest()


def _mixture_divergence(a: tuple, b: tuple) -> float:
    """The largest t such that the segments of ``a`` and ``b`` starting before t are the same."""
    for sa, sb in zip(a, b):
        if sa != sb:
            return min(sa[0], sb[0])
    longer = a if len(a) > len(b) else b
    return longer[min(len(a), len(b))][0] if len(a) != len(b) else float("inf")


def agreement(a: Signature, b: Signature) -> int:
    """The largest step t with ``a.key(t) == b.key(t)`` (0: nothing in common)."""
    if a.static != b.static:
        return 0
    t = int(min(a.total, b.total, _mixture_divergence(a.segments, b.segments)))
    differ = np.flatnonzero(a.lr[:t] != b.lr[:t])
    return int(differ[0]) if differ.size else t
