"""torch.distributed environment of a SLURM task started by submitit (one task per GPU).

``setup_environment()`` runs first thing in every task, before torch.distributed or accelerate is touched.
Under submitit it exports what the ``env://`` init method and accelerate read: RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR (the first host of the job) and MASTER_PORT (derived from the
job id, so that jobs sharing a node never pick the same port). Anywhere else (torchrun, accelerate
launch, a plain process) it leaves the environment alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

PORT_MIN, PORT_SPAN = 20000, 40000
"""MASTER_PORT = PORT_MIN + (SLURM job id mod PORT_SPAN): two live jobs collide only if their ids differ
by a multiple of PORT_SPAN."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int

    def variables(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size),
                "LOCAL_WORLD_SIZE": str(self.local_world_size), "MASTER_ADDR": self.master_addr,
                "MASTER_PORT": str(self.master_port)}


def under_submitit_slurm(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a task that submitit started on SLURM (its batch script exports SUBMITIT_EXECUTOR)."""
    return environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in environ


def master_port(raw_job_id: str) -> int:
    """A port per job: SLURM_JOB_ID is unique per array task, so concurrent array tasks differ."""
    return PORT_MIN + int(raw_job_id) % PORT_SPAN


def from_job_environment() -> DistEnv:
    """Ranks and rendezvous address of this task, from submitit's view of the SLURM job."""
    import submitit  # lazy: only tasks under SLURM need it

    job = submitit.JobEnvironment()
    return DistEnv(rank=job.global_rank, local_rank=job.local_rank, world_size=job.num_tasks,
                   local_world_size=max(1, job.num_tasks // job.num_nodes), master_addr=job.hostnames[0],
                   master_port=master_port(job.raw_job_id))


def check_visible_devices(env: DistEnv, environ: Mapping[str, str] = os.environ) -> None:
    """Accelerate puts each rank on ``cuda:LOCAL_RANK``, i.e. the LOCAL_RANK-th entry of CUDA_VISIBLE_DEVICES.
    That is right when every task of a node sees all the node's GPUs (``gpus_per_node``: SLURM's default);
    when SLURM binds one GPU per task (``gpus_per_task`` / ``--gpu-bind``) ranks > 0 would ask for a device
    that does not exist, so that layout is refused with the fix."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "NoDevFiles") or env.local_world_size == 1:
        return
    n = len([d for d in visible.split(",") if d.strip()])
    if n < env.local_world_size:
        raise RuntimeError(
            f"this task sees {n} GPU(s) (CUDA_VISIBLE_DEVICES={visible}) but runs {env.local_world_size} tasks per "
            f"node, and rank {env.rank} would use cuda:{env.local_rank}. Fix: request GPUs with "
            "hydra.launcher.gpus_per_node (not gpus_per_task) and no --gpu-bind, with tasks_per_node == gpus_per_node")


def setup_environment(environ: Optional[dict] = None) -> Optional[DistEnv]:
    """Export the torch.distributed variables of this submitit SLURM task; return them (None elsewhere).

    A job of one task exports nothing, so the run is a plain single process. MIDSWEEP_MASTER_PORT, when set,
    replaces the derived port (for clusters that allow only a port range)."""
    environ = os.environ if environ is None else environ
    if not under_submitit_slurm(environ):
        return None
    env = from_job_environment()
    if env.world_size == 1:
        return None
    if environ.get("MIDSWEEP_MASTER_PORT"):
        env = DistEnv(**{**env.__dict__, "master_port": int(environ["MIDSWEEP_MASTER_PORT"])})
    check_visible_devices(env, environ)
    # overwrite: a job submitted from inside another job inherits the parent's values
    environ.update(env.variables())
    return env
