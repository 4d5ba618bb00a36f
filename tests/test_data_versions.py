"""A domain's data changed under a sweep (files edited, a dataset re-downloaded): a run refuses to resume on
other data than its checkpoint was trained on and resumes on a copy of the same data; the analysis names the
runs that read different versions."""
import json
import signal
import subprocess
import sys
import time

import pytest

from runner import REPO, train_cli

from midsweep_analysis import columns as C
from midsweep_analysis import heatmaps
from midsweep_analysis.load import load_sweeps
from midsweep import rundir

DOCS = [f"case {i}: the court held that clause {i % 7} binds the parties. " * (1 + i % 3) for i in range(300)]


def write(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def legal_run(path, out_dir, *overrides):
    return ("experiment=nano_test", f"+data.domains.legal={{kind: files, data_files: [{path}], heldout_documents: 20}}",
            "mixture.domain=legal", f"train.out_dir={out_dir}", *overrides)


def only_run(sweep):
    (run,) = rundir.run_dirs(sweep)
    return run


@pytest.mark.slow
def test_a_run_refuses_to_resume_on_changed_data_and_resumes_on_the_same_data_copied_anew(tmp_path):
    legal = tmp_path / "legal.jsonl"
    write(legal, DOCS)
    train_cli(*legal_run(legal, tmp_path / "reference"))
    args = legal_run(legal, tmp_path / "sweep")
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "sweep").glob("*/checkpoints/step_00000020/COMPLETE")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = only_run(tmp_path / "sweep")
    saved = rundir.complete_steps(run)

    write(legal, DOCS[:-1] + ["an amended last case"])
    refused = train_cli(*args, check=False)
    status = rundir.read_status(run)
    assert refused.returncode != 0 and status["status"] == "failed"
    assert "data of domain(s) legal (" in status["reason"] and f"checkpoint of step {saved[-1]}" in status["reason"]
    assert "Fix: restore the data" in status["reason"] and rundir.complete_steps(run) == saved  # nothing lost

    write(legal, DOCS)  # the same documents again, in a file with a new mtime: new shards, the same data
    train_cli(*args)
    ref = only_run(tmp_path / "reference")
    assert rundir.read_status(run)["status"] == "done"
    assert rundir.read_jsonl(run / rundir.METRICS) == rundir.read_jsonl(ref / rundir.METRICS)
    assert rundir.read_summary(run)["data"] == rundir.read_summary(ref)["data"]


@pytest.mark.slow
def test_the_analysis_names_runs_that_read_different_versions_of_a_domain(tmp_path):
    legal, sweep = tmp_path / "legal.jsonl", tmp_path / "sweep"
    write(legal, DOCS)
    train_cli(*legal_run(legal, sweep, "train.tokens=5120", "mixture.weight=0.2"))
    write(legal, DOCS[:-1] + ["an amended last case"])
    train_cli(*legal_run(legal, sweep, "train.tokens=5120", "mixture.weight=0.4"))
    loaded = load_sweeps([sweep])
    by_weight = loaded.runs.set_index(C.WEIGHT)
    old, new = by_weight.loc[0.2], by_weight.loc[0.4]
    assert old[C.data("legal")] != new[C.data("legal")] and old[C.data("general")] == new[C.data("general")]
    (problem,) = loaded.problems
    assert problem.startswith("domain 'legal': the runs read 2 different versions")
    assert old[C.RUN_ID] in problem and new[C.RUN_ID] in problem
    # the digests are not coordinates: the two runs are still two cells of one heatmap
    assert len(heatmaps.heatmap_table(loaded.runs, C.IN_DOMAIN)) == 2
