"""Where a run reports its progress besides its result files: a line in the job log per ``train.log_every``
steps, the heartbeat in status.json, and the experiment tracker of the ``logger`` group.

Trackers are accelerate's (``accelerate.tracking``), started on rank 0 only. Every row goes to the tracker at
its optimizer step, with ``tokens`` alongside: W&B plots ``train/*`` and ``eval/*`` against tokens by default
(``define_metric``), TensorBoard gets a second event directory ``tokens/`` whose step is the token count, and
the other trackers log ``tokens`` as a metric. Besides the losses, every row holds the study's variables: each
domain's mixture weight (``mixture/<domain>``) and the phase (``train/phase``). The W&B run is named by the
coordinates its command line sets (``weight=0.2 introduce_at=0.3 [b18a28]``; its id stays the run id). TensorBoard
names a run by its path under ``--logdir``: ``<train.out_dir>/tensorboard/<that name>`` is a link to the run's
events, so ``tensorboard --logdir <train.out_dir>/tensorboard`` lists the runs by what they vary (the run
directory, keyed by the run id, stays where resuming finds it); its hyperparameters carry every coordinate.

A resumed run sends only steps after its checkpoint, so no row is sent twice: TensorBoard hides the events a
killed attempt wrote after the checkpoint (``purge_step``); the W&B run id is the run directory's (``wandb_id``:
the midsweep run id and a nonce drawn when the directory first tracks with W&B) with ``resume="allow"``, so a
requeued or resumed run continues the same W&B run, and steps W&B already holds (logged by a killed attempt
after its last checkpoint) are not sent again, while the same config trained in another ``train.out_dir``, or
again after its run directory was deleted, starts a W&B run of its own. A tracker that holds nothing of the run yet (a
run forked from a shared prefix, or a run whose tracker was switched on when it resumed) first gets the rows the
run's records hold up to its resume step.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Optional

from midsweep import rundir
from midsweep.config import RunConfig
from midsweep.naming import run_label
from midsweep.schedules import MixtureSchedule
from midsweep.train.results import RunRecorder

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files of a run: ``<run_dir>/tensorboard/steps`` and ``.../tokens``; also the folder of
readable links to them, ``<train.out_dir>/tensorboard/<run label>``."""
WANDB_DIR = "wandb"
"""W&B's files of a run (``<run_dir>/wandb/offline-run-*`` in offline mode)."""
WANDB_ID = "midsweep_id"
"""``<run_dir>/wandb/midsweep_id``: the run directory's W&B run id (``wandb_id``)."""
_TRAIN_KEYS = ("loss", "lr", "grad_norm", "tok_per_s")


