"""Checkpoints on disk: sharded (DCP) model and optimizer plus the TrainState, written in the background from a
snapshot; a checkpoint whose bytes differ from what was written is never loaded and a resume falls back to the
previous one; an older midsweep's marker (no checksums) still loads, an older midsweep's format is refused with
the fix."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from midsweep import rundir
from midsweep.data.sampler import MixtureSampler
from midsweep.train import checkpoint
from midsweep.train.state import TrainState
from runner import flip_bytes


class NoPrefixes:
    """Sharing's part in the checkpointer, for a run that shares nothing: records what it is asked to publish."""

    def __init__(self):
        self.published: list[tuple[int, list[int]]] = []
        self.run_dir: Path | None = None

    def saves(self, step: int) -> bool:
        return False

    def publish(self, step: int) -> None:
        self.published.append((step, rundir.complete_steps(self.run_dir)))


def parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 16)).sum().backward()
    optimizer.step()
    state = TrainState(MixtureSampler.__new__(MixtureSampler), {"general": "abc"})
    state.sampler.__dict__.update(next_sample=24, counts={"general": 24}, domains=["general"])
    return model, optimizer, state


def checkpointer(run_dir: Path, keep_last: int = 5, pinned=()) -> checkpoint.Checkpointer:
    prefixes = NoPrefixes()
    prefixes.run_dir = run_dir
    return checkpoint.Checkpointer(run_dir, 10, keep_last, set(pinned), prefixes, main=True)


