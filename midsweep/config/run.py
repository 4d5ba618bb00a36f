"""The root config of one run: every group, cross-group checks, the run id and the run's plan."""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from midsweep.config.data import DataConfig, SourceConfig, known_vocabulary
from midsweep.config.errors import Problem, raise_if_any, require
from midsweep.config.eval import EvalConfig
from midsweep.config.logger import LoggerConfig
from midsweep.config.mixture import KINDS, MixtureConfig
from midsweep.config.model import ModelConfig, all_params, flops_per_token, non_embedding_params
from midsweep.config.optim import OptimConfig
from midsweep.config.posttrain import PosttrainConfig
from midsweep.config.train import TrainConfig

# Keys that change where, how fast or how visibly a run works, not what it computes: left out of the run id so
# that re-running with another output path, progress bar, checkpoint cadence or kernel choice finds the same run.
NON_SEMANTIC = {
    "name", "train.out_dir", "train.progress", "train.log_every", "train.checkpoint_every", "train.keep_last",
    "train.pin_steps", "train.share_prefixes", "train.publish_steps", "train.device", "train.compile",
    "train.compile_mode", "train.wait_for_lock", "train.deterministic", "train.parallel",
    "train.activation_checkpointing", "eval.batch", "data.cache_dir", "data.vocab_size", "logger",
}

RUN_ID_VERSION = "midsweep-run-id-2"
"""Salts every run id. Bump it when a field's default or meaning changes so that one config computes something
else than before. Adding a field needs no bump: the id hashes only the values that differ from the defaults."""

COMMON_COORDS = (
    "train.seed", "train.tokens", "train.init_from", "model.size", "model.arch", "model.hf_revision", "optim.lr",
    "optim.warmup", "optim.schedule", "optim.boundary", "optim.rewarm_lr", "optim.rewarm_warmup", "posttrain.enabled",
    "posttrain.domain", "posttrain.lr", "posttrain.seed", "posttrain.after",
)
"""The sweep coordinates (summary.json) besides ``mixture.kind`` and the mixture keys the kind reads."""

