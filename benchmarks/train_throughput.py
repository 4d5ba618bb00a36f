"""Training throughput as users get it: the real loop end to end, its evaluation and checkpoint costs, and the
model step alone (eager and each torch.compile mode, fused and plain loss, built-in and transformers model).

The run is the one ``--run`` composes (Hydra overrides, as on the midsweep-train command line); its shape,
precision, compile flag and mode and evaluation/checkpoint cadence are the ones measured.

1. hardware: CPU model and bf16 flags, GPU name, torch version; the bf16/fp32 matmul peak measured here and the
   bf16 spec peak of a known GPU (H100 SXM: 989 TFLOP/s dense; none on CPU).
2. loop: ``python -m midsweep.train`` runs of --steps S1,S2 steps (evaluation and a checkpoint only at the start
   and end). Steady-state time per step = (wall(S2) - wall(S1)) / (S2 - S1) from summary.json's wall_time_s
   (training steps only): compilation and warm-up cancel out.
3. cadence: one evaluation of every domain (heldout_loss, after a warm-up) and one checkpoint (the loop's
   stall: copying the state to CPU; the write runs in a background thread) at the run's shape, each as a
   fraction of run time at the run's cadence (eval.every_tokens, train.checkpoint_every).
4. model step: full training steps (forward, loss, backward, AdamW) on random tokens, eager or in a torch.compile
   mode (the model and the fused loss's chunks, as train.compile does), variants timed round-robin (a few steps
   each, repeatedly; median over rounds) so that other load hits all alike.
Memory: peak allocated on CUDA; everywhere, the activations autograd saves for one forward (unique storages,
parameters excluded), which is what the fused loss shrinks. On a CPU shared with other jobs read tok/cpu-s.

    .venv/bin/python benchmarks/train_throughput.py                       # nano_test on CPU
    .venv/bin/python benchmarks/train_throughput.py --run "experiment=pythia160m_code data=builtin \\
        train.micro_batch=32 train.global_batch=128" --steps 30,90 --vocab 50304   # the GPU targets (issue 11)
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from midsweep import rundir
from midsweep.model import build_model, count_params, flops_per_token
from midsweep.model import loss as fused_loss
from midsweep.train.batches import loss_sum
from midsweep.train.loop import _native_bf16

REPO = Path(__file__).resolve().parent.parent
SPEC_BF16_TFLOPS = [("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989), ("A100", 312)]
"""Dense bf16 tensor-core peaks from the vendor's data sheets (SXM unless named), first match wins."""
MFU_TARGETS = {"160m": 0.50, "410m": 0.62}
"""Issue 11: MFU of the loop against the measured bf16 matmul peak at seq 2048, vocabulary 50304 (and for 160m
at micro-batch 32, peak memory under 40 GB)."""


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def hardware(device: str) -> float | None:
    """Print what this runs on; return the bf16 spec peak (FLOP/s) where known."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f") if f" {f}" in info})
    print(f"cpu: {model}; {os.cpu_count()} logical cores; flags: {', '.join(flags) or 'no avx512/amx'}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"torch {torch.__version__}; cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((t * 1e12 for key, t in SPEC_BF16_TFLOPS if key in name), None)


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best observed FLOP/s of an n x n matmul in ``dtype``."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from midsweep.app import CONF_DIR
    from midsweep.config import to_run_config

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_run_config(hydra_compose("config", overrides=overrides))


def saved_activation_bytes(fn) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for backward while ``fn`` runs."""
    seen: dict[int, int] = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


# ---------------------------------------------------------------- 2. the loop end to end

