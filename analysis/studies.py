"""Figures of the other studies: midtraining vs continued pretraining (gain against forgetting),
domain upsampling (losses against the upsampled fraction) and LR re-warming (loss curves by LR setting and
starting checkpoint). Each has a ``*_table`` (the data behind it, tested) and a ``draw_*`` function.
Nothing here averages runs of different mixture kinds or model sizes into one number."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from . import columns as C
from . import style
from .derived import baseline_values

NOT_HELD = {C.SEED, C.INTRODUCE_TOKENS, C.INTRODUCE_AT}
# The LR axes of a re-warming study: the max LR and warmup of the run, and of the re-warm at the boundary.
LR_AXES = (C.LR, C.REWARM_LR)
WARMUP_AXES = (C.WARMUP, C.REWARM_WARMUP)
GAIN, GAIN_MEASURE = "gain", "gain_measure"


def hold_fixed(runs: pd.DataFrame, coords, vary) -> tuple[pd.DataFrame, dict]:
    """The runs of one study: among the groups of runs that agree on every coordinate outside ``vary``
    (and seed), the group spanning the most settings of ``vary``; so a curve never averages runs that
    differ in something else. Returns those runs and the values held fixed."""
    others = [c for c in coords if c not in vary and c not in NOT_HELD and c in runs
              and runs[c].nunique(dropna=False) > 1]
    if not others:
        return runs, {}
    vary = [c for c in vary if c in runs]
    keyed = runs[others].astype(object).where(runs[others].notna(), "null")
    groups = list(runs.groupby([keyed[c] for c in others], sort=False))
    key, best = max(groups, key=lambda kg: (kg[1][vary].drop_duplicates().shape[0], len(kg[1])))
    key = key if isinstance(key, tuple) else (key,)
    return best, dict(zip(others, key))


def _held_text(held: dict) -> str:
    return ", ".join(f"{k.removeprefix('mixture.')}={v}" for k, v in held.items())


# ---- midtraining vs continued pretraining (S1)


def gain_forgetting_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per done midtraining (heatmap kinds) or continued-pretraining run with a matched baseline:
    its gain and its forgetting. When post-training ran, the gain is the post-training target gain and the
    forgetting the general loss after post-training (against a post-trained baseline); otherwise the gain is
    the in-domain (midtraining domain) gain. ``gain_measure`` says which."""
    kind = runs.get(C.KIND)
    done = runs[(runs[C.STATUS] == C.DONE) & kind.notna() & ~kind.isin([C.KIND_NONE, C.KIND_UPSAMPLE])]
    post = done[C.TARGET_LOSS].notna()
    out = done.assign(**{GAIN: np.where(post, done[C.TARGET_GAIN], done[C.IN_DOMAIN_GAIN]),
                         GAIN_MEASURE: np.where(post, "target gain after post-training", "in-domain gain")})
    cols = [C.RUN_ID, C.KIND, C.DOMAIN, C.INTRODUCE_AT, C.WEIGHT, C.SIZE, C.POSTTRAIN, C.SEED, GAIN_MEASURE, GAIN,
            C.FORGETTING]
    return out[[c for c in cols if c in out]].dropna(subset=[GAIN, C.FORGETTING]).reset_index(drop=True)


