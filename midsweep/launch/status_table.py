"""The table ``midsweep status`` prints (and the launchers print at the end of a sweep): one line per run, sized
for a terminal. Columns that say nothing about the runs shown go (a coordinate or a column constant or absent
across them), coordinate keys are shortened to their shortest unambiguous ending (``mixture.weight`` ->
``weight``), the final held-out loss of each domain shows once a run is done, and the last column (reason / log)
is cut to the terminal's width (when printed to one). ``wide=True`` keeps every column, key and character.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from midsweep import rundir
from midsweep.launch import progress
from midsweep.launch.status import STATES
from midsweep.naming import short_keys

ALWAYS = ("run_id", "state", "step/total")
"""Columns every table has, even where all runs agree."""
LAST = "reason / log"
DROP_FIRST = ("job", "heartbeat", "fork of", "tok/s")
"""What goes first, in this order, when the table is wider than the terminal; then the loss columns together."""
MIN_LAST = 24
"""Characters of the last column kept before whole columns are dropped for width."""


@dataclass(frozen=True)
class Column:
    name: str
    cell: Callable
    """The run's text in this column, from its ``status.RunState``."""


def table(rows: list, wide: bool = False, width: Optional[int] = None) -> str:
    """The runs ``rows`` (``status.RunState``), the counts per state and the sweep's totals.
    ``width``: the terminal's columns (None: no limit, as for output to a file, whose log paths stay whole)."""
    columns = _columns(rows, wide)
    cells = [[c.name for c in columns]] + [[c.cell(r) for c in columns] for r in rows]
    if not wide:
        cells = [[row[i] for i in _kept(cells, columns)] for row in cells]
        cells = cells if width is None else _fit(cells, width)
    lines = _lines(cells)
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(f"{len(rows)} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if any(r.progress.stale for r in rows):
        lines.append(f"STALE: running, but no heartbeat for over {rundir.STALE_AFTER_S // 60} min: the process is "
                     "likely dead or hung; check its log, stop it, and rerun the sweep to resume the run")
    if rows:
        lines.append(progress.totals(rows))
    return "\n".join(lines)


def _columns(rows: list, wide: bool) -> list[Column]:
    keys = sorted({k for r in rows for k in r.coords})
    names = dict(zip(keys, keys if wide else short_keys(keys)))
    domains = sorted({d for r in rows for d in r.final})

    def coord(k):
        return Column(names[k], lambda r: _value(r.coords.get(k)))

    def loss(d):
        return Column(f"loss {d}", lambda r: _value(r.final.get(d), ".4f") if r.final else "-")

    return [Column("run_id", lambda r: r.run_id), Column("state", lambda r: r.state),
            Column("step/total", lambda r: f"{'-' if r.step is None else r.step}/{r.progress.total_steps or '?'}"),
            Column("tok/s", lambda r: "-" if r.progress.tok_per_s is None else f"{r.progress.tok_per_s:,.0f}"),
            Column("ETA", lambda r: "-" if r.state == "done" else progress.duration(r.progress.eta_s)),
            Column("heartbeat", _heartbeat), *map(coord, keys), *map(loss, domains),
            Column("fork of", lambda r: r.fork_of or "-"), Column("job", lambda r: str(r.job_id or "-")),
            Column(LAST, lambda r: "  ".join(x for x in (r.reason, r.log) if x))]


def _kept(cells: list[list[str]], columns: list[Column]) -> list[int]:
    """Indices of the columns that tell the runs shown apart: not absent in all, not one value for all."""
    body = cells[1:]
    keep = []
    for i, c in enumerate(columns):
        values = {row[i] for row in body} - {"-", ""}
        if c.name in ALWAYS or c.name == LAST and values or len(values) > 1 or len(body) == 1 and values:
            keep.append(i)
    return keep


def _fit(cells: list[list[str]], width: int) -> list[list[str]]:
    """Drop ``DROP_FIRST`` columns one by one, then the loss columns all together, while the last column has
    under ``MIN_LAST`` characters left; cut the last column to ``width``."""
    head = cells[0]
    for names in [[n] for n in DROP_FIRST if n in head] + [[n for n in head if n.startswith("loss ")]]:
        if width - _left_for_last(cells) >= MIN_LAST:
            break
        keep = [i for i, n in enumerate(cells[0]) if n not in names]
        cells = [[row[i] for i in keep] for row in cells]
    if cells[0][-1] == LAST:
        room = max(width - _left_for_last(cells), len(LAST))
        cells = [row[:-1] + [row[-1] if len(row[-1]) <= room else row[-1][:room - 1] + "…"] for row in cells]
    return cells


def _left_for_last(cells: list[list[str]]) -> int:
    """Characters the columns before the last one take, with their separators."""
    return sum(max(len(row[i]) for row in cells) + 2 for i in range(len(cells[0]) - 1))


def _lines(cells: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in cells]


def _heartbeat(r) -> str:
    p = r.progress
    if p.heartbeat_age_s is None or r.state == "done":
        return "-"
    return _ago(p.heartbeat_age_s) + (" STALE" if p.stale else "")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _value(v, fmt: str = "g") -> str:
    return "-" if v is None else format(v, fmt) if isinstance(v, float) else str(v)
