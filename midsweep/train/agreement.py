"""Before training, the ranks of a run agree on what they see in its run directory.

Every rank reads the run directory itself (the checkpoint to resume from, the prefix it forked from), so a
``train.out_dir`` on a node-local disk gives each node its own view: rank 0 resumes from step 400 while rank 1
starts at step 0, and both wait forever in their next collective. ``agree`` gathers each rank's ``View`` once,
right after the resume is decided, and stops every rank at once with one line naming the directory and what
each rank saw. A new run has no checkpoint anywhere, so each rank also looks for the config.yaml rank 0 wrote at
this start: on node-local disks the other ranks never see it (and every rank would write its shards of each
checkpoint to its own disk). Imports torch only when it gathers, so ``RanksDisagree`` can be caught by torch-free
code.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from midsweep import rundir
from midsweep.sharing import store


SHARED_WAIT_S = 60.0
"""How long a rank that does not see rank 0's config.yaml looks again before it reports the directory as not
shared: a network file system may cache a directory's listing that long (NFS: acdirmax). A shared directory costs
no wait (the file is there); ``MIDSWEEP_SHARED_WAIT_S`` overrides it."""


class RanksDisagree(RuntimeError):
    """The ranks of one run see different run directories: ``train.out_dir`` is not shared by every node."""


@dataclass(frozen=True)
class View:
    """What one rank sees of its run directory when training is about to start."""

    run_dir: str
    """The run directory, as this rank names it (named in the message, not compared)."""
    status: Optional[str]
    """The run's status before this start (status.json), None for a new run."""
    resume: Optional[int]
    """The step of the checkpoint this rank resumes from, None to start from scratch."""
    prefix: Optional[int]
    """The step of the shared prefix the run forked from (the run's prefix.json), None if it did not fork."""
    publish: tuple[int, ...]
    """The steps this run checkpoints for forks that wait for it (its claims in the prefix store)."""
    config: bool = True
    """Whether this rank sees the run's config.yaml, which rank 0 writes at every start before the ranks agree."""

    @classmethod
    def of(cls, run_dir: Path, status: Optional[str], resume: Optional[int], publish) -> "View":
        meta = rundir.read_json(Path(run_dir) / store.META)
        return cls(str(Path(run_dir).absolute()), status, resume, meta.get("step") if meta else None,
                   tuple(sorted(publish)), _appears(Path(run_dir) / rundir.CONFIG))

    def facts(self) -> tuple:
        """What every rank must see alike."""
        return self.status, self.resume, self.prefix, self.publish, self.config

    def describe(self) -> str:
        said = [f"status {self.status}" if self.status else "no status",
                f"checkpoint of step {self.resume}" if self.resume is not None else "no checkpoint"]
        if self.prefix is not None:
            said.append(f"forked at step {self.prefix}")
        if self.publish:
            said.append(f"publishes steps {','.join(map(str, self.publish))}")
        if not self.config:
            said.append("no config.yaml of this start")
        return f"{self.run_dir}: {', '.join(said)}"


def _appears(path: Path) -> bool:
    """Whether ``path`` exists now or within ``SHARED_WAIT_S``."""
    deadline = time.monotonic() + float(os.environ.get("MIDSWEEP_SHARED_WAIT_S", SHARED_WAIT_S))
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def agree(view: View) -> None:
    """Gather every rank's ``view``; raise ``RanksDisagree`` on every rank alike if they differ."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    views: list = [None] * dist.get_world_size()
    dist.all_gather_object(views, view)
    if len({v.facts() for v in views}) > 1:
        raise RanksDisagree(disagreement(views))


def disagreement(views: list[View]) -> str:
    """The one line naming what each rank saw (ranks that saw the same thing together) and the fix."""
    seen: dict[str, list[int]] = {}
    for rank, v in enumerate(views):
        seen.setdefault(v.describe(), []).append(rank)
    parts = [f"rank{'s' if len(r) > 1 else ''} {','.join(map(str, r))} saw {what}" for what, r in seen.items()]
    return (f"train.out_dir must be one directory shared by every node, but the ranks of this run see different "
            f"run directories ({'; '.join(parts)}). Fix: set train.out_dir to a directory on a file system that "
            "every node mounts (not a node-local disk), then rerun")
