"""Introduction time x mixture weight heatmaps. :func:`heatmap_table` returns the table behind a heatmap
(one row per grid cell: seed mean, seed spread, status, note, best); :func:`draw_heatmaps` only draws it.
The grid is the product of the observed introduction times and weights, so a cell whose runs failed,
are still going, or never ran is drawn hatched with the reason, never dropped. A coordinate that is absent or
null for some runs (a run before its first summary, ``mixture.until=null,0.8``) is a value of its own
("null") in facets, so a partial sweep draws what is finished and marks the rest."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from . import columns as C
from . import style
from .celltext import add_labels, half_extent
from .derived import add_metrics, coordinate_columns

AXES = [C.INTRODUCE_AT, C.WEIGHT]
NOT_FACETS = {C.INTRODUCE_AT, C.WEIGHT, C.SEED, C.INTRODUCE_TOKENS}
# A cell without a result shows the most informative status of its runs, in this order.
CELL_STATUS_ORDER = (C.FAILED, C.REQUEUED, C.RUNNING, C.DONE)
# Loss heatmaps get the best-weight-vs-time curve drawn over them (forgetting is not a loss to pick by).
BEST_LINE_METRICS = (C.IN_DOMAIN, C.TARGET_LOSS)
NULL = "null"  # an absent or null facet value, shown as such in panel titles


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


def _nulls_as_values(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``cols`` with absent/null values replaced by the text "null": NaN never equals NaN, so a cell or
    facet looked up by a null key would never be found."""
    df = df.copy()
    for c in cols:
        if df[c].isna().any():
            df[c] = df[c].astype(object).where(df[c].notna(), NULL)
    return df


def _sort_key(col: pd.Series) -> pd.Series:
    """Sort numbers as numbers, then text (a facet mixing 0.8 and "null")."""
    return col.map(lambda v: (1, str(v)) if isinstance(v, str) else (0, v))


def heatmap_table(runs: pd.DataFrame, metric: str, coords=None) -> pd.DataFrame:
    """The table behind one heatmap: per facet and cell, ``mean`` and ``std`` of ``metric`` over done
    seeds, ``n_done`` of ``n_seeds``, ``status`` (ok / partial / failed / requeued / running / missing /
    no value), a ``note`` and ``best`` (the lowest mean of the facet)."""
    if metric not in runs:
        runs = add_metrics(runs, coords)
    coords = coords if coords is not None else coordinate_columns(runs)
    grid_runs = heatmap_runs(runs)
    facets = facet_keys(grid_runs, coords)
    grid_runs = _nulls_as_values(grid_runs, facets)
    if grid_runs.empty:
        return pd.DataFrame(columns=facets + AXES + ["mean", "std", "n_done", "n_seeds", "status", "note", "best"])
    n_seeds = grid_runs[C.SEED].nunique() if C.SEED in grid_runs else 1
    keys = facets + AXES
    value = grid_runs[metric].where(grid_runs[C.STATUS] == C.DONE)
    stats = value.groupby([grid_runs[k] for k in keys], dropna=False).agg(["mean", "std", "count"])
    stats.columns = ["mean", "std", "n_done"]
    # The full grid: every facet seen x every time seen x every weight seen.
    facet_rows = (grid_runs[facets].drop_duplicates().sort_values(facets, key=_sort_key) if facets
                  else pd.DataFrame(index=[0]))
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
        if worst == C.DONE:  # done runs without this metric (no matched baseline, no post-training)
            worst, text = "no value", C.NO_VALUE.get(metric, f"no {metric}")
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


