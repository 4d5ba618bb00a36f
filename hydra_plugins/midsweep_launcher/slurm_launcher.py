"""``midsweep_slurm``: hydra-submitit-launcher's SLURM launcher plus what a sweep needs.

Before anything is submitted: every point is validated, finished runs are skipped, runs whose job is
still queued or running are not submitted twice (two launches of one sweep at once take turns: the second sees
the first's jobs), and ``preview=true`` only prints the plan. Then the
points go out as one job array, the launcher pickled once for all of them (pickled_once.py);
``wait=false`` returns at once (the manifest tells ``midsweep status`` which job runs which run).
Adds the ``srun_args`` and ``python`` keys missing from the 1.2.0 release.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.midsweep_launcher import common
from hydra_plugins.midsweep_launcher.pickled_once import PickledOnce
from midsweep import rundir
from midsweep.config.errors import ConfigError, Problem
from midsweep.launch import manifest, slurm_state

log = logging.getLogger("midsweep.launch")
_EXTRA = ("wait", "srun_args", "python")
_SHELL_KEYS = ("setup", "python")
"""Keys whose values are shell lines of the job script by design (docs/slurm.md); every other key becomes an
``#SBATCH`` line or an srun argument, where a newline would end the line and start another."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BASE_KEYS = set(OmegaConf.structured(BaseQueueConf).keys())


