"""Prefix sharing on a real local SLURM: the forks' jobs wait for their trunk's job (afterok) until the trunk has
published their prefix, start then, while the trunk still trains, and end with the metrics of the same runs
trained from scratch."""
import subprocess

import pytest
from cluster import Sweep, wait_for

pytestmark = pytest.mark.slurm

GRID = ("experiment=nano_test", "eval.every_tokens=2560")  # 40 steps


def times(job: str) -> tuple[str, str]:
    """(start, end) of an ended job as sacct reports them (ISO, one-second resolution). slurmdbd records a job
    a moment after it ends, so sacct is asked until it knows both; the newest record wins (ids restart with
    a new cluster while the accounting database keeps the old records)."""
    def known():
        out = subprocess.run(["sacct", "-j", job, "-n", "-X", "-P", "-o", "Start,End"], capture_output=True,
                             text=True).stdout.split()
        rows = [line.split("|") for line in out if "|" in line]
        return rows and "Unknown" not in rows[-1] and all(rows[-1]) and tuple(rows[-1])

    return wait_for(known, 60, every=1, why=f"sacct to record job {job}")


def test_forks_start_once_the_trunk_published_their_prefix_and_equal_runs_trained_from_scratch(
        slurm_cluster, references, tmp_path):
    references.start(*GRID, "mixture.introduce_at=0.25", "train.share_prefixes=false")
    sweep = Sweep(tmp_path / "sweep")
    sweep.multirun(*GRID, "mixture=none,introduce", "mixture.introduce_at=0.25,0.5", "hydra.launcher.wait=false")
    runs = sweep.manifest()
    trunk = next(rid for rid, e in runs.items() if not e.get("prefix"))
    forks = {rid: e for rid, e in runs.items() if e.get("prefix")}
    assert len(forks) == 2 and {e["prefix"]["parent"] for e in forks.values()} == {trunk}
    assert {e["prefix"]["step"] for e in forks.values()} == {10, 20}
    wait_for(lambda: all(sweep.run(rid).is_done() for rid in runs), 900, every=2, why="the sweep to finish")
    trunk_end = times(runs[trunk]["job_id"])[1]
    early = next(rid for rid, e in forks.items() if e["prefix"]["step"] == 10)
    # the trunk lifted the fork's afterok once step 10 was published, 30 steps before its own end
    assert times(runs[early]["job_id"])[0] < trunk_end
    for rid in forks:
        assert sweep.run(rid).summary()["prefix"]["parent"] == trunk
    scratch = references.run(*GRID, "mixture.introduce_at=0.25", "train.share_prefixes=false")
    assert sweep.run(early).losses() == scratch.losses()
