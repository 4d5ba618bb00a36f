"""midsweep-analyze SWEEP_DIR [SWEEP_DIR ...]: sweep directories -> tables, figures, fitted laws and one
report page. Each study is drawn when the runs hold the data for it; what could not be drawn says why in
the report. Works on partial sweeps: runs still going or failed show as such."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import columns as C
from . import downstream, heatmaps, laws, posttrain, proximity, studies, style, window
from .derived import SEED_LIKE, add_metrics, add_tradeoff, without_baseline
from .load import SweepError, load_sweeps, save_tables
from .report import Section, write_report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="midsweep-analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep directories (train.out_dir of each sweep)")
    p.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/analysis for one sweep, "
                                            "./analysis for several)")
    p.add_argument("--metric", metavar="METRIC",
                   help=f"metric of the plasticity window: {', '.join(C.HEATMAP_METRICS)}, or tradeoff:LAMBDA "
                        "(target_loss + LAMBDA x forgetting, e.g. tradeoff:0.5) (default: target_loss when "
                        "post-training ran, else in_domain)")
    p.add_argument("--margin", type=float, default=0.02,
                   help="the window closes when the best loss exceeds the earliest introduction's by this "
                        f"many {C.LOSS_UNIT} (default 0.02)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples of the window's interval (default 1000)")
    p.add_argument("--level", type=float, default=0.9, help="interval coverage (default 0.9)")
    p.add_argument("--formats", nargs="+", default=list(style.FORMATS), choices=["png", "pdf", "svg"],
                   help=f"figure file formats (default: {' '.join(style.FORMATS)})")
    p.add_argument("--corpus", action="append", default=[], metavar="NAME=PATH",
                   help="a domain corpus for the proximity study (.txt, .jsonl with 'text' or 'prompt'/'response', "
                        "or a shard dir); "
                        "repeat it for general, each midtraining domain and the target")
    p.add_argument("--target-corpus", default=C.TARGET, help="name of the target corpus (default: target)")
    p.add_argument("--general-corpus", default=C.GENERAL, help="name of the general corpus (default: general)")
    args = p.parse_args(argv)
    args.tradeoff = None
    if args.metric and args.metric.startswith(C.TRADEOFF + ":"):
        try:
            args.tradeoff = float(args.metric.split(":", 1)[1])
        except ValueError:
            p.error(f"--metric {args.metric}: LAMBDA is not a number; write e.g. --metric tradeoff:0.5")
        args.metric = C.TRADEOFF
    elif args.metric is not None and args.metric not in C.HEATMAP_METRICS:
        p.error(f"--metric {args.metric} is not a metric: use one of {', '.join(C.HEATMAP_METRICS)} "
                "or tradeoff:LAMBDA (e.g. tradeoff:0.5)")
    if any("=" not in c for c in args.corpus):
        p.error("--corpus takes NAME=PATH, e.g. --corpus target=data/target.jsonl")
    if args.corpus and args.target_corpus not in {c.split("=", 1)[0] for c in args.corpus}:
        p.error(f"no --corpus named {args.target_corpus!r}: add --corpus {args.target_corpus}=PATH "
                "or name the target with --target-corpus")
    return args


def analyze(args: argparse.Namespace) -> dict:
    """Run every study the data allows; returns {"tables": [...], "figures": [...], "report": path}."""
    out = args.out or (args.sweeps[0] / "analysis" if len(args.sweeps) == 1 else Path("analysis"))
    figs_dir = out / "figures"
    sweep = load_sweeps(args.sweeps)
    tables = save_tables(sweep, out)
    # of several post-training LRs each pretraining run keeps its best; then post-training seeds count as seeds
    runs, lr_choice = posttrain.best_posttrain_lr(add_metrics(sweep.runs, sweep.coords), sweep.coords)
    coords = [c for c in sweep.coords if c == C.SEED or c not in SEED_LIKE]
    runs = add_metrics(posttrain.fold_seeds(runs), coords)
    if args.tradeoff is not None:
        runs = add_tradeoff(runs, args.tradeoff)
    sections, skipped, figures = [], [], []

    def table_file(df, name):
        tables.append(out / f"{name}.csv")
        df.to_csv(tables[-1], index=False)

    def add(section: Section, files):
        section.figures += files
        figures.extend(files)
        sections.append(section)

    if len(lr_choice):
        table_file(lr_choice, "posttrain_lr")
        sections.append(Section("Post-training LR", "Per pretraining run, the posttrain.lr with the lowest "
                                "post-training validation loss (the target's held-out loss after post-training, "
                                "mean over post-training seeds), as the papers choose theirs; the runs of the other "
                                "LRs are left out of every table and figure below.",
                                tables=[("Chosen post-training LR", lr_choice)]))

    grid = heatmaps.heatmap_runs(runs)
    if grid.empty:
        skipped.append("heatmaps and plasticity window: no runs vary mixture.introduce_at and mixture.weight")
    for metric in C.HEATMAP_METRICS if not grid.empty else ():
        if grid[metric].notna().any():
            t = heatmaps.heatmap_table(runs, metric, coords)
            table_file(t, f"heatmap_{metric}")
            add(Section(f"Heatmap: {C.METRIC_LABELS[metric]}",
                        "Cells: the seed mean (± seed std where more than one seed is done); "
                        "outlined: best cell; hatched: no result, with the reason."),
                heatmaps.draw_heatmaps(t, figs_dir, formats=args.formats))
        else:
            why = {C.FORGETTING: "no run has a matched baseline (a done mixture=none run equal in everything "
                                 "but the mixture axes and the seed)",
                   C.TARGET_LOSS: "no 'target' loss in final (post-training did not run)"}.get(metric, "no values")
            skipped.append(f"heatmap of {metric}: {why}")

    metric = args.metric or (C.TARGET_LOSS if not grid.empty and grid[C.TARGET_LOSS].notna().any() else C.IN_DOMAIN)
    if not grid.empty and grid[metric].notna().any():
        t = heatmaps.heatmap_table(runs, metric, coords)
        est = window.window_estimates(runs, metric, args.margin, args.bootstrap, args.level, coords)
        best = window.best_per_time(t)
        table_file(est, "window_close")
        table_file(best, "best_weight_per_time")
        intervals = "; ".join(dict.fromkeys(est["interval"]))
        edges = [e for e in est["edge"] if e]
        what = f"target_loss + {args.tradeoff:g} x forgetting" if metric == C.TRADEOFF else metric
        add(Section("Plasticity window", f"Metric: {what}. The window closes at the introduction time after "
                    f"which the best achievable loss stays worse than the earliest introduction's by "
                    f"{args.margin:g} {C.LOSS_UNIT}; `window` says it in words (an interval end `inf` = open: "
                    f"some resamples never close; no close where no window is identified). Interval: {intervals}. "
                    + (" WARNING: " + " | ".join(edges) if edges else ""),
                    tables=[("Window close", est), ("Best weight per introduction time", best)]),
            window.draw_window(t, est, figs_dir, formats=args.formats))

    elif metric == C.TRADEOFF:
        skipped.append("plasticity window on the trade-off: no grid run has both a post-training target loss and a "
                       "matched baseline")

    curve = posttrain.plasticity_curve(runs)
    if len(curve):
        table_file(curve, "plasticity_curve")
        add(Section("Plasticity curve", "Post-training target loss and forgetting (general loss after "
                    "post-training − the baseline's, post-trained from the same point) against the point of main "
                    "training where post-training started (posttrain.after); one curve per mixture, mean ± seed "
                    "std.", tables=[("Plasticity curve", curve)]),
            posttrain.draw_plasticity_curve(curve, figs_dir, formats=args.formats))

    gf = studies.gain_forgetting_table(runs)
    kinds = set(gf[C.KIND]) if len(gf) else set()
    if C.KIND_CONTINUED in kinds and kinds - {C.KIND_CONTINUED}:
        table_file(gf, "gain_vs_forgetting")
        summary = studies.gain_forgetting_summary(gf)
        table_file(summary, "gain_vs_forgetting_summary")
        add(Section("Midtraining vs continued pretraining", "One point per done run with a matched baseline; one "
                    "panel per model size and gain measure. Gain: post-training target gain when post-training "
                    "ran (forgetting then = general loss after post-training), else the in-domain gain.",
                    tables=[("Mean per model size, measure, kind and domain", summary)]),
            studies.draw_gain_forgetting(gf, figs_dir, formats=args.formats))
    else:
        skipped.append("midtraining vs continued pretraining: needs done runs of both kinds with matched baselines")

    up = studies.upsample_table(runs, coords)
    if len(up):
        table_file(up, "upsampling")
        note = (f" {up.attrs['no_baseline']} run-domain pairs have no matched baseline (a mixture=none run with the "
                "same base mix)." if up.attrs.get("no_baseline") else "")
        add(Section("Domain upsampling", "Baseline: mixture=none runs with the same base mix (mixture.base_weights) "
                    "and everything else equal." + note, tables=[("Losses by upsampled fraction", up)]),
            studies.draw_upsample(up, figs_dir, formats=args.formats))
    elif C.KIND in runs and (runs[C.KIND] == C.KIND_UPSAMPLE).any():
        skipped.append("domain upsampling: no done upsample_end run upsamples a domain")

    rw = studies.rewarm_curves(runs, sweep.curves, coords)
    if len(rw):
        table_file(rw, "rewarm_curves")
        add(Section("Re-warming"), studies.draw_rewarm(rw, figs_dir, formats=args.formats))

    for (domain, size), fit in laws.fit_groups(runs, level=args.level).items():
        name = f"reuse_law_{domain}_{size}"
        table_file(fit.table(), name)
        add(Section(f"Model-reuse law: {domain}, {size}", f"L(D1, D2) = A·D1^(−α1)·D2^(−α2 + α3·ln D1) + E, "
                    f"{len(fit.data)} runs, {fit.level:.0%} {fit.method}s (the values at which the refitted cost "
                    "stays within the t quantile; an open end: the data do not bound it, not identified).",
                    tables=[("Parameters", fit.table())]),
            laws.draw_law_fit(fit, f"({domain}, {size})", figs_dir, name, formats=args.formats))

    scores = downstream.downstream_curves(runs, sweep.downstream, coords)
    if len(scores):
        table_file(scores, "downstream_curves")
        add(Section("Downstream evaluation", "Scores of `midsweep evaluate` (lm-eval) on the runs' checkpoints "
                    "against training tokens; one line per setting of the coordinates that vary among the "
                    "evaluated runs, seed mean ± std.", tables=[("Scores", scores)]),
            downstream.draw_downstream(scores, figs_dir, formats=args.formats))

    if args.corpus:
        corpora = dict(c.split("=", 1) for c in args.corpus)
        prox = proximity_with_gains(proximity.proximity_table(corpora, args.target_corpus, args.general_corpus), gf)
        table_file(prox, "proximity")
        sections.append(Section("Proximity", "Distance: mean unigram/bigram Jensen-Shannon divergence (bits) to "
                                "the target corpus, every corpus sampled to the same number of tokens; advantage = "
                                "dist(general→target) − dist(corpus→target). Gains: mean per mixture kind and "
                                "model size (never pooled), the post-training target gain when post-training ran.",
                                tables=[("Proximity and gains", prox)]))

    report = write_report(out, args.sweeps, runs, sections, sweep.problems, skipped, without_baseline(runs),
                          coords=sweep.coords)
    return {"tables": tables, "figures": figures, "report": report, "problems": sweep.problems}


def proximity_with_gains(prox, gains):
    """The proximity table with, per corpus (a domain), the mean gain of each (mixture kind, model size, gain
    measure) that trained on it: one row each."""
    if gains.empty:
        return prox
    summary = studies.gain_forgetting_summary(gains).rename(columns={C.DOMAIN: "corpus"})
    return prox.merge(summary, on="corpus", how="left")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = analyze(args)
    except (SweepError, FileNotFoundError) as e:  # user errors: a message, not a traceback
        print(f"midsweep-analyze: {e}", file=sys.stderr)
        return 2
    print("tables:")
    for p in result["tables"]:
        print(f"  {p}")
    print("figures:")
    for p in result["figures"]:
        print(f"  {p}")
    print(f"report: {result['report']}")
    if result["problems"]:
        print(f"{len(result['problems'])} problem(s) reading the sweep, also listed in the report:", file=sys.stderr)
        for problem in result["problems"]:
            print(f"  - {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
