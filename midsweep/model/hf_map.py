"""The one correspondence between the built-in model's parameters and transformers' GPTNeoX / Llama ones.

``to_hf`` turns a built-in state_dict into a ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` state_dict (export),
``from_hf`` the other way (the tests load HF weights into the built-in model). Both walk the same table, so a
layout fact is written once:
- neox fuses q, k, v as [q heads | k heads | v heads]; GPTNeoX per head as [q|k|v].
- llama's fused qkv splits into q_proj, k_proj, v_proj; its fused SwiGLU ``mlp.up`` is [gate | up].
- the built-in embedding and head pad their rows to a multiple of 64 (``gpt.pad_vocab``); HF gets exactly
  ``vocab_size`` rows, since padded rows are never trained and would enter HF's softmax.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from midsweep.config.model import ModelConfig
from midsweep.model.gpt import pad_vocab


class Entry(NamedTuple):
    ours: str
    theirs: tuple[str, ...]
    split: Callable[[torch.Tensor], list[torch.Tensor]]
    """built-in tensor -> the HF tensors, in the order of ``theirs``"""
    join: Callable[[list[torch.Tensor]], torch.Tensor]
    """the inverse of ``split``"""


def _same(ours: str, theirs: str) -> Entry:
    return Entry(ours, (theirs,), lambda w: [w], lambda ws: ws[0])


def _chunks(ours: str, theirs: tuple[str, ...]) -> Entry:
    """A fused built-in matrix whose output rows are the HF matrices stacked in order."""
    return Entry(ours, theirs, lambda w: list(w.chunk(len(theirs), dim=0)), lambda ws: torch.cat(ws, dim=0))


def _neox_qkv(ours: str, theirs: str, n_heads: int) -> Entry:
    def regroup(w: torch.Tensor, a: int, b: int) -> torch.Tensor:  # [a, b, head_dim, ...] -> [b, a, ...]
        return w.reshape(a, b, -1, *w.shape[1:]).transpose(0, 1).reshape(w.shape)

    return Entry(ours, (theirs,), lambda w: [regroup(w, 3, n_heads)], lambda ws: regroup(ws[0], n_heads, 3))


def entries(cfg: ModelConfig) -> list[Entry]:
    """Every built-in parameter with its HF name(s) and layout change, for ``cfg.arch``."""
    shape = cfg.resolved()
    if cfg.arch == "neox":
        out = [_same("embed.weight", "gpt_neox.embed_in.weight"), _same("lm_head.weight", "lm_head.weight"),
               _same("norm_f.weight", "gpt_neox.final_layer_norm.weight"),
               _same("norm_f.bias", "gpt_neox.final_layer_norm.bias")]
        names = {"norm1": "input_layernorm", "norm2": "post_attention_layernorm", "attn.proj": "attention.dense",
                 "mlp.up": "mlp.dense_h_to_4h", "mlp.down": "mlp.dense_4h_to_h"}
        for i in range(shape.n_layers):
            ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
            for p in ("weight", "bias"):
                out += [_same(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in names.items()]
                out.append(_neox_qkv(f"{ours}attn.qkv.{p}", f"{theirs}attention.query_key_value.{p}", shape.n_heads))
        return out
    out = [_same("embed.weight", "model.embed_tokens.weight"), _same("lm_head.weight", "lm_head.weight"),
           _same("norm_f.weight", "model.norm.weight")]
    for i in range(shape.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out += [_same(f"{ours}norm1.weight", f"{theirs}input_layernorm.weight"),
                _same(f"{ours}norm2.weight", f"{theirs}post_attention_layernorm.weight"),
                _chunks(f"{ours}attn.qkv.weight", tuple(f"{theirs}self_attn.{x}_proj.weight" for x in "qkv")),
                _same(f"{ours}attn.proj.weight", f"{theirs}self_attn.o_proj.weight"),
                _chunks(f"{ours}mlp.up.weight", (f"{theirs}mlp.gate_proj.weight", f"{theirs}mlp.up_proj.weight")),
                _same(f"{ours}mlp.down.weight", f"{theirs}mlp.down_proj.weight")]
    return out


_VOCAB_ROWS = ("embed.weight", "lm_head.weight")


def to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """The HF CausalLM state_dict holding a built-in model's weights (embedding rows cut to ``vocab_size``)."""
    out = {}
    for e in entries(cfg):
        w = state[e.ours][:vocab_size] if e.ours in _VOCAB_ROWS else state[e.ours]
        out.update(zip(e.theirs, (t.contiguous() for t in e.split(w))))
    return out


def from_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The built-in state_dict holding an HF CausalLM's weights (embedding rows padded with zeros)."""
    out = {}
    for e in entries(cfg):
        w = e.join([state[k] for k in e.theirs])
        if e.ours in _VOCAB_ROWS:
            w = torch.cat([w, w.new_zeros(pad_vocab(w.shape[0]) - w.shape[0], *w.shape[1:])])
        out[e.ours] = w
    return out
