"""``midsweep_local``: runs the grid's points one after another in this process, like Hydra's basic launcher,
after validating every point and skipping finished runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.midsweep_launcher import common


class MidsweepLocalLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.opts, _ = common.split_options(params)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        points = common.plan(self, job_overrides, initial_job_idx)
        if self.opts.get("preview"):
            return common.show_preview(self, points, 1, "midsweep_local")
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        common.write_manifests(points, {p.run_id: {"log": str(p.run_dir / "train.log")} for p in points})
        returns = []
        for p in points:
            if not p.submit:
                returns.append(common.skipped(p))
                continue
            common.log.info(f"\t#{p.index} {p.run_id} ({p.action}): {' '.join(filter_overrides(p.overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, p.overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = p.index
                sweep_config.hydra.job.num = p.index
            # run_job turns an exception of the task into a FAILED return: the other points still run
            returns.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                   config=sweep_config, job_dir_key="hydra.sweep.dir",
                                   job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns
