"""Post-training config: fine-tuning on the target domain after (part of) the main phases."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from midsweep.config.errors import Problem, require

OPTIMIZERS = ("continue", "fresh")


@dataclass
class PosttrainConfig:
    enabled: bool = False
    """Run a post-training phase after pretraining and midtraining."""
    domain: str = "target"
    """Domain to fine-tune on (prompt/response data has its prompts masked when ``mask_prompt``)."""
    tokens: Optional[int] = 131_072
    """Post-training tokens (a multiple of the tokens per post-training step); null with ``epochs``."""
    epochs: Optional[float] = None
    """Passes over the post-training domain's training split instead of ``tokens`` (set ``tokens`` to null): the
    step count is derived from the prepared split (its sequences with ``packing``, else its examples), rounded
    up to whole steps; a preview without prepared shards says it is unknown until ``midsweep prepare``."""
    lr: float = 3e-4
    """Peak learning rate of the post-training schedule (linear warmup, then cosine to ``min_lr_ratio``)."""
    warmup: float = 0.05
    """Warmup as a fraction of post-training steps."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of ``lr``."""
    mask_prompt: bool = True
    """Train only on response tokens of prompt/response documents (False: plain language modelling)."""
    global_batch: Optional[int] = None
    """Sequences per post-training optimizer step, split into ``train.micro_batch`` like training (None: the run's
    ``train.global_batch``). With ``packing=false`` a sequence is one example."""
    optimizer: str = "continue"
    """``continue``: keep the main phases' AdamW state; ``fresh``: a new AdamW (zero moments) at the start of
    post-training, as the papers fine-tune."""
    packing: bool = True
    """True: examples packed end to end into full sequences; False: one example per sequence, truncated to
    ``model.seq_len + 1`` tokens and padded, padding (and prompts, with ``mask_prompt``) left out of the loss."""
    seed: Optional[int] = None
    """Seed of the post-training data order (and of the RNG during post-training) only (None: ``train.seed``).
    Runs that differ only in it share their whole main training."""
    after: float = 1.0
    """Post-train from the main run's state after this fraction of main training, not at its end: the main
    schedules (mixture, LR) are those of the whole run, cut at that step. Runs that differ only in it fork from
    the same main training."""

    def problems(self, prefix: str = "posttrain") -> list[Problem]:
        out: list[Problem] = []
        require(out, self.enabled or self.after == 1.0, f"{prefix}.after", "set without post-training",
                "add posttrain=target, or leave posttrain.after at 1.0")
        if not self.enabled:
            return out
        if self.epochs is None:
            require(out, self.tokens is not None and self.tokens > 0, f"{prefix}.tokens",
                    f"{self.tokens} is not a positive token count", "use a positive token count, or set "
                    f"{prefix}.epochs (passes over the split) instead")
        else:
            require(out, self.tokens is None, f"{prefix}.epochs", f"set together with {prefix}.tokens (one or the "
                    "other)", f"set {prefix}.tokens=null to train for epochs, or drop {prefix}.epochs")
            require(out, self.epochs > 0, f"{prefix}.epochs", f"{self.epochs} is not positive",
                    "use a positive number of passes over the split, e.g. 4")
        require(out, self.lr > 0, f"{prefix}.lr", "not positive", "use a positive LR, e.g. 3e-4")
        require(out, 0 <= self.warmup < 1, f"{prefix}.warmup", f"{self.warmup} is outside [0, 1)", "use e.g. 0.05")
        require(out, 0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", "outside [0, 1]", "use e.g. 0.1")
        require(out, self.global_batch is None or self.global_batch > 0, f"{prefix}.global_batch",
                f"{self.global_batch} is not positive", "use a positive number of sequences, e.g. 64, or null")
        require(out, self.optimizer in OPTIMIZERS, f"{prefix}.optimizer", f"unknown optimizer {self.optimizer!r}",
                f"use one of {', '.join(OPTIMIZERS)}")
        require(out, 0 < self.after <= 1, f"{prefix}.after", f"{self.after} is outside (0, 1]",
                "use a fraction of main training, e.g. 0.5 (1.0: at its end)")
        return out
