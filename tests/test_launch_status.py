"""``midsweep status``: run directories + manifest + SLURM records -> one state per run."""
import json
import shutil
from pathlib import Path

import pytest

from midsweep import rundir
from midsweep.launch import cli, manifest, status
from runner import train_cli


def make_run(sweep: Path, run_id: str, st: dict | None = None, ckpt: int | None = None) -> Path:
    d = sweep / run_id
    d.mkdir(parents=True)
    if st is not None:
        (d / "status.json").write_text(json.dumps({"contract": rundir.CONTRACT, "log": str(d / "train.log"), **st}))
    if ckpt is not None:
        (d / "checkpoints" / f"step_{ckpt:08d}").mkdir(parents=True)
        (d / "checkpoints" / f"step_{ckpt:08d}" / "COMPLETE").write_text("")
    return d


def test_states_from_run_dirs_manifest_and_slurm(tmp_path):
    runs = {
        "a00000000001": ({"status": "done", "step": 40}, None, "7_0", {"state": "COMPLETED", "reason": "0:0"}),
        "a00000000002": ({"status": "running", "step": 12}, 10, "7_1", {"state": "OUT_OF_MEMORY", "reason": "0:125"}),
        "a00000000003": ({"status": "requeued", "step": 20}, 20, "7_2", {"state": "PENDING", "reason": "BeginTime"}),
        "a00000000004": (None, None, "7_3", {"state": "PENDING", "reason": "Resources"}),
        "a00000000005": ({"status": "failed", "step": 57, "reason": "non-finite loss (nan) at step 57"}, None,
                         "7_4", {"state": "COMPLETED", "reason": "0:0"}),
        "a00000000006": ({"status": "running", "step": 3}, None, "7_5", {"state": "RUNNING", "reason": None}),
        "a00000000007": ({"status": "requeued", "step": 9}, 9, "7_6", {"state": "FAILED", "reason": "1:0"}),
    }
    entries, jobs = {}, {}
    for rid, (st, ckpt, job, slurm) in runs.items():
        d = make_run(tmp_path, rid, st, ckpt)
        entries[rid] = manifest.entry([f"w={rid[-1]}"], d, "new", job_id=job, log=f"/logs/{job}.out",
                                      stderr=f"/logs/{job}.err")
        jobs[job] = slurm
    manifest.update(tmp_path, entries)
    make_run(tmp_path, "b00000000001", {"status": "running", "step": 5})  # launched elsewhere, not in the manifest
    rows = {r.run_id: r for r in status.collect(tmp_path, query=lambda ids: jobs)}
    state = {rid: r.state for rid, r in rows.items()}
    assert state == {"a00000000001": "done", "a00000000002": "failed", "a00000000003": "requeued",
                     "a00000000004": "pending", "a00000000005": "failed", "a00000000006": "running",
                     "a00000000007": "failed", "b00000000001": "running"}
    oom = rows["a00000000002"]
    assert "OUT_OF_MEMORY" in oom.reason and "step 12" in oom.reason and oom.log == "/logs/7_1.err"
    assert "resumes from step 20" in rows["a00000000003"].reason
    assert rows["a00000000004"].reason == "Resources"
    assert rows["a00000000005"].reason == "non-finite loss (nan) at step 57"


