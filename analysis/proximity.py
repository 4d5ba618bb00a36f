"""Distance between domain corpora: Jensen-Shannon divergence of add-k smoothed unigram and bigram token
distributions (the mean of the two, in bits, 0 = identical, 1 = disjoint). The proximity advantage of a
midtraining corpus is dist(general -> target) - dist(midtrain -> target): positive when the midtraining
data sits closer to the target than general data does.

A corpus is a token array, a ``.txt`` file, a ``.jsonl`` file of ``text`` records or of ``prompt`` /
``response`` records (the built-in target corpus; prompt and response are read) as UTF-8 bytes, or a token
shard directory (``train.bin`` memmap next to ``meta.json`` naming its ``dtype``).

Divergences between finite samples shrink as the samples grow (two halves of one corpus: 0.044 bits at 20k
tokens, 0.002 at 1.9M), so corpora are only compared at equal sample sizes: each corpus is sampled down to
the smallest one's length, in evenly spaced pieces so the sample spans the whole corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MAX_TOKENS = 5_000_000  # a corpus is read up to this many tokens: plenty for bigram statistics
PIECES = 64  # a sample is this many evenly spaced pieces of its corpus


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
            for i, line in enumerate(f):
                if line.strip():
                    chunks.append(record_text(json.loads(line), path, i + 1).encode("utf-8") + b"\n")
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


def record_text(record: dict, path, line: int) -> str:
    """The text of one .jsonl record: ``text``, else ``prompt`` and ``response`` on two lines."""
    if "text" in record:
        return str(record["text"])
    if "prompt" in record or "response" in record:
        return f"{record.get('prompt', '')}\n{record.get('response', '')}"
    raise ValueError(f"{path}:{line}: a record with neither 'text' nor 'prompt'/'response' (keys: "
                     f"{sorted(record)}); proximity reads those fields: convert the corpus or pass a .txt file")


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


def sample(tokens: np.ndarray, n: int) -> np.ndarray:
    """``n`` tokens of ``tokens`` in :data:`PIECES` evenly spaced pieces (all of them when n >= length)."""
    if n >= len(tokens):
        return tokens
    pieces = min(PIECES, n)
    size = n // pieces
    starts = np.linspace(0, len(tokens) - size, pieces).astype(np.int64)
    return np.concatenate([tokens[s:s + size] for s in starts] + [tokens[starts[-1] + size:][:n - size * pieces]])


def distance(x, y, max_tokens: int = MAX_TOKENS) -> float:
    """Mean of the unigram and bigram Jensen-Shannon divergences between corpora ``x`` and ``y``, both
    sampled down to the shorter one's length."""
    tx, ty = load_tokens(x, max_tokens), load_tokens(y, max_tokens)
    n = min(len(tx), len(ty))
    if n < 2:
        raise ValueError("a corpus has fewer than 2 tokens: proximity needs some text in each corpus")
    tx, ty = sample(tx, n), sample(ty, n)
    vocab = int(max(tx.max(), ty.max())) + 1
    return float(np.mean([js_divergence(ngram_counts(tx, k, vocab), ngram_counts(ty, k, vocab)) for k in (1, 2)]))


def proximity_table(corpora: dict, target: str, general: str = "general", max_tokens: int = MAX_TOKENS) -> pd.DataFrame:
    """For each corpus other than ``target``: its distance to the target and, against the ``general``
    corpus, its proximity advantage dist(general -> target) - dist(corpus -> target). Every corpus is cut
    to the length of the shortest (``tokens_compared``), so the distances are comparable."""
    if target not in corpora:
        raise KeyError(f"no corpus named {target!r}: pass it as {target}=PATH")
    tokens = {name: load_tokens(src, max_tokens) for name, src in corpora.items()}
    n = min(len(t) for t in tokens.values())
    dist = {name: distance(sample(t, n), sample(tokens[target], n)) for name, t in tokens.items() if name != target}
    ref = dist.get(general, np.nan)
    return pd.DataFrame({"corpus": list(dist), "distance_to_target": list(dist.values()),
                         "proximity_advantage": [ref - d for d in dist.values()], "tokens_compared": n})
