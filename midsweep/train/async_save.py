"""Checkpoints written in a background thread: training waits only for the state's copy to CPU memory.

``CheckpointWriter.save`` snapshots the state (every tensor copied to CPU, so training can go on changing the
originals), then writes it with ``checkpoint.save`` (temporary directory, rename, COMPLETE marker: still
atomic, a kill mid-write leaves the previous checkpoint in use) and prunes old ones, in a thread. At most one
write is in flight: ``save`` and ``wait`` first join the previous one and re-raise its error. The loop waits
before it reports a run done, failed or requeued, so a finished process has its checkpoints on disk.
"""
from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Callable

import torch

from midsweep.train import checkpoint

log = logging.getLogger(__name__)


def snapshot(obj):
    """``obj`` with every tensor replaced by a CPU copy that no later in-place update can reach."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


class CheckpointWriter:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, run_dir: Path, step: int, model: dict, optimizer: dict, state: dict, keep_last: int,
             pinned: set[int], then: Callable[[], None] = lambda: None) -> None:
        """Write checkpoint ``step`` in the background, call ``then()`` once it is complete, then keep the
        newest ``keep_last`` checkpoints plus ``pinned``."""
        self.wait()
        model, optimizer, state, pinned = snapshot((model, optimizer, state, set(pinned)))
        self._thread = threading.Thread(target=self._write, name=f"checkpoint-{step}",
                                        args=(run_dir, step, model, optimizer, state, keep_last, pinned, then))
        self._thread.start()

    def _write(self, run_dir, step, model, optimizer, state, keep_last, pinned, then) -> None:
        try:
            checkpoint.save(run_dir, step, model, optimizer, state)
            then()
            checkpoint.prune(run_dir, keep_last, pinned)
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err

    def wait(self, raise_error: bool = True) -> None:
        """Until the write in flight (if any) is on disk; its error is raised, or only logged if not
        ``raise_error`` (when the run is failing for another reason already)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        if err is not None:
            if raise_error:
                raise RuntimeError(f"writing a checkpoint failed: {type(err).__name__}: {err}") from err
            log.error("writing a checkpoint failed: %s: %s", type(err).__name__, err)
