"""A domain's ``SourceConfig`` -> a stream of documents (built-in corpus, HF dataset, or local files)."""
from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

from midsweep.config.data import SourceConfig, file_builder
from midsweep.data import corpora

PROMPT_SEPARATOR = "\n"
"""Appended to the prompt of a prompt/response document; it counts as prompt (no loss on it)."""

_BATCH = 1000


class DataSourceError(ValueError):
    """A domain's data cannot be read; the message names the domain, the data and the fix."""


@dataclass(frozen=True)
class Document:
    text: str
    """Trained-on text: the whole document, or the response of a prompt/response document."""
    prompt: str = ""
    """Prompt (separator included) before ``text``; in the token stream but masked out of the loss."""


def resolve_files(source: SourceConfig, domain: str) -> list[str]:
    """Sorted, de-duplicated absolute paths matched by ``source.data_files``."""
    paths = set()
    for pattern in source.data_files:
        found = glob.glob(os.path.expanduser(pattern))
        if not found:
            raise DataSourceError(f"domain {domain!r}: no file matches {pattern!r} (cwd {os.getcwd()}). Fix: correct "
                                  f"data.domains.{domain}.data_files or create the file")
        paths.update(os.path.abspath(p) for p in found)
    return sorted(paths)


def fingerprint_inputs(source: SourceConfig, domain: str) -> dict:
    """Everything that decides a source's documents: the config, plus file stats or the corpus version."""
    inputs: dict = {"source": dataclasses.asdict(source)}
    if source.kind == "builtin":
        inputs["corpus_version"] = corpora.VERSION
    elif source.kind == "files":
        inputs["files"] = [(p, os.path.getsize(p), os.stat(p).st_mtime_ns) for p in resolve_files(source, domain)]
    elif os.path.exists(source.name):  # a local HF dataset directory or script: its edits must invalidate shards
        inputs["local_mtime_ns"] = os.stat(source.name).st_mtime_ns
    return inputs


def iter_documents(source: SourceConfig, cache_dir: Path, domain: str) -> Iterator[Document]:
    """The domain's documents in source order, empty ones skipped, at most ``max_documents``."""
    pair = source.prompt_field is not None
    fields = [source.prompt_field, source.response_field] if pair else [source.text_field]
    docs = (_document(values, pair) for values in _rows(source, Path(cache_dir), domain, fields))
    return islice((d for d in docs if d is not None), source.max_documents)


def _document(values: tuple, pair: bool) -> Document | None:
    text = values[-1]
    if text is None or text == "":
        return None
    if pair:
        return Document(text=str(text), prompt=str(values[0] or "") + PROMPT_SEPARATOR)
    return Document(text=str(text))


def _rows(source: SourceConfig, cache_dir: Path, domain: str, fields: list[str]) -> Iterator[tuple]:
    for batch in _batches(source, cache_dir, domain):
        missing = [f for f in fields if f not in batch]
        if missing:
            raise DataSourceError(
                f"domain {domain!r}: records have no field(s) {missing}; they have {sorted(batch)}. Fix: set "
                f"data.domains.{domain}.text_field (or prompt_field/response_field) to one of those")
        yield from zip(*(batch[f] for f in fields))


def _batches(source: SourceConfig, cache_dir: Path, domain: str) -> Iterator[dict[str, list]]:
    """Column batches (field -> values) of the source's records."""
    if source.kind == "builtin":
        records = corpora.read_corpus(source.name, cache_dir)
        while chunk := list(islice(records, _BATCH)):
            yield {k: [r.get(k) for r in chunk] for k in chunk[0]}
        return
    if source.kind == "files":
        ds = _load(domain, f"files {source.data_files}", _builder(source, domain),
                   data_files=resolve_files(source, domain), split="train", streaming=source.streaming,
                   cache_dir=str(cache_dir / "hf_datasets"))
    elif source.kind == "hf":
        ds = _load_hf(source, domain)
    else:
        raise DataSourceError(f"domain {domain!r}: unknown source kind {source.kind!r}. Fix: use builtin, hf or files")
    yield from ds.iter(batch_size=_BATCH)


def _builder(source: SourceConfig, domain: str) -> str:
    builders = {file_builder(p) for p in source.data_files}
    if len(builders) != 1 or None in builders:
        raise DataSourceError(f"domain {domain!r}: unsupported or mixed data_files {source.data_files}. Fix: use "
                              "one of .jsonl, .json, .parquet or .txt per domain")
    return builders.pop()


def _load_hf(source: SourceConfig, domain: str):
    path = Path(source.name)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():  # Dataset.save_to_disk()
        from datasets import DatasetDict, load_from_disk

        if source.revision:
            raise DataSourceError(f"domain {domain!r}: {path} is a dataset saved to disk, which has no revisions. "
                                  f"Fix: remove data.domains.{domain}.revision")
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if source.split not in ds:
                raise DataSourceError(f"domain {domain!r}: {path} has splits {list(ds)}, not {source.split!r}. "
                                      f"Fix: set data.domains.{domain}.split to one of them")
            ds = ds[source.split]
        return ds
    return _load(domain, f"HF dataset {source.name!r} (subset={source.subset}, split={source.split}"
                 + (f", revision={source.revision})" if source.revision else ")"),
                 source.name, source.subset, split=source.split, streaming=source.streaming,
                 data_files=source.data_files or None, revision=source.revision)


def _load(domain: str, what: str, *args, **kwargs):
    """``datasets.load_dataset`` with failures re-raised naming the domain and the fix."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any loader failure gets the same actionable message
        why = (str(e).strip().splitlines() or [""])[0]  # one line: loader messages run on
        if "scripts are no longer supported" in why:  # datasets >= 4 runs no loading scripts, whatever we pass
            fix = ("this dataset is a loading script, which datasets >= 4 does not run: point "
                   f"data.domains.{domain}.name at a copy of it stored as parquet/json on the hub, or download its "
                   "data and use kind=files with data_files")
        else:
            fix = (f"check data.domains.{domain} (name/subset/split/data_files); hub datasets must be reachable, or "
                   "already in the HF cache (prepare the shards with `midsweep prepare` where the network is, e.g. a "
                   "login node)")
        raise DataSourceError(f"domain {domain!r}: cannot load {what}: {type(e).__name__}: {why}. Fix: {fix}") from e
