"""The plasticity window on sweeps with a known window (engine-format copies, analysis.synthetic): where it
closes, an interval that covers the truth as often as it says, no interval claimed from one seed, a best
weight at the edge of the weight grid flagged."""
import numpy as np
import pytest
from analysis_templates import engine_templates

from midsweep_analysis import columns as C
from midsweep_analysis import heatmaps, style, synthetic, window
from midsweep_analysis.cli import main
from midsweep_analysis.load import load_sweeps

# Best achievable loss = 2 + slope * t (up to the weight grid): the window closes at t = margin / slope = 0.5.
TIMES, WEIGHTS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
SLOPE, MARGIN = 0.2, 0.1


@pytest.fixture(scope="module")
def tpl(tmp_path_factory):
    return engine_templates(tmp_path_factory.getbasetemp())


@pytest.fixture
def figures(monkeypatch):
    seen = []
    save = style.save
    monkeypatch.setattr(style, "save", lambda fig, *a, **k: (seen.append(fig), save(fig, *a, **k))[1])
    return seen


def true_close(times=TIMES, weights=WEIGHTS):
    cube = synthetic.plasticity_losses(times, weights, [0], SLOPE, noise=0, seed_noise=0)[..., 0]
    return window.window_close(times, cube.min(axis=1), MARGIN)


def test_window_close_finds_the_known_time_with_an_interval(tmp_path, tpl):
    synthetic.plasticity_sweep(tmp_path, tpl, TIMES, WEIGHTS, range(4), slope=SLOPE, noise=0.004)
    runs = load_sweeps([tmp_path]).runs
    est = window.window_estimates(runs, C.IN_DOMAIN, MARGIN, n_boot=300).iloc[0]
    assert est["close"] == pytest.approx(0.5, abs=0.03)
    assert est["low"] <= true_close() <= est["high"] and est["high"] - est["low"] < 0.1
    assert est["edge"] == "" and "parametric bootstrap" in est["interval"]
    best = window.best_per_time(heatmaps.heatmap_table(runs, C.IN_DOMAIN))
    # The best weight tracks the synthetic optimum 0.1 + 0.3 t (to the nearest grid weight).
    grid = np.array(WEIGHTS)
    nearest = grid[np.abs(grid[None, :] - synthetic.best_weight(best[C.INTRODUCE_AT].to_numpy())[:, None]).argmin(1)]
    assert (np.abs(best["best_weight"].to_numpy() - nearest) <= 0.1 + 1e-9).all()


def test_window_open_when_loss_never_exceeds_margin():
    assert np.isnan(window.window_close([0, 0.5, 1], [2.0, 2.01, 2.015], margin=0.05))
    assert window.window_close([0, 0.5, 1], [2.0, 2.2, 2.1], margin=0.05) == pytest.approx(0.125)
    # A dip back inside the margin re-opens it: the close is after the last time inside.
    curve = [2.0, 2.2, 2.01, 2.3]
    assert window.window_close([0, 0.5, 1, 1.5], curve, margin=0.05) == pytest.approx(1.0 + 0.5 * 0.04 / 0.29)
    many = [curve, [2.0, 2.01, 2.015, 2.0], [2.0, 2.2, 2.3, 2.4]]
    np.testing.assert_allclose(window.window_close_many([0, 0.5, 1, 1.5], many, 0.05),
                               [window.window_close([0, 0.5, 1, 1.5], c, 0.05) for c in many])


def test_the_interval_covers_the_true_close_as_often_as_it_says(tmp_path, tpl):
    """50 sweeps of 3 seeds whose window closes at t = 0.5: the 90% interval covers it in >= 80% of them
    (a bootstrap over 3 seeds covered it in about 55%). The sweeps are drawn as arrays; one of them, written
    as run directories and loaded, gives the same estimate and interval as its array."""
    truth, hits = true_close(), 0
    for r in range(50):
        cube = synthetic.plasticity_losses(TIMES, WEIGHTS, [0, 1, 2], SLOPE, 0.005, 0.01, np.random.default_rng(r))
        low, high, _ = window.close_interval(cube, TIMES, MARGIN, n_boot=400, seed=r)
        hits += low <= truth <= high
    assert hits >= 40, f"covered {hits} of 50"

    synthetic.plasticity_sweep(tmp_path, tpl, TIMES, WEIGHTS, [0, 1, 2], slope=SLOPE)
    runs = load_sweeps([tmp_path]).runs
    est = window.window_estimates(runs, C.IN_DOMAIN, MARGIN, n_boot=400).iloc[0]
    cube = synthetic.plasticity_losses(TIMES, WEIGHTS, [0, 1, 2], SLOPE, rng=np.random.default_rng(0))
    assert est["close"] == pytest.approx(window.window_close(TIMES, cube.mean(axis=2).min(axis=1), MARGIN))
    assert (est["low"], est["high"]) == pytest.approx(window.close_interval(cube, TIMES, MARGIN, n_boot=400)[:2])


def test_one_seed_claims_no_interval(tmp_path, tpl, figures):
    synthetic.plasticity_sweep(tmp_path, tpl, TIMES, WEIGHTS, [0], slope=SLOPE)
    runs = load_sweeps([tmp_path]).runs
    est = window.window_estimates(runs, C.IN_DOMAIN, MARGIN, n_boot=50).iloc[0]
    assert np.isfinite(est["close"]) and np.isnan(est["low"]) and np.isnan(est["high"])
    assert est["interval"].startswith("no interval") and "needs >= 2 seeds" in est["interval"]
    assert main([str(tmp_path), "--bootstrap", "50", "--formats", "png", "--metric", C.IN_DOMAIN]) == 0
    fig = figures[-1]
    texts = [ax.get_title() for ax in fig.axes] + [t.get_text() for ax in fig.axes if ax.get_legend()
                                                    for t in ax.get_legend().get_texts()]
    assert not any("nan" in t for t in texts), texts
    assert not any(ax.containers for ax in fig.axes)  # no (zero-width) error bars
    report = (tmp_path / "analysis" / "report.html").read_text()
    assert "bootstrap over seeds" not in report and "no interval: 1 seed" in report


def test_a_best_weight_at_the_edge_of_the_grid_is_flagged(tmp_path, tpl, figures):
    """Every weight below the optimum (0.1 + 0.3 t): the largest weight wins at every time, so no window
    is identified; the figure and the report say so."""
    weights = [0.01, 0.03, 0.06]
    synthetic.plasticity_sweep(tmp_path, tpl, TIMES, weights, [0, 1], slope=SLOPE, noise=0.0005)
    runs = load_sweeps([tmp_path]).runs
    best = window.best_per_time(heatmaps.heatmap_table(runs, C.IN_DOMAIN))
    assert (best["edge"] == "largest").all()
    est = window.window_estimates(runs, C.IN_DOMAIN, MARGIN, n_boot=50).iloc[0]
    assert est["edge"].startswith("no window identified") and "extend mixture.weight" in est["edge"]
    assert main([str(tmp_path), "--bootstrap", "50", "--formats", "png", "--metric", C.IN_DOMAIN]) == 0
    heat = figures[-1].axes[0]
    assert "grid edge" in heat.get_title()
    assert "best at grid edge" in [t.get_text() for t in heat.get_legend().get_texts()]
    assert "no window identified" in (tmp_path / "analysis" / "report.html").read_text()