class MidsweepSlurmLauncher(SlurmLauncher):
    def __init__(self, **params: Any) -> None:
        self.opts, rest = common.split_options(params)
        extra = {k: rest.pop(k, None) for k in _EXTRA}
        self.wait = True if extra["wait"] is None else bool(extra["wait"])
        self.srun_args = list(extra["srun_args"]) if extra["srun_args"] else None
        self.python = extra["python"]
        super().__init__(**rest)

    def check_resources(self) -> None:
        p = self.params
        problems = control_characters({**p, "srun_args": self.srun_args})
        if problems:
            raise BadLauncherSetting(problems)
        gpus, tasks = p.get("gpus_per_node"), p.get("tasks_per_node") or 1
        if gpus and tasks != gpus:
            raise ValueError(f"hydra.launcher.tasks_per_node={tasks} but gpus_per_node={gpus}: midsweep runs one task "
                             f"per GPU. Fix: set tasks_per_node={gpus}")
        if p.get("max_num_timeout", 0) < 1:
            log.warning("hydra.launcher.max_num_timeout=0: a preempted or timed-out job fails instead of resuming")
        if p.get("timeout_min", 60) < 50:
            log.warning(f"timeout_min={p.get('timeout_min')} < 50: submitit counts a preemption of a job that ran "
                        f"long enough as a timeout, so max_num_timeout={p.get('max_num_timeout')} bounds "
                        "timeouts and preemptions together")

    def executor(self) -> Any:
        import submitit  # lazy: plugin discovery stays fast

        p = dict(self.params)
        init = {"folder": p.pop("submitit_folder"), "slurm_max_num_timeout": p.pop("max_num_timeout")}
        if self.python:
            init["slurm_python"] = self.python
        ex = submitit.AutoExecutor(cluster="slurm", **init)
        params = {k if k in _BASE_KEYS else f"slurm_{k}": v for k, v in p.items()}
        if self.srun_args:
            params["slurm_srun_args"] = self.srun_args
        ex.update_parameters(**params)
        return ex

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        self.check_resources()
        points = common.plan(self, job_overrides, initial_job_idx)
        gpus = common.gpus(self, self.params.get("gpus_per_node") or 0, self.params.get("nodes") or 1, slurm=True)
        if self.opts["preview"]:
            return common.show_preview(self, points, gpus, "midsweep_slurm", common.share(points))
        common.check_memory(points, gpus)  # before anything is submitted
        job_of = self.send(points)
        returns = []
        for p in points:
            job = job_of.get(p.index)
            if job is None:
                returns.append(common.skipped(p))
            elif not self.wait:
                returns.append(common.returned(p, {"run_id": p.run_id, "job_id": job.job_id, "action": p.action,
                                                   "log": str(job.paths.stdout)}))
            else:
                returns.append(self.result(p, job))
        if not self.wait:
            dirs = sorted({str(p.run_dir.parent) for p in points})
            log.info(f"not waiting (wait=false); follow with: midsweep status {' '.join(dirs)}")
        else:
            common.show_sweeps(points)
        return returns

    def send(self, points: list) -> dict[int, Any]:
        """Submit the points no live job runs yet and record them in the manifest; {point index: job}. Under the
        sweep's launch lock, so a launch started at the same time waits, then sees these jobs as queued."""
        with manifest.launching(p.run_dir.parent for p in points):
            self.skip_queued(points)
            sharing = common.share(points)
            todo = sharing.ordered(points)
            sharing.claim()
            tic = time.perf_counter()
            jobs, note = self.submit(todo, sharing) if todo else ([], "nothing to submit")
            took = time.perf_counter() - tic
            submission_dir = os.path.abspath(str(self.config.hydra.sweep.dir))
            fields = {p.run_id: {"job_id": j.job_id, "log": str(j.paths.stdout), "stderr": str(j.paths.stderr),
                                 "submission_dir": submission_dir} for p, j in zip(todo, jobs)}
            paths = common.write_manifests(points, fields, sharing)
        log.info(f"submitted {len(jobs)} job(s) in {took:.2f}s ({note}); manifest: {', '.join(paths)}")
        return {p.index: j for p, j in zip(todo, jobs)}

    def skip_queued(self, points: list) -> None:
        """A run that a job still pending or running trains or will train is not submitted again: the job the
        manifest names for it, or the job its status.json says trains it (the manifest may name another)."""
        wanted = [p for p in points if p.submit]
        if not wanted:
            return
        jobs = {rid: e.get("job_id") for d in {p.run_dir.parent for p in wanted}
                for rid, e in manifest.read(d)["runs"].items() if e.get("job_id")}
        own = {p.run_id: (rundir.read_status(p.run_dir) or {}).get("slurm_job_id") for p in wanted}
        live = slurm_state.squeue([j for j in (*jobs.values(), *own.values()) if j])
        for p in wanted:
            for job_id in (own[p.run_id], jobs.get(p.run_id)):
                job = live.get(str(job_id))
                if job and job["state"] in slurm_state.LIVE:
                    p.action, p.reason = "queued", f"job {job_id} is still {job['state']}"
                    log.info(f"\t#{p.index} {p.run_id} not submitted again: {p.reason}")
                    break

    def submit(self, todo: list, sharing: Any) -> tuple[list, str]:
        """Submit one job per point, the jobs aligned with ``todo``, and a note on the shared pickle. Points that
        wait for no other go out as one array; the forks of each parent (docs/sharing.md) as one array per
        parent with ``afterok`` on the parent's job, parents before their forks. The parent lifts a fork's
        dependency once it has published the fork's prefix, so the fork starts then."""
        from submitit.core.utils import JobPaths

        ex = self.executor()
        log.info(f"submitting {len(todo)} job(s) to SLURM; sweep dir {self.config.hydra.sweep.dir}")
        tic = time.perf_counter()
        call = PickledOnce.write(JobPaths.get_first_id_independent_folder(ex.folder), self, Singleton.get_state())
        took = time.perf_counter() - tic
        note = f"launcher pickled once: {os.path.getsize(call.path) / 1e6:.2f} MB in {took:.3f}s"
        groups: dict[tuple, list] = {}
        for p in todo:
            parent = sharing.parent(p)
            groups.setdefault((sharing.depth(p), parent.index if parent else -1), []).append(p)
        base = dict(self.params.get("additional_parameters") or {})
        jobs: dict[int, Any] = {}
        for (_, parent), group in sorted(groups.items(), key=lambda kv: kv[0]):
            wait = {"dependency": f"afterok:{jobs[parent].job_id}", "kill_on_invalid_dep": "yes"} if parent >= 0 else {}
            ex.update_parameters(slurm_additional_parameters={**base, **wait})
            args = []
            for p in group:
                log.debug(f"\t#{p.index} {p.run_id}: {' '.join(filter_overrides(p.overrides))}")
                args.append((sharing.overrides(p), "hydra.sweep.dir", p.index, f"job_id_for_{p.index}"))
            jobs.update(zip((p.index for p in group), ex.map_array(call, *zip(*args))))
            for p in group:
                sharing.wait_for(p, jobs[p.index].job_id)
        if len(groups) > 1:
            note += (f"; {len(groups)} arrays (a fork starts once its parent has published its prefix; afterok on "
                     "the parent's job if it fails first)")
        return [jobs[p.index] for p in todo], note

    @staticmethod
    def result(point: Any, job: Any) -> JobReturn:
        """Rank 0's JobReturn; a job that died without one (SIGKILL, OOM, cancelled) becomes a failed return."""
        try:
            return job.results()[0]
        except Exception as e:  # noqa: BLE001 - one lost job must not hide the others' results
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            error = RuntimeError(f"run {point.run_id} (SLURM job {job.job_id}) ended without a result: {first}; "
                                 f"log: {job.paths.stderr}")
            return common.returned(point, error, JobStatus.FAILED)



class BadLauncherSetting(ConfigError, CompactHydraException):
    """A launcher value that would break the job script (Hydra prints it without a traceback)."""


def control_characters(params: dict, prefix: str = "hydra.launcher") -> list[Problem]:
    """A Problem for each launcher value (outside ``_SHELL_KEYS``) holding a control character."""
    problems = []
    for key, value in params.items():
        where = f"{prefix}.{key}"
        if key in _SHELL_KEYS and prefix == "hydra.launcher":
            continue
        if isinstance(value, dict):
            problems += control_characters({str(k): v for k, v in value.items()}, where)
        elif isinstance(value, list):
            problems += control_characters({str(i): v for i, v in enumerate(value)}, where)
        elif isinstance(value, str) and _CONTROL.search(value):
            problems.append(Problem(where, f"{value!r} holds a control character ({_CONTROL.search(value).group()!r}); "
                                    "it becomes an #SBATCH line or an srun argument, which it would break",
                                    "write it on one line (shell lines belong in hydra.launcher.setup)"))
    return problems
