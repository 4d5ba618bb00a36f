"""The root config of one run: every group, cross-group checks, the run id and the run's plan."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from midsweep.config.data import DataConfig
from midsweep.config.errors import Problem, raise_if_any, require
from midsweep.config.eval import EvalConfig
from midsweep.config.mixture import MixtureConfig
from midsweep.config.model import ModelConfig
from midsweep.config.optim import OptimConfig
from midsweep.config.posttrain import PosttrainConfig
from midsweep.config.train import TrainConfig

# Keys that change where or how visibly a run works, not what it computes: left out of the run id so that
# re-running with another output path, progress bar or checkpoint cadence finds the same run.
NON_SEMANTIC = {
    "name", "train.out_dir", "train.progress", "train.log_every", "train.checkpoint_every", "train.keep_last",
    "train.pin_steps", "train.device", "train.compile", "eval.batch", "data.cache_dir",
}

# Mixture keys that a kind does not read: left out of its run id and coordinates, so that e.g. every
# no-introduction baseline is one run whatever the grid's weight axis says.
_MIX_ONLY = {"introduce": {"domain", "introduce_at", "weight", "ramp", "until"}, "continued": {"domain", "introduce_at", "ramp", "replay"},
             "upsample_end": {"upsample_fraction", "upsample_weights"}, "stages": {"stages"}}
_MIX_ALL = set().union(*_MIX_ONLY.values())

# The sweep coordinates written to summary.json (the axes studies vary).
COORD_KEYS = (
    "mixture.kind", "mixture.domain", "mixture.introduce_at", "mixture.weight", "mixture.ramp", "mixture.until",
    "mixture.replay", "mixture.upsample_fraction", "train.seed", "train.tokens", "train.init_from", "model.size",
    "model.arch", "optim.lr", "optim.warmup", "optim.schedule", "optim.boundary", "optim.rewarm_lr",
    "posttrain.enabled", "posttrain.domain",
)


@dataclass
class RunConfig:
    name: str = "default"
    """Name of the experiment or sweep; the default sweep directory is runs/<name>."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network (group ``model``)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The domains and the tokenizer (group ``data``)."""
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    """Which domain is sampled when (group ``mixture``)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and the LR schedule (group ``optim``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Length, batch, precision, checkpoints (group ``train``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation (group ``eval``)."""
    posttrain: PosttrainConfig = field(default_factory=PosttrainConfig)
    """Optional fine-tuning on the target after the main phases (group ``posttrain``)."""

    # ------------------------------------------------------------------ derived quantities
    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch * self.model.seq_len

    @property
    def main_steps(self) -> int:
        """Optimizer steps of pretraining + midtraining."""
        return self.train.tokens // self.tokens_per_step

    @property
    def posttrain_steps(self) -> int:
        return self.posttrain.tokens // self.tokens_per_step if self.posttrain.enabled else 0

    @property
    def total_steps(self) -> int:
        return self.main_steps + self.posttrain_steps

    def to_step(self, value: float) -> int:
        """A mixture time (``mixture.unit``) as a main-training step."""
        if self.mixture.unit == "tokens":
            return int(value) // self.tokens_per_step
        return int(round(value * self.main_steps))

    def eval_domains(self) -> list[str]:
        return list(self.eval.domains) or list(self.data.domains)

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[Problem]:
        out = [*self.model.problems("model"), *self.data.problems("data"), *self.mixture.problems("mixture"),
               *self.optim.problems("optim"), *self.train.problems("train"), *self.eval.problems("eval"),
               *self.posttrain.problems("posttrain")]
        known = set(self.data.domains)
        fix = f"use one of {', '.join(sorted(known))}, or add it under data.domains"
        for name in sorted(self.mixture.domains() - known):
            out.append(Problem("mixture", f"unknown domain {name!r}", fix))
        for name in sorted(set(self.eval.domains) - known):
            out.append(Problem("eval.domains", f"unknown domain {name!r}", fix))
        if self.posttrain.enabled:
            require(out, self.posttrain.domain in known, "posttrain.domain",
                    f"unknown domain {self.posttrain.domain!r}", fix)
        if out:  # the arithmetic below assumes sane group values
            return out
        tps = self.tokens_per_step
        require(out, self.main_steps >= 1, "train.tokens", f"{self.train.tokens} tokens is less than one step ({tps})",
                f"use at least {tps} tokens (train.global_batch x model.seq_len)")
        require(out, self.eval.every_tokens % tps == 0, "eval.every_tokens",
                f"{self.eval.every_tokens} is not a multiple of the tokens per step ({tps})",
                f"use a multiple of {tps}, e.g. {max(1, round(self.eval.every_tokens / tps)) * tps}")
        if self.mixture.kind in ("introduce", "continued"):
            step = self.to_step(self.mixture.introduce_at)
            require(out, step < self.main_steps, "mixture.introduce_at",
                    f"introduction at step {step} is at or after the end of training ({self.main_steps} steps)",
                    "introduce earlier, or train longer (train.tokens)")
        if self.posttrain.enabled:
            require(out, self.posttrain_steps >= 1, "posttrain.tokens", f"less than one step ({tps} tokens)",
                    f"use at least {tps} tokens")
        return out

    def validate(self) -> "RunConfig":
        raise_if_any(self.problems())
        return self

    # ------------------------------------------------------------------ identity and plan
    def flat(self) -> dict:
        """The config as a flat {dotted.key: value} dict, without mixture keys its kind does not read."""
        unread = {f"mixture.{k}" for k in _MIX_ALL - _MIX_ONLY.get(self.mixture.kind, set())}
        flat = flatten(dataclasses.asdict(self))
        return {k: v for k, v in flat.items() if not any(k == u or k.startswith(u + ".") for u in unread)}

    def run_id(self) -> str:
        semantic = {k: v for k, v in self.flat().items() if not any(k == s or k.startswith(s + ".") for s in NON_SEMANTIC)}
        blob = json.dumps(semantic, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def run_dir(self) -> Path:
        return Path(self.train.out_dir) / self.run_id()

    def coords(self) -> dict:
        flat = self.flat()
        coords = {k: flat.get(k) for k in COORD_KEYS}
        if self.mixture.kind in ("introduce", "continued"):
            step = self.to_step(self.mixture.introduce_at)
            coords["mixture.introduce_tokens"] = step * self.tokens_per_step
        return coords

    def plan(self) -> dict:
        """Steps, tokens, FLOPs and parameters this run will take (an estimate for previews)."""
        from midsweep.model import flops_per_token, non_embedding_params  # lazy: validating needs no torch

        vocab = 256 if self.data.tokenizer == "byte" else _vocab_size(self.data.tokenizer)
        tokens = self.total_steps * self.tokens_per_step
        return {"steps": self.total_steps, "tokens": tokens, "params": non_embedding_params(self.model),
                "flops": flops_per_token(self.model, vocab) * tokens}


def _vocab_size(name: str) -> int:
    from midsweep.data import load_tokenizer

    return load_tokenizer(name).vocab_size


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
