"""One run, start to end: pretraining -> midtraining (the mixture) -> optional post-training.

Read top to bottom: set up, resume if a checkpoint exists, then one loop over optimizer steps in which the
mixture and LR schedules (pure functions of the step) decide the data and the learning rate, with held-out
evaluation at aligned token counts and phase ends, periodic and pinned checkpoints, and a clean stop on a
preemption signal or a non-finite loss.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sys
import time

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from midsweep import rundir
from midsweep.config import ConfigError, Problem, RunConfig
from midsweep.data import DataSourceError, load_tokenizer, prepare_domains
from midsweep.data.posttrain import PosttrainData, resolve_epochs
from midsweep.data.tokenizers import TokenizerError
from midsweep.data.sampler import MixtureSampler
from midsweep.model import build_model, count_params, flops_per_token
from midsweep.schedules import LRSchedule, MixtureSchedule
from midsweep.train import checkpoint
from midsweep.train.async_save import CheckpointWriter
from midsweep.train.batches import loss_sum, make_batch, to_tensors
from midsweep.train.evaluate import heldout_loss
from midsweep.train.parallel import Parallel
from midsweep.train.sharing import ParentFailed, Sharing
from midsweep.train.progress import Progress
from midsweep.train.results import RunRecorder, losses_by_event
from midsweep.train.tracking import Tracking
from midsweep.version import code as code_version

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


class DataChanged(RuntimeError):
    """The token content of a domain differs from the one the checkpoint to resume from was trained on."""


def train(run: RunConfig, overrides: list[str] | None = None, interrupt=None) -> dict:
    """Train ``run`` in its run directory (resuming if possible) and return its summary.

    The run directory is held (``rundir.hold``) for the run's life: a second process on it exits with
    ``rundir.RunLocked`` naming the holder, or waits with ``train.wait_for_lock``.

    ``interrupt``: an object with ``requested() -> bool`` and ``checkpointed()`` (midsweep.launch.preemption):
    when any rank has been asked to stop, every rank saves a checkpoint, marks the run ``requeued`` and calls
    ``checkpointed()``, which hands over to the scheduler.
    """
    # accelerate runs several CPU ranks (gloo) only when told cpu=True
    cpu = run.train.device == "cpu" or not torch.cuda.is_available()
    precision = run.train.precision if run.train.precision != "auto" else ("bf16" if _native_bf16(cpu) else "fp32")
    accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=cpu)
    run_dir = run.run_dir()
    with _hold(run_dir, accelerator, run.train.wait_for_lock):
        if (rundir.read_status(run_dir) or {}).get("status") == "done":
            log.info("run %s is done already; nothing to do", run_dir)
            return rundir.read_summary(run_dir) or {}
        return _train(run, overrides, interrupt, accelerator, precision)


def _train(run: RunConfig, overrides: list[str] | None, interrupt, accelerator: Accelerator, precision: str) -> dict:
    """The run, its directory held. From here on every failure ends with status ``failed``, its step and reason."""
    run_dir = run.run_dir()
    rec = RunRecorder(run_dir, accelerator.is_main_process)
    world, L, tps = accelerator.num_processes, run.model.seq_len, run.tokens_per_step
    step, wall = rundir.latest_checkpoint(run_dir) or 0, 0.0  # the step to report until the resume says otherwise
    sampler = params = progress = track = sharing = post = None
    fpt, content = 0.0, {}
    rec.config(OmegaConf.to_yaml(OmegaConf.structured(run)))
    rec.status("running", step)

    def counts_tokens() -> dict:
        out = {d: n * L for d, n in sampler.counts.items() if n} if sampler else {}
        if post and post.drawn(step):
            out[post.domain] = out.get(post.domain, 0) + post.drawn(step) * L
        return out

    def evaluate(at: int, event: str) -> None:
        phase = schedule.phase_at(max(at - 1, 0))
        rows = [{"step": at, "tokens": run.tokens_at(at), "phase": phase, "domain": d, "event": event,
                 "loss": heldout_loss(model, data[d].heldout, L, run.eval.tokens, run.eval.batch, accelerator,
                                      compile_mode),
                 "lr": lr_at(max(at - 1, 0)), "tokens_by_domain": counts_tokens()}
                for d in run.eval_domains()]
        rec.append(rundir.METRICS, rows)
        track.evaluate(rows)

    def summary(status: str, reason: str | None = None) -> dict:
        final, phase_end = losses_by_event(rec.read_metrics()) if rec.enabled else ({}, {})
        out = {"run_id": run.run_id(), "experiment": run.name, "status": status, "reason": reason,
               "coords": run.coords(), "overrides": _overrides(overrides), "final": final, "phase_end": phase_end,
               "steps": step, "tokens": run.tokens_at(step), "tokens_by_domain": counts_tokens(),
               "flops": fpt * run.tokens_at(step), "wall_time_s": wall, "params": params, "precision": precision,
               "world_size": world, "prefix": sharing.record if sharing else None, "data": content,
               "code": code_version()}
        rec.summary(out)
        return out

    def failed(reason: str, status: str = "failed") -> None:  # or "interrupted": Ctrl-C, no checkpoint
        try:
            rec.status(status, step, reason)
            summary(status, reason)
        except Exception as err:  # e.g. a full disk: the error that ended the run must not be replaced by this one
            log.error("could not record the end of run %s (%s: %s): %s: %s", run_dir, status, reason,
                      type(err).__name__, err)

    writer = CheckpointWriter()

    def save() -> None:  # in the background; every exit below waits for it
        weights, moments = parallel.state_dicts(raw, optimizer)  # every rank: a sharded model gathers to rank 0
        if accelerator.is_main_process:
            at = step
            writer.save(run_dir, at, weights, moments,
                        {"step": at, "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                         "wall_time_s": wall, "data": content}, run.train.keep_last, pinned,
                        then=lambda: sharing.publish(at))  # before pruning: a publish step is not pinned
        accelerator.wait_for_everyone()

    try:
        if run.train.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError([Problem("train.device", "cuda asked for but no GPU is visible",
                                       "use train.device=auto")])
        shares = {"train.global_batch": _shares(run.train.global_batch, world, accelerator.process_index, run)}
        if run.posttrain.enabled:
            shares["posttrain.global_batch"] = _shares(run.posttrain_batch, world, accelerator.process_index, run)
        torch.use_deterministic_algorithms(run.train.deterministic, warn_only=True)
        torch.manual_seed(run.train.seed)

        # ---- data, schedules, model, optimizer
        schedule = MixtureSchedule(run)
        # Never tokenize behind a distributed barrier (it would time out): a multi-rank job with missing shards
        # fails at once naming `midsweep prepare`; a single process builds them (file-locked against other runs).
        data = prepare_domains(run.data, sorted(set(run.eval_domains()) | set(schedule.domains)), seq_len=L,
                               build=world == 1)
        if run.posttrain.enabled:  # posttrain.epochs: the step count of the prepared split (closures read this run)
            run = resolve_epochs(run, data[run.posttrain.domain].meta["train"])
        lr_at = LRSchedule(run, schedule)
        content = {d: data[d].content for d in sorted(data)}
        sampler = MixtureSampler(schedule, {d: data[d].train.num_sequences(L) for d in schedule.domains},
                                 run.train.seed, run.train.global_batch)
        tokenizer = load_tokenizer(run.data.tokenizer)
        vocab = tokenizer.vocab_size
        model = build_model(run.model, vocab)
        if run.train.init_from:
            model.load_state_dict(checkpoint.init_weights(run.train.init_from))
        compile_mode = run.train.compiled
        parallel = Parallel(run.train, accelerator, precision)
        model = parallel.wrap(model, compile_mode)  # sharded in place under fsdp/hsdp: the optimizer comes after
        optimizer = _adamw(model, run, accelerator.device.type == "cuda")
        model, optimizer = parallel.prepare(model, optimizer)
        raw = parallel.unwrap(model)
        model = parallel.compile(model, compile_mode)
        params = count_params(raw)
        fpt = flops_per_token(run.model, vocab)

        # ---- a fork: rank 0 places the longest published prefix of this run (docs/sharing.md) to resume from
        sharing = Sharing(run, run_dir, accelerator.is_main_process)
        with accelerator.main_process_first():
            parent_failed = sharing.prepare()
        if _any_rank(accelerator, parent_failed is not None):
            raise parent_failed or ParentFailed("the run this run forks from failed (see rank 0)")

        # ---- resume: from the newest checkpoint that loads, the records cut back to it (rows stay unique)
        step, wall = 0, 0.0
        found = checkpoint.load_latest(run_dir)
        if found:
            step, ckpt = found
            _check_same_data(ckpt["state"].get("data") or {}, content, step, run_dir, sharing.record)
            parallel.load_state_dicts(raw, optimizer, ckpt["model"], ckpt["optimizer"])
            sampler.load_state(ckpt["state"]["sampler"])
            torch.set_rng_state(ckpt["state"]["torch_rng"])
            wall = float(ckpt["state"]["wall_time_s"])
            log.info("resuming %s from step %d", run_dir, step)
        rec.rewind(step if found else None)
        rec.status("running", step)

        # ---- the plan: when to evaluate and which checkpoints to keep
        total, every = run.total_steps, run.eval.every_tokens // tps
        boundaries = [b for b in schedule.boundaries() if b <= total]
        pinned = set(boundaries) | set(run.train.pin_steps) | {total}
        eval_at = {s: "every" for s in range(every, total + 1, every)} | {b: "phase_end" for b in boundaries}
        eval_at[total] = "final"
        checkpointed = pinned | sharing.publish_steps
        sharing.claim(step)
        sharing.publish(step)  # steps a resumed run has passed while its checkpoints are still here

        track = Tracking(run, rec, step if found else None, total, _overrides(overrides))
        if step == 0:
            evaluate(0, "init")
        elif step in eval_at and not any(r["step"] == step for r in rundir.read_jsonl(run_dir / rundir.METRICS)):
            evaluate(step, eval_at[step])  # a fork, at a step its plan evaluates and its parent's may not
        progress = Progress(total, step, tps, enabled=run.train.progress and accelerator.is_main_process)
        start = run.posttrain_start if run.posttrain.enabled else total
        if step >= start:  # resumed in post-training
            post = _posttrain_data(run, data, sampler, start, tokenizer.eos_id)
        stopped = False
        # Nothing is read back from the device between checks (every log_every steps, and before every
        # evaluation, checkpoint and the end), so the GPU never idles waiting for the host. A non-finite loss is
        # remembered on the device as its step (``total``: none yet) and raised at the next check.
        first_bad = torch.full((), total, dtype=torch.long, device=accelerator.device)
        last_check, last_row = step, (step, wall)
        if interrupt is not None:
            interrupt.arm()
        while step < total:
            t0 = time.perf_counter()
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if step == start:  # post-training starts: its own data order, RNG and, when fresh, optimizer
                post = _posttrain_data(run, data, sampler, start, tokenizer.eos_id)
                torch.manual_seed(run.posttrain_seed)
                if run.posttrain.optimizer == "fresh":
                    optimizer.state.clear()  # zero moments and step counts: a new AdamW's first step
            if post is None:
                mine, micro = shares["train.global_batch"]
                x, y, m = make_batch(data, sampler.next_batch(step)[mine], L, False, accelerator.device)
            else:
                mine, micro = shares["posttrain.global_batch"]
                pairs = [post.sequence(i, run.posttrain.mask_prompt) for i in post.items(step)[mine]]
                x, y, m = to_tensors(*zip(*pairs), accelerator.device)
            # Normalise by the whole global batch's counted tokens, so the update is the same for any rank count.
            counted = accelerator.reduce(m.sum().double(), reduction="sum")
            loss_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            for i, part in enumerate(micro):
                with parallel.no_sync(model, i == len(micro) - 1), accelerator.autocast():
                    loss = loss_sum(model, x[part], y[part], m[part], compile_mode) * world / counted
                    accelerator.backward(loss)
                loss_total += loss.detach().double() / world
            grad_norm = parallel.clip_grad_norm_(model, run.optim.grad_clip or float("inf"))
            first_bad = torch.where(torch.isfinite(loss_total), first_bad, first_bad.clamp(max=step))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            periodic = run.train.checkpoint_every and step % run.train.checkpoint_every == 0
            check = (step % run.train.log_every == 0 or step == total or step in eval_at or periodic
                     or step in checkpointed)
            if check:  # the first step with a non-finite loss on any rank; the loss summed over ranks
                bad = int(accelerator.gather(first_bad[None]).min())
                if bad < total:
                    checked_at, step = step, bad  # what was trained after step ``bad`` is void
                    raise NonFiniteLoss(f"non-finite loss at step {bad} (found at the check after step {checked_at})")
                loss_value = float(accelerator.reduce(loss_total, reduction="sum"))
            wall += time.perf_counter() - t0
            if check:
                progress.update(loss_value, schedule.phase_at(step - 1), steps=step - last_check)
                last_check = step
            if step % run.train.log_every == 0 or step == total:
                # the rate of the training steps since the last row: steady state, evaluations excluded
                rate = (run.tokens_at(step) - run.tokens_at(last_row[0])) / max(wall - last_row[1], 1e-9)
                row = {"step": step, "tokens": run.tokens_at(step), "phase": schedule.phase_at(step - 1),
                       "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "tok_per_s": rate}
                rec.append(rundir.TRAIN_LOG_JSONL, [row])
                track.train(row, progress.tokens_per_s())
                last_row = step, wall
            if step in eval_at:
                evaluate(step, eval_at[step])
                summary("running")
                rec.status("running", step)
            if periodic or step in checkpointed:
                save()
            # at the last step the run is complete: finishing it costs less than a requeue to write its summary
            if interrupt is not None and check and step < total and _any_rank(accelerator, interrupt.requested()):
                if not (periodic or step in checkpointed):
                    save()
                writer.wait()
                rec.status(*interrupt.stop_status(step))
                stopped = True
                break
        writer.wait()
    except NonFiniteLoss as err:
        failed(f"{err}. Fix: lower optim.lr, lengthen optim.warmup or use train.precision=fp32; "
               "metrics up to this step are kept")
        raise
    # the user's to fix, as the message says: rerunning as is does not help
    except (DataChanged, rundir.CorruptCheckpoint, ConfigError, DataSourceError, TokenizerError) as err:
        failed(str(err))
        raise
    except KeyboardInterrupt:  # Ctrl-C in set-up, or twice: stopped now, the steps since the last checkpoint are lost
        last = rundir.latest_checkpoint(run_dir)
        failed(f"stopped by Ctrl-C at step {step}, before its next checkpoint; rerunning the same command resumes "
               + (f"from its checkpoint of step {last}" if last is not None else "from the start"), "interrupted")
        raise
    except BaseException as err:
        writer.wait(raise_error=False)  # a checkpoint in flight is complete or removed: on a full disk, space to record
        full = _disk_full(err, run_dir)
        if full is None:
            failed(f"{type(err).__name__}: {err}".splitlines()[0][:300]
                   + "; rerunning the same command resumes from the last checkpoint")
            raise
        failed(str(full))
        raise full from err
    finally:
        writer.wait(raise_error=False)
        if progress is not None:
            progress.close()
        if track is not None:
            track.close(sys.exc_info()[1])
    if stopped:
        out = summary(interrupt.stop_status(step)[0])
        interrupt.checkpointed()  # hands over to the scheduler (submitit requeues the job and exits)
        return out
    out = summary("done")
    rec.status("done", step)
    return out


def _disk_full(err: BaseException, run_dir) -> rundir.DiskFull | None:
    """A DiskFull naming the file system and the fix if ``err`` (or an error that caused it) is ENOSPC/EDQUOT."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            break
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    else:
        return None
    where, free = err.filename or run_dir, shutil.disk_usage(run_dir).free >> 20
    last = rundir.latest_checkpoint(run_dir)
    return rundir.DiskFull(
        f"the disk is full: {err.strerror} writing {where} ({free} MiB free now). Fix: free space there (or set "
        "train.out_dir elsewhere) and rerun the same command: finished runs are skipped and this one resumes from "
        + (f"its checkpoint of step {last}" if last is not None else "the start"))


