"""The prefix store of a sweep: published training prefixes, content-addressed by their prefix key.

Layout (this module is its only owner)::

    SWEEP_DIR/_prefixes/<static>/                  one directory per static key (midsweep.sharing.keys)
        <step>-<key>/                              a published prefix, complete once it has this name:
            checkpoint/                            the publisher's checkpoint files at <step> (hard links)
            metrics.jsonl, train.jsonl             the publisher's rows before <step> (train rows up to it)
            prefix.json                            key, step, publisher, sha256 of every file above
        <step>-<key>.claim                         the run that will publish <step>-<key>, and the SLURM jobs
                                                   of the forks waiting for it (JSON)
        <step>-<key>.lock                          held while an entry is published or repaired
        .tmp-*                                     a publish in progress (renamed into place when complete)

An entry appears by one rename, so a crash while publishing leaves no half-written entry. Its checksums are
checked before a fork uses it; a corrupt entry is removed (a rename first, so no reader sees a half-removed
one). Checkpoint files are hard-linked where the file system allows (no extra disk while the publisher keeps
its own copy), copied elsewhere. Torch-free: the launcher, ``midsweep gc`` and the engine all use it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from filelock import FileLock, Timeout

from midsweep import rundir

log = logging.getLogger(__name__)

STORE = "_prefixes"
"""The store's directory inside a sweep directory (not a run id, so run_dirs() never lists it)."""
META = "prefix.json"
"""An entry's description; the same name in a forked run's directory records where it forked from."""
CHECKPOINT = "checkpoint"
_NAME = re.compile(r"^(\d{8})-([0-9a-f]{24})$")
_STATIC_LEN, _KEY_LEN = 16, 24


def store_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / STORE


def _static_dir(store: Path, static: str) -> Path:
    return Path(store) / static[:_STATIC_LEN]


def _name(step: int, key: str) -> str:
    return f"{step:08d}-{key[:_KEY_LEN]}"


def entry_path(store: Path, static: str, step: int, key: str) -> Path:
    return _static_dir(store, static) / _name(step, key)


@dataclass(frozen=True)
class Entry:
    """A published prefix."""

    path: Path
    step: int
    meta: dict

    @property
    def key(self) -> str:
        return self.meta["key"]


@dataclass(frozen=True)
class Claim:
    """A run that will publish a prefix (written by the launcher's plan and by the publisher when it starts)."""

    step: int
    key: str
    run_id: str
    run_dir: Path


def entries(store: Path, static: str) -> list[Entry]:
    """The complete entries of one static key, by step."""
    root = _static_dir(store, static)
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _NAME.match(p.name)
            meta = rundir.read_json(p / META) if m and p.is_dir() else None
            if meta and meta.get("static") == static:
                out.append(Entry(p, int(m.group(1)), meta))
    return sorted(out, key=lambda e: e.step)


def claims(store: Path, static: str) -> list[Claim]:
    root = _static_dir(store, static)
    out = []
    for p in root.glob("*.claim") if root.is_dir() else []:
        c = rundir.read_json(p)
        if c and c.get("static") == static:
            out.append(Claim(int(c["step"]), c["key"], c["run_id"], Path(c["run_dir"])))
    return sorted(out, key=lambda c: c.step)


def claim(store: Path, static: str, step: int, key: str, run_id: str, run_dir: Path) -> None:
    """Record that ``run_id`` will publish prefix ``key`` at ``step`` (forks that need it wait for it). The jobs
    named waiting for it (``wait_for``) stay named."""
    path = entry_path(store, static, step, key).with_suffix(".claim")
    with locked(store, static, step, key):
        waiting = _waiting(path)
        rundir.atomic_write_json(path, {"static": static, "step": step, "key": key, "run_id": run_id,
                                        "run_dir": str(Path(run_dir).resolve()), "claimed": rundir.utc_now(),
                                        "waiting": waiting})


def wait_for(store: Path, static: str, step: int, key: str, job: str) -> bool:
    """Name the SLURM job ``job`` (a fork's) in the claim of prefix ``key`` at ``step``: the publisher starts it
    once the prefix is published (``publish`` returns it). False when it is published already: start it now."""
    final = entry_path(store, static, step, key)
    path = final.with_suffix(".claim")
    with locked(store, static, step, key):
        if final.exists():
            return False
        named = rundir.read_json(path) if path.exists() else None
        if named is not None:
            rundir.atomic_write_json(path, {**named, "waiting": sorted({*named.get("waiting", []), job})})
    return True


def _waiting(claim_path: Path) -> list[str]:
    """The SLURM jobs a claim names waiting for its prefix (none when there is no claim)."""
    return (rundir.read_json(claim_path) or {}).get("waiting", []) if claim_path.exists() else []


@contextlib.contextmanager
def locked(store: Path, static: str, step: int, key: str) -> Iterator[None]:
    """Hold the lock of one entry (publishing it, removing a corrupt one, or changing its claim). Reentrant: a run
    that repairs a corrupt entry claims it while it holds the lock."""
    path = entry_path(store, static, step, key).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), is_singleton=True):
        yield


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != META)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy costs disk but works
        shutil.copy2(src, dst)


