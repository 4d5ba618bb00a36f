"""Data config: where each domain's documents come from, the tokenizer, and the cache directory."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from midsweep.config.errors import Problem, require

BUILTIN_CORPORA: dict[str, str] = {
    "general": "English prose from the Python standard library's docstrings, comments and help topics",
    "code": "Python source files of the standard library, one document per file",
    "math": "generated arithmetic and algebra word problems with worked solutions",
    "target_math": "prompt/response math questions with worked answers (post-training target near `math`)",
    "target_code": "prompt/response: stdlib function signature + docstring -> its body (target near `code`)",
}
"""Built-in offline corpora (made on first use from the local Python install and a seeded generator)."""

PAIR_CORPORA = ("target_math", "target_code")
"""Built-in corpora whose records are ``{"prompt", "response"}`` instead of ``{"text"}``."""

SOURCE_KINDS = ("builtin", "hf", "files")

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
"""Local file extension -> ``datasets`` builder used to read it."""

KNOWN_VOCABULARIES: dict[str, tuple[str, int]] = {
    "byte": ("byte", 256),
    "EleutherAI/pythia-": ("gpt-neox", 50277),
    "EleutherAI/gpt-neox-20b": ("gpt-neox", 50277),
    "gpt2": ("gpt2", 50257),
    "openai-community/gpt2": ("gpt2", 50257),
}
"""Tokenizer or checkpoint name (or name prefix) -> (vocabulary, its size as ``len(tokenizer)``): what the
config knows without loading a tokenizer (cost estimates, matching a pretrained model to ``data.tokenizer``)."""


def known_vocabulary(name: str) -> Optional[tuple[str, int]]:
    """(vocabulary, size) of a tokenizer or hub checkpoint name listed in KNOWN_VOCABULARIES, else None."""
    for prefix, vocab in KNOWN_VOCABULARIES.items():
        if name == prefix or (prefix.endswith(("-", "/")) and name.startswith(prefix)):
            return vocab
    return None


DEFAULT_CACHE_DIR = "${oc.env:MIDSWEEP_CACHE,${oc.env:HOME,/tmp}/.cache/midsweep}"

_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class SourceConfig:
    """Where one domain's documents come from."""

    kind: str = "builtin"
    """``builtin`` (a corpus made offline by midsweep), ``hf`` (``datasets.load_dataset``) or ``files``."""
    name: str = ""
    """Built-in corpus name, or the HF dataset name / local path (first argument of ``load_dataset``)."""
    subset: Optional[str] = None
    """HF dataset config name (second argument of ``load_dataset``)."""
    split: str = "train"
    """Split to read (``kind=hf``; local ``files`` are read whole)."""
    revision: Optional[str] = None
    """Hub revision to read (``kind=hf``): a commit sha, tag or branch. Pin a commit for a study you will publish:
    an unpinned hub dataset is whatever the hub serves when the shards are made, and its edits upstream do not
    change the shards' fingerprint."""
    streaming: bool = False
    """Stream the dataset instead of downloading it whole; needs a cap: ``max_tokens`` or ``max_documents``."""
    data_files: list[str] = field(default_factory=list)
    """For ``kind=files``: paths or globs of ``.jsonl``/``.json``/``.parquet``/``.txt`` (one line = one document).
    With ``kind=hf`` they are passed on to ``load_dataset`` (e.g. ``name=csv``)."""
    text_field: str = "text"
    """Record field holding a plain document."""
    prompt_field: Optional[str] = None
    """With ``response_field``: documents are prompt + response, and the loss skips the prompt tokens."""
    response_field: Optional[str] = None
    """Record field holding the response of a prompt/response document."""
    max_documents: Optional[int] = None
    """Read at most this many documents (held-out ones included)."""
    max_tokens: Optional[int] = None
    """Stop reading once the training split holds this many tokens (held-out documents not counted; the
    document that crosses the cap is kept). The way to take a fixed-size sample of a large streamed dataset."""
    heldout_documents: int = 200
    """The first this-many documents are reserved for held-out evaluation; training never reads them."""

    def problems(self, prefix: str) -> list[Problem]:
        p: list[Problem] = []
        require(p, self.kind in SOURCE_KINDS, f"{prefix}.kind", f"unknown source kind {self.kind!r}",
                f"use one of {', '.join(SOURCE_KINDS)}")
        if self.kind == "builtin":
            p += self._builtin_problems(prefix)
        elif self.kind == "hf":
            require(p, bool(self.name), f"{prefix}.name", "kind=hf needs a dataset name",
                    "set name to a hub dataset (e.g. wikitext) or a local dataset directory")
        elif self.kind == "files":
            p += self._file_problems(prefix)
        require(p, self.revision is None or self.kind == "hf", f"{prefix}.revision",
                f"a revision is read only from a hub dataset, not kind={self.kind}",
                "remove revision, or use kind=hf with a hub dataset name")
        require(p, (self.prompt_field is None) == (self.response_field is None), f"{prefix}.prompt_field",
                "only one of prompt_field/response_field is set", "set both (prompt/response documents) or neither")
        require(p, bool(self.text_field), f"{prefix}.text_field", "text_field is empty",
                "name the record field that holds the text, e.g. text")
        require(p, not self.streaming or self.max_documents is not None or self.max_tokens is not None,
                f"{prefix}.max_tokens", "streaming needs a cap on what is read",
                "set max_tokens (e.g. 2000000000) or max_documents, or streaming=false")
        require(p, self.max_tokens is None or self.max_tokens > 0, f"{prefix}.max_tokens",
                f"must be positive, got {self.max_tokens}", "use a positive token count, or null for no cap")
        require(p, self.heldout_documents >= 1, f"{prefix}.heldout_documents",
                f"must be >= 1, got {self.heldout_documents}", "reserve at least one document, e.g. 200")
        if self.max_documents is not None:
            require(p, self.max_documents > self.heldout_documents, f"{prefix}.max_documents",
                    f"{self.max_documents} leaves no training documents after {self.heldout_documents} held out",
                    f"set max_documents above heldout_documents ({self.heldout_documents})")
        return p

    def _builtin_problems(self, prefix: str) -> list[Problem]:
        p: list[Problem] = []
        if self.name not in BUILTIN_CORPORA:
            require(p, False, f"{prefix}.name", f"unknown built-in corpus {self.name!r}",
                    f"use one of {', '.join(BUILTIN_CORPORA)}, or kind=hf / kind=files for other data")
            return p
        if self.name in PAIR_CORPORA:
            require(p, (self.prompt_field, self.response_field) == ("prompt", "response"), f"{prefix}.prompt_field",
                    f"built-in corpus {self.name} has prompt/response records",
                    "set prompt_field=prompt and response_field=response")
        else:
            require(p, self.prompt_field is None and self.text_field == "text", f"{prefix}.text_field",
                    f"built-in corpus {self.name} has plain text records",
                    "set text_field=text, prompt_field=null, response_field=null")
        return p

    def _file_problems(self, prefix: str) -> list[Problem]:
        p: list[Problem] = []
        key = f"{prefix}.data_files"
        require(p, bool(self.data_files), key, "kind=files needs data_files",
                "list paths or globs, e.g. ['/data/web/*.jsonl']")
        builders = set()
        for pattern in self.data_files:
            builder = file_builder(pattern)
            require(p, builder is not None, key, f"{pattern!r} has an unsupported extension",
                    f"use files ending in {', '.join(FILE_BUILDERS)}")
            builders.add(builder)
            require(p, bool(glob.glob(os.path.expanduser(pattern))), key, f"no file matches {pattern!r}",
                    "fix the path (relative paths are read from the launch directory) or create the file")
        require(p, len(builders) <= 1, key, "data_files mixes formats",
                "use one format per domain (e.g. only .jsonl), or split them into two domains")
        return p


