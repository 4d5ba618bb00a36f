"""Atomic checkpoints: write a temporary directory, rename it, then mark it complete.

Where checkpoints live and which count (``rundir.checkpoint_dir``, the ``COMPLETE`` marker) is
``midsweep.rundir``'s; this module writes and reads their content (model.pt, optim.pt, state.pt). A partial or
unreadable checkpoint is skipped with a warning, so a kill at any moment leaves the previous one usable.
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


def save(run_dir: Path, step: int, model: dict, optimizer: dict, state: dict) -> Path:
    final = rundir.checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch.save(model, tmp / "model.pt")
        torch.save(optimizer, tmp / "optim.pt")
        torch.save(state, tmp / "state.pt")
    except BaseException as err:
        _discard(tmp, err)
        raise
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    rundir.atomic_write_text(final / rundir.COMPLETE, str(step))
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
    """Tensors and plain values only (``weights_only=True``): a checkpoint cannot run code."""
    out = {"model": torch.load(path / "model.pt", map_location="cpu", weights_only=True),
           "state": torch.load(path / "state.pt", map_location="cpu", weights_only=True)}
    if with_optimizer:
        out["optimizer"] = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    return out


def load_latest(run_dir: Path) -> tuple[int, dict] | None:
    """The newest complete checkpoint that loads; corrupt ones are skipped with a warning."""
    for step in reversed(rundir.complete_steps(run_dir)):
        path = rundir.checkpoint_dir(run_dir, step)
        try:
            return step, load(path)
        except Exception as err:  # a truncated or corrupt file: fall back to the previous checkpoint
            log.warning("skipping unreadable checkpoint %s (%s: %s)", path, type(err).__name__, err)
    return None


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
