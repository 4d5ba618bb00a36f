"""Two ``wait=false`` launches of one sweep 0.3 s apart on a real local SLURM: each run is submitted once, the
manifest names the job that trains it, and ``midsweep status`` reads every run done at the end."""
import re
import subprocess
import sys
import time

import pytest
from cluster import ENV, REPO, Sweep, wait_for

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
