"""The analysis package on sweeps copied from engine-written run directories (analysis.synthetic: real tiny
runs as templates, only their numbers changed): tables, heatmap cells, partial sweeps, forgetting against
the matched baseline, the other studies, the CLI."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from analysis_templates import engine_templates

from midsweep_analysis import columns as C
from midsweep_analysis import heatmaps, studies, style, synthetic, window
from midsweep_analysis.cli import main
from midsweep_analysis.derived import add_metrics
from midsweep_analysis.load import CONTRACT_VERSION, SweepError, load_sweeps, read_tables, save_tables

TIMES, WEIGHTS, SEEDS = [0.0, 0.25, 0.5, 0.75], [0.1, 0.2, 0.4], [0, 1, 2]


@pytest.fixture(scope="module")
def tpl(tmp_path_factory):
    return engine_templates(tmp_path_factory.getbasetemp())


@pytest.fixture
def sweep_dir(tmp_path, tpl):
    written = synthetic.plasticity_sweep(tmp_path / "sweep", tpl, TIMES, WEIGHTS, SEEDS)
    return tmp_path / "sweep", written


@pytest.fixture
def figures(monkeypatch):
    """Every figure the analysis saves, kept for inspection (then saved as usual)."""
    seen = []
    save = style.save

    def keep(fig, *args, **kw):
        seen.append(fig)
        return save(fig, *args, **kw)

    monkeypatch.setattr(style, "save", keep)
    return seen


def cell_runs(written, t, w, **extra):
    sel = (written[C.INTRODUCE_AT] == t) & (written[C.WEIGHT] == w)
    for k, v in extra.items():
        sel &= written[k] == v
    return written[sel]


def cell(table, t, w):
    return table[(table[C.INTRODUCE_AT] == t) & (table[C.WEIGHT] == w)].iloc[0]


def summary_of(path):
    return json.loads((path / "summary.json").read_text())


# ---- tables


def test_load_has_one_row_per_run_and_curves(sweep_dir):
    d, written = sweep_dir
    sweep = load_sweeps([d])
    assert len(sweep.runs) == len(written)
    assert set(sweep.runs[C.RUN_ID]) == {p.name for p in written["path"]}
    assert {C.INTRODUCE_AT, C.WEIGHT, C.SEED, C.KIND} <= set(sweep.coords)
    lines = sum(len((p / "metrics.jsonl").read_text().splitlines()) for p in written["path"])
    assert len(sweep.curves) == lines
    path = written["path"].iloc[5]
    row = sweep.runs.set_index(C.RUN_ID).loc[path.name]
    summary = summary_of(path)
    assert summary["contract"] == CONTRACT_VERSION
    assert row[C.STATUS] == C.DONE
    assert row[C.final(C.GENERAL)] == summary["final"][C.GENERAL]
    assert row[C.WEIGHT] == summary["coords"][C.WEIGHT]


def test_tables_round_trip_through_csv_and_parquet(sweep_dir, tmp_path):
    d, _ = sweep_dir
    sweep = load_sweeps([d])
    save_tables(sweep, tmp_path / "out")
    for fmt in ("parquet", "csv"):
        for back, orig in zip(read_tables(tmp_path / "out", fmt), (sweep.runs, sweep.curves)):
            assert list(back.columns) == list(orig.columns) and len(back) == len(orig)
            for col in orig:
                num = pd.to_numeric(orig[col], errors="coerce")
                if orig[col].notna().any() and num.notna().sum() == orig[col].notna().sum() \
                        and orig[col].map(lambda v: not isinstance(v, bool)).all():
                    # Floats written as text come back to the last digit or so, whatever pandas version.
                    np.testing.assert_allclose(pd.to_numeric(back[col]), num, rtol=1e-12, equal_nan=True,
                                               err_msg=f"{fmt} {col}")
                else:  # text; None and NaN are both "no value" once written
                    assert [str(v) if not C.is_missing(v) else None for v in back[col]] == \
                        [str(v) if not C.is_missing(v) else None for v in orig[col]], f"{fmt} {col}"


def test_merging_two_sweeps_keeps_every_run_and_seeds_are_an_axis(tmp_path, tpl):
    a = synthetic.plasticity_sweep(tmp_path / "a", tpl, TIMES, WEIGHTS, [0])
    b = synthetic.plasticity_sweep(tmp_path / "b", tpl, TIMES, WEIGHTS, [1])
    sweep = load_sweeps([tmp_path / "a", tmp_path / "b"])
    assert len(sweep.runs) == len(a) + len(b)
    assert sorted(sweep.runs[C.SEED].unique()) == [0, 1]
    table = heatmaps.heatmap_table(sweep.runs, C.IN_DOMAIN, sweep.coords)
    assert (table["n_done"] == 2).all()


def test_same_run_in_two_sweeps_is_kept_once_preferring_done(tmp_path, tpl):
    a = synthetic.plasticity_sweep(tmp_path / "a", tpl, TIMES, WEIGHTS, [0])
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


def test_another_contract_is_reported_not_misread(sweep_dir):
    d, written = sweep_dir
    path = written["path"].iloc[1]
    for name in ("summary.json", "status.json"):
        obj = json.loads((path / name).read_text())
        obj["contract"] = CONTRACT_VERSION - 1
        (path / name).write_text(json.dumps(obj))
    sweep = load_sweeps([d])
    assert path.name not in set(sweep.runs[C.RUN_ID])
    assert any(f"contract {CONTRACT_VERSION - 1}" in p and "left out" in p for p in sweep.problems)


@pytest.mark.parametrize("how", ["directory in its place", "chmod 000"])
def test_an_unreadable_file_is_a_problem_and_the_analysis_goes_on(sweep_dir, how):
    d, written = sweep_dir
    path = written["path"].iloc[2]
    summary = path / "summary.json"
    if how == "chmod 000":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        summary.chmod(0)
    else:
        summary.unlink()
        summary.mkdir()
    sweep = load_sweeps([d])
    assert len(sweep.runs) == len(written)  # the run is still listed (status.json and config.yaml read)
    assert any(str(summary) in p and "cannot read summary.json" in p and "chmod a+r" in p for p in sweep.problems)
    assert main([str(d), "--bootstrap", "20", "--formats", "png"]) == 0
    assert "cannot read summary.json" in (d / "analysis" / "report.html").read_text()


# ---- heatmaps


def test_heatmap_cell_follows_a_runs_result(sweep_dir):
    d, written = sweep_dir
    before = cell(heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN), 0.5, 0.2)
    run = cell_runs(written, 0.5, 0.2, **{C.SEED: 1})["path"].iloc[0]
    synthetic.set_final(run, code=summary_of(run)["final"]["code"] + 0.3)
    after = cell(heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN), 0.5, 0.2)
    assert after["mean"] == pytest.approx(before["mean"] + 0.1)
    losses = [summary_of(p)["final"]["code"] for p in cell_runs(written, 0.5, 0.2)["path"]]
    assert after["std"] == pytest.approx(np.std(losses, ddof=1))
    assert after["n_done"] == 3


def test_best_cell_is_the_minimum_of_its_facet(tmp_path, tpl):
    synthetic.plasticity_sweep(tmp_path, tpl, TIMES, WEIGHTS, SEEDS, domains=("code", "math"))
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
    fig_files = heatmaps.draw_heatmaps(table, d / "figs", formats=("png",))
    assert fig_files[0].stat().st_size > 0


def test_a_partial_sweep_with_null_coordinates_draws_finished_cells_and_marks_running_ones(tmp_path, tpl, figures):
    """Runs before their first summary (coordinates from config.yaml only) and a sweep over
    mixture.until=null,0.8: null is a value of its own, finished cells are drawn, running ones marked."""
    d = tmp_path / "sweep"
    for until in (None, 0.8):
        for t in (0.0, 0.5):
            for w in (0.1, 0.4):
                coords = {C.INTRODUCE_AT: t, C.WEIGHT: w, C.UNTIL: until}
                late = (t, w) == (0.5, 0.4)
                synthetic.clone_run(tpl["introduce"], d, coords, {"code": 2.0 + t + w + (until or 0)},
                                    status=C.RUNNING if late else C.DONE, with_summary=not late)
    synthetic.clone_run(tpl["none"], d, {}, {C.GENERAL: 3.0})
    synthetic.clone_run(tpl["none"], d, {C.SEED: 1}, {}, status=C.RUNNING, with_summary=False)
    sweep = load_sweeps([d])
    running = sweep.runs[sweep.runs[C.STATUS] == C.RUNNING]
    assert running[C.INTRODUCE_TOKENS].isna().all()  # not in config.yaml: absent until the first summary
    baseline = running[running[C.KIND] == C.KIND_NONE].iloc[0]
    assert C.is_missing(baseline[C.WEIGHT])  # a key kind none does not read stays absent
    table = heatmaps.heatmap_table(sweep.runs, C.IN_DOMAIN, sweep.coords)
    assert C.UNTIL in table.attrs["facets"] and set(table[C.UNTIL]) == {heatmaps.NULL, 0.8}
    assert len(table) == 2 * 2 * 2
    for until in (heatmaps.NULL, 0.8):
        facet = table[table[C.UNTIL] == until]
        assert (facet["status"] == "ok").sum() == 3
        assert cell(facet, 0.5, 0.4)["status"] == C.RUNNING
    assert cell(table[table[C.UNTIL] == 0.8], 0.0, 0.1)["mean"] == pytest.approx(2.0 + 0.1 + 0.8)
    heatmaps.draw_heatmaps(table, tmp_path / "figs", formats=("png",))
    assert any("until=null" in ax.get_title() for ax in figures[0].axes)
    assert main([str(d), "--bootstrap", "20", "--formats", "png"]) == 0


def test_running_run_without_summary_takes_coords_from_config(sweep_dir):
    d, written = sweep_dir
    run = cell_runs(written, 0.5, 0.1, **{C.SEED: 0})["path"].iloc[0]
    (run / "summary.json").unlink()
    synthetic.set_status(run, C.RUNNING)
    runs = load_sweeps([d]).runs
    row = runs[runs[C.RUN_ID] == run.name].iloc[0]
    assert (row[C.INTRODUCE_AT], row[C.WEIGHT], row[C.STATUS]) == (0.5, 0.1, C.RUNNING)
    assert cell(heatmaps.heatmap_table(runs, C.IN_DOMAIN), 0.5, 0.1)["n_done"] == 2


def test_heatmap_is_written_as_png_and_pdf_without_forking(sweep_dir, monkeypatch):
    def no_fork(*a, **k):
        raise AssertionError("the analysis must not fork or start processes")

    monkeypatch.setattr(os, "fork", no_fork)
    monkeypatch.setattr(os, "posix_spawn", no_fork, raising=False)
    monkeypatch.setattr("subprocess.Popen.__init__", no_fork)
    d, _ = sweep_dir
    table = heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN)
    png, pdf = heatmaps.draw_heatmaps(table, d / "figs")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().rstrip().endswith(b"%%EOF")


def test_best_weight_line_leaves_the_best_cells_labels_readable(sweep_dir, figures):
    d, written = sweep_dir
    for p in written[written[C.INTRODUCE_AT] == 0.75]["path"]:
        synthetic.set_status(p, C.FAILED, "oom")
    table = heatmaps.heatmap_table(load_sweeps([d]).runs, C.IN_DOMAIN)
    xs, ys = heatmaps.best_weight_line(table)
    best = window.best_per_time(table)
    # The curve is the best weight per time; a time with no result is skipped, not guessed.
    assert [TIMES[i] for i in xs] == best[C.INTRODUCE_AT].tolist() == [0.0, 0.25, 0.5]
    assert [WEIGHTS[j] for j in ys] == best["best_weight"].tolist()
    heatmaps.draw_heatmaps(table, d / "figs", formats=("png",))
    ax = next(a for a in figures[0].axes if a.get_visible() and a.get_images())
    figures[0].canvas.draw()
    labels = next(a for a in ax.artists if hasattr(a, "texts"))
    lines = [ln for ln in ax.get_lines() if ln.get_color() == "black"]
    assert lines, "no best-weight line drawn"
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    px = figures[0].dpi / 72
    texts = dict(zip(map(tuple, labels._xy.astype(int)), labels.texts))
    boxes = [(c, np.array(heatmaps.half_extent(texts[(x, y)], heatmaps.label_size(table))) * px)
             for c, x, y in zip(centres, xs, ys)]
    for line in lines:
        pts = line.get_xydata()
        along = np.concatenate([np.linspace(a, b, 50) for a, b in zip(pts[:-1], pts[1:])])
        on_screen = ax.transData.transform(along)
        for centre, half in boxes:
            inside = (np.abs(on_screen - centre) < half).all(axis=1)
            assert not inside.any(), "the best-weight line crosses a best cell's label"


# ---- forgetting and its baseline


def test_forgetting_is_general_minus_the_same_seeds_baseline(sweep_dir, figures):
    d, written = sweep_dir
    runs = add_metrics(load_sweeps([d]).runs)
    base = runs[runs[C.KIND] == C.KIND_NONE].set_index(C.SEED)[C.final(C.GENERAL)]
    intro = runs[runs[C.KIND] == "introduce"]
    np.testing.assert_allclose(intro[C.FORGETTING], intro[C.final(C.GENERAL)] - intro[C.SEED].map(base))
    assert (intro[C.N_BASELINE] == len(SEEDS)).all()
    table = heatmaps.heatmap_table(runs, C.FORGETTING)
    # Synthetic general loss = baseline + 0.4 w (1 - t) + noise.
    assert cell(table, 0.25, 0.4)["mean"] == pytest.approx(0.4 * 0.4 * 0.75, abs=0.02)
    # The colour bar spans the data (not a symmetric range twice as wide), with units.
    heatmaps.draw_heatmaps(table, d / "figs", formats=("png",))
    cbar = next(a for a in figures[0].axes if a.get_ylabel().startswith("forgetting"))
    assert cbar.get_ylim() == pytest.approx((table["mean"].min(), table["mean"].max()))
    assert "nats/token" in cbar.get_ylabel()


def test_missing_baseline_seed_uses_the_mean_over_baseline_seeds(sweep_dir):
    d, written = sweep_dir
    shutil.rmtree(written[(written[C.KIND] == C.KIND_NONE) & (written[C.SEED] == 2)]["path"].iloc[0])
    runs = add_metrics(load_sweeps([d]).runs)
    base = runs[runs[C.KIND] == C.KIND_NONE][C.final(C.GENERAL)].mean()
    seed2 = runs[(runs[C.KIND] == "introduce") & (runs[C.SEED] == 2)]
    np.testing.assert_allclose(seed2[C.FORGETTING], seed2[C.final(C.GENERAL)] - base)


@pytest.mark.parametrize("differs", [{C.SIZE: "small"}, {C.TRAIN_TOKENS: 8192}, {C.LR: 1e-3}, "posttrain"])
def test_a_baseline_differing_in_more_than_mixture_and_seed_is_no_baseline(tmp_path, tpl, differs):
    """Post-trained runs against a baseline without post-training (or of another model size, token budget,
    LR): never matched; the cell says "no matched baseline" and the report lists the runs."""
    d = tmp_path / "sweep"
    post = differs == "posttrain"
    intro = synthetic.plasticity_sweep(d, tpl, [0.0, 0.5], [0.1, 0.4], [0], posttrain=post, baseline=False)
    synthetic.clone_run(tpl["none"], d, {C.SIZE: "tiny", **({} if post else differs)}, {C.GENERAL: 1.5})
    runs = add_metrics(load_sweeps([d]).runs)
    intro_runs = runs[runs[C.KIND] == "introduce"]
    assert intro_runs[C.FORGETTING].isna().all() and (intro_runs[C.N_BASELINE] == 0).all()
    table = heatmaps.heatmap_table(runs, C.FORGETTING)
    assert (table["note"] == C.NO_BASELINE).all() and table["mean"].isna().all()
    if not post:
        return
    assert main([str(d), "--bootstrap", "20", "--formats", "png"]) == 0
    report = (d / "analysis" / "report.html").read_text()
    assert "No matched baseline (4 runs)" in report
    assert all(p.name in report for p in intro["path"])


def test_the_same_base_mix_and_lr_policy_at_the_boundary_still_match(tmp_path, tpl):
    """A re-warm at the introduction is part of the intervention: its baseline is the run without any."""
    d = tmp_path / "sweep"
    synthetic.rewarm_sweep(d, tpl, [1e-3, 3e-3], [0.01], seeds=[0])
    lr = {k: v for k, v in summary_of(tpl["introduce+rewarm"])["coords"].items() if k in (C.LR, C.WARMUP)}
    synthetic.clone_run(tpl["none"], d, {C.SIZE: "tiny", **lr}, {C.GENERAL: 3.0})
    runs = add_metrics(load_sweeps([d]).runs)
    rewarm = runs[runs[C.KIND] == "introduce"]
    assert (rewarm[C.N_BASELINE] == 1).all()
    np.testing.assert_allclose(rewarm[C.FORGETTING], rewarm[C.final(C.GENERAL)] - 3.0)


# ---- the other studies


def test_upsampling_is_drawn_for_engine_runs_against_the_same_base_mix(tmp_path, tpl, figures):
    d = tmp_path / "sweep"
    ups = synthetic.upsample_sweep(d, tpl, [0.1, 0.2, 0.4], seeds=[0, 1])
    synthetic.clone_run(tpl["none"], d, {C.SIZE: "tiny"}, {C.GENERAL: 9.0, "code": 9.0})  # general only: not it
    sweep = load_sweeps([d])
    assert {C.UPSAMPLE_FRACTION, C.BASE_WEIGHTS + "code", C.UPSAMPLE_WEIGHTS + "math"} <= set(sweep.coords)
    runs = add_metrics(sweep.runs, sweep.coords)
    up = studies.upsample_table(runs, sweep.coords)
    assert sorted(up[C.DOMAIN].unique()) == ["code", "math"]  # the domains the template upsamples
    assert len(up) == 2 * 3 and (up[f"{C.IN_DOMAIN}_count"] == 2).all()
    same_mix = ups[ups[C.KIND] == C.KIND_NONE]["path"]
    base = np.mean([summary_of(p)["final"]["code"] for p in same_mix])
    np.testing.assert_allclose(up.loc[up[C.DOMAIN] == "code", "baseline_in_domain"], base)
    assert (up["baseline_general_loss"] < 9).all()
    assert main([str(d), "--bootstrap", "20", "--formats", "png"]) == 0
    assert (d / "analysis" / "figures" / "upsampling.png").exists()


def test_rewarm_settings_are_curves_not_seeds_and_the_start_checkpoint_is_plotted(tmp_path, tpl, figures):
    d = tmp_path / "sweep"
    synthetic.rewarm_sweep(d, tpl, [1e-3, 3e-3], [0.01, 0.05], seeds=[0, 1],
                           init_from=[None, "/runs/pretrain/0123456789ab"])
    sweep = load_sweeps([d])
    curves = studies.rewarm_curves(add_metrics(sweep.runs), sweep.curves, sweep.coords)
    assert curves.attrs["vary"] == [C.REWARM_LR, C.REWARM_WARMUP]
    assert set(curves["start"]) == {"scratch", "0123456789ab"}
    assert (curves["count"] == 2).all()  # each curve averages the 2 seeds of one setting, nothing else
    studies.draw_rewarm(curves, tmp_path / "figs", formats=("png",))
    titles = [ax.get_title() for ax in figures[0].axes]
    assert any("from 0123456789ab" in t for t in titles) and any("from scratch" in t for t in titles)


def test_midtraining_vs_continued_uses_the_posttrain_target_and_never_pools(tmp_path, tpl):
    d = tmp_path / "sweep"
    for size in ("tiny", "small"):
        for kind, target in (("introduce+posttrain", 2.0), ("continued+posttrain", 2.2)):
            for seed in (0, 1):
                synthetic.clone_run(tpl[kind], d, {C.SIZE: size, C.SEED: seed, C.DOMAIN: "math"},
                                    {C.TARGET: target + (size == "small"), "math": 1.0, C.GENERAL: 3.1})
        for seed in (0, 1):
            synthetic.clone_run(tpl["none+posttrain"], d, {C.SIZE: size, C.SEED: seed},
                                {C.TARGET: 2.5 + (size == "small"), "math": 1.5, C.GENERAL: 3.0})
    sweep = load_sweeps([d])
    table = studies.gain_forgetting_table(add_metrics(sweep.runs, sweep.coords))
    assert len(table) == 8 and (table[studies.GAIN_MEASURE] == "target gain after post-training").all()
    summary = studies.gain_forgetting_summary(table).set_index([C.SIZE, C.KIND])
    assert len(summary) == 4  # per (size, kind): never pooled
    assert summary.loc[("tiny", "introduce"), "gain_mean"] == pytest.approx(0.5)
    assert summary.loc[("small", "continued"), "gain_mean"] == pytest.approx(0.3)
    assert summary["forgetting_mean"].to_numpy() == pytest.approx(0.1)


# ---- the command line


@pytest.mark.slow  # every analysis of a whole sweep, end to end
def test_cli_writes_report_tables_and_figures_for_a_partial_sweep(tmp_path, tpl, capsys, figures):
    d = tmp_path / "sweep"
    written = synthetic.plasticity_sweep(d, tpl, TIMES, WEIGHTS, [0, 1], posttrain=True)
    synthetic.set_status(cell_runs(written, 0.75, 0.4)["path"].iloc[0], C.FAILED, "non-finite loss (nan) at step 57")
    synthetic.set_status(cell_runs(written, 0.5, 0.4)["path"].iloc[0], C.RUNNING)
    synthetic.plasticity_sweep(d, tpl, TIMES, WEIGHTS, [0, 1])
    for seed in (0, 1):  # continued pretraining with the plain sweep's baseline
        synthetic.clone_run(tpl["continued"], d, {C.SIZE: "tiny", C.SEED: seed}, {"code": 2.1, C.GENERAL: 3.2})
    synthetic.continued_sweep(d, tpl, [1e6, 3e6, 1e7], [1e6, 3e6, 1e7], dict(A=2000, alpha1=0.3, alpha2=0.25,
                                                                           alpha3=0.005, E=1.5))
    synthetic.upsample_sweep(d, tpl, [0.1, 0.2, 0.4])
    synthetic.rewarm_sweep(d, tpl, [1e-3, 3e-3], [0.01, 0.05])
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
    assert "Metric: target_loss" in html  # the window uses the post-training target loss when it exists
    # Every axis and colour bar says its unit.
    for fig in figures:
        for ax in fig.axes:
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert not label or any(u in label for u in ("nats", "fraction", "tokens")), label


def test_cli_reports_a_bad_sweep_dir_without_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
