"""The plasticity window: for each introduction time the best weight and its loss, and where the window
closes: the introduction time after which the best achievable loss stays worse than the earliest
introduction's by more than a margin.

The interval is a parametric bootstrap: the noise of a cell's seed mean is estimated from the spread of
the seeds around their cell means, pooled over every cell of the facet (after removing each seed's shared
offset, which moves all its cells together and cancels in the window), then cell means are redrawn with
that noise and the whole estimate (best weight per time, close) recomputed. Pooling over cells gives a usable
noise estimate from 2 seeds on; a resample of whole seeds does not (3 seeds have 10 distinct resamples).
With one seed there is no noise estimate and no interval is claimed. A best weight at the edge of the
weight grid is flagged: the optimum may lie outside the grid, and the window is not identified there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import columns as C
from . import style
from .derived import add_metrics
from .heatmaps import AXES, NULL, draw_best_line, draw_panel, facet_panels, grid_of, heatmap_runs, heatmap_table

MIN_SEEDS = 2
"""Seeds needed for an interval (one seed has no spread to estimate the noise from)."""


def of_facet(df: pd.DataFrame, facets: list[str], key: tuple) -> pd.DataFrame:
    """The rows of ``df`` in the facet ``key`` (a null value is the text "null", as in heatmap tables)."""
    mask = pd.Series(True, index=df.index)
    for f, v in zip(facets, key):
        mask &= df[f].astype(object).where(df[f].notna(), NULL) == v
    return df[mask]


def best_per_time(table: pd.DataFrame) -> pd.DataFrame:
    """Per facet and introduction time: the best weight, its mean loss, seed std, seeds done, and ``edge``:
    "largest" / "smallest" where the best weight is the grid's largest / smallest weight."""
    facets = table.attrs.get("facets", [])
    have = table[table["n_done"] > 0]
    idx = have.groupby(facets + [C.INTRODUCE_AT], dropna=False)["mean"].idxmin()
    out = have.loc[idx, facets + AXES + ["mean", "std", "n_done"]].rename(
        columns={C.WEIGHT: "best_weight", "mean": "best_loss"})
    lo, hi = table[C.WEIGHT].min(), table[C.WEIGHT].max()
    out["edge"] = np.where(out["best_weight"] == hi, "largest", np.where(out["best_weight"] == lo, "smallest", ""))
    if lo == hi:
        out["edge"] = "only weight"
    return out.sort_values(facets + [C.INTRODUCE_AT]).reset_index(drop=True)


def window_close_many(times, best, margin: float) -> np.ndarray:
    """:func:`window_close` of every row of ``best`` [replicate, time], vectorised."""
    times, best = np.asarray(times, float), np.atleast_2d(np.asarray(best, float))
    if not np.isfinite(best).all():  # times without a result are skipped per row: one row at a time
        return np.array([window_close(times, b, margin) for b in best])
    out = np.full(len(best), np.nan)
    if len(times) < 2:
        return out
    excess = best - best[:, :1] - margin
    # closed from index j on: j is where the all-closed suffix starts
    suffix = np.flip(np.cumprod(np.flip(excess > 0, axis=1), axis=1), axis=1).astype(bool)
    rows = np.flatnonzero(suffix[:, -1])
    j = np.argmax(suffix[rows], axis=1)
    e0, e1 = excess[rows, j - 1], excess[rows, j]
    out[rows] = times[j - 1] + (0 - e0) / (e1 - e0) * (times[j] - times[j - 1])
    return out


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
    seeds = np.sort(done[C.SEED].dropna().unique()) if C.SEED in done and len(done) else np.array([0])
    cube = np.full((len(times), len(weights), len(seeds)), np.nan)
    if len(done):
        s = np.searchsorted(seeds, done[C.SEED]) if C.SEED in done else np.zeros(len(done), int)
        cube[np.searchsorted(times, done[C.INTRODUCE_AT]), np.searchsorted(weights, done[C.WEIGHT]), s] = done[metric]
    return cube, seeds


