"""Optimizer and learning-rate schedule config (AdamW)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from midsweep.config.errors import Problem, require

SCHEDULES = ("cosine", "wsd", "constant")
DECAY_SHAPES = ("linear", "cosine", "sqrt")
BOUNDARY = ("continue", "rewarm", "cooldown")
HORIZONS = ("end", "boundary")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    """Peak (maximum) learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    schedule: str = "cosine"
    """``cosine`` (linear warmup then cosine to min), ``wsd`` (warmup, stable, decay), or ``constant`` (after
    warmup)."""
    warmup: float = 0.02
    """Warmup length as a fraction of main training steps."""
    decay_fraction: float = 0.2
    """``wsd``: the last fraction of steps spent decaying."""
    decay_shape: str = "sqrt"
    """``wsd`` decay shape: ``linear``, ``cosine`` or ``sqrt`` (1 - sqrt)."""
    boundary: str = "continue"
    """At the mixture's phase boundary (introduction time): ``continue`` the schedule, ``rewarm`` (warm up again to
    ``rewarm_lr`` and decay to the end) or ``cooldown`` (decay from the current LR to the minimum by the end)."""
    rewarm_lr: Optional[float] = None
    """``rewarm``: the new peak learning rate (None: ``lr``)."""
    rewarm_warmup: float = 0.01
    """``rewarm``: warmup length as a fraction of main training steps."""
    horizon: str = "end"
    """What the main schedule (its warmup, cosine or WSD decay) spans: ``end`` (all main training),
    ``boundary`` (the steps before the mixture's phase boundary: a complete pretraining, whatever comes after
    the switch; then ``boundary=rewarm`` re-warms for the continuation and ``boundary=continue`` stays at the
    floor LR, the no-rewarm control of a finished pretraining), or a token count: the schedule's own length,
    which the run may stop before (the midtraining paper fixes its cosine at 976,560 iterations, so its 128B-token
    runs end near 54% of the peak) or outlive at the floor LR. With ``boundary``, runs
    that differ only after the switch, e.g. model reuse's continuation lengths, share their pretraining
    (docs/sharing.md); with ``end`` a longer continuation stretches the pretraining's cosine too."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (on matrices only, not norms and biases, unless ``decay_all``)."""
    decay_all: bool = False
    """Decay every parameter, norm gains and biases included (the midtraining paper's trainer does); False decays
    matrices (and embeddings) only."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""

    def horizon_tokens(self) -> Optional[int]:
        """``horizon`` as a token count, or None where it names ``end``/``boundary`` (or is not a count)."""
        try:
            tokens = float(self.horizon)
        except (TypeError, ValueError):
            return None
        return int(tokens) if tokens.is_integer() and tokens >= 1 else None

    def problems(self, prefix: str = "optim") -> list[Problem]:
        out: list[Problem] = []
        require(out, self.lr > 0, f"{prefix}.lr", f"lr {self.lr} is not positive", "use a positive peak LR, e.g. 1e-3")
        require(out, 0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", f"{self.min_lr_ratio} is outside [0, 1]",
                "use a ratio in [0, 1], e.g. 0.1")
        require(out, self.schedule in SCHEDULES, f"{prefix}.schedule", f"unknown schedule {self.schedule!r}",
                f"use one of {', '.join(SCHEDULES)}")
        require(out, 0 <= self.warmup < 1, f"{prefix}.warmup", f"warmup {self.warmup} is outside [0, 1)",
                "give warmup as a fraction of training steps, e.g. 0.02")
        require(out, 0 < self.decay_fraction <= 1, f"{prefix}.decay_fraction",
                f"{self.decay_fraction} is outside (0, 1]", "use a fraction such as 0.2")
        require(out, self.decay_shape in DECAY_SHAPES, f"{prefix}.decay_shape", f"unknown shape {self.decay_shape!r}",
                f"use one of {', '.join(DECAY_SHAPES)}")
        require(out, self.boundary in BOUNDARY, f"{prefix}.boundary", f"unknown boundary policy {self.boundary!r}",
                f"use one of {', '.join(BOUNDARY)}")
        require(out, self.rewarm_lr is None or self.rewarm_lr > 0, f"{prefix}.rewarm_lr",
                f"rewarm_lr {self.rewarm_lr} is not positive", "use a positive LR or null")
        require(out, self.horizon in HORIZONS or self.horizon_tokens() is not None, f"{prefix}.horizon",
                f"unknown horizon {self.horizon!r}", f"use one of {', '.join(HORIZONS)} or a positive token count")
        require(out, self.horizon != "boundary" or self.boundary != "cooldown", f"{prefix}.horizon",
                "horizon=boundary ends the schedule at the floor LR by the phase boundary: boundary=cooldown has "
                "nothing left to cool down", "use optim.boundary=rewarm or continue (or horizon=end)")
        require(out, 0 <= self.rewarm_warmup < 1, f"{prefix}.rewarm_warmup", f"{self.rewarm_warmup} is outside [0, 1)",
                "use a fraction such as 0.01")
        require(out, self.weight_decay >= 0, f"{prefix}.weight_decay", "negative weight decay", "use a value >= 0")
        require(out, 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"{prefix}.beta1/beta2", "betas outside [0, 1)",
                "use e.g. beta1=0.9 beta2=0.95")
        require(out, self.eps > 0, f"{prefix}.eps", f"eps {self.eps} is not positive",
                "use a small positive value, e.g. 1e-8")
        require(out, self.grad_clip >= 0, f"{prefix}.grad_clip", "negative clip", "use a value >= 0 (0 disables)")
        return out
