"""Mixture config: which domains are sampled, with what weight, at each point of training."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from midsweep.config.errors import Problem, require

UNITS = ("fraction", "tokens")


@dataclass
class StageConfig:
    start: float = 0.0
    """When the stage begins (in ``mixture.unit``: a fraction of main training, or tokens)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Domain -> weight while the stage is on; must sum to 1."""
    ramp: float = 0.0
    """Length of a linear blend from the previous stage's weights (same unit as ``start``)."""
    name: str = "stage"
    """Phase label written to metrics (e.g. ``midtrain``)."""


@dataclass
class MixtureConfig:
    kind: str = "introduce"
    """``none`` (base mix throughout: the no-introduction baseline), ``introduce`` (mix ``domain`` in at
    ``introduce_at`` with ``weight``), ``continued`` (switch to ``domain`` alone at ``introduce_at``: the
    continued-pretraining control), ``upsample_end`` (``upsample_weights`` during the last ``upsample_fraction``),
    or ``stages`` (the general list ``stages``)."""
    unit: str = "fraction"
    """Unit of ``introduce_at``, ``ramp``, ``until`` and stage starts: ``fraction`` of main training or ``tokens``."""
    base_weights: dict[str, float] = field(default_factory=lambda: {"general": 1.0})
    """The mix at step 0 (pretraining data); must sum to 1."""
    domain: str = "code"
    """The specialized domain that ``introduce`` and ``continued`` bring in."""
    introduce_at: float = 0.5
    """When ``domain`` comes in."""
    weight: float = 0.2
    """Share of ``domain`` after introduction (``introduce``); the base mix is scaled by 1 - weight."""
    ramp: float = 0.0
    """Length of a linear ramp from 0 to ``weight`` starting at ``introduce_at``."""
    until: Optional[float] = None
    """``introduce`` only: when ``domain`` goes out again (None: stays to the end)."""
    replay: float = 0.0
    """``continued`` only: share of base data kept after the switch."""
    upsample_fraction: float = 0.1
    """``upsample_end``: the last fraction of main training that uses ``upsample_weights``."""
    upsample_weights: dict[str, float] = field(default_factory=dict)
    """``upsample_end``: the mix during the last ``upsample_fraction``; must sum to 1."""
    stages: list[StageConfig] = field(default_factory=list)
    """``stages``: stages after the base mix, in increasing ``start``."""

    def domains(self) -> set[str]:
        """Every domain this mixture can sample (from the fields its kind reads)."""
        reads = KINDS[self.kind].reads if self.kind in KINDS else ("base_weights",)
        names = set(self.base_weights)
        if "domain" in reads:
            names.add(self.domain)
        if "upsample_weights" in reads:
            names |= set(self.upsample_weights)
        if "stages" in reads:
            for stage in self.stages:
                names |= set(stage.weights)
        return names

    def segments(self, at: Callable[[float], int], steps: int) -> list["Segment"]:
        """The mix after the base mix, compiled by this kind: ``at`` turns a time in ``unit`` into a step,
        ``steps`` is the length of main training."""
        return KINDS[self.kind].compile(self, at, steps)

    def problems(self, prefix: str = "mixture") -> list[Problem]:
        """The values of the fields this kind reads, on their own (times against the run's length: timing_problems)."""
        out: list[Problem] = []
        if self.kind not in KINDS:
            return [Problem(f"{prefix}.kind", f"unknown kind {self.kind!r}", f"use one of {', '.join(KINDS)}")]
        for name in KINDS[self.kind].reads:
            out += _CHECKS.get(name, lambda m, k: [])(self, f"{prefix}.{name}")
        return out

    def timing_problems(self, at: Callable[[float], int], steps: int, prefix: str = "mixture") -> list[Problem]:
        """The times this kind reads, in steps of a run of ``steps`` main-training steps: every change of the
        mix must be complete inside training (a ramp cut off by the end trains on a fraction of the weight
        that the run records)."""
        out: list[Problem] = []
        reads = KINDS[self.kind].reads
        if "introduce_at" in reads:
            start = at(self.introduce_at)
            require(out, start < steps, f"{prefix}.introduce_at",
                    f"introduction at step {start} is at or after the end of training ({steps} steps)",
                    "introduce earlier, or train longer (train.tokens)")
            ramp_end = start + at(self.ramp)
            require(out, start >= steps or ramp_end <= steps, f"{prefix}.ramp",
                    f"introduce_at {self.introduce_at:g} + ramp {self.ramp:g} ends at step {ramp_end}, after the end "
                    f"of training ({steps} steps): {self.domain} would never reach its weight",
                    "shorten the ramp so that introduce_at + ramp is at most the end of training, or introduce earlier")
            if "until" in reads and self.until is not None:
                until = at(self.until)
                require(out, ramp_end < until <= steps, f"{prefix}.until",
                        f"until={self.until} (step {until}) is not after the end of the ramp (step {ramp_end}) "
                        f"and inside training ({steps} steps)",
                        "use a later until (after introduce_at + ramp), or null")
        if "stages" in reads:
            for i, stage in enumerate(self.stages):
                start, end = at(stage.start), at(stage.start) + at(stage.ramp)
                require(out, start < steps and end <= steps, f"{prefix}.stages[{i}].start",
                        f"stage {stage.name!r} (steps {start} to {end}) does not complete inside training "
                        f"({steps} steps)", "start it earlier or shorten its ramp")
        return out


