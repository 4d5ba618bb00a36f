"""Tokenizers: UTF-8 bytes by default (no download), or any Hugging Face tokenizer by name or path."""
from __future__ import annotations

import multiprocessing
import os
import socket
from collections import deque
from typing import Iterable, Iterator, Protocol, Sequence
from urllib.parse import urlparse

import numpy as np


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded or used; the message names it and the fix."""


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int] | np.ndarray: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int] | np.ndarray]: ...

    def decode(self, ids) -> str: ...


class ByteTokenizer:
    """Ids are the UTF-8 bytes of the text; 0 (NUL, stripped from input) marks the end of a document."""

    name = "byte"
    vocab_size = 256
    eos_id = 0

    def encode(self, text: str) -> np.ndarray:
        data = text.encode("utf-8", errors="replace")
        if b"\0" in data:
            data = data.replace(b"\0", b"")
        return np.frombuffer(data, dtype=np.uint8)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``transformers`` tokenizer; encodes without special tokens, and uses its EOS to end documents."""

    def __init__(self, name: str):
        try:
            self.tok = _from_pretrained(name)
        except (OSError, ValueError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]  # one line: HF's messages run on
            raise TokenizerError(f"cannot load tokenizer {name!r} ({why}). Fix: set data.tokenizer to 'byte', a local "
                                 "tokenizer directory, or a hub name available offline (HF cache; download it once "
                                 "with network, e.g. on a login node)") from e
        eos = next((t for t in (self.tok.eos_token_id, self.tok.sep_token_id, self.tok.pad_token_id) if t is not None),
                   None)
        if eos is None:
            raise TokenizerError(f"tokenizer {name!r} has no eos/sep/pad token to end documents with. "
                             "Fix: add an eos_token to its tokenizer_config.json, or use another tokenizer")
        self.name, self.vocab_size, self.eos_id = name, len(self.tok), int(eos)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)))


HUB_PROBE_S = 5.0
"""How long to wait for the hub's host to answer before a tokenizer missing from the HF cache is reported."""


def _from_pretrained(name: str):
    """The tokenizer from a local directory or the HF cache; the hub is asked only when it answers. Without
    network, transformers would retry each file for about a minute, logging every retry, before failing."""
    from transformers import AutoTokenizer  # lazy: importing transformers costs seconds

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        if os.path.isdir(name):
            raise
    unreachable = _hub_unreachable()
    if unreachable:
        raise OSError(f"it is not in the HF cache and {unreachable}")
    return AutoTokenizer.from_pretrained(name)


def _hub_unreachable() -> str | None:
    """Why the hub cannot be asked (offline mode, no connection to its host), or None. Behind a proxy the host
    is not probed (the proxy decides)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=HUB_PROBE_S).close()
    except OSError as err:
        return f"the hub ({url.hostname}) cannot be reached ({err})"
    return None


def load_tokenizer(name: str) -> Tokenizer:
    """``"byte"`` -> :class:`ByteTokenizer`; anything else -> ``AutoTokenizer.from_pretrained(name)``."""
    return ByteTokenizer() if name == "byte" else HFTokenizer(name)


def encode_pairs(tokenizer: Tokenizer, batches: Iterable[tuple[list[str], list[str]]], num_proc: int = 1
                 ) -> Iterator[tuple[list, list]]:
    """(prompt ids, text ids) of each batch of (prompts, texts), in input order. An empty prompt list means
    plain documents (no prompts). With ``num_proc > 1``, worker processes (spawned, each loading the tokenizer
    by name once) encode while this process reads; at most ``2 * num_proc`` batches are in flight, so a
    streamed source is never read far ahead of what is written."""
    if num_proc <= 1:
        yield from (_encode_pair(tokenizer, batch) for batch in batches)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once a Rust tokenizer has started its threads
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer.name,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_encode_in_worker, (batch,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _encode_pair(tokenizer: Tokenizer, batch: tuple[list[str], list[str]]) -> tuple[list, list]:
    prompts, texts = batch
    return (tokenizer.encode_batch(prompts) if prompts else [()] * len(texts)), tokenizer.encode_batch(texts)


_worker_tokenizer: Tokenizer | None = None


def _init_worker(name: str) -> None:
    global _worker_tokenizer
    # One process per core already: a tokenizer's own thread pool would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = load_tokenizer(name)


def _encode_in_worker(batch: tuple[list[str], list[str]]) -> tuple[list, list]:
    prompts, texts = _encode_pair(_worker_tokenizer, batch)
    # numpy arrays pickle far faster than lists of Python ints
    return [np.asarray(p, np.int32) for p in prompts], [np.asarray(t, np.int32) for t in texts]
