"""One figure style for every analysis figure: colour-blind-safe colours (Okabe-Ito for categories,
viridis for losses, purple-orange diverging map centred on 0 for differences), PNG + PDF output."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on a headless node or a laptop without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
SEQUENTIAL = "viridis"
DIVERGING = "PuOr_r"
MISSING_FACE = "#e6e6e6"
MISSING_HATCH = "///"
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
FORMATS = ("png", "pdf")

RC = {
    "figure.dpi": 100, "savefig.dpi": 110,
    "pdf.compression": 1,  # fastest zlib level: a heatmap PDF writes much faster for a slightly larger file
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "image.cmap": SEQUENTIAL,
}


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def figure(nrows: int, ncols: int, panel=(3.6, 3.0), **kw):
    """A figure of ``nrows`` x ``ncols`` panels in the project style (axes always a 2-D array)."""
    matplotlib.rcParams.update(RC)  # text added later to the figure reads the global settings
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, **kw)


def norm_for(values, diverging: bool) -> colors.Normalize:
    """Colour scale for ``values``: symmetric around 0 when diverging, so 0 is always the neutral colour."""
    finite = [v for v in values if v == v]
    if not finite:
        return colors.Normalize(0, 1)
    lo, hi = min(finite), max(finite)
    if diverging:
        m = max(abs(lo), abs(hi)) or 1e-9
        return colors.Normalize(-m, m)
    return colors.Normalize(lo, hi if hi > lo else lo + 1e-9)


def save(fig, out_dir, name: str, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<fmt>`` for each format, close it, return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        # Fast PNG compression: a big heatmap grid otherwise spends more time compressing than drawing.
        fig.savefig(path, **({"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}))
        paths.append(path)
    plt.close(fig)
    return paths
