"""Atomic checkpoints: write a temporary directory, rename it, then mark it complete.

A checkpoint directory ``checkpoints/step_00000120`` holds the state after 120 optimizer steps. Only
directories with a ``COMPLETE`` marker count; a partial or unreadable one is skipped with a warning, so a
kill at any moment leaves the previous checkpoint usable.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)
MARKER = "COMPLETE"


def _dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def complete_steps(run_dir: Path) -> list[int]:
    """Steps of complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    steps = [int(p.name[5:]) for p in root.glob("step_*") if p.name[5:].isdigit() and (p / MARKER).exists()]
    return sorted(steps)


def latest_complete(run_dir: Path) -> int | None:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


def save(run_dir: Path, step: int, model: dict, optimizer: dict, state: dict) -> Path:
    final = _dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model, tmp / "model.pt")
    torch.save(optimizer, tmp / "optim.pt")
    torch.save(state, tmp / "state.pt")
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    (final / MARKER).write_text(str(step))
    _fsync_dir(final.parent)
    return final


def load(path: Path, with_optimizer: bool = True) -> dict:
    """Tensors and plain values only (``weights_only=True``): a checkpoint cannot run code."""
    out = {"model": torch.load(path / "model.pt", map_location="cpu", weights_only=True),
           "state": torch.load(path / "state.pt", map_location="cpu", weights_only=True)}
    if with_optimizer:
        out["optimizer"] = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    return out


def load_latest(run_dir: Path) -> tuple[int, dict] | None:
    """The newest complete checkpoint that loads; corrupt ones are skipped with a warning."""
    for step in reversed(complete_steps(run_dir)):
        path = _dir(run_dir, step)
        try:
            return step, load(path)
        except Exception as err:  # a truncated or corrupt file: fall back to the previous checkpoint
            log.warning("skipping unreadable checkpoint %s (%s: %s)", path, type(err).__name__, err)
    return None


def resolve_init(path: str) -> Path:
    """``train.init_from``: a run directory (its newest complete checkpoint) or a checkpoint directory."""
    p = Path(path)
    if (p / MARKER).exists():
        return p
    step = latest_complete(p)
    if step is None:
        raise FileNotFoundError(
            f"train.init_from={path}: no complete checkpoint there. Fix: point it at a finished run directory "
            "or at one of its checkpoints/step_XXXXXXXX directories")
    return _dir(p, step)


def prune(run_dir: Path, keep_last: int, pinned: set[int]) -> None:
    """Delete periodic checkpoints beyond the newest ``keep_last``; pinned steps stay."""
    steps = complete_steps(run_dir)
    for step in steps[:-keep_last] if keep_last else steps:
        if step not in pinned:
            shutil.rmtree(_dir(run_dir, step), ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
