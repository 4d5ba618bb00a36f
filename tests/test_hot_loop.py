"""The training loop's hot path: it waits for the device only at checks (log steps, evaluations, checkpoints),
yet a non-finite loss is still caught at its own step and a preemption signal still ends in a complete
checkpoint (the background checkpoint write is tested in test_checkpoint.py)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from midsweep import rundir
from runner import REPO, train_cli

NAN = ("experiment=nano_test", "optim.lr=1e30", "optim.warmup=0", "optim.grad_clip=0")


def only_run(sweep):
    (run,) = rundir.run_dirs(sweep)
    return run


@pytest.mark.slow
def test_a_non_finite_loss_between_checks_is_recorded_at_its_own_step(tmp_path):
    train_cli(*NAN, "train.log_every=1", f"train.out_dir={tmp_path / 'every'}", check=False)
    proc = train_cli(*NAN, "train.log_every=5", f"train.out_dir={tmp_path / 'five'}", check=False)
    assert proc.returncode != 0
    every, five = (rundir.read_status(only_run(tmp_path / d)) for d in ("every", "five"))
    bad = every["step"]
    assert five["status"] == "failed" and five["step"] == bad  # not the step of the check that found it
    assert f"non-finite loss at step {bad}" in five["reason"] and "found at the check after step 5" in five["reason"]
    run = only_run(tmp_path / "five")
    assert all(r["step"] <= bad for r in rundir.read_jsonl(run / rundir.TRAIN_LOG_JSONL))
    assert all(s <= bad for s in rundir.complete_steps(run))  # nothing trained past the bad step is kept


LONG = ("experiment=nano_test", "train.tokens=30720", "eval.every_tokens=15360", "train.checkpoint_every=0")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The LONG run trained without a stop: what a stopped and resumed run must equal."""
    sweep = tmp_path_factory.mktemp("uninterrupted")
    train_cli(*LONG, f"train.out_dir={sweep}")
    return only_run(sweep)


@pytest.mark.slow
def test_usr2_stops_at_a_check_with_a_complete_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(
        uninterrupted, tmp_path):
    sweep = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *LONG, f"train.out_dir={sweep}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(sweep.glob(f"*/{rundir.TRAIN_LOG_JSONL}")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR2)
    assert proc.wait(timeout=300) == 75  # preemption.EXIT_INTERRUPTED: saved, requeue me
    run = only_run(sweep)
    status = rundir.read_status(run)
    at = status["step"]
    assert status["status"] == "requeued" and 0 < at < 60 and at % 5 == 0  # log_every=5: stops at a check
    assert rundir.complete_steps(run)[-1] == at
    train_cli(*LONG, f"train.out_dir={sweep}")
    assert rundir.read_jsonl(run / rundir.METRICS) == rundir.read_jsonl(uninterrupted / rundir.METRICS)


def ctrl_c(args: list[str], sweep, times: int = 1) -> subprocess.CompletedProcess:
    """Run midsweep-train with ``args`` and press Ctrl-C ``times`` once it has logged its first steps."""
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list(sweep.glob(f"*/{rundir.TRAIN_LOG_JSONL}")):
        time.sleep(0.05)
    for _ in range(times):
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_checkpoints_says_how_to_resume_in_one_line_and_the_rerun_equals_an_uninterrupted_run(
        uninterrupted, tmp_path):
    sweep = tmp_path / "stopped"
    proc = ctrl_c([*LONG, f"train.out_dir={sweep}"], sweep)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    run = only_run(sweep)
    status = rundir.read_status(run)
    at = status["step"]
    assert status["status"] == "interrupted" and 0 < at < 60 and rundir.complete_steps(run)[-1] == at
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("midsweep-train:")]
    assert line == f"midsweep-train: run {run.name} stopped by Ctrl-C at step {at}; rerunning the same command " \
                   "resumes from it"
    assert f"from step {at}" in train_cli(*LONG, f"train.out_dir={sweep}").stdout
    assert rundir.read_jsonl(run / rundir.METRICS) == rundir.read_jsonl(uninterrupted / rundir.METRICS)


@pytest.mark.slow
def test_ctrl_c_twice_in_a_sweep_stops_it_at_once_in_one_line(tmp_path):
    proc = ctrl_c(["-m", *LONG, "mixture.weight=0.2,0.4", f"train.out_dir={tmp_path}"], tmp_path, times=2)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    (run,) = rundir.run_dirs(tmp_path)  # the sweep stopped: the second point never started
    status = rundir.read_status(run)
    # the second Ctrl-C stops before the next checkpoint; on a busy machine the first may already have been
    # acted on at a check (a checkpoint, then the same stop): either way the run says which, and the sweep ends
    assert status["status"] == "interrupted"
    assert "before its next checkpoint" in status["reason"] or "rerunning the same command resumes" in status["reason"]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("midsweep-train:")]
    assert line.endswith(status["reason"])


@pytest.mark.slow
def test_a_stop_requested_that_first_meets_the_last_step_finishes_the_run_instead_of_requeuing_it(tmp_path):
    # one phase, log_every past the end, evaluation only at the end: after the step-0 evaluation, the only check
    # (where a stop is acted on) is the last step's
    args = (*LONG, "mixture=none", "train.log_every=1000", "eval.every_tokens=30720", f"train.out_dir={tmp_path}")
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(f"*/{rundir.METRICS}")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR2)
    assert proc.wait(timeout=300) == 0
    status = rundir.read_status(only_run(tmp_path))
    assert status["status"] == "done" and status["step"] == 60
