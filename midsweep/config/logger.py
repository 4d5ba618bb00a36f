"""Experiment-tracker config: where a run's training rows and evaluations are sent besides its run directory."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Optional

from midsweep.config.errors import Problem, require

# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS) and the module each one imports; listed
# here so that validating a config imports neither accelerate nor the tracker.
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "aim": ("aim",),
            "comet_ml": ("comet_ml",), "mlflow": ("mlflow",), "clearml": ("clearml",), "dvclive": ("dvclive",),
            "swanlab": ("swanlab",), "trackio": ("trackio",)}
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LoggerConfig:
    backend: str = "none"
    """``none``, ``tensorboard``, ``wandb``, or any other tracker accelerate knows (aim, comet_ml, mlflow,
    clearml, dvclive, swanlab, trackio). Training loss, LR, grad norm and tokens/s every ``train.log_every`` steps
    and every per-domain evaluation are logged against the optimizer step, with the token count alongside."""
    project: str = "midsweep"
    """The tracker's project (W&B project, MLflow experiment...). TensorBoard ignores it."""
    entity: Optional[str] = None
    """W&B entity (team or user); None: the logged-in user's default."""
    mode: Optional[str] = None
    """W&B mode: ``online``, ``offline`` (files only, ``wandb sync`` later) or ``disabled``; None: the
    ``WANDB_MODE`` environment variable, else online."""
    tags: list[str] = field(default_factory=list)
    """Tags of the tracker run (W&B tags)."""
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the tracker's start (``wandb.init``, TensorBoard's ``SummaryWriter``...)."""

    def problems(self, prefix: str = "logger") -> list[Problem]:
        out: list[Problem] = []
        if self.backend == "none":
            return out
        if self.backend not in TRACKERS:
            out.append(Problem(f"{prefix}.backend", f"unknown tracker {self.backend!r}",
                               f"use none or one of {', '.join(TRACKERS)}"))
            return out
        require(out, any(importlib.util.find_spec(m) for m in TRACKERS[self.backend]), f"{prefix}.backend",
                f"{self.backend} is not installed", f"pip install 'midsweep[track]' (or {TRACKERS[self.backend][0]}), "
                "or use logger=none")
        require(out, self.mode is None or self.mode in WANDB_MODES, f"{prefix}.mode", f"unknown mode {self.mode!r}",
                f"use one of {', '.join(WANDB_MODES)}, or leave it unset")
        require(out, bool(self.project), f"{prefix}.project", "empty", "name a project, e.g. midsweep")
        return out
