"""Fast cell annotations: a heatmap of thousands of cells needs thousands of short labels, and one
matplotlib Text per label costs about a millisecond each to lay out and draw, per output format.
Here every label of a panel becomes one path (glyph outlines cached per character, placed in points
around the cell centre) and all labels of the panel one PathCollection: drawn in a single call."""
from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath, text_to_path
from matplotlib.transforms import Affine2D

_REF = 100.0  # glyphs are measured at this size and scaled, so rounding does not show
_glyphs: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}


def _glyph(ch: str, prop: FontProperties) -> tuple[np.ndarray, np.ndarray, float]:
    """(vertices, codes, advance) of one character at size 1."""
    if ch not in _glyphs:
        path = TextPath((0, 0), ch, size=_REF, prop=prop)
        advance = text_to_path.get_text_width_height_descent(ch, prop, ismath=False)[0]
        _glyphs[ch] = (path.vertices / _REF, path.codes, advance / _REF)
    return _glyphs[ch]


def label_path(text: str, size: float) -> Path:
    """The outline of ``text`` (lines split on newline) in points, centred on (0, 0)."""
    prop = FontProperties(size=_REF)
    lines = text.split("\n")
    line_h = 1.2 * size
    verts, codes = [], []
    for i, line in enumerate(lines):
        parts = [_glyph(ch, prop) for ch in line]
        width = sum(a for _, _, a in parts) * size
        x = -width / 2
        # Centre the block of lines; 0.36 * size puts the middle of a digit on the line's centre.
        y = ((len(lines) - 1) / 2 - i) * line_h - 0.36 * size
        for v, c, a in parts:
            if len(v):
                verts.append(v * size + (x, y))
                codes.append(c)
            x += a * size
    if not verts:
        return Path(np.zeros((1, 2)), [Path.MOVETO])
    return Path(np.concatenate(verts), np.concatenate(codes))


def add_labels(ax, xs, ys, texts, colors, size: float = 6.0) -> PathCollection:
    """Draw ``texts`` centred at data points (xs, ys) of ``ax`` in ``colors``, ``size`` points high."""
    fig = ax.figure
    paths = [label_path(t, size) for t in texts]
    coll = PathCollection(paths, facecolors=list(colors), edgecolors="none", linewidths=0,
                          offsets=np.column_stack([xs, ys]), offset_transform=ax.transData,
                          transform=Affine2D().scale(1 / 72) + fig.dpi_scale_trans)
    coll.set_in_layout(False)
    ax.add_collection(coll, autolim=False)
    return coll
