"""One run, start to end: pretraining -> midtraining (the mixture) -> optional post-training.

Read top to bottom: set up, resume if a checkpoint exists, then one loop over optimizer steps in which the
mixture and LR schedules (pure functions of the step) decide the data and the learning rate, with held-out
evaluation at aligned token counts and phase ends, periodic and pinned checkpoints, and a clean stop on a
preemption signal or a non-finite loss.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from midsweep.config import ConfigError, Problem, RunConfig
from midsweep.data import load_tokenizer, prepare_domains
from midsweep.data.sampler import MixtureSampler
from midsweep.model import build_model, count_params, flops_per_token
from midsweep.schedules import LRSchedule, MixtureSchedule
from midsweep.train import checkpoint
from midsweep.train.batches import loss_sum, make_batch
from midsweep.train.evaluate import heldout_loss
from midsweep.train.progress import Progress
from midsweep.train.results import RunRecorder, losses_by_event, read_status, read_summary

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def train(run: RunConfig, overrides: list[str] | None = None, interrupt=None) -> dict:
    """Train ``run`` in its run directory (resuming if possible) and return its summary.

    ``interrupt``: an object with ``requested() -> bool`` and ``checkpointed()`` (midsweep.launch.preemption):
    when any rank has been asked to stop, every rank saves a checkpoint, marks the run ``requeued`` and calls
    ``checkpointed()``, which hands over to the scheduler.
    """
    run_dir = run.run_dir()
    if (read_status(run_dir) or {}).get("status") == "done":
        log.info("run %s is done already; nothing to do", run_dir)
        return read_summary(run_dir) or {}

    if run.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError([Problem("train.device", "cuda asked for but no GPU is visible", "use train.device=auto")])
    # accelerate runs several CPU ranks (gloo) only when told cpu=True
    cpu = run.train.device == "cpu" or not torch.cuda.is_available()
    precision = run.train.precision if run.train.precision != "auto" else ("bf16" if _native_bf16(cpu) else "fp32")
    accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=cpu)
    world = accelerator.num_processes
    per_rank, rem = divmod(run.train.global_batch, world * run.train.micro_batch)
    if rem or per_rank == 0:
        raise ConfigError([Problem("train.global_batch", f"{run.train.global_batch} sequences do not split into "
                                   f"{world} ranks x micro_batch {run.train.micro_batch}",
                                   "make global_batch a multiple of micro_batch x ranks")])
    rec = RunRecorder(run_dir, accelerator.is_main_process)
    torch.use_deterministic_algorithms(run.train.deterministic, warn_only=True)
    torch.manual_seed(run.train.seed)

    # ---- data, schedules, model, optimizer
    schedule = MixtureSchedule(run)
    lr_at = LRSchedule(run, schedule)
    with accelerator.main_process_first():  # rank 0 tokenizes, the others reuse its cache
        data = prepare_domains(run.data, sorted(set(run.eval_domains()) | set(schedule.domains)))
    L, tps = run.model.seq_len, run.tokens_per_step
    sampler = MixtureSampler(schedule, {d: data[d].train.num_sequences(L) for d in schedule.domains},
                             run.train.seed, run.train.global_batch)
    vocab = load_tokenizer(run.data.tokenizer).vocab_size
    model = build_model(run.model, vocab)
    if run.train.init_from:
        model.load_state_dict(checkpoint.load(checkpoint.resolve_init(run.train.init_from), False)["model"])
    optimizer = _adamw(model, run, accelerator.device.type == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    if run.train.compile:
        model = torch.compile(model)

    # ---- resume
    step, wall = 0, 0.0
    found = checkpoint.load_latest(run_dir)
    if found:
        step, ckpt = found
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.load_state(ckpt["state"]["sampler"])
        torch.set_rng_state(ckpt["state"]["torch_rng"])
        wall = float(ckpt["state"]["wall_time_s"])
        rec.truncate_after(step)
        log.info("resuming %s from step %d", run_dir, step)
    rec.config(OmegaConf.to_yaml(OmegaConf.structured(run)))
    rec.status("running", step)

    # ---- the plan: when to evaluate and which checkpoints to keep
    total, every = run.total_steps, run.eval.every_tokens // tps
    boundaries = [b for b in schedule.boundaries() if b <= total]
    pinned = set(boundaries) | set(run.train.pin_steps) | {total}
    eval_at = {s: "every" for s in range(every, total + 1, every)} | {b: "phase_end" for b in boundaries}
    eval_at[total] = "final"
    params = count_params(raw)
    fpt = flops_per_token(run.model, vocab)

    def counts_tokens() -> dict:
        return {d: n * L for d, n in sampler.counts.items() if n}

    def evaluate(at: int, event: str) -> None:
        phase = schedule.phase_at(max(at - 1, 0))
        rows = [{"step": at, "tokens": at * tps, "phase": phase, "domain": d, "event": event,
                 "loss": heldout_loss(model, data[d].heldout, L, run.eval.tokens, run.eval.batch, accelerator),
                 "lr": lr_at(max(at - 1, 0)), "tokens_by_domain": counts_tokens()}
                for d in run.eval_domains()]
        rec.append("metrics.jsonl", rows)

    def summary(status: str, reason: str | None = None) -> dict:
        final, phase_end = losses_by_event(rec.read_metrics()) if rec.enabled else ({}, {})
        out = {"run_id": run.run_id(), "experiment": run.name, "status": status, "reason": reason,
               "coords": run.coords(), "overrides": _overrides(overrides), "final": final, "phase_end": phase_end,
               "steps": step, "tokens": step * tps, "tokens_by_domain": counts_tokens(),
               "flops": fpt * step * tps, "wall_time_s": wall, "params": params, "precision": precision,
               "world_size": world}
        rec.summary(out)
        return out

    def save() -> None:
        if accelerator.is_main_process:
            checkpoint.save(run_dir, step, raw.state_dict(), optimizer.state_dict(),
                            {"step": step, "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                             "wall_time_s": wall})
            checkpoint.prune(run_dir, run.train.keep_last, pinned)
        accelerator.wait_for_everyone()

    if step == 0:
        evaluate(0, "init")
    progress = Progress(total, step, tps, enabled=run.train.progress and accelerator.is_main_process)
    micro = [slice(i * run.train.micro_batch, (i + 1) * run.train.micro_batch) for i in range(per_rank)]
    mine = slice(accelerator.process_index * per_rank * run.train.micro_batch,
                 (accelerator.process_index + 1) * per_rank * run.train.micro_batch)
    stopped = False
    try:
        while step < total:
            t0 = time.perf_counter()
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            posttrain = step >= run.main_steps
            items = sampler.next_batch(step)[mine]
            x, y, m = make_batch(data, items, L, posttrain and run.posttrain.mask_prompt, accelerator.device)
            # Normalise by the whole global batch's counted tokens, so the update is the same for any rank count.
            counted = accelerator.reduce(m.sum().double(), reduction="sum")
            loss_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            for i, part in enumerate(micro):
                sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    loss = loss_sum(model(x[part]), y[part], m[part]) * world / counted
                    accelerator.backward(loss)
                loss_total += loss.detach().double() / world
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), run.optim.grad_clip or float("inf"))
            loss_value = float(accelerator.reduce(loss_total, reduction="sum"))
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(f"non-finite loss ({loss_value}) at step {step}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            wall += time.perf_counter() - t0
            progress.update(loss_value, schedule.phase_at(step - 1))
            if step % run.train.log_every == 0 or step == total:
                rec.append("train.jsonl", [{"step": step, "tokens": step * tps, "phase": schedule.phase_at(step - 1),
                                            "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                                            "tok_per_s": progress.tokens_per_s()}])
            if step in eval_at:
                evaluate(step, eval_at[step])
                summary("running")
                rec.status("running", step)
            periodic = run.train.checkpoint_every and step % run.train.checkpoint_every == 0
            if periodic or step in pinned:
                save()
            if interrupt is not None and _any_rank(accelerator, interrupt.requested()):
                if not (periodic or step in pinned):
                    save()
                rec.status("requeued", step, "stopped by a preemption/timeout signal; resumes from this step")
                stopped = True
                break
    except NonFiniteLoss as err:
        reason = (f"{err}. Fix: lower optim.lr, lengthen optim.warmup or use train.precision=fp32; "
                  "metrics up to this step are kept")
        rec.status("failed", step, reason)
        summary("failed", reason)
        raise
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        rec.status("failed", step, reason + "; rerunning the same command resumes from the last checkpoint")
        summary("failed", reason)
        raise
    finally:
        progress.close()
    if stopped:
        out = summary("requeued")
        interrupt.checkpointed()  # hands over to the scheduler (submitit requeues the job and exits)
        return out
    out = summary("done")
    rec.status("done", step)
    return out


def _adamw(model: torch.nn.Module, run: RunConfig, fused: bool) -> torch.optim.Optimizer:
    o = run.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused or None)


def _native_bf16(cpu: bool) -> bool:
    if not cpu:
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _any_rank(accelerator: Accelerator, flag: bool) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _overrides(overrides: list[str] | None) -> dict:
    out = {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out
