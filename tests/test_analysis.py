"""The analysis package on synthetic sweeps written in the results contract: tables, heatmap cells,
forgetting, the plasticity window, the CLI on a partial sweep."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import columns as C
from analysis import heatmaps, studies, synthetic, window
from analysis.cli import main
from analysis.derived import add_metrics
from analysis.load import SweepError, load_sweeps, read_tables, save_tables

TIMES, WEIGHTS, SEEDS = [0.0, 0.25, 0.5, 0.75], [0.1, 0.2, 0.4], [0, 1, 2]


@pytest.fixture
def sweep_dir(tmp_path):
    written = synthetic.plasticity_sweep(tmp_path / "sweep", TIMES, WEIGHTS, SEEDS)
    return tmp_path / "sweep", written


def cell_runs(written, t, w, **extra):
    sel = (written[C.INTRODUCE_AT] == t) & (written[C.WEIGHT] == w)
    for k, v in extra.items():
        sel &= written[k] == v
    return written[sel]


def cell(table, t, w):
    return table[(table[C.INTRODUCE_AT] == t) & (table[C.WEIGHT] == w)].iloc[0]


def test_load_has_one_row_per_run_and_curves(sweep_dir):
    d, written = sweep_dir
    sweep = load_sweeps([d])
    assert len(sweep.runs) == len(written)
    assert set(sweep.runs[C.RUN_ID]) == {p.name for p in written["path"]}
    assert {C.INTRODUCE_AT, C.WEIGHT, C.SEED, C.KIND} <= set(sweep.coords)
    # 5 evaluation points x (general + code) per introduce run, (general + code) for baselines.
    assert len(sweep.curves) == len(written) * 5 * 2
    path = written["path"].iloc[5]
    row = sweep.runs.set_index(C.RUN_ID).loc[path.name]
    summary = json.loads((path / "summary.json").read_text())
    assert row[C.STATUS] == C.DONE
    assert row[C.final(C.GENERAL)] == summary["final"][C.GENERAL]
    assert row[C.WEIGHT] == summary["coords"][C.WEIGHT]


def test_tables_round_trip_through_csv_and_parquet(sweep_dir, tmp_path):
    d, _ = sweep_dir
    sweep = load_sweeps([d])
    save_tables(sweep, tmp_path / "out")
    def same(df):  # None and NaN are both "no value" once written
        return df.astype(object).where(df.notna(), None).astype(str).reset_index(drop=True)

    for fmt in ("parquet", "csv"):
        runs, curves = read_tables(tmp_path / "out", fmt)
        pd.testing.assert_frame_equal(same(runs), same(sweep.runs))
        pd.testing.assert_frame_equal(same(curves), same(sweep.curves))


def test_merging_two_sweeps_keeps_every_run_and_seeds_are_an_axis(tmp_path):
    a = synthetic.plasticity_sweep(tmp_path / "a", TIMES, WEIGHTS, [0])
    b = synthetic.plasticity_sweep(tmp_path / "b", TIMES, WEIGHTS, [1])
    sweep = load_sweeps([tmp_path / "a", tmp_path / "b"])
    assert len(sweep.runs) == len(a) + len(b)
    assert sorted(sweep.runs[C.SEED].unique()) == [0, 1]
    table = heatmaps.heatmap_table(sweep.runs, C.IN_DOMAIN, sweep.coords)
    assert (table["n_done"] == 2).all()


def test_same_run_in_two_sweeps_is_kept_once_preferring_done(tmp_path):
    a = synthetic.plasticity_sweep(tmp_path / "a", TIMES, WEIGHTS, [0])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    synthetic.set_status(tmp_path / "b" / a["path"].iloc[3].name, C.FAILED, "oom")
    sweep = load_sweeps([tmp_path / "b", tmp_path / "a"])
    assert len(sweep.runs) == len(a)
    assert (sweep.runs[C.STATUS] == C.DONE).all()
    assert any("several sweeps" in p for p in sweep.problems)


def test_missing_or_empty_sweep_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="does not exist"):
        load_sweeps([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match="train.out_dir"):
        load_sweeps([tmp_path / "empty"])


def test_a_newer_contract_is_reported_not_misread(sweep_dir):
    d, written = sweep_dir
    path = written["path"].iloc[1]
    for name in ("summary.json", "status.json"):
        obj = json.loads((path / name).read_text())
        obj["contract"] = 2
        (path / name).write_text(json.dumps(obj))
    sweep = load_sweeps([d])
    assert path.name not in set(sweep.runs[C.RUN_ID])
    assert any("contract 2" in p for p in sweep.problems)


def test_heatmap_cell_follows_a_runs_result(sweep_dir):
    d, written = sweep_dir
    before = cell(heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN), 0.5, 0.2)
    run = cell_runs(written, 0.5, 0.2, **{C.SEED: 1})["path"].iloc[0]
    loss = json.loads((run / "summary.json").read_text())["final"]["code"]
    synthetic.set_final(run, code=loss + 0.3)
    after = cell(heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN), 0.5, 0.2)
    assert after["mean"] == pytest.approx(before["mean"] + 0.1)
    # Spread is the seed standard deviation of the cell's runs.
    losses = [json.loads((p / "summary.json").read_text())["final"]["code"]
              for p in cell_runs(written, 0.5, 0.2)["path"]]
    assert after["std"] == pytest.approx(np.std(losses, ddof=1))
    assert after["n_done"] == 3


def test_best_cell_is_the_minimum_of_its_facet(tmp_path):
    synthetic.plasticity_sweep(tmp_path, TIMES, WEIGHTS, SEEDS, domains=("code", "math"))
    table = heatmaps.heatmap_table(load_sweeps([tmp_path]).runs, C.IN_DOMAIN)
    assert table.attrs["facets"] == [C.DOMAIN, C.SIZE]
    for _, facet in table.groupby(C.DOMAIN):
        assert facet["best"].sum() == 1
        assert facet.loc[facet["best"], "mean"].iloc[0] == facet["mean"].min()


def test_failed_running_and_missing_cells_are_kept_with_their_reason(sweep_dir):
    d, written = sweep_dir
    for p in cell_runs(written, 0.75, 0.4)["path"]:
        synthetic.set_status(p, C.FAILED, "non-finite loss (nan) at step 57")
    for p in cell_runs(written, 0.5, 0.4)["path"]:
        synthetic.set_status(p, C.RUNNING)
    for p in cell_runs(written, 0.25, 0.1)["path"]:
        shutil.rmtree(p)
    synthetic.set_status(cell_runs(written, 0.0, 0.2)["path"].iloc[0], C.REQUEUED)
    table = heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN)
    assert len(table) == len(TIMES) * len(WEIGHTS)
    failed, running, missing, partial = (cell(table, *tw) for tw in ((0.75, 0.4), (0.5, 0.4), (0.25, 0.1), (0.0, 0.2)))
    assert (failed["status"], failed["note"]) == (C.FAILED, "failed: non-finite loss (nan) at step 57")
    assert (running["status"], running["note"]) == (C.RUNNING, C.RUNNING)
    assert (missing["status"], missing["n_done"]) == (C.MISSING, 0)
    assert np.isnan(failed["mean"]) and np.isnan(missing["mean"])
    assert partial["status"] == "partial" and partial["n_done"] == 2 and "requeued" in partial["note"]
    # Drawing shows every cell: the hatched ones carry their note.
    fig_files = heatmaps.draw_heatmaps(table, d / "figs", formats=("png",))
    assert fig_files[0].stat().st_size > 0


def test_loss_heatmap_draws_the_best_weight_per_time(sweep_dir):
    d, written = sweep_dir
    for p in written[written[C.INTRODUCE_AT] == 0.75]["path"]:
        synthetic.set_status(p, C.FAILED, "oom")
    table = heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN)
    xs, ys = heatmaps.best_weight_line(table)
    best = window.best_per_time(table)
    # The curve is the window's best weight per time; a time with no result is skipped, not guessed.
    assert [TIMES[i] for i in xs] == best[C.INTRODUCE_AT].tolist() == [0.0, 0.25, 0.5]
    assert [WEIGHTS[j] for j in ys] == best["best_weight"].tolist()
    assert C.IN_DOMAIN in heatmaps.BEST_LINE_METRICS and C.FORGETTING not in heatmaps.BEST_LINE_METRICS


def test_heatmap_is_written_as_png_and_pdf(sweep_dir):
    d, _ = sweep_dir
    table = heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN)
    png, pdf = heatmaps.draw_heatmaps(table, d / "figs")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().rstrip().endswith(b"%%EOF")


def test_upsampling_table_carries_the_matching_baseline(tmp_path):
    synthetic.plasticity_sweep(tmp_path, [0.0], [0.1], [0])
    synthetic.upsample_sweep(tmp_path, [0.0, 0.2, 0.4])
    sweep = load_sweeps([tmp_path])
    runs = add_metrics(sweep.runs)
    up = studies.upsample_table(runs, sweep.coords)
    base = runs[runs[C.KIND] == C.KIND_NONE].iloc[0]
    assert len(up) == 3
    np.testing.assert_allclose(up["baseline_general_loss"], base[C.final(C.GENERAL)])
    np.testing.assert_allclose(up["baseline_in_domain"], base[C.final("code")])


def test_running_run_without_summary_takes_coords_from_config(sweep_dir):
    d, written = sweep_dir
    run = cell_runs(written, 0.5, 0.1, **{C.SEED: 0})["path"].iloc[0]
    (run / "summary.json").unlink()
    synthetic.set_status(run, C.RUNNING)
    runs = load_sweeps([d]).runs
    row = runs[runs[C.RUN_ID] == run.name].iloc[0]
    assert (row[C.INTRODUCE_AT], row[C.WEIGHT], row[C.STATUS]) == (0.5, 0.1, C.RUNNING)
    assert cell(heatmaps.heatmap_table(runs, C.IN_DOMAIN), 0.5, 0.1)["n_done"] == 2


def test_forgetting_is_general_minus_matching_baseline(sweep_dir):
    d, written = sweep_dir
    runs = add_metrics(load_sweeps([d]).runs)
    base = runs[runs[C.KIND] == C.KIND_NONE].set_index(C.SEED)[C.final(C.GENERAL)]
    intro = runs[runs[C.KIND] == "introduce"]
    expected = intro[C.final(C.GENERAL)] - intro[C.SEED].map(base)
    np.testing.assert_allclose(intro[C.FORGETTING], expected)
    # Synthetic general loss = baseline + 0.4 w (1 - t) + noise.
    table = heatmaps.heatmap_table(runs, C.FORGETTING)
    c = cell(table, 0.25, 0.4)
    assert c["mean"] == pytest.approx(0.4 * 0.4 * 0.75, abs=0.02)


def test_forgetting_falls_back_to_baseline_seed_mean(sweep_dir):
    d, written = sweep_dir
    base_seed2 = written[(written[C.KIND] == C.KIND_NONE) & (written[C.SEED] == 2)]["path"].iloc[0]
    shutil.rmtree(base_seed2)
    runs = add_metrics(load_sweeps([d]).runs)
    base = runs[runs[C.KIND] == C.KIND_NONE][C.final(C.GENERAL)].mean()
    seed2 = runs[(runs[C.KIND] == "introduce") & (runs[C.SEED] == 2)]
    np.testing.assert_allclose(seed2[C.FORGETTING], seed2[C.final(C.GENERAL)] - base)


def test_window_close_finds_the_known_time_with_an_interval(tmp_path):
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    slope, margin = 0.2, 0.05  # best loss = base + slope * t: closes at t = margin / slope = 0.25
    synthetic.plasticity_sweep(tmp_path, times, [0.05, 0.1, 0.2, 0.3, 0.4], range(6), slope=slope,
                               noise=0.004, seed_noise=0.01)
    runs = load_sweeps([tmp_path]).runs
    est = window.window_estimates(runs, C.IN_DOMAIN, margin, n_boot=300).iloc[0]
    assert est["close"] == pytest.approx(0.25, abs=0.03)
    assert est["low"] <= 0.25 <= est["high"]
    assert est["high"] - est["low"] < 0.1
    best = window.best_per_time(heatmaps.heatmap_table(runs, C.IN_DOMAIN))
    # The best weight tracks the synthetic optimum 0.1 + 0.3 t (to the nearest grid weight).
    grid = np.array([0.05, 0.1, 0.2, 0.3, 0.4])
    nearest = grid[np.abs(grid[None, :] - synthetic.best_weight(best[C.INTRODUCE_AT].to_numpy())[:, None]).argmin(1)]
    assert (np.abs(best["best_weight"].to_numpy() - nearest) <= 0.1 + 1e-9).all()


def test_window_open_when_loss_never_exceeds_margin():
    assert np.isnan(window.window_close([0, 0.5, 1], [2.0, 2.01, 2.015], margin=0.05))
    assert window.window_close([0, 0.5, 1], [2.0, 2.2, 2.1], margin=0.05) == pytest.approx(0.125)
    # A dip back inside the margin re-opens it: the close is after the last time inside.
    assert window.window_close([0, 0.5, 1, 1.5], [2.0, 2.2, 2.01, 2.3], margin=0.05) == pytest.approx(1.0 + 0.5 * 0.04 / 0.29)


def test_cli_writes_report_tables_and_figures_for_a_partial_sweep(tmp_path, capsys):
    d = tmp_path / "sweep"
    written = synthetic.plasticity_sweep(d, TIMES, WEIGHTS, [0, 1], posttrain=True)
    synthetic.set_status(cell_runs(written, 0.75, 0.4)["path"].iloc[0], C.FAILED, "non-finite loss (nan) at step 57")
    synthetic.set_status(cell_runs(written, 0.5, 0.4)["path"].iloc[0], C.RUNNING)
    synthetic.continued_sweep(d, [1e6, 3e6, 1e7], [1e6, 3e6, 1e7], dict(A=2000, alpha1=0.3, alpha2=0.25,
                                                                      alpha3=0.005, E=1.5))
    synthetic.upsample_sweep(d, [0.0, 0.2, 0.4])
    synthetic.rewarm_sweep(d, [1e-3, 3e-3], [0, 100])
    assert main([str(d), "--bootstrap", "50", "--formats", "png"]) == 0
    out = capsys.readouterr().out
    report = d / "analysis" / "report.html"
    assert f"report: {report}" in out
    html = report.read_text()
    for fig in ("heatmap_in_domain", "heatmap_forgetting", "heatmap_target_loss", "plasticity_window",
                "midtrain_vs_continued", "upsampling", "rewarm", "reuse_law_code_tiny"):
        assert (d / "analysis" / "figures" / f"{fig}.png").exists(), fig
        assert f"figures/{fig}.png" in html
    assert "non-finite loss (nan) at step 57" in html and "running" in html
    for table in ("runs.csv", "runs.parquet", "curves.csv", "curves.parquet", "window_close.csv"):
        assert (d / "analysis" / table).exists()
    # The window uses the post-training target loss when it exists.
    assert "Metric: target_loss" in html


def test_cli_reports_a_bad_sweep_dir_without_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
