"""Tokenize each domain once into memory-mapped token shards, cached on disk under a fingerprint.

Layout of ``<cache>/shards/<domain>-<fingerprint>/``: ``train.bin`` and ``heldout.bin`` (token ids, every
document followed by EOS), ``train.mask.bin``/``heldout.mask.bin`` (uint8 loss mask, only for prompt/response
sources) and ``meta.json``. A shard directory is built under a tmp name and renamed into place while a file
lock is held, so concurrent SLURM tasks or ranks build it once and everyone else reuses it. A domain too large
for one job is tokenized in parts by several (midsweep.data.parts) and written here by the same writer.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from filelock import FileLock

from midsweep.config.data import DataConfig, SourceConfig, resolve_cache_dir
from midsweep.config.errors import raise_if_any
from midsweep.data.sources import DataSourceError, Document, fingerprint_inputs, iter_documents
from midsweep.data.tokenizers import Tokenizer, encode_pairs, load_tokenizer

log = logging.getLogger(__name__)

PREPROCESS_VERSION = 1
"""Bump when the shard format or document handling changes; old shards are then rebuilt."""

_ENCODE_BATCH = 512  # documents per tokenizer call (HF fast tokenizers encode a batch in parallel)
_FLUSH_TOKENS = 1 << 22  # tokens buffered per split before writing to disk


@dataclass
class TokenSplit:
    """One split (train or heldout) of one domain, memory-mapped."""

    tokens: np.ndarray
    """1-D token ids (uint16, or uint32 for vocabularies over 65536); each document is followed by EOS."""
    loss_mask: np.ndarray | None = None
    """Same length, uint8: 0 on prompt tokens of prompt/response documents. None means all ones."""
    num_documents: int = 0

    def num_sequences(self, seq_len: int) -> int:
        """Non-overlapping training sequences of ``seq_len`` (each reads ``seq_len + 1`` tokens)."""
        return max(0, (len(self.tokens) - 1) // seq_len)

    def sequence(self, i: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens ``[i*L, i*L + L + 1)`` as int64 and the matching uint8 loss mask (input x[:-1], target x[1:])."""
        if not 0 <= i < self.num_sequences(seq_len):
            n = self.num_sequences(seq_len)
            raise IndexError(f"sequence {i} out of range: the split has {n} sequences of length {seq_len}")
        window = slice(i * seq_len, i * seq_len + seq_len + 1)
        x = np.asarray(self.tokens[window], dtype=np.int64)
        mask = np.ones(seq_len + 1, np.uint8) if self.loss_mask is None else np.array(self.loss_mask[window])
        return x, mask


