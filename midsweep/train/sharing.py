"""Prefix sharing in a run (docs/sharing.md): fork from a published prefix, publish the prefixes others need.

A fork does not load anything itself: ``Sharing.prepare`` places the prefix's checkpoint in the run's own
``checkpoints/`` and its parent's rows in the run's records, and the loop then resumes from it like from any
checkpoint (model, optimizer, sampler, RNG, step, wall time: the whole state, unlike ``train.init_from``).
Which prefix: the longest one in the store whose key equals this run's own key at its step
(midsweep.sharing.keys), so a fork can never start from a state its own config would not have produced.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

from midsweep import rundir
from midsweep.config import RunConfig
from midsweep.sharing import slurm_jobs, store
from midsweep.sharing.keys import Signature
from midsweep.train.results import logs_train_row

log = logging.getLogger(__name__)
POLL_S = 5.0
"""Seconds between looks at the store while waiting for a prefix that a running run is about to publish."""


class ParentFailed(RuntimeError):
    """The run that trains this run's prefix failed: this run does not train it a second time."""


class Sharing:
    """The prefix-sharing side of one run (nothing with ``train.share_prefixes=false``). Every rank makes the
    same decisions (which steps to checkpoint); only the main process (``main``) reads and writes the store."""

    def __init__(self, run: RunConfig, run_dir: Path, main: bool):
        self.run, self.run_dir, self.main = run, Path(run_dir), main
        self.enabled = run.train.share_prefixes
        self.sig = Signature.of(run) if self.enabled else None
        self.store = store.store_dir(run.train.out_dir)
        self.publish_steps = set(run.train.publish_steps) if self.enabled else set()
        self.record: Optional[dict] = None
        """Where this run forked from (summary.json ``prefix``): key, step, parent run id and directory."""

    # ---- forking
    def prepare(self) -> Optional[ParentFailed]:
        """Before the resume, on every rank, the main process first: seed the run directory from the longest
        usable prefix longer than its own newest checkpoint. Waits while the run that publishes a longer prefix is
        training; returns ParentFailed when it failed (the caller makes every rank raise it). A corrupt prefix is
        removed and this run claims it: it trains it and publishes it again. The run's own checkpoints newer than
        its newest sound one are set aside first (rundir.sound_checkpoint), so that a fork whose shared bytes
        changed takes its prefix afresh (or retrains it) instead of resuming from them."""
        if self.main:
            try:
                self._prepare()
            except ParentFailed as err:
                return err
        if self.enabled:  # the same on every rank: read after the main process has claimed what it repairs
            mine = self.run_dir.resolve()
            self.publish_steps |= {c.step for c in store.claims(self.store, self.sig.static)
                                   if c.run_dir == mine and self.sig.key(c.step) == c.key}
        return None

    def _prepare(self) -> None:
        path = self.run_dir / store.META
        own = rundir.sound_checkpoint(self.run_dir)
        self.record = rundir.read_json(path) if path.exists() else None
        if self.record and (own is None or own < self.record["step"]):
            self.record = None  # written by an attempt whose checkpoints are gone: this start decides afresh
            path.unlink()
        if not self.enabled:
            return
        ignored: set[tuple[int, str]] = set()
        waiting_for = None
        while True:
            entry, claim = self._best(own or 0, ignored)
            if claim is not None:
                state = rundir.read_status(claim.run_dir) or {}
                if claim.run_dir.resolve() == self.run_dir.resolve():
                    ignored.add((claim.step, claim.key))  # our own claim (a prefix we republish)
                elif state.get("status") == "failed":
                    raise ParentFailed(
                        f"run {claim.run_id}, which trains this run's first {claim.step} steps, failed at step "
                        f"{state.get('step')}: {state.get('reason')}. Fix: rerun the sweep (the parent runs first), "
                        "or train.share_prefixes=false to train this run from scratch")
                elif store.trains(claim.run_dir):
                    if waiting_for != claim:
                        log.info("waiting for run %s to publish the prefix of step %d (%s)", claim.run_id,
                                 claim.step, rundir.lock_holder(claim.run_dir))
                        waiting_for = claim
                    time.sleep(POLL_S)
                else:  # done without publishing it, never started here, or killed: train it ourselves
                    ignored.add((claim.step, claim.key))
                continue
            if entry is None:
                return
            problem = store.problem(entry)
            if problem is None:
                return self._seed(entry)
            with store.locked(self.store, self.sig.static, entry.step, entry.key):
                if store.problem(entry) is not None:  # nobody repaired it meanwhile
                    log.warning("prefix %s is corrupt (%s): removed; this run trains it and publishes it again",
                                entry.path, problem)
                    store.remove(entry)
                    store.claim(self.store, self.sig.static, entry.step, entry.key, self.run.run_id(), self.run_dir)

    def _best(self, own: int, ignored: set) -> tuple[Optional[store.Entry], Optional[store.Claim]]:
        """The longest matching complete entry past ``own``, and a matching claim longer than it (or None)."""
        sig = self.sig
        fits = lambda step, key: own < step <= sig.total and (step, key) not in ignored and sig.key(step) == key
        entry = max((e for e in store.entries(self.store, sig.static) if fits(e.step, e.key)),
                    key=lambda e: e.step, default=None)
        longer = entry.step if entry else own
        claim = max((c for c in store.claims(self.store, sig.static) if c.step > longer and fits(c.step, c.key)),
                    key=lambda c: c.step, default=None)
        return entry, claim

    def _seed(self, entry: store.Entry) -> None:
        """The entry's rows become this run's records and its checkpoint this run's checkpoint at its step."""
        t = entry.step
        metrics = [r for r in store.rows(entry, rundir.METRICS) if r["step"] < t]
        # the row at t is this run's only where its own cadence (or its end) logs one
        at_t = logs_train_row(t, self.run.train.log_every, self.run.total_steps)
        train = [r for r in store.rows(entry, rundir.TRAIN_LOG_JSONL) if r["step"] < t or (r["step"] == t and at_t)]
        for name, rows in ((rundir.METRICS, metrics), (rundir.TRAIN_LOG_JSONL, train)):
            rundir.atomic_write_text(self.run_dir / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        store.link_checkpoint(entry, rundir.checkpoint_dir(self.run_dir, t))
        meta = entry.meta
        self.record = {"key": entry.key, "step": t, "tokens": t * self.run.tokens_per_step,
                       "parent": meta.get("run_id"), "parent_dir": meta.get("run_dir"), "entry": str(entry.path)}
        rundir.atomic_write_json(self.run_dir / store.META, self.record)
        log.info("forking from prefix %s: step %d of run %s", entry.key[:12], t, meta.get("run_id"))

    # ---- publishing
    def claim(self, step: int) -> None:
        """Claim the prefixes this run will publish after ``step`` (forks that need them wait for this run)."""
        if not (self.enabled and self.main):
            return
        for s in sorted(self.publish_steps):
            if step < s <= self.sig.total and not store.entry_path(self.store, self.sig.static, s,
                                                                    self.sig.key(s)).exists():
                store.claim(self.store, self.sig.static, s, self.sig.key(s), self.run.run_id(), self.run_dir)

    def publish(self, step: int) -> None:
        """After the checkpoint of ``step`` is saved: publish it if a fork needs it, and any earlier publish step
        whose checkpoint is still here (a run resumed past it)."""
        if not (self.enabled and self.main):
            return
        for s in sorted(self.publish_steps):
            ckpt = rundir.checkpoint_dir(self.run_dir, s)
            if s <= step and (ckpt / rundir.COMPLETE).exists():
                key = self.sig.key(s)
                if store.entry_path(self.store, self.sig.static, s, key).exists():
                    continue
                meta = {"run_id": self.run.run_id(), "run_dir": str(self.run_dir.resolve())}
                try:
                    _, waiting = store.publish(
                        self.store, self.sig.static, s, key, ckpt,
                        [r for r in rundir.read_jsonl(self.run_dir / rundir.METRICS) if r["step"] < s],
                        [r for r in rundir.read_jsonl(self.run_dir / rundir.TRAIN_LOG_JSONL) if r["step"] <= s], meta)
                except rundir.CorruptCheckpoint as err:  # forks find no entry and train the prefix themselves
                    log.warning("not publishing the prefix of step %d: %s", s, err)
                    continue
                slurm_jobs.start(waiting)  # the forks that wait for this prefix start now

    def saves(self, step: int) -> bool:
        """Whether the loop must checkpoint ``step`` for a fork."""
        return step in self.publish_steps


