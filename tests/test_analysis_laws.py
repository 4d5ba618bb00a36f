"""Fitted laws and corpus proximity: recover what synthetic data was built from, with intervals that cover
the truth as often as they say, and distances that do not depend on corpus size."""
import json

import numpy as np
import pandas as pd
import pytest
from analysis_templates import engine_templates

from midsweep_analysis import laws, proximity, style, synthetic
from midsweep_analysis.cli import main
from midsweep_analysis.derived import add_metrics
from midsweep_analysis.load import load_sweeps
from midsweep.data.corpora import ensure_corpus
from runner import REPO

TRUE = dict(A=2000.0, alpha1=0.3, alpha2=0.25, alpha3=0.005, E=1.5)
D = [1e6, 3e6, 1e7, 3e7, 1e8]
GRID6 = [a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 6), np.geomspace(1e6, 1e8, 6))]
CACHE = REPO / ".cache" / "midsweep"


def test_reuse_law_fit_recovers_known_parameters_from_noisy_data():
    rng = np.random.default_rng(1)
    d1, d2 = (a.ravel() for a in np.meshgrid(D, D))
    loss = laws.reuse_law(d1, d2, **TRUE) * np.exp(rng.normal(0, 0.003, d1.size))
    fit = laws.fit_reuse_law(d1, d2, loss)
    p = fit.params
    assert p["alpha1"] == pytest.approx(TRUE["alpha1"], abs=0.04)
    assert p["alpha2"] == pytest.approx(TRUE["alpha2"], abs=0.04)
    assert p["alpha3"] == pytest.approx(TRUE["alpha3"], abs=0.002)
    assert p["E"] == pytest.approx(TRUE["E"], rel=0.1)
    for k in laws.PARAMS:
        assert fit.low[k] <= p[k] <= fit.high[k]
    assert fit.rmse_log < 0.006  # about the noise level


# 4 x 4 grids with D1, D2 from 1e8 to 1e10 tokens and 1% noise, where linearised intervals covered E in 50-74%.
GRID4 = [a.ravel() for a in np.meshgrid(np.geomspace(1e8, 1e10, 4), np.geomspace(1e8, 1e10, 4))]
# E pinned down in a third of the redraws; E pinned down always, the exponents often open above.
CONSTANTS = [dict(A=400.0, alpha1=0.15, alpha2=0.2, alpha3=0.002, E=2.2),
             dict(A=3e4, alpha1=0.35, alpha2=0.3, alpha3=0.003, E=1.8)]


def _redraw(true, r, grid=GRID4, noise=0.01):
    d1, d2 = grid
    return d1, d2, laws.reuse_law(d1, d2, **true) * np.exp(np.random.default_rng(r).normal(0, noise, d1.size))


@pytest.mark.slow
@pytest.mark.parametrize("true", CONSTANTS, ids=["E-loose", "E-pinned"])
def test_the_law_intervals_cover_every_constant_as_often_as_they_say(true):
    """100 redraws: the 90% interval of each of the five constants covers the truth in >= 85 (the linearised
    intervals covered alpha3 in 82 on the first set; alpha1, alpha2, alpha3 in 82, 81, 78 on the second). An
    end the data do not bound is open, which covers; that is not how coverage is bought: A and alpha3 are
    bounded on both sides in every redraw, and on the second set E in nearly every one."""
    hits = dict.fromkeys(laws.PARAMS, 0)
    identified = dict.fromkeys(laws.PARAMS, 0)
    for r in range(100):
        fit = laws.fit_reuse_law(*_redraw(true, r), level=0.9)
        for k in laws.PARAMS:
            hits[k] += fit.low[k] <= true[k] <= fit.high[k]
            identified[k] += fit.identified(k)
    assert min(hits.values()) >= 85, f"covered {hits} of 100"
    assert identified["A"] == identified["alpha3"] == 100 and identified["E"] >= (90 if true["E"] < 2 else 50)


def test_a_constant_the_data_do_not_pin_down_is_reported_as_not_identified(tmp_path, monkeypatch):
    """A redraw where the fit drives E to 0 (the truth is 2.2): the linearised interval claimed
    3.62e-06 [3.62e-06, 3.62e-06]; now E's interval runs from 0 to above the truth and says not identified,
    in the table and in the figure."""
    true = dict(A=50.0, alpha1=0.1, alpha2=0.1, alpha3=0.002, E=2.2)
    fit = laws.fit_reuse_law(*_redraw(true, 0))
    assert fit.params["E"] < 1e-3 and fit.low["E"] == 0 and fit.high["E"] > true["E"]
    assert not fit.identified("E") and fit.interval("E").endswith("not identified")
    row = fit.table().set_index("parameter").loc["E"]
    assert not row["identified"] and row["low"] == 0
    for k in ("A", "alpha1", "alpha2", "alpha3"):
        assert fit.identified(k) and fit.low[k] <= true[k] <= fit.high[k]
    seen, save = [], style.save
    monkeypatch.setattr(style, "save", lambda fig, *a, **k: (seen.append(fig), save(fig, *a, **k))[1])
    laws.draw_law_fit(fit, "(code, tiny)", tmp_path, "law", formats=("png",))
    assert f"E = {fit.interval('E')}" in seen[0]._suptitle.get_text()


def test_law_needs_enough_distinct_points():
    with pytest.raises(ValueError, match="introduce_tokens"):
        laws.fit_reuse_law([1e6, 1e6, 1e7], [1e6, 1e7, 1e6], [3.0, 2.8, 2.7])


