"""One HTML page per analysis: where the runs came from (provenance), a summary table, each study's figures and
tables, and what is missing or failed (never hidden). One self-contained file to send a colleague: every figure
is embedded in the page (its PDF, for a paper, is linked beside it)."""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import columns as C
from .provenance import provenance

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0;text-align:left}img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#555}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em;font-size:13px}dl.prov dt{font-weight:600}
dl.prov dd{margin:0}dl.prov code{white-space:pre-wrap;word-break:break-all}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}.bad{color:#b00}"""


@dataclass
class Section:
    """One study on the page."""

    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


def status_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per mixture kind (rows) and status (columns): one header row, no index levels."""
    kind = runs[C.KIND].fillna("?") if C.KIND in runs else pd.Series("?", index=runs.index)
    table = pd.crosstab(kind.rename("kind"), runs[C.STATUS].fillna("?"))
    return table.rename_axis(columns=None).reset_index()


def not_done(runs: pd.DataFrame) -> pd.DataFrame:
    """Failed, running and requeued runs with their reason, step and directory."""
    cols = [C.RUN_ID, C.STATUS, C.REASON, "step", C.KIND, C.DOMAIN, C.INTRODUCE_AT, C.WEIGHT, C.SEED, "path"]
    bad = runs[runs[C.STATUS] != C.DONE]
    return bad[[c for c in cols if c in bad]].sort_values([C.STATUS, C.RUN_ID])


def _table(df: pd.DataFrame, max_rows: int = 60) -> str:
    more = f"<p class=note>… {len(df) - max_rows} more rows in the CSV tables</p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—") + more


# A figure is shown at this many CSS pixels per inch of its size: its text then reads at about its point size.
SCREEN_PPI = 110


def _image(path: Path) -> str:
    """An <img> of the PNG as a data URI (the page shows it wherever the page goes), as wide on screen as the
    figure at SCREEN_PPI: the PNG's print resolution would make a small figure's text huge."""
    data = path.read_bytes()
    at = data.find(b"pHYs")  # pixels per metre, written by matplotlib from the dpi it saved at
    dpi = int.from_bytes(data[at + 4:at + 8], "big") * 0.0254 if at > 0 else SCREEN_PPI
    width = round(int.from_bytes(data[16:20], "big") / dpi * SCREEN_PPI)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" width={width} alt="{html.escape(path.stem)}">'


def _provenance(runs: pd.DataFrame, coords, sweep_dirs) -> str:
    rows = "".join(f"<dt>{html.escape(what)}</dt><dd>" + "<br>".join(
        f"<code>{html.escape(line)}</code>" if what == "commands" else html.escape(line) for line in lines) + "</dd>"
        for what, lines in provenance(runs, coords, sweep_dirs))
    return f"<h2>Provenance</h2><dl class=prov>{rows}</dl>"


def write_report(out_dir, sweep_dirs, runs: pd.DataFrame, sections: list[Section], problems: list[str],
                 skipped: list[str], no_baseline: pd.DataFrame | None = None, name: str = "report.html",
                 coords=()) -> Path:
    """Write the page and return its path."""
    out = Path(out_dir)
    rel = lambda p: html.escape(os.path.relpath(p, out))  # noqa: E731
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>midsweep analysis</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>midsweep analysis</h1>",
             f"<p class=note>Losses in {C.LOSS_UNIT}: the mean next-token cross-entropy on held-out tokens (with a "
             "byte-level tokenizer a token is a byte). Tables: runs.csv / curves.csv (and .parquet) next to this "
             "page.</p>",
             _provenance(runs, coords, sweep_dirs),
             "<h2>Runs</h2>", _table(status_summary(runs))]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        for fig in s.figures:
            if fig.suffix == ".png":
                pdf = fig.with_suffix(".pdf")
                link = f' (<a href="{rel(pdf)}">PDF</a>, next to this page)' if pdf.exists() else ""
                parts.append(f"<figure>{_image(fig)}<figcaption class=note>{rel(fig)}{link}</figcaption></figure>")
        for caption, df in s.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>{_table(df)}")
    bad = not_done(runs)
    parts.append(f"<h2>Missing, failed and unfinished ({len(bad)} runs)</h2>")
    parts.append(_table(bad) if len(bad) else "<p>Every run is done.</p>")
    if no_baseline is not None and len(no_baseline):
        parts.append(f"<h2>{C.NO_BASELINE.capitalize()} ({len(no_baseline)} runs)</h2><p class=bad>No done "
                     "mixture=none run equals these in everything but the mixture axes and the seed (model, "
                     "tokens, post-training, data, LR, base mix...): their forgetting and gains are left empty. "
                     "Fix: run the baseline with the same settings and mixture=none.</p>" + _table(no_baseline))
    for title, items in (("Not analysed", skipped), ("Problems reading the sweep", problems)):
        if items:
            parts.append(f"<h3>{title}</h3><ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
    parts.append("</body></html>")
    path = out / name
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
