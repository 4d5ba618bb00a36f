"""Sharded training across real ranks (torchrun, gloo on CPU) trains the run that one rank trains.

Two ranks with ``train.parallel=fsdp`` (with and without activation checkpointing, compiled) or ``hsdp`` (one
node of two ranks, and two simulated nodes of one rank: two torchrun processes on localhost) against one plain rank:
the same run id, and every training and held-out loss within 1e-3. Checkpoints cross modes and world sizes: an fsdp run
resumes on one (ddp) rank, a one-rank checkpoint resumes and a one-rank prefix forks into two fsdp ranks, and
``train.init_from`` and ``midsweep export`` read an fsdp checkpoint."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midsweep import rundir
from midsweep.launch.cli import main as midsweep
from runner import REPO, free_port, train_cli
from test_export import builtin_at
from test_sharing_fork import BASE, INTRO, TRUNK

# 33 held-out sequences per domain: the ranks' evaluation shares differ by one (the same number of forward
# passes all the same, or the sharded model's gathers would wait for each other forever)
COMMON = ["experiment=nano_test", "train.device=cpu", "eval.tokens=2112", "hydra.output_subdir=null"]


def torchrun(out: Path, *overrides: str, nodes: int = 1, per_node: int = 2) -> str:
    """Train with ``nodes`` torchrun processes of ``per_node`` ranks each on this machine (static rendezvous)."""
    port, env = free_port(), dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node-rank={node}",
         f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1", f"--master-port={port}",
         "-m", "midsweep.train", *COMMON, f"train.out_dir={out}", f"hydra.run.dir={out}/_hydra/{node}", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in range(nodes)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-4000:] for o in outs)
    return "\n".join(outs)


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


@pytest.fixture(scope="module")
def fsdp_two(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    torchrun(out, "train.parallel=fsdp")
    return run_dir(out)


def assert_same_losses(one: Path, other: Path, abs: float = 1e-3) -> None:
    assert other.name == one.name  # how the ranks hold the model is not part of the run's identity
    for name in ("train.jsonl", "metrics.jsonl"):
        a, b = rows(one, name), rows(other, name)
        assert [(r["step"], r.get("domain")) for r in a] == [(r["step"], r.get("domain")) for r in b]
        for ra, rb in zip(a, b):
            assert rb["loss"] == pytest.approx(ra["loss"], abs=abs), (name, ra["step"])


def interrupted_copy(run: Path, out: Path, step: int) -> Path:
    """A copy of finished ``run`` in sweep ``out`` as if killed after its checkpoint of ``step``."""
    copy = out / run.name
    shutil.copytree(run, copy)
    for later in rundir.complete_steps(copy):
        if later > step:
            shutil.rmtree(rundir.checkpoint_dir(copy, later))
    for name in (rundir.STATUS, rundir.SUMMARY):
        (copy / name).unlink()
    return copy


@pytest.mark.slow
def test_two_fsdp_ranks_match_one_rank(one_rank, fsdp_two):
    assert_same_losses(one_rank, fsdp_two)
    files = {p.name for p in rundir.checkpoint_dir(fsdp_two, 40).iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp"} <= files  # each rank wrote its shards


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["train.parallel=fsdp", "train.activation_checkpointing=true"],
                                       ["train.parallel=fsdp", "train.activation_checkpointing=true",
                                        "train.compile=true"],  # each block compiled, then sharded
                                       ["train.parallel=hsdp"]], ids=["fsdp_ac", "fsdp_ac_compile", "hsdp"])
def test_two_sharded_ranks_match_one_rank(one_rank, tmp_path, overrides):
    torchrun(tmp_path, *overrides)
    assert_same_losses(one_rank, run_dir(tmp_path))


@pytest.mark.slow
def test_hsdp_over_two_nodes_matches_one_rank(one_rank, tmp_path):
    torchrun(tmp_path, "train.parallel=hsdp", nodes=2, per_node=1)
    assert_same_losses(one_rank, run_dir(tmp_path))


@pytest.mark.slow
def test_an_fsdp_run_resumes_on_one_rank_and_a_one_rank_run_on_two_fsdp_ranks(one_rank, fsdp_two, tmp_path):
    resumed = interrupted_copy(fsdp_two, tmp_path / "a", 20)
    proc = train_cli(*COMMON, f"train.out_dir={tmp_path / 'a'}", f"hydra.run.dir={tmp_path}/_hydra")
    assert "from step 20" in proc.stdout + proc.stderr
    assert_same_losses(one_rank, resumed)

    resumed = interrupted_copy(one_rank, tmp_path / "b", 20)
    assert "from step 20" in torchrun(tmp_path / "b", "train.parallel=fsdp")
    assert_same_losses(one_rank, resumed)


@pytest.mark.slow
def test_a_one_rank_prefix_forks_into_two_fsdp_ranks(tmp_path):
    base = [*COMMON, *BASE[1:]]
    train_cli(*base, *TRUNK, f"train.out_dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path}/_h1")
    train_cli(*base, *INTRO, "train.share_prefixes=false", f"train.out_dir={tmp_path / 'scratch'}",
              f"hydra.run.dir={tmp_path}/_h2")
    out = torchrun(tmp_path / "sweep", *BASE[1:], *INTRO, "train.parallel=fsdp")
    assert "forking from prefix" in out and "from step 10" in out
    scratch = run_dir(tmp_path / "scratch")
    assert_same_losses(scratch, tmp_path / "sweep" / scratch.name)


@pytest.mark.slow
def test_init_from_and_export_read_an_fsdp_checkpoint(fsdp_two, tmp_path, capsys):
    train_cli(*COMMON, f"train.init_from={fsdp_two}", f"train.out_dir={tmp_path / 'init'}",
              f"hydra.run.dir={tmp_path}/_hydra")
    final = {r["domain"]: r["loss"] for r in rows(fsdp_two, "metrics.jsonl") if r["event"] == "final"}
    init = {r["domain"]: r["loss"] for r in rows(run_dir(tmp_path / "init"), "metrics.jsonl") if r["step"] == 0}
    assert init == pytest.approx(final, abs=1e-5)  # the weights the sharded run ended with, whole
    # into a sharded run: each rank reads its shards of them
    torchrun(tmp_path / "init2", f"train.init_from={fsdp_two}", "train.parallel=fsdp", "train.tokens=5120")
    init2 = {r["domain"]: r["loss"] for r in rows(run_dir(tmp_path / "init2"), "metrics.jsonl") if r["step"] == 0}
    assert init2 == pytest.approx(final, abs=1e-5)

    transformers = pytest.importorskip("transformers")
    assert midsweep(["export", str(fsdp_two), str(tmp_path / "hf")]) == 0
    assert "exported step 40" in capsys.readouterr().out
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(1, 256, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, builtin_at(fsdp_two, 40)(x), atol=1e-5, rtol=0)