def _checkpoint_sums(sums: dict) -> dict:
    """The checkpoint files' part of an entry's checksums, by file name (as a checkpoint's marker has them)."""
    prefix = CHECKPOINT + "/"
    return {name[len(prefix):]: digest for name, digest in sums.items() if name.startswith(prefix)}


def publish(store: Path, static: str, step: int, key: str, checkpoint: Path, metrics: Iterable[dict],
            train_rows: Iterable[dict], meta: dict) -> tuple[Optional[Entry], list[str]]:
    """Publish the checkpoint directory ``checkpoint`` (state after ``step`` steps) and the publisher's rows as
    prefix ``key``; returns the entry (None when it was published already) and the SLURM jobs its claim named
    waiting for it (the claim is gone with the publish). Raises rundir.CorruptCheckpoint, publishing nothing,
    when a checkpoint file differs from what was written."""
    final = entry_path(store, static, step, key)
    claimed = final.with_suffix(".claim")
    with locked(store, static, step, key):
        if final.exists():
            return None, []
        tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            (tmp / CHECKPOINT).mkdir(parents=True)
            for f in sorted(Path(checkpoint).iterdir()):
                if f.is_file() and f.name != rundir.COMPLETE:
                    _link_or_copy(f, tmp / CHECKPOINT / f.name)
            for name, rows in ((rundir.METRICS, metrics), (rundir.TRAIN_LOG_JSONL, train_rows)):
                rundir.atomic_write_text(tmp / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            sums = {str(p.relative_to(tmp)): rundir.sha256_file(p) for p in _files(tmp)}
            written = _checkpoint_sums(sums)
            changed = rundir.checkpoint_problem(checkpoint, written, written)
            if changed is not None:  # publishing it would hand forks bytes their publisher never wrote
                raise rundir.CorruptCheckpoint(f"checkpoint {checkpoint} is corrupt ({changed})")
            rundir.atomic_write_json(tmp / META, {**meta, "static": static, "step": step, "key": key,
                                                  "sha256": sums, "published": rundir.utc_now()})
            rundir.commit_dir(tmp, final)  # the entry is complete once it has its name: META is inside already
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        waiting = _waiting(claimed)
        with contextlib.suppress(FileNotFoundError):
            claimed.unlink()
    log.info("published prefix %s (step %d) to %s", key[:12], step, final)
    return Entry(final, step, rundir.read_json(final / META) or {}), waiting


def problem(entry: Entry) -> Optional[str]:
    """Why ``entry`` cannot be used (a missing or changed file), or None when every checksum matches."""
    sums = entry.meta.get("sha256") or {}
    if not sums:
        return "no checksums recorded"
    present = {str(p.relative_to(entry.path)) for p in _files(entry.path)}
    if present != set(sums):
        return f"files {sorted(present ^ set(sums))} missing or unexpected"
    for name, digest in sums.items():
        if rundir.sha256_file(entry.path / name) != digest:
            return f"checksum mismatch in {name}"
    return None


def remove(entry_or_path) -> None:
    """Remove an entry: renamed out of the way first, so no reader ever sees it half removed."""
    path = Path(getattr(entry_or_path, "path", entry_or_path))
    trash = path.with_name(f".trash-{path.name}-{secrets.token_hex(3)}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def link_checkpoint(entry: Entry, dest: Path) -> None:
    """Place the entry's checkpoint at ``dest`` (a run's checkpoints/step_XXXXXXXX), complete-marked last with the
    entry's checksums: the run checks its files against them like against those of a checkpoint it wrote."""
    tmp = rundir.staging_dir(dest)
    for f in sorted((entry.path / CHECKPOINT).iterdir()):
        _link_or_copy(f, tmp / f.name)
    rundir.commit_dir(tmp, dest, entry.step, _checkpoint_sums(entry.meta["sha256"]))


def rows(entry: Entry, name: str) -> list[dict]:
    return rundir.read_jsonl(entry.path / name)


def trains(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir``'s run lock now (a killed holder does not)."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.LOCK_HOLDER).exists():
        return False
    lock = FileLock(str(run_dir / rundir.LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def gc(store: Path, keep: set[str], stale_after_s: float = 3600.0, dry_run: bool = False) -> list[Path]:
    """Remove every entry and claim whose key is not in ``keep`` (and their locks), and publishes or removals
    abandoned for ``stale_after_s``; returns what was (``dry_run``: would be) removed."""
    removed: list[Path] = []
    store = Path(store)
    now = time.time()
    for root in sorted(p for p in store.iterdir() if p.is_dir()) if store.is_dir() else []:
        kept: set[str] = set()
        for p in sorted(root.iterdir(), key=lambda p: p.suffix == ".lock"):  # locks last: they follow their entry
            if p.name.startswith((".tmp-", ".trash-")):
                drop = now - p.stat().st_mtime > stale_after_s
            elif p.suffix == ".lock":
                drop = p.stem not in kept
            else:
                meta = rundir.read_json(p / META if p.is_dir() else p) or {}
                drop = meta.get("key") not in keep
                if not drop:
                    kept.add(p.stem if p.suffix == ".claim" else p.name)
            if drop:
                removed.append(p)
                if not dry_run:
                    remove(p) if p.is_dir() else p.unlink(missing_ok=True)
        if not dry_run and not any(root.iterdir()):
            root.rmdir()
    return removed
