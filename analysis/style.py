"""One figure style for every analysis figure: colour-blind-safe colours (Okabe-Ito for categories,
viridis for losses, purple-orange diverging map centred on 0 for differences), PNG + PDF output."""
from __future__ import annotations

import os
import sys
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
    """Write ``fig`` as ``out_dir/name.<fmt>`` for each format, close it, return the paths.
    Each format redraws the whole figure, so where the system can fork, a copy of this process writes
    the formats after the first while this one writes the first (two cores: about half the wall time).
    If that copy fails, its formats are written here, so an error is raised where it can be seen."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    child = _fork_writer(fig, paths[1:]) if len(paths) > 1 else None
    for path in paths[:1] if child else paths:
        _write(fig, path)
    if child and os.waitpid(child, 0)[1] != 0:
        for path in paths[1:]:
            _write(fig, path)
    plt.close(fig)
    return paths


def _write(fig, path: Path) -> None:
    # Fast PNG compression: a big heatmap grid otherwise spends more time compressing than drawing.
    fig.savefig(path, **({"pil_kwargs": {"compress_level": 1}} if path.suffix == ".png" else {}))


def _fork_writer(fig, paths: list[Path]) -> int | None:
    """Pid of a forked copy of this process that writes ``paths`` and exits (0 = all written); None
    where fork is missing or unsafe (Windows; macOS system libraries)."""
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return None
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for path in paths:
            _write(fig, path)
        code = 0
    finally:
        os._exit(code)  # never return into the parent's code (pytest, the CLI) from the copy