def _check_same_data(trained: dict, now: dict, step: int, run_dir, prefix: dict | None) -> None:
    """Raise ``DataChanged`` if a domain's content (``DomainData.content``; None: unknown) is not the one the
    checkpoint of ``step`` was trained on: the resumed run would mix two datasets under one run id."""
    changed = [f"{d} ({was} -> {now[d]})" for d, was in trained.items() if was and now.get(d) and now[d] != was]
    if changed:
        where = f"{run_dir}" + (f" and its shared prefix {prefix['entry']}" if prefix else "")
        raise DataChanged(
            f"the data of domain(s) {', '.join(changed)} changed since the checkpoint of step {step} was saved; "
            "resuming would train on other data than its first steps. Fix: restore the data it was trained on "
            f"(the same files, dataset revision and tokenizer), or delete {where} to train it anew on the new data")


@contextlib.contextmanager
def _hold(run_dir, accelerator: Accelerator, wait: bool):
    """Rank 0 holds the run directory for the block; if it cannot, every rank raises ``rundir.RunLocked``."""
    with contextlib.ExitStack() as held:
        refused = None
        if accelerator.is_main_process:
            try:
                held.enter_context(rundir.hold(run_dir, wait))
            except rundir.RunLocked as err:
                refused = err
        if _any_rank(accelerator, refused is not None):
            raise refused or rundir.RunLocked(f"run directory {run_dir} is held by another process (see rank 0)")
        yield


