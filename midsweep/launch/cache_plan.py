"""What the token cache of a sweep needs: the disk its shards take and the time to tokenize them.

A domain's shards hold its training split (the prepared size, else the source's ``max_tokens``) at 2 bytes a
token (4 for vocabularies over 65536), plus a byte a token of loss mask for prompt/response sources. Tokenizing
runs at about TOKENS_PER_CORE_S per CPU core; a domain that one job of ``cores`` cores cannot tokenize within
JOB_SECONDS is prepared by ``midsweep prepare --slurm`` as an array of ``parts`` such jobs.
"""
from __future__ import annotations

import math
from typing import Optional

from midsweep.config import RunConfig
from midsweep.data.shards import token_dtype
from midsweep.launch.epochs import split_sizes

TOKENS_PER_CORE_S = 2.5e5
"""Tokens one CPU core tokenizes per second (a fast HF tokenizer on web text)."""

JOB_SECONDS = 86400
"""The longest a preparation job may run: a domain that would take longer is split into an array."""


def parts(tokens: Optional[int], cores: int) -> int:
    """Array jobs of ``cores`` cores that tokenize ``tokens`` within JOB_SECONDS each (1 if unknown)."""
    if not tokens:
        return 1
    return max(1, math.ceil(tokens / (TOKENS_PER_CORE_S * cores * JOB_SECONDS)))


def domain_bytes(run: RunConfig) -> dict[str, Optional[int]]:
    """Domain -> bytes of its training-split shards (None where the size is unknown until prepared)."""
    itemsize = token_dtype(run.data.resolved_vocab_size() or 1 << 17).itemsize
    out = {}
    for name, (tokens, _) in split_sizes(run).items():
        mask = 1 if run.data.domains[name].prompt_field is not None else 0
        out[name] = None if tokens is None else tokens * (itemsize + mask)
    return out


def report(runs: list[RunConfig]) -> list[str]:
    """Preview lines: the token cache's disk over the distinct data configs of ``runs``, the core-hours to
    tokenize it, and the domains that `midsweep prepare --slurm` splits into an array."""
    seen, total, tokens, unknown, large = set(), 0, 0, [], []
    for run in runs:
        key = (run.data.tokenizer, repr(run.data.domains), run.data.cache_dir)
        if key in seen:
            continue
        seen.add(key)
        sizes = split_sizes(run)
        for name, size in domain_bytes(run).items():
            if size is None:
                unknown.append(name)
                continue
            total, tokens = total + size, tokens + sizes[name][0]
            if parts(sizes[name][0], 1) > 1:
                large.append(f"{name} {sizes[name][0]:.3g}")
    if not seen:
        return []
    line = (f"token cache: {total / 1e9:.3g} GB on disk for {tokens:.3g} tokens"
            + (f" (+ {', '.join(sorted(set(unknown)))}: size unknown until prepared)" if unknown else "")
            + f"; tokenizing takes ~{tokens / TOKENS_PER_CORE_S / 3600:.3g} core-hours at "
              f"{TOKENS_PER_CORE_S:.2g} tokens/s per core")
    lines = [line]
    if large:
        lines.append(f"  over a core-day ({TOKENS_PER_CORE_S * JOB_SECONDS:.3g} tokens): {', '.join(large)} tokens; "
                     "`midsweep prepare --slurm` makes an array of CPU jobs of each one job's cores cannot do in a day")
    return lines