def loop_seconds_per_step(run_args: list[str], run, steps: tuple[int, int], device: str) -> dict:
    tps = run.tokens_per_step
    walls, elapsed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in steps:
            cmd = [sys.executable, "-m", "midsweep.train", *run_args, f"train.tokens={n * tps}",
                   f"eval.every_tokens={n * tps}", "train.checkpoint_every=0", "posttrain=none",
                   f"train.device={device}", f"train.out_dir={tmp}/s{n}", f"hydra.run.dir={tmp}/h{n}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"loop run failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
            elapsed[n] = time.perf_counter() - t0
            (run_dir,) = rundir.run_dirs(Path(tmp) / f"s{n}")
            walls[n] = rundir.read_summary(run_dir)["wall_time_s"]
    (s1, s2) = steps
    per_step = (walls[s2] - walls[s1]) / (s2 - s1)
    for n in steps:
        print(f"  {n:>5} steps: {walls[n]:8.2f} s in training steps, {elapsed[n]:8.2f} s process "
              f"(start-up, data, first/last evaluation, final checkpoint: {elapsed[n] - walls[n]:.2f} s)")
    return {"per_step": per_step, "tok_s": tps / per_step}


# ---------------------------------------------------------------- 3. evaluation and checkpoint cadence

def cadence_costs(run, vocab: int, device: str, precision: str) -> dict:
    from accelerate import Accelerator

    from midsweep.data import prepare_domains
    from midsweep.data.sampler import MixtureSampler
    from midsweep.schedules import MixtureSchedule
    from midsweep.train.checkpoint import Checkpointer
    from midsweep.train.evaluate import heldout_loss
    from midsweep.train.sharing import Sharing
    from midsweep.train.state import TrainState

    L = run.model.seq_len
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    data = prepare_domains(run.data, run.eval_domains(), seq_len=L)
    torch.manual_seed(0)
    model = build_model(run.model, vocab).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    model, optimizer = accelerator.prepare(model, optimizer)
    mode = run.train.compiled
    forward = torch.compile(model, mode=mode) if mode else model
    x = torch.randint(0, vocab, (run.train.micro_batch, L), device=accelerator.device)
    with accelerator.autocast():
        loss_sum(forward, x, x, torch.ones_like(x, dtype=torch.float32), mode).backward()
    optimizer.step()  # the optimizer state exists, as in a checkpoint of a real run

    def evaluate() -> None:
        for d in run.eval_domains():
            heldout_loss(forward, data[d].heldout, L, run.eval.tokens, run.eval.batch, accelerator,
                         mode)

    evaluate()  # warm-up (compiles the evaluation graph)
    eval_s = statistics.median(_timed(evaluate, device) for _ in range(3))
    schedule = MixtureSchedule(run)
    sampler = MixtureSampler(schedule, {d: 1 for d in schedule.domains}, run.train.seed, run.train.global_batch)
    state = TrainState(sampler, {})
    raw = accelerator.unwrap_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        writer = Checkpointer(Path(tmp), 1, 1, set(), Sharing(run, Path(tmp), main=True), main=True)
        stalls = []
        for step in range(1, 4):
            writer.wait()  # the previous write is not part of the stall
            stalls.append(_timed(lambda step=step: writer.save(step, raw, optimizer, state), device))
        stall, write = statistics.median(stalls), _timed(writer.wait, device)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return {"eval_s": eval_s, "stall_s": stall, "write_s": write, "ckpt_bytes": size}


def _timed(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- 4. the model step

class Variant:
    """One model + loss + compile mode + precision, able to run timed training steps."""

    def __init__(self, backend: str, loss: str, mode: str, run, vocab: int, precision: str, args):
        torch.manual_seed(0)
        self.name = f"{backend}-{loss}-{mode}"
        self.device, self.bf16, self.fused = args.device, precision == "bf16", loss == "fused"
        self.mode = None if mode == "eager" else mode  # torch.compile's mode, for the model and the loss chunks
        self.model = build_model(replace(run.model, backend=backend), vocab).to(args.device)
        self.forward = torch.compile(self.model, mode=self.mode) if self.mode else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        self.tokens = torch.randint(0, vocab, (run.train.micro_batch, run.model.seq_len + 1), device=args.device)
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.peak_bytes: int | None = None
        self.saved_bytes = 0

    def loss(self) -> torch.Tensor:
        x, y = self.tokens[:, :-1], self.tokens[:, 1:]
        with torch.autocast(self.device, dtype=torch.bfloat16) if self.bf16 else nullcontext():
            if self.fused:
                ones = torch.ones_like(y, dtype=torch.float32)
                return loss_sum(self.forward, x, y, ones, self.mode) / y.numel()
            return F.cross_entropy(self.forward(x).float().flatten(0, 1), y.flatten())

    def step(self) -> None:
        self.loss().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def warm_up(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.step()
            sync(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated()
        self.saved_bytes = saved_activation_bytes(self.loss)

    def timed(self, steps: int) -> None:
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        sync(self.device)
        self.times.append((time.perf_counter() - t0) / steps)
        self.cpu_times.append((time.process_time() - c0) / steps)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="experiment=nano_test", help="Hydra overrides of the run to measure")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sections", default="loop,cadence,model", help="comma list of loop,cadence,model")
    ap.add_argument("--steps", default="10,30", help="short,long loop runs (steps) whose difference is timed")
    ap.add_argument("--vocab", type=int, default=None, help="model step: vocabulary (default: the run's tokenizer)")
    ap.add_argument("--backends", default="builtin", help="model step: comma list of builtin,hf")
    ap.add_argument("--losses", default="fused,plain", help="model step: comma list of fused,plain")
    ap.add_argument("--modes", default="eager,default", help="model step: comma list of eager and torch.compile "
                    "modes (default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs)")
    ap.add_argument("--chunk-elements", type=int, default=None,
                    help="model step: logits per chunk of the fused loss "
                    "(default midsweep.config.model.LOSS_CHUNK_ELEMENTS)")
    ap.add_argument("--model-steps", type=int, default=12, help="model step: timed steps per variant")
    ap.add_argument("--steps-per-round", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_elements:
        fused_loss.LOSS_CHUNK_ELEMENTS = args.chunk_elements
    sections = set(args.sections.split(","))

    from midsweep.data import load_tokenizer

    run_args = shlex.split(args.run)
    run = compose([*run_args, f"train.device={args.device}"])
    run_vocab = load_tokenizer(run.data.tokenizer).vocab_size
    shape = run.model.resolved()
    spec = hardware(args.device)
    n, reps = (8192, 20) if args.device == "cuda" else (1024, 5)
    peak = {name: matmul_peak(args.device, dt, n, reps)
            for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    precision = run.train.precision if run.train.precision != "auto" else (
        "bf16" if _native_bf16(args.device == "cpu") else "fp32")  # as the loop decides
    print(f"matmul peak ({n}^3): bf16 {peak['bf16'] / 1e12:.3f}, fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s measured; "
          f"bf16 spec: {'n/a' if spec is None else f'{spec / 1e12:.0f} TFLOP/s'}")
    print(f"run: {args.run} -> {run.model.size} {run.model.arch} layers={shape.n_layers} d={shape.d_model} "
          f"seq={run.model.seq_len} micro={run.train.micro_batch} global={run.train.global_batch} "
          f"precision={precision} compile={run.train.compile} vocab={run_vocab} log_every={run.train.log_every}")

    def mfu(tok_s: float, vocab: int) -> tuple[float, float | None]:
        flops = tok_s * flops_per_token(run.model, vocab)
        return flops / peak[precision], (flops / spec if spec and precision == "bf16" else None)

    def verdict(measured_mfu: float, vocab: int) -> str:
        target = MFU_TARGETS.get(run.model.size)
        if target is None or (run.model.seq_len, vocab, precision) != (2048, 50304, "bf16"):
            return ""
        return f"  target >= {target:.0%}: {'PASS' if measured_mfu >= target else 'FAIL'}"

    loop = None
    if "loop" in sections:
        steps = tuple(int(s) for s in args.steps.split(","))
        print(f"\n== loop end to end (python -m midsweep.train, {steps[0]} vs {steps[1]} steps)")
        loop = loop_seconds_per_step(run_args, run, steps, args.device)
        m, s = mfu(loop["tok_s"], run_vocab)
        print(f"  steady state: {loop['per_step'] * 1e3:.1f} ms/step, {loop['tok_s']:,.0f} tok/s, "
              f"MFU {pct(m)} of measured {precision} peak, {pct(s)} of spec{verdict(m, run_vocab)}")

    if "cadence" in sections:
        print("\n== evaluation and checkpoint cost at the run's cadence")
        c = cadence_costs(run, run_vocab, args.device, precision)
        every = run.eval.every_tokens // run.tokens_per_step
        print(f"  one evaluation ({len(run.eval_domains())} domains x {run.eval.tokens} tokens, batch "
              f"{run.eval.batch}): {c['eval_s']:.3f} s, every {every} steps")
        print(f"  one checkpoint ({c['ckpt_bytes'] / 1e6:.1f} MB): the loop stalls {c['stall_s']:.3f} s (copy to "
              f"CPU), the background write takes {c['write_s']:.3f} s more, every {run.train.checkpoint_every} steps")
        if loop is not None:
            step_s = loop["per_step"]
            eval_f = c["eval_s"] / (c["eval_s"] + every * step_s)
            ckpt_f = (c["stall_s"] / (c["stall_s"] + run.train.checkpoint_every * step_s)
                      if run.train.checkpoint_every else 0.0)
            print(f"  share of run time: evaluation {eval_f:.1%}, checkpoint stalls {ckpt_f:.1%} "
                  f"(target: together <= 5%)")

    if "model" in sections:
        vocab = args.vocab or run_vocab
        print(f"\n== model step (vocab {vocab}; flops/token {flops_per_token(run.model, vocab) / 1e6:.1f} M; fused "
              f"loss chunks of {fused_loss.LOSS_CHUNK_ELEMENTS // vocab} tokens, compiled as the model is)")
        variants = []
        for backend in args.backends.split(","):
            for loss in args.losses.split(","):
                for mode in args.modes.split(","):
                    v = Variant(backend, loss, mode, run, vocab, precision, args)
                    try:
                        v.warm_up(args.warmup)
                    except Exception as err:  # e.g. no C++ compiler for torch.compile on this machine
                        print(f"  {v.name}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
                        continue
                    variants.append(v)
        print(f"  built: {count_params(variants[0].model) / 1e6:.2f} M non-embedding params" if variants else "")
        for _ in range(max(1, args.model_steps // args.steps_per_round)):
            for v in variants:
                v.timed(args.steps_per_round)
        tokens = run.train.micro_batch * run.model.seq_len
        print(f"\n  {'variant':<44}{'tok/s':>11}{'MFU meas':>9}{'MFU spec':>9}{'spread':>8}{'tok/cpu-s':>11}"
              f"{'saved MB':>10}{'peak MB':>9}")
        for v in variants:
            tok_s = tokens / statistics.median(v.times)
            m, s = mfu(tok_s, vocab)
            spread = (max(v.times) - min(v.times)) / statistics.median(v.times)
            peak_mb = "n/a" if v.peak_bytes is None else f"{v.peak_bytes / 2**20:,.0f}"
            print(f"  {v.name:<44}{tok_s:>11,.0f}{pct(m):>9}{pct(s):>9}{spread:>8.0%}"
                  f"{tokens / statistics.median(v.cpu_times):>11,.0f}{v.saved_bytes / 2**20:>10,.1f}{peak_mb:>9}"
                  f"{verdict(m, vocab)}")
        print("  (MFU = model FLOP/s / peak of the run's precision; saved MB = activations kept for backward "
              "by one micro-batch; peak MB = CUDA peak allocated over a step)")


if __name__ == "__main__":
    main()
