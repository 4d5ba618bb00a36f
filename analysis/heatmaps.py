"""Introduction time x mixture weight heatmaps. :func:`heatmap_table` returns the table behind a heatmap
(one row per grid cell: seed mean, seed spread, status, note, best); :func:`draw_heatmaps` only draws it.
The grid is the product of the observed introduction times and weights, so a cell whose runs failed,
are still going, or never ran is drawn hatched with the reason, never dropped."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from analysis import columns as C
from analysis import style
from analysis.celltext import add_labels
from analysis.derived import add_metrics

AXES = [C.INTRODUCE_AT, C.WEIGHT]
NOT_FACETS = {C.INTRODUCE_AT, C.WEIGHT, C.SEED, C.INTRODUCE_TOKENS}
# A cell without a result shows the most informative status of its runs, in this order.
CELL_STATUS_ORDER = (C.FAILED, C.REQUEUED, C.RUNNING, C.DONE)
# Loss heatmaps get the best-weight-vs-time curve drawn over them (forgetting is not a loss to pick by).
BEST_LINE_METRICS = (C.IN_DOMAIN, C.TARGET_LOSS)


def heatmap_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that sit on a time x weight grid: both axes set and not a baseline/continued/upsample run."""
    if not all(a in runs for a in AXES):
        return runs.iloc[0:0]
    on = runs[AXES].notna().all(axis=1) & ~runs.get(C.KIND, pd.Series(index=runs.index)).isin(C.NOT_ON_HEATMAP)
    return runs[on]


def facet_keys(grid_runs: pd.DataFrame, coords) -> list[str]:
    """Domain and model size, plus any other coordinate that varies over the grid's runs (a separate panel
    each, so runs that differ in more than seed are never averaged together)."""
    keys = [k for k in (C.DOMAIN, C.SIZE) if k in grid_runs]
    for c in coords:
        if c not in keys and c not in NOT_FACETS and c in grid_runs and grid_runs[c].nunique(dropna=False) > 1:
            keys.append(c)
    return keys


def heatmap_table(runs: pd.DataFrame, metric: str, coords=None) -> pd.DataFrame:
    """The table behind one heatmap: per facet and cell, ``mean`` and ``std`` of ``metric`` over done
    seeds, ``n_done`` of ``n_seeds``, ``status`` (ok / partial / failed / requeued / running / missing /
    no value), a ``note`` and ``best`` (the lowest mean of the facet)."""
    if metric not in runs:
        runs = add_metrics(runs)
    coords = coords if coords is not None else [c for c in runs if "." in c and not c.startswith(C.FINAL_PREFIX)]
    grid_runs = heatmap_runs(runs)
    facets = facet_keys(grid_runs, coords)
    if grid_runs.empty:
        return pd.DataFrame(columns=facets + AXES + ["mean", "std", "n_done", "n_seeds", "status", "note", "best"])
    n_seeds = grid_runs[C.SEED].nunique() if C.SEED in grid_runs else 1
    keys = facets + AXES
    value = grid_runs[metric].where(grid_runs[C.STATUS] == C.DONE)
    stats = value.groupby([grid_runs[k] for k in keys], dropna=False).agg(["mean", "std", "count"])
    stats.columns = ["mean", "std", "n_done"]
    # The full grid: every facet seen x every time seen x every weight seen.
    facet_rows = grid_runs[facets].drop_duplicates().sort_values(facets) if facets else pd.DataFrame(index=[0])
    axes = pd.MultiIndex.from_product([np.sort(grid_runs[a].unique()) for a in AXES], names=AXES).to_frame(index=False)
    grid = facet_rows.merge(axes, how="cross")
    table = grid.merge(stats.reset_index(), on=keys, how="left")
    table["n_done"] = table["n_done"].fillna(0).astype(int)
    table["n_seeds"] = n_seeds
    table["status"], table["note"] = _status_notes(table, grid_runs, keys, metric)
    table["best"] = False
    with_value = table[table["n_done"] > 0]
    if not with_value.empty:
        best = with_value.groupby(facets, dropna=False)["mean"].idxmin() if facets else [with_value["mean"].idxmin()]
        table.loc[list(best), "best"] = True
    table.attrs.update(metric=metric, facets=facets)
    return table


