"""Masked next-token cross-entropy straight from the final hidden states and the output matrix, by token chunks.

The plain path (logits = head(h); cross_entropy(logits.float())) holds the logits in the compute dtype, their
fp32 copy and the softmax cross_entropy saves for backward: at 32 x 2048 tokens and a 50304 vocabulary each
fp32 copy is 13 GB. Here each chunk of tokens computes its logits, its loss and, when a gradient is wanted,
its gradients with respect to the hidden states and the output matrix at once, then frees the logits: the
head never holds more than one chunk's logits, and backward only scales the stored gradients (no recompute).
"""
from __future__ import annotations

import functools

import torch

from midsweep.config.model import LOSS_CHUNK_ELEMENTS  # torch-free: the memory estimate reads it too


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             mask: torch.Tensor, chunk_elements: int | None = None,
                             compile_mode: str | None = None) -> torch.Tensor:
    """``sum_i mask_i * cross_entropy(hidden_i @ weight.T, targets_i)`` as an fp32 scalar, differentiable in
    ``hidden`` and ``weight``.

    hidden [N, D], weight [V, D] (one row per class: pass only the real vocabulary rows), targets [N] (int),
    mask [N] (float weights, 0 for tokens that do not count). Equal to the plain
    ``(F.cross_entropy((hidden @ weight.T).float(), targets, reduction="none") * mask).sum()`` up to float
    rounding: under autocast the matmuls run in the autocast dtype as nn.Linear's would, the softmax in fp32.
    ``compile_mode``: run each chunk through torch.compile in this mode (None: eager), which fuses the softmax,
    its gradient and the accumulation into a few passes over the chunk's logits instead of one pass per
    operation (the elementwise work over N x V, not the matmuls, is what the eager chunk spends its memory
    bandwidth on).
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    chunk = max(1, (chunk_elements or LOSS_CHUNK_ELEMENTS) // weight.shape[0])
    mask = mask.to(torch.float32)
    step = _chunk if compile_mode is None else _compiled_chunk(compile_mode)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, mask, dtype, chunk, step)
    return _chunks(hidden, weight, targets, mask, dtype, chunk, step, False, False)[0]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, mask, dtype, chunk, step):
        want_h, want_w = ctx.needs_input_grad[:2]
        total, grad_h, grad_w = _chunks(hidden, weight, targets, mask, dtype, chunk, step, want_h, want_w)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        out_h = (grad_h * grad_total).to(h_dtype) if grad_h is not None else None
        out_w = (grad_w * grad_total).to(w_dtype) if grad_w is not None else None
        return out_h, out_w, None, None, None, None, None


def _chunks(hidden, weight, targets, mask, dtype, chunk, step, want_h, want_w):
    """(loss sum, d sum / d hidden or None, d sum / d weight or None), gradients in fp32."""
    with torch.autocast(hidden.device.type, enabled=False):  # dtypes are chosen explicitly below
        w = weight.detach().to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            loss, gh = step(hidden[part].detach().to(dtype), w, targets[part], mask[part], grad_w, want_h)
            total += loss
            if want_h:
                grad_h[part] = gh
    return total, grad_h, grad_w


def _chunk(h, w, y, m, grad_w, want_h):
    """One chunk's loss sum; with ``grad_w`` (fp32) its gradient in ``w`` is added there; with ``want_h`` its
    gradient in ``h`` is returned."""
    logits = (h @ w.T).float()
    lse = torch.logsumexp(logits, dim=-1)
    loss = ((lse - logits.gather(1, y[:, None]).squeeze(1)) * m).sum()
    if grad_w is None and not want_h:
        return loss, None
    # d loss_i / d logits_i = (softmax_i - onehot(y_i)) * m_i, computed in place of the logits
    g = logits.sub_(lse[:, None]).exp_()
    g[torch.arange(g.shape[0], device=g.device), y] -= 1.0
    g = g.mul_(m[:, None]).to(h.dtype)
    if grad_w is not None:
        grad_w += (g.T @ h).float()
    return loss, (g @ w if want_h else None)


@functools.cache
def _compiled_chunk(mode: str):
    """``_chunk`` compiled once per process and mode (one graph per chunk shape: the full one and the last)."""
    return torch.compile(_chunk, mode=mode, dynamic=False)
