"""What a reader of the analysis sees: every figure `midsweep-analyze` writes keeps its text inside the figure and
its legends off the data, is wide enough to print, and its PDF carries real (Type 42) fonts with the numbers as
text; the report is one valid, self-contained HTML page that says where its runs came from."""
import base64
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_templates import engine_templates
from runner import REPO
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.legend import Legend
from matplotlib.text import Text

from midsweep_analysis import columns as C
from midsweep_analysis import style, synthetic
from midsweep_analysis.cli import main
from midsweep import rundir

TIMES, WEIGHTS = [0.1, 0.3, 0.5, 0.7], [0.1, 0.25, 0.5, 0.9]
SLACK = 1.0  # pixels: anti-aliasing may reach half a pixel past a box


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Every figure the analysis draws, on runs copied from engine-written ones: the demo's sweep (a one-seed
    plasticity grid, post-trained, with a failed cell and the continued control) and one of the other studies
    (a reuse-law grid, upsampling, re-warming, downstream scores). Returns (the demo's analysis dir,
    {figure name: (matplotlib figure, folder written to)})."""
    tpl = engine_templates(tmp_path_factory.getbasetemp())
    base = tmp_path_factory.mktemp("figures")
    demo, other = base / "demo", base / "other"
    written = synthetic.plasticity_sweep(demo, tpl, TIMES, WEIGHTS, [0], posttrain=True)
    synthetic.set_status(written["path"].iloc[-1], C.FAILED, "non-finite loss (nan) at step 57")
    for t in TIMES:
        synthetic.clone_run(tpl["continued+posttrain"], demo, {C.SIZE: "tiny", C.SEED: 0, C.INTRODUCE_AT: t},
                            {"code": 2.1, C.GENERAL: 3.2 + t, C.TARGET: 2.2})
    synthetic.continued_sweep(other, tpl, [1e6, 3e6, 1e7], [1e6, 3e6, 1e7], dict(A=2000, alpha1=0.3, alpha2=0.25,
                                                                               alpha3=0.005, E=1.5))
    synthetic.upsample_sweep(other, tpl, [0.1, 0.2, 0.4])
    rewarm = synthetic.rewarm_sweep(other, tpl, [1e-3, 3e-3], [0.01, 0.05])
    for i, run in enumerate(rewarm["path"].iloc[:2]):
        rundir.append_jsonl(run / rundir.DOWNSTREAM, [
            {"step": s, "tokens": 128 * s, "request": "arc_easy", "task": "arc_easy", "metric": "acc",
             "filter": "none", "value": 0.3 + 0.01 * s + 0.05 * i, "stderr": 0.01, "num_fewshot": 0, "samples": 100}
            for s in (4, 8)])
    seen = {}
    save = style.save

    def keep(fig, out_dir, name, formats=style.FORMATS):
        seen[name] = fig, Path(out_dir)
        return save(fig, out_dir, name, formats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(style, "save", keep)
        assert main([str(demo), "--bootstrap", "50"]) == 0
        assert main([str(other), "--bootstrap", "50"]) == 0
    return demo / "analysis", seen


def test_every_study_is_drawn(analysed):
    _, figs = analysed
    assert set(figs) >= {"heatmap_in_domain", "heatmap_forgetting", "heatmap_target_loss", "plasticity_window",
                         "midtrain_vs_continued", "upsampling", "rewarm", "reuse_law_code_tiny", "downstream"}


def _data_points(fig) -> np.ndarray:
    """Display coordinates of every marker and line vertex drawn on the figure's axes."""
    pts = [np.zeros((0, 2))]
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_visible() and line.get_label() != "_nolegend_" or line.get_marker() not in ("", "None", None):
                xy = line.get_xydata()
                if len(xy) and line.get_transform() == ax.transData:
                    pts.append(ax.transData.transform(xy))
        for coll in ax.collections:
            offsets = coll.get_offsets()
            if len(offsets) and coll.get_offset_transform() == ax.transData:
                pts.append(ax.transData.transform(offsets))
    pts = np.concatenate(pts)
    return pts[np.isfinite(pts).all(axis=1)]


def _inside(box, outer) -> bool:
    return (box.x0 >= outer.x0 - SLACK and box.y0 >= outer.y0 - SLACK and box.x1 <= outer.x1 + SLACK
            and box.y1 <= outer.y1 + SLACK)


