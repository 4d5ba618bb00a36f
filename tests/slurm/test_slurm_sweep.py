"""Sweeps of the real engine (``python -m midsweep.train -m hydra/launcher=slurm_local``) on a real local SLURM:
submission through submitit, relaunch without rework, USR2 / timeout / preemption / plain requeue with
resume to the same metrics as an uninterrupted run, a hard kill, and two ranks.

Each scenario is driven in its own thread from session start, so their waits overlap (the suite shares two
cores); a test collects its scenario's outcome and checks it.
"""
import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest
from cluster import ENV, REPO, Run, Scenarios, Sweep, signal_pending, task_pid, wait_for

from midsweep.launch import status
from midsweep.launch.sweep import format_losses

pytestmark = pytest.mark.slurm

STEPS = 1000
# 1,000 steps of the nano model (15-45 s of training, as the suite loads the cores): long enough to interrupt
# mid-run, and past the first periodic checkpoint
LONG = ("experiment=nano_test", f"train.tokens={STEPS * 512}", "eval.every_tokens=51200", "train.checkpoint_every=100")
# 40 steps; a global batch of 8 sequences is 2 micro-batches of 4 on one rank, 1 on each of two ranks
NANO = ("experiment=nano_test", "train.global_batch=8", "train.micro_batch=4")
GRID = ("experiment=nano_test", "train.tokens=5120")  # 10 steps


def in_queue(job: str) -> bool:
    return job in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()


def training_at(run, step: int):
    return lambda: run.step() >= step and run.step()


def drive_usr2(sweep: Sweep):
    run, job = sweep.submit(*LONG)
    wait_for(training_at(run, 50), 300, why="training to start")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(run.is_done, 300, why="the run to finish")
    return run


@contextlib.contextmanager
def stopped_until_usr2(run, job: str):
    """The run's process stopped (SIGSTOP: no CPU, and SLURM's clocks run on) from now until the USR2 that the
    body makes SLURM send waits at it: the signal lands mid-run, however fast the machine trains."""
    pid = task_pid(job)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
        wait_for(lambda: signal_pending(pid, signal.SIGUSR2) or "Caught signal SIGUSR2" in run.log(), 120,
                 every=0.2, why="SLURM's USR2")
    finally:
        with contextlib.suppress(ProcessLookupError):  # SLURM's own SIGCONT (preemption) may have let it end
            os.kill(pid, signal.SIGCONT)


def drive_timeout(sweep: Sweep):
    # SLURM checks time limits every 30 s and sends USR2 at the first check less than signal_delay_s + 30 s
    # before the limit: with a 1-minute limit and 5 s, 25-55 s after the start (the nano run may have ended by
    # then, were it not stopped until the signal)
    run, job = sweep.submit(*LONG, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5")
    wait_for(training_at(run, 50), 300, why="training to start")
    with stopped_until_usr2(run, job):
        pass
    wait_for(run.is_done, 420, every=2, why="the run to finish")
    return run


def drive_preemption(sweep: Sweep, preempted: threading.Event):
    try:
        run, job = sweep.submit(*LONG)
        wait_for(training_at(run, 50), 300, why="training to start")
        with stopped_until_usr2(run, job):
            # a job in partition "high" that needs every CPU of the node preempts the debug job
            high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "8", "--mem=100M", "-o", "/dev/null",
                                   "--wrap", "sleep 1"], check=True, capture_output=True, text=True).stdout.strip()
        wait_for(lambda: not in_queue(high), 180, why=f"the preempting job {high} to end")
    finally:
        preempted.set()
    wait_for(run.is_done, 300, why="the run to finish")
    return run


def drive_requeue(sweep: Sweep):
    run, job = sweep.submit(*LONG)
    at = wait_for(training_at(run, 150), 300, why="training past the first checkpoint")
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_for(run.is_done, 300, why="the run to finish")
    return run, at


def drive_hard_kill(sweep: Sweep):
    sweep.multirun("hydra.launcher.wait=false", *NANO, "train.tokens=20480,81920")
    runs = sweep.manifest()
    (victim,) = [r for r, e in runs.items() if "train.tokens=81920" in e["overrides"]]
    (other,) = set(runs) - {victim}
    job = runs[victim]["job_id"]
    wait_for(lambda: sweep.run(victim).status().get("status") == "running", 300, why="the victim to train")
    os.kill(task_pid(job), signal.SIGKILL)

    def victim_failed():
        rows = {r.run_id: r for r in status.collect(sweep.out)}
        return rows[victim] if rows[victim].state == "failed" else None
    row = wait_for(victim_failed, 180, every=2, why="SLURM to end the killed job")
    wait_for(sweep.run(other).is_done, 300, why="the other run to finish")
    cli = subprocess.run([sys.executable, "-m", "midsweep.launch.cli", "status", str(sweep.out)],
                         capture_output=True, text=True, cwd=REPO, env=ENV)
    return runs, victim, other, row, cli


