"""Atomic checkpoints: write a temporary directory, rename it, then mark it complete with its files' checksums.

Where checkpoints live, which count and how their checksums are recorded and checked (``rundir.checkpoint_dir``,
the ``COMPLETE`` marker) is ``midsweep.rundir``'s; this module writes and reads their content (model.pt, optim.pt,
state.pt). A partial, unreadable or changed checkpoint is never loaded: ``load`` refuses it, ``load_latest``
skips it with a warning, so a kill at any moment leaves the previous one usable.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import torch

from midsweep import rundir

log = logging.getLogger(__name__)
FULL_BELOW = 1 << 20
"""Bytes free under which a failed checkpoint write is put down to a full file system."""

MODEL, OPTIMIZER, STATE = "model.pt", "optim.pt", "state.pt"


def save(run_dir: Path, step: int, model: dict, optimizer: dict, state: dict) -> Path:
    final = rundir.checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch.save(model, tmp / MODEL)
        torch.save(optimizer, tmp / OPTIMIZER)
        torch.save(state, tmp / STATE)
    except BaseException as err:
        _discard(tmp, err)
        raise
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    rundir.mark_complete(final, step)
    _fsync_dir(final.parent)
    return final


def _discard(tmp: Path, err: BaseException) -> None:
    """Remove a checkpoint whose write failed, freeing its space for the run's status; raise ENOSPC when the file
    system was full (torch reports a full disk as ``RuntimeError: ... unexpected pos``, without the errno)."""
    full = shutil.disk_usage(tmp).free < FULL_BELOW
    shutil.rmtree(tmp, ignore_errors=True)
    if full and not isinstance(err, OSError):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from err


def load(path: Path, with_optimizer: bool = True) -> dict:
    """Tensors and plain values only (``weights_only=True``): a checkpoint cannot run code. Raises
    rundir.CorruptCheckpoint when a file to load differs from what was written."""
    names = (MODEL, STATE, OPTIMIZER) if with_optimizer else (MODEL, STATE)
    problem = rundir.checkpoint_problem(path, names)
    if problem is not None:
        raise rundir.CorruptCheckpoint(f"checkpoint {path} is corrupt ({problem})")
    out = {"model": torch.load(path / MODEL, map_location="cpu", weights_only=True),
           "state": torch.load(path / STATE, map_location="cpu", weights_only=True)}
    if with_optimizer:
        out["optimizer"] = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    return out


def load_latest(run_dir: Path) -> tuple[int, dict] | None:
    """The newest complete checkpoint that loads; corrupt ones are skipped with a warning."""
    for step in reversed(rundir.complete_steps(run_dir)):
        path = rundir.checkpoint_dir(run_dir, step)
        try:
            return step, load(path)
        except Exception as err:  # a truncated or changed file: fall back to the previous checkpoint
            log.warning("skipping unreadable checkpoint %s (%s: %s)", path, type(err).__name__, err)
    return None


def init_weights(path: str) -> dict:
    """The model weights ``train.init_from`` names; a checkpoint whose bytes changed is refused, naming the fix."""
    ckpt = resolve_init(path)
    try:
        return load(ckpt, with_optimizer=False)["model"]
    except rundir.CorruptCheckpoint as err:
        raise rundir.CorruptCheckpoint(f"train.init_from={path}: {err}. Fix: point it at another of that run's "
                                       "checkpoints (checkpoints/step_XXXXXXXX directories)") from None


def resolve_init(path: str) -> Path:
    """``train.init_from``: a run directory (its newest complete checkpoint) or a checkpoint directory."""
    p = Path(path)
    if (p / rundir.COMPLETE).exists():
        return p
    step = rundir.latest_checkpoint(p)
    if step is None:
        raise FileNotFoundError(
            f"train.init_from={path}: no complete checkpoint there. Fix: point it at a finished run directory "
            "or at one of its checkpoints/step_XXXXXXXX directories")
    return rundir.checkpoint_dir(p, step)


def prune(run_dir: Path, keep_last: int, pinned: set[int]) -> None:
    """Delete periodic checkpoints beyond the newest ``keep_last``; pinned steps stay."""
    steps = rundir.complete_steps(run_dir)
    for step in steps[:-keep_last] if keep_last else steps:
        if step not in pinned:
            shutil.rmtree(rundir.checkpoint_dir(run_dir, step), ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