def file_builder(path: str) -> Optional[str]:
    """``datasets`` builder name for a local data file, or None if the extension is unsupported."""
    for ext, builder in FILE_BUILDERS.items():
        if path.endswith(ext):
            return builder
    return None


def _default_domains() -> dict[str, SourceConfig]:
    # Held-out counts are ~5% of each built-in corpus (code has only ~600 files).
    return {
        "general": SourceConfig(name="general", heldout_documents=64),
        "code": SourceConfig(name="code", heldout_documents=32),
        "math": SourceConfig(name="math", heldout_documents=500),
        "target": SourceConfig(name="target_math", prompt_field="prompt", response_field="response",
                               heldout_documents=400),
    }


@dataclass
class DataConfig:
    """Training domains, tokenizer and cache."""

    domains: dict[str, SourceConfig] = field(default_factory=_default_domains)
    """Domain name -> source. Names are used in mixture configs and cache paths."""
    tokenizer: str = "byte"
    """``byte`` (256 UTF-8 byte ids, no download) or an HF tokenizer name/path for ``AutoTokenizer``."""
    vocab_size: Optional[int] = None
    """Vocabulary size of ``tokenizer`` (``len(tokenizer)``), for cost estimates without loading it. None: known for
    ``byte`` and the hub tokenizers of KNOWN_VOCABULARIES; any other tokenizer needs it."""
    cache_dir: str = DEFAULT_CACHE_DIR
    """Built corpora and token shards live here; share it between runs (and SLURM tasks) to tokenize once."""

    def resolved_vocab_size(self) -> Optional[int]:
        """The vocabulary size of ``tokenizer`` from the config alone; None if neither declared nor known."""
        known = known_vocabulary(self.tokenizer)
        return self.vocab_size if self.vocab_size is not None else known[1] if known else None

    def problems(self, prefix: str = "data") -> list[Problem]:
        p: list[Problem] = []
        require(p, bool(self.domains), f"{prefix}.domains", "no domains configured",
                "add at least one domain, e.g. data.domains.general={kind: builtin, name: general}")
        for name, source in self.domains.items():
            require(p, bool(_DOMAIN_NAME.match(name)), f"{prefix}.domains.{name}",
                    "domain names are used in file names", "use letters, digits, '_', '-' or '.' only")
            p += source.problems(f"{prefix}.domains.{name}")
        require(p, bool(self.tokenizer), f"{prefix}.tokenizer", "tokenizer is empty",
                "use byte, or an HF tokenizer name/path such as gpt2")
        known = known_vocabulary(self.tokenizer)
        if self.vocab_size is not None:
            require(p, self.vocab_size > 0 and (known is None or known[1] == self.vocab_size), f"{prefix}.vocab_size",
                    f"{self.vocab_size} is not the size of tokenizer {self.tokenizer!r}"
                    + (f" ({known[1]})" if known else ""), "set it to len(tokenizer), or null for a known tokenizer")
        require(p, bool(self.cache_dir), f"{prefix}.cache_dir", "cache_dir is empty",
                "set a writable directory shared by all runs, e.g. /scratch/$USER/midsweep-cache")
        return p


def resolve_cache_dir(cache_dir: str) -> Path:
    """The cache directory as a path; resolves ``${oc.env:...}`` when the config did not pass through OmegaConf."""
    if "${" in cache_dir:
        from omegaconf import OmegaConf

        cache_dir = OmegaConf.create({"v": cache_dir}).v
    return Path(os.path.expanduser(cache_dir))
