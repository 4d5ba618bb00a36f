"""Post-training's data: which items of the post-training domain each post-training step reads, and their
token sequences, packed (full sequences of the split) or one padded example per sequence.

The order is a pure function of (``posttrain.seed``, the step): post-training has no state of its own to save,
and runs that differ in it share their whole main training.
"""
from __future__ import annotations

import numpy as np

from midsweep.data.sampler import EpochOrder
from midsweep.data.shards import TokenSplit


class PosttrainData:
    """The post-training items of each step and their (tokens, loss mask) sequences of ``seq_len + 1``."""

    def __init__(self, split: TokenSplit, domain: str, seq_len: int, *, seed: int, batch: int, start: int,
                 first: int, packing: bool, eos_id: int):
        """``start``: the step post-training starts at; ``first``: the domain's sample count before it, so that
        packed post-training continues the domain's order where main training left it (as the mixture sampler
        would: with the run's seed and batch it is the same data)."""
        self.split, self.domain, self.L = split, domain, seq_len
        self.batch, self.start, self.first, self.packing, self.eos = batch, start, first, packing, eos_id
        if packing:
            n = split.num_sequences(seq_len)
        else:  # every document is followed by EOS (midsweep.data.shards)
            ends = np.flatnonzero(np.asarray(split.tokens) == eos_id)
            self.starts, self.ends = np.concatenate([[0], ends[:-1] + 1]), ends + 1
            n = len(ends)
        self.order = EpochOrder(seed, domain, n)

    def items(self, step: int) -> list[int]:
        """The item indices (sequences, or examples without packing) of ``step``'s global batch."""
        k = self.first + (step - self.start) * self.batch
        return [self.order[i] for i in range(k, k + self.batch)]

    def drawn(self, step: int) -> int:
        """Sequences post-training has read before ``step``."""
        return max(0, step - self.start) * self.batch

    def sequence(self, i: int, mask_prompt: bool) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, loss mask) of item ``i``: without packing one example, cut to ``seq_len + 1`` tokens and
        padded with EOS, the padding masked (causal attention: the example's loss does not see the padding)."""
        if self.packing:
            x, mask = self.split.sequence(i, self.L)
            return x, mask if mask_prompt else np.ones_like(mask)
        a = int(self.starts[i])
        b = min(int(self.ends[i]), a + self.L + 1)
        x = np.full(self.L + 1, self.eos, np.int64)
        x[:b - a] = self.split.tokens[a:b]
        mask = np.zeros(self.L + 1, np.uint8)
        has = self.split.loss_mask is not None and mask_prompt
        mask[:b - a] = self.split.loss_mask[a:b] if has else 1
        return x, mask
