"""Post-training in the analysis: the best post-training LR per pretraining run (and the report says which),
post-training seeds averaged as seeds, the plasticity curve of a real tiny ``posttrain.after`` sweep, and the
window on the trade-off target loss + lambda x forgetting."""
import numpy as np
import pandas as pd
import pytest
from analysis_templates import engine_templates

from midsweep_analysis import columns as C
from midsweep_analysis import synthetic
from midsweep_analysis.cli import main
from midsweep_analysis.load import load_sweeps
from test_analysis_engine import train

# 20 main steps of 8 x 64 tokens, then 4 post-training steps on the target
NANO = ("train.tokens=10240", "eval.every_tokens=2560", "posttrain=target", "posttrain.tokens=2048")


@pytest.mark.slow
def test_a_posttrain_after_sweep_draws_the_plasticity_curve_and_keeps_the_best_posttrain_lr(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # the baseline and one mixture, post-trained from the middle and the end of main training, 2 seeds each
    train(sweep, *NANO, "mixture=none,introduce", "mixture.introduce_at=0.25", "mixture.weight=0.4",
          "posttrain.after=0.5,1.0", "posttrain.seed=1,2")
    train(sweep, *NANO, "mixture=none,introduce", "mixture.introduce_at=0.25", "mixture.weight=0.4",
          "posttrain.seed=1,2", "posttrain.lr=3e-2")  # a second LR for the runs post-trained at the end
    raw = load_sweeps([sweep]).runs
    assert len(raw) == 12 and (raw[C.STATUS] == C.DONE).all()
    assert main([str(sweep), "--bootstrap", "20", "--formats", "png"]) == 0
    out = sweep / "analysis"
    assert (out / "figures" / "plasticity_curve.png").exists()
    curve = pd.read_csv(out / "plasticity_curve.csv")
    assert set(curve["mixture"]) == {"baseline", "code introduce_at=0.25 weight=0.4"}
    assert sorted(set(curve[C.POSTTRAIN_AFTER])) == [0.5, 1.0]
    assert (curve["n_seeds"] == 2).all()  # the post-training seeds, averaged (of one LR each)
    # the curve's target loss at each point is the mean over the post-training seeds of the runs' own losses
    half = raw[(raw[C.POSTTRAIN_AFTER] == 0.5) & (raw[C.KIND] == C.KIND_NONE)]
    row = curve[(curve["mixture"] == "baseline") & (curve[C.POSTTRAIN_AFTER] == 0.5)].iloc[0]
    assert row[f"{C.TARGET_LOSS}_mean"] == pytest.approx(half[C.final(C.TARGET)].mean())
    assert row[f"{C.TARGET_LOSS}_std"] == pytest.approx(half[C.final(C.TARGET)].std())
    # post-trained at the end, each pretraining run keeps the LR of the lower validation loss
    end = raw[(raw[C.POSTTRAIN_AFTER] == 1.0)]
    chosen = pd.read_csv(out / "posttrain_lr.csv")
    for kind, g in end.groupby(C.KIND):
        by_lr = g.groupby(C.POSTTRAIN_LR)[C.final(C.TARGET)].mean()
        assert chosen.loc[chosen[C.KIND] == kind, "best posttrain.lr"].item() == pytest.approx(by_lr.idxmin())
    report = (out / "report.html").read_text()
    assert "Post-training LR" in report and "Plasticity curve" in report
    assert "posttrain.lr: " not in capsys.readouterr().err


@pytest.fixture(scope="module")
def tpl(tmp_path_factory):
    return engine_templates(tmp_path_factory.getbasetemp())


def test_the_window_on_the_trade_off_moves_the_best_weight_where_forgetting_costs(tmp_path, tpl):
    """Synthetic truth (analysis.synthetic): target loss = 1.5 (w - (0.1 + 0.3 t))^2 + ..., forgetting =
    0.4 w (1 - t): at lambda = 2 the best weight of the trade-off is the grid point nearest
    0.1 + 0.3 t - 0.8 (1 - t) / 3 (clipped to the grid), lower than the target loss's early on."""
    times, weights = [0.0, 0.5, 1.0], [0.05, 0.1, 0.2, 0.3, 0.4]
    synthetic.plasticity_sweep(tmp_path, tpl, times, weights, [0, 1], noise=0.0002, seed_noise=0.0, posttrain=True)
    best = {}
    for metric in ("target_loss", "tradeoff:2"):
        out = tmp_path / metric.replace(":", "_")
        assert main([str(tmp_path), "--metric", metric, "--out", str(out), "--bootstrap", "20",
                     "--formats", "png"]) == 0
        best[metric] = pd.read_csv(out / "best_weight_per_time.csv").set_index(C.INTRODUCE_AT)["best_weight"]
    t = np.array(times)
    want = np.clip(0.1 + 0.3 * t - 2 * 0.4 * (1 - t) / 3, min(weights), None)
    grid = np.array(weights)
    nearest = grid[np.abs(grid[None, :] - want[:, None]).argmin(1)]
    assert best["tradeoff:2"].to_numpy() == pytest.approx(nearest)
    assert best["tradeoff:2"][0.0] < best["target_loss"][0.0]
    assert best["tradeoff:2"][1.0] == best["target_loss"][1.0]  # no forgetting at the end: same cell


@pytest.mark.parametrize("metric", ["tradeoff", "tradeoff:x", "loss"])
def test_a_wrong_metric_names_the_forms_it_takes(metric, capsys):
    with pytest.raises(SystemExit):
        main(["somewhere", "--metric", metric])
    assert "tradeoff:0.5" in capsys.readouterr().err
