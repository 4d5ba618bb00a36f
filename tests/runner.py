"""Run the engine as users do: ``python -m midsweep.train`` in a real process; damage its files as a disk can."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def train_cli(*overrides: str, check: bool = True, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m midsweep.train`` with ``overrides``; raise with its stderr if it fails and ``check``."""
    cmd = [sys.executable, "-m", "midsweep.train", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def flip_bytes(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of ``path`` in place (its inode, so every hard link sees the change)."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        chunk = f.read(n)
        f.seek(-len(chunk), 1)
        f.write(bytes(b ^ 0xFF for b in chunk))


def free_port() -> int:
    """A TCP port free on loopback now (for MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_ranks(*overrides: str, world: int = 2, hydra_dir: Path, timeout: int = 600) -> list[tuple[int, str, str]]:
    """Run ``python -m midsweep.train`` as ``world`` gloo CPU ranks on this machine (env://, as torchrun sets it);
    (returncode, stdout, stderr) of each rank. No GPU is visible to them (pass train.device=cpu): two ranks on one
    GPU would wait for each other forever in NCCL. ``${oc.env:LOCAL_RANK}`` in an override is the rank's own."""
    import os

    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, "-m", "midsweep.train", *overrides,
                                       f"hydra.run.dir={hydra_dir}/h{rank}"], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


class _Nothing:
    """The prefix sharing and TrainState a bare checkpoint needs: no prefixes, a state of its step only."""

    def __init__(self, step: int = 0):
        self.step = step

    def saves(self, step: int) -> bool:
        return False

    def publish(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"step": self.step}


def save_checkpoint(run_dir: Path, step: int, model, optimizer=None) -> Path:
    """Checkpoint ``model`` and ``optimizer`` (default: a fresh AdamW) at ``step`` into ``run_dir`` as a run would;
    its directory."""
    import torch

    from midsweep import rundir
    from midsweep.train import checkpoint

    ckpt = checkpoint.Checkpointer(run_dir, 0, 1, {step}, _Nothing(), main=True)
    ckpt.save(step, model, optimizer or torch.optim.AdamW(model.parameters()), _Nothing(step))
    ckpt.wait()
    return rundir.checkpoint_dir(run_dir, step)
