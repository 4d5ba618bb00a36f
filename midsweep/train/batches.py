"""Token sequences -> tensors for one rank, and the masked next-token loss shared by training and eval."""
from __future__ import annotations

import numpy as np
import torch

from midsweep.model.loss import linear_cross_entropy_sum


def make_batch(data: dict, items: list[tuple[str, int]], seq_len: int, use_mask: bool,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, loss mask) for ``items`` = [(domain, training sequence index), ...].

    ``use_mask``: honour prompt masks of prompt/response domains (post-training); otherwise every target
    token counts (plain language modelling).
    """
    seqs, masks = zip(*(data[d].train.sequence(i, seq_len) for d, i in items))
    return to_tensors(seqs, masks if use_mask else None, device)


def to_tensors(seqs, masks, device: torch.device):
    x = torch.from_numpy(np.stack(seqs).astype(np.int64))
    m = (torch.from_numpy(np.stack(masks)[:, 1:].astype(np.float32)) if masks is not None
         else torch.ones(x.shape[0], x.shape[1] - 1))
    if device.type == "cuda":  # a copy from pageable memory waits for the GPU to finish its queue: pin instead
        return tuple(t.contiguous().pin_memory().to(device, non_blocking=True) for t in (x[:, :-1], x[:, 1:], m))
    return x[:, :-1].to(device), x[:, 1:].to(device), m.to(device)


def loss_sum(model, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
             compile_mode: str | None = None) -> torch.Tensor:
    """Sum of masked next-token cross-entropy (fp32) of ``model`` on ``inputs``, to be divided by the number of
    counted tokens. Computed from the final hidden states in token chunks: the fp32 logits never exist whole.
    ``compile_mode``: the chunks run through torch.compile in this mode too (None: eager)."""
    hidden, weight = model(inputs, hidden=True)
    return linear_cross_entropy_sum(hidden.flatten(0, 1), weight, targets.flatten(), mask.flatten(),
                                    compile_mode=compile_mode)
