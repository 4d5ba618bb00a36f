"""SIGUSR2 (SLURM timeout warning, preemption, ``scancel --signal=USR2``) and SIGINT (Ctrl-C) as a flag the
training loop polls.

submitit installs a SIGUSR2 handler in every task that checkpoints the submission, runs ``scontrol requeue``
and exits. Acting at an arbitrary point of a training step would lose work, so ``install()`` keeps
submitit's handler aside and replaces it by one that only records the signal. The loop checks
``requested()`` at step boundaries (all-reducing it so every rank stops at the same step), saves a
checkpoint, marks the run ``requeued`` and calls ``checkpointed()``, which hands over to submitit.

Ctrl-C is a stop request too once the loop has ``arm()``-ed it: the run checkpoints at the next check, is marked
``interrupted`` and ``checkpointed()`` raises KeyboardInterrupt, which the app reports in one line (rerunning
resumes). During set-up, or pressed a second time, Ctrl-C raises KeyboardInterrupt at once: the run resumes from
its previous checkpoint.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 75
"""Exit status of ``checkpointed()`` outside submitit (EX_TEMPFAIL): the checkpoint is on disk and the same
command resumes the run."""
EXIT_CTRL_C = 130
"""Exit status after Ctrl-C (128 + SIGINT, as shells report it)."""
RANK_WAIT_S = 120
"""How long a rank > 0 waits for SLURM to end the requeued job before it exits by itself."""


class Interrupt:
    def __init__(self, previous: Any):
        self._previous = previous
        self._requested = False
        self.previous_sigint: Any = signal.default_int_handler
        self.armed = False
        self.by_user = False
        """The stop was asked for with Ctrl-C (SIGINT): the run stops instead of being requeued."""

    def arm(self) -> None:
        """Training has started: from now on a first Ctrl-C asks for a checkpoint. Before, there is nothing to
        save, and Ctrl-C stops at once."""
        self.armed = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.by_user or not self.armed:
                raise KeyboardInterrupt  # set-up, or a second Ctrl-C: now, without a checkpoint
            log.warning("Ctrl-C: will checkpoint and stop at the next step boundary (Ctrl-C again stops at once, "
                        "losing the steps since the last checkpoint)")
            self.by_user = True
        elif not self._requested:
            log.warning("received %s: will checkpoint and requeue at the next step boundary",
                        signal.Signals(signum).name)
        self._requested = True

    def requested(self) -> bool:
        """True once this rank has received SIGUSR2 or SIGINT since ``install()``."""
        return self._requested

    def stop_status(self, step: int) -> tuple[str, int, str]:
        """(status, step, reason) that status.json records once the run has checkpointed ``step`` and stops."""
        if self.by_user:
            return "interrupted", step, f"stopped by Ctrl-C at step {step}; rerunning the same command resumes from it"
        return "requeued", step, "stopped by a preemption/timeout signal; resumes from this step"

    def checkpointed(self) -> None:
        """Call on every rank once the checkpoint is on disk and status.json says ``stop_status()``. Never returns.

        After Ctrl-C it raises KeyboardInterrupt (the app says how to resume).

        Under submitit, rank 0 runs submitit's handler (checkpoint the submission, ``scontrol requeue``,
        exit); ranks > 0 let SLURM end them when the job is requeued, exiting by themselves after
        RANK_WAIT_S (a non-zero exit could make srun kill rank 0 before it requeued). Outside submitit the
        process exits with EXIT_INTERRUPTED."""
        if self.by_user:
            raise KeyboardInterrupt
        handler: Optional[Callable] = self._previous if callable(self._previous) else None
        if handler is None:
            log.warning("checkpoint saved; no scheduler to requeue this process: exiting with %d", EXIT_INTERRUPTED)
            sys.exit(EXIT_INTERRUPTED)
        handler(signal.SIGUSR2, None)  # rank 0: requeues and raises SystemExit; others return at once
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # submitit ignores SIGTERM; the requeue sends it
        deadline = time.monotonic() + RANK_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.5)
        os._exit(0)


def install() -> Interrupt:
    """Route SIGUSR2 and SIGINT to a flag; call once per process, from the main thread, before training starts."""
    interrupt = Interrupt(signal.getsignal(signal.SIGUSR2))
    interrupt.previous_sigint = signal.signal(signal.SIGINT, interrupt._on_signal)
    signal.signal(signal.SIGUSR2, interrupt._on_signal)
    return interrupt


def uninstall(interrupt: Interrupt) -> None:
    """Give SIGUSR2 and SIGINT back to their handlers of before ``install()`` (between the runs of a sweep)."""
    signal.signal(signal.SIGUSR2, interrupt._previous)
    signal.signal(signal.SIGINT, interrupt.previous_sigint)
