"""``midsweep_local``: runs the grid's points one after another in this process, like Hydra's basic launcher,
after validating every point and skipping finished runs; with prefix sharing (docs/sharing.md) the runs that
publish a shared prefix run before the runs that fork from it."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.midsweep_launcher import common
from midsweep.launch.preemption import EXIT_CTRL_C
from midsweep.launch.progress import SweepMeter


class MidsweepLocalLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.opts, _ = common.split_options(params)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            return self._launch(job_overrides, initial_job_idx)
        except KeyboardInterrupt:  # outside a run (validation, between runs); a run reports its own Ctrl-C
            print("midsweep: sweep stopped by Ctrl-C; rerunning the same command skips the finished runs and "
                  "resumes the others", file=sys.stderr)
            sys.exit(EXIT_CTRL_C)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        points = common.plan(self, job_overrides, initial_job_idx)
        sharing = common.share(points)
        gpus = common.gpus(self, 1, 1, slurm=False)  # checks the train.device=cuda points only: CPU runs need none
        if self.opts["preview"]:
            return common.show_preview(self, points, gpus, "midsweep_local", sharing)
        common.check_memory(points, gpus)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        common.write_manifests(points, {p.run_id: {"log": str(p.run_dir / "train.log")} for p in points}, sharing)
        sharing.claim()
        returns = {p.index: common.skipped(p) for p in points if not p.submit}
        meter = SweepMeter([p for p in points if p.submit], skipped=sum(not p.submit for p in points))
        for p in sharing.ordered(points):  # every fork after the run that publishes its prefix
            common.log.info(f"\t#{p.index} {p.run_id} ({p.action}): {' '.join(filter_overrides(p.overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sharing.overrides(p))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = p.index
                sweep_config.hydra.job.num = p.index
            # run_job turns an exception of the task into a FAILED return: the other points still run
            returns[p.index] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                       config=sweep_config, job_dir_key="hydra.sweep.dir",
                                       job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            common.log.info(meter.finished(p.run_id, failed=returns[p.index].status == JobStatus.FAILED))
        common.show_sweeps(points)
        return [returns[p.index] for p in points]
