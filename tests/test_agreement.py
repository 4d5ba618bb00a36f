"""The ranks of a run agree on its run directory before training (midsweep/train/agreement.py), and one rank
writes its log: a train.out_dir that is not shared by every node stops the run at once with one line."""
import io
import json
import logging
import time

import pytest

from midsweep import rundir
from midsweep.app import log_to
from midsweep.train.agreement import View, disagreement
from runner import train_cli, train_ranks

NANO = ("experiment=nano_test", "train.device=cpu")


def test_the_line_names_each_directory_and_what_each_rank_saw_ranks_alike_together():
    a = View("/scratch/runs/abc", "requeued", 30, None, ())
    b = View("/scratch/runs/abc", None, None, None, ())
    line = disagreement([a, b, b])
    assert "\n" not in line and line.startswith("train.out_dir must be one directory shared by every node")
    assert "rank 0 saw /scratch/runs/abc: status requeued, checkpoint of step 30" in line
    assert "ranks 1,2 saw /scratch/runs/abc: no status, no checkpoint" in line
    assert "Fix: set train.out_dir to a directory on a file system that every node mounts" in line


def test_other_ranks_write_no_log_file_and_send_only_warnings_and_errors_to_stderr(tmp_path, monkeypatch):
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.setLevel(logging.INFO)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    try:
        assert log_to(tmp_path / "train.log", rank=1) is None
        logging.getLogger("midsweep.x").info("an info line every rank logs")
        logging.getLogger("midsweep.x").warning("a warning of rank 1")
        assert root.handlers and all(type(h) is logging.StreamHandler for h in root.handlers)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
    assert not (tmp_path / "train.log").exists()
    assert "[rank 1][midsweep.x][WARNING] a warning of rank 1" in err.getvalue() and "info line" not in err.getvalue()


@pytest.mark.slow
def test_ranks_on_different_run_directories_stop_at_once_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDSWEEP_SHARED_WAIT_S", "2")  # how long a rank looks for rank 0's config.yaml
    # a new run: no checkpoint anywhere, but rank 1 never sees the config.yaml rank 0 wrote on its own disk
    ranks = train_ranks(*NANO, "train.out_dir=" + str(tmp_path / "new${oc.env:LOCAL_RANK}"), hydra_dir=tmp_path,
                        timeout=300)
    (new,) = rundir.run_dirs(tmp_path / "new0")
    for code, _, err in ranks:
        assert code != 0 and "Traceback" not in err, err
        assert (f"rank 0 saw {new}: no status, no checkpoint; rank 1 saw {tmp_path / 'new1' / new.name}: no status, "
                "no checkpoint, no config.yaml of this start") in err
    assert not rundir.complete_steps(new) and rundir.read_status(new)["status"] == "failed"
    # a run preempted after its checkpoints, on "node 0"'s disk; "node 1" has its own empty disk
    train_cli(*NANO, f"train.out_dir={tmp_path / 'node0'}")
    (run_dir,) = rundir.run_dirs(tmp_path / "node0")
    rundir.atomic_write_json(run_dir / rundir.STATUS, {**rundir.read_status(run_dir), "status": "requeued"})
    tic = time.monotonic()
    # a hang would run into the timeout (torch.distributed waits 30 minutes)
    ranks = train_ranks(*NANO, "train.out_dir=" + str(tmp_path / "node${oc.env:LOCAL_RANK}"), hydra_dir=tmp_path,
                        timeout=300)
    took = time.monotonic() - tic
    mine = tmp_path / "node1" / run_dir.name
    for rank, (code, _, err) in enumerate(ranks):
        lines = [line for line in err.splitlines() if line.startswith("midsweep-train: ")]
        assert code != 0 and len(lines) == 1 and "Traceback" not in err, (rank, err)
        (line,) = lines
        assert "train.out_dir must be one directory shared by every node" in line
        assert f"rank 0 saw {run_dir}: status requeued, checkpoint of step 40" in line
        assert f"rank 1 saw {mine}: no status, no checkpoint, no config.yaml of this start" in line
    status = rundir.read_status(run_dir)  # rank 0 writes the run's records, and says why it stopped
    assert status["status"] == "failed" and status["reason"] == line.removeprefix("midsweep-train: ")
    assert json.loads((run_dir / rundir.SUMMARY).read_text())["status"] == "failed"
    assert not (mine / rundir.TRAIN_LOG).exists() and not (mine / rundir.STATUS).exists()  # rank 1 writes neither
    print(f"2 ranks on different directories stopped after {took:.1f}s")
    # the fix: one directory for every rank. Every rank resumes, rank 0 alone writes the log: no line twice
    before = (run_dir / rundir.TRAIN_LOG).read_text()
    ranks = train_ranks(*NANO, f"train.out_dir={tmp_path / 'node0'}", hydra_dir=tmp_path / "shared", timeout=300)
    assert all(code == 0 for code, _, _ in ranks), ranks
    assert rundir.read_status(run_dir)["status"] == "done"
    log = (run_dir / rundir.TRAIN_LOG).read_text().removeprefix(before)
    assert log.count(f"resuming {run_dir} from step 40") == 1
    messages = [line.split("]", 1)[1] for line in log.splitlines() if line.startswith("[")]
    assert len(messages) == len(set(messages)), log
