"""Fast cell annotations: a heatmap of thousands of cells needs thousands of short labels, and one
matplotlib Text per label costs about a millisecond each to lay out and draw, per output format.
Here all labels of a panel are one artist that lays them out once and draws them straight through
the renderer, with no per-label Text object (a vector file still gets real, selectable text)."""
from __future__ import annotations

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.colors import to_rgba_array
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath, text_to_path
from matplotlib.transforms import Affine2D, IdentityTransform

_REF = 100.0  # glyphs are measured at this size and scaled, so rounding does not show
_glyphs: dict[str, tuple[Path, float]] = {}
_NO_TRANSFORMS, _NO_COLOR = np.zeros((0, 3, 3)), np.zeros((0, 4))


def _glyph(ch: str) -> tuple[Path, float]:
    """(outline, advance) of one character at size 1."""
    if ch not in _glyphs:
        prop = FontProperties(size=_REF)
        path = TextPath((0, 0), ch, size=_REF, prop=prop)
        advance = text_to_path.get_text_width_height_descent(ch, prop, ismath=False)[0]
        _glyphs[ch] = (Path(path.vertices / _REF, path.codes), advance / _REF)
    return _glyphs[ch]


def layout(text: str, size: float) -> list[tuple[str, float, float]]:
    """(line, x, y) of each line of ``text``: where its baseline starts, in points from the centre of
    the text block."""
    lines = text.split("\n")
    line_h = 1.2 * size
    # Centre the block of lines; 0.36 * size puts the middle of a digit on the line's centre.
    return [(line, -sum(_glyph(ch)[1] for ch in line) * size / 2, ((len(lines) - 1) / 2 - i) * line_h - 0.36 * size)
            for i, line in enumerate(lines)]


def half_extent(text: str, size: float) -> tuple[float, float]:
    """Half the width and half the height, in points, of ``text`` laid out by :func:`layout`."""
    lines = layout(text, size)
    return max(-x for _, x, _ in lines), len(lines) * 1.2 * size / 2


class CellLabels(Artist):
    """Texts centred on data points, ``size`` points high, each in its own colour. A raster canvas gets
    one path collection per distinct character (the glyph outline made once, each use an offset); a
    vector file gets each line as text in the figure's font, placed where the raster glyphs go."""

    def __init__(self, xs, ys, texts, colors, size: float = 6.0):
        super().__init__()
        self.set_in_layout(False)
        self.set_zorder(3)  # above the image and cell outlines, like text
        self.texts = list(texts)
        self._xy = np.column_stack([xs, ys]).astype(float)
        self._rgba = to_rgba_array(list(colors))
        self._size = size
        self._lines = [(i, *line) for i, text in enumerate(self.texts) for line in layout(text, size)]
        uses: dict[str, list[tuple[int, float, float]]] = {}
        for i, line, x, y in self._lines:
            for ch in line:
                path, advance = _glyph(ch)
                if len(path.vertices):
                    uses.setdefault(ch, []).append((i, x, y))
                x += advance * size
        self._uses = {ch: (np.array([u[0] for u in us]), np.array([u[1:] for u in us]))
                      for ch, us in uses.items()}

    def draw(self, renderer):
        if not self.get_visible() or not self._lines:
            return
        # Offsets are placed in display units at draw time, so any dpi or figure size works.
        centres = self.axes.transData.transform(self._xy)
        px = renderer.points_to_pixels(1.0)
        gc = renderer.new_gc()
        gc.set_clip_rectangle(self.axes.bbox)
        gc.set_snap(False)  # snapping would drop the thin strokes of '.', '±' and '/' at small sizes
        renderer.open_group("cell_labels", gid=self.get_gid())
        if isinstance(renderer, RendererAgg):
            glyph_to_display = Affine2D().scale(self._size * px)
            for ch, (idx, shift) in self._uses.items():
                renderer.draw_path_collection(
                    gc, glyph_to_display, [_glyph(ch)[0]], _NO_TRANSFORMS, centres[idx] + shift * px,
                    IdentityTransform(), self._rgba[idx], _NO_COLOR, [0.0], [(0, None)], [True], [None], "screen")
        else:  # real text in a vector file: numbers a reader can select, search and edit (Type 42 fonts)
            prop = FontProperties(size=self._size)
            for i, line, x, y in self._lines:
                gc.set_foreground(self._rgba[i], isRGBA=True)
                renderer.draw_text(gc, centres[i, 0] + x * px, centres[i, 1] + y * px, line, prop, 0.0)
        renderer.close_group("cell_labels")
        gc.restore()
        self.stale = False


def add_labels(ax, xs, ys, texts, colors, size: float = 6.0) -> CellLabels:
    """Draw ``texts`` centred at data points (xs, ys) of ``ax`` in ``colors``, ``size`` points high."""
    labels = CellLabels(xs, ys, texts, colors, size)
    ax.add_artist(labels)
    return labels
