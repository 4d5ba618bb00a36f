"""Prefix sharing on a real local SLURM: the forks' jobs wait for their trunk's job (afterok) until the trunk has
published their prefix, which lifts their dependency while it still trains, and end with the metrics of the same
runs trained from scratch."""
import pytest
from cluster import Sweep, wait_for

pytestmark = pytest.mark.slurm

GRID = ("experiment=nano_test", "eval.every_tokens=2560")  # 40 steps


def logged(run_dir, text: str) -> tuple[str, str]:
    """(time, line) of the first train.log line of ``run_dir`` that contains ``text``; the time has millisecond
    resolution (sacct's one second is too coarse for a 40-step nano run, whose last 30 steps take about one)."""
    lines = (run_dir / "train.log").read_text().splitlines()
    line = next(line for line in lines if text in line)
    return line.split("]", 1)[0].lstrip("["), line


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
    early = next(rid for rid, e in forks.items() if e["prefix"]["step"] == 10)
    # the trunk lifted the fork's afterok once step 10 was published, 30 steps before its own end (whether SLURM
    # starts the fork before the trunk ends is the scheduler's timing, not the engine's)
    lifted, line = logged(sweep.run(trunk).dir, "can start: the prefix they fork from is published")
    assert runs[early]["job_id"] in line and lifted < logged(sweep.run(trunk).dir, " done: ")[0]
    for rid in forks:
        assert sweep.run(rid).summary()["prefix"]["parent"] == trunk
    scratch = references.run(*GRID, "mixture.introduce_at=0.25", "train.share_prefixes=false")
    assert sweep.run(early).losses() == scratch.losses()