@pytest.mark.parametrize("name", ["heatmap_in_domain", "heatmap_forgetting", "heatmap_target_loss",
                                  "plasticity_window", "midtrain_vs_continued", "upsampling", "rewarm",
                                  "reuse_law_code_tiny", "downstream"])
def test_no_text_leaves_the_figure_and_no_legend_covers_data(analysed, name):
    fig = analysed[1][name][0]
    renderer = FigureCanvasAgg(fig).get_renderer()  # saved figures are closed: a canvas of their own
    fig.draw(renderer)
    # What is drawn: each axes' ticks, labels, title and legend, and the figure's own texts and legends.
    for artist in [ax for ax in fig.axes if ax.get_visible()] + fig.texts + fig.legends:
        box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else None
        box = box if box is not None else artist.get_window_extent(renderer)
        if not _inside(box, fig.bbox):
            texts = [t.get_text() for t in artist.findobj(Text) if t.get_visible() and t.get_text().strip()
                     and not _inside(t.get_window_extent(renderer), fig.bbox)]
            pytest.fail(f"{name}: {box} reaches outside the figure {fig.bbox.bounds}: {texts[:5]}")
    points = _data_points(fig)
    for legend in fig.findobj(Legend):
        box = legend.get_window_extent(renderer)
        assert _inside(box, fig.bbox), f"{name}: a legend outside the figure"
        covered = ((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0)
                   & (points[:, 1] < box.y1))
        assert not covered.any(), f"{name}: the legend covers {covered.sum()} data points"
        for ax in fig.axes:
            if ax.get_images():
                assert not box.overlaps(ax.bbox), f"{name}: a legend over a heatmap's cells"


