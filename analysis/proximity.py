"""Distance between domain corpora: Jensen-Shannon divergence of add-k smoothed unigram and bigram token
distributions (the mean of the two, in bits, 0 = identical, 1 = disjoint). The proximity advantage of a
midtraining corpus is dist(general -> target) - dist(midtrain -> target): positive when the midtraining
data sits closer to the target than general data does.

A corpus is a token array, a ``.txt`` file or ``.jsonl`` file with a ``text`` field (UTF-8 bytes as tokens),
or a token shard directory (``train.bin`` memmap next to ``meta.json`` naming its ``dtype``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MAX_TOKENS = 5_000_000  # a corpus is read up to this many tokens: plenty for bigram statistics


def load_tokens(source, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Tokens of a corpus (see module doc) as an int64 array of at most ``max_tokens``."""
    if isinstance(source, np.ndarray):
        return source[:max_tokens].astype(np.int64)
    path = Path(source)
    if path.is_dir():
        meta_path, bin_path = path / "meta.json", path / "train.bin"
        if not meta_path.exists() or not bin_path.exists():
            raise FileNotFoundError(f"{path} is not a token shard directory (needs train.bin and meta.json); "
                                    "pass a shard directory, a .txt or a .jsonl file")
        dtype = np.dtype(json.loads(meta_path.read_text()).get("dtype", "uint16"))
        return np.asarray(np.memmap(bin_path, dtype=dtype, mode="r")[:max_tokens], dtype=np.int64)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} not found: pass an existing .txt, .jsonl or shard directory")
    if path.suffix == ".jsonl":
        chunks, n = [], 0
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    text = json.loads(line).get("text", "")
                    chunks.append(text.encode("utf-8") + b"\n")
                    n += len(chunks[-1])
                    if n >= max_tokens:
                        break
        data = b"".join(chunks)
    elif path.suffix == ".txt":
        with path.open("rb") as f:
            data = f.read(max_tokens)
    else:
        raise ValueError(f"corpus {path}: unsupported file type {path.suffix!r}; use .txt, .jsonl (text field) "
                         "or a shard directory")
    return np.frombuffer(data[:max_tokens], dtype=np.uint8).astype(np.int64)


def ngram_counts(tokens: np.ndarray, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted n-gram codes, counts) for n = 1 or 2; a bigram (a, b) is coded a * vocab + b, so two
    corpora compared must use the same ``vocab`` (> every token)."""
    if n == 1:
        return np.unique(tokens, return_counts=True)
    return np.unique(tokens[:-1] * np.int64(vocab) + tokens[1:], return_counts=True)


def js_divergence(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: float = 0.01) -> float:
    """Jensen-Shannon divergence (bits) of two sparse count tables, add-``k`` smoothed over their union."""
    keys = np.union1d(a[0], b[0])
    p = np.full(len(keys), k)
    q = np.full(len(keys), k)
    p[np.searchsorted(keys, a[0])] += a[1]
    q[np.searchsorted(keys, b[0])] += b[1]
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def distance(x, y, max_tokens: int = MAX_TOKENS) -> float:
    """Mean of the unigram and bigram Jensen-Shannon divergences between corpora ``x`` and ``y``."""
    tx, ty = load_tokens(x, max_tokens), load_tokens(y, max_tokens)
    if len(tx) < 2 or len(ty) < 2:
        raise ValueError("a corpus has fewer than 2 tokens: proximity needs some text in each corpus")
    vocab = int(max(tx.max(), ty.max())) + 1
    return float(np.mean([js_divergence(ngram_counts(tx, n, vocab), ngram_counts(ty, n, vocab)) for n in (1, 2)]))


def proximity_table(corpora: dict, target: str, general: str = "general", max_tokens: int = MAX_TOKENS) -> pd.DataFrame:
    """For each corpus other than ``target``: its distance to the target and, against the ``general``
    corpus, its proximity advantage dist(general -> target) - dist(corpus -> target)."""
    if target not in corpora:
        raise KeyError(f"no corpus named {target!r}: pass it as {target}=PATH")
    dist = {name: distance(src, corpora[target], max_tokens) for name, src in corpora.items() if name != target}
    ref = dist.get(general, np.nan)
    return pd.DataFrame({"corpus": list(dist), "distance_to_target": list(dist.values()),
                         "proximity_advantage": [ref - d for d in dist.values()]})
