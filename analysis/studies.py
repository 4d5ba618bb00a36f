"""Figures of the other studies: midtraining vs continued pretraining (gain against forgetting),
domain upsampling (metrics against the upsampled fraction) and LR re-warming (loss curves by max LR and
warmup). Each has a ``*_table`` (the data behind it, tested) and a ``draw_*`` function."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import columns as C
from analysis import style

NOT_HELD = {C.SEED, C.INTRODUCE_TOKENS, C.INTRODUCE_AT}


def hold_fixed(runs: pd.DataFrame, coords, vary) -> tuple[pd.DataFrame, dict]:
    """The runs of one study: among the groups of runs that agree on every coordinate outside ``vary``
    (and seed), the group spanning the most settings of ``vary``; so a curve never averages runs that
    differ in something else. Returns those runs and the values held fixed."""
    others = [c for c in coords if c not in vary and c not in NOT_HELD and c in runs and runs[c].nunique() > 1]
    if not others:
        return runs, {}
    vary = [c for c in vary if c in runs]
    groups = list(runs.groupby(others, dropna=False))
    key, best = max(groups, key=lambda kg: (kg[1][vary].drop_duplicates().shape[0], len(kg[1])))
    key = key if isinstance(key, tuple) else (key,)
    return best, {c: v for c, v in zip(others, key) if v == v}


def _held_text(held: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in held.items())


def gain_forgetting_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per done midtraining (heatmap kinds) or continued-pretraining run with its in-domain gain
    over the baseline and its forgetting."""
    done = runs[(runs[C.STATUS] == C.DONE) & runs[C.KIND].notna() & (runs[C.KIND] != C.KIND_NONE)
                & (runs[C.KIND] != C.KIND_UPSAMPLE)]
    cols = [C.RUN_ID, C.KIND, C.DOMAIN, C.IN_DOMAIN_GAIN, C.FORGETTING]
    return done[[c for c in cols if c in done]].dropna(subset=[C.IN_DOMAIN_GAIN, C.FORGETTING])


def draw_gain_forgetting(table: pd.DataFrame, out_dir, name: str = "midtrain_vs_continued", formats=style.FORMATS):
    fig, axes = style.figure(1, 1, panel=(4.8, 3.8))
    ax = axes[0, 0]
    domains = sorted(table[C.DOMAIN].dropna().unique())
    for i, (kind, g) in enumerate(table.groupby(C.KIND)):
        for j, domain in enumerate(domains):
            d = g[g[C.DOMAIN] == domain]
            if len(d):
                ax.scatter(d[C.FORGETTING], d[C.IN_DOMAIN_GAIN], s=18, alpha=0.8, color=style.color(i),
                           marker=style.MARKERS[j % len(style.MARKERS)], label=f"{kind}, {domain}")
    ax.axvline(0, color="0.6", lw=0.8)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("forgetting: general loss − baseline (lower is better)")
    ax.set_ylabel("in-domain gain over baseline (higher is better)")
    ax.set_title("midtraining vs continued pretraining: one point per run")
    ax.legend(fontsize=7)
    return style.save(fig, out_dir, name, formats)


def upsample_table(runs: pd.DataFrame, coords) -> pd.DataFrame:
    """Per domain and upsampled fraction: mean and seed std of the targeted (in-domain) and general losses,
    and the matching no-introduction baseline's (``baseline_in_domain``, ``baseline_general_loss``; NaN
    without a done ``mixture.kind=none`` run)."""
    frac = C.upsample_column(coords)
    ups = runs[(runs[C.KIND] == C.KIND_UPSAMPLE) & (runs[C.STATUS] == C.DONE)]
    if frac is None or ups.empty:
        return pd.DataFrame()
    ups, held = hold_fixed(ups, coords, [frac, C.DOMAIN])
    # Each run's matched no-introduction baseline, recovered from the derived gain and forgetting.
    ups = ups.assign(baseline_in_domain=ups[C.IN_DOMAIN] + ups[C.IN_DOMAIN_GAIN],
                     baseline_general_loss=ups[C.GENERAL_LOSS] - ups[C.FORGETTING])
    out = (ups.groupby([C.DOMAIN, frac])[[C.IN_DOMAIN, C.GENERAL_LOSS]].agg(["mean", "std", "count"]))
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    base = ups.groupby([C.DOMAIN, frac])[["baseline_in_domain", "baseline_general_loss"]].mean()
    out = out.join(base).reset_index().rename(columns={frac: "fraction"})
    out.attrs.update(held=held, fraction=frac)
    return out


