"""Broken or hostile run files (engine-written runs, then one file of a run damaged): ``midsweep-analyze`` and
``midsweep status`` name each as a problem (run, file, what is wrong), analyse or show everything valid, and
never stop with a traceback."""
import json
import os

import pytest
from analysis_templates import engine_templates

from midsweep_analysis import columns as C
from midsweep_analysis import synthetic
from midsweep_analysis.cli import main as analyze
from midsweep_analysis.load import load_sweeps
from midsweep.launch import cli, status

TIMES, WEIGHTS, SEEDS = [0.0, 0.25, 0.5, 0.75], [0.1, 0.4], [0]


@pytest.fixture(scope="module")
def tpl(tmp_path_factory):
    return engine_templates(tmp_path_factory.getbasetemp())


def insert_lines(path, lines, at=1):
    rows = path.read_text().splitlines(keepends=True)
    path.write_text("".join(rows[:at] + [ln + "\n" for ln in lines] + rows[at:]))


def damage(runs):
    """Damage one file of each of the first runs; {run path: (file name, what the problem line says)}."""
    paths = list(runs["path"])
    (paths[0] / "summary.json").write_text("[1, 2]")
    (paths[1] / "status.json").write_text('["running"]')
    summary = json.loads((paths[2] / "summary.json").read_text())
    (paths[2] / "summary.json").write_text(json.dumps({**summary, "coords": "abc"}))
    insert_lines(paths[3] / "metrics.jsonl", ["42", "[1, 2]", '{"step": "abc", "loss": "x", "domain": 5}'])
    insert_lines(paths[4] / "metrics.jsonl", ["not json at all"], at=2)
    (paths[5] / "summary.json").unlink()
    os.symlink("summary.json", paths[5] / "summary.json")  # a symlink to itself
    st = json.loads((paths[6] / "status.json").read_text())
    (paths[6] / "status.json").write_text(json.dumps({**st, "step": "abc", "updated": "yesterday",
                                                      "tok_per_s": "fast", "eta_s": [1], "total_steps": "x"}))
    row = {"step": 8, "tokens": 4096, "task": "arc_easy", "metric": "acc", "filter": "none", "value": 0.5,
           "stderr": 0.01, "num_fewshot": 0}
    (paths[7] / "downstream.jsonl").write_text(json.dumps(row) + "\n42\n" + json.dumps({**row, "value": "x"}) + "\n")
    return {paths[0]: ("summary.json", "JSON list"), paths[1]: ("status.json", "JSON list"),
            paths[2]: ("summary.json", "'coords'"), paths[3]: ("metrics.jsonl", "3 line(s)"),
            paths[4]: ("metrics.jsonl", "1 line(s)"), paths[5]: ("summary.json", "cannot read"),
            paths[6]: ("status.json", "'step'"), paths[7]: ("downstream.jsonl", "2 line(s)")}


@pytest.fixture
def damaged(tmp_path, tpl):
    d = tmp_path / "sweep"
    written = synthetic.plasticity_sweep(d, tpl, TIMES, WEIGHTS, SEEDS)
    return d, written, damage(written)


def test_analysis_lists_each_damaged_file_and_analyses_the_rest(damaged):
    d, written, broken = damaged
    metrics_rows = {p.name: sum(1 for _ in open(p / "metrics.jsonl")) for p in written["path"]}
    sweep = load_sweeps([d])
    for path, (name, what) in broken.items():
        assert any(str(path / name) in p and what in p for p in sweep.problems), (path, name, sweep.problems)
    assert len(sweep.problems) == len(broken)
    assert set(sweep.runs[C.RUN_ID]) == {p.name for p in written["path"]}  # every run listed, none dropped
    curves = sweep.curves.groupby(C.RUN_ID).size()
    for path, (name, _) in broken.items():  # the valid lines of a damaged metrics.jsonl are all kept
        if name == "metrics.jsonl":
            bad = 3 if "3 line(s)" in broken[path][1] else 1
            assert curves[path.name] == metrics_rows[path.name] - bad
    assert list(sweep.downstream[C.RUN_ID]) == [list(broken)[7].name]  # its valid row
    coords = sweep.runs.set_index(C.RUN_ID).loc[list(broken)[2].name]
    assert coords[C.INTRODUCE_AT] in TIMES  # coordinates taken from config.yaml instead of the bad field


def test_analyze_cli_writes_its_report_naming_every_damaged_file(damaged, capsys):
    d, _, broken = damaged
    assert analyze([str(d), "--bootstrap", "20", "--formats", "png"]) == 0
    out = capsys.readouterr()
    html = (d / "analysis" / "report.html").read_text()
    for path, (name, _) in broken.items():
        assert f"{path.name}/{name}" in html and f"{path.name}/{name}" in out.out + out.err
    assert "Traceback" not in out.err


def test_status_lists_each_damaged_file_and_shows_every_run(damaged, capsys):
    d, written, broken = damaged
    rows = status.collect(d, query=lambda ids: {})
    assert {r.run_id for r in rows} == {p.name for p in written["path"]}
    (no_status,) = [r for r in rows if r.run_id == list(broken)[1].name]
    assert no_status.reason == "unknown: its status.json cannot be used (listed below the table)"
    assert cli.main(["status", str(d)]) == 0
    out = capsys.readouterr().out
    for path, (name, _) in broken.items():
        if not name.endswith(".jsonl"):  # status does not read the metrics
            assert f"{path}/{name}" in out, out
    assert "Traceback" not in out
