"""Post-training's data: which items of the post-training domain each post-training step reads, and their
token sequences, packed (full sequences of the split) or one padded example per sequence.

The order is a pure function of (``posttrain.seed``, the step): post-training has no state of its own to save,
and runs that differ in it share their whole main training.
"""
from __future__ import annotations

import numpy as np

from midsweep.config import RunConfig
from midsweep.data.sampler import EpochOrder
from midsweep.data.shards import TokenSplit, cached_train_counts


def epoch_items(tokens: int, documents: int, seq_len: int, packing: bool) -> int:
    """Items of one pass over a split of ``tokens`` tokens and ``documents`` examples: its sequences of
    ``seq_len`` with packing (TokenSplit.num_sequences), else its examples."""
    return max(0, (tokens - 1) // seq_len) if packing else documents


def resolve_epochs(run: RunConfig, counts: dict | None = None) -> RunConfig:
    """``run`` with its post-training split's size, so that ``posttrain.epochs`` gives a step count. ``counts``:
    the split's {"tokens", "documents"} (a DomainData's ``meta["train"]``); without them, those of its shards'
    meta.json if they are prepared (nothing is loaded: previews work offline), else ``run`` unchanged
    (``run.posttrain_known`` stays False)."""
    if not run.posttrain.enabled or run.posttrain.epochs is None:
        return run
    counts = counts or cached_train_counts(run.data).get(run.posttrain.domain)
    if counts is None:
        return run
    return run.with_posttrain_items(epoch_items(counts["tokens"], counts["documents"], run.model.seq_len,
                                                run.posttrain.packing))


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
