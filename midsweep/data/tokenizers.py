"""Tokenizers: UTF-8 bytes by default (no download), or any Hugging Face tokenizer by name or path."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


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
        from transformers import AutoTokenizer  # lazy: importing transformers costs seconds

        try:
            self.tok = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load tokenizer {name!r} ({e}). Fix: set data.tokenizer to 'byte', a local "
                             "tokenizer directory, or a hub name available offline (HF cache)") from e
        eos = next((t for t in (self.tok.eos_token_id, self.tok.sep_token_id, self.tok.pad_token_id) if t is not None),
                   None)
        if eos is None:
            raise ValueError(f"tokenizer {name!r} has no eos/sep/pad token to end documents with. "
                             "Fix: add an eos_token to its tokenizer_config.json, or use another tokenizer")
        self.name, self.vocab_size, self.eos_id = name, len(self.tok), int(eos)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)))


def load_tokenizer(name: str) -> Tokenizer:
    """``"byte"`` -> :class:`ByteTokenizer`; anything else -> ``AutoTokenizer.from_pretrained(name)``."""
    return ByteTokenizer() if name == "byte" else HFTokenizer(name)
