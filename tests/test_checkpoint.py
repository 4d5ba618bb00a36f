"""Checkpoints on disk: a checkpoint whose bytes differ from what was written is never loaded; a resume falls back
to the previous one, and a checkpoint marked by an older midsweep (no checksums) still loads."""
from pathlib import Path

import pytest
import torch

from midsweep import rundir
from midsweep.train import checkpoint
from runner import flip_bytes


def save(run: Path, step: int) -> dict:
    model = {"w": torch.full((256, 64), float(step))}
    checkpoint.save(run, step, model, {"m": torch.zeros(3)}, {"step": step})
    return model


def test_a_changed_byte_is_refused_and_the_resume_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
    before = save(tmp_path, 10)
    save(tmp_path, 20)
    newest = rundir.checkpoint_dir(tmp_path, 20)
    flip_bytes(newest / checkpoint.MODEL)
    assert torch.load(newest / checkpoint.MODEL, weights_only=True)["w"].shape == (256, 64)  # torch reads it fine
    with pytest.raises(rundir.CorruptCheckpoint, match=r"step_00000020 is corrupt \(checksum mismatch in model.pt\)"):
        checkpoint.load(newest)
    step, found = checkpoint.load_latest(tmp_path)
    assert step == 10 and torch.equal(found["model"]["w"], before["w"])
    assert "skipping unreadable checkpoint" in caplog.text
    # the main process sets it aside before a resume: nothing reads it any more, its bytes stay for inspection
    assert rundir.sound_checkpoint(tmp_path) == 10 and rundir.complete_steps(tmp_path) == [10]
    assert (newest.with_name(newest.name + rundir.CORRUPT) / checkpoint.MODEL).exists()
    assert "is corrupt (checksum mismatch in model.pt): set aside as step_00000020.corrupt" in caplog.text


def test_a_missing_file_or_a_garbled_marker_is_a_problem_and_only_the_files_loaded_are_read(tmp_path):
    save(tmp_path, 10)
    ckpt = rundir.checkpoint_dir(tmp_path, 10)
    flip_bytes(ckpt / checkpoint.OPTIMIZER)
    assert checkpoint.load(ckpt, with_optimizer=False)["state"] == {"step": 10}  # export and init_from
    with pytest.raises(rundir.CorruptCheckpoint, match="checksum mismatch in optim.pt"):
        checkpoint.load(ckpt)
    (ckpt / checkpoint.STATE).unlink()
    assert rundir.checkpoint_problem(ckpt, [checkpoint.STATE]) == "state.pt missing"
    (ckpt / rundir.COMPLETE).write_text('{"step": 1')
    assert rundir.checkpoint_problem(ckpt).startswith("unreadable COMPLETE marker")


def test_a_checkpoint_marked_by_an_older_midsweep_still_loads(tmp_path):
    model = save(tmp_path, 10)
    (rundir.checkpoint_dir(tmp_path, 10) / rundir.COMPLETE).write_text("10")  # the step only: nothing to check
    step, found = checkpoint.load_latest(tmp_path)
    assert step == 10 and torch.equal(found["model"]["w"], model["w"])
