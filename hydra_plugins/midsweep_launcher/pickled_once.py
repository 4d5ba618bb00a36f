"""The launcher pickled once per job array instead of once per job.

submitit writes one pickle per job holding the callable and its arguments. For Hydra's launcher that is the
launcher itself (its config, Hydra's context) plus Hydra's singleton state: ~50 ms a job, most of the time of
submitting a 1,000-point grid. Here the launcher and the state go into one file next to the jobs' folders; each
job's own pickle holds only a ``PickledOnce`` handle (the file's path) and its overrides. In the job, the handle
loads the launcher and calls it exactly as submitit would have. It is checkpointable like the launcher, so a
preempted or timed-out job is requeued with the same handle and arguments.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from midsweep import rundir


class PickledOnce:
    def __init__(self, path: Path):
        self.path = str(path)

    @classmethod
    def write(cls, folder: Path, launcher: Any, singleton_state: Any) -> "PickledOnce":
        """Pickle ``launcher`` and Hydra's singleton state into ``folder`` (shared with the nodes), atomically."""
        import cloudpickle  # submitit's serializer: the same objects pickle the same way

        path = Path(folder) / f"launcher_{uuid.uuid4().hex}.pkl"
        with rundir.atomic_open(path, binary=True) as f:
            cloudpickle.dump((launcher, singleton_state), f)
        return cls(path)

    def load(self) -> tuple[Any, Any]:
        import cloudpickle

        with open(self.path, "rb") as f:
            return cloudpickle.load(f)

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str) -> Any:
        launcher, singleton_state = self.load()
        return launcher(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on USR2 (preemption, timeout): resubmit the same call."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