def drive_grid(sweep: Sweep):
    first = sweep.multirun(*GRID, "mixture.weight=0.2,0.4")
    before = sweep.manifest()
    again = sweep.multirun(*GRID, "mixture.weight=0.2,0.4")
    unchanged = sweep.manifest()
    grown = sweep.multirun(*GRID, "mixture.weight=0.2,0.4,0.6")
    return first, before, again, unchanged, grown, sweep.manifest()


def drive_two_ranks(sweep: Sweep):
    sweep.multirun(*NANO, "hydra.launcher.tasks_per_node=2")
    ((run_id, entry),) = sweep.manifest().items()
    return sweep.run(run_id), entry


@pytest.fixture(scope="module")
def scenarios(slurm_cluster, references, tmp_path_factory):
    references.start(*LONG)
    references.start(*NANO)
    drivers = Scenarios(tmp_path_factory)
    preempted = threading.Event()
    out = {"preemption": drivers.start(drive_preemption, preempted)}
    # the preempting job takes every CPU and would preempt any debug job: the others start after it
    while not preempted.wait(1) and not out["preemption"].done():
        pass
    for name, driver in [("requeue", drive_requeue), ("timeout", drive_timeout), ("usr2", drive_usr2),
                         ("kill", drive_hard_kill), ("two_ranks", drive_two_ranks), ("grid", drive_grid)]:
        out[name] = drivers.start(driver)
    yield out
    drivers.close()


def outcome(scenarios, name):
    return scenarios[name].result(timeout=600)


def test_multirun_runs_on_slurm_and_a_relaunch_submits_only_new_points(scenarios):
    first, before, again, unchanged, grown, after = outcome(scenarios, "grid")
    assert len(before) == 2 and all(e["job_id"] for e in before.values())
    runs = {r: Run(e["run_dir"]) for r, e in before.items()}
    assert all(run.is_done() and run.summary()["final"] for run in runs.values())
    # the same command again: nothing submitted, each finished run's result reported
    log = again.stdout + again.stderr
    assert "submitted 0 job(s)" in log and "submitting" not in log
    for run_id, run in runs.items():
        assert f"{run_id} done, skipped: final {format_losses(run.summary()['final'])}" in log
    assert {r: e["job_id"] for r, e in unchanged.items()} == {r: e["job_id"] for r, e in before.items()}
    # one more value on the axis: only the new point gets a job
    log = grown.stdout + grown.stderr
    assert "submitting 1 job(s)" in log and log.count("done, skipped") == 2
    (new,) = set(after) - set(before)
    assert {r: after[r]["job_id"] for r in before} == {r: e["job_id"] for r, e in before.items()}
    assert after[new]["job_id"] not in {e["job_id"] for e in before.values()}
    assert Run(after[new]["run_dir"]).is_done()


def test_usr2_checkpoints_requeues_and_resumes_to_the_same_metrics(scenarios, references):
    run = outcome(scenarios, "usr2")
    (start,) = run.resumed_from()
    assert 0 < start < STEPS and "Caught signal SIGUSR2" in run.log()
    assert run.losses() == references.run(*LONG).losses()


def test_a_real_timeout_requeues_and_resumes_to_the_same_metrics(scenarios, references):
    run = outcome(scenarios, "timeout")
    starts = run.resumed_from()
    assert starts and all(0 <= s < STEPS for s in starts) and "this job is timed-out" in run.log()
    assert run.losses() == references.run(*LONG).losses()


def test_preemption_by_a_higher_priority_partition_requeues_and_resumes(scenarios, references):
    run = outcome(scenarios, "preemption")
    starts = run.resumed_from()
    assert starts and 0 < starts[0] < STEPS and "this job is preempted" in run.log()
    assert run.losses() == references.run(*LONG).losses()


def test_plain_scontrol_requeue_resumes_from_the_last_periodic_checkpoint(scenarios, references):
    run, requeued_at = outcome(scenarios, "requeue")
    (start,) = run.resumed_from()
    # no USR2: SLURM ends the job KillWait (10 s) after its SIGTERM, the run resumes from its newest periodic one
    assert start % 100 == 0 and 100 <= start < STEPS and "Caught signal" not in run.log()
    assert run.losses() == references.run(*LONG).losses()


def test_a_job_killed_hard_is_reported_failed_with_its_log_and_the_other_finishes(scenarios):
    runs, victim, other, row, cli = outcome(scenarios, "kill")
    assert "ended FAILED" in row.reason and row.log == runs[victim]["stderr"] and os.path.exists(row.log)
    assert cli.returncode == 0 and "1 done, 1 failed" in cli.stdout
    failed_line = next(line for line in cli.stdout.splitlines() if line.startswith(victim))
    assert "failed" in failed_line and runs[victim]["stderr"] in failed_line


def test_two_ranks_equal_one_rank_with_the_same_global_batch(scenarios, references):
    run, entry = outcome(scenarios, "two_ranks")
    job_dir = os.path.dirname(entry["log"])
    assert os.path.exists(os.path.join(job_dir, f"{entry['job_id']}_1_log.out"))  # the second rank's task
    two, one = run.losses(), references.run(*NANO).losses()
    assert [r[:3] for r in two] == [r[:3] for r in one]
    assert [r[3] for r in two] == pytest.approx([r[3] for r in one], rel=2e-4)
