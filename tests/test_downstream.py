"""midsweep evaluate: lm-evaluation-harness results become downstream.jsonl rows (step, tokens, task, metric,
value) of the run, once per step and task. The lm-eval run itself needs the eval extra (skipped without it)."""
import json
import shutil

import pandas as pd
import pytest

from runner import train_cli
from midsweep import rundir
from midsweep.downstream import ROW_KEYS, rows_from_results
from midsweep.launch.cli import main as midsweep
from midsweep_analysis.cli import main as analyze

# The parts of a real lm_eval.simple_evaluate result (lm-eval 0.4.13, a local multiple-choice task, limit=3)
# that the rows come from, plus a group entry as lm-eval writes it ("N/A" standard error).
RESULT = {
    "results": {
        "midsweep_code_choice": {"name": "midsweep_code_choice", "alias": "midsweep_code_choice", "sample_len": 3,
                                 "acc,none": 0.3333333333333333, "acc_stderr,none": 0.33333333333333337,
                                 "acc_norm,none": 0.6666666666666666, "acc_norm_stderr,none": 0.33333333333333337},
        "code_group": {"alias": "code_group", "acc,none": 0.5, "acc_stderr,none": "N/A"},
    },
    "n-shot": {"midsweep_code_choice": 0},
    "n-samples": {"midsweep_code_choice": {"original": 4, "effective": 3}},
    "higher_is_better": {"midsweep_code_choice": {"acc": True, "acc_norm": True}},
    "versions": {"midsweep_code_choice": "Yaml"},
}


def test_every_numeric_metric_of_a_result_becomes_a_row():
    rows = rows_from_results(RESULT, step=40, tokens=20480, request="code_group")
    assert all(set(r) == set(ROW_KEYS) for r in rows)
    got = {(r["task"], r["metric"]): r for r in rows}
    assert sorted(got) == [("code_group", "acc"), ("midsweep_code_choice", "acc"),
                           ("midsweep_code_choice", "acc_norm")]
    acc = got["midsweep_code_choice", "acc"]
    assert acc == {"step": 40, "tokens": 20480, "request": "code_group", "task": "midsweep_code_choice",
                   "metric": "acc", "filter": "none", "value": pytest.approx(1 / 3), "stderr": pytest.approx(1 / 3),
                   "num_fewshot": 0, "samples": 3}
    assert got["code_group", "acc"]["stderr"] is None and got["code_group", "acc"]["samples"] is None


TASK = """task: midsweep_code_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
DOCS = [{"question": "def add(a, b):\n    return a", "choices": [" + b", " * b", " - b"], "answer": 0},
        {"question": "for i in range(10):\n    print(", "choices": ["i)", "]", "}"], "answer": 0},
        {"question": "import ", "choices": ["os", "@@", "]]"], "answer": 0}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("downstream") / "sweep"
    train_cli("experiment=nano_test", "train.tokens=5120", "eval.every_tokens=2560", "train.checkpoint_every=5",
              f"train.out_dir={out}")
    (run,) = rundir.run_dirs(out)
    return run


@pytest.mark.slow
def test_evaluate_appends_one_row_per_step_task_and_metric_once(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'midsweep[eval]')")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "code_choice.yaml").write_text(TASK.format(data=tmp_path / "docs.jsonl"))
    args = ["evaluate", str(run_dir), "--tasks", "midsweep_code_choice", "--include-path", str(tmp_path / "tasks"),
            "--device", "cpu"]
    assert midsweep(args) == 0
    rows = rundir.read_jsonl(run_dir / rundir.DOWNSTREAM)
    assert [(r["step"], r["tokens"], r["metric"]) for r in rows] == [(5, 2560, "acc"), (10, 5120, "acc")]
    assert all(0 <= r["value"] <= 1 and r["samples"] == 3 and r["task"] == "midsweep_code_choice" for r in rows)
    midsweep(args)  # already evaluated: nothing is added
    assert rundir.read_jsonl(run_dir / rundir.DOWNSTREAM) == rows
    midsweep([*args, "--steps", "10", "--redo"])  # evaluated again: its rows are replaced, not duplicated
    again = rundir.read_jsonl(run_dir / rundir.DOWNSTREAM)
    assert sorted((r["step"], r["value"]) for r in again) == sorted((r["step"], r["value"]) for r in rows)


@pytest.mark.slow
def test_evaluate_names_the_missing_step_and_the_extra(run_dir):
    with pytest.raises(SystemExit, match=r"no complete checkpoint at step\(s\) \[3\]"):
        midsweep(["evaluate", str(run_dir), "--tasks", "x", "--steps", "3"])
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match=r"pip install 'midsweep\[eval\]'"):
            midsweep(["evaluate", str(run_dir), "--tasks", "x"])


@pytest.mark.slow
def test_the_analysis_draws_downstream_scores_like_losses(run_dir, tmp_path):
    """Rows as `midsweep evaluate` appends them to an engine-written run: the analysis tables them per step and
    draws them; a changed score moves its point."""
    sweep = tmp_path / "sweep"
    run = shutil.copytree(run_dir, sweep / run_dir.name)
    (run / rundir.DOWNSTREAM).unlink(missing_ok=True)

    def scores(acc_at_10: float) -> pd.DataFrame:
        result = json.loads(json.dumps(RESULT))
        for step, tokens in ((5, 2560), (10, 5120)):
            result["results"]["midsweep_code_choice"]["acc,none"] = 0.25 if step == 5 else acc_at_10
            rundir.append_jsonl(run / rundir.DOWNSTREAM, rows_from_results(result, step, tokens, "code_group"))
        assert analyze([str(sweep), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
        (run / rundir.DOWNSTREAM).unlink()
        table = pd.read_csv(tmp_path / "out" / "downstream_curves.csv")
        return table[(table["task"] == "midsweep_code_choice") & (table["metric"] == "acc")].set_index("step")

    first = scores(0.5)
    assert first["mean"].to_dict() == {5: 0.25, 10: 0.5} and first.loc[10, "tokens"] == 5120
    assert (tmp_path / "out" / "figures" / "downstream.png").exists()
    assert pd.read_csv(tmp_path / "out" / "downstream.csv")["task"].nunique() == 2  # the group entry too
    assert scores(0.75).loc[10, "mean"] == 0.75


@pytest.mark.slow
def test_an_unknown_task_is_one_line_before_any_checkpoint_is_exported(run_dir, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'midsweep[eval]')")
    from midsweep import downstream

    def no_export(*args, **kwargs):
        raise AssertionError("a checkpoint was exported for a task lm-eval does not know")

    monkeypatch.setattr(downstream, "export", no_export)
    with pytest.raises(SystemExit, match=r"^midsweep evaluate: lm-eval knows no task or group 'no_such_task'\. "
                                         r"Fix: check the name"):
        midsweep(["evaluate", str(run_dir), "--tasks", "no_such_task", "--device", "cpu"])


def test_export_without_the_hf_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # as where it is not installed
    with pytest.raises(SystemExit, match=r"^midsweep export: exporting needs transformers .*pip install "
                                         r"'midsweep\[hf\]'$"):
        midsweep(["export", str(tmp_path), str(tmp_path / "out")])
