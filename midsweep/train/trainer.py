"""One run's training: its parts (data, schedules, model, optimizer, TrainState, checkpointer, prefix sharing),
set up once by ``Trainer``; ``Trainer.fit`` resumes and runs the optimizer steps, in which the mixture and LR
schedules (pure functions of the step) decide the data and the learning rate, with held-out evaluation at aligned
token counts and phase ends, checkpoints (midsweep.train.checkpoint decides which) and a clean stop on a
preemption signal or a non-finite loss. What the run records at its end is midsweep.train.loop's.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator

from midsweep import rundir
from midsweep.config import ConfigError, Problem, RunConfig
from midsweep.data import load_tokenizer, prepare_domains
from midsweep.data.posttrain import PosttrainData, resolve_epochs
from midsweep.data.sampler import MixtureSampler
from midsweep.model import build_model, count_params, flops_per_token
from midsweep.schedules import LRSchedule, MixtureSchedule
from midsweep.train import agreement, checkpoint
from midsweep.train.batches import loss_sum, make_batch, to_tensors
from midsweep.train.evaluate import heldout_loss
from midsweep.train.parallel import Parallel
from midsweep.train.progress import Progress
from midsweep.train.results import logs_train_row
from midsweep.train.sharing import ParentFailed, Sharing
from midsweep.train.state import TrainState
from midsweep.train.tracking import Tracking

if TYPE_CHECKING:
    from midsweep.train.loop import Report

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The loss of a step was NaN or infinite on some rank."""


class DataChanged(RuntimeError):
    """The token content of a domain differs from the one the checkpoint to resume from was trained on."""