def _deviations(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each run minus its cell mean, each seed's mean deviation: the offset it shares over cells; 0 for a
    seed without runs)."""
    valid = np.isfinite(cube)
    n_cell = valid.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = cube - np.where(valid, cube, 0.0).sum(axis=2, keepdims=True) / n_cell
    n_seed = valid.sum(axis=(0, 1))
    offset = np.where(valid, dev, 0.0).sum(axis=(0, 1)) / np.maximum(n_seed, 1)
    return dev, offset


def cell_noise(cube: np.ndarray) -> tuple[float, int]:
    """(standard deviation of one run around its cell mean after removing its seed's shared offset, degrees
    of freedom), pooled over every cell of ``cube`` [time, weight, seed]; (NaN, 0) without replicated cells."""
    valid = np.isfinite(cube)
    n_cell = valid.sum(axis=2)
    dev, seed_offset = _deviations(cube)
    resid = np.where(valid, dev - seed_offset, 0.0)
    n_seeds_used = int((valid.sum(axis=(0, 1)) > 0).sum())
    df = int(valid.sum() - (n_cell > 0).sum() - max(0, n_seeds_used - 1))
    if df <= 0:
        return np.nan, 0
    return float(np.sqrt((resid ** 2).sum() / df)), df


def close_interval(cube: np.ndarray, times, margin: float, n_boot: int = 1000, level: float = 0.9,
                   seed: int = 0) -> tuple[float, float, float]:
    """(low, high, share of resamples where the window stays open) of the closing time, by the parametric
    bootstrap of the module doc; ``high`` is inf when the upper end is still open at the last time. NaNs
    with fewer than :data:`MIN_SEEDS` seeds."""
    sigma, df = cell_noise(cube)
    if cube.shape[2] < MIN_SEEDS or not np.isfinite(sigma):
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)
    valid = np.isfinite(cube)
    n = valid.sum(axis=2)
    _, seed_offset = _deviations(cube)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Cell means with the seeds' shared offsets removed (a cell missing a seed is not shifted by it).
        mean = np.where(n > 0, np.nansum(cube - seed_offset, axis=2) / n, np.nan)
    # The noise level itself is uncertain (df degrees of freedom): draw it per resample.
    sig = sigma * np.sqrt(df / rng.chisquare(df, n_boot))
    draws = mean + rng.standard_normal((n_boot,) + mean.shape) * sig[:, None, None] / np.sqrt(np.maximum(n, 1))
    best = np.where(np.isfinite(draws), draws, np.inf).min(axis=2)
    best[~np.isfinite(best)] = np.nan
    closes = window_close_many(times, best, margin)
    open_share = float(np.isnan(closes).mean())
    q = (1 - level) / 2
    # A resample that never closes closes after the last time (inf). Quantiles that interpolate would give
    # NaN between two infs; order statistics keep an open end open.
    ends = np.quantile(np.where(np.isnan(closes), np.inf, closes), [q, 1 - q], method="inverted_cdf")
    return float(ends[0]), float(ends[1]), open_share


def window_estimates(runs: pd.DataFrame, metric: str, margin: float, n_boot: int = 1000, level: float = 0.9,
                     coords=None, seed: int = 0) -> pd.DataFrame:
    """Per facet: where the window closes (``close``; NaN = open through the last time, or no window
    identified), its interval (``low``, ``high``: NaN without one, ``high`` inf when open at the upper end),
    the share of resamples where it stays open, ``window`` (all of that in words), ``n_seeds``, ``interval``
    (how it was made, or why there is none), ``edge`` (the times whose best weight is at the edge of the
    weight grid), the reference (earliest-time) best loss and the margin. Where the best weight is at the
    edge of the grid at every time no window is identified: no close and no interval."""
    if metric not in runs:
        runs = add_metrics(runs, coords)
    table = heatmap_table(runs, metric, coords)
    facets = table.attrs["facets"]
    best = best_per_time(table)
    grid_runs = heatmap_runs(runs)
    rows = []
    for key, cells in (table.groupby(facets, dropna=False) if facets else [((), table)]):
        key = key if isinstance(key, tuple) else (key,)
        times, weights, m, _, _ = grid_of(cells)
        b = of_facet(best, facets, key)
        curve = b.set_index(C.INTRODUCE_AT)["best_loss"].reindex(times).to_numpy()
        cube, seeds = _seed_cube(of_facet(grid_runs, facets, key), metric, times, weights)
        edges = b[b["edge"] != ""]
        identified = len(edges) < len(b)
        est = {"close": np.nan, "low": np.nan, "high": np.nan, "open_share": np.nan}
        if identified:
            est["close"] = window_close(times, curve, margin)
            est["low"], est["high"], est["open_share"] = close_interval(cube, times, margin, n_boot, level, seed)
        rows.append({**dict(zip(facets, key)), **est, "window": reading(est, identified, times[-1], level),
                     "n_seeds": len(seeds), "interval": interval_text(len(seeds), level, identified),
                     "edge": edge_text(edges, len(b)),
                     "ref_loss": curve[np.isfinite(curve)][0] if np.isfinite(curve).any() else np.nan,
                     "margin": margin, "level": level})
    out = pd.DataFrame(rows)
    out.attrs.update(metric=metric, facets=facets)
    return out


def reading(est: dict, identified: bool, last_time: float, level: float) -> str:
    """The estimate in words, as the figure's title and the ``window`` column say it: "no window identified",
    "closes at t ≈ 0.5 [0.45, 0.56]", "closes at t ≈ 0.9 [0.8, open)" (some resamples never close), "open
    through t = 1 (90% interval of the close: [0.9, open))"."""
    if not identified:
        return "no window identified (best weight at the edge of the weight grid at every time)"
    closes = np.isfinite(est["close"])
    text = f"closes at t ≈ {est['close']:.3g}" if closes else f"open through t = {last_time:g}"
    if np.isinf(est["low"]):  # so many resamples stay open that even the lower end is open
        return f"{text} (open in {est['open_share']:.0%} of resamples)"
    if np.isnan(est["low"]):
        return text
    label = _interval_label(est)
    return f"{text} {label}" if closes else f"{text} ({level:.0%} interval of the close: {label})"


