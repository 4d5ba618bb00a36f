"""Model config: which architecture, how big, and which backend builds it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from midsweep.config.errors import Problem, require

ARCHS = ("neox", "llama")
BACKENDS = ("builtin", "hf")
LOSS_CHUNK_ELEMENTS = 1 << 27
"""Logits per chunk (tokens x vocabulary) of the loss head (midsweep/model/loss.py; kept here, torch-free, for the
memory estimate too), read when a call passes none: 2668 tokens at a 50304 vocabulary, whose logits take 512 MiB
in fp32 (eager; compiled chunks keep only bf16 ones). Each chunk adds its share of the output matrix's gradient
into one fp32 [vocabulary x d_model] buffer, a read and a write of 150 MiB at d_model 768: at 32 x 2048 tokens,
1 << 25 elements per chunk made that 98 passes (38 GB, against about 40 GB that the compiled head reads and writes
for all the logits), this makes it 25. The head's memory stays one chunk's, whatever the batch
(``benchmarks/train_throughput.py --chunk-elements`` measures the trade)."""


@dataclass(frozen=True)
class ModelShape:
    """Concrete transformer dimensions after presets and overrides are applied."""

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# (n_layers, d_model, n_heads, d_ff or None for default_d_ff). The 70m/160m/410m rows are the Pythia shapes; 1b
# is TinyLlama-1.1B's and 7b LLaMA-7B's (their published MLP widths; full multi-head attention, no GQA).
SIZES: dict[str, tuple[int, int, int, Optional[int]]] = {
    "nano": (2, 64, 2, None),
    "tiny": (4, 256, 4, None),
    "70m": (6, 512, 8, None),
    "160m": (12, 768, 12, None),
    "410m": (24, 1024, 16, None),
    "1b": (22, 2048, 32, 5632),
    "7b": (32, 4096, 32, 11008),
}


def default_d_ff(arch: str, d_model: int) -> int:
    """4*d for neox; for llama's SwiGLU (three matrices) 8/3*d rounded up to a multiple of 64,
    which keeps the MLP parameter count equal to neox's."""
    if arch == "llama":
        return -(-(8 * d_model // 3) // 64) * 64
    return 4 * d_model


@dataclass
class ModelConfig:
    size: str = "tiny"
    """Named preset: nano (2 layers, d 64, 2 heads; fast tests), tiny (4/256/4), 70m (6/512/8), 160m (12/768/12),
    410m (24/1024/16), 1b (22/2048/32, d_ff 5632: TinyLlama-1.1B), 7b (32/4096/32, d_ff 11008: LLaMA-7B; use the
    last two with arch=llama: model=llama1b, model=llama7b). Explicit n_layers/d_model/n_heads/d_ff override the
    preset when set."""
    arch: str = "neox"
    """neox: LayerNorm, parallel attention+MLP residual, GELU MLP, 25% partial rotary, untied embeddings.
    llama: RMSNorm, sequential residual, SwiGLU MLP, full rotary, no biases."""
    backend: str = "builtin"
    """builtin: midsweep's own plain-torch model. hf: a transformers GPTNeoX/Llama model (or a checkpoint)."""
    n_layers: Optional[int] = None
    """Override the preset's number of transformer blocks."""
    d_model: Optional[int] = None
    """Override the preset's residual width."""
    n_heads: Optional[int] = None
    """Override the preset's number of attention heads (must divide d_model)."""
    d_ff: Optional[int] = None
    """Override the MLP hidden width (default 4*d_model for neox, ~8/3*d_model for llama)."""
    seq_len: int = 256
    """Context length used for training and eval; the model accepts inputs up to this length."""
    rope_theta: float = 10000.0
    """Rotary embedding base."""
    init_std: float = 0.02
    """Std of the normal init of weight matrices and embeddings."""
    hf_name_or_path: Optional[str] = None
    """backend=hf: a pretrained checkpoint (hub name or local dir), e.g. EleutherAI/pythia-160m. None builds a
    randomly initialised model of the preset shape."""
    hf_revision: Optional[str] = None
    """backend=hf: checkpoint revision, e.g. step143000 for a Pythia intermediate checkpoint."""

    def resolved(self) -> ModelShape:
        """The concrete shape: preset values with explicit overrides applied. Call after problems() is empty."""
        n_layers, d_model, n_heads, d_ff = SIZES[self.size]
        n_layers = self.n_layers if self.n_layers is not None else n_layers
        d_model = self.d_model if self.d_model is not None else d_model
        n_heads = self.n_heads if self.n_heads is not None else n_heads
        if self.d_ff is not None:
            d_ff = self.d_ff
        elif d_ff is None or self.d_model is not None:  # a preset's published width belongs to its d_model
            d_ff = default_d_ff(self.arch, d_model)
        return ModelShape(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff)

    def problems(self, prefix: str = "model") -> list[Problem]:
        p: list[Problem] = []
        require(p, self.size in SIZES, f"{prefix}.size", f"unknown size {self.size!r}",
                f"use one of {', '.join(SIZES)} (or set n_layers/d_model/n_heads explicitly)")
        require(p, self.arch in ARCHS, f"{prefix}.arch", f"unknown arch {self.arch!r}",
                f"use one of {', '.join(ARCHS)}")
        require(p, self.backend in BACKENDS, f"{prefix}.backend", f"unknown backend {self.backend!r}",
                f"use one of {', '.join(BACKENDS)}")
        for key in ("n_layers", "d_model", "n_heads", "d_ff", "seq_len"):
            value = getattr(self, key)
            require(p, value is None or (isinstance(value, int) and value > 0), f"{prefix}.{key}",
                    f"must be a positive integer, got {value!r}", f"set {key} to an integer >= 1"
                    + (" or null to use the preset" if key != "seq_len" else ""))
        require(p, self.rope_theta > 0, f"{prefix}.rope_theta", f"must be > 0, got {self.rope_theta}",
                "use e.g. 10000.0")
        require(p, self.init_std > 0, f"{prefix}.init_std", f"must be > 0, got {self.init_std}", "use e.g. 0.02")
        require(p, self.hf_revision is None or self.hf_name_or_path is not None, f"{prefix}.hf_revision",
                "is set but hf_name_or_path is not", "set hf_name_or_path to the checkpoint, or hf_revision: null")
        require(p, self.hf_name_or_path is None or self.backend == "hf", f"{prefix}.hf_name_or_path",
                f"a checkpoint needs backend=hf, got backend={self.backend!r}", "set backend: hf")
        if p:  # the shape checks below need a valid preset and positive dims
            return p
        shape = self.resolved()
        require(p, shape.d_model % shape.n_heads == 0, f"{prefix}.n_heads",
                f"d_model={shape.d_model} is not divisible by n_heads={shape.n_heads}",
                "pick n_heads that divides d_model (e.g. d_model/64)")
        if shape.d_model % shape.n_heads == 0:
            # rotary rotates pairs of channels, so the rotated part of a head must be even
            rot = rotary_dim(self.arch, shape.head_dim)
            require(p, rot >= 2 and rot % 2 == 0, f"{prefix}.n_heads",
                    f"head_dim={shape.head_dim} leaves an odd or empty rotary part ({rot} channels) for arch "
                    f"{self.arch}", "make d_model/n_heads a multiple of 8")
        return p


def rotary_dim(arch: str, head_dim: int) -> int:
    """Channels of each head that get rotary embeddings: 25% for neox (Pythia), all for llama."""
    return head_dim // 4 if arch == "neox" else head_dim


def non_embedding_params(cfg: ModelConfig) -> int:
    """Analytic non-embedding parameter count of the built-in model (equals count_params on it)."""
    s = cfg.resolved()
    d, ff = s.d_model, s.d_ff
    if cfg.arch == "neox":  # qkv+proj with biases, GELU MLP with biases, two LayerNorms (gain+bias)
        per_layer = 4 * d * d + 4 * d + 2 * d * ff + ff + d + 4 * d
        return s.n_layers * per_layer + 2 * d
    per_layer = 4 * d * d + 3 * d * ff + 2 * d  # no biases, SwiGLU has three matrices, two RMSNorm gains
    return s.n_layers * per_layer + d


def all_params(cfg: ModelConfig, vocab_size: int) -> int:
    """Every parameter: the non-embedding ones, the input embedding and the untied output head (vocabulary rows
    as given, unpadded). The count behind tokens per parameter."""
    return non_embedding_params(cfg) + 2 * cfg.resolved().d_model * vocab_size


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
