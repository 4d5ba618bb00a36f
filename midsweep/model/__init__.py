"""Models for midsweep: build_model(cfg, vocab_size) -> nn.Module mapping input_ids [B, T] to logits [B, T, V].

Backends: "builtin" (midsweep.model.gpt, plain torch) and "hf" (midsweep.model.hf, transformers; imported
only when asked for).
"""
from __future__ import annotations

from torch import nn

from midsweep.config.errors import raise_if_any
from midsweep.config.model import ModelConfig


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """The model for ``cfg``; weights come from torch's global RNG (seed it first for reproducibility).

    forward(input_ids: LongTensor[B, T]) -> FloatTensor[B, T, vocab_size] with exactly vocab_size columns
    (any internal padding of the embedding rows is sliced off).
    """
    raise_if_any(cfg.problems())
    if cfg.backend == "hf":
        from midsweep.model.hf import build_hf_model

        return build_hf_model(cfg, vocab_size)
    from midsweep.model.gpt import GPT

    return GPT(cfg, vocab_size)


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside torch.compile (._orig_mod) and DDP (.module) wrappers."""
    while hasattr(model, "_orig_mod") or isinstance(model, nn.parallel.DistributedDataParallel):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def count_params(model: nn.Module, non_embedding: bool = True) -> int:
    """Number of parameters; non_embedding=True leaves out the input embedding and the output head
    (the convention of the Pythia parameter counts, e.g. 18.9M for the 70m shape)."""
    model = _unwrap(model)
    params = {id(p): p.numel() for p in model.parameters()}
    if non_embedding:
        for module in model.embedding_modules():
            for p in module.parameters():
                params.pop(id(p), None)
    return sum(params.values())


def non_embedding_params(cfg: ModelConfig) -> int:
    """Analytic non-embedding parameter count of the built-in model (equals count_params on it)."""
    s = cfg.resolved()
    d, ff = s.d_model, s.d_ff
    if cfg.arch == "neox":  # qkv+proj with biases, GELU MLP with biases, two LayerNorms (gain+bias)
        per_layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
        return s.n_layers * per_layer + 2 * d
    per_layer = 4 * d * d + 3 * d * ff + 2 * d  # no biases, SwiGLU has three matrices, two RMSNorm gains
    return s.n_layers * per_layer + d


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> float:
    """Training FLOPs per token (forward + backward):

        6 * (N_non_embedding + d_model * vocab_size) + 12 * n_layers * d_model * seq_len

    The first term is the matmul work of every weight (2 FLOPs per multiply-add forward, 4 backward),
    counting the output head but not the embedding lookup. The second is attention's QK^T and AV products
    at full context (not halved for the causal mask), per token.
    """
    s = cfg.resolved()
    return float(6 * (non_embedding_params(cfg) + s.d_model * vocab_size)
                 + 12 * s.n_layers * s.d_model * cfg.seq_len)


__all__ = ["ModelConfig", "build_model", "count_params", "flops_per_token", "non_embedding_params"]