def _shares(batch: int, world: int, rank: int, run: RunConfig) -> tuple[slice, list[slice]]:
    """This rank's rows of a global batch of ``batch`` sequences and its micro-batches within them."""
    size = run.train.micro_batch
    per_rank, rem = divmod(batch, world * size)
    if rem or per_rank == 0:
        key = "posttrain.global_batch" if batch != run.train.global_batch else "train.global_batch"
        raise ConfigError([Problem(key, f"{batch} sequences do not split into {world} ranks x micro_batch {size}",
                                   "make it a multiple of train.micro_batch x ranks")])
    mine = slice(rank * per_rank * size, (rank + 1) * per_rank * size)
    return mine, [slice(i * size, (i + 1) * size) for i in range(per_rank)]


def _posttrain_data(run: RunConfig, data: dict, sampler: MixtureSampler, start: int, eos_id: int) -> PosttrainData:
    """Post-training's data; packed, it continues the domain's count of main training (frozen from ``start``)."""
    p = run.posttrain
    return PosttrainData(data[p.domain].train, p.domain, run.model.seq_len, seed=run.posttrain_seed,
                         batch=run.posttrain_batch, start=start,
                         first=sampler.counts.get(p.domain, 0) if p.packing else 0, packing=p.packing,
                         eos_id=eos_id)


def _adamw(model: torch.nn.Module, run: RunConfig, fused: bool) -> torch.optim.Optimizer:
    o = run.optim
    decay = [p for p in model.parameters() if p.requires_grad and (p.dim() >= 2 or o.decay_all)]
    no_decay = [p for p in model.parameters() if p.requires_grad and not (p.dim() >= 2 or o.decay_all)]
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
