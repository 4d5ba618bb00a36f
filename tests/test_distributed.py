"""Two ranks (gloo on CPU, env:// like torchrun) train the same run as one rank with the same global batch.

The ranks are CPU processes even where a GPU is visible (two ranks on one GPU would wait for each other
forever in NCCL): train.device=cpu and no visible GPU for the subprocesses."""
import json

import pytest

from runner import train_cli, train_ranks


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
