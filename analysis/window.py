"""The plasticity window: for each introduction time the best weight and its loss, and where the window
closes: the introduction time after which the best achievable loss stays worse than the earliest
introduction's by more than a margin. The interval comes from a bootstrap over seeds (each resample
draws whole seeds, so a seed's shared luck moves all its cells together)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import columns as C
from analysis import style
from analysis.derived import add_metrics
from analysis.heatmaps import AXES, draw_best_line, draw_panel, facet_panels, grid_of, heatmap_runs, heatmap_table


def best_per_time(table: pd.DataFrame) -> pd.DataFrame:
    """Per facet and introduction time: the best weight, its mean loss, seed std and seeds done."""
    facets = table.attrs.get("facets", [])
    have = table[table["n_done"] > 0]
    idx = have.groupby(facets + [C.INTRODUCE_AT], dropna=False)["mean"].idxmin()
    out = have.loc[idx, facets + AXES + ["mean", "std", "n_done"]].rename(
        columns={C.WEIGHT: "best_weight", "mean": "best_loss"})
    return out.sort_values(facets + [C.INTRODUCE_AT]).reset_index(drop=True)


def window_close(times, best, margin: float) -> float:
    """The introduction time (linearly interpolated between grid times) after which ``best`` stays above
    the earliest time's value + ``margin``; NaN when the window is still open at the last time."""
    times, best = np.asarray(times, float), np.asarray(best, float)
    ok = np.isfinite(best)
    times, best = times[ok], best[ok]
    if len(best) < 2:
        return np.nan
    excess = best - best[0] - margin
    closed = excess > 0
    if not closed[-1]:
        return np.nan
    j = len(closed) - np.argmin(closed[::-1])  # first index from which every later time is closed

    t0, t1, e0, e1 = times[j - 1], times[j], excess[j - 1], excess[j]
    return float(t0 + (0 - e0) / (e1 - e0) * (t1 - t0))


def _seed_cube(runs: pd.DataFrame, metric: str, times, weights):
    """values[time, weight, seed] of done runs (NaN where none), and the seeds."""
    done = runs[(runs[C.STATUS] == C.DONE) & runs[metric].notna()]
    seeds = np.sort(runs[C.SEED].dropna().unique()) if C.SEED in runs else np.array([0])
    cube = np.full((len(times), len(weights), len(seeds)), np.nan)
    if len(done):
        s = np.searchsorted(seeds, done[C.SEED]) if C.SEED in done else np.zeros(len(done), int)
        cube[np.searchsorted(times, done[C.INTRODUCE_AT]), np.searchsorted(weights, done[C.WEIGHT]), s] = done[metric]
    return cube, seeds


