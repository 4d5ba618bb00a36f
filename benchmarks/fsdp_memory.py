"""Sharded training's memory and speed: per-rank bytes and step time under ``train.parallel=fsdp`` against ``ddp``.

Two gloo ranks on CPU (torch.multiprocessing.spawn, one thread each) hold the same model both ways at once, built
by the training loop's own ``midsweep.train.parallel.Parallel``: DDP through accelerate, FSDP2 ``fully_shard`` per
block then the root. Per rank (the largest of the ranks), the bytes each holds of parameters, gradients (after a
backward) and AdamW state (after a step), counted from the tensors (a DTensor counts its local shard); then the time
of a training step (two micro-batches: forward, loss, backward with the gradient sync only in the last, clipping,
AdamW), the two modes timed round-robin (a few steps each, repeatedly; median over rounds) so that other load on a
shared machine hits both alike. Expected: about 0.5x the bytes for parameters + optimizer state at 2 ranks
(every parameter is sharded; uneven rows round up); step time above DDP's on CPU (gloo all-gathers every block's
parameters twice and reduce-scatters its gradients, where DDP all-reduces buckets once). DDP's gradient buckets (a
second copy of the gradients while they are reduced) are not counted.

    .venv/bin/python benchmarks/fsdp_memory.py [--size tiny] [--seq 128] [--rounds 5]

Prints the CPU, a table with both modes side by side, and the last line ``ratio=X`` (fsdp / ddp bytes of
parameters + optimizer state per rank).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import hardware  # noqa: E402  (the benchmarks' one description of the machine)

MODES = ("ddp", "fsdp")
VOCAB = 256  # the byte-level tokenizer's: the weights are the model's blocks, as at scale


def local_bytes(tensors) -> int:
    """Bytes this rank holds of ``tensors`` (a DTensor: its local shard)."""
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


class Setup:
    """One mode's model, optimizer and step, as the training loop builds and runs them."""

    def __init__(self, mode: str, args, accelerator):
        from midsweep.config.model import ModelConfig
        from midsweep.config.train import TrainConfig
        from midsweep.model import build_model
        from midsweep.train.parallel import Parallel

        torch.manual_seed(0)
        self.parallel = Parallel(TrainConfig(parallel=mode), accelerator, "fp32")
        model = self.parallel.wrap(build_model(ModelConfig(size=args.size, seq_len=args.seq), VOCAB))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.model, self.optimizer = self.parallel.prepare(model, optimizer)
        self.raw = self.parallel.unwrap(self.model)
        self.accelerator, self.micro, self.seq = accelerator, args.micro, args.seq
        self.gen = torch.Generator().manual_seed(accelerator.process_index)
        self.bytes: dict[str, int] = {}

    def step(self, count: bool = False) -> None:
        from midsweep.train.batches import loss_sum

        for i in range(2):
            x = torch.randint(0, VOCAB, (self.micro, self.seq + 1), generator=self.gen)
            with self.parallel.no_sync(self.model, i == 1), self.accelerator.autocast():
                loss = loss_sum(self.model, x[:, :-1], x[:, 1:], torch.ones(self.micro, self.seq))
                self.accelerator.backward(loss / (2 * self.micro * self.seq))
        self.parallel.clip_grad_norm_(self.model, 1.0)
        if count:
            self.bytes["gradients"] = local_bytes(p.grad for p in self.raw.parameters() if p.grad is not None)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if count:
            self.bytes["parameters"] = local_bytes(self.raw.parameters())
            state = self.optimizer.state if hasattr(self.optimizer, "state") else {}
            self.bytes["optimizer state"] = local_bytes(
                t for s in state.values() for t in s.values() if isinstance(t, torch.Tensor))


def worker(rank: int, world: int, port: int, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    setups = {mode: Setup(mode, args, accelerator) for mode in MODES}
    for s in setups.values():
        s.step(count=True)  # the warm-up step counts the bytes
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode, s in setups.items():
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s.step()
            dist.barrier()
            times[mode].append((time.perf_counter() - t0) / args.steps)
    # the largest rank's bytes (the ranks hold equal shares up to rounding), rank 0's times
    sizes = torch.tensor([[s.bytes[k] for k in ("parameters", "gradients", "optimizer state")]
                          for s in setups.values()], dtype=torch.float64)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
    if rank == 0:
        params = sum(p.numel() for p in setups["ddp"].raw.parameters())
        report(args, world, params, {m: sizes[i].tolist() for i, m in enumerate(MODES)},
               {m: statistics.median(t) for m, t in times.items()})
    dist.barrier()
    dist.destroy_process_group()


def report(args, world: int, params: int, sizes: dict[str, list[float]], step_s: dict[str, float]) -> None:
    mib = 1 << 20
    print(f"model: size={args.size} ({params / 1e6:.2f}M parameters, fp32), {world} gloo ranks x 1 thread, "
          f"2 micro-batches of {args.micro} x {args.seq} tokens per rank and step, AdamW")
    print(f"{'per rank':<34}{'ddp':>12}{'fsdp':>12}{'fsdp/ddp':>10}")
    rows = [("parameters (MiB)", 0), ("gradients (MiB)", 1), ("optimizer state (MiB)", 2)]
    for name, i in rows:
        a, b = sizes["ddp"][i], sizes["fsdp"][i]
        print(f"{name:<34}{a / mib:>12.2f}{b / mib:>12.2f}{b / a:>10.3f}")
    kept = {m: sizes[m][0] + sizes[m][2] for m in MODES}
    print(f"{'parameters + optimizer state (MiB)':<34}{kept['ddp'] / mib:>12.2f}{kept['fsdp'] / mib:>12.2f}"
          f"{kept['fsdp'] / kept['ddp']:>10.3f}")
    print(f"{'step time (ms, median of rounds)':<34}{step_s['ddp'] * 1e3:>12.1f}{step_s['fsdp'] * 1e3:>12.1f}"
          f"{step_s['fsdp'] / step_s['ddp']:>10.3f}")
    print(f"ratio={kept['fsdp'] / kept['ddp']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="tiny", help="model.size preset (tiny: 4 layers of d256, 3.3M parameters)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--micro", type=int, default=2, help="sequences per micro-batch and rank")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--steps", type=int, default=3, help="steps per mode and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    hardware("cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args.ranks, port, args), nprocs=args.ranks, join=True)


if __name__ == "__main__":
    main()
