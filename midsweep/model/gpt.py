"""The built-in decoder-only Transformer: plain torch + F.scaled_dot_product_attention.

Two flavours share one code path (``arch``):
- neox (GPT-NeoX/Pythia-like): LayerNorm, parallel residual x + attn(ln1 x) + mlp(ln2 x), GELU MLP,
  rotary on the first 25% of each head's channels, biases, untied input/output embeddings.
- llama: RMSNorm, sequential residual, SwiGLU MLP, rotary on all channels, no biases.
No dropout. All randomness comes from torch's global RNG in construction order, so one seed gives
bitwise-identical weights. forward() has no data-dependent Python control flow (torch.compile friendly).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from midsweep.config.model import ModelConfig, rotary_dim


NORM_EPS = 1e-5
"""epsilon of both norms (the transformers configs of the HF backend and of exports use it too)"""


def pad_vocab(vocab_size: int, multiple: int = 64) -> int:
    """Embedding rows are padded to a multiple of 64 so the output matmul has a friendly shape."""
    return -(-vocab_size // multiple) * multiple


def rotary_tables(seq_len: int, rot_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [seq_len, rot_dim/2] for the rotate-half convention."""
    inv_freq = 1.0 / theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2*cos.shape[-1] channels of x [..., T, head_dim]; the rest pass through."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)


class Norm(nn.Module):
    """LayerNorm (neox) or RMSNorm (llama), both with a learned gain."""

    def __init__(self, d: int, arch: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if arch == "neox" else None
        self.eps = NORM_EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, bias: bool):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=bias)  # one fused projection for q, k and v
        self.proj = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        # heads-first views [B, H, T, hd]: rotary then writes q and k in the layout SDPA wants
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4).unbind(0)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    """GELU MLP (neox) or SwiGLU with a fused gate/up projection (llama)."""

    def __init__(self, d: int, d_ff: int, arch: str):
        super().__init__()
        self.swiglu = arch == "llama"
        self.up = nn.Linear(d, 2 * d_ff if self.swiglu else d_ff, bias=not self.swiglu)
        self.down = nn.Linear(d_ff, d, bias=not self.swiglu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(h))  # exact GELU: on CPU it measured faster than the tanh approximation


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        shape = cfg.resolved()
        self.parallel = cfg.arch == "neox"
        self.norm1 = Norm(shape.d_model, cfg.arch)
        self.attn = Attention(shape.d_model, shape.n_heads, bias=cfg.arch == "neox")
        self.norm2 = Norm(shape.d_model, cfg.arch)
        self.mlp = MLP(shape.d_model, shape.d_ff, cfg.arch)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            return x + self.attn(self.norm1(x), cos, sin) + self.mlp(self.norm2(x))
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """forward(input_ids [B, T]) -> logits [B, T, vocab_size] (float32 outside autocast), T <= cfg.seq_len;
    forward(input_ids, hidden=True) -> (hidden states [B, T, D], output matrix [vocab_size, D])."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        shape = cfg.resolved()
        self.vocab_size = vocab_size
        self.seq_len = cfg.seq_len
        padded = pad_vocab(vocab_size)
        self.embed = nn.Embedding(padded, shape.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(shape.n_layers))
        self.norm_f = Norm(shape.d_model, cfg.arch)
        self.lm_head = nn.Linear(shape.d_model, padded, bias=False)
        cos, sin = rotary_tables(cfg.seq_len, rotary_dim(cfg.arch, shape.head_dim), cfg.rope_theta)
        # derived from the config, so kept out of the state_dict
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self._init_weights(cfg.init_std, shape.n_layers)

    def _init_weights(self, std: float, n_layers: int) -> None:
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                # residual-branch outputs are scaled down so the residual stream's variance stays ~constant
                nn.init.normal_(p, std=std / math.sqrt(2 * n_layers))
            else:
                nn.init.normal_(p, std=std)

    def embedding_modules(self) -> list[nn.Module]:
        """Modules whose parameters count as embedding (not counted in non-embedding params)."""
        return [self.embed, self.lm_head]

    def block_modules(self) -> list[nn.Module]:
        """The Transformer blocks, in order: the units of sharding and activation checkpointing."""
        return list(self.blocks)

    def forward(self, input_ids: torch.Tensor, hidden: bool = False):
        """Logits, or with ``hidden=True`` (final hidden states [B, T, D], output matrix [vocab_size, D]) for
        a loss that never materialises the logits (midsweep.model.loss)."""
        T = input_ids.shape[1]
        if T > self.seq_len:
            raise ValueError(f"input length {T} exceeds model.seq_len={self.seq_len}; raise model.seq_len")
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        if hidden:
            return self.norm_f(x), self.lm_head.weight[: self.vocab_size]
        logits = self.lm_head(self.norm_f(x))
        if logits.shape[-1] != self.vocab_size:
            logits = logits[..., : self.vocab_size]
        return logits
