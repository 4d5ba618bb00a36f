"""One figure style for every analysis figure: colour-blind-safe colours (Okabe-Ito for categories,
viridis for losses, purple-orange diverging map with 0 the neutral colour for differences), PNG + PDF output."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

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
    "figure.dpi": 100, "savefig.dpi": 110,  # PNGs: png_dpi; this is the resolution of images inside a PDF
    "pdf.compression": 1,  # fastest zlib level: a heatmap PDF writes much faster for a slightly larger file
    # TrueType (Type 42) fonts embedded as text, as journals ask: selectable, searchable, editable.
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "image.cmap": SEQUENTIAL,
}


# Print resolution: a figure is printed at most a page wide (~8 inches), so a PNG of PRINT_PX pixels across
# holds 300 dpi there; a wide figure (a heatmap of many panels) is shrunk to the page and needs no more
# (rendering it at 300 dpi would cost seconds for pixels no printer shows).
PRINT_PX, MAX_DPI = 2400, 300


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def marker(i: int) -> str:
    """A category's marker: with its colour, so categories stay apart in grey and for colour-blind readers."""
    return MARKERS[i % len(MARKERS)]


def figure(nrows: int, ncols: int, panel=(3.6, 3.0), **kw):
    """A figure of ``nrows`` x ``ncols`` panels in the project style (axes always a 2-D array)."""
    matplotlib.rcParams.update(RC)  # text added later to the figure reads the global settings
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, **kw)


def wrap(text: str, width_in: float, size: float = 9.0) -> str:
    """``text`` with each line broken at spaces to fit ``width_in`` inches at ``size`` points (a glyph of the
    figure font is at most 0.6 em wide on average), so a long title wraps instead of leaving the figure."""
    chars = max(12, int(width_in * 72 / (0.6 * size)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.split("\n"))


def legend(ax, **kw):
    """The axes' legend beside it, on the right: never over a point or a line (the layout makes room)."""
    kw.setdefault("fontsize", 7)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def scale_for(values, diverging: bool, cmap: str | None = None) -> tuple[colors.Normalize, colors.Colormap]:
    """Colour scale and map for ``values``, spanning exactly their range. Diverging: a value v gets the
    colour it has on the full map symmetric around 0 (0 stays the neutral colour), and the map is cut to
    the data's range, so a colour bar never shows values the data do not reach."""
    base = plt.get_cmap(cmap or (DIVERGING if diverging else SEQUENTIAL))
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return colors.Normalize(0, 1), base
    lo, hi = min(finite), max(finite)
    hi = hi if hi > lo else lo + 1e-9
    if not diverging:
        return colors.Normalize(lo, hi), base
    m = max(abs(lo), abs(hi))
    part = base(np.linspace(0.5 + 0.5 * lo / m, 0.5 + 0.5 * hi / m, 256))
    return colors.Normalize(lo, hi), colors.ListedColormap(part, name=f"{base.name}_{lo:.3g}_{hi:.3g}")


def png_dpi(fig) -> float:
    """The PNG's resolution: PRINT_PX pixels across, at most MAX_DPI."""
    return min(MAX_DPI, PRINT_PX / fig.get_figwidth())


def save(fig, out_dir, name: str, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.<fmt>`` for each format, close it, return the paths. Plain
    ``savefig`` in this process (no fork: from a notebook a fork would copy the kernel)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        # Fast PNG compression: a big heatmap grid otherwise spends more time compressing than drawing.
        raster = {"pil_kwargs": {"compress_level": 1}, "dpi": png_dpi(fig)} if path.suffix == ".png" else {}
        fig.savefig(path, **raster)
    plt.close(fig)
    return paths