def draw_best_line(ax, xs, ys, zorder: float = 4, markers: bool = True, gaps=None):
    """The best-weight-vs-time curve over a heatmap: white under black, visible on any colour. ``gaps``
    (half width, half height in data units, per point) leaves a box around each point free, so the curve
    never strikes through the label of the cell it passes."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if gaps is None:
        ax.plot(xs, ys, "-o" if markers else "-", color="white", lw=2.6, ms=5, mec="black", zorder=zorder)
        ax.plot(xs, ys, "-", color="black", lw=1.0, zorder=zorder + 0.1, label="best weight")
        return
    label = "best weight"  # on the first segment drawn: a legend shows the curve once
    for i, ((x0, y0), (x1, y1)) in enumerate(zip(zip(xs, ys), zip(xs[1:], ys[1:]))):
        dx, dy = x1 - x0, y1 - y0
        leave = [min(gx / abs(dx) if dx else np.inf, gy / abs(dy) if dy else np.inf) for gx, gy in gaps[i:i + 2]]
        a, b = leave[0], 1 - leave[1]
        if a < b:
            seg = ([x0 + a * dx, x0 + b * dx], [y0 + a * dy, y0 + b * dy])
            ax.plot(*seg, "-", color="white", lw=2.6, zorder=zorder, solid_capstyle="butt")
            ax.plot(*seg, "-", color="black", lw=1.0, zorder=zorder + 0.1, solid_capstyle="butt", label=label)
            label = None


def cell_texts(cells: pd.DataFrame) -> list[str]:
    """The label of each cell: mean, ± seed std (with more than one seed done), k/n when seeds are missing."""
    return [f"{m:.3f}" + (f"\n±{s:.3f}" if s == s else "") + (f"\n{n}/{ns}" if n < ns else "")
            for m, s, n, ns in zip(cells["mean"].to_numpy(), cells["std"].to_numpy(), cells["n_done"].to_numpy(),
                                   cells["n_seeds"].to_numpy())]


def label_gaps(ax, cells: pd.DataFrame, xs, ys, size: float):
    """(half width, half height) in data units of the labels of the cells at grid indices (xs, ys), plus a 4-point
    margin (the line stops clear of the digits): the part of the best-weight curve left out around each."""
    _, _, _, ti, wi = grid_of(cells)
    texts = dict(zip(zip(ti, wi), cell_texts(cells)))
    per_unit = np.abs(np.diff(ax.transData.transform([[0, 0], [1, 1]]), axis=0)[0])  # pixels per cell
    px = ax.figure.dpi / 72
    return [tuple((np.array(half_extent(texts[(x, y)], size)) + 4.0) * px / per_unit) for x, y in zip(xs, ys)]


def label_size(cells: pd.DataFrame) -> float:
    """Cell label size in points: smaller on big grids."""
    return 6.0 if max(cells[C.INTRODUCE_AT].nunique(), cells[C.WEIGHT].nunique()) <= 8 else 5.0


def draw_panel(ax, cells: pd.DataFrame, norm, cmap, annotate: bool = True, xticks: bool = True,
               yticks: bool = True):
    """Draw one facet's heatmap on ``ax``: coloured cells with mean ± seed std, hatched cells with the
    reason, the best cell outlined. ``xticks``/``yticks`` False leave that axis bare (inner panels of a
    grid: every tick is an artist to build and draw). Returns the image (for a colour bar)."""
    times, weights, m, ti, wi = grid_of(cells)
    im = ax.imshow(np.ma.masked_invalid(m), origin="lower", cmap=cmap, norm=norm, aspect="auto")
    if xticks:
        ax.set_xticks(range(len(times)), [f"{t:g}" for t in times])
        ax.set_xlabel(C.TIME_LABEL)
    else:
        ax.set_xticks([])
    if yticks:
        ax.set_yticks(range(len(weights)), [f"{w:g}" for w in weights])
        ax.set_ylabel(C.WEIGHT_LABEL)
    else:
        ax.set_yticks([])
    size = label_size(cells)
    empty = (cells["n_done"] == 0).to_numpy()
    mean = cells["mean"].to_numpy()
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
        texts = np.array(cell_texts(cells), dtype=object)[full]
        add_labels(ax, ti[full], wi[full], texts, np.where(rgb > 0.5, "black", "white"), size)
    for x, y in zip(ti[cells["best"].to_numpy()], wi[cells["best"].to_numpy()]):
        ax.add_patch(Rectangle((x - .5, y - .5), 1, 1, fill=False, edgecolor="black", lw=2.2))
        ax.add_patch(Rectangle((x - .44, y - .44), .88, .88, fill=False, edgecolor="white", lw=1.0))
    return im


def panel_title(title: str, cells: pd.DataFrame, width_in: float) -> str:
    """A panel's facet values and its best cell, wrapped to the panel's width."""
    best = cells[cells["best"]]
    if not best.empty:
        b = best.iloc[0]
        title += f"\nbest: t={b[C.INTRODUCE_AT]:g}, w={b[C.WEIGHT]:g} → {b['mean']:.3f}"
    return style.wrap(title.strip(), width_in)


def seeds_text(table: pd.DataFrame) -> str:
    """What a cell's number is: a seed mean ± std only where some cell has more than one seed done."""
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    if n_seeds == 1:
        return "one seed per cell"
    return f"mean over {n_seeds} seeds" + (" ± seed std" if (table["n_done"] > 1).any() else "")