def gain_forgetting_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean gain and forgetting per (model size, gain measure, kind, domain): never pooled across kinds or
    model sizes."""
    keys = [c for c in (C.SIZE, GAIN_MEASURE, C.KIND, C.DOMAIN) if c in table]
    out = table.groupby(keys, dropna=False)[[GAIN, C.FORGETTING]].agg(["mean", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index().rename(columns={f"{GAIN}_count": "runs"}).drop(columns=f"{C.FORGETTING}_count")


def draw_gain_forgetting(table: pd.DataFrame, out_dir, name: str = "midtrain_vs_continued", formats=style.FORMATS):
    """One panel per (model size, gain measure), a point per run saying what it is: marker = mixture kind (and
    domain), colour = introduction time, size = mixture weight; a thin line joins one time's weights."""
    keys = [c for c in (C.SIZE, GAIN_MEASURE) if c in table]
    panels = list(table.groupby(keys, dropna=False, sort=True))
    fig, axes = style.figure(1, len(panels), panel=(6.4, 4.0))
    kinds = list(table[[C.KIND, C.DOMAIN]].drop_duplicates().sort_values([C.KIND, C.DOMAIN]).itertuples(index=False))
    times = sorted(table[C.INTRODUCE_AT].dropna().unique()) if C.INTRODUCE_AT in table else []
    weights = sorted(table[C.WEIGHT].dropna().unique()) if C.WEIGHT in table else []
    one_domain = table[C.DOMAIN].nunique() <= 1
    for ax, (key, panel) in zip(axes[0], panels):
        key = key if isinstance(key, tuple) else (key,)
        for k, (kind, domain) in enumerate(kinds):
            d = panel[(panel[C.KIND] == kind) & (panel[C.DOMAIN] == domain)]
            t = d[C.INTRODUCE_AT] if C.INTRODUCE_AT in d else pd.Series(np.nan, index=d.index)
            w = d[C.WEIGHT] if C.WEIGHT in d else pd.Series(np.nan, index=d.index)
            colours = [_time_colour(v, times) for v in t]
            sizes = [_weight_size(v, weights) for v in w]
            ax.scatter(d[C.FORGETTING], d[GAIN], s=sizes, c=colours, marker=style.marker(k),
                       edgecolors="black", linewidths=0.5, zorder=3)
            for tv, g in d.assign(_t=t, _w=w).dropna(subset=["_t", "_w"]).groupby("_t"):
                g = g.sort_values("_w")
                ax.plot(g[C.FORGETTING], g[GAIN], "-", lw=0.8, color=_time_colour(tv, times), zorder=2)
        ax.axvline(0, color="0.6", lw=0.8, zorder=1)
        ax.axhline(0, color="0.6", lw=0.8, zorder=1)
        ax.set_xlabel(f"forgetting: general loss − baseline ({C.LOSS_UNIT})\n← less forgetting")
        ax.set_ylabel(f"{key[-1]} over baseline ({C.LOSS_UNIT})\nbetter ↑")
        ax.set_title(", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys[:-1], key[:-1])))
        handles = ([Line2D([], [], ls="", marker=style.marker(k), color="0.5", mec="black",
                           label=kind if one_domain else f"{kind}, {domain}") for k, (kind, domain) in enumerate(kinds)]
                   + [Line2D([], [], ls="", marker="o", color=_time_colour(v, times), label=f"t = {v:g} (introduction)")
                      for v in times]
                   + [Line2D([], [], ls="", marker="o", color="0.8", mec="black", ms=np.sqrt(_weight_size(v, weights)),
                             label=f"weight {v:g}") for v in weights])
        style.legend(ax, handles=handles)
    fig.suptitle("midtraining vs continued pretraining: one point per run", fontsize=9)
    return style.save(fig, out_dir, name, formats)


def _time_colour(t, times):
    """An introduction time's colour on the sequential map (light = late); grey without a time."""
    if C.is_missing(t) or not times:
        return "0.6"
    return style.plt.get_cmap(style.SEQUENTIAL)(0.85 * times.index(t) / max(1, len(times) - 1))


def _weight_size(w, weights) -> float:
    """A mixture weight's marker area (points²); a run without a weight gets the middle size."""
    if C.is_missing(w) or len(weights) < 2:
        return 40.0
    return 15.0 + 85.0 * weights.index(w) / (len(weights) - 1)


# ---- domain upsampling (S3)


def upsampled_domains(run: pd.Series) -> list[str]:
    """The domains an upsample_end run gives more weight at the end than in its base mix."""
    ups = {k.removeprefix(C.UPSAMPLE_WEIGHTS): v for k, v in run.items()
           if k.startswith(C.UPSAMPLE_WEIGHTS) and not C.is_missing(v)}
    base = {k.removeprefix(C.BASE_WEIGHTS): v for k, v in run.items()
            if k.startswith(C.BASE_WEIGHTS) and not C.is_missing(v)}
    return sorted(d for d, w in ups.items() if w > base.get(d, 0.0))


def upsample_table(runs: pd.DataFrame, coords) -> pd.DataFrame:
    """Per upsampled domain and upsampled fraction: mean and seed std of that domain's loss and of the
    general loss, and the matched baseline's (``baseline_in_domain``, ``baseline_general_loss``): the
    ``mixture=none`` runs with the same base mix and everything else equal (NaN without one)."""
    if C.KIND not in runs or C.UPSAMPLE_FRACTION not in runs:
        return pd.DataFrame()
    ups = runs[(runs[C.KIND] == C.KIND_UPSAMPLE) & (runs[C.STATUS] == C.DONE)]
    if ups.empty:
        return pd.DataFrame()
    ups, held = hold_fixed(ups, coords, [C.UPSAMPLE_FRACTION])
    finals = [c for c in runs if c.startswith(C.FINAL_PREFIX)]
    base = baseline_values(runs, finals, coords).loc[ups.index]
    rows = []
    for i, run in ups.iterrows():
        for d in upsampled_domains(run):
            rows.append({C.DOMAIN: d, "fraction": run[C.UPSAMPLE_FRACTION], C.IN_DOMAIN: run.get(C.final(d)),
                         C.GENERAL_LOSS: run.get(C.final(C.GENERAL)),
                         "baseline_in_domain": base.at[i, C.final(d)] if C.final(d) in base else np.nan,
                         "baseline_general_loss": base.at[i, C.final(C.GENERAL)],
                         C.N_BASELINE: base.at[i, C.N_BASELINE]})
    if not rows:
        return pd.DataFrame()
    long = pd.DataFrame(rows)
    out = long.groupby([C.DOMAIN, "fraction"])[[C.IN_DOMAIN, C.GENERAL_LOSS]].agg(["mean", "std", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out = out.join(long.groupby([C.DOMAIN, "fraction"])[["baseline_in_domain", "baseline_general_loss"]].mean())
    out = out.reset_index()
    out.attrs.update(held=held, no_baseline=int((long[C.N_BASELINE] == 0).sum()))
    return out


def draw_upsample(table: pd.DataFrame, out_dir, name: str = "upsampling", formats=style.FORMATS):
    fig, axes = style.figure(1, 2, panel=(4.8, 3.4))
    for ax, metric, what in zip(axes[0], (C.IN_DOMAIN, C.GENERAL_LOSS), ("upsampled domain's", "general")):
        for i, (domain, g) in enumerate(table.groupby(C.DOMAIN)):
            ax.errorbar(g["fraction"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"], fmt="-", ms=4,
                        marker=style.marker(i), capsize=2, color=style.color(i), label=str(domain))
            base = g[f"baseline_{metric}"].mean()
            if base == base:
                ax.axhline(base, color=style.color(i), ls="--", lw=1, label=f"{domain}: same base mix, no upsampling")
        ax.set_xlabel("upsampled fraction (fraction of training)")
        ax.set_ylabel(f"{what} loss ({C.LOSS_UNIT})")
    style.legend(axes[0, -1], title="domain")  # the same entries in both panels: once
    held = _held_text(table.attrs.get("held", {}))
    fig.suptitle("domain upsampling: upsampled domain (left) and general (right) loss, mean ± seed std"
                 + (f"\n{held}" if held else ""), fontsize=9)
    return style.save(fig, out_dir, name, formats)


# ---- re-warming (S4)


def _start_label(value) -> str:
    """A starting checkpoint (train.init_from) in a few characters: its run directory's name."""
    return "scratch" if C.is_missing(value) else os.path.basename(str(value).rstrip("/")) or str(value)


def rewarm_curves(runs: pd.DataFrame, curves: pd.DataFrame, coords) -> pd.DataFrame:
    """Seed-averaged loss curves of the runs that vary the LR (max LR, warmup, re-warm LR, re-warm warmup):
    per (domain studied, starting checkpoint, stream, LR setting, tokens) the upstream (general) and
    downstream (the run's domain) loss. Runs differing in any LR axis are different curves, never seeds."""
    cand = runs[(runs[C.STATUS] == C.DONE) & (runs[C.KIND].fillna(C.KIND_NONE) != C.KIND_NONE)] \
        if C.KIND in runs else runs[runs[C.STATUS] == C.DONE]
    axes = [c for c in LR_AXES + WARMUP_AXES if c in cand]

    def settings(g):
        return g[axes].astype(object).where(g[axes].notna(), "null").drop_duplicates().shape[0]

    if not axes or cand.empty or settings(cand) < 2:
        return pd.DataFrame()
    # The kind with the most LR settings is the re-warming study.
    kind = max(cand.groupby(C.KIND), key=lambda kg: settings(kg[1]))[0]
    cand, held = hold_fixed(cand[cand[C.KIND] == kind], coords, axes + [C.DOMAIN, C.INIT_FROM])
    vary = [c for c in axes if cand[c].nunique(dropna=False) > 1]
    start = cand[C.INIT_FROM].map(_start_label) if C.INIT_FROM in cand else "scratch"
    info = cand[[C.RUN_ID, C.SWEEP, C.DOMAIN] + vary].rename(columns={C.DOMAIN: "studied"}).assign(start=start)
    cur = curves.merge(info, on=[C.RUN_ID, C.SWEEP])
    cur["stream"] = np.where(cur["domain"] == C.GENERAL, "upstream",
                             np.where(cur["domain"] == cur["studied"], "downstream", ""))
    cur = cur[cur["stream"] != ""]
    out = cur.groupby(["studied", "start", "stream"] + vary + ["tokens"], dropna=False)["loss"].agg(
        ["mean", "std", "count"]).reset_index()
    out.attrs.update(held={**held, C.KIND: kind}, vary=vary)
    return out


def draw_rewarm(table: pd.DataFrame, out_dir, name: str = "rewarm", formats=style.FORMATS):
    """One row per (domain studied, starting checkpoint); upstream and downstream loss against tokens, one
    line per LR setting: colour = (re-warm) max LR, line style = warmup."""
    vary = table.attrs["vary"]
    rows = list(table[["studied", "start"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = style.figure(len(rows), 2, panel=(5.4, 3.4))
    lr_axes = [c for c in vary if c in LR_AXES]
    settings = table[vary].drop_duplicates().sort_values(vary).itertuples(index=False, name=None)
    settings = list(settings)
    lr_values = sorted({tuple(s[vary.index(c)] for c in lr_axes) for s in settings}, key=str)
    cmap = style.plt.get_cmap(style.SEQUENTIAL)
    for r, (dom, start) in enumerate(rows):
        for ax, stream in zip(axes[r], ("upstream", "downstream")):
            sel = table[(table["studied"] == dom) & (table["start"] == start) & (table["stream"] == stream)]
            for setting in settings:
                g = sel
                for c, v in zip(vary, setting):
                    g = g[g[c] == v]
                if g.empty:
                    continue
                lr_key = tuple(setting[vary.index(c)] for c in lr_axes)
                i = lr_values.index(lr_key)
                wu = [setting[vary.index(c)] for c in vary if c in WARMUP_AXES]
                j = sorted({s[vary.index(c)] for s in settings for c in vary if c in WARMUP_AXES}).index(wu[0]) \
                    if wu else 0
                label = ", ".join(f"{c.split('.')[-1]}={v:g}" for c, v in zip(vary, setting))
                ax.plot(g["tokens"], g["mean"], ls=style.LINESTYLES[j % 4], marker=".", ms=3, label=label,
                        color=cmap(0.8 * i / max(1, len(lr_values) - 1)))  # viridis' last yellow is faint on white
            what = "general" if stream == "upstream" else dom
            ax.set_xlabel(C.TOKENS_LABEL)
            ax.set_ylabel(f"{what} loss ({C.LOSS_UNIT})")
            ax.set_title(f"{stream}: {what} (studied: {dom}; from {start})")
        style.legend(axes[r, 1], fontsize=6)
    held = _held_text(table.attrs["held"])
    fig.suptitle("re-warming: loss curves by max LR (colour) and warmup (line style), seed mean; one row per "
                 "starting checkpoint" + (f"\n{held}" if held else ""), fontsize=9)
    return style.save(fig, out_dir, name, formats)
