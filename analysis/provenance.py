"""Where a report's numbers came from: the code that made the runs, the commands and grid, the settings that
differ from midsweep's defaults, the data read, and when and where the runs ran. Rows of (what, text) for
the report, from the runs table and one config.yaml per experiment."""
from __future__ import annotations

import socket
from datetime import datetime, timezone

import pandas as pd
from omegaconf import OmegaConf

from . import columns as C
from .load import CONTRACT_VERSION, read_config
from midsweep.config import RunConfig
from midsweep.config.run import NON_SEMANTIC, flatten
from midsweep.launch.sharing import OVERRIDE as PREFIX_OVERRIDE
from midsweep.version import version

MULTIRUN = "midsweep-train -m"


def _counted(values: pd.Series) -> str:
    """Distinct values with how many runs have each, most common first ("—" for none)."""
    counts = values.dropna().astype(str).value_counts()
    return ", ".join(f"{v} ({n} runs)" if len(counts) > 1 else v for v, n in counts.items()) or "not recorded"


def commands(runs: pd.DataFrame) -> list[str]:
    """Per experiment, the one multirun command that makes its runs: each override key with every value the runs
    gave it (the grid a Hydra sweep expands)."""
    out = []
    if "overrides" not in runs:
        return out
    for _, g in runs.groupby(runs["experiment"].fillna("?"), sort=True):
        values: dict[str, list[str]] = {}
        for line in g["overrides"].dropna():
            for item in line.split(" "):
                key, _, value = item.partition("=")
                if key == PREFIX_OVERRIDE:  # the launcher's, for prefix sharing: not the user's command
                    continue
                values.setdefault(key, [])
                if value not in values[key]:
                    values[key].append(value)
        if values:
            out.append(f"{MULTIRUN} " + " ".join(f"{k}={','.join(sorted(v, key=_number_first))}"
                                                 for k, v in values.items()))
    return out


def _number_first(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def grid(runs: pd.DataFrame, coords) -> list[str]:
    """Each coordinate with more than one value over the runs, with its values (a key that only some mixture
    kinds read is absent from the others: that is no variation)."""
    out = []
    for c in coords:
        if c in runs and runs[c].nunique() > 1:
            vals = sorted(runs[c].dropna().unique(), key=lambda v: (isinstance(v, str), v))
            out.append(f"{c} = {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}")
    return out


def settings(runs: pd.DataFrame, coords) -> list[str]:
    """Per experiment, the config keys that change what a run computes (not NON_SEMANTIC: paths, cadence,
    progress...) whose value differs from midsweep's defaults (the config dataclasses), read from one of its
    runs' config.yaml; the grid's coordinates are left to the grid."""
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(RunConfig)))
    varying = {c for c in coords if c in runs and runs[c].nunique() > 1}
    out = []
    for name, g in runs.groupby(runs["experiment"].fillna("?"), sort=True):
        cfg = next((c for c in map(read_config, g["path"]) if c is not None), None)
        if cfg is None:
            out.append(f"{name}: no readable config.yaml")
            continue
        diff = [f"{k}={v}" for k, v in flatten(cfg).items()
                if k not in varying and not _non_semantic(k) and (k not in defaults or defaults[k] != v)]
        out.append(f"{name}: " + (" ".join(diff) or "the defaults"))
    return out


def _non_semantic(key: str) -> bool:
    return any(key == n or key.startswith(n + ".") for n in NON_SEMANTIC)


def data(runs: pd.DataFrame) -> list[str]:
    """Per domain, the content digest of the token shards the runs read (docs/data.md)."""
    cols = sorted(c for c in runs if c.startswith(C.DATA_PREFIX))
    return [f"{c.removeprefix(C.DATA_PREFIX)}: {_counted(runs[c])}" for c in cols]


def when_where(runs: pd.DataFrame) -> str:
    done = runs[runs[C.STATUS] == C.DONE]
    times = pd.to_datetime(done["updated"], utc=True, errors="coerce").dropna() if "updated" in done else []
    span = f"finished {times.min():%Y-%m-%d %H:%M} to {times.max():%Y-%m-%d %H:%M} UTC" if len(times) else \
        "no run finished"
    wall = done["wall_time_s"].sum() / 3600 if "wall_time_s" in done else 0
    return f"{span}; {wall:.2f} h of training; hosts: {_counted(runs.get('host', pd.Series(dtype=object)))}"


def provenance(runs: pd.DataFrame, coords, sweep_dirs) -> list[tuple[str, list[str]]]:
    """(what, lines) rows of the report's provenance block."""
    code = [f"midsweep {v}" for v in runs.get("code_version", pd.Series(dtype=object)).dropna().unique()]
    commits = _counted(runs.get("code_commit", pd.Series(dtype=object)))
    return [
        ("runs", [f"{len(runs)} runs in {', '.join(map(str, sweep_dirs))} (results contract {CONTRACT_VERSION})"]),
        ("code", [(", ".join(code) or "midsweep version not recorded") + f"; git commit: {commits}"]),
        ("commands", commands(runs) or ["not recorded"]),
        ("grid", grid(runs, coords) or ["no coordinate varies"]),
        ("settings differing from the defaults", settings(runs, coords)),
        ("data (shard digests)", data(runs) or ["not recorded"]),
        ("when and where", [when_where(runs)]),
        ("this report", [f"midsweep-analyze {version()} on {socket.gethostname()}, "
                         f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"]),
    ]
