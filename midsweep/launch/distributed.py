"""torch.distributed environment of a SLURM task started by submitit (one task per GPU).

``setup_environment()`` runs first thing in every task, before torch.distributed or accelerate is touched.
Under submitit, ``submitit.helpers.TorchDistributedEnvironment`` exports what the ``env://`` init method and
accelerate read: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR (the first host of the job) and
MASTER_PORT (drawn from the job id: the same on every rank, different for jobs sharing a node;
MIDSWEEP_MASTER_PORT pins it). What midsweep adds: a job of one task exports nothing, CUDA_VISIBLE_DEVICES is
left as SLURM set it (accelerate puts each rank on ``cuda:LOCAL_RANK``), and a GPU binding under which that
device does not exist is refused with the fix. Anywhere else (torchrun, accelerate launch, a plain process)
the environment is left alone.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from submitit.helpers import TorchDistributedEnvironment


def under_submitit_slurm() -> bool:
    """True inside a task that submitit started on SLURM (its batch script exports SUBMITIT_EXECUTOR)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def check_visible_devices(env: "TorchDistributedEnvironment") -> None:
    """Accelerate puts each rank on ``cuda:LOCAL_RANK``, i.e. the LOCAL_RANK-th entry of CUDA_VISIBLE_DEVICES.
    That is right when every task of a node sees all the node's GPUs (``gpus_per_node``: SLURM's default);
    when SLURM binds one GPU per task (``gpus_per_task`` / ``--gpu-bind``) ranks > 0 would ask for a device
    that does not exist, so that layout is refused with the fix."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "NoDevFiles") or env.local_world_size == 1:
        return
    n = len([d for d in visible.split(",") if d.strip()])
    if n < env.local_world_size:
        raise RuntimeError(
            f"this task sees {n} GPU(s) (CUDA_VISIBLE_DEVICES={visible}) but runs {env.local_world_size} tasks per "
            f"node, and rank {env.rank} would use cuda:{env.local_rank}. Fix: request GPUs with "
            "hydra.launcher.gpus_per_node (not gpus_per_task) and no --gpu-bind, with tasks_per_node == gpus_per_node")


def setup_environment() -> Optional["TorchDistributedEnvironment"]:
    """Export the torch.distributed variables of this submitit SLURM task; return them (None elsewhere, and for a
    job of one task, which runs as a plain single process)."""
    if not under_submitit_slurm():
        return None
    from submitit.helpers import TorchDistributedEnvironment  # lazy: only tasks under SLURM need it

    # submitit takes MASTER_PORT from the environment when set: only a pinned port, never one inherited from
    # the shell or job that submitted this one
    pinned = os.environ.get("MIDSWEEP_MASTER_PORT")
    if pinned:
        os.environ["MASTER_PORT"] = pinned
    else:
        os.environ.pop("MASTER_PORT", None)
    env = TorchDistributedEnvironment()
    if env.world_size == 1:
        return None
    check_visible_devices(env)
    # overwrite: a job submitted from inside another job inherits the parent's RANK, WORLD_SIZE...
    return env.export(set_cuda_visible_devices=False, overwrite=True)
