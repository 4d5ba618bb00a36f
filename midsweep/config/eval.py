"""Held-out evaluation config."""
from __future__ import annotations

from dataclasses import dataclass, field

from midsweep.config.errors import Problem, require


@dataclass
class EvalConfig:
    every_tokens: int = 262_144
    """Evaluate at every multiple of this many training tokens (identical across a sweep, so curves align);
    must be a multiple of the tokens per step (train.global_batch x model.seq_len)."""
    tokens: int = 32_768
    """Held-out tokens per domain per evaluation (fewer if the held-out split is smaller)."""
    batch: int = 16
    """Sequences per evaluation forward pass on one device."""
    domains: list[str] = field(default_factory=list)
    """Domains to evaluate (empty: every domain in ``data.domains``)."""

    def problems(self, prefix: str = "eval") -> list[Problem]:
        out: list[Problem] = []
        require(out, self.every_tokens > 0, f"{prefix}.every_tokens", "not positive",
                "use a positive token count, e.g. 262144")
        require(out, self.tokens > 0, f"{prefix}.tokens", "not positive", "use a positive token count, e.g. 32768")
        require(out, self.batch > 0, f"{prefix}.batch", "not positive", "use a positive batch, e.g. 16")
        return out
