"""Token sequences -> tensors for one rank, and the masked next-token loss shared by training and eval."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
    m = torch.from_numpy(np.stack(masks)[:, 1:].astype(np.float32)) if masks is not None else torch.ones(x.shape[0], x.shape[1] - 1)
    return x[:, :-1].to(device), x[:, 1:].to(device), m.to(device)


def loss_sum(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of masked next-token cross-entropy (fp32), to be divided by the number of counted tokens."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * mask.flatten()).sum()
