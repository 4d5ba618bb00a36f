"""One run end to end: the results contract, resume after a kill, faults that keep finished results."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from midsweep.train.checkpoint import model_weights
from runner import REPO, train_cli


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "status.json").exists())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted nano_test run (introduction at step 20), shared by the tests below; its weight is typed
    as the shipped one, so that the summary records a command-line override."""
    sweep = tmp_path_factory.mktemp("reference")
    train_cli("experiment=nano_test", "mixture.weight=0.3", f"train.out_dir={sweep}")
    (run,) = run_dirs(sweep)
    return run


@pytest.mark.slow
def test_a_tiny_run_writes_the_full_results_contract(reference):
    run = reference
    status = json.loads((run / "status.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    metrics = rows(run / "metrics.jsonl")
    assert status["status"] == "done" and status["contract"] == 2 and summary["contract"] == 2
    assert (run / "config.yaml").exists() and (run / "train.log").exists()
    # every file is as readable as the umask lets a new file be (not mkstemp's 0600): teammates can analyse it
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert "checkpoints/step_00000040/COMPLETE" in modes and "run.lock" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    # evaluation at aligned token counts: init, every 5120 tokens (10 steps), the phase end at step 20, the end
    assert sorted({r["tokens"] for r in metrics}) == [0, 5120, 10240, 15360, 20480]
    assert {r["domain"] for r in metrics} == {"general", "code", "math", "target"}
    assert {r["event"] for r in metrics} == {"init", "every", "phase_end", "final"}
    assert [r["phase"] for r in metrics if r["step"] == 20] == ["pretrain"] * 4  # the phase that just ended
    last = [r for r in metrics if r["step"] == 40]
    assert last[0]["phase"] == "midtrain"
    # the code share of training is the schedule's: 20 steps general only, then 20 steps at weight 0.3
    assert last[0]["tokens_by_domain"]["code"] == pytest.approx(0.3 * 20 * 8 * 64, rel=0.05)
    assert summary["status"] == "done" and summary["run_id"] == run.name
    assert summary["coords"]["mixture.introduce_at"] == 0.5 and summary["coords"]["mixture.weight"] == 0.3
    assert summary["coords"]["mixture.introduce_tokens"] == 20 * 8 * 64
    assert summary["overrides"]["mixture.weight"] == "0.3"  # the command line, as typed
    assert summary["final"] == {r["domain"]: r["loss"] for r in last}
    assert set(summary["phase_end"]) == {"pretrain", "midtrain"}
    assert summary["tokens"] == 20480 and summary["flops"] > 0 and summary["steps"] == 40
    init = {r["domain"]: r["loss"] for r in metrics if r["step"] == 0}
    assert summary["final"]["general"] < init["general"] - 0.5  # it learned
    train_rows = rows(run / "train.jsonl")
    assert len(train_rows) == 8
    # tok_per_s is the rate of the training steps alone: the rows' windows add up to the steps' wall time
    windows = zip([0] + [r["step"] for r in train_rows], train_rows)
    assert sum((r["step"] - before) * 512 / r["tok_per_s"] for before, r in windows) == pytest.approx(
        summary["wall_time_s"], rel=1e-6)
    # the newest and the pinned checkpoints (phase boundary, end) are kept, all loadable without pickle code
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step_00000020" in ckpts and "step_00000040" in ckpts
    torch.load(run / "checkpoints" / "step_00000040" / "train_state.pt", weights_only=True)


@pytest.mark.slow
def test_rerunning_a_done_run_does_nothing(reference):
    before = (reference / "metrics.jsonl").read_text()
    proc = train_cli("experiment=nano_test", f"train.out_dir={reference.parent}")
    assert "is done already" in proc.stdout + proc.stderr
    assert (reference / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_runs_that_differ_after_step_t_are_identical_before_it(reference, tmp_path):
    train_cli("experiment=nano_test", "mixture.introduce_at=0.75", f"train.out_dir={tmp_path}")
    (late,) = run_dirs(tmp_path)
    a, b = rows(reference / "metrics.jsonl"), rows(late / "metrics.jsonl")
    def upto20(metrics):  # the event label differs at step 20 (a phase end in one run only)
        return [{k: v for k, v in r.items() if k != "event"} for r in metrics if r["step"] <= 20]
    assert upto20(a) == upto20(b)  # same batches and learning rates up to the fork
    assert [r["loss"] for r in a if r["step"] == 30] != [r["loss"] for r in b if r["step"] == 30]


@pytest.mark.slow
def test_killed_run_resumes_and_equals_an_uninterrupted_run_bitwise(reference, nano, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *nano], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(sweep.glob("*/checkpoints/step_00000020/COMPLETE")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = run_dirs(sweep)
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # killed mid-run
    train_cli(*nano)
    ref_run = reference
    assert run.name == ref_run.name
    assert rows(run / "metrics.jsonl") == rows(ref_run / "metrics.jsonl")  # every loss, bit for bit
    final = [json.loads((r / "summary.json").read_text())["final"] for r in (run, ref_run)]
    assert final[0] == final[1]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_reruns_without_duplicate_rows(reference, nano, tmp_path):
    sweep = tmp_path / "sweep"
    late_ckpt = [*nano, "train.checkpoint_every=0"]  # the first checkpoint is the phase boundary's (step 20)
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *late_ckpt], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(sweep.glob("*/train.jsonl")):  # step 0 evaluated, step 5 logged
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = run_dirs(sweep)
    assert not list(run.glob("checkpoints/*/COMPLETE")) and rows(run / "metrics.jsonl")
    assert json.loads((run / "run.lock.json").read_text())["pid"] == proc.pid  # the dead holder's record stays
    for name in ("metrics.jsonl", "train.jsonl"):  # as a kill in the middle of an append leaves them
        with open(run / name, "a") as f:
            f.write('{"step": 7, "tok')
    train_cli(*late_ckpt)  # the killed process's lock does not block, and the torn lines do not break the rerun
    metrics, logged = rows(run / "metrics.jsonl"), rows(run / "train.jsonl")
    keys = [(r["step"], r["domain"], r["event"]) for r in metrics]
    assert len(keys) == len(set(keys)) and len(logged) == len({r["step"] for r in logged}) == 8
    assert metrics == rows(reference / "metrics.jsonl")  # the rerun is the uninterrupted run, nothing more
    assert not (run / "run.lock.json").exists()


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_skipped(reference, nano, tmp_path):
    run = tmp_path / "sweep" / reference.name  # a copy of the reference run (it keeps steps 30 and 40)
    shutil.copytree(reference, run)
    status = run / "status.json"
    status.write_text(status.read_text().replace('"done"', '"running"'))  # as if killed after the last save
    (run / "checkpoints" / "step_00000040" / "__0_0.distcp").write_bytes(b"garbage")
    proc = train_cli(*nano)
    log = proc.stdout + proc.stderr
    assert "step_00000040 is corrupt (checksum mismatch in __0_0.distcp): set aside as step_00000040.corrupt" in log
    assert "resuming" in log and "from step 30" in log
    assert json.loads(status.read_text())["status"] == "done"


@pytest.mark.slow
def test_non_finite_loss_fails_the_run_with_step_and_reason_and_keeps_metrics(nano, tmp_path):
    proc = train_cli(*nano, "optim.lr=1e30", "optim.warmup=0", "optim.grad_clip=0", check=False)
    assert proc.returncode != 0
    (run,) = run_dirs(tmp_path / "sweep")
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "non-finite loss" in status["reason"] and "optim.lr" in status["reason"]
    assert status["step"] > 0
    assert rows(run / "metrics.jsonl")  # the evaluations before the failure are still there
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_posttraining_phase_trains_on_the_target_with_prompts_masked(nano, tmp_path):
    train_cli(*nano, "posttrain=target", "posttrain.tokens=5120", "posttrain.lr=3e-3")
    (run,) = run_dirs(tmp_path / "sweep")
    metrics = rows(run / "metrics.jsonl")
    target = {r["step"]: r["loss"] for r in metrics if r["domain"] == "target"}
    assert max(target) == 50 and target[50] < target[40]  # post-training lowers the target loss
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["phase_end"]) == {"pretrain", "midtrain", "posttrain"}
    assert summary["tokens_by_domain"]["target"] == 5120


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one_and_writes_the_same_checkpoints(reference, tmp_path):
    """train.compile (train=gpu's default) compiles the model and the loss head: the same losses at every
    evaluation to 1e-4 over the 40 steps, the same run id and checkpoint keys, so either mode resumes the other."""
    train_cli("experiment=nano_test", "train.compile=true", f"train.out_dir={tmp_path}")
    (run,) = run_dirs(tmp_path)
    assert run.name == reference.name
    compiled, eager = rows(run / "metrics.jsonl"), rows(reference / "metrics.jsonl")
    assert [(r["step"], r["domain"]) for r in compiled] == [(r["step"], r["domain"]) for r in eager]
    for c, e in zip(compiled, eager):
        assert c["loss"] == pytest.approx(e["loss"], rel=1e-4), (c["step"], c["domain"])
    def keys(r):
        return set(model_weights(r / "checkpoints" / "step_00000040"))
    assert keys(run) == keys(reference)


@pytest.mark.slow
def test_a_domain_added_on_the_command_line_is_trained_and_evaluated(nano, tmp_path):
    docs = tmp_path / "legal.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Clause {i}. The lessee shall return the premises within {i % 30 + 1} "
                                                f"days of notice, subject to section {i % 7}."}) + "\n"
                            for i in range(300)))
    train_cli(*nano, f"+data.domains.legal={{kind: files, data_files: [{docs}], heldout_documents: 20}}",
              "mixture.domain=legal", "mixture.weight=0.5")
    (run,) = run_dirs(tmp_path / "sweep")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["coords"]["mixture.domain"] == "legal"
    assert summary["tokens_by_domain"]["legal"] == pytest.approx(0.5 * 20 * 8 * 64, rel=0.1)  # from step 20
    legal = {r["step"]: r["loss"] for r in rows(run / "metrics.jsonl") if r["domain"] == "legal"}
    assert legal[40] < legal[20] - 0.3, legal  # it learned the new domain once it came in