def save(run_dir: Path, step: int, seed: int = 0) -> torch.nn.Module:
    model, optimizer, state = parts(seed)
    state.step = step
    ckpt = checkpointer(run_dir)
    ckpt.save(step, model, optimizer, state)
    ckpt.wait()
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_checkpoint_holds_dcp_files_and_the_train_state_and_resumes_model_optimizer_and_state(tmp_path):
    model, optimizer, state = parts(seed=1)
    state.step, state.wall_time_s = 10, 3.5
    rng = torch.get_rng_state()
    ckpt = checkpointer(tmp_path)
    ckpt.save(10, model, optimizer, state)
    ckpt.wait()
    path = rundir.checkpoint_dir(tmp_path, 10)
    files = sorted(p.name for p in path.iterdir())
    assert files == [".metadata", "COMPLETE", "__0_0.distcp", checkpoint.STATE]  # no full-model torch.save file
    assert rundir.checkpoint_problem(path) is None and set(rundir.read_json(path / rundir.COMPLETE)["sha256"]) == \
        {".metadata", "__0_0.distcp", checkpoint.STATE}
    fresh, fresh_optimizer, fresh_state = parts(seed=2)
    torch.manual_seed(123)  # another RNG position: the saved one comes back
    assert ckpt.latest() == 10
    saved = ckpt.read_state(10)
    ckpt.load(10, fresh, fresh_optimizer)
    fresh_state.load_state_dict(saved)
    assert same_weights(fresh, model)
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert (fresh_state.step, fresh_state.wall_time_s, fresh_state.sampler.state()) == (10, 3.5, state.sampler.state())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.load(path / checkpoint.STATE, weights_only=True)["data"] == {"general": "abc"}
    weights = checkpoint.model_weights(path)  # export and train.init_from: the full model, no process group
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_background_checkpoint_is_a_snapshot_published_before_pruning(tmp_path):
    model, optimizer, state = parts()
    ckpt = checkpointer(tmp_path, keep_last=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt.save(7, model, optimizer, state)
    with torch.no_grad():  # training goes on while the write is in flight
        for p in model.parameters():
            p.add_(100.0)
    ckpt.wait()
    weights = checkpoint.model_weights(rundir.checkpoint_dir(tmp_path, 7))
    assert all(torch.equal(weights[k], v) for k, v in before.items())
    ckpt.save(8, model, optimizer, state)
    ckpt.wait()
    assert ckpt.prefixes.published == [(7, [7]), (8, [7, 8])]  # published once complete, before pruning
    assert rundir.complete_steps(tmp_path) == [8]  # pruned after the newer one is complete


def test_a_failed_background_write_is_raised_by_the_next_wait_and_leaves_no_checkpoint(tmp_path, monkeypatch):
    def broken_disk(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.dcp, "save", broken_disk)
    model, optimizer, state = parts()
    ckpt = checkpointer(tmp_path)
    ckpt.save(1, model, optimizer, state)  # returns at once: the write fails in the background
    with pytest.raises(RuntimeError, match="writing a checkpoint failed: OSError: .*Input/output error"):
        ckpt.wait()
    ckpt.wait()  # reported once
    assert rundir.complete_steps(tmp_path) == [] and list((tmp_path / rundir.CHECKPOINTS).iterdir()) == []
    assert ckpt.prefixes.published == []


def test_a_changed_byte_is_refused_and_the_resume_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    before = save(tmp_path, 10, seed=10)
    save(tmp_path, 20, seed=20)
    newest = rundir.checkpoint_dir(tmp_path, 20)
    flip_bytes(newest / "__0_0.distcp")
    with pytest.raises(rundir.CorruptCheckpoint, match=r"step_00000020 is corrupt \(checksum mismatch in __0_0"):
        checkpoint.model_weights(newest)
    ckpt = checkpointer(tmp_path)
    assert ckpt.latest() == 10
    assert "skipping unreadable checkpoint" in caplog.text
    model, optimizer, _ = parts(seed=3)
    ckpt.load(10, model, optimizer)
    assert same_weights(model, before)
    # the main process sets it aside before a resume: nothing reads it any more, its bytes stay for inspection
    assert rundir.sound_checkpoint(tmp_path) == 10 and rundir.complete_steps(tmp_path) == [10]
    assert (newest.with_name(newest.name + rundir.CORRUPT) / "__0_0.distcp").exists()
    assert "is corrupt (checksum mismatch in __0_0.distcp): set aside as step_00000020.corrupt" in caplog.text


def test_a_missing_file_or_a_garbled_marker_is_a_problem(tmp_path):
    save(tmp_path, 10)
    ckpt = rundir.checkpoint_dir(tmp_path, 10)
    (ckpt / checkpoint.METADATA).unlink()
    assert rundir.checkpoint_problem(ckpt) == ".metadata missing"
    (ckpt / rundir.COMPLETE).write_text('{"step": 1')
    assert rundir.checkpoint_problem(ckpt).startswith("unreadable COMPLETE marker")


def test_a_checkpoint_marked_by_an_older_midsweep_still_loads(tmp_path):
    model = save(tmp_path, 10)
    (rundir.checkpoint_dir(tmp_path, 10) / rundir.COMPLETE).write_text("10")  # the step only: nothing to check
    assert checkpointer(tmp_path).latest() == 10
    weights = checkpoint.model_weights(rundir.checkpoint_dir(tmp_path, 10))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_an_older_midsweeps_checkpoint_format_is_refused_naming_the_fix(tmp_path):
    old = rundir.checkpoint_dir(tmp_path, 10)
    old.mkdir(parents=True)
    for name in ("model.pt", "optim.pt", "state.pt"):
        torch.save({"w": torch.ones(2)}, old / name)
    rundir.mark_complete(old, 10)
    with pytest.raises(checkpoint.OldCheckpoint, match="written by an older midsweep .* Fix: retrain the run"):
        checkpointer(tmp_path).latest()
    with pytest.raises(checkpoint.OldCheckpoint, match="Fix: retrain the run"):
        checkpointer(tmp_path).load_weights(str(tmp_path), torch.nn.Linear(2, 2))


def test_ctrl_c_while_a_write_is_awaited_raises_once_the_write_has_ended(tmp_path):
    """A second Ctrl-C stops the run at once, but not under a checkpoint being written: the interpreter would exit
    with the write's thread inside torch and abort ("terminate called without an active exception")."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gate = threading.Event()

    class SlowPublish(NoPrefixes):  # the write's last part waits for the gate: the Ctrl-C lands during it
        def publish(self, step: int) -> None:
            gate.wait()
            super().publish(step)

    prefixes = SlowPublish()
    prefixes.run_dir = tmp_path
    ckpt = checkpoint.Checkpointer(tmp_path, 10, 5, set(), prefixes, main=True)
    model, optimizer, state = parts()
    state.step = 10

    def ctrl_c_then_open():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        gate.set()
    try:
        ckpt.save(10, model, optimizer, state)
        threading.Timer(0.2, ctrl_c_then_open).start()
        with pytest.raises(KeyboardInterrupt):
            ckpt.wait()
    finally:
        gate.set()
        signal.signal(signal.SIGINT, previous)
    assert prefixes.published == [(10, [10])]  # raised after the write, published, had ended
    assert not [t for t in threading.enumerate() if t.name == "checkpoint-10"]