def bootstrap_close(cube: np.ndarray, times, margin: float, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Window-close estimates of ``n_boot`` resamples of the seeds (NaN where the window stays open)."""
    n_seeds = cube.shape[2]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n_seeds, n_seeds), minlength=n_seeds) for _ in range(n_boot)])
    valid = np.isfinite(cube)
    total = np.einsum("tws,bs->btw", np.where(valid, cube, 0.0), counts)
    n = np.einsum("tws,bs->btw", valid.astype(float), counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n > 0, total / n, np.inf)
    best = means.min(axis=2)
    best[~np.isfinite(best)] = np.nan
    return np.array([window_close(times, b, margin) for b in best])


def window_estimates(runs: pd.DataFrame, metric: str, margin: float, n_boot: int = 1000, level: float = 0.9,
                     coords=None, seed: int = 0) -> pd.DataFrame:
    """Per facet: where the window closes (``close``; NaN = open through the last time), its bootstrap
    interval over seeds (``low``, ``high``), the share of resamples where it stays open, the reference
    (earliest-time) best loss and the margin."""
    if metric not in runs:
        runs = add_metrics(runs)
    table = heatmap_table(runs, metric, coords)
    facets = table.attrs["facets"]
    best = best_per_time(table)
    grid_runs = heatmap_runs(runs)
    rows = []
    for key, cells in (table.groupby(facets, dropna=False) if facets else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        times, weights, m, _, _ = grid_of(cells)
        sel = grid_runs
        for f, v in zip(facets, key):
            sel = sel[sel[f] == v]
        b = best.merge(pd.DataFrame([key], columns=facets), on=facets) if facets else best
        curve = b.set_index(C.INTRODUCE_AT)["best_loss"].reindex(times).to_numpy()
        close = window_close(times, curve, margin)
        cube, seeds = _seed_cube(sel, metric, times, weights)
        # One seed has no seed spread to resample: no interval (NaN) rather than a zero-width one.
        boots = bootstrap_close(cube, times, margin, n_boot, seed) if len(seeds) > 1 else np.array([np.nan])
        closed = boots[np.isfinite(boots)]
        q = (1 - level) / 2
        rows.append({**dict(zip(facets, key)), "close": close,
                     "low": np.quantile(closed, q) if len(closed) else np.nan,
                     "high": np.quantile(closed, 1 - q) if len(closed) else np.nan,
                     "open_share": 1 - len(closed) / len(boots) if len(seeds) > 1 else np.nan, "n_seeds": len(seeds),
                     "ref_loss": curve[np.isfinite(curve)][0] if np.isfinite(curve).any() else np.nan,
                     "margin": margin, "level": level})
    out = pd.DataFrame(rows)
    out.attrs.update(metric=metric, facets=facets)
    return out


def draw_window(table: pd.DataFrame, estimates: pd.DataFrame, out_dir, name: str = "plasticity_window",
                formats=style.FORMATS):
    """Per facet: the heatmap with the best-weight-vs-time curve over it, and the best loss against
    introduction time with the closing estimate and its interval."""
    metric, facets = table.attrs["metric"], table.attrs["facets"]
    best = best_per_time(table)
    panels = list(facet_panels(table))
    fig, axes = style.figure(len(panels), 2, panel=(max(3.8, 0.5 * table[C.INTRODUCE_AT].nunique() + 1.6), 3.3))
    for row, (_, _, title, cells) in enumerate(panels):
        ax, ax2 = axes[row]
        key = tuple(cells[facets].iloc[0]) if facets else ()
        b = best.merge(pd.DataFrame([key], columns=facets), on=facets) if facets else best
        est = estimates.merge(pd.DataFrame([key], columns=facets), on=facets).iloc[0] if facets else estimates.iloc[0]
        times, weights, m, _, _ = grid_of(cells)
        norm = style.norm_for(cells["mean"].tolist(), metric == C.FORGETTING)
        im = draw_panel(ax, cells, norm, style.DIVERGING if metric == C.FORGETTING else style.SEQUENTIAL,
                        annotate=False)
        fig.colorbar(im, ax=ax, shrink=0.85, label=C.SHORT_LABELS.get(metric, metric))
        draw_best_line(ax, np.searchsorted(times, b[C.INTRODUCE_AT]), np.searchsorted(weights, b["best_weight"]))
        ax.set_title(f"{title}\nbest weight per introduction time")
        ax2.errorbar(b[C.INTRODUCE_AT], b["best_loss"], yerr=b["std"].fillna(0), fmt="-o", ms=4,
                     color=style.color(0), capsize=2, label="best loss (± seed std)")
        ax2.axhline(est["ref_loss"] + est["margin"], color="0.4", ls="--", lw=1,
                    label=f"earliest + margin ({est['margin']:g})")
        if np.isfinite(est["close"]):
            ax2.axvline(est["close"], color=style.color(3), lw=1.5, label=f"window closes ≈ {est['close']:.3g}")
            if np.isfinite(est["low"]):
                ax2.axvspan(est["low"], est["high"], color=style.color(3), alpha=0.15,
                            label=f"{est['level']:.0%} bootstrap over {est['n_seeds']} seeds")
            ax2.set_title(f"closes at t ≈ {est['close']:.3g} [{est['low']:.3g}, {est['high']:.3g}]")
        else:
            ax2.set_title(f"open through t = {times[-1]:g}")
        ax2.set_xlabel("introduction time (fraction of training)")
        ax2.set_ylabel(f"best {C.SHORT_LABELS.get(metric, metric)}")
        ax2.legend(fontsize=7)
    return style.save(fig, out_dir, name, formats)