def _status_notes(table: pd.DataFrame, grid_runs: pd.DataFrame, keys: list[str], metric: str):
    status = np.where(table["n_done"] >= table["n_seeds"], "ok",
                      np.where(table["n_done"] > 0, "partial", "")).astype(object)
    notes = np.array([""] * len(table), dtype=object)
    todo = np.flatnonzero(status != "ok")
    if len(todo) == 0:
        return status, notes
    # Only cells short of results need the per-run story, told by the runs without a value. Plain
    # arrays per cell: pandas operations per cell cost milliseconds each on a grid of thousands.
    short = grid_runs[(grid_runs[C.STATUS] != C.DONE) | grid_runs[metric].isna()]
    run_status, run_reason = short[C.STATUS].to_numpy(), short[C.REASON].to_numpy()
    by_cell = {k if isinstance(k, tuple) else (k,): pos for k, pos in short.groupby(keys, dropna=False).indices.items()}
    cells = list(table[keys].itertuples(index=False, name=None))
    n_done, n_seeds = table["n_done"].to_numpy(), table["n_seeds"].to_numpy()
    for i in todo:
        pos = by_cell.get(cells[i])
        n_text = f"{n_done[i]}/{n_seeds[i]} seeds"
        if pos is None:
            status[i] = status[i] or C.MISSING
            notes[i] = C.MISSING if status[i] == C.MISSING else f"{n_text}; rest missing"
            continue
        seen = set(run_status[pos])
        worst = next((s for s in CELL_STATUS_ORDER if s in seen), C.MISSING)
        reasons = [r for st, r in zip(run_status[pos], run_reason[pos]) if st == C.FAILED and r is not None and r == r]
        text = f"{C.FAILED}: {reasons[0]}" if worst == C.FAILED and reasons else worst
        if worst == C.DONE:  # done runs without this metric (no baseline, no post-training)
            worst, text = "no value", f"no {metric}"
        if status[i] == "partial":
            notes[i] = f"{n_text}; {text}"
        else:
            status[i], notes[i] = worst, text
    return status, notes


def facet_panels(table: pd.DataFrame):
    """Yield (row, col, title, cells) for each facet, one row per value of the first facet key."""
    facets = table.attrs.get("facets", [])
    if not facets:
        yield 0, 0, "", table
        return
    first = list(dict.fromkeys(table[facets[0]].tolist()))
    rest = facets[1:]
    other = list(dict.fromkeys(map(tuple, table[rest].to_numpy()))) if rest else [()]
    for (vals, cells) in table.groupby(facets, dropna=False, sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        title = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(facets, vals))
        yield first.index(vals[0]), other.index(tuple(vals[1:])), title, cells


def grid_of(cells: pd.DataFrame):
    """times, weights and the mean matrix [weight, time] of one facet's cells."""
    times = np.sort(cells[C.INTRODUCE_AT].unique())
    weights = np.sort(cells[C.WEIGHT].unique())
    ti = np.searchsorted(times, cells[C.INTRODUCE_AT].to_numpy())
    wi = np.searchsorted(weights, cells[C.WEIGHT].to_numpy())
    m = np.full((len(weights), len(times)), np.nan)
    m[wi, ti] = cells["mean"].to_numpy()
    return times, weights, m, ti, wi


def best_weight_line(cells: pd.DataFrame):
    """The best-weight-vs-time curve of one facet, in grid indices: (time index, weight index) of the
    lowest mean at each introduction time that has a result (ties: the lower weight)."""
    _, _, m, _, _ = grid_of(cells)
    has = np.isfinite(m).any(axis=0)
    return np.flatnonzero(has), np.argmin(np.where(np.isfinite(m), m, np.inf), axis=0)[has]


def draw_best_line(ax, xs, ys, zorder: float = 4, markers: bool = True):
    """The best-weight-vs-time curve over a heatmap: white under black, visible on any colour."""
    ax.plot(xs, ys, "-o" if markers else "-", color="white", lw=2.6, ms=5, mec="black", zorder=zorder)
    ax.plot(xs, ys, "-", color="black", lw=1.0, zorder=zorder + 0.1, label="best weight")


