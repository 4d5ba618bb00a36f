"""Downstream scores (``midsweep evaluate``: lm-eval tasks on a run's checkpoints) drawn like the losses:
one panel per (task, metric), the score against training tokens, one line per setting of the coordinates that
vary among the evaluated runs, seeds averaged (their spread shaded)."""
from __future__ import annotations

import pandas as pd

from . import columns as C
from . import style

GROUP = ["task", "metric", "filter"]


def downstream_curves(runs: pd.DataFrame, downstream: pd.DataFrame, coords) -> pd.DataFrame:
    """Per (setting, task, metric, filter, step, tokens): mean, std and count of the score over seeds. A
    setting is the run's values of the coordinates that vary among the evaluated runs (the seed aside)."""
    if downstream.empty:
        return pd.DataFrame()
    evaluated = runs[runs.set_index([C.SWEEP, C.RUN_ID]).index.isin(
        downstream.set_index([C.SWEEP, C.RUN_ID]).index.unique())]
    vary = [c for c in coords if c in evaluated and c != C.SEED and evaluated[c].nunique(dropna=False) > 1]
    info = evaluated[[C.SWEEP, C.RUN_ID] + vary].copy()
    info["setting"] = info[vary].apply(lambda r: ", ".join(f"{c.split('.')[-1]}={v}" for c, v in r.items()),
                                       axis=1) if vary else "all runs"
    rows = downstream.merge(info[[C.SWEEP, C.RUN_ID, "setting"]], on=[C.SWEEP, C.RUN_ID])
    out = rows.groupby(["setting", *GROUP, "step", "tokens"], dropna=False)["value"].agg(
        ["mean", "std", "count"]).reset_index()
    out.attrs["vary"] = vary
    return out


def draw_downstream(table: pd.DataFrame, out_dir, name: str = "downstream", formats=style.FORMATS):
    panels = list(table[GROUP].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = style.figure(1, len(panels), panel=(5.6, 3.4))
    for ax, (task, metric, filt) in zip(axes[0], panels):
        sel = table[(table["task"] == task) & (table["metric"] == metric) & (table["filter"] == filt)]
        for i, (setting, g) in enumerate(sel.groupby("setting", sort=True)):
            g = g.sort_values("tokens")
            ax.plot(g["tokens"], g["mean"], marker=style.marker(i), ms=4, color=style.color(i), label=setting)
            spread = g["std"].fillna(0)
            ax.fill_between(g["tokens"], g["mean"] - spread, g["mean"] + spread, color=style.color(i), alpha=0.15)
        ax.set_xlabel(C.TOKENS_LABEL)
        ax.set_ylabel(f"{metric} ({filt})")
        ax.set_title(task, fontsize=8)
        style.legend(ax, fontsize=6)
    fig.suptitle("downstream scores (midsweep evaluate): seed mean ± std", fontsize=9)
    return style.save(fig, out_dir, name, formats)