def test_law_points_come_from_continued_runs_and_the_figure_shows_intervals(tmp_path_factory, tmp_path, monkeypatch):
    tpl = engine_templates(tmp_path_factory.getbasetemp())
    synthetic.continued_sweep(tmp_path, tpl, D[:3], D[:3], TRUE, noise=0.0)
    runs = add_metrics(load_sweeps([tmp_path]).runs)
    pts = laws.law_points(runs)
    assert len(pts) == 9
    np.testing.assert_allclose(pts["loss"], laws.reuse_law(pts["d1"], pts["d2"], **TRUE), rtol=1e-5)
    fits = laws.fit_groups(runs)
    assert list(fits) == [("code", "tiny")]
    seen = []
    save = style.save
    monkeypatch.setattr(style, "save", lambda fig, *a, **k: (seen.append(fig), save(fig, *a, **k))[1])
    d1, d2 = GRID6
    fit = laws.fit_reuse_law(d1, d2, laws.reuse_law(d1, d2, **TRUE))
    laws.draw_law_fit(fit, "(code, tiny)", tmp_path / "figs", "law", formats=("png",))
    title = seen[0]._suptitle.get_text()
    assert f"α3 = {fit.interval('alpha3', '.2g')}" in title and "90% profile-t interval" in title
    assert "[" in fit.interval("alpha3")


def _text(words, n, seed):
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(words, n))


def test_proximity_ranks_a_close_corpus_above_a_far_one(tmp_path):
    prose = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "slept", "well"]
    code = ["def", "f(x):", "return", "x", "+", "1", "import", "os", "for", "i", "in", "range(10):"]
    (tmp_path / "target.txt").write_text(_text(prose, 4000, 0))
    (tmp_path / "general.jsonl").write_text("\n".join(json.dumps({"text": _text(code, 300, i)}) for i in range(10)))
    (tmp_path / "near.jsonl").write_text("\n".join(json.dumps({"text": _text(prose, 300, 10 + i)}) for i in range(10)))
    shard = tmp_path / "shard"
    shard.mkdir()
    np.frombuffer(_text(prose[:6] + code[:6], 3000, 5).encode(), np.uint8).astype(np.uint16).tofile(shard / "train.bin")
    (shard / "meta.json").write_text(json.dumps({"dtype": "uint16"}))
    corpora = {"general": tmp_path / "general.jsonl", "near": tmp_path / "near.jsonl", "mixed": shard,
               "target": tmp_path / "target.txt"}
    table = proximity.proximity_table(corpora, "target").set_index("corpus")
    assert table.loc["near", "distance_to_target"] < table.loc["mixed", "distance_to_target"] \
        < table.loc["general", "distance_to_target"]
    assert table.loc["near", "proximity_advantage"] > table.loc["mixed", "proximity_advantage"] > 0
    assert table.loc["general", "proximity_advantage"] == 0
    assert proximity.distance(tmp_path / "target.txt", tmp_path / "target.txt") == pytest.approx(0, abs=1e-6)


def test_proximity_reads_prompt_and_response_of_the_builtin_target_corpus(tmp_path):
    path = ensure_corpus("target_math", CACHE)
    first = json.loads(path.open().readline())
    assert "text" not in first
    head = bytes(proximity.load_tokens(path, 2000).astype(np.uint8)).decode("utf-8", "replace")
    assert first["prompt"] in head and first["response"] in head
    (tmp_path / "odd.jsonl").write_text(json.dumps({"question": "?"}) + "\n")
    with pytest.raises(ValueError, match="odd.jsonl:1.*'text' nor 'prompt'/'response'"):
        proximity.load_tokens(tmp_path / "odd.jsonl")


def test_proximity_compares_corpora_at_equal_sample_sizes():
    """Two halves of one corpus, one cut to 20k tokens, are about equally far from the target; without
    equal sizes the small one looked farther (the divergence of a finite sample shrinks with its size)."""
    general = proximity.load_tokens(ensure_corpus("general", CACHE))
    half = len(general) // 2
    corpora = {"small": general[:20_000], "large": general[half:], "target": ensure_corpus("target_math", CACHE)}
    table = proximity.proximity_table(corpora, "target", general="large").set_index("corpus")
    assert (table["tokens_compared"] == 20_000).all()
    small, large = table.loc["small", "distance_to_target"], table.loc["large", "distance_to_target"]
    assert small == pytest.approx(large, rel=0.03)


def test_proximity_names_the_fix_for_a_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="shard directory"):
        proximity.load_tokens(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="train.bin"):
        proximity.load_tokens(tmp_path)


def test_the_report_of_an_engine_written_sweep_says_which_constant_is_not_identified(tmp_path_factory, tmp_path):
    """Continued-pretraining runs (engine-format copies) whose losses follow the law with E = 2.2 on a 4 x 4
    grid: the analysis writes E's interval as [0, > 2.2] with identified False, never a near-zero width."""
    tpl = engine_templates(tmp_path_factory.getbasetemp())
    true = dict(A=50.0, alpha1=0.1, alpha2=0.1, alpha3=0.002, E=2.2)
    d = [float(x) for x in np.geomspace(1e8, 1e10, 4)]
    synthetic.continued_sweep(tmp_path, tpl, d, d, true, noise=0.01)
    assert main([str(tmp_path), "--bootstrap", "50", "--formats", "png"]) == 0
    table = pd.read_csv(tmp_path / "analysis" / "reuse_law_code_tiny.csv").set_index("parameter")
    e = table.loc["E"]
    assert not e["identified"] and e["low"] == 0 and e["high"] > true["E"]
    assert all(table.loc[k, "low"] <= true[k] <= table.loc[k, "high"] for k in laws.PARAMS)
    report = (tmp_path / "analysis" / "report.html").read_text()
    assert "an open end: the data do not bound it, not identified" in report
