"""Readable names of runs and of their coordinates, for people (status tables, tracker run names). The run id
stays the key everywhere: these names are only shown."""
from __future__ import annotations


def short_keys(keys: list[str]) -> list[str]:
    """Each dotted key's shortest ending that no other key of ``keys`` shares (``mixture.weight`` -> ``weight``)."""
    def ending(key: str, n: int) -> str:
        return ".".join(key.split(".")[-n:])

    out = []
    for key in keys:
        n = 1
        while n < key.count(".") + 1 and any(ending(o, n) == ending(key, n) for o in keys if o != key):
            n += 1
        out.append(ending(key, n))
    return out


def run_label(coords: dict, overrides: dict, run_id: str) -> str:
    """The coordinates a run's command line (a sweep's point) sets, with short keys and the run id's first
    characters: ``kind=introduce introduce_at=0.3 weight=0.25 [b18a28]``; the run id alone when it sets none."""
    keys = sorted(k for k in coords if k in overrides or k == "mixture.kind" and "mixture" in overrides)
    if not keys:
        return run_id
    parts = [f"{name}={_text(coords[k])}" for k, name in zip(keys, short_keys(keys))]
    return f"{' '.join(parts)} [{run_id[:6]}]"


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