class Trainer:
    """One run's parts (data, schedules, model, optimizer, TrainState, checkpointer, prefix sharing), set up
    by the constructor; ``fit`` resumes and trains."""

    def __init__(self, run: RunConfig, report: Report, accelerator: Accelerator, interrupt):
        self.report, self.rec, self.accelerator, self.interrupt = report, report.rec, accelerator, interrupt
        self.run_dir, world, rank = report.run_dir, accelerator.num_processes, accelerator.process_index
        if run.train.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError([Problem("train.device", "cuda asked for but no GPU is visible",
                                       "use train.device=auto")])
        self.shares = {"train.global_batch": _shares(run.train.global_batch, world, rank, run)}
        if run.posttrain.enabled:
            self.shares["posttrain.global_batch"] = _shares(run.posttrain_batch, world, rank, run)
        torch.use_deterministic_algorithms(run.train.deterministic, warn_only=True)
        torch.manual_seed(run.train.seed)

        # ---- data and schedules
        self.schedule = MixtureSchedule(run)
        # Never tokenize behind a distributed barrier (it would time out): a multi-rank job with missing shards
        # fails at once naming `midsweep prepare`; a single process builds them (file-locked against other runs).
        self.data = prepare_domains(run.data, sorted(set(run.eval_domains()) | set(self.schedule.domains)),
                                    seq_len=run.model.seq_len, build=world == 1)
        if run.posttrain.enabled:  # posttrain.epochs: the step count of the prepared split
            run = resolve_epochs(run, self.data[run.posttrain.domain].meta["train"])
        self.run = run
        self.lr_at = LRSchedule(run, self.schedule)
        sizes = {d: self.data[d].train.num_sequences(run.model.seq_len) for d in self.schedule.domains}
        sampler = MixtureSampler(self.schedule, sizes, run.train.seed, run.train.global_batch)
        self.state = TrainState(sampler, {d: self.data[d].content for d in sorted(self.data)})
        self.state.step = report.start
        self.tokenizer = load_tokenizer(run.data.tokenizer)
        self.post: PosttrainData | None = None
        """Post-training's data, from its first step on."""

        # ---- model and optimizer
        model = build_model(run.model, self.tokenizer.vocab_size)
        self.params = count_params(model)
        self.flops_per_token = flops_per_token(run.model, self.tokenizer.vocab_size)
        self.compile_mode = run.train.compiled
        self.parallel = Parallel(run.train, accelerator, report.precision)
        """How the ranks hold the model (train.parallel): DDP, or sharded by FSDP2."""
        self.model, self.raw, self.optimizer = self._wrap(model)

        # ---- what is evaluated and saved when, and the prefixes shared with other runs (docs/sharing.md)
        self.total = run.total_steps
        self.boundaries = [b for b in self.schedule.boundaries() if b <= self.total]
        every = run.eval.every_tokens // run.tokens_per_step
        self.eval_at = {s: "every" for s in range(every, self.total + 1, every)}
        """The steps evaluated, by event: at aligned token counts, phase ends and the end."""
        self.eval_at |= {b: "phase_end" for b in self.boundaries} | {self.total: "final"}
        self.sharing = Sharing(run, self.run_dir, accelerator.is_main_process)
        self.checkpointer = checkpoint.Checkpointer(
            self.run_dir, run.train.checkpoint_every, run.train.keep_last,
            set(self.boundaries) | set(run.train.pin_steps) | {self.total}, self.sharing, accelerator.is_main_process)
        if run.train.init_from:  # into the wrapped model: each rank reads only its part
            self.checkpointer.load_weights(run.train.init_from, self.raw)

    def _wrap(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
        """The model as trained (wrapped for the devices and ranks, maybe compiled), the module whose state is
        saved, and its optimizer: the one place where the model is parallelised."""
        parallel = self.parallel
        model = parallel.wrap(model, self.compile_mode)  # sharded in place under fsdp/hsdp: the optimizer after
        optimizer = _adamw(model, self.run, self.accelerator.device.type == "cuda")
        wrapped, optimizer = parallel.prepare(model, optimizer)
        return parallel.compile(wrapped, self.compile_mode), parallel.unwrap(wrapped), optimizer

    # ---- what the records say
    def tokens_by_domain(self) -> dict:
        L, step = self.run.model.seq_len, self.state.step
        out = {d: n * L for d, n in self.state.sampler.counts.items() if n}
        if self.post and self.post.drawn(step):
            out[self.post.domain] = out.get(self.post.domain, 0) + self.post.drawn(step) * L
        return out

    def facts(self) -> dict:
        """The trainer's part of summary.json."""
        tokens = self.run.tokens_at(self.state.step)
        return {"steps": self.state.step, "tokens": tokens, "tokens_by_domain": self.tokens_by_domain(),
                "flops": self.flops_per_token * tokens, "wall_time_s": self.state.wall_time_s,
                "params": self.params, "prefix": self.sharing.record, "data": self.state.content}

    def evaluate(self, at: int, event: str) -> list[dict]:
        """Held-out loss of every evaluation domain at step ``at``, recorded; its metrics.jsonl rows."""
        run = self.run
        rows = [{"step": at, "tokens": run.tokens_at(at), "phase": self.schedule.phase_at(max(at - 1, 0)),
                 "domain": d, "event": event,
                 "loss": heldout_loss(self.model, self.data[d].heldout, run.model.seq_len, run.eval.tokens,
                                      run.eval.batch, self.accelerator, self.compile_mode),
                 "lr": self.lr_at(max(at - 1, 0)), "tokens_by_domain": self.tokens_by_domain()}
                for d in run.eval_domains()]
        self.rec.append(rundir.METRICS, rows)
        return rows

    # ---- resume
    def resume(self) -> bool:
        """Fork from the longest published prefix (rank 0 places it), then resume from the newest checkpoint
        that loads, the records cut back to it (rows stay unique). Whether there was one."""
        accelerator = self.accelerator
        with accelerator.main_process_first():
            parent_failed = self.sharing.prepare()
        if any_rank(accelerator, parent_failed is not None):
            raise parent_failed or ParentFailed("the run this run forks from failed (see rank 0)")
        # each rank's own view of the run directory, before rank 0's choice of checkpoint is loaded everywhere
        agreement.agree(agreement.View.of(self.run_dir, self.report.before, rundir.latest_checkpoint(self.run_dir),
                                          self.sharing.publish_steps))
        step = self.checkpointer.latest()
        if step is None:
            self.state.step = 0
        else:
            saved = self.checkpointer.read_state(step)
            changed = self.state.changed_domains(saved)
            if changed:
                where = f"{self.run_dir}" + (f" and its shared prefix {self.sharing.record['entry']}"
                                             if self.sharing.record else "")
                raise DataChanged(
                    f"the data of domain(s) {', '.join(changed)} changed since the checkpoint of step {step} was "
                    "saved; resuming would train on other data than its first steps. Fix: restore the data it was "
                    f"trained on (the same files, dataset revision and tokenizer), or delete {where} to train it "
                    "anew on the new data")
            self.checkpointer.load(step, self.raw, self.optimizer)
            self.state.load_state_dict(saved)
            log.info("resuming %s from step %d", self.run_dir, step)
        self.rec.rewind(step)
        self.rec.status("running", self.state.step)
        return step is not None

    # ---- training
    def fit(self) -> bool:
        """Resume, then train to the end or to a preemption; True when stopped by one (checkpointed)."""
        resumed = self.resume()
        run, step = self.run, self.state.step
        self.sharing.claim(step)
        self.sharing.publish(step)  # steps a resumed run has passed while its checkpoints are still here
        track = Tracking(run, self.rec, step if resumed else None, self.total, self.report.overrides)
        progress = Progress(self.total, step, run.tokens_per_step,
                            enabled=run.train.progress and self.accelerator.is_main_process)
        try:
            if step == 0:
                track.evaluate(self.evaluate(0, "init"))
            elif step in self.eval_at and not any(r["step"] == step
                                                  for r in rundir.read_jsonl(self.run_dir / rundir.METRICS)):
                track.evaluate(self.evaluate(step, self.eval_at[step]))  # a fork at a step its parent's plan skips
            stopped = self._steps(track, progress)
            self.checkpointer.wait()
            return stopped
        finally:
            self.checkpointer.wait(raise_error=False)  # before any status is recorded: its write is settled
            progress.close()
            track.close(sys.exc_info()[1])

    def _steps(self, track: Tracking, progress: Progress) -> bool:
        """The optimizer steps to the end; True when a preemption stopped them (checkpointed, status recorded).

        Nothing is read back from the device between checks (every log_every steps, and before every evaluation,
        checkpoint and the end), so the GPU never idles waiting for the host. A non-finite loss is remembered on
        the device as its step (``total``: none yet) and raised at the next check."""
        run, state, accelerator, total = self.run, self.state, self.accelerator, self.total
        start = run.posttrain_start if run.posttrain.enabled else total
        if state.step >= start:  # resumed in post-training
            self.post = self._posttrain_data(start)
        first_bad = torch.full((), total, dtype=torch.long, device=accelerator.device)
        last_check, last_row = state.step, (state.step, state.wall_time_s)
        if self.interrupt is not None:
            self.interrupt.arm()
        while state.step < total:
            t0 = time.perf_counter()
            step = state.step
            lr = self.lr_at(step)
            if step == start:  # post-training starts: its own data order, RNG and, when fresh, optimizer
                self.post = self._posttrain_data(start)
                torch.manual_seed(run.posttrain_seed)
                if run.posttrain.optimizer == "fresh":
                    self.optimizer.state.clear()  # zero moments and step counts: a new AdamW's first step
            loss_total, grad_norm = self._step(step, lr)
            first_bad = torch.where(torch.isfinite(loss_total), first_bad, first_bad.clamp(max=step))
            state.step = step = step + 1
            saves = self.checkpointer.due(step)
            logs = logs_train_row(step, run.train.log_every, total)
            check = logs or step in self.eval_at or saves
            if check:  # the first step with a non-finite loss on any rank; the loss summed over ranks
                bad = int(accelerator.gather(first_bad[None]).min())
                if bad < total:
                    state.step = bad  # what was trained after step ``bad`` is void
                    raise NonFiniteLoss(f"non-finite loss at step {bad} (found at the check after step {step})")
                loss_value = float(accelerator.reduce(loss_total, reduction="sum"))
            state.wall_time_s += time.perf_counter() - t0
            if check:
                progress.update(loss_value, self.schedule.phase_at(step - 1), steps=step - last_check)
                last_check = step
            if logs:  # the rate of the training steps since the last row: steady state, evaluations excluded
                rate = ((run.tokens_at(step) - run.tokens_at(last_row[0]))
                        / max(state.wall_time_s - last_row[1], 1e-9))
                row = {"step": step, "tokens": run.tokens_at(step), "phase": self.schedule.phase_at(step - 1),
                       "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "tok_per_s": rate}
                self.rec.append(rundir.TRAIN_LOG_JSONL, [row])
                track.train(row, progress.tokens_per_s())
                last_row = step, state.wall_time_s
            if step in self.eval_at:
                track.evaluate(self.evaluate(step, self.eval_at[step]))
                self.report.summary(self, "running")
                self.rec.status("running", step)
            if saves:
                self.checkpointer.save(step, self.raw, self.optimizer, state)
            # at the last step the run is complete: finishing it costs less than a requeue to write its summary
            if (self.interrupt is not None and check and step < total
                    and any_rank(accelerator, self.interrupt.requested())):
                if not saves:
                    self.checkpointer.save(step, self.raw, self.optimizer, state)
                self.checkpointer.wait()
                self.rec.status(*self.interrupt.stop_status(step))
                return True
        return False

    def _step(self, step: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on this rank's share of the batch of ``step``: (loss over the global batch, on the
        device, this rank's part; gradient norm before clipping)."""
        run, accelerator, model = self.run, self.accelerator, self.model
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.post is None:
            mine, micro = self.shares["train.global_batch"]
            x, y, m = make_batch(self.data, self.state.sampler.next_batch(step)[mine], run.model.seq_len, False,
                                 accelerator.device)
        else:
            mine, micro = self.shares["posttrain.global_batch"]
            pairs = [self.post.sequence(i, run.posttrain.mask_prompt) for i in self.post.items(step)[mine]]
            x, y, m = to_tensors(*zip(*pairs), accelerator.device)
        # Normalise by the whole global batch's counted tokens, so the update is the same for any rank count.
        world = accelerator.num_processes
        counted = accelerator.reduce(m.sum().double(), reduction="sum")
        loss_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for i, part in enumerate(micro):
            with self.parallel.no_sync(model, i == len(micro) - 1), accelerator.autocast():
                loss = loss_sum(model, x[part], y[part], m[part], self.compile_mode) * world / counted
                accelerator.backward(loss)
            loss_total += loss.detach().double() / world
        grad_norm = self.parallel.clip_grad_norm_(model, run.optim.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, grad_norm

    def _posttrain_data(self, start: int) -> PosttrainData:
        """Post-training's data; packed, it continues the domain's count of main training (frozen from ``start``)."""
        run, p = self.run, self.run.posttrain
        return PosttrainData(self.data[p.domain].train, p.domain, run.model.seq_len, seed=run.posttrain_seed,
                             batch=run.posttrain_batch, start=start,
                             first=self.state.sampler.counts.get(p.domain, 0) if p.packing else 0,
                             packing=p.packing, eos_id=self.tokenizer.eos_id)


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


def _adamw(model: torch.nn.Module, run: RunConfig, fused: bool) -> torch.optim.Optimizer:
    o = run.optim
    decay = [p for p in model.parameters() if p.requires_grad and (p.dim() >= 2 or o.decay_all)]
    no_decay = [p for p in model.parameters() if p.requires_grad and not (p.dim() >= 2 or o.decay_all)]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused or None)


def any_rank(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (a collective: every rank calls it at the same point)."""
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)
