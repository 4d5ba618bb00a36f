"""Two ranks (gloo on CPU, env:// like torchrun) train the same run as one rank with the same global batch; their
sharded checkpoints resume on one rank.

The ranks are CPU processes even where a GPU is visible (two ranks on one GPU would wait for each other
forever in NCCL): train.device=cpu and no visible GPU for the subprocesses."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from midsweep import rundir
from midsweep.train import checkpoint
from runner import REPO, free_port, train_cli, train_ranks


@pytest.mark.slow
def test_two_ranks_match_one_rank(tmp_path):
    common = ["experiment=nano_test", "train.micro_batch=4", "train.global_batch=8", "train.device=cpu"]
    train_cli(*common, f"train.out_dir={tmp_path / 'one'}")
    ranks = train_ranks(*common, f"train.out_dir={tmp_path / 'two'}", hydra_dir=tmp_path)
    assert all(code == 0 for code, _, _ in ranks), ranks
    (one,) = [p for p in (tmp_path / "one").iterdir() if p.name != "_hydra"]
    (two,) = [p for p in (tmp_path / "two").iterdir() if p.name != "_hydra"]
    assert one.name == two.name  # the rank count is not part of the run's identity
    a = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["domain"]) for r in a] == [(r["step"], r["domain"]) for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=2e-4, abs=2e-4)
        assert rb["tokens_by_domain"] == ra["tokens_by_domain"]


def torchrun(nproc: int, *overrides: str, out: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc -m midsweep.train`` on CPU ranks (gloo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           "-m", "midsweep.train", *overrides, "train.device=cpu", f"train.out_dir={out}", f"hydra.run.dir={out}/h"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_checkpoint_of_two_ddp_ranks_is_sharded_and_resumes_on_one_rank_as_the_uninterrupted_run(tmp_path):
    common = ["experiment=nano_test", "train.device=cpu"]
    train_cli(*common, f"train.out_dir={tmp_path / 'one'}")
    torchrun(2, *common, out=tmp_path / "two")
    (one,) = rundir.run_dirs(tmp_path / "one")
    (two,) = rundir.run_dirs(tmp_path / "two")
    # every rank wrote its part; no file holds the whole model for a rank to torch.load
    for step in rundir.complete_steps(two):
        files = {p.name for p in rundir.checkpoint_dir(two, step).iterdir()}
        assert files == {".metadata", "__0_0.distcp", "__1_0.distcp", checkpoint.STATE, rundir.COMPLETE}
    assert rundir.checkpoint_problem(rundir.checkpoint_dir(two, 20)) is None
    # as if killed after its checkpoint of step 20, then resumed by one process
    for step in rundir.complete_steps(two):
        if step > 20:
            shutil.rmtree(rundir.checkpoint_dir(two, step))
    for name in (rundir.STATUS, rundir.SUMMARY):
        (two / name).unlink()
    proc = train_cli(*common, f"train.out_dir={tmp_path / 'two'}")
    assert "resuming" in proc.stdout + proc.stderr and "from step 20" in proc.stdout + proc.stderr
    a, b = rundir.read_jsonl(one / rundir.METRICS), rundir.read_jsonl(two / rundir.METRICS)
    assert [(r["step"], r["domain"]) for r in a] == [(r["step"], r["domain"]) for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5), (ra["step"], ra["domain"])
        assert rb["tokens_by_domain"] == ra["tokens_by_domain"]