def _check_weights(out: list[Problem], weights: dict[str, float], key: str) -> None:
    if not weights:
        out.append(Problem(key, "empty mix", "give at least one domain with weight 1"))
        return
    bad = {k: v for k, v in weights.items() if not 0.0 <= v <= 1.0}
    require(out, not bad, key, f"weights outside [0, 1]: {bad}", "use weights in [0, 1]")
    total = sum(weights.values())
    require(out, abs(total - 1.0) < 1e-6, key, f"weights sum to {total:g}", "make the weights sum to 1")


# ---------------------------------------------------------------------------------------------- the kinds
@dataclass(frozen=True)
class Segment:
    """A change of the mix: from ``start`` the previous weights blend linearly into ``weights``, fully on at ``end``."""

    start: int
    """Step at which the blend from the previous weights begins."""
    end: int
    """Step at which these weights are fully on (start + ramp)."""
    weights: dict
    """Domain -> weight."""
    phase: str
    """Phase label from ``start`` on."""


Compiler = Callable[[MixtureConfig, Callable[[float], int], int], list[Segment]]


@dataclass(frozen=True)
class Kind:
    """What a mixture kind reads and how it becomes segments: the one declaration that the run id, the sweep
    coordinates, the domains, the checks and the schedule (midsweep.schedules) are derived from."""

    reads: tuple[str, ...]
    """MixtureConfig fields this kind reads (besides ``kind``); the others leave its run id and coordinates alone."""
    compile: Compiler
    """(mixture, time -> step, main steps) -> the segments after the base mix."""


def _mixed(mix: MixtureConfig, keep: float, share: float) -> dict:
    """The base mix scaled by ``keep`` plus ``domain`` at ``share``."""
    return {**{d: w * keep for d, w in mix.base_weights.items()}, mix.domain: share}


def _introduce(mix: MixtureConfig, at: Callable[[float], int], steps: int) -> list[Segment]:
    start = at(mix.introduce_at)
    out = [Segment(start, start + at(mix.ramp), _mixed(mix, 1.0 - mix.weight, mix.weight), "midtrain")]
    if mix.until is not None:
        out.append(Segment(at(mix.until), at(mix.until), dict(mix.base_weights), "pretrain"))
    return out


def _continued(mix: MixtureConfig, at: Callable[[float], int], steps: int) -> list[Segment]:
    start = at(mix.introduce_at)
    return [Segment(start, start + at(mix.ramp), _mixed(mix, mix.replay, 1.0 - mix.replay), "continued")]


