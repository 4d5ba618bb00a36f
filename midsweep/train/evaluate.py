"""Per-domain held-out loss, split across ranks and summed exactly."""
from __future__ import annotations

import torch

from midsweep.train.batches import loss_sum, to_tensors


@torch.no_grad()
def heldout_loss(model, split, seq_len: int, max_tokens: int, batch: int, accelerator,
                 compile_mode: str | None = None) -> float:
    """Mean next-token loss (nats) over the first ``max_tokens`` held-out tokens of one domain.

    Prompt/response domains count response tokens only. Every rank evaluates a strided share of the
    sequences; sums are reduced so the result does not depend on the number of ranks. Every forward pass has
    ``batch`` rows (a short last batch is padded with rows that count for nothing), so a compiled model
    compiles evaluation once instead of once per leftover size. Every rank makes as many forward passes (a rank
    with a sequence fewer pads), since a sharded model (``train.parallel=fsdp``) gathers its blocks in each
    with all ranks. ``compile_mode``: see ``loss_sum``.
    """
    n = max(1, min(split.num_sequences(seq_len), max_tokens // seq_len))
    world = accelerator.num_processes
    mine = list(range(accelerator.process_index, n, world))
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    model.eval()
    for start in range(0, -(-n // world), batch):
        rows = mine[start:start + batch]
        filler = (rows or [0])[:1] * (batch - len(rows))
        seqs, masks = zip(*(split.sequence(i, seq_len) for i in rows + filler))
        x, y, m = to_tensors(seqs, masks if split.loss_mask is not None else None, accelerator.device)
        m[len(rows):] = 0
        with accelerator.autocast():
            totals[0] += loss_sum(model, x, y, m, compile_mode).double()
        totals[1] += m.sum().double()
    model.train()
    totals = accelerator.reduce(totals, reduction="sum")
    return float(totals[0] / totals[1].clamp(min=1))
