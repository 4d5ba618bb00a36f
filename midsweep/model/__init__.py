"""Models for midsweep: build_model(cfg, vocab_size) -> nn.Module mapping input_ids [B, T] to logits [B, T, V].

Backends: "builtin" (midsweep.model.gpt, plain torch) and "hf" (midsweep.model.hf, transformers; imported
only when asked for).
"""
from __future__ import annotations

from torch import nn

from midsweep.config.errors import raise_if_any
from midsweep.config.model import ModelConfig, flops_per_token, non_embedding_params  # torch-free arithmetic


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """The model for ``cfg``; weights come from torch's global RNG (seed it first for reproducibility).

    forward(input_ids: LongTensor[B, T]) -> FloatTensor[B, T, vocab_size] with exactly vocab_size columns
    (any internal padding of the embedding rows is sliced off); forward(input_ids, hidden=True) -> (final
    hidden states [B, T, D], output matrix [vocab_size, D]), which the training and evaluation loss
    (midsweep.model.loss) turn into the cross-entropy without materialising the logits.
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


__all__ = ["ModelConfig", "build_model", "count_params", "flops_per_token", "non_embedding_params"]
