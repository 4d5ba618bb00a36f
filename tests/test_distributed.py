"""Two ranks (gloo on CPU, env:// like torchrun) train the same run as one rank with the same global batch.

The ranks are CPU processes even where a GPU is visible (two ranks on one GPU would wait for each other
forever in NCCL): train.device=cpu and no visible GPU for the subprocesses."""
import json
import os
import socket
import subprocess
import sys

import pytest

from runner import REPO, train_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_match_one_rank(tmp_path):
    common = ["experiment=nano_test", "train.micro_batch=4", "train.global_batch=8", "train.device=cpu"]
    train_cli(*common, f"train.out_dir={tmp_path / 'one'}")
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, "-m", "midsweep.train", *common,
                                       f"train.out_dir={tmp_path / 'two'}", f"hydra.run.dir={tmp_path}/h{rank}"],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    (one,) = [p for p in (tmp_path / "one").iterdir() if p.name != "_hydra"]
    (two,) = [p for p in (tmp_path / "two").iterdir() if p.name != "_hydra"]
    assert one.name == two.name  # the rank count is not part of the run's identity
    a = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["domain"]) for r in a] == [(r["step"], r["domain"]) for r in b]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=2e-4, abs=2e-4)
        assert rb["tokens_by_domain"] == ra["tokens_by_domain"]
