"""docs/config.md, the configuration reference, generated from the config dataclasses so it cannot drift:
every key with its type, default and docstring, one section per group.

    python -m midsweep.config_reference            # rewrite docs/config.md
    python -m midsweep.config_reference --check    # exit 1 if docs/config.md is out of date (tests do this)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from midsweep.app_help import _default, _type, field_docs
from midsweep.config import RunConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"

HEADER = """# Configuration reference

Generated from the config dataclasses in `midsweep/config/` by `python -m midsweep.config_reference`
(a test fails when this file is out of date): every key, its type, its default and its docstring. Set any key
on the command line (`midsweep-train train.tokens=262144`) or in a YAML file of `conf/`; YAML files state
only what differs from these defaults. `<name>` stands for a key of a dictionary (a domain name), `[i]` for
an item of a list.
"""


def render() -> str:
    lines = [HEADER]
    docs = field_docs(RunConfig)
    hints = typing.get_type_hints(RunConfig)
    top = [f for f in dataclasses.fields(RunConfig) if not dataclasses.is_dataclass(hints[f.name])]
    lines += ["## Top level", "", *_table([_row(f, hints[f.name], docs, "") for f in top])]
    for f in dataclasses.fields(RunConfig):
        cls = hints[f.name]
        if dataclasses.is_dataclass(cls):
            lines += [f"## `{f.name}` ({cls.__name__}, group `conf/{f.name}/`)", "", _cell(docs.get(f.name, "")), "",
                      *_table(_rows(cls, f"{f.name}."))]
    return "\n".join(lines) + "\n"


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    hints, docs, rows = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        rows.append(_row(f, tp, docs, prefix))
        for inner in typing.get_args(tp):  # dict[str, SourceConfig], list[StageConfig]: the items' fields
            if dataclasses.is_dataclass(inner):
                item = f"{prefix}{f.name}.<name>." if typing.get_origin(tp) is dict else f"{prefix}{f.name}[i]."
                rows += _rows(inner, item)
    return rows


def _row(f: dataclasses.Field, tp, docs: dict, prefix: str) -> tuple[str, str, str, str]:
    default = _default(f).removeprefix(" = ")
    return (f"`{prefix}{f.name}`", _cell(f"`{_type(tp)}`"), _cell(f"`{default}`") if default else "",
            _cell(docs.get(f.name, "")))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    return ["| key | type | default | description |", "| --- | --- | --- | --- |",
            *(f"| {' | '.join(r)} |" for r in rows), ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check that docs/config.md is up to date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m midsweep.config_reference", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
