"""Mixture config: which domains are sampled, with what weight, at each point of training."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from midsweep.config.errors import Problem, require

KINDS = ("none", "introduce", "continued", "upsample_end", "stages")
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
        """Every domain this mixture can sample."""
        names = set(self.base_weights)
        if self.kind in ("introduce", "continued"):
            names.add(self.domain)
        elif self.kind == "upsample_end":
            names |= set(self.upsample_weights)
        elif self.kind == "stages":
            for stage in self.stages:
                names |= set(stage.weights)
        return names

    def problems(self, prefix: str = "mixture") -> list[Problem]:
        out: list[Problem] = []
        require(out, self.kind in KINDS, f"{prefix}.kind", f"unknown kind {self.kind!r}", f"use one of {', '.join(KINDS)}")
        require(out, self.unit in UNITS, f"{prefix}.unit", f"unknown unit {self.unit!r}", "use fraction or tokens")
        _check_weights(out, self.base_weights, f"{prefix}.base_weights")
        end = 1.0 if self.unit == "fraction" else float("inf")
        if self.kind in ("introduce", "continued"):
            require(out, 0.0 <= self.introduce_at < end, f"{prefix}.introduce_at",
                    f"{self.introduce_at} is not inside training", "use a value in [0, 1) of training"
                    if self.unit == "fraction" else "use a token count below train.tokens")
            require(out, self.ramp >= 0, f"{prefix}.ramp", f"negative ramp {self.ramp}", "use a ramp >= 0")
            require(out, self.domain not in self.base_weights, f"{prefix}.domain",
                    f"{self.domain!r} is already in base_weights", "introduce a domain that the base mix lacks")
        if self.kind == "introduce":
            require(out, 0.0 < self.weight <= 1.0, f"{prefix}.weight", f"weight {self.weight} is outside (0, 1]",
                    "use a weight in (0, 1]; for no introduction use mixture=none")
            if self.until is not None:
                require(out, self.introduce_at + self.ramp < self.until <= end, f"{prefix}.until",
                        f"until={self.until} is not after introduce_at + ramp", "use a later until, or null")
        if self.kind == "continued":
            require(out, 0.0 <= self.replay < 1.0, f"{prefix}.replay", f"replay {self.replay} is outside [0, 1)",
                    "use a replay share in [0, 1)")
        if self.kind == "upsample_end":
            require(out, 0.0 < self.upsample_fraction < 1.0, f"{prefix}.upsample_fraction",
                    f"{self.upsample_fraction} is outside (0, 1)", "use a fraction such as 0.1 (the last 10%)")
            _check_weights(out, self.upsample_weights, f"{prefix}.upsample_weights")
        if self.kind == "stages":
            require(out, len(self.stages) > 0, f"{prefix}.stages", "no stages given", "list at least one stage")
            previous = 0.0
            for i, stage in enumerate(self.stages):
                key = f"{prefix}.stages[{i}]"
                _check_weights(out, stage.weights, f"{key}.weights")
                require(out, previous <= stage.start < end and stage.ramp >= 0, f"{key}.start",
                        f"start {stage.start} is out of order or outside training",
                        "give stages increasing starts inside training")
                previous = stage.start + stage.ramp
        return out


def _check_weights(out: list[Problem], weights: dict[str, float], key: str) -> None:
    if not weights:
        out.append(Problem(key, "empty mix", "give at least one domain with weight 1"))
        return
    bad = {k: v for k, v in weights.items() if not 0.0 <= v <= 1.0}
    require(out, not bad, key, f"weights outside [0, 1]: {bad}", "use weights in [0, 1]")
    total = sum(weights.values())
    require(out, abs(total - 1.0) < 1e-6, key, f"weights sum to {total:g}", "make the weights sum to 1")
