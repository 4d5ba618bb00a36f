"""Which training sequence every global sample index reads.

The domain of sample ``g`` is a pure function of (seed, g, the mixture weights at g's step): a scrambled
low-discrepancy (Weyl) sequence ``u_g`` picks the domain whose cumulative-weight interval holds it, so every
window of samples matches the target shares closely and two runs whose schedules agree up to a step draw
the same domains up to it. Within a domain, its k-th sample reads sequence ``perm_epoch(k mod N)`` of a
per-(seed, domain, epoch) permutation. The only state is the next sample index and the per-domain counts
(lingua-style: ``state()`` / ``load_state()``), saved in every checkpoint.
"""
from __future__ import annotations

import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: a full-period Weyl increment


def _seed_offset(seed: int) -> np.uint64:
    x = (seed + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF  # splitmix64 of the seed
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(x ^ (x >> 31))


def uniforms(seed: int, start: int, count: int) -> np.ndarray:
    """u_g in [0, 1) for g in [start, start + count)."""
    g = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = g * _GOLDEN + _seed_offset(seed)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class EpochOrder:
    """The k-th sample of one domain of ``n`` items reads item ``perm_epoch(k mod n)`` of a per-(seed, domain,
    epoch) permutation; one epoch's permutation is kept at a time."""

    def __init__(self, seed: int, name: str, n: int):
        self.seed, self.name, self.n = seed, name, n
        self._epoch, self._perm = -1, None

    def __getitem__(self, k: int) -> int:
        epoch = k // self.n
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(self.name.encode()), epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.n)
        return int(self._perm[k % self.n])


class MixtureSampler:
    """Global sample index -> (domain, sequence index in that domain's training split)."""

    def __init__(self, schedule, sizes: dict[str, int], seed: int, global_batch: int):
        """``schedule`` has ``domains`` and ``vector_at(step)``; ``sizes`` maps domain -> training sequences."""
        self.schedule, self.sizes, self.seed, self.global_batch = schedule, sizes, seed, global_batch
        self.domains = list(schedule.domains)
        self.next_sample = 0
        self.counts = {d: 0 for d in self.domains}
        self._orders = {d: EpochOrder(seed, d, sizes[d]) for d in self.domains}

    def domain_ids(self, step: int) -> np.ndarray:
        """Index into ``self.domains`` of each sample of ``step``'s global batch."""
        cum = np.cumsum(self.schedule.vector_at(step))
        u = uniforms(self.seed, step * self.global_batch, self.global_batch)
        return np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(self.domains) - 1)

    def next_batch(self, step: int) -> list[tuple[str, int]]:
        """(domain, sequence index) of each sample of ``step``'s global batch; advances the state."""
        if self.next_sample != step * self.global_batch:
            raise RuntimeError(f"sampler is at sample {self.next_sample}, asked for step {step}; load_state() first")
        out = []
        for i in self.domain_ids(step):
            name = self.domains[i]
            out.append((name, self._orders[name][self.counts[name]]))
            self.counts[name] += 1
        self.next_sample += self.global_batch
        return out

    def state(self) -> dict:
        return {"next_sample": self.next_sample, "counts": dict(self.counts)}

    def load_state(self, state: dict) -> None:
        self.next_sample = int(state["next_sample"])
        self.counts = {d: int(state["counts"].get(d, 0)) for d in self.domains}