_ABSENT = "<absent>"
"""Run-id value of a default key that a config lacks (e.g. a default domain it removed)."""


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Experiment tracker (TensorBoard, W&B...) the run also reports to (group ``logger``); not part of the run id."""

    # Not a field (no annotation): a fact of the prepared data, not of the config, so neither the run id nor the
    # config files hold it. Set by ``with_posttrain_items`` (midsweep.data.posttrain.resolve_epochs).
    posttrain_items = None
    """Items of one pass over the post-training split (sequences with ``posttrain.packing``, else examples), read
    with ``posttrain.epochs`` only; None until the split is known."""

    # ------------------------------------------------------------------ derived quantities
    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch * self.model.seq_len

    @property
    def main_steps(self) -> int:
        """Optimizer steps of pretraining + midtraining."""
        return self.train.tokens // self.tokens_per_step

    @property
    def posttrain_batch(self) -> int:
        """Sequences per post-training step (``posttrain.global_batch``, else the run's)."""
        return self.posttrain.global_batch or self.train.global_batch

    @property
    def posttrain_seed(self) -> int:
        """Seed of the post-training data order (``posttrain.seed``, else the run's)."""
        return self.train.seed if self.posttrain.seed is None else self.posttrain.seed

    @property
    def posttrain_start(self) -> int:
        """The main step post-training starts from (``posttrain.after`` of main training; its end without)."""
        if not self.posttrain.enabled:
            return self.main_steps
        return int(round(self.posttrain.after * self.main_steps))

    @property
    def posttrain_known(self) -> bool:
        """The post-training step count is known: set by tokens, or by epochs of a split whose size is known."""
        return not self.posttrain.enabled or self.posttrain.epochs is None or self.posttrain_items is not None

    @property
    def posttrain_steps(self) -> int:
        """Post-training steps: ``posttrain.tokens`` in steps, or ``posttrain.epochs`` passes over the split rounded
        up to whole steps (0 while the split's size is unknown: ``posttrain_known`` says so)."""
        if not self.posttrain_known or not self.posttrain.enabled:
            return 0
        if self.posttrain.epochs is None:
            return self.posttrain.tokens // (self.posttrain_batch * self.model.seq_len)
        return math.ceil(self.posttrain.epochs * self.posttrain_items / self.posttrain_batch - 1e-9)

    def with_posttrain_items(self, items: int) -> "RunConfig":
        """A copy of this run whose post-training split holds ``items`` (see ``posttrain_items``)."""
        run = copy.copy(self)
        run.posttrain_items = items
        return run

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run: the main steps up to ``posttrain_start``, then post-training."""
        return self.posttrain_start + self.posttrain_steps

    def tokens_at(self, step: int) -> int:
        """Training tokens (sequence slots) seen after ``step`` optimizer steps."""
        main = min(step, self.posttrain_start)
        return main * self.tokens_per_step + (step - main) * self.posttrain_batch * self.model.seq_len

    def to_step(self, value: float) -> int:
        """A mixture time (``mixture.unit``) as a main-training step."""
        if self.mixture.unit == "tokens":
            return int(value) // self.tokens_per_step
        return int(round(value * self.main_steps))

    def eval_domains(self) -> list[str]:
        return list(self.eval.domains) or list(self.data.domains)

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[Problem]:
        nonfinite = {k: v for k, v in flatten(dataclasses.asdict(self)).items()
                     if isinstance(v, float) and not math.isfinite(v)}
        out = [Problem(k, f"{v} is not a finite number", "give a finite value") for k, v in nonfinite.items()]
        out += [p for p in (*self.model.problems("model"), *self.data.problems("data"),
                            *self.mixture.problems("mixture"), *self.optim.problems("optim"),
                            *self.train.problems("train"), *self.eval.problems("eval"),
                            *self.posttrain.problems("posttrain"), *self.logger.problems("logger"))
               if p.key not in nonfinite]
        known = set(self.data.domains)
        fix = f"use one of {', '.join(sorted(known))}, or add it under data.domains"
        for name in sorted(self.mixture.domains() - known):
            out.append(Problem("mixture", f"unknown domain {name!r}", fix))
        for name in sorted(set(self.eval.domains) - known):
            out.append(Problem("eval.domains", f"unknown domain {name!r}", fix))
        if self.posttrain.enabled:
            require(out, self.posttrain.domain in known, "posttrain.domain",
                    f"unknown domain {self.posttrain.domain!r}", fix)
        out += self._start_problems()
        if out:  # the arithmetic below assumes sane group values
            return out
        tps = self.tokens_per_step
        require(out, self.main_steps >= 1, "train.tokens", f"{self.train.tokens} tokens is less than one step ({tps})",
                f"use at least {tps} tokens (train.global_batch x model.seq_len)")
        require(out, self.eval.every_tokens % tps == 0, "eval.every_tokens",
                f"{self.eval.every_tokens} is not a multiple of the tokens per step ({tps})",
                f"use a multiple of {tps}, e.g. {max(1, round(self.eval.every_tokens / tps)) * tps}")
        if self.main_steps >= 1:
            out += self.mixture.timing_problems(self.to_step, self.main_steps)
        pretrained = self.train.init_from is not None or self.model.hf_name_or_path is not None
        if self.mixture.kind == "continued" and not pretrained and not out:
            require(out, self.to_step(self.mixture.introduce_at) > 0, "train.init_from",
                    f"mixture kind continued switches to {self.mixture.domain} at step 0 from random weights: "
                    "nothing is continued", "set train.init_from to a pretrained run directory (or "
                    "model.hf_name_or_path to a hub checkpoint), or switch later (mixture.introduce_at)")
        if self.posttrain.enabled:
            ptps = self.posttrain_batch * self.model.seq_len
            if self.posttrain.epochs is None:
                require(out, self.posttrain_steps >= 1, "posttrain.tokens", f"less than one step ({ptps} tokens)",
                        f"use at least {ptps} tokens")
            require(out, self.posttrain_batch % self.train.micro_batch == 0, "posttrain.global_batch",
                    f"{self.posttrain_batch} sequences do not split into micro-batches of {self.train.micro_batch}",
                    "use a multiple of train.micro_batch")
            require(out, self.posttrain_start >= 1, "posttrain.after",
                    f"{self.posttrain.after} of {self.main_steps} main steps is no step", "use a larger fraction")
        at_boundary = [k for k, v in (("optim.boundary", self.optim.boundary != "continue"),
                                      ("optim.horizon", self.optim.horizon == "boundary")) if v]
        if at_boundary and not out:
            n = self.main_steps
            starts = [s.start for s in self.mixture.segments(self.to_step, n)]
            key = at_boundary[0]
            require(out, any(0 < s < n for s in starts), key,
                    f"{key.split('.')[1]}={getattr(self.optim, key.split('.')[1])} acts where the mix changes, but "
                    f"mixture kind {self.mixture.kind} " + ("changes it at step 0" if starts else "never changes it"),
                    f"use {key}={'continue' if key == 'optim.boundary' else 'end'} (e.g. optim=cosine), or a mixture "
                    "that changes after step 0")
        return out

    def _start_problems(self) -> list[Problem]:
        """Where the weights and the vocabulary come from: checked without loading anything."""
        out: list[Problem] = []
        init = self.train.init_from
        require(out, init is None or os.path.exists(os.path.expanduser(init)), "train.init_from",
                f"{init} does not exist", "give a finished run directory or its checkpoints/step_XXXXXXXX directory "
                "(relative paths are read from the launch directory)")
        tokenizer = self.data.tokenizer
        require(out, self.data.resolved_vocab_size() is not None, "data.vocab_size",
                f"the vocabulary size of tokenizer {tokenizer!r} is not known without loading it",
                "set data.vocab_size to len(AutoTokenizer.from_pretrained(data.tokenizer))")
        checkpoint = self.model.hf_name_or_path
        if checkpoint is not None:
            want, have = known_vocabulary(checkpoint), known_vocabulary(tokenizer)
            require(out, tokenizer != "byte" and (want is None or have is None or want == have), "data.tokenizer",
                    f"tokenizer {tokenizer!r} does not match the vocabulary of the pretrained model {checkpoint!r}"
                    + (f" ({want[0]}, {want[1]} tokens)" if want else ""),
                    f"set data.tokenizer={checkpoint} (the checkpoint's own tokenizer)")
        return out

    def validate(self) -> "RunConfig":
        raise_if_any(self.problems())
        return self

    # ------------------------------------------------------------------ identity and plan
    def flat(self) -> dict:
        """The config as a flat {dotted.key: value} dict, without the keys it does not read (``_unread_keys``)."""
        unread = self._unread_keys()
        return {k: v for k, v in flatten(dataclasses.asdict(self)).items() if not _under(k, unread)}

    def _unread_keys(self) -> set[str]:
        """Keys this run does not read: the mixture fields of other kinds, and the re-warming keys unless
        ``optim.boundary=rewarm`` (so a grid crossing boundary policies with re-warm LRs has one no-rewarm run)."""
        unread = _unread_mixture_keys(self.mixture.kind)
        return unread if self.optim.boundary == "rewarm" else unread | {"optim.rewarm_lr", "optim.rewarm_warmup"}

    def run_id(self) -> str:
        """12 hex digits of sha256 over RUN_ID_VERSION and the semantic values that differ from the defaults
        (a default key the config lacks counts as a difference)."""
        semantic = {k: v for k, v in self.flat().items() if not _under(k, NON_SEMANTIC)}
        defaults = _default_flat(type(self))
        changed = {k: v for k, v in semantic.items() if _default_value(k, defaults) != v}
        unread = self._unread_keys()
        changed |= {k: _ABSENT for k in defaults if k not in semantic and not _under(k, NON_SEMANTIC | unread)}
        blob = json.dumps({"version": RUN_ID_VERSION, "changed": changed}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def run_dir(self) -> Path:
        return Path(self.train.out_dir) / self.run_id()

    def coords(self) -> dict:
        """The sweep coordinates: ``mixture.kind``, the mixture keys its kind reads (dicts and stage lists flattened,
        e.g. ``mixture.base_weights.general``), COMMON_COORDS, and ``mixture.introduce_tokens`` for kinds with an
        introduction time."""
        flat, kind = self.flat(), self.mixture.kind
        reads = {f"mixture.{name}" for name in KINDS[kind].reads}
        coords = {"mixture.kind": kind, **{k: v for k, v in flat.items() if _under(k, reads)}}
        coords |= {k: flat[k] for k in COMMON_COORDS if k in flat}
        if "introduce_at" in KINDS[kind].reads:
            coords["mixture.introduce_tokens"] = self.to_step(self.mixture.introduce_at) * self.tokens_per_step
        return coords

    def plan(self) -> dict:
        """Steps, tokens, FLOPs and parameters (non-embedding, and all) this run will take (an estimate for
        previews): config arithmetic only, no torch and no tokenizer."""
        tokens, vocab = self.tokens_at(self.total_steps), self.data.resolved_vocab_size()
        return {"steps": self.total_steps, "tokens": tokens, "params": non_embedding_params(self.model),
                "all_params": all_params(self.model, vocab), "flops": flops_per_token(self.model, vocab) * tokens}


def _default_value(key: str, defaults: dict):
    """The default a run-id key is compared with: the RunConfig default, or for a domain the defaults lack (one
    the user added) the SourceConfig field's default, so a field added to SourceConfig keeps those ids too."""
    if key in defaults:
        return defaults[key]
    if key.startswith("data.domains."):
        return _source_defaults().get(key.rsplit(".", 1)[1], _ABSENT)
    return _ABSENT


@functools.cache
def _source_defaults() -> dict:
    return dataclasses.asdict(SourceConfig())


def _under(key: str, prefixes: set[str]) -> bool:
    """``key`` is one of ``prefixes`` or inside one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _unread_mixture_keys(kind: str) -> set[str]:
    """The mixture keys that ``kind`` does not read (none for an unknown kind, which fails validation)."""
    if kind not in KINDS:
        return set()
    return {f"mixture.{f.name}" for f in dataclasses.fields(MixtureConfig)
            if f.name != "kind" and f.name not in KINDS[kind].reads}


@functools.cache
def _default_flat(cls: type) -> dict:
    """The flat defaults of a RunConfig class (computed once)."""
    return flatten(dataclasses.asdict(cls()))


def flatten(tree: dict, prefix: str = "") -> dict:
    """{dotted.key: leaf}: nested dicts, and lists of dicts (by index: ``mixture.stages.0.start``), flattened."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