def draw_heatmaps(table: pd.DataFrame, out_dir, name: str | None = None, formats=style.FORMATS):
    """Draw every facet of a heatmap table into one figure; returns the files written."""
    metric = table.attrs["metric"]
    diverging = metric == C.FORGETTING
    panels = list(facet_panels(table))
    nrows = 1 + max(p[0] for p in panels)
    ncols = 1 + max(p[1] for p in panels)
    nt, nw = table[C.INTRODUCE_AT].nunique(), table[C.WEIGHT].nunique()
    # Fixed margins in inches instead of a layout engine: the engine measures every tick label several
    # times, which dominates drawing a figure of many panels.
    pw, ph = max(2.6, 0.5 * nt), max(2.0, 0.36 * nw)  # axes size
    titles = {(r, c): panel_title(title, cells, pw) for r, c, title, cells in panels}
    # Room above each row for its tallest title (lines of the 9-point title font, 1.2 apart), above all for the
    # figure's heading (its lines).
    title_h = 0.15 * max(t.count("\n") + 1 for t in titles.values()) + 0.1
    heading = [C.METRIC_LABELS.get(metric, metric), f"{seeds_text(table)}; outlined = best; hatched = no result"]
    lined = metric in BEST_LINE_METRICS
    if lined and any(len(best_weight_line(cells)[0]) > 1 for *_, cells in panels):  # a line needs two times
        heading.append("line: the best weight at each introduction time")
    left, right, top, bottom, gap_w, gap_h = 0.75, 1.1, 0.15 * len(heading) + 0.15 + title_h, 0.6, 0.35, 0.4 + title_h
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
        norm, cmap = style.scale_for(pd.concat([cells["mean"] for _, _, cells in row]).tolist(), diverging)
        for c, _, cells in row:
            ax = axes[r, c]
            ax.set_visible(True)
            im = draw_panel(ax, cells, norm, cmap, xticks=lowest[c] == r, yticks=first[r] == c)
            if lined:
                xs, ys = best_weight_line(cells)
                draw_best_line(ax, xs, ys, zorder=2.5, markers=False,
                               gaps=label_gaps(ax, cells, xs, ys, label_size(cells)))
            ax.set_title(titles[(r, c)])
        bbox = axes[r, ncols - 1].get_position()
        cax = fig.add_axes([bbox.x1 + 0.15 / width, bbox.y0, 0.12 / width, bbox.height])
        fig.colorbar(im, cax=cax, label=C.SHORT_LABELS.get(metric, f"{metric} ({C.LOSS_UNIT})"))
    fig.suptitle("\n".join(heading), fontsize=9)
    return style.save(fig, out_dir, name or f"heatmap_{metric}", formats)