class Tracking:
    """Progress reporting of one run; a no-op on ranks other than 0 (``rec.enabled``)."""

    def __init__(self, run: RunConfig, rec: RunRecorder, resumed: Optional[int], total: int,
                 overrides: Optional[dict] = None):
        self.rec, self.total, self.tps = rec, total, run.tokens_per_step
        self.label = run_label(run.coords(), overrides or {}, run.run_id())
        """The tracker's run name: the coordinates the run's command line sets (the run id stays its id)."""
        self.schedule = MixtureSchedule(run)
        self.phases = list(dict.fromkeys(s.phase for s in self.schedule.segments))
        self.resumed = -1 if resumed is None else resumed
        """The checkpoint step this attempt resumes from: the loop makes no rows at or before it."""
        self.held = -1
        """The tracker holds this run's rows through this step already (W&B, after a kill past a checkpoint)."""
        self.beat = 0.0
        self.trackers: list = []  # (tracker, x axis: "step" or "tokens")
        if rec.enabled and run.logger.backend != "none":
            self._start(run)

    # ---- the loop's hooks

    def train(self, row: dict, overall_tok_per_s: float) -> None:
        """A train.jsonl row (step, tokens, phase, loss, lr, grad_norm, tok_per_s): log line, heartbeat, tracker.
        ``overall_tok_per_s``: this attempt's rate with evaluations and checkpoints, which the ETA is made of."""
        if not self.rec.enabled:
            return
        step, rate = row["step"], row["tok_per_s"]
        eta = (self.total - step) * self.tps / overall_tok_per_s if overall_tok_per_s > 0 else None
        log.info("step %d/%d (%.0f%%) %s loss %.4f lr %.3g grad_norm %.3g | %s tok/s ETA %s", step, self.total,
                 100 * step / self.total, row["phase"], row["loss"], row["lr"], row["grad_norm"], f"{rate:,.0f}",
                 _duration(eta))
        now = time.monotonic()
        if now - self.beat >= rundir.HEARTBEAT_S or step == self.total:
            self.beat = now
            self.rec.heartbeat(step, total_steps=self.total, tok_per_s=round(rate, 1),
                               eta_s=None if eta is None else round(eta, 1))
        self._send(step, {**{f"train/{k}": row[k] for k in _TRAIN_KEYS}, **self._study(step)})

    def evaluate(self, rows: list[dict]) -> None:
        """The metrics.jsonl rows of one evaluation (one per domain)."""
        if rows and self.trackers:
            self._send(rows[0]["step"], {f"eval/{r['domain']}/loss": r["loss"] for r in rows})

    def close(self, error: Optional[BaseException] = None) -> None:
        """Finish the tracker runs (W&B marks the run failed when ``error``)."""
        for tracker, _ in self.trackers:
            try:
                if tracker.name == "wandb":
                    tracker.tracker.finish(exit_code=1 if error is not None else 0)
                else:
                    tracker.finish()
            except Exception:  # a tracker failing to close must not hide the run's own outcome
                log.exception("could not close the %s tracker", tracker.name)
        self.trackers = []

    # ---- trackers

    def _start(self, run: RunConfig) -> None:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS  # lazy: only runs that track need it

        cfg, run_dir, run_id = run.logger, run.run_dir().absolute(), run.run_id()
        name, kwargs = cfg.backend, dict(cfg.init_kwargs)
        cls = LOGGER_TYPE_TO_CLASS[name]
        fresh = self.resumed < 0  # whether the tracker holds nothing of this run yet
        if name == "tensorboard":
            tb = run_dir / TENSORBOARD_DIR
            fresh = not any((tb / "steps").glob("events.out.tfevents.*"))
            # purge_step: hide the events a killed attempt wrote after the checkpoint this attempt resumes from
            steps = cls("steps", tb, purge_step=self.resumed + 1, **kwargs)
            tokens = cls("tokens", tb, purge_step=(self.resumed + 1) * self.tps, **kwargs)
            self.trackers = [(steps, "step"), (tokens, "tokens")]
            _link(Path(run.train.out_dir).absolute() / TENSORBOARD_DIR / self.label.replace("/", "_"), tb)
        elif name == "wandb":
            wb_id = wandb_id(run_dir, run_id)
            earlier = list((run_dir / WANDB_DIR).glob(f"offline-run-*-{wb_id}"))
            init = {"id": wb_id, "resume": "allow", "name": self.label, "group": Path(run.train.out_dir).name,
                    "job_type": run.name, "dir": str(run_dir), "entity": cfg.entity, "mode": cfg.mode,
                    "tags": list(cfg.tags) or None, "config": dataclasses.asdict(run)}
            self.trackers = [(cls(cfg.project, **(init | kwargs)), "step")]
        else:
            init = {"logging_dir": str(run_dir / name)} if cls.requires_logging_directory else {}
            self.trackers = [(cls(cfg.project, **init, **kwargs), "step")]
        for tracker, _ in self.trackers:
            try:
                tracker.start()
            except Exception as err:
                fix = ("run `wandb login`, or log offline (logger.mode=offline, then `wandb sync`)" if name == "wandb"
                       else "check the logger.* settings")
                raise RuntimeError(f"could not start the {name} tracker. Fix: {fix}, or use logger=none "
                                   f"({type(err).__name__}: {err})") from err
        if name == "wandb":
            wb = self.trackers[0][0].tracker
            wb.define_metric("tokens")
            for group in ("train/*", "eval/*", "mixture/*"):
                wb.define_metric(group, step_metric="tokens")
            # Online, W&B knows the last step it holds (a killed attempt may have logged past its checkpoint);
            # offline, an earlier attempt of this run left its files here.
            fresh = wb.starting_step == 0 if not wb.offline else not earlier
            self.held = wb.starting_step - 1
        if fresh:
            hparams = {"run_id": run_id, "name": self.label, "experiment": run.name,
                       **{k: _scalar(v) for k, v in run.coords().items()}}
            self.trackers[0][0].store_init_configuration(hparams)
            self._replay(run_dir)
        log.info("tracking with %s (run %s)", name, run_id)

    def _replay(self, run_dir: Path) -> None:
        """Send the rows this run's records hold up to its resume step: a fork's rows from its parent's prefix,
        or an earlier attempt's when the tracker was switched on only now."""
        rows: dict[int, dict] = {}
        for r in rundir.read_jsonl(run_dir / rundir.TRAIN_LOG_JSONL):
            rows.setdefault(r["step"], {}).update({f"train/{k}": r[k] for k in _TRAIN_KEYS if k in r},
                                                  **self._study(r["step"]))
        for r in rundir.read_jsonl(run_dir / rundir.METRICS):
            rows.setdefault(r["step"], {})[f"eval/{r['domain']}/loss"] = r["loss"]
        for step in sorted(s for s in rows if s <= self.resumed):
            self._send(step, rows[step])

    def _study(self, step: int) -> dict:
        """The study's variables over training, as a reader compares runs: each domain's mixture weight and the
        phase (its index in the run's phases, e.g. 0 pretrain, 1 midtrain) of the step just trained."""
        weights = self.schedule.weights_at(step - 1)
        return {**{f"mixture/{d}": weights.get(d, 0.0) for d in self.schedule.domains},
                "train/phase": self.phases.index(self.schedule.phase_at(step - 1))}

    def _send(self, step: int, values: dict) -> None:
        if step <= self.held:
            return
        tokens = step * self.tps
        for tracker, axis in self.trackers:
            if axis == "step":
                tracker.log({**values, "tokens": tokens}, step=step)
            else:
                tracker.log(values, step=tokens)


def wandb_id(run_dir: Path, run_id: str) -> str:
    """The W&B run id of ``run_dir``: ``<run_id>-<nonce>``, drawn once and kept in WANDB_ID. One per run directory:
    W&B resumes a run by its id and drops every step at or below the last it holds, so a second directory of the
    same run id (another train.out_dir, or the run trained again after runs/ was deleted) must not share it."""
    path = Path(run_dir) / WANDB_DIR / WANDB_ID
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    new = f"{run_id}-{secrets.token_hex(4)}"
    rundir.atomic_write_text(path, new + "\n")  # rank 0, holding the run lock: no other writer
    return new


def _scalar(value):
    """A config value as a tracker hyperparameter (bool, int, float or str)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _duration(seconds: Optional[float]) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def _link(name: Path, target: Path) -> None:
    """``name`` -> ``target`` (relative, so a moved results tree keeps its links); an existing link is left."""
    name.parent.mkdir(parents=True, exist_ok=True)
    try:
        name.symlink_to(os.path.relpath(target, name.parent), target_is_directory=True)
    except FileExistsError:
        pass
    except OSError as err:  # a file system without links: the events are still in the run directory
        log.warning("no readable TensorBoard name for %s (%s)", target.parent.name, err)

