"""Resume and fork in one process, through the trainer's own objects: a run stopped at a checkpoint and resumed
trains the same batches to the same losses as the run left alone, and a fork from a published prefix equals the
run trained from scratch (the whole-process versions are in test_run.py, test_hot_loop.py, test_sharing_fork.py)."""
from pathlib import Path

import pytest

from midsweep import rundir
from midsweep.config import to_run_config
from midsweep.data.sampler import MixtureSampler
from midsweep.launch.prepare import compose
from midsweep.train.loop import train

# 20 steps of 8 x 64 tokens, a log row every 5 steps, checkpoints every 10, evaluated every 5
BASE = ("experiment=nano_test", "train.tokens=10240", "eval.every_tokens=2560")


def nano(out: Path, *overrides: str):
    return to_run_config(compose([*BASE, *overrides, f"train.out_dir={out}"]))


class StopAtCheck:
    """A preemption (midsweep.launch.preemption.Interrupt's interface) asked for before the ``n``-th check."""

    def __init__(self, n: int):
        self.n, self.checks, self.handed_over = n, 0, False

    def arm(self) -> None:
        pass

    def requested(self) -> bool:
        self.checks += 1
        return self.checks >= self.n

    def stop_status(self, step: int) -> tuple[str, int, str]:
        return "requeued", step, "stopped by a test"

    def checkpointed(self) -> None:
        self.handed_over = True


@pytest.fixture
def batches(monkeypatch) -> dict:
    """Every batch the sampler draws, by step (the latest draw of a step wins: a resumed run's)."""
    drawn: dict = {}
    next_batch = MixtureSampler.next_batch

    def recording(self, step):
        drawn[step] = next_batch(self, step)
        return drawn[step]

    monkeypatch.setattr(MixtureSampler, "next_batch", recording)
    return drawn


def records(run_dir: Path) -> tuple[list, list]:
    """metrics.jsonl and train.jsonl, the latter without its throughput (a measurement, not a result)."""
    train_rows = [{k: v for k, v in r.items() if k != "tok_per_s"}
                  for r in rundir.read_jsonl(run_dir / rundir.TRAIN_LOG_JSONL)]
    return rundir.read_jsonl(run_dir / rundir.METRICS), train_rows


def test_a_run_stopped_at_a_checkpoint_resumes_with_the_same_batches_and_losses(tmp_path, batches):
    reference = train(nano(tmp_path / "ref", "mixture.introduce_at=0.5"))
    uninterrupted = dict(batches)
    batches.clear()
    run = nano(tmp_path / "stopped", "mixture.introduce_at=0.5")
    stop = StopAtCheck(3)  # checks at steps 5, 10, 15: stops after step 15, a step with no periodic checkpoint
    stopped = train(run, interrupt=stop)
    assert stopped["status"] == "requeued" and stopped["steps"] == 15 and stop.handed_over
    assert rundir.complete_steps(run.run_dir())[-1] == 15
    assert sorted(batches) == list(range(15))
    batches.clear()
    resumed = train(run)
    assert sorted(batches) == list(range(15, 20))  # nothing before the checkpoint is drawn again
    assert all(batches[s] == uninterrupted[s] for s in batches)
    assert records(run.run_dir()) == records(nano(tmp_path / "ref", "mixture.introduce_at=0.5").run_dir())
    for key in ("final", "phase_end", "steps", "tokens", "tokens_by_domain", "flops", "status"):
        assert resumed[key] == reference[key], key


def test_a_fork_from_a_published_prefix_equals_the_run_trained_from_scratch(tmp_path, batches):
    sweep = tmp_path / "shared"
    train(nano(sweep, "mixture=none", "train.publish_steps=[10]"))  # the trunk publishes its step 10
    batches.clear()
    fork = nano(sweep, "mixture.introduce_at=0.5")  # general only for 10 steps, as the trunk
    summary = train(fork)
    assert summary["prefix"]["step"] == 10 and sorted(batches) == list(range(10, 20))
    forked_batches = dict(batches)
    scratch = nano(tmp_path / "scratch", "mixture.introduce_at=0.5", "train.share_prefixes=false")
    assert train(scratch)["prefix"] is None
    assert all(batches[s] == forked_batches[s] for s in forked_batches)
    assert records(fork.run_dir()) == records(scratch.run_dir())