def test_cli_prints_a_table_with_counts(tmp_path, capsys):
    make_run(tmp_path, "c00000000001", {"status": "done", "step": 4})
    make_run(tmp_path, "c00000000002", {"status": "failed", "step": 2, "reason": "boom"})
    assert cli.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "c00000000002  failed" in out and "boom" in out and "2 run(s): 1 done, 1 failed" in out
    assert cli.main(["status", str(tmp_path), "--json", "--state", "done"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run_id"] for r in rows] == ["c00000000001"]


def test_a_copied_sweep_reports_its_own_runs_not_the_directories_its_manifest_recorded(tmp_path):
    original = tmp_path / "original"
    run = make_run(original, "d00000000001", {"status": "running", "step": 3})
    (run / "train.log").write_text("")
    manifest.update(original, {run.name: manifest.entry(["w=1"], run, "new")})
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    rundir.atomic_write_json(copy / run.name / "status.json",
                             {"contract": rundir.CONTRACT, "status": "done", "step": 40})
    (row,) = status.collect(copy, query=lambda ids: {})
    assert (row.state, row.step, row.log) == ("done", 40, str(copy / run.name / "train.log"))
    (row,) = status.collect(original, query=lambda ids: {})
    assert (row.state, row.step) == ("running", 3)


def test_a_fork_cancelled_because_its_parent_was_killed_names_the_parent_and_its_dead_job(tmp_path):
    parent = make_run(tmp_path, "f00000000001", {"status": "running", "step": 40, "slurm_job_id": "60_0"})
    fork = tmp_path / "f00000000002"  # never started: SLURM cancelled it (afterok on the parent's job)
    manifest.update(tmp_path, {
        parent.name: manifest.entry([], parent, "new", job_id="60_0"),
        fork.name: manifest.entry([], fork, "new", job_id="61_0", prefix={"parent": parent.name, "step": 20})})
    jobs = {"60_0": {"state": "FAILED", "reason": "0:9"}, "61_0": {"state": "CANCELLED", "reason": "0:0"}}
    rows = {r.run_id: r for r in status.collect(tmp_path, query=lambda ids: jobs)}
    assert rows[parent.name].state == "failed" and "SLURM job 60_0 ended FAILED" in rows[parent.name].reason
    assert rows[fork.name].state == "failed"
    assert rows[fork.name].reason.startswith(f"forks from run {parent.name} at step 20, which failed: SLURM job 60_0 "
                                             "ended FAILED (exit code 0:9) at step 40")


def test_fork_of_is_what_the_run_recorded_not_the_plan(tmp_path):
    planned = {"parent": "f00000000001", "step": 100}
    scratch = make_run(tmp_path, "f00000000003", {"status": "done", "step": 200})  # its prefix entry was deleted
    (scratch / "summary.json").write_text(json.dumps({"contract": rundir.CONTRACT, "prefix": None}))
    forked = make_run(tmp_path, "f00000000004", {"status": "running", "step": 120})
    (forked / "prefix.json").write_text(json.dumps({"parent": "f00000000001", "step": 100}))
    waiting = make_run(tmp_path, "f00000000005", {"status": "running", "step": 0})  # waits for its prefix
    manifest.update(tmp_path, {d.name: manifest.entry([], d, "new", prefix=planned)
                               for d in (scratch, forked, waiting)})
    rows = {r.run_id: r.fork_of for r in status.collect(tmp_path, query=lambda ids: {})}
    assert rows == {scratch.name: "none (planned f00000000001@100)", forked.name: "f00000000001@100",
                    waiting.name: "f00000000001@100"}


def test_a_symlink_named_like_a_run_is_no_run_but_a_listed_problem(tmp_path, capsys):
    make_run(tmp_path, "f00000000006", {"status": "done", "step": 4})
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    elsewhere.mkdir()
    (tmp_path / "f00000000007").symlink_to(elsewhere)
    assert [r.run_id for r in status.collect(tmp_path, query=lambda ids: {})] == ["f00000000006"]
    assert cli.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 run(s): 1 done" in out
    assert f"{tmp_path / 'f00000000007'} is named like a run but is a symlink to {elsewhere}; ignored" in out


def test_a_damaged_manifest_is_listed_and_its_runs_still_shown(tmp_path, capsys):
    run = make_run(tmp_path, "f00000000008", {"status": "running", "step": 3})
    other = make_run(tmp_path, "f00000000009", {"status": "done", "step": 4})
    (tmp_path / manifest.NAME).write_text(json.dumps({"runs": {
        run.name: {"overrides": "w=1", "prefix": "abc", "job_id": "7_0"}, other.name: 5, "../etc": {}}}))
    rows = {r.run_id: r for r in status.collect(tmp_path, query=lambda ids: {})}
    assert {rid: r.state for rid, r in rows.items()} == {run.name: "running", other.name: "done"}
    assert (rows[run.name].job_id, rows[run.name].fork_of) == ("7_0", None)
    assert cli.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"run {run.name}: 'overrides' is \"w=1\", not a list of overrides; 'prefix' is \"abc\"" in out
    assert f"entry '{other.name}' is not a run id with an object" in out and "entry '../etc'" in out
    (tmp_path / manifest.NAME).write_text("[]")
    assert cli.main(["status", str(tmp_path)]) == 0
    assert "sweep_manifest.json holds a JSON list, not an object" in capsys.readouterr().out


@pytest.mark.slow
def test_a_fork_whose_prefix_was_deleted_trains_from_scratch_and_status_says_so(nano, tmp_path):
    """The real engine: a grid whose second run forks from the first; the fork is deleted with the store, then
    trained again on its own (its manifest entry still plans the fork)."""
    sweep = tmp_path / "sweep"
    grid = ("-m", *nano, "mixture=none,introduce", "mixture.introduce_at=0.5", f"hydra.sweep.dir={tmp_path / 'h'}")
    train_cli(*grid)
    rows = {r.run_id: r for r in status.collect(sweep, query=lambda ids: {})}
    (fork,) = [r for r in rows.values() if r.fork_of]
    (parent,) = set(rows) - {fork.run_id}
    assert fork.fork_of == f"{parent}@20"
    shutil.rmtree(sweep / fork.run_id)
    shutil.rmtree(sweep / "_prefixes")
    train_cli(*nano, "mixture=introduce", "mixture.introduce_at=0.5")
    rows = {r.run_id: r for r in status.collect(sweep, query=lambda ids: {})}
    assert (rows[fork.run_id].state, rows[fork.run_id].fork_of) == ("done", f"none (planned {parent}@20)")