@dataclass
class DomainData:
    name: str
    train: TokenSplit
    heldout: TokenSplit
    fingerprint: str
    """Hash of the source config (and file stats), tokenizer and PREPROCESS_VERSION."""
    path: Path
    """Shard directory."""
    cache_hit: bool
    """True if the shards were reused from disk."""
    meta: dict = field(default_factory=dict)
    """Contents of ``meta.json``: token and document counts, dtype, fingerprint inputs."""

    @property
    def content(self) -> str | None:
        """Digest of the tokens and loss masks of both splits: equal for equal data, whatever the fingerprint
        (a copy of the files with new mtimes has another). None for shards built before it was recorded."""
        return self.meta.get("content")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def fingerprint(name: str, source: SourceConfig, tokenizer: Tokenizer) -> tuple[str, dict]:
    """(fingerprint, the inputs it hashes) for a domain's shards."""
    inputs = {
        "data": fingerprint_inputs(source, name),
        "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                      "files_mtime_ns": _dir_mtime(tokenizer.name)},
        "preprocess_version": PREPROCESS_VERSION,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, inputs


def _dir_mtime(path: str) -> int | None:
    """Newest mtime among a local tokenizer directory's files (so edited tokenizer files rebuild shards)."""
    if not os.path.isdir(path):
        return None
    return max((e.stat().st_mtime_ns for e in os.scandir(path) if e.is_file()), default=None)


def shard_path(name: str, source: SourceConfig, tokenizer: Tokenizer, cache_dir: str | Path) -> Path:
    """The shard directory of one domain (it holds ``meta.json`` once built)."""
    return _shard_dir(resolve_cache_dir(str(cache_dir)), name, fingerprint(name, source, tokenizer)[0])


def _shard_dir(root: Path, name: str, fp: str) -> Path:
    return root / "shards" / f"{name}-{fp}"


def prepare_domain(name: str, source: SourceConfig, tokenizer: Tokenizer, cache_dir: str | Path,
                   num_proc: int = 1) -> DomainData:
    """Token shards of one domain: reused from ``cache_dir`` if present, else tokenized once (by ``num_proc``
    processes; the shards are the same for any number) and cached."""
    root = resolve_cache_dir(str(cache_dir))
    return publish(name, source, tokenizer, root,
                   lambda: encode_documents(iter_documents(source, root, name), tokenizer, source, num_proc))


def publish(name: str, source: SourceConfig, tokenizer: Tokenizer, root: Path,
            documents: Callable[[], Iterable[Encoded]]) -> DomainData:
    """The domain's shards, written from ``documents()`` (the encoded documents in source order) unless they
    exist; built under a tmp name and renamed into place while the domain's lock is held."""
    fp, inputs = fingerprint(name, source, tokenizer)
    path = _shard_dir(root, name, fp)
    if (path / "meta.json").exists():
        return _open(name, path, cache_hit=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        if (path / "meta.json").exists():  # built by another process while we waited
            return _open(name, path, cache_hit=True)
        tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            meta = _build(name, source, token_dtype(tokenizer.vocab_size), tokenizer.eos_id, documents(), tmp)
            meta.update(name=name, fingerprint=fp, fingerprint_inputs=inputs)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            shutil.rmtree(path, ignore_errors=True)  # a half-made directory without meta.json
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _open(name, path, cache_hit=False)


def prepare_domains(cfg: DataConfig, names: list[str] | None = None, seq_len: int | None = None,
                    num_proc: int = 1, build: bool = True) -> dict[str, DomainData]:
    """Validate ``cfg``, load its tokenizer once, and prepare the named domains (default: all); with ``seq_len``,
    each split must hold at least one sequence of that length. ``build=False`` (a multi-rank job) never
    tokenizes: missing shards raise MissingShards at once, naming ``midsweep prepare``."""
    raise_if_any(cfg.problems())
    names = list(cfg.domains) if names is None else list(names)
    unknown = [n for n in names if n not in cfg.domains]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; data.domains has {list(cfg.domains)}. "
                         "Fix: use one of those names or add the domain under data.domains")
    tokenizer = load_tokenizer(cfg.tokenizer)
    missing = [n for n in names
               if not (shard_path(n, cfg.domains[n], tokenizer, cfg.cache_dir) / "meta.json").exists()]
    if missing and not build:
        raise MissingShards(missing, resolve_cache_dir(str(cfg.cache_dir)))
    try:
        domains = {n: prepare_domain(n, cfg.domains[n], tokenizer, cfg.cache_dir, num_proc) for n in names}
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise
        root = resolve_cache_dir(str(cfg.cache_dir))
        raise DataSourceError(
            f"cannot write the shard cache {root} to tokenize domain(s) {', '.join(missing)} ({err.strerror}: "
            f"{err.filename}). Fix: point MIDSWEEP_CACHE (data.cache_dir) at a directory you can write, or "
            "tokenize where it is writable (`midsweep prepare`) and use that cache") from None
    if seq_len is not None:
        for d in domains.values():
            _require_a_sequence(d, cfg.domains[d.name], seq_len)
    return domains


_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
"""Errors writing the cache that the user fixes (a read-only, foreign or full file system), not a bug."""


def _require_a_sequence(domain: DomainData, source: SourceConfig, seq_len: int) -> None:
    """Training samples and evaluation read whole sequences of ``seq_len + 1`` tokens: a shorter split has none."""
    for split, data in (("train", domain.train), ("held-out", domain.heldout)):
        if data.num_sequences(seq_len) < 1:
            more = (f"lower data.domains.{domain.name}.heldout_documents (now {source.heldout_documents})"
                    if split == "train" else f"raise data.domains.{domain.name}.heldout_documents "
                    f"(now {source.heldout_documents})")
            raise DataSourceError(
                f"domain {domain.name!r}: the {split} split has {len(data.tokens)} tokens ({data.num_documents} "
                f"documents), fewer than one sequence of model.seq_len + 1 = {seq_len + 1} tokens. Fix: add data "
                f"(or raise max_documents), {more}, or use a shorter model.seq_len")


def cached_train_tokens(cfg: DataConfig) -> dict[str, int | None]:
    """Domain -> training-split tokens of its shards if they are in the cache (None if not)."""
    return {name: counts and counts["tokens"] for name, counts in cached_train_counts(cfg).items()}


def cached_train_counts(cfg: DataConfig) -> dict[str, dict | None]:
    """Domain -> the training split's counts in its shards' meta.json ({"tokens", "documents", ...}) if they are
    in the cache (None if not), found by their fingerprint inputs: no tokenizer is loaded, so previews work
    offline."""
    root = resolve_cache_dir(str(cfg.cache_dir)) / "shards"
    out: dict[str, dict | None] = {}
    for name, source in cfg.domains.items():
        want = json.loads(json.dumps(fingerprint_inputs(source, name), default=str))
        out[name] = None
        for meta_file in sorted(root.glob(f"{glob_escape(name)}-*/meta.json")):
            try:
                meta = json.loads(meta_file.read_text())
                inputs = meta["fingerprint_inputs"]
                if (inputs["data"] == want and inputs["tokenizer"]["name"] == cfg.tokenizer
                        and inputs["preprocess_version"] == PREPROCESS_VERSION):
                    out[name] = meta["train"]
                    break
            except (OSError, ValueError, KeyError):  # a shard being written or from another version
                continue
    return out


class MissingShards(DataSourceError):
    """A job of several ranks found domains without token shards: tokenizing them on one rank while the others
    wait at a distributed barrier would run into its timeout, so the job stops before it starts."""

    def __init__(self, domains: list[str], cache_dir: Path):
        self.domains = domains
        super().__init__(
            f"no token shards in {cache_dir} for domain(s) {', '.join(domains)}, and this job has several ranks. "
            "Fix: run `midsweep prepare` with the same overrides first (it tokenizes every domain of the config, "
            "in parallel; add --slurm slurm_cpu to run it as a CPU job), then resubmit")


class _SplitWriter:
    """Appends documents' tokens (and loss mask) to ``<split>.bin`` / ``<split>.mask.bin`` in large writes,
    hashing what it writes."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, eos_id: int, with_mask: bool):
        self.dtype, self.eos = dtype, np.array([eos_id], dtype)
        self.tok_fh = open(directory / f"{split}.bin", "wb")
        self.mask_fh = open(directory / f"{split}.mask.bin", "wb") if with_mask else None
        self.toks: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        # one hash per file: the digest does not depend on how writes interleave
        self.tok_hash, self.mask_hash = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
        self.buffered = self.tokens = self.documents = 0

    def add(self, prompt_ids, text_ids) -> None:
        p, t = np.asarray(prompt_ids, self.dtype), np.asarray(text_ids, self.dtype)
        self.toks += [p, t, self.eos]
        if self.mask_fh:
            self.masks += [np.zeros(len(p), np.uint8), np.ones(len(t) + 1, np.uint8)]
        n = len(p) + len(t) + 1
        self.buffered += n
        self.tokens += n
        self.documents += 1
        if self.buffered >= _FLUSH_TOKENS:
            self.flush()

    def flush(self) -> None:
        for parts, fh, digest in ((self.toks, self.tok_fh, self.tok_hash),
                                  (self.masks, self.mask_fh, self.mask_hash)):
            if parts:
                block = np.concatenate(parts)
                block.tofile(fh)
                digest.update(block)
        self.toks, self.masks, self.buffered = [], [], 0

    def close(self) -> dict:
        self.flush()
        self.tok_fh.close()
        if self.mask_fh:
            self.mask_fh.close()
        return {"tokens": self.tokens, "documents": self.documents,
                "digest": self.tok_hash.hexdigest() + self.mask_hash.hexdigest()}


@dataclass(frozen=True)
class Encoded:
    """One document, tokenized: its identity for de-duplication, and its prompt and text token ids."""

    key: bytes
    prompt: Sequence[int]
    text: Sequence[int]


def document_key(doc: Document) -> bytes:
    """What makes two documents copies of each other (a training copy of a held-out document is dropped)."""
    return hashlib.blake2b((doc.prompt + "\0" + doc.text).encode("utf-8", "replace"), digest_size=16).digest()


def _batched(docs: Iterable[Document], size: int) -> Iterable[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_documents(docs: Iterable[Document], tokenizer: Tokenizer, source: SourceConfig,
                     num_proc: int = 1) -> Iterator[Encoded]:
    """``docs`` tokenized (by ``num_proc`` processes), in their order; read only as far as they are consumed."""
    pair = source.prompt_field is not None
    read: deque[list[Document]] = deque()  # batches handed to the encoder and not yielded yet, in order

    def strings() -> Iterator[tuple[list[str], list[str]]]:
        for batch in _batched(docs, _ENCODE_BATCH):
            read.append(batch)
            yield ([d.prompt for d in batch] if pair else []), [d.text for d in batch]

    for prompts, texts in encode_pairs(tokenizer, strings(), num_proc):
        for doc, p, t in zip(read.popleft(), prompts, texts):
            yield Encoded(document_key(doc), p, t)


def _build(name: str, source: SourceConfig, dtype: np.dtype, eos_id: int, documents: Iterable[Encoded],
           out: Path) -> dict:
    """Write the encoded ``documents`` into ``out``: the first ``heldout_documents`` to heldout, the rest to
    train (less copies of held-out documents), until ``max_tokens`` training tokens."""
    start = time.time()
    pair = source.prompt_field is not None
    heldout = _SplitWriter(out, "heldout", dtype, eos_id, pair)
    train = _SplitWriter(out, "train", dtype, eos_id, pair)
    heldout_keys: set[bytes] = set()  # train never sees a copy of a held-out document
    duplicates = 0
    cap = source.max_tokens if source.max_tokens is not None else float("inf")
    for doc in documents:
        if heldout.documents < source.heldout_documents:
            heldout_keys.add(doc.key)
            heldout.add(doc.prompt, doc.text)
        elif doc.key in heldout_keys:
            duplicates += 1
        else:
            train.add(doc.prompt, doc.text)
            if train.tokens >= cap:  # stop reading (a streamed source is never read further)
                break
    counts = {"heldout": heldout.close(), "train": train.close()}
    if counts["heldout"]["documents"] == 0:
        raise DataSourceError(f"domain {name!r}: the source has no non-empty documents. Fix: check "
                              f"data.domains.{name} (name, data_files, text_field, split)")
    if counts["train"]["documents"] == 0:
        raise DataSourceError(
            f"domain {name!r}: all {counts['heldout']['documents']} documents went to the held-out split. Fix: lower "
            f"data.domains.{name}.heldout_documents (now {source.heldout_documents}) or add data")
    share = counts["heldout"]["documents"] / (counts["heldout"]["documents"] + counts["train"]["documents"])
    if share > 0.25:
        log.warning("domain %s: %.0f%% of documents are held out; consider lowering heldout_documents",
                    name, 100 * share)
    log.info("domain %s: %d train / %d heldout tokens in %.1fs", name, counts["train"]["tokens"],
             counts["heldout"]["tokens"], time.time() - start)
    content = hashlib.blake2b((dtype.name + counts["train"]["digest"] + counts["heldout"]["digest"]).encode(),
                              digest_size=8).hexdigest()
    return {**counts, "content": content, "dtype": dtype.name, "has_mask": pair, "duplicates_dropped": duplicates,
            "preprocess_version": PREPROCESS_VERSION, "build_seconds": round(time.time() - start, 3)}


def _open(name: str, path: Path, cache_hit: bool) -> DomainData:
    meta = json.loads((path / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    splits = {}
    for split in ("train", "heldout"):
        n = meta[split]["tokens"]
        tokens = _memmap(path / f"{split}.bin", dtype, n)
        mask = _memmap(path / f"{split}.mask.bin", np.dtype(np.uint8), n) if meta["has_mask"] else None
        splits[split] = TokenSplit(tokens, mask, meta[split]["documents"])
    return DomainData(name, splits["train"], splits["heldout"], meta["fingerprint"], path, cache_hit, meta)


def _memmap(file: Path, dtype: np.dtype, count: int) -> np.ndarray:
    size = file.stat().st_size if file.exists() else -1
    if size != count * dtype.itemsize:
        raise DataSourceError(f"corrupt token shard {file}: {size} bytes, expected {count * dtype.itemsize}. "
                              f"Fix: delete {file.parent} and rerun to rebuild it")
    return np.memmap(file, dtype=dtype, mode="r") if count else np.zeros(0, dtype)