@pytest.mark.parametrize("name", ["heatmap_in_domain", "heatmap_forgetting", "heatmap_target_loss"])
def test_a_heatmaps_heading_names_each_mark_drawn_and_clears_the_panel_titles(analysed, name):
    fig = analysed[1][name][0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    text = fig.get_suptitle()
    (heading,) = [t for t in fig.findobj(Text) if t.get_text() == text]
    lined = any(line.get_label() == "best weight" for ax in fig.axes for line in ax.get_lines())
    # the demo's target loss has the best-weight line; forgetting never; the other sweep's in-domain grid has
    # one introduction time, so no line (and the heading says none)
    assert lined == (name == "heatmap_target_loss")
    assert ("line: the best weight at each introduction time" in text) == lined
    assert "outlined = best" in text and "hatched = no result" in text
    box = heading.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_visible() and ax.get_title():
            assert not box.overlaps(ax.title.get_window_extent(renderer)), f"{name}: heading over a panel title"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_pngs_are_print_resolution(analysed):
    for name, (_, folder) in analysed[1].items():
        width, _ = _png_size((folder / f"{name}.png").read_bytes())
        assert width >= 1000, f"{name}.png is {width} px wide"


def _pdf_texts(pdf: bytes) -> list[str]:
    """The text drawn in a PDF, one string per text-showing operator (Tj, or a TJ array with kerning), read the
    way a viewer's selection reads it: Type 42 fonts write UTF-16 codes."""
    texts = []
    for m in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            content = zlib.decompress(m.group(1))
        except zlib.error:
            continue
        for op in re.finditer(rb"\[(.*?)\]\s*TJ|(\((?:\\.|[^\\)])*\))\s*Tj", content, re.S):
            parts = re.findall(rb"\(((?:\\.|[^\\)])*)\)", op.group(0))
            raw = b"".join(re.sub(rb"\\(.)", rb"\1", p, flags=re.S) for p in parts)
            texts.append(raw.decode("utf-16-be", "replace"))
    return texts


def test_pdfs_embed_truetype_fonts_and_the_cell_numbers_are_text(analysed):
    out, figs = analysed
    for name, (_, folder) in figs.items():
        pdf = (folder / f"{name}.pdf").read_bytes()
        assert b"/Type3" not in pdf, f"{name}.pdf has Type 3 fonts"
        assert b"/FontFile2" in pdf and b"/ToUnicode" in pdf, f"{name}.pdf embeds no TrueType font"
    # Every done cell's value of a heatmap is text a reader can select, not outlines.
    table = pd.read_csv(out / "heatmap_in_domain.csv")
    texts = set(_pdf_texts((out / "figures" / "heatmap_in_domain.pdf").read_bytes()))
    assert {f"{v:.3f}" for v in table["mean"].dropna()} <= texts


class _Page(HTMLParser):
    """A page's tables (rows of cells, header cells marked), image sources, links and unclosed elements."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}
    IMPLIED = {"p", "li", "dt", "dd", "tr", "td", "th"}  # HTML may leave these open

    def __init__(self):
        super().__init__()
        self.tables, self.srcs, self.hrefs, self.open, self.errors = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append([tag, ""])
        elif tag == "img":
            self.srcs.append(attrs.get("src", ""))
        elif tag == "a":
            self.hrefs.append(attrs.get("href", ""))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        while self.open and self.open[-1] != tag and self.open[-1] in self.IMPLIED:
            self.open.pop()
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data):
        if self.tables and self.tables[-1] and self.tables[-1][-1]:
            self.tables[-1][-1][-1][1] += data.strip()


def test_the_report_is_one_valid_self_contained_page(analysed):
    out, _ = analysed
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    assert not page.errors and not [t for t in page.open if t not in _Page.IMPLIED], (page.errors, page.open)
    assert page.tables
    for table in page.tables:
        header, *rows = table
        assert all(kind == "th" and text for kind, text in header), f"a header cell is empty: {header}"
        assert all(len(row) == len(header) for row in rows), f"rows of another width than the header {header}"
    # The runs table: one row per mixture kind, one column per status.
    runs = next(t for t in page.tables if t[0][0][1] == "kind")
    assert [text for _, text in runs[0]] == ["kind", "done", "failed"]
    # Every figure is in the page itself; only the PDFs beside it are linked, and they exist.
    assert len(page.srcs) == 5 and all(src.startswith("data:image/png;base64,") for src in page.srcs)
    assert _png_size(base64.b64decode(page.srcs[0].split(",", 1)[1]))[0] >= 1000
    assert page.hrefs and all(h.endswith(".pdf") and (out / h).exists() for h in page.hrefs)


def test_the_report_says_where_its_runs_came_from(analysed):
    out, _ = analysed
    page = (out / "report.html").read_text()
    prov = page[page.index("<h2>Provenance</h2>"):page.index("<h2>Runs</h2>")]
    runs = pd.read_csv(out / "runs.csv")
    for what in ("code", "commands", "grid", "settings differing from the defaults", "data (shard digests)",
                 "when and where", "this report"):
        assert f"<dt>{what}</dt>" in prov
    assert "mixture.introduce_at = 0.1, 0.3, 0.5, 0.7" in prov and "mixture.weight = 0.1, 0.25, 0.5, 0.9" in prov
    for domain in ("code", "general", "target"):
        assert f"{domain}: {runs[C.data(domain)].dropna().iloc[0]}" in prov
    assert f"hosts: {runs['host'].iloc[0]}" in prov
    assert f"{len(runs)} runs in" in prov


def test_the_readme_shows_the_demos_figures():
    """The README shows the demo's figures as they come out (made smaller), each well under 300 KB."""
    shown = re.findall(r"\]\((docs/img/demo_(\w+)\.png)\)", (REPO / "README.md").read_text())
    assert {name for _, name in shown} >= {"plasticity_window", "heatmap_target_loss", "heatmap_forgetting",
                                           "midtrain_vs_continued"}
    for path, _ in shown:
        data = (REPO / path).read_bytes()
        assert len(data) < 200_000 and _png_size(data)[0] >= 1000, path


def _luma(rgba) -> np.ndarray:
    return np.asarray(rgba)[..., :3] @ np.array([0.2126, 0.7152, 0.0722])


def test_colour_maps_read_in_grey():
    """Printed in grey, a loss map still orders its values (lightness rises with the value) and the
    difference map still shows the size of a difference (lightest at 0, darker towards both ends)."""
    seq = _luma(style.plt.get_cmap(style.SEQUENTIAL)(np.linspace(0, 1, 64)))
    assert (np.diff(seq) > 0).all()
    div = _luma(style.plt.get_cmap(style.DIVERGING)(np.linspace(0, 1, 65)))
    assert (np.diff(div[:33]) > 0).all() and (np.diff(div[32:]) < 0).all()
