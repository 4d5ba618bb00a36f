"""Multi-node jobs on a real 2-node SLURM cluster on this machine (nodes n1 and n2, one slurmd each; conftest's
``slurm_nodes``): one task per node becomes one torch.distributed rank (MASTER_ADDR is the first node), the run
equals the same run on one rank, a USR2 checkpoints every rank, requeues the job and it resumes across both nodes,
and hsdp shards within a node and replicates across the two.

The scenarios are driven in threads from the module's start, so their waits overlap (the suite shares two cores).
"""
import json
import subprocess

import pytest
from cluster import Run, Scenarios, Sweep, wait_for

pytestmark = pytest.mark.slurm

# 40 steps; the global batch of 8 sequences is 2 micro-batches of 4 on one rank, 1 on each of two ranks
NANO = ("experiment=nano_test", "train.global_batch=8", "train.micro_batch=4")
STEPS = 300
# long enough to be interrupted once training runs, checkpointed every 100 steps
LONG = (*NANO, f"train.tokens={STEPS * 512}", "eval.every_tokens=25600", "train.checkpoint_every=100")
TWO_NODES = ("hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1")
DDP_TOL = 2e-7
"""Relative: two DDP ranks differ from one rank by the order of float sums only (the gradient all-reduce), about
one float32 rounding of the loss (1.2e-7)."""


def losses(run: Run) -> dict:
    """{(file, step, domain, event): loss} of train.jsonl and metrics.jsonl."""
    out = {}
    for name in ("train.jsonl", "metrics.jsonl"):
        for line in (run.dir / name).read_text().splitlines():
            r = json.loads(line)
            out[name, r["step"], r.get("domain"), r.get("event")] = r["loss"]
    return out


def assert_close(run: Run, reference: Run, tol: float) -> float:
    """The run's losses equal the reference's row for row within ``tol`` (relative); the largest difference."""
    got, want = losses(run), losses(reference)
    assert got.keys() == want.keys()
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
    assert worst <= tol, f"largest relative loss difference {worst:.3g} > {tol:g}"
    return worst


def nodes_of(job: str, env: dict) -> str:
    """The nodes SLURM ran ``job`` on (sacct, once slurmdbd has recorded them)."""
    def known():
        out = subprocess.run(["sacct", "-j", job, "-n", "-X", "-P", "-o", "NodeList"], capture_output=True, text=True,
                             env=env).stdout.split()
        return out and out[-1] not in ("", "None assigned") and out[-1]
    return wait_for(known, 60, every=1, why=f"sacct to record the nodes of job {job}", env=env)


def drive_two_nodes(sweep: Sweep, *overrides: str):
    sweep.multirun(*NANO, *TWO_NODES, *overrides)
    ((run_id, entry),) = sweep.manifest().items()
    return sweep.run(run_id), entry["job_id"]


def drive_usr2(sweep: Sweep):
    run, job = sweep.submit(*LONG, *TWO_NODES)
    wait_for(lambda: run.step() >= 20, 300, why="training to start", env=sweep.env)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, env=sweep.env)
    wait_for(run.is_done, 300, every=1, why="the run to finish", env=sweep.env)
    return run, job


@pytest.fixture(scope="module")
def scenarios(slurm_nodes, references, tmp_path_factory):
    references.start(*NANO)
    references.start(*LONG)
    drivers = Scenarios(tmp_path_factory, env=slurm_nodes, workers=3)
    yield {"ddp": drivers.start(drive_two_nodes), "usr2": drivers.start(drive_usr2),
           "hsdp": drivers.start(drive_two_nodes, "train.parallel=hsdp")}
    drivers.close()


def test_two_nodes_of_one_task_equal_one_rank(scenarios, references, slurm_nodes):
    run, job = scenarios["ddp"].result(timeout=600)
    assert nodes_of(job, slurm_nodes) == "n[1-2]"
    assert run.summary()["world_size"] == 2
    worst = assert_close(run, references.run(*NANO), DDP_TOL)
    print(f"2 nodes x 1 task vs 1 rank: largest relative loss difference {worst:.2g}")


def test_usr2_requeues_a_two_node_job_and_it_resumes_on_both_nodes(scenarios, references, slurm_nodes):
    run, job = scenarios["usr2"].result(timeout=600)
    (start,) = run.resumed_from()  # rank 0 alone writes train.log: each resume is in it once
    assert 0 < start < STEPS and "Caught signal SIGUSR2" in run.log()
    assert nodes_of(job, slurm_nodes) == "n[1-2]" and run.summary()["world_size"] == 2
    worst = assert_close(run, references.run(*LONG), DDP_TOL)
    print(f"2 nodes, requeued at step {start}: largest relative loss difference {worst:.2g}")


def test_hsdp_on_two_nodes_shards_within_a_node_replicates_across_and_equals_one_rank(scenarios, references,
                                                                                       slurm_nodes):
    run, job = scenarios["hsdp"].result(timeout=600)
    assert nodes_of(job, slurm_nodes) == "n[1-2]" and run.summary()["world_size"] == 2
    assert_close(run, references.run(*NANO), 1e-3)