def _upsample_end(mix: MixtureConfig, at: Callable[[float], int], steps: int) -> list[Segment]:
    start = steps - int(round(mix.upsample_fraction * steps))  # a fraction whatever the unit
    return [Segment(start, start, dict(mix.upsample_weights), "upsample")]


def _stages(mix: MixtureConfig, at: Callable[[float], int], steps: int) -> list[Segment]:
    return [Segment(at(s.start), at(s.start) + at(s.ramp), dict(s.weights), s.name) for s in mix.stages]


KINDS: dict[str, Kind] = {
    "none": Kind(("base_weights",), lambda mix, at, steps: []),
    "introduce": Kind(("unit", "base_weights", "domain", "introduce_at", "weight", "ramp", "until"), _introduce),
    "continued": Kind(("unit", "base_weights", "domain", "introduce_at", "ramp", "replay"), _continued),
    "upsample_end": Kind(("base_weights", "upsample_fraction", "upsample_weights"), _upsample_end),
    "stages": Kind(("unit", "base_weights", "stages"), _stages),
}
"""Every mixture kind (``mixture.kind``)."""


# ------------------------------------------------------------------------- value checks, one per field
def _check_stages(mix: MixtureConfig, key: str) -> list[Problem]:
    out: list[Problem] = []
    require(out, len(mix.stages) > 0, key, "no stages given", "list at least one stage")
    previous = 0.0
    for i, stage in enumerate(mix.stages):
        _check_weights(out, stage.weights, f"{key}[{i}].weights")
        require(out, previous <= stage.start and stage.ramp >= 0, f"{key}[{i}].start",
                f"start {stage.start} is before the end of the previous stage ({previous}) or its ramp is negative",
                "give stages increasing starts, each after the previous stage's start + ramp")
        previous = stage.start + stage.ramp
    return out


def _one(ok: Callable[[MixtureConfig], bool], message: Callable[[MixtureConfig], str], fix: str):
    """A check of one field: a Problem at its key unless ``ok``."""
    return lambda mix, key: [] if ok(mix) else [Problem(key, message(mix), fix)]


def _weights(name: str):
    def check(mix: MixtureConfig, key: str) -> list[Problem]:
        out: list[Problem] = []
        _check_weights(out, getattr(mix, name), key)
        return out
    return check


_CHECKS: dict[str, Callable[[MixtureConfig, str], list[Problem]]] = {
    "unit": _one(lambda m: m.unit in UNITS, lambda m: f"unknown unit {m.unit!r}", "use fraction or tokens"),
    "base_weights": _weights("base_weights"),
    "domain": _one(lambda m: m.domain not in m.base_weights, lambda m: f"{m.domain!r} is already in base_weights",
                   "introduce a domain that the base mix lacks"),
    "introduce_at": _one(lambda m: 0.0 <= m.introduce_at and (m.unit != "fraction" or m.introduce_at < 1.0),
                         lambda m: f"{m.introduce_at} is not inside training",
                         "use a value in [0, 1) of training, or a token count below train.tokens with unit=tokens"),
    "weight": _one(lambda m: 0.0 < m.weight <= 1.0, lambda m: f"weight {m.weight} is outside (0, 1]",
                   "use a weight in (0, 1]; for no introduction use mixture=none"),
    "ramp": _one(lambda m: m.ramp >= 0, lambda m: f"negative ramp {m.ramp}", "use a ramp >= 0"),
    "replay": _one(lambda m: 0.0 <= m.replay < 1.0, lambda m: f"replay {m.replay} is outside [0, 1)",
                   "use a replay share in [0, 1)"),
    "upsample_fraction": _one(lambda m: 0.0 < m.upsample_fraction < 1.0,
                              lambda m: f"{m.upsample_fraction} is outside (0, 1)",
                              "use a fraction such as 0.1 (the last 10%)"),
    "upsample_weights": _weights("upsample_weights"),
    "stages": _check_stages,
}
"""The value check of each field a kind may read; a kind's problems() runs those of the fields it reads (``until``
and the ends of ramps and stages are checked in steps: timing_problems)."""
