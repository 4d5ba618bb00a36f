"""Training throughput of the built-in model vs the transformers model of the same shape, side by side.

Each variant runs full training steps (forward + cross-entropy + backward + AdamW) on random tokens. Variants
are timed round-robin (a few steps each, repeatedly) so that load from other processes hits all of them alike;
the per-variant figure is the median over rounds. The same run measures the machine's matmul peak, giving MFU.
On a CPU shared with other jobs, use --threads 1 and read the tok/cpu-s column and the cpu-time ratios.
bf16 only pays off on CPUs with native bf16 (avx512_bf16 / AMX in /proc/cpuinfo); elsewhere it is emulated
and slower than fp32, which the matmul peak line shows.

    .venv/bin/python benchmarks/train_throughput.py                      # tiny shape on CPU
    .venv/bin/python benchmarks/train_throughput.py --device cuda --size 160m --seq-len 2048 --batch 8 --dtype bf16,fp32
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from dataclasses import replace

import torch
import torch.nn.functional as F

from midsweep.config.model import ModelConfig
from midsweep.model import build_model, count_params, flops_per_token

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGETS = [("builtin-bf16", "hf-fp32", 2.0), ("builtin-fp32", "hf-fp32", 1.15)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best observed FLOP/s of an n x n matmul in ``dtype``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Variant:
    """One model + optimizer + precision, able to run timed training steps."""

    def __init__(self, name: str, cfg: ModelConfig, vocab: int, dtype: str, args: argparse.Namespace):
        torch.manual_seed(0)
        self.name, self.dtype, self.device = name, dtype, args.device
        self.model = build_model(cfg, vocab).to(args.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        self.tokens = torch.randint(0, vocab, (args.batch, cfg.seq_len + 1), device=args.device)
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self) -> float:
        x, y = self.tokens[:, :-1], self.tokens[:, 1:]
        amp = (torch.autocast(self.device, dtype=torch.bfloat16) if self.dtype == "bf16" else nullcontext())
        with amp:
            logits = self.model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()  # forces the step to finish

    def timed(self, steps: int) -> None:
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        sync(self.device)
        self.times.append((time.perf_counter() - t0) / steps)
        self.cpu_times.append((time.process_time() - c0) / steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--arch", default="neox", choices=["neox", "llama"])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant (split into rounds)")
    ap.add_argument("--steps-per-round", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32,bf16", help="comma list of fp32,bf16 (each for builtin and hf)")
    ap.add_argument("--backends", default="builtin,hf")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="bf16 peak for MFU (default: measured by a matmul in this run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ModelConfig(size=args.size, arch=args.arch, seq_len=args.seq_len)
    shape = cfg.resolved()
    fpt = flops_per_token(cfg, args.vocab)
    print(f"shape: {args.size} {args.arch} layers={shape.n_layers} d={shape.d_model} heads={shape.n_heads} "
          f"d_ff={shape.d_ff} vocab={args.vocab} seq={args.seq_len} batch={args.batch} device={args.device} "
          f"threads={torch.get_num_threads()}")
    print(f"flops/token (train) = {fpt / 1e6:.1f} M")

    n, reps = (8192, 20) if args.device == "cuda" else (2048, 5)
    peak = {d: matmul_peak(args.device, DTYPES[d], n, reps) for d in DTYPES}
    measured = ", ".join(f"{d} {p / 1e12:.3f} TFLOP/s" for d, p in peak.items())
    print(f"matmul peak ({n}x{n}): {measured}")
    if args.peak_tflops is not None:
        peak["bf16"] = args.peak_tflops * 1e12
        print(f"using --peak-tflops {args.peak_tflops} as the bf16 peak")

    variants = []
    for backend in args.backends.split(","):
        for dtype in args.dtype.split(","):
            name = f"{backend}-{dtype}"
            variants.append(Variant(name, replace(cfg, backend=backend), args.vocab, dtype,
                                    args))
            print(f"built {name}: {count_params(variants[-1].model) / 1e6:.2f} M non-embedding params")

    for v in variants:
        for _ in range(args.warmup):
            v.step()
    for _ in range(max(1, args.steps // args.steps_per_round)):
        for v in variants:
            v.timed(args.steps_per_round)

    tokens_per_step = args.batch * args.seq_len
    tps = {v.name: tokens_per_step / statistics.median(v.times) for v in variants}
    # tokens per CPU-second of this process: on a CPU shared with other jobs, the wall clock also counts the
    # time our threads sat descheduled; with --threads 1 this column is the load-insensitive one
    tpc = {v.name: tokens_per_step / statistics.median(v.cpu_times) for v in variants}
    spread = {v.name: (max(v.times) - min(v.times)) / statistics.median(v.times) for v in variants}
    print(f"\n{'variant':<14}{'tok/s':>10}{'TFLOP/s':>10}{'MFU':>8}{'peak':>7}{'spread':>8}{'tok/cpu-s':>11}")
    for v in variants:
        flops = tps[v.name] * fpt
        print(f"{v.name:<14}{tps[v.name]:>10,.0f}{flops / 1e12:>10.4f}{flops / peak[v.dtype]:>8.1%}"
              f"{v.dtype:>7}{spread[v.name]:>8.0%}{tpc[v.name]:>11,.0f}")
    print("(MFU = model FLOP/s / matmul peak of the variant's dtype; spread = (max-min)/median over rounds)\n")
    for label, rate in (("wall", tps), ("cpu-time", tpc)) if args.device == "cpu" else (("wall", tps),):
        for num, den, target in TARGETS:
            if num in rate and den in rate:
                ratio = rate[num] / rate[den]
                verdict = "PASS" if ratio >= target else "FAIL"
                print(f"{label:>8}: {num} / {den}: {ratio:.2f}x  (target >= {target}) {verdict}")


if __name__ == "__main__":
    main()
