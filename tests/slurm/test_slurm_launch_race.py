"""Two ``wait=false`` launches of one sweep 0.3 s apart on a real local SLURM: each run is submitted once, the
manifest names the job that trains it, and ``midsweep status`` reads every run done at the end."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from cluster import ENV, REPO, Sweep, task_pid, wait_for

from midsweep.launch import status

pytestmark = pytest.mark.slurm

GRID = ("experiment=nano_test", "train.tokens=5120", "mixture.weight=0.2,0.5")  # 2 runs of 10 steps


def test_two_launches_at_once_submit_each_run_once(slurm_cluster, tmp_path):
    sweep = Sweep(tmp_path / "sweep")
    cmds = [[sys.executable, "-m", "midsweep.train", "-m", "hydra/launcher=slurm_local", "hydra.launcher.wait=false",
             f"train.out_dir={sweep.out}", f"hydra.sweep.dir={tmp_path / f'hydra{i}'}", *GRID] for i in range(2)]
    procs = []
    for cmd in cmds:
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
        time.sleep(0.3)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    submitted = [int(n) for log in logs for n in re.findall(r"submitted (\d+) job\(s\)", log)]
    assert sorted(submitted) == [0, 2], logs  # one launch submitted both runs, the other saw them queued
    assert sum("not submitted again" in log for log in logs) == 1
    wait_for(lambda: all(sweep.run(rid).is_done() for rid in sweep.manifest()), 300, why="both runs done")
    rows = status.collect(sweep.out)
    assert [r.state for r in rows] == ["done", "done"]
    assert {r.run_id: r.job_id for r in rows} == {rid: e["job_id"] for rid, e in sweep.manifest().items()}


def test_a_fork_cancelled_because_its_parent_was_killed_names_the_parent(slurm_cluster, tmp_path):
    """The parent trains 1,000 steps and publishes the fork's prefix at step 500; killed (SIGKILL) before, its
    status.json still says running, its job ends FAILED and SLURM cancels the fork (afterok)."""
    sweep = Sweep(tmp_path / "sweep")
    sweep.multirun("hydra.launcher.wait=false", "experiment=nano_test", "train.tokens=512000",
                   "eval.every_tokens=51200", "mixture=none,introduce", "mixture.introduce_at=0.5")
    runs = sweep.manifest()
    (fork,) = [r for r, e in runs.items() if e.get("prefix")]
    (parent,) = set(runs) - {fork}
    wait_for(lambda: sweep.run(parent).step() >= 10, 300, why="the parent to train")
    os.kill(task_pid(runs[parent]["job_id"]), signal.SIGKILL)

    def both_failed():
        rows = {r.run_id: r for r in status.collect(sweep.out)}
        return rows if all(r.state == "failed" for r in rows.values()) else None
    rows = wait_for(both_failed, 180, every=2, why="SLURM to end the killed job and cancel the fork")
    assert sweep.run(parent).status()["status"] == "running"  # the killed process could not say otherwise
    assert f"SLURM job {runs[parent]['job_id']} ended FAILED" in rows[parent].reason
    assert rows[fork].reason.startswith(f"forks from run {parent} at step 500, which failed: SLURM job "
                                        f"{runs[parent]['job_id']} ended FAILED"), rows[fork].reason
