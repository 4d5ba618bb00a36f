"""Checks Hydra runs before it creates its output directory (``hydra.callbacks`` in conf/config.yaml).

Hydra writes its output directory (``train.out_dir/_hydra/...``) before the app starts: where train.out_dir
cannot be written, that fails with a chain of tracebacks. This check says it in one line first.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class OutDirWritable(Callback):
    """Exit with one line when ``train.out_dir`` cannot be written (read-only file system, no permission)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config)


def check_writable(config: DictConfig) -> None:
    try:
        out = Path(str(config.train.out_dir)).absolute()
    except Exception:  # e.g. ${hydra:...}, resolvable only once the job runs: the app reports what then fails
        return
    existing = next(p for p in (out, *out.parents) if p.exists())  # what would hold the directories to create
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):  # access() reports EROFS too
        why = "not a directory" if not existing.is_dir() else "read-only or not writable by you"
        sys.exit(f"midsweep-train: cannot write train.out_dir={out} ({existing} is {why}). "
                 "Fix: set train.out_dir to a directory you can write")
