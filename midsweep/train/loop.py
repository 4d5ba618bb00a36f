"""One run, start to end: pretraining -> midtraining (the mixture) -> optional post-training.

Read top to bottom: hold the run directory, set the run up and train it (midsweep.train.trainer), and record
how it ended: done, requeued after a preemption, or failed / interrupted with its step and a reason that names
the fix (a non-finite loss, changed data, a corrupt checkpoint, a full disk, Ctrl-C).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import shutil

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from midsweep import rundir
from midsweep.config import ConfigError, RunConfig
from midsweep.data import DataSourceError
from midsweep.data.tokenizers import TokenizerError
from midsweep.train import agreement, checkpoint
from midsweep.train.results import RunRecorder, losses_by_event
from midsweep.train.trainer import DataChanged, NonFiniteLoss, Trainer, any_rank
from midsweep.version import code as code_version

log = logging.getLogger(__name__)


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
        before = (rundir.read_status(run_dir) or {}).get("status")
        # rank 0's word, so that no rank trains alone; a collective before rank 0 writes the status anew
        if any_rank(accelerator, accelerator.is_main_process and before == "done"):
            log.info("run %s is done already; nothing to do", run_dir)
            return rundir.read_summary(run_dir) or {}
        return _train(run, overrides, interrupt, accelerator, precision, before)


def _train(run: RunConfig, overrides: list[str] | None, interrupt, accelerator: Accelerator, precision: str,
           before: str | None) -> dict:
    """The run, its directory held. From here on every failure ends with status ``failed``, its step and reason."""
    report = Report(run, overrides, accelerator, precision, before)
    trainer: Trainer | None = None  # None while set-up has not finished: the record says what is known then
    try:
        trainer = Trainer(run, report, accelerator, interrupt)
        stopped = trainer.fit()
    except NonFiniteLoss as err:
        report.failed(trainer, f"{err}. Fix: lower optim.lr, lengthen optim.warmup or use train.precision=fp32; "
                      "metrics up to this step are kept")
        raise
    # the user's to fix, as the message says: rerunning as is does not help
    except (DataChanged, rundir.CorruptCheckpoint, checkpoint.OldCheckpoint, ConfigError, DataSourceError,
            TokenizerError, agreement.RanksDisagree) as err:
        report.failed(trainer, str(err))
        raise
    except KeyboardInterrupt:  # Ctrl-C in set-up, or twice: stopped now, the steps since the last checkpoint are lost
        last = rundir.latest_checkpoint(report.run_dir)
        report.failed(trainer, f"stopped by Ctrl-C at step {report.step(trainer)}, before its next checkpoint; "
                      "rerunning the same command resumes "
                      + (f"from its checkpoint of step {last}" if last is not None else "from the start"),
                      "interrupted")
        raise
    except BaseException as err:  # a checkpoint in flight is complete or removed by now: on a full disk, space
        full = _disk_full(err, report.run_dir)
        if full is None:
            report.failed(trainer, f"{type(err).__name__}: {err}".splitlines()[0][:300]
                          + "; rerunning the same command resumes from the last checkpoint")
            raise
        report.failed(trainer, str(full))
        raise full from err
    step = trainer.state.step
    if stopped:
        out = report.summary(trainer, interrupt.stop_status(step)[0])
        interrupt.checkpointed()  # hands over to the scheduler (submitit requeues the job and exits)
        return out
    out = report.summary(trainer, "done")
    report.rec.status("done", step)
    return out


class Report:
    """What the run records about itself (config.yaml, status.json, summary.json; rank 0 writes), from the
    trainer's facts, or, while set-up has not finished, from what is known before it."""

    def __init__(self, run: RunConfig, overrides: list[str] | None, accelerator: Accelerator, precision: str,
                 before: str | None):
        self.run, self.overrides, self.precision = run, _overrides(overrides), precision
        self.before = before
        """The run's status before this start (None: a new run), as this rank read it."""
        self.run_dir, self.world = run.run_dir(), accelerator.num_processes
        self.rec = RunRecorder(self.run_dir, accelerator.is_main_process)
        self.start = rundir.latest_checkpoint(self.run_dir) or 0
        """The step to report until the resume says otherwise."""
        self.rec.config(OmegaConf.to_yaml(OmegaConf.structured(run)))
        self.rec.status("running", self.start)

    def step(self, trainer: Trainer | None) -> int:
        return trainer.state.step if trainer else self.start

    def summary(self, trainer: Trainer | None, status: str, reason: str | None = None) -> dict:
        final, phase_end = losses_by_event(self.rec.read_metrics()) if self.rec.enabled else ({}, {})
        facts = trainer.facts() if trainer else {
            "steps": self.start, "tokens": self.run.tokens_at(self.start), "tokens_by_domain": {}, "flops": 0.0,
            "wall_time_s": 0.0, "params": None, "prefix": None, "data": {}}
        out = {"run_id": self.run.run_id(), "experiment": self.run.name, "status": status, "reason": reason,
               "coords": self.run.coords(), "overrides": self.overrides, "final": final, "phase_end": phase_end,
               **facts, "precision": self.precision, "world_size": self.world, "code": code_version()}
        self.rec.summary(out)
        return out

    def failed(self, trainer: Trainer | None, reason: str, status: str = "failed") -> None:
        """Record the end of a run that did not finish (``interrupted``: Ctrl-C, no checkpoint)."""
        try:
            self.rec.status(status, self.step(trainer), reason)
            self.summary(trainer, status, reason)
        except Exception as err:  # e.g. a full disk: the error that ended the run must not be replaced by this one
            log.error("could not record the end of run %s (%s: %s): %s: %s", self.run_dir, status, reason,
                      type(err).__name__, err)


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
        if any_rank(accelerator, refused is not None):
            raise refused or rundir.RunLocked(f"run directory {run_dir} is held by another process (see rank 0)")
        yield


def _native_bf16(cpu: bool) -> bool:
    if not cpu:
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _overrides(overrides: list[str] | None) -> dict:
    out = {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out
