"""Post-training as the papers read it: per pretraining run the post-training LR with the best validation
loss, post-training seeds as seeds, and the plasticity curve of a ``posttrain.after`` sweep (post-training
target loss and forgetting against the point of main training where post-training started). Pure functions
of the runs table (analysis.derived's metrics)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import columns as C
from . import style
from .derived import match_key

SEEDS = (C.SEED, C.POSTTRAIN_SEED)
"""A result's seeds: of the whole run and of its post-training alone."""


def best_posttrain_lr(runs: pd.DataFrame, coords) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``runs`` without the post-training LRs that lost, and the choice per pretraining run (seeds not folded).

    Where one pretraining run (equal coordinates but ``posttrain.lr`` and ``posttrain.seed``) was post-trained
    with several LRs, only the runs of the LR with the lowest post-training validation loss (the target's
    held-out loss after post-training, mean over post-training seeds) are kept, as the papers pick their SFT LR.
    The choice table has the group's coordinates that vary, the chosen LR, its loss and every LR tried."""
    if C.POSTTRAIN_LR not in runs or C.TARGET_LOSS not in runs:
        return runs, pd.DataFrame()
    keys = [c for c in coords if c in runs and c not in (C.POSTTRAIN_LR, C.POSTTRAIN_SEED)]
    group = match_key(runs, keys)
    per_lr = runs.groupby([group, runs[C.POSTTRAIN_LR]])[C.TARGET_LOSS].mean().rename("loss").reset_index()
    per_lr.columns = ["group", C.POSTTRAIN_LR, "loss"]
    tried = per_lr.groupby("group")[C.POSTTRAIN_LR].nunique()
    several = per_lr[per_lr["group"].isin(tried[tried > 1].index) & per_lr["loss"].notna()]
    if several.empty:
        return runs, pd.DataFrame()
    best = several.loc[several.groupby("group")["loss"].idxmin()].set_index("group")
    chosen = group.map(best[C.POSTTRAIN_LR])
    keep = chosen.isna() | (runs[C.POSTTRAIN_LR] == chosen)
    varying = [k for k in keys if runs[k].nunique(dropna=False) > 1]
    first = runs.groupby(group)[varying].first()
    table = first.loc[best.index].reset_index(drop=True)
    table["best posttrain.lr"] = best[C.POSTTRAIN_LR].to_numpy()
    table["validation loss"] = best["loss"].to_numpy()
    table["tried (lr: loss)"] = [", ".join(f"{lr:g}: {loss:.4g}" for lr, loss in zip(g[C.POSTTRAIN_LR], g["loss"]))
                                 for _, g in several.groupby("group")]
    return runs[keep], table


def fold_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Post-training seeds as seeds: where ``posttrain.seed`` varies, ``train.seed`` becomes the pair
    "<train.seed>/<posttrain.seed>", so every mean, spread and interval counts each pair as one seed."""
    if C.SEED not in runs or C.POSTTRAIN_SEED not in runs or runs[C.POSTTRAIN_SEED].nunique(dropna=False) < 2:
        return runs
    runs = runs.copy()
    post = runs[C.POSTTRAIN_SEED].map(lambda v: "" if C.is_missing(v) else f"/{int(v)}")
    runs[C.SEED] = runs[C.SEED].astype(str) + post
    return runs


def mixture_label(run: pd.Series) -> str:
    """One curve's name: "baseline" for the no-introduction run, else its mixture (domain, time, weight)."""
    if run.get(C.KIND) == C.KIND_NONE:
        return "baseline"
    parts = [str(run[k]) if k == C.DOMAIN else f"{k.split('.')[-1]}={run[k]:g}"
             for k in (C.DOMAIN, C.INTRODUCE_AT, C.WEIGHT) if k in run and not C.is_missing(run[k])]
    return " ".join(parts) or str(run.get(C.KIND))


def plasticity_curve(runs: pd.DataFrame) -> pd.DataFrame:
    """Per mixture and ``posttrain.after``: post-training target loss and forgetting, mean and seed std over
    done runs, and the seeds done. Empty unless several ``posttrain.after`` were run."""
    if C.POSTTRAIN_AFTER not in runs:
        return pd.DataFrame()
    done = runs[(runs[C.STATUS] == C.DONE) & runs[C.TARGET_LOSS].notna()]
    if done[C.POSTTRAIN_AFTER].nunique() < 2:
        return pd.DataFrame()
    label = done.apply(mixture_label, axis=1).rename("mixture")
    size = done[C.SIZE] if C.SIZE in done and done[C.SIZE].nunique() > 1 else None
    keys = [label] + ([size] if size is not None else []) + [done[C.POSTTRAIN_AFTER]]
    stats = done.groupby(keys)[[C.TARGET_LOSS, C.FORGETTING]].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats["n_seeds"] = done.groupby(keys).size()
    return stats.reset_index()


def draw_plasticity_curve(table: pd.DataFrame, out_dir, name: str = "plasticity_curve", formats=style.FORMATS):
    """Two panels (target loss, forgetting) against the start of post-training; a line per mixture, the band
    one seed std either side."""
    fig, axes = style.figure(1, 2, panel=(4.2, 3.3))
    curves = [c for c in table.columns if c not in (C.POSTTRAIN_AFTER,) and not c.endswith(("_mean", "_std"))
              and c != "n_seeds"]
    for ax, metric in zip(axes[0], (C.TARGET_LOSS, C.FORGETTING)):
        for i, (key, g) in enumerate(table.groupby(curves, sort=False)):
            g = g.sort_values(C.POSTTRAIN_AFTER)
            x, y, s = g[C.POSTTRAIN_AFTER], g[f"{metric}_mean"], g[f"{metric}_std"].fillna(0)
            baseline = "baseline" in np.atleast_1d(key)
            ax.plot(x, y, marker="o", ms=4, color="black" if baseline else style.color(i), ls="--" if baseline else "-",
                    label=" ".join(map(str, np.atleast_1d(key))))
            ax.fill_between(x, y - s, y + s, color="black" if baseline else style.color(i), alpha=0.15, lw=0)
        ax.set_xlabel("start of post-training (fraction of main training)")
        ax.set_ylabel(C.SHORT_LABELS[metric])
    axes[0][1].axhline(0, color="grey", lw=0.8)
    axes[0][0].legend(title="mixture", fontsize=7)
    fig.suptitle("plasticity curve: post-training from the main run's state at each point; mean ± seed std",
                 fontsize=9)
    return style.save(fig, out_dir, name, formats)
