"""transformers backend behind the built-in model's interface: forward(input_ids) -> logits.

transformers is imported inside functions: importing its model classes costs seconds per process.
"""
from __future__ import annotations

import torch
from torch import nn

from midsweep.config.model import ModelConfig
from midsweep.model.gpt import NORM_EPS


def hf_config(cfg: ModelConfig, vocab_size: int):
    """A GPTNeoXConfig / LlamaConfig with the preset shape (random-init models only)."""
    shape = cfg.resolved()
    common = dict(vocab_size=vocab_size, hidden_size=shape.d_model, num_hidden_layers=shape.n_layers,
                  num_attention_heads=shape.n_heads, intermediate_size=shape.d_ff,
                  max_position_embeddings=max(cfg.seq_len, 2048), initializer_range=cfg.init_std,
                  tie_word_embeddings=False, use_cache=False)
    if cfg.arch == "neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(**common, use_parallel_residual=True, hidden_act="gelu", hidden_dropout=0.0,
                             layer_norm_eps=NORM_EPS,
                             attention_dropout=0.0, rope_parameters={
                                 "rope_type": "default", "rope_theta": cfg.rope_theta,
                                 "partial_rotary_factor": 0.25})
    from transformers import LlamaConfig

    return LlamaConfig(**common, num_key_value_heads=shape.n_heads, hidden_act="silu", attention_bias=False,
                       rms_norm_eps=NORM_EPS,
                       mlp_bias=False, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})


class HFCausalLM(nn.Module):
    """Thin wrapper with the built-in model's interface: forward(input_ids [B, T]) -> logits [B, T, vocab_size],
    forward(input_ids, hidden=True) -> (final hidden states, output matrix); state_dict keys are 'model.*'."""

    def __init__(self, model: nn.Module, vocab_size: int):
        super().__init__()
        self.model = model
        self.vocab_size = vocab_size

    def embedding_modules(self) -> list[nn.Module]:
        return [self.model.get_input_embeddings(), self.model.get_output_embeddings()]

    def block_modules(self) -> list[nn.Module]:
        """The decoder layers, in order (GPTNeoX and Llama both keep them as ``base_model.layers``)."""
        return list(self.model.base_model.layers)

    def forward(self, input_ids: torch.Tensor, hidden: bool = False):
        if hidden:  # the base model's output is after the final norm; the head has no bias (GPTNeoX, Llama)
            states = self.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
            return states, self.model.get_output_embeddings().weight[: self.vocab_size]
        logits = self.model(input_ids=input_ids, use_cache=False).logits
        if logits.shape[-1] != self.vocab_size:  # checkpoints pad their vocab (Pythia: 50304 rows)
            logits = logits[..., : self.vocab_size]
        return logits


def build_hf_model(cfg: ModelConfig, vocab_size: int) -> HFCausalLM:
    from transformers import AutoModelForCausalLM

    if cfg.hf_name_or_path is None:
        model = AutoModelForCausalLM.from_config(hf_config(cfg, vocab_size), attn_implementation="sdpa")
        return HFCausalLM(model, vocab_size)
    model = AutoModelForCausalLM.from_pretrained(cfg.hf_name_or_path, revision=cfg.hf_revision,
                                                 attn_implementation="sdpa", dtype=torch.float32)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab_size:
        raise ValueError(f"checkpoint {cfg.hf_name_or_path!r} has {rows} vocab rows but the tokenizer has "
                         f"{vocab_size} tokens; use the checkpoint's own tokenizer")
    return HFCausalLM(model, vocab_size)
