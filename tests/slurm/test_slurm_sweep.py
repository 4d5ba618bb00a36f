"""Sweeps on a real local SLURM: submission through submitit, relaunch, preemption, requeue, hard kills,
two ranks. Jobs run tests/slurm/stub_app.py (the engine's launch contract in miniature)."""
import os
import signal
import subprocess
import sys

import pytest
from conftest import expected

from midsweep.launch import status

pytestmark = pytest.mark.slurm
NOWAIT = ("hydra.launcher.wait=false",)


def submit_one(sweep, *overrides):
    out = sweep.multirun(*NOWAIT, *overrides)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_id, entry), = sweep.manifest().items()
    return run_id, entry["job_id"]


def running_at(sweep, run_id, step):
    def reached():
        st = sweep.status(run_id)
        return st.get("status") == "running" and st.get("step", -1) >= step
    return reached


def done(sweep, run_id):
    return lambda: sweep.status(run_id).get("status") == "done"


def test_multirun_runs_on_slurm_and_a_relaunch_submits_only_new_points(sweep):
    out = sweep.multirun("w=1,2", "steps=4", "step_s=0.1")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sweep.manifest()
    assert len(runs) == 2 and all(e["job_id"] for e in runs.values())
    for run_id in runs:
        w = float(runs[run_id]["overrides"][0].split("=")[1])
        assert sweep.final(run_id) == pytest.approx(expected(w, 4))
    again = sweep.multirun("w=1,2,3", "steps=4", "step_s=0.1")
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("done, skipped: final value=") == 2
    assert "submitting 1 job(s)" in log
    assert all(len(sweep.attempts(r)) == 1 for r in runs)


def test_usr2_checkpoints_requeues_and_resumes_to_the_same_result(sweep):
    run_id, job = submit_one(sweep, "steps=24", "step_s=0.5")
    sweep.wait_for(running_at(sweep, run_id, 6))
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    sweep.wait_for(done(sweep, run_id), timeout=240)
    starts = [a["start"] for a in sweep.attempts(run_id)]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 6
    assert sweep.final(run_id) == pytest.approx(expected(1.0, 24))


def test_a_real_timeout_requeues_and_resumes(sweep):
    # 1-minute limit, USR2 30 s before it (SLURM may send it up to a minute early): the 50 s run needs two tries
    run_id, _ = submit_one(sweep, "steps=50", "step_s=1", "hydra.launcher.timeout_min=1",
                           "hydra.launcher.signal_delay_s=30")
    sweep.wait_for(done(sweep, run_id), timeout=300, every=2)
    starts = [a["start"] for a in sweep.attempts(run_id)]
    assert len(starts) >= 2 and starts[-1] > 0
    assert sweep.final(run_id) == pytest.approx(expected(1.0, 50))


def test_preemption_by_a_higher_priority_partition_requeues_and_resumes(sweep):
    run_id, job = submit_one(sweep, "steps=30", "step_s=0.5")
    sweep.wait_for(running_at(sweep, run_id, 4))
    # a job in partition "high" that needs every CPU of the node preempts the debug job
    subprocess.run(["sbatch", "-p", "high", "-c", "8", "--mem=100M", "--wrap", "sleep 3", "-o", "/dev/null"],
                   check=True, capture_output=True)
    sweep.wait_for(done(sweep, run_id), timeout=300)
    starts = [a["start"] for a in sweep.attempts(run_id)]
    assert len(starts) >= 2 and starts[-1] > 0
    assert sweep.final(run_id) == pytest.approx(expected(1.0, 30))


def test_plain_scontrol_requeue_resumes_from_the_last_periodic_checkpoint(sweep):
    # no USR2: submitit ignores the SIGTERM, SLURM kills the task KillWait (10 s) later; the run must outlast that
    run_id, job = submit_one(sweep, "steps=60", "step_s=0.5", "ckpt_every=4")
    sweep.wait_for(running_at(sweep, run_id, 10))
    subprocess.run(["scontrol", "requeue", job], check=True)
    sweep.wait_for(done(sweep, run_id), timeout=240)
    starts = [a["start"] for a in sweep.attempts(run_id)]
    assert len(starts) == 2 and starts[1] >= 8 and starts[1] % 4 == 0
    assert sweep.final(run_id) == pytest.approx(expected(1.0, 60))


def test_a_job_killed_hard_is_reported_failed_with_its_log_and_others_finish(sweep):
    out = sweep.multirun(*NOWAIT, "w=1,2", "steps=40", "step_s=0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sweep.manifest()
    victim, other = sorted(runs)
    sweep.wait_for(running_at(sweep, victim, 2))
    os.kill(sweep.attempts(victim)[0]["pid"], signal.SIGKILL)

    def victim_failed():
        rows = {r.run_id: r for r in status.collect(sweep.out)}
        return rows[victim] if rows[victim].state == "failed" else None
    row = sweep.wait_for(victim_failed, timeout=120, every=2)
    assert "ended FAILED" in row.reason and row.log == runs[victim]["stderr"] and os.path.exists(row.log)
    sweep.wait_for(done(sweep, other), timeout=240)
    cli = subprocess.run([sys.executable, "-m", "midsweep.launch.cli", "status", str(sweep.out)], capture_output=True, text=True)
    assert cli.returncode == 0 and "1 done, 1 failed" in cli.stdout


def test_two_ranks_equal_one_rank_with_the_same_global_batch(sweep):
    out = sweep.multirun("tag=r1,r2", "steps=6", "step_s=0.1", "hydra.launcher.tasks_per_node=1")
    assert out.returncode == 0, out.stderr[-3000:]
    out2 = sweep.multirun("tag=two", "steps=6", "step_s=0.1", "hydra.launcher.tasks_per_node=2")
    assert out2.returncode == 0, out2.stderr[-3000:]
    by_tag = {e["overrides"][0]: r for r, e in sweep.manifest().items()}
    assert sweep.attempts(by_tag["tag=two"])[0]["world"] == 2
    assert sweep.final(by_tag["tag=two"]) == pytest.approx(sweep.final(by_tag["tag=r1"]), rel=1e-12)