def draw_panel(ax, cells: pd.DataFrame, norm, cmap: str, annotate: bool = True, xticks: bool = True,
               yticks: bool = True):
    """Draw one facet's heatmap on ``ax``: coloured cells with mean ± seed std, hatched cells with the
    reason, the best cell outlined. ``xticks``/``yticks`` False leave that axis bare (inner panels of a
    grid: every tick is an artist to build and draw). Returns the image (for a colour bar)."""
    times, weights, m, ti, wi = grid_of(cells)
    im = ax.imshow(np.ma.masked_invalid(m), origin="lower", cmap=cmap, norm=norm, aspect="auto")
    if xticks:
        ax.set_xticks(range(len(times)), [f"{t:g}" for t in times])
        ax.set_xlabel("introduction time (fraction of training)")
    else:
        ax.set_xticks([])
    if yticks:
        ax.set_yticks(range(len(weights)), [f"{w:g}" for w in weights])
        ax.set_ylabel("mixture weight")
    else:
        ax.set_yticks([])
    size = 6.0 if max(len(times), len(weights)) <= 8 else 5.0
    empty = (cells["n_done"] == 0).to_numpy()
    mean, std = cells["mean"].to_numpy(), cells["std"].to_numpy()
    if empty.any():
        ax.add_collection(PatchCollection(
            [Rectangle((x - .5, y - .5), 1, 1) for x, y in zip(ti[empty], wi[empty])],
            facecolor=style.MISSING_FACE, edgecolor="0.55", hatch=style.MISSING_HATCH, lw=0.5))
        for x, y, note in zip(ti[empty], wi[empty], cells["note"].to_numpy()[empty]):
            ax.text(x, y, textwrap.fill(str(note), 14), ha="center", va="center", fontsize=size - 1,
                    bbox=dict(facecolor="white", alpha=0.75, lw=0, pad=0.5), in_layout=False, clip_on=True)
    full = ~empty
    if annotate and full.any():
        rgb = im.get_cmap()(norm(mean[full]))[:, :3] @ np.array([0.299, 0.587, 0.114])
        texts = [f"{m:.3f}" + (f"\n±{s:.3f}" if s == s else "") + (f"\n{n}/{ns}" if n < ns else "")
                 for m, s, n, ns in zip(mean[full], std[full], cells["n_done"].to_numpy()[full],
                                        cells["n_seeds"].to_numpy()[full])]
        add_labels(ax, ti[full], wi[full], texts, np.where(rgb > 0.5, "black", "white"), size)
    for x, y in zip(ti[cells["best"].to_numpy()], wi[cells["best"].to_numpy()]):
        ax.add_patch(Rectangle((x - .5, y - .5), 1, 1, fill=False, edgecolor="black", lw=2.2))
        ax.add_patch(Rectangle((x - .44, y - .44), .88, .88, fill=False, edgecolor="white", lw=1.0))
    return im


def draw_heatmaps(table: pd.DataFrame, out_dir, name: str | None = None, formats=style.FORMATS):
    """Draw every facet of a heatmap table into one figure; returns the files written."""
    metric = table.attrs["metric"]
    diverging = metric == C.FORGETTING
    cmap = style.DIVERGING if diverging else style.SEQUENTIAL
    panels = list(facet_panels(table))
    nrows = 1 + max(p[0] for p in panels)
    ncols = 1 + max(p[1] for p in panels)
    nt, nw = table[C.INTRODUCE_AT].nunique(), table[C.WEIGHT].nunique()
    # Fixed margins in inches instead of a layout engine: the engine measures every tick label several
    # times, which dominates drawing a figure of many panels.
    pw, ph = max(2.6, 0.5 * nt), max(2.0, 0.36 * nw)  # axes size
    left, right, top, bottom, gap_w, gap_h = 0.75, 1.1, 1.05, 0.6, 0.35, 0.75
    width, height = left + right + ncols * pw + (ncols - 1) * gap_w, top + bottom + nrows * ph + (nrows - 1) * gap_h
    fig, axes = style.figure(nrows, ncols, panel=(width / ncols, height / nrows), layout=None)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap_w / pw, hspace=gap_h / ph)
    for ax in axes.flat:
        ax.set_visible(False)
    rows, used = {}, {(r, c) for r, c, _, _ in panels}
    for r, c, title, cells in panels:
        rows.setdefault(r, []).append((c, title, cells))
    # The panels share one grid: tick labels only on the lowest panel of a column and the first of a row.
    lowest = {c: max(r for r, c2 in used if c2 == c) for _, c in used}
    first = {r: min(c for r2, c in used if r2 == r) for r, _ in used}
    for r, row in rows.items():
        # One colour scale per row (per domain): losses of different domains are not comparable.
        norm = style.norm_for(pd.concat([cells["mean"] for _, _, cells in row]).tolist(), diverging)
        for c, title, cells in row:
            ax = axes[r, c]
            ax.set_visible(True)
            im = draw_panel(ax, cells, norm, cmap, xticks=lowest[c] == r, yticks=first[r] == c)
            if metric in BEST_LINE_METRICS:
                # Under the cell labels, so the numbers stay readable where the curve crosses them.
                draw_best_line(ax, *best_weight_line(cells), zorder=2.5, markers=False)
            best = cells[cells["best"]]
            if not best.empty:
                b = best.iloc[0]
                title += f"\nbest: t={b[C.INTRODUCE_AT]:g}, w={b[C.WEIGHT]:g} → {b['mean']:.3f}"
            ax.set_title(title)
        bbox = axes[r, ncols - 1].get_position()
        cax = fig.add_axes([bbox.x1 + 0.15 / width, bbox.y0, 0.12 / width, bbox.height])
        fig.colorbar(im, cax=cax, label=C.SHORT_LABELS.get(metric, metric))
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    fig.suptitle(f"{C.METRIC_LABELS.get(metric, metric)}\nmean over {n_seeds} seed(s) ± seed std; "
                 "outlined = best; hatched = no result", fontsize=9)
    return style.save(fig, out_dir, name or f"heatmap_{metric}", formats)
