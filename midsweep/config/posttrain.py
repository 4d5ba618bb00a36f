"""Post-training config: fine-tuning on the target domain after the main phases."""
from __future__ import annotations

from dataclasses import dataclass

from midsweep.config.errors import Problem, require


@dataclass
class PosttrainConfig:
    enabled: bool = False
    """Run a post-training phase after pretraining and midtraining."""
    domain: str = "target"
    """Domain to fine-tune on (prompt/response data has its prompts masked when ``mask_prompt``)."""
    tokens: int = 131_072
    """Post-training tokens (a multiple of the tokens per step)."""
    lr: float = 3e-4
    """Peak learning rate of the post-training schedule (linear warmup, then cosine to ``min_lr_ratio``)."""
    warmup: float = 0.05
    """Warmup as a fraction of post-training steps."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of ``lr``."""
    mask_prompt: bool = True
    """Train only on response tokens of prompt/response documents (False: plain language modelling)."""

    def problems(self, prefix: str = "posttrain") -> list[Problem]:
        out: list[Problem] = []
        if not self.enabled:
            return out
        require(out, self.tokens > 0, f"{prefix}.tokens", "not positive", "use a positive token count")
        require(out, self.lr > 0, f"{prefix}.lr", "not positive", "use a positive LR, e.g. 3e-4")
        require(out, 0 <= self.warmup < 1, f"{prefix}.warmup", f"{self.warmup} is outside [0, 1)", "use e.g. 0.05")
        require(out, 0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", "outside [0, 1]", "use e.g. 0.1")
        return out
