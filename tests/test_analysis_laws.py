"""Fitted laws and corpus proximity: recover what synthetic data was built from."""
import json

import numpy as np
import pytest

from analysis import laws, proximity, synthetic
from analysis.derived import add_metrics
from analysis.load import load_sweeps

TRUE = dict(A=2000.0, alpha1=0.3, alpha2=0.25, alpha3=0.005, E=1.5)
D = [1e6, 3e6, 1e7, 3e7, 1e8]


def test_reuse_law_fit_recovers_known_parameters_from_noisy_data():
    rng = np.random.default_rng(1)
    d1, d2 = (a.ravel() for a in np.meshgrid(D, D))
    loss = laws.reuse_law(d1, d2, **TRUE) * np.exp(rng.normal(0, 0.003, d1.size))
    fit = laws.fit_reuse_law(d1, d2, loss, n_boot=60)
    p = fit.params
    assert p["alpha1"] == pytest.approx(TRUE["alpha1"], abs=0.04)
    assert p["alpha2"] == pytest.approx(TRUE["alpha2"], abs=0.04)
    assert p["alpha3"] == pytest.approx(TRUE["alpha3"], abs=0.002)
    assert p["E"] == pytest.approx(TRUE["E"], rel=0.1)
    for k in ("alpha1", "alpha2", "E"):
        assert fit.low[k] <= p[k] <= fit.high[k]
    assert fit.rmse_log < 0.006  # about the noise level


def test_law_needs_enough_distinct_points():
    with pytest.raises(ValueError, match="introduce_tokens"):
        laws.fit_reuse_law([1e6, 1e6, 1e7], [1e6, 1e7, 1e6], [3.0, 2.8, 2.7])


def test_law_points_come_from_continued_runs_in_a_sweep(tmp_path):
    synthetic.continued_sweep(tmp_path, D[:3], D[:3], TRUE, noise=0.0)
    runs = add_metrics(load_sweeps([tmp_path]).runs)
    pts = laws.law_points(runs)
    assert len(pts) == 9
    np.testing.assert_allclose(pts["loss"], laws.reuse_law(pts["d1"], pts["d2"], **TRUE), rtol=1e-5)
    fits = laws.fit_groups(runs, n_boot=10)
    assert list(fits) == [("code", "tiny")]


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


def test_proximity_names_the_fix_for_a_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="shard directory"):
        proximity.load_tokens(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="train.bin"):
        proximity.load_tokens(tmp_path)
