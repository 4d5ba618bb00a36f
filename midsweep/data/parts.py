"""A large domain tokenized by several jobs at once (``midsweep prepare --slurm``, an array of CPU jobs), into
shards byte-identical to a one-process preparation.

Part ``k`` of ``K`` tokenizes the documents whose index in source order is ``k`` modulo ``K`` (every part reads
the source; tokenizing is what costs) into ``<cache>/shards/.parts/<domain>-<fingerprint>/<k>of<K>/``: their
token ids, each document's prompt and text lengths and its de-duplication key. It stops once it holds its share
of ``max_tokens`` and a margin, or at the end of the source. The merge then walks the parts round-robin, which
is the source order again, through the same writer as a one-process preparation (held-out documents first,
copies of them dropped, the cap), so the shards are the same bytes.
"""
from __future__ import annotations

import json
import os
import shutil
from itertools import count
from pathlib import Path
from typing import Iterator

import numpy as np

from midsweep.config.data import SourceConfig, resolve_cache_dir
from midsweep.data.shards import DomainData, Encoded, encode_documents, publish, shard_path, token_dtype
from midsweep.data.sources import DataSourceError, iter_documents
from midsweep.data.tokenizers import Tokenizer

MARGIN = 0.05
"""Share of its part of ``max_tokens`` a part tokenizes beyond it: parts hold nearly equal shares of any stretch
of documents, so this covers where the cap falls."""

EXTRA_DOCUMENTS = 16
"""Documents a part tokenizes after its share and margin (a cap of a few documents per part)."""

_KEY_BYTES = 16


def parts_dir(name: str, source: SourceConfig, tokenizer: Tokenizer, cache_dir: str | Path) -> Path:
    """Where the parts of a domain's shards are written until they are merged."""
    shard = shard_path(name, source, tokenizer, cache_dir)
    return shard.parent / ".parts" / shard.name


def prepare_part(name: str, source: SourceConfig, tokenizer: Tokenizer, cache_dir: str | Path, part: int,
                 parts: int, num_proc: int = 1) -> Path:
    """Tokenize part ``part`` of ``parts`` of the domain (kept if already written); returns its directory."""
    out = parts_dir(name, source, tokenizer, cache_dir) / f"{part}of{parts}"
    if (out / "part.json").exists():
        return out
    root = resolve_cache_dir(str(cache_dir))
    mine = (d for i, d in enumerate(iter_documents(source, root, name)) if i % parts == part)
    budget = source.max_tokens / parts * (1 + MARGIN) if source.max_tokens is not None else float("inf")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = token_dtype(tokenizer.vocab_size)
    lengths, tokens, documents, extra, exhausted = [], 0, 0, 0, True
    with open(tmp / "tokens.bin", "wb") as toks, open(tmp / "keys.bin", "wb") as keys:
        for doc in encode_documents(mine, tokenizer, source, num_proc):
            np.asarray(doc.prompt, dtype).tofile(toks)
            np.asarray(doc.text, dtype).tofile(toks)
            keys.write(doc.key)
            lengths.append((len(doc.prompt), len(doc.text)))
            # the held-out documents (the first ones of the source) do not count against the cap
            if documents * parts + part >= source.heldout_documents:
                tokens += len(doc.prompt) + len(doc.text) + 1
            documents += 1
            extra += tokens >= budget
            if extra > EXTRA_DOCUMENTS:
                exhausted = False
                break
    np.asarray(lengths, np.int64).reshape(-1, 2).tofile(tmp / "lengths.bin")
    (tmp / "part.json").write_text(json.dumps({"documents": documents, "exhausted": exhausted, "dtype": dtype.name}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def merge_parts(name: str, source: SourceConfig, tokenizer: Tokenizer, cache_dir: str | Path,
                parts: int) -> DomainData:
    """The domain's shards from its ``parts`` parts (all written), then the parts are removed."""
    where = parts_dir(name, source, tokenizer, cache_dir)
    dirs = [where / f"{k}of{parts}" for k in range(parts)]
    missing = [d.name for d in dirs if not (d / "part.json").exists()]
    if missing:
        raise DataSourceError(f"domain {name!r}: part(s) {', '.join(missing)} of {where} are not written. Fix: rerun "
                              "`midsweep prepare --slurm` with the same overrides (written parts are kept)")
    root = resolve_cache_dir(str(cache_dir))
    data = publish(name, source, tokenizer, root, lambda: _interleave(name, dirs))
    shutil.rmtree(where, ignore_errors=True)
    return data


def _interleave(name: str, dirs: list[Path]) -> Iterator[Encoded]:
    """The parts' documents in source order: document ``i`` is the next one of part ``i % len(dirs)``."""
    readers = [_read(d) for d in dirs]
    for i in count():
        doc = next(readers[i % len(dirs)], None)
        if doc is None:
            meta = json.loads((dirs[i % len(dirs)] / "part.json").read_text())
            if not meta["exhausted"]:  # the part stopped early, not the source
                raise DataSourceError(
                    f"domain {name!r}: part {dirs[i % len(dirs)].name} ended before the token cap was reached. "
                    f"Fix: delete {dirs[0].parent} and rerun `midsweep prepare --slurm` with more parts (--parts)")
            return
        yield doc


def _read(part: Path) -> Iterator[Encoded]:
    meta = json.loads((part / "part.json").read_text())
    file = part / "tokens.bin"  # mapped, not read: a part of a large domain holds billions of tokens
    tokens = np.memmap(file, np.dtype(meta["dtype"]), mode="r") if file.stat().st_size else np.zeros(0, np.uint16)
    lengths = np.fromfile(part / "lengths.bin", np.int64).reshape(-1, 2)
    with open(part / "keys.bin", "rb") as keys:
        at = 0
        for p, t in lengths.tolist():
            yield Encoded(keys.read(_KEY_BYTES), tokens[at:at + p], tokens[at + p:at + p + t])
            at += p + t


__all__ = ["merge_parts", "parts_dir", "prepare_part"]
