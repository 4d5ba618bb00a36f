"""The one checkpointer: what a checkpoint holds, which steps get one, its atomic commit and its background write.

A checkpoint (``checkpoints/step_XXXXXXXX``, docs/results.md) holds the model and optimizer as a sharded
``torch.distributed.checkpoint`` (DCP: ``.metadata`` and ``__<rank>_<n>.distcp`` files, written by every rank,
each tensor once), the ``TrainState`` in ``train_state.pt`` (rank 0) and the ``COMPLETE`` marker with every file's
sha256 (``rundir.commit_dir``, which the prefix store uses too). State dicts come from
``torch.distributed.checkpoint.state_dict.get_state_dict``, so a plain, a DDP-wrapped and an FSDP2-sharded model
are saved and loaded alike, and a checkpoint written at any world size and mode loads at any other: each rank
reads only the tensors (or shards) it holds, for a resume and for ``train.init_from`` alike. ``model_weights``
reads a checkpoint's full model on CPU without a process group (``midsweep export``).

A partial, changed or unreadable checkpoint is never loaded: its checksums are checked first, and a resume falls
back to the previous checkpoint, so a kill at any moment leaves the previous one usable.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_state_dict, set_model_state_dict,
                                                     set_state_dict)

from midsweep import rundir
from midsweep.train.sharing import Sharing
from midsweep.train.state import TrainState

log = logging.getLogger(__name__)
# without a process group DCP saves and loads in this process, as meant, but warns at every call
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
FULL_BELOW = 1 << 20
"""Bytes free under which a failed checkpoint write is put down to a full file system."""

STATE = "train_state.pt"
"""The TrainState (rank 0's), next to the DCP files of the model (``model.*``) and optimizer (``optim.*``)."""
METADATA = ".metadata"
"""DCP's index of a checkpoint: which file holds which tensor (shard)."""
OLD_MODEL = "model.pt"
"""The full model file of an older midsweep's checkpoint (with optim.pt and state.pt): not read any more."""


class OldCheckpoint(ValueError):
    """A checkpoint in the format of an older midsweep (full ``model.pt``/``optim.pt``/``state.pt`` files)."""


def _refuse_old(path: Path) -> None:
    if (path / OLD_MODEL).exists() and not (path / METADATA).exists():
        raise OldCheckpoint(
            f"checkpoint {path} was written by an older midsweep (model.pt, optim.pt, state.pt); this one reads "
            "sharded checkpoints (.metadata, *.distcp) only. Fix: retrain the run (delete its checkpoints/ "
            "directory), or resume or export it with the midsweep version that wrote it")


def _check(path: Path) -> None:
    """Raise CorruptCheckpoint or OldCheckpoint unless ``path``'s files are a checkpoint as written."""
    _refuse_old(path)
    problem = rundir.checkpoint_problem(path)
    if problem is None and not (path / METADATA).is_file():
        problem = f"{METADATA} missing"
    if problem is not None:
        raise rundir.CorruptCheckpoint(f"checkpoint {path} is corrupt ({problem})")


class Checkpointer:
    """Saves and loads one run's checkpoints; every rank makes the same calls in the same order.

    Cadence: a step is saved when it is periodic (``train.checkpoint_every``), pinned (phase boundaries,
    ``train.pin_steps``, the last step) or a prefix a fork needs (``Sharing.saves``); after a save the newest
    ``train.keep_last`` periodic checkpoints stay, pinned ones always. A save copies the state to CPU memory
    and writes it in a background thread (collectives on a gloo group of its own, never interleaved with the
    training's); at most one write is in flight, and ``wait`` joins it and raises its error."""

    def __init__(self, run_dir: Path, every: int, keep_last: int, pinned: set[int], prefixes: Sharing, main: bool):
        """``every``, ``keep_last``: train.checkpoint_every and train.keep_last; ``pinned``: the steps always
        saved and kept; ``main``: whether this is rank 0 (it writes the TrainState and commits)."""
        self.run_dir, self.main, self.prefixes = Path(run_dir), main, prefixes
        self.every, self.keep_last, self.pinned = every, keep_last, set(pinned)
        self.group = dist.new_group(backend="gloo") if dist.is_initialized() else None
        self._stager = DefaultStager(StagingOptions(False, False, False, False))  # a blocking copy to CPU
        self._thread: Optional[threading.Thread] = None
        self._written = threading.Event()
        """Set when the write in flight has ended, written or failed."""
        self._error: Optional[BaseException] = None

    # ---- cadence
    def periodic(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def due(self, step: int) -> bool:
        """Whether the loop saves ``step``."""
        return self.periodic(step) or step in self.pinned or self.prefixes.saves(step)

    # ---- saving
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
        """Checkpoint ``step``: the state is copied now; written, committed, published (``Sharing.publish``,
        before pruning: a publish step is not pinned) and pruned in the background."""
        self.wait()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        staged = self._stager.stage({"model": model_sd, "optim": optim_sd})
        final = rundir.checkpoint_dir(self.run_dir, step)
        tmp = final.with_name(final.name + ".tmp")
        if self.main:
            rundir.staging_dir(final)
        self._barrier()  # no rank writes into the staging directory before it is fresh
        self._written.clear()
        self._thread = threading.Thread(target=self._write, name=f"checkpoint-{step}",
                                        args=(step, staged, state.state_dict(), tmp, final))
        self._thread.start()

    def _write(self, step: int, staged: dict, state: dict, tmp: Path, final: Path) -> None:
        try:
            try:
                if self.main:
                    torch.save(state, tmp / STATE)
                # rank 0 coordinates: its save returns after every rank's files are written and .metadata last
                dcp.save(staged, storage_writer=dcp.FileSystemWriter(tmp), process_group=self.group,
                         no_dist=self.group is None)
            except BaseException as err:
                if self.main:
                    _discard(tmp, err)
                raise
            if self.main:
                rundir.commit_dir(tmp, final, step)
                self.prefixes.publish(step)
                self._prune()
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err
        finally:
            self._written.set()

    def wait(self, raise_error: bool = True) -> None:
        """Until the write in flight (if any) is on disk; its error is raised, or only logged if not
        ``raise_error`` (when the run is failing for another reason already). Ctrl-C meanwhile is raised once
        the write has ended."""
        interrupted: Optional[KeyboardInterrupt] = None
        while self._thread is not None:
            try:
                # the write's own event, not join() alone: Python 3.11's join, interrupted by Ctrl-C, can mark the
                # thread ended while it still writes
                self._written.wait()
                self._thread.join()
                self._thread = None
            except KeyboardInterrupt as stop:  # Ctrl-C (twice): the write ends first; an interpreter exiting
                interrupted = stop             # under it aborts ("terminate called without an active exception")
        err, self._error = self._error, None
        if err is not None:
            if raise_error and interrupted is None:
                raise RuntimeError(f"writing a checkpoint failed: {type(err).__name__}: {err}") from err
            log.error("writing a checkpoint failed: %s: %s", type(err).__name__, err)
        if interrupted is not None:
            raise interrupted

    def _prune(self) -> None:
        steps = rundir.complete_steps(self.run_dir)
        for step in steps[:-self.keep_last] if self.keep_last else steps:
            if step not in self.pinned:
                shutil.rmtree(rundir.checkpoint_dir(self.run_dir, step), ignore_errors=True)

    # ---- loading
    def latest(self) -> Optional[int]:
        """The newest complete checkpoint whose files are as written, as rank 0 sees it (every rank gets the
        same answer); newer corrupt ones are skipped with a warning. An older midsweep's checkpoint is refused."""
        found: object = None
        if self.main:
            for step in reversed(rundir.complete_steps(self.run_dir)):
                path = rundir.checkpoint_dir(self.run_dir, step)
                try:
                    _check(path)
                except OldCheckpoint as err:
                    found = err
                    break
                except rundir.CorruptCheckpoint as err:
                    log.warning("skipping unreadable checkpoint %s (%s)", path, err)
                    continue
                found = step
                break
        found = self._from_main(found)
        if isinstance(found, OldCheckpoint):
            raise found
        return found

    def read_state(self, step: int) -> dict:
        """The TrainState saved at ``step`` (small: every rank reads it)."""
        return torch.load(rundir.checkpoint_dir(self.run_dir, step) / STATE, map_location="cpu", weights_only=True)

    def load(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load the model and optimizer of checkpoint ``step`` (from ``latest``): each rank reads its part."""
        model_sd, optim_sd = get_state_dict(model, optimizer)  # the layout this run holds them in
        loaded = {"model": model_sd, "optim": optim_sd}
        dcp.load(loaded, checkpoint_id=rundir.checkpoint_dir(self.run_dir, step), process_group=self.group,
                 no_dist=self.group is None)
        set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])

    def load_weights(self, init_from: str, model: torch.nn.Module) -> None:
        """``train.init_from``: the weights of the checkpoint it names into ``model`` (optimizer and data start
        fresh). Rank 0 checks the files; each rank then reads only the tensors (or shards) it holds, never the
        whole model unless it holds it. A checkpoint whose bytes changed is refused, naming the fix."""
        path = resolve_init(init_from)
        fix = "Fix: point it at another of that run's checkpoints (checkpoints/step_XXXXXXXX directories)"
        problem = None
        if self.main:
            try:
                _check(path)
            except rundir.CorruptCheckpoint as err:
                problem = rundir.CorruptCheckpoint(f"train.init_from={init_from}: {err}. {fix}")
            except OldCheckpoint as err:
                problem = err
        problem = self._from_main(problem)
        if problem is not None:
            raise problem
        weights = get_model_state_dict(model)  # the layout this run holds them in
        try:
            dcp.load({"model": weights}, checkpoint_id=path, process_group=self.group, no_dist=self.group is None)
        except (Exception, CheckpointException) as err:  # e.g. files that are no checkpoint under an unsummed marker
            cause = next(iter(err.failures.values()), err) if isinstance(err, CheckpointException) else err
            cause = cause[0] if isinstance(cause, tuple) else cause  # DCP keeps (error, traceback) per rank
            first = f"{type(cause).__name__}: {cause}".splitlines()[0][:200]
            raise rundir.CorruptCheckpoint(f"train.init_from={init_from}: checkpoint {path} cannot be read "
                                           f"({first}). {fix}") from err
        set_model_state_dict(model, weights)

    # ---- collectives (none without a process group)
    def _barrier(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)

    def _from_main(self, obj):
        if self.group is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


def _discard(tmp: Path, err: BaseException) -> None:
    """Remove a checkpoint whose write failed, freeing its space for the run's status; raise ENOSPC when the file
    system was full (torch may report a full disk without the errno)."""
    full = shutil.disk_usage(tmp.parent).free < FULL_BELOW
    shutil.rmtree(tmp, ignore_errors=True)
    if full and not isinstance(err, OSError):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from err


def model_weights(path: Path) -> dict:
    """Checkpoint ``path``'s model as one full state dict on CPU (any world size and mode wrote it); raises
    CorruptCheckpoint when a file differs from what was written, OldCheckpoint for an older midsweep's."""
    path = Path(path)
    _check(path)
    meta = dcp.FileSystemReader(path).read_metadata()
    full = {}
    for flat, (group, *names) in meta.planner_data.items():
        if group == "model":
            tensor = meta.state_dict_metadata[flat]
            full[".".join(names)] = torch.empty(tensor.size, dtype=tensor.properties.dtype)
    dcp.load({"model": full}, checkpoint_id=path, no_dist=True)
    return full


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
