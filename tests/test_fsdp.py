"""Sharded training across real ranks (torchrun, gloo on CPU) trains the run that one rank trains.

Two ranks with ``train.parallel=fsdp`` (with and without activation checkpointing) or ``hsdp`` (one node of two
ranks, and two simulated nodes of one rank: two torchrun processes on localhost) against one plain rank: the same
run id, and every training and held-out loss within 1e-3."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import REPO, train_cli
from test_distributed import free_port

COMMON = ["experiment=nano_test", "train.device=cpu", "hydra.output_subdir=null"]


def torchrun(out: Path, *overrides: str, nodes: int = 1, per_node: int = 2) -> None:
    """Train with ``nodes`` torchrun processes of ``per_node`` ranks each on this machine (static rendezvous)."""
    port, env = free_port(), dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node-rank={node}",
         f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1", f"--master-port={port}",
         "-m", "midsweep.train", *COMMON, f"train.out_dir={out}", f"hydra.run.dir={out}/_hydra/{node}", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in range(nodes)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-4000:] for o in outs)


def run_dir(out: Path) -> Path:
    (found,) = [p for p in out.iterdir() if p.name != "_hydra"]
    return found


def rows(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    train_cli(*COMMON, f"train.out_dir={out}", f"hydra.run.dir={out}/_hydra")
    return run_dir(out)


def assert_same_losses(one: Path, other: Path) -> None:
    assert other.name == one.name  # how the ranks hold the model is not part of the run's identity
    for name in ("train.jsonl", "metrics.jsonl"):
        a, b = rows(one, name), rows(other, name)
        assert [(r["step"], r.get("domain")) for r in a] == [(r["step"], r.get("domain")) for r in b]
        for ra, rb in zip(a, b):
            assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-3), (name, ra["step"])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["train.parallel=fsdp"],
                                       ["train.parallel=fsdp", "train.activation_checkpointing=true"],
                                       ["train.parallel=hsdp"]], ids=["fsdp", "fsdp_ac", "hsdp"])
def test_two_sharded_ranks_match_one_rank(one_rank, tmp_path, overrides):
    torchrun(tmp_path, *overrides)
    assert_same_losses(one_rank, run_dir(tmp_path))


@pytest.mark.slow
def test_hsdp_over_two_nodes_matches_one_rank(one_rank, tmp_path):
    torchrun(tmp_path, "train.parallel=hsdp", nodes=2, per_node=1)
    assert_same_losses(one_rank, run_dir(tmp_path))
