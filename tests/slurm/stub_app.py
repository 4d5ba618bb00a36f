"""A stand-in training app for the SLURM tests: the engine's contract with the launch package, in miniature.

It uses the real ``setup_environment()`` (and gloo across ranks), the real ``preemption.install()``,
checkpoints every ``ckpt_every`` steps, resumes from its newest checkpoint, and writes status.json /
summary.json like the engine. Its result (``final.value``) depends on every step, so a resumed run that
skipped or repeated a step would differ from an uninterrupted one.
"""
import hashlib
import json
import os
import time
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from midsweep.launch import distributed, preemption


class Run:
    def __init__(self, d):
        self.d = d

    def run_id(self):
        return hashlib.sha256(json.dumps([self.d["w"], self.d["steps"], self.d["tag"]]).encode()).hexdigest()[:12]

    def run_dir(self):
        return Path(self.d["out_dir"]) / self.run_id()

    def plan(self):
        return {"steps": self.d["steps"], "tokens": 1000 * self.d["steps"], "flops": 6e12, "params": 100}


def to_run_config(cfg):
    return Run(OmegaConf.to_container(cfg, resolve=True))


def write(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def latest(run_dir: Path):
    steps = [int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*") if (p / "COMPLETE").exists()]
    return max(steps) if steps else None


def save(run_dir: Path, step: int, value: float) -> None:
    d = run_dir / "checkpoints" / f"step_{step:08d}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps({"value": value}))
    (d / "COMPLETE").write_text("")


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    env = distributed.setup_environment()
    interrupt = preemption.install()
    rank, world = (env.rank, env.world_size) if env else (0, 1)
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo")
    run = to_run_config(cfg)
    run_dir = run.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    st = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    if st.get("status") == "done":
        return "done before"
    start = latest(run_dir) or 0
    value = json.loads((run_dir / "checkpoints" / f"step_{start:08d}" / "state.json").read_text())["value"] if start else 0.0
    job = os.environ.get("SLURM_JOB_ID", "local")
    if rank == 0:
        with open(run_dir / "attempts.jsonl", "a") as f:
            f.write(json.dumps({"job": job, "start": start, "world": world, "pid": os.getpid()}) + "\n")
    status = {"contract": 1, "log": str(run_dir / "train.log"), "slurm_job_id": job}
    for step in range(start, cfg.steps):
        if rank == 0:
            write(run_dir / "status.json", {**status, "status": "running", "step": step})
        time.sleep(cfg.step_s)
        # the "global batch" of a step: items step*8 .. step*8+7, split across ranks
        part = sum(((step * 8 + i) % 7) * cfg.w for i in range(rank, 8, world))
        stop = interrupt.requested()
        if world > 1:
            import torch
            t = torch.tensor([part, float(stop)], dtype=torch.float64)
            dist.all_reduce(t[:1])
            dist.all_reduce(t[1:], op=dist.ReduceOp.MAX)
            part, stop = float(t[0]), bool(t[1])
        value = value * 0.5 + part
        done_steps = step + 1
        if rank == 0 and (done_steps % cfg.ckpt_every == 0 or stop):
            save(run_dir, done_steps, value)
        if stop:
            if world > 1:
                dist.barrier()
            if rank == 0:
                write(run_dir / "status.json", {**status, "status": "requeued", "step": done_steps})
            interrupt.checkpointed()
    if rank == 0:
        write(run_dir / "summary.json", {"contract": 1, "run_id": run.run_id(), "status": "done",
                                         "final": {"value": value}, "steps": cfg.steps})
        write(run_dir / "status.json", {**status, "status": "done", "step": cfg.steps})
    return value


if __name__ == "__main__":
    main()