def draw_upsample(table: pd.DataFrame, out_dir, name: str = "upsampling", formats=style.FORMATS):
    fig, axes = style.figure(1, 2, panel=(4.0, 3.2))
    for ax, metric in zip(axes[0], (C.IN_DOMAIN, C.GENERAL_LOSS)):
        for i, (domain, g) in enumerate(table.groupby(C.DOMAIN)):
            ax.errorbar(g["fraction"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"].fillna(0), fmt="-o", ms=4,
                        capsize=2, color=style.color(i), label=str(domain))
            base = g[f"baseline_{metric}"].mean()
            if base == base:
                ax.axhline(base, color=style.color(i), ls="--", lw=1, label=f"{domain}: baseline (no upsampling)")
        ax.set_xlabel(f"upsampled fraction ({table.attrs['fraction']})")
        ax.set_ylabel(C.METRIC_LABELS[metric])
        ax.legend(title="domain")
    held = _held_text(table.attrs["held"])
    fig.suptitle("domain upsampling: targeted (left) and general (right) loss, mean ± seed std"
                 + (f"\n{held}" if held else ""), fontsize=9)
    return style.save(fig, out_dir, name, formats)


def rewarm_curves(runs: pd.DataFrame, curves: pd.DataFrame, coords) -> pd.DataFrame:
    """Seed-averaged loss curves of runs that vary max LR and/or warmup: per (domain studied, lr,
    warmup, tokens) the upstream (general) and downstream (the run's domain) loss."""
    vary = [c for c in (C.LR, C.WARMUP) if c in runs]
    cand = runs[runs[C.KIND].fillna(C.KIND_NONE) != C.KIND_NONE] if C.KIND in runs else runs
    cand = cand[(cand[C.STATUS] == C.DONE) & cand[vary].notna().all(axis=1)] if vary else cand
    if not vary or cand[vary].drop_duplicates().shape[0] < 2:
        return pd.DataFrame()
    # The kind with the most (lr, warmup) settings is the re-warming study.
    kind = cand.groupby(C.KIND).apply(lambda g: g[vary].drop_duplicates().shape[0], include_groups=False).idxmax()
    cand, held = hold_fixed(cand[cand[C.KIND] == kind], coords, vary + [C.DOMAIN])
    cur = curves.merge(cand[[C.RUN_ID, C.SWEEP, C.DOMAIN] + vary].rename(columns={C.DOMAIN: "studied"}),
                       on=[C.RUN_ID, C.SWEEP])
    cur["stream"] = np.where(cur["domain"] == C.GENERAL, "upstream", np.where(cur["domain"] == cur["studied"],
                                                                             "downstream", ""))
    cur = cur[cur["stream"] != ""]
    out = cur.groupby(["studied", "stream"] + vary + ["tokens"], dropna=False)["loss"].agg(["mean", "std"]).reset_index()
    out.attrs.update(held={**held, C.KIND: kind}, vary=vary)
    return out


def draw_rewarm(table: pd.DataFrame, out_dir, name: str = "rewarm", formats=style.FORMATS):
    vary = table.attrs["vary"]
    studied = sorted(table["studied"].dropna().unique())
    fig, axes = style.figure(len(studied), 2, panel=(4.2, 3.2))
    lrs = sorted(table[C.LR].dropna().unique()) if C.LR in vary else [None]
    warmups = sorted(table[C.WARMUP].dropna().unique()) if C.WARMUP in vary else [None]
    cmap = style.plt.get_cmap(style.SEQUENTIAL)
    for r, dom in enumerate(studied):
        for ax, stream in zip(axes[r], ("upstream", "downstream")):
            sel = table[(table["studied"] == dom) & (table["stream"] == stream)]
            for i, lr in enumerate(lrs):
                for j, wu in enumerate(warmups):
                    g = sel
                    if lr is not None:
                        g = g[g[C.LR] == lr]
                    if wu is not None:
                        g = g[g[C.WARMUP] == wu]
                    if g.empty:
                        continue
                    label = ", ".join(s for s in (lr is not None and f"lr={lr:g}", wu is not None and f"warmup={wu:g}") if s)
                    ax.plot(g["tokens"], g["mean"], ls=style.LINESTYLES[j % 4], marker=".", ms=3, label=label,
                            color=cmap(0.9 * i / max(1, len(lrs) - 1)))
            ax.set_xlabel("training tokens")
            ax.set_ylabel(f"{'general' if stream == 'upstream' else dom} loss")
            ax.set_title(f"{stream}: {'general' if stream == 'upstream' else dom} (studied: {dom})")
        axes[r, 1].legend(fontsize=6)
    held = _held_text(table.attrs["held"])
    fig.suptitle("re-warming: loss curves by max LR (colour) and warmup (line style), seed mean"
                 + (f"\n{held}" if held else ""), fontsize=9)
    return style.save(fig, out_dir, name, formats)