def interval_text(n_seeds: int, level: float, identified: bool = True) -> str:
    if not identified:
        return "no interval: no window identified"
    if n_seeds < MIN_SEEDS:
        return f"no interval: {n_seeds} seed (needs >= {MIN_SEEDS} seeds to estimate the noise)"
    return f"{level:.0%} parametric bootstrap (cell noise pooled over {n_seeds} seeds)"


def edge_text(edges: pd.DataFrame, n_times: int) -> str:
    """Where the best weight sits at the edge of the weight grid, in words ("" when nowhere)."""
    if edges.empty:
        return ""
    times = ", ".join(f"{t:g}" for t in edges[C.INTRODUCE_AT])
    sides = " / ".join(sorted(set(edges["edge"])))
    head = "no window identified: " if len(edges) == n_times else ""
    return (f"{head}best weight at the {sides} weight of the grid at t = {times}; the optimum may lie outside "
            "the grid: extend mixture.weight")


def _interval_label(est) -> str:
    high = "open" if np.isinf(est["high"]) else f"{est['high']:.3g}"
    return f"[{est['low']:.3g}, {high}{')' if np.isinf(est['high']) else ']'}"


def draw_window(table: pd.DataFrame, estimates: pd.DataFrame, out_dir, name: str = "plasticity_window",
                formats=style.FORMATS):
    """Per facet: the heatmap with the best-weight-vs-time curve over it (a best weight at the edge of the
    weight grid marked), and the best loss against introduction time with the closing estimate and, where
    there is one, its interval."""
    metric, facets = table.attrs["metric"], table.attrs["facets"]
    best = best_per_time(table)
    panels = list(facet_panels(table))
    width = max(3.8, 0.5 * table[C.INTRODUCE_AT].nunique() + 1.6)
    # The curve panel is wider: its legend stands beside it, off the data.
    fig, axes = style.figure(len(panels), 2, panel=(width * 1.3, 3.4), gridspec_kw={"width_ratios": [1, 1.6]})
    unit = C.SHORT_LABELS.get(metric, metric)
    for row, (_, _, title, cells) in enumerate(panels):
        ax, ax2 = axes[row]
        key = tuple(cells[facets].iloc[0]) if facets else ()
        b = of_facet(best, facets, key)
        est = of_facet(estimates, facets, key).iloc[0]
        times, weights, m, _, _ = grid_of(cells)
        norm, cmap = style.scale_for(cells["mean"].tolist(), metric == C.FORGETTING)
        im = draw_panel(ax, cells, norm, cmap, annotate=False)
        fig.colorbar(im, ax=ax, shrink=0.85, label=unit)
        xs, ys = np.searchsorted(times, b[C.INTRODUCE_AT]), np.searchsorted(weights, b["best_weight"])
        draw_best_line(ax, xs, ys)
        edge = (b["edge"] != "").to_numpy()
        if edge.any():
            ax.plot(xs[edge], ys[edge], "X", color=style.color(3), ms=9, mec="white", zorder=6)
        # The title explains the marks: a legend inside a heatmap would cover its cells.
        ax.set_title(style.wrap(f"{title}\nline: best weight per introduction time"
                                + ("\n✕: best weight at the grid edge, window not identified there" if edge.any()
                                   else ""), width))
        has_spread = b["std"].notna().any()
        if has_spread:
            ax2.errorbar(b[C.INTRODUCE_AT], b["best_loss"], yerr=b["std"], fmt="-o", ms=4, color=style.color(0),
                         capsize=2, label="best loss (± seed std)")
        else:  # one seed: no spread, no error bars
            ax2.plot(b[C.INTRODUCE_AT], b["best_loss"], "-o", ms=4, color=style.color(0),
                     label="best loss (1 seed, no spread)")
        ax2.axhline(est["ref_loss"] + est["margin"], color="0.4", ls="--", lw=1,
                    label=f"earliest + margin ({est['margin']:g} {C.LOSS_UNIT})")
        if np.isfinite(est["close"]):
            ax2.axvline(est["close"], color=style.color(3), lw=1.5, label=f"window closes ≈ {est['close']:.3g}")
        if np.isfinite(est["low"]):  # the band runs to the last time where its upper end is open
            ax2.axvspan(est["low"], min(est["high"], times[-1]), color=style.color(3), alpha=0.15,
                        label=f"{est['level']:.0%} interval ({est['n_seeds']} seeds)"
                              + (f", open after t = {times[-1]:g}" if np.isinf(est["high"]) else ""))
        no_interval = np.isfinite(est["close"]) and np.isnan(est["low"])
        ax2.set_title(style.wrap(est["window"] + (f" ({est['interval']})" if no_interval else ""), width * 1.1))
        ax2.set_xlabel(C.TIME_LABEL)
        ax2.set_ylabel(f"best {unit}")
        style.legend(ax2)
    return style.save(fig, out_dir, name, formats)
