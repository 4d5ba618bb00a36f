"""The text of ``midsweep-train --help``, read from the config dataclasses: Hydra lists the groups with their
options (including those of a user's --config-dir), then every field with its type, default and docstring.

conf/config.yaml sets ``hydra.help.template: ${midsweep_help:}``; importing this module (midsweep.app does)
registers that resolver, so the text is only built when --help asks for it.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing

from omegaconf import OmegaConf

from midsweep.config import RunConfig

RESOLVER = "midsweep_help"
_WIDTH = 110

HEADER = """midsweep-train: train one run, or with -m a grid of runs (a Hydra app).

  midsweep-train experiment=tiny_code mixture.introduce_at=0.3 mixture.weight=0.2
  midsweep-train -m experiment=tiny_code mixture.introduce_at=0.1,0.4,0.7 mixture.weight=0.1,0.3,0.6
  midsweep-train -m sweep=plasticity_window hydra/launcher=slurm_gpu hydra.launcher.preview=true

== Config groups (group=option) ==
"""

GROUPS_FOOTER = """
Your own options and groups: --config-dir DIR or hydra.searchpath=[file://DIR] adds DIR/<group>/<option>.yaml.
Launchers: hydra/launcher=<option> (see --hydra-help). The composed config: --cfg job.

== Fields (key: type = default) ==
"""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (the string literal after its annotation)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {node.target.id: inspect.cleandoc(doc.value.value) for node, doc in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)}


def template() -> str:
    """Hydra's help template: its $APP_CONFIG_GROUPS and $FLAGS_HELP, with the fields in between."""
    fields = "\n".join(_fields(RunConfig, ""))
    return HEADER + "$APP_CONFIG_GROUPS\n" + GROUPS_FOOTER + fields.replace("$", "$$") + "\n\n== Flags ==\n$FLAGS_HELP"


def _fields(cls: type, prefix: str) -> list[str]:
    hints, docs, lines = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):  # a group: its own section
            lines += ["", f"{key} ({tp.__name__}): {docs.get(f.name, '')}", *_fields(tp, key + ".")]
            continue
        lines.append(f"  {key}: {_type(tp)}{_default(f)}")
        lines += textwrap.wrap(docs.get(f.name, ""), _WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
        for inner in typing.get_args(tp):  # dict[str, SourceConfig], list[StageConfig]: the items' fields
            if dataclasses.is_dataclass(inner):
                item = f"{key}.<name>." if typing.get_origin(tp) is dict else f"{key}[i]."
                lines += [f"    {line}" for line in _fields(inner, item)]
    return lines


def _type(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        return " | ".join("null" if a is type(None) else _type(a) for a in args)
    if args:
        return f"{typing.get_origin(tp).__name__}[{', '.join(_type(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
    if value is dataclasses.MISSING or any(dataclasses.is_dataclass(v) for v in _values(value)):
        return ""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value) or '""'
    return f" = {text}" if len(text) <= 60 else ""


def _values(value) -> list:
    return list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else [value]


OmegaConf.register_new_resolver(RESOLVER, template, replace=True)
