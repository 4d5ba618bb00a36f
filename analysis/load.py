"""Read sweep directories into two tidy tables: ``runs`` (one row per run) and ``curves`` (one row per
evaluation point and domain). This is the analysis's only reader of run directories; it reads the
results contract (docs/results.md) whose file names and version ``midsweep.rundir`` owns (torch-free), so a
sweep made on a cluster is analysed anywhere pandas runs. A file it cannot read is reported as a problem
and the rest of the sweep is analysed.
"""
from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import json as pa_json

from . import columns as C
from midsweep import rundir, runfiles

CONTRACT_VERSION = rundir.CONTRACT
"""The results-contract version this reader understands (``"contract"`` in summary.json/status.json)."""

RUN_FILES = (rundir.SUMMARY, rundir.STATUS, rundir.METRICS, rundir.DOWNSTREAM)
DOWNSTREAM_FIELDS = ("step", "tokens", "task", "metric", "filter", "value", "stderr", "num_fewshot")
CURVE_FIELDS = ("step", "tokens", "phase", "domain", "loss", "lr", "event")
SUMMARY_FIELDS = ("steps", "tokens", "flops", "wall_time_s", "params")
# When one run id appears in several sweeps, keep the copy that got furthest.
STATUS_RANK = {C.DONE: 0, C.FAILED: 1, C.REQUEUED: 2, C.RUNNING: 3}
# Reading a run directory from a local page cache takes ~50 us; slower than this means a network file
# system, where reader threads pay off.
SAMPLE, SLOW_DIR_S = 200, 300e-6


@dataclass
class Sweep:
    """Everything read from one or more sweep directories."""

    runs: pd.DataFrame
    """One row per run: run_id, sweep, path, status, reason, step, one column per coordinate,
    ``final.<domain>`` losses, ``data.<domain>`` digests of the data read, steps, tokens, flops, wall_time_s,
    params, and its provenance: experiment, overrides (``key=value`` separated by spaces), updated, host,
    code_version, code_commit."""
    curves: pd.DataFrame
    """One row per (run, evaluation point, domain): run_id, sweep, step, tokens, phase, domain, loss, lr, event."""
    coords: list[str]
    """The coordinate columns of ``runs`` (config keys the studies vary)."""
    downstream: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per (run, step, task, metric) of ``midsweep evaluate`` (downstream.jsonl): run_id, sweep, step,
    tokens, task, metric, filter, value, stderr, num_fewshot. Empty when no run was evaluated."""
    problems: list[str] = field(default_factory=list)
    """Files that could not be read, duplicates dropped while merging: shown in the report."""


class SweepError(ValueError):
    """A sweep directory that cannot be analysed at all (missing, empty, wrong contract)."""


def load_sweeps(dirs, threads: int = 8) -> Sweep:
    """Read every run directory under each sweep directory and merge them (seeds are just a column)."""
    candidates: list[Path] = []
    problems: list[str] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise SweepError(f"sweep directory {d} does not exist: pass the train.out_dir of a sweep")
        candidates += [str(p) for p in rundir.run_dirs(d)]
        problems += [rundir.stray(p) for p in rundir.strays(d)]
    raw = _read_all(candidates, threads)
    for p, files in zip(candidates, raw):
        problems += [runfiles.unreadable(os.path.join(p, name), error) for name, error in files.pop(_ERRORS).items()]
    found = [(p, files) for p, files in zip(candidates, raw)
             if files[rundir.STATUS] is not None or files[rundir.SUMMARY] is not None]
    if not found and not problems:
        names = ", ".join(map(str, dirs))
        raise SweepError(f"no run directories (with status.json or summary.json) under {names}: "
                         "pass the directory the runs wrote into (train.out_dir)")
    parsed = [_parse_run(p, files, problems) for p, files in found]
    keyed = [(row, curve) for row, curve in parsed if row is not None]
    by_kind = _coords_by_kind(keyed)
    coords = sorted({k for row, _ in keyed for k in row.pop("_coords")})
    missing_coords = [(row, row["path"]) for row, _ in keyed if row.pop("_need_config")]
    _fill_coords_from_config(missing_coords, by_kind or {None: set(_KNOWN_COORDS)}, problems)
    coords = coords or sorted({k for row, _ in keyed for k in _KNOWN_COORDS if k in row})
    runs = pd.DataFrame([row for row, _ in keyed])
    if runs.empty:
        raise SweepError("no readable runs: " + "; ".join(problems))
    runs = _dedupe(runs, problems)
    _check_one_version_of_each_domain(runs, problems)
    for col in coords:
        if col not in runs:
            runs[col] = None
        runs[col] = _tidy(runs[col])
    kept = set(zip(runs[C.SWEEP], runs[C.RUN_ID]))
    curves = _curves_table([c for _, c in keyed], kept, problems)
    downstream = _downstream_table([c for _, c in keyed], kept, problems)
    runs = runs[_column_order(runs.columns, coords)].reset_index(drop=True)
    return Sweep(runs=runs, curves=curves, coords=coords, problems=problems, downstream=downstream)


_KNOWN_COORDS = (C.KIND, C.DOMAIN, C.INTRODUCE_AT, C.INTRODUCE_TOKENS, C.WEIGHT, C.SEED, C.SIZE, C.LR,
                 C.WARMUP, C.TRAIN_TOKENS, C.POSTTRAIN)


def _read_all(run_dirs: list[str], threads: int) -> list[dict[str, bytes | None]]:
    """The files of every run directory. Local, cached files read fastest in this one thread (reader
    threads only fight over the GIL); a cluster file system's latency is hidden by reading in threads.
    The first directories, timed, tell which one this is."""
    head = run_dirs[:SAMPLE]
    start = time.perf_counter()
    raw = [_read_files(p) for p in head]
    rest = run_dirs[SAMPLE:]
    if threads > 1 and rest and (time.perf_counter() - start) / len(head) > SLOW_DIR_S:
        chunks = [rest[i:i + 64] for i in range(0, len(rest), 64)]
        with ThreadPoolExecutor(threads) as pool:
            return raw + [r for chunk in pool.map(lambda c: [_read_files(p) for p in c], chunks) for r in chunk]
    return raw + [_read_files(p) for p in rest]


_ERRORS = "_errors"


def _read_files(run_dir: str) -> dict:
    """{file name: bytes, or None when missing or unreadable}, and under ``_ERRORS`` {name: why unreadable}."""
    out: dict = {_ERRORS: {}}
    for name in RUN_FILES:  # plain str paths and open(): pathlib costs more than the read itself here
        try:
            with open(os.path.join(run_dir, name), "rb") as f:
                out[name] = f.read()
        except FileNotFoundError:
            out[name] = None
        except OSError as e:  # a teammate's private file, a directory in its place, a symlink loop: say so, go on
            out[name] = None
            out[_ERRORS][name] = e
    return out


def _json(run_dir: str, name: str, data: bytes | None, fields: dict, problems: list[str]) -> dict | None:
    if data is None:
        return None
    read = runfiles.parse(os.path.join(run_dir, name), data, fields)
    problems += read.problems
    obj = read.data
    if obj is None:
        return None
    contract = obj.get("contract")
    if contract != CONTRACT_VERSION:
        problems.append(f"{run_dir}: {name} has contract {contract!r}, this analysis reads contract "
                        f"{CONTRACT_VERSION}; the run is left out. Fix: analyse it with the midsweep version that "
                        "wrote it, or rerun it with this one")
        return None
    return obj


def _parse_run(run_dir: str, files: dict, problems: list[str]) -> tuple[dict | None, dict | None]:
    summary = _json(run_dir, rundir.SUMMARY, files[rundir.SUMMARY], runfiles.SUMMARY, problems)
    status = _json(run_dir, rundir.STATUS, files[rundir.STATUS], runfiles.STATUS, problems)
    if summary is None and status is None:
        return None, None
    summary, status = summary or {}, status or {}
    run_id = summary.get("run_id") or os.path.basename(run_dir)
    coords = summary.get("coords") or {}
    row = {C.RUN_ID: run_id, C.SWEEP: os.path.dirname(run_dir), "path": run_dir,
           "experiment": summary.get("experiment"),
           # status.json says what the run is doing now; summary.json may lag behind it.
           C.STATUS: status.get("status") or summary.get("status"),
           C.REASON: status.get("reason") if status else summary.get("reason"),
           "step": status.get("step", summary.get("steps")), "updated": status.get("updated"),
           "_coords": list(coords), "_need_config": not coords}
    row.update(coords)
    for domain, loss in (summary.get("final") or {}).items():
        row[C.final(domain)] = loss
    for domain, digest in (summary.get("data") or {}).items():
        row[C.data(domain)] = digest
    for key in SUMMARY_FIELDS:
        row[key] = summary.get(key)
    # Provenance (the report): what made the run, with which code, where.
    row["overrides"] = " ".join(f"{k}={v}" for k, v in (summary.get("overrides") or {}).items()) or None
    code = summary.get("code") or {}
    row.update(host=status.get("host"), code_version=code.get("version"), code_commit=code.get("commit"))
    return row, {C.RUN_ID: run_id, C.SWEEP: row[C.SWEEP], "path": run_dir, "lines": files[rundir.METRICS],
                 "downstream": files[rundir.DOWNSTREAM]}


def read_config(run_dir) -> dict | None:
    """A run's resolved config (config.yaml) as nested dicts, or None when it cannot be read."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / rundir.CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _coords_by_kind(keyed) -> dict:
    """{mixture kind: the coordinates its runs' summaries carry}: a kind's runs only ever get those."""
    out: dict = {}
    for row, _ in keyed:
        if not row["_need_config"]:
            out.setdefault(row.get(C.KIND), set()).update(row["_coords"])
    return out


def _fill_coords_from_config(rows_paths, keys_by_kind: dict, problems: list[str]) -> None:
    """A run that has not evaluated yet has no summary.json: take its coordinates from config.yaml, only
    those that summaries of its mixture kind carry (a key the kind does not read stays absent)."""
    if not rows_paths:
        return
    import yaml  # only needed for runs without a summary yet

    every = set().union(*keys_by_kind.values())
    for row, path in rows_paths:
        try:
            cfg = yaml.safe_load((Path(path) / rundir.CONFIG).read_text())
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{path}: no summary.json and config.yaml unreadable ({e}); "
                            "its grid cell shows as missing")
            continue
        kind = (cfg.get("mixture") or {}).get("kind") if isinstance(cfg, dict) else None
        keys = keys_by_kind.get(kind) or keys_by_kind.get(None) or every
        for key in sorted(keys | {C.KIND}):
            node = cfg
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                row[key] = node


def _dedupe(runs: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
    rank = runs[C.STATUS].map(STATUS_RANK).fillna(len(STATUS_RANK))
    runs = runs.assign(_rank=rank).sort_values(["_rank", "updated"], ascending=[True, False], kind="stable")
    dup = runs.duplicated(C.RUN_ID, keep="first")
    for run_id in runs.loc[dup, C.RUN_ID]:
        kept = runs.loc[runs[C.RUN_ID] == run_id].iloc[0]
        problems.append(f"run {run_id} is in several sweeps; kept the copy in {kept[C.SWEEP]} ({kept[C.STATUS]})")
    return runs.loc[~dup].drop(columns="_rank").sort_values([C.SWEEP, C.RUN_ID], kind="stable")


def _check_one_version_of_each_domain(runs: pd.DataFrame, problems: list[str]) -> None:
    """Runs that read different data under one domain name (data edited or re-downloaded while the sweep ran)
    do not measure the same thing: say which runs read which version."""
    for col in sorted(c for c in runs if c.startswith(C.DATA_PREFIX)):
        versions = runs.groupby(col)[C.RUN_ID].agg(list)
        if len(versions) > 1:
            listed = "; ".join(f"{digest}: {len(ids)} run(s) ({', '.join(sorted(ids)[:5])}"
                               + (", ..." if len(ids) > 5 else "") + ")" for digest, ids in versions.items())
            problems.append(f"domain {col[len(C.DATA_PREFIX):]!r}: the runs read {len(versions)} different versions "
                            f"of its data ({listed}); their numbers are comparable only if the sweep varies that "
                            "data on purpose. Fix: rerun the runs of the wrong version on the right data (delete "
                            "their directories and launch the sweep again)")


def _tidy(col: pd.Series) -> pd.Series:
    """One type per coordinate column (parquet needs it): numbers stay numbers, anything mixed becomes text."""
    values = col.dropna()
    if values.empty:
        return col.astype(object)
    if all(isinstance(v, bool) for v in values):
        return col.astype("boolean")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pd.to_numeric(col)
    return col.map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).astype(object)


CURVE_SCHEMA = pa.schema([("step", pa.int64()), ("tokens", pa.int64()), ("phase", pa.string()),
                          ("domain", pa.string()), ("loss", pa.float64()), ("lr", pa.float64()),
                          ("event", pa.string())])


def _curves_table(sources: list[dict], keep: set, problems: list[str]) -> pd.DataFrame:
    """All metrics.jsonl rows in one table. The files are parsed together by pyarrow's JSON reader
    (one C++ pass instead of a Python dict per row); when that fails, or leaves a row without its step or
    domain, every file is parsed in Python, which names the lines it leaves out."""
    raws, blobs, ids, sweeps, paths, counts = [], [], [], [], [], []
    for src in sources:
        data = src["lines"]
        if not data or (src[C.SWEEP], src[C.RUN_ID]) not in keep:
            continue
        # Whole files, joined: rows per file = newlines, checked against the parsed total below.
        raws.append(data)
        blobs.append(data if data.endswith(b"\n") else data + b"\n")
        ids.append(src[C.RUN_ID])
        sweeps.append(src[C.SWEEP])
        paths.append(os.path.join(src["path"], rundir.METRICS))
        counts.append(blobs[-1].count(b"\n"))
    try:
        if not blobs:
            raise pa.ArrowInvalid("no rows")
        table = pa_json.read_json(io.BytesIO(b"".join(blobs)), parse_options=pa_json.ParseOptions(
            explicit_schema=CURVE_SCHEMA, unexpected_field_behavior="ignore"))
        if table.num_rows != sum(counts) or table["step"].null_count or table["domain"].null_count:
            raise pa.ArrowInvalid("blank lines or rows that are not metrics rows")
        curves = table.select(list(CURVE_FIELDS)).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a torn line, a NaN loss, a hostile line: file by file in Python
        rows = []
        for i, (raw, path) in enumerate(zip(raws, paths)):
            parsed, bad = runfiles.rows(path, raw, runfiles.METRICS_ROW)
            problems += bad
            rows += parsed
            counts[i] = len(parsed)
        curves = pd.DataFrame.from_records(rows, columns=list(CURVE_FIELDS))
    curves.insert(0, C.SWEEP, np.repeat(np.array(sweeps, dtype=object), counts))
    curves.insert(0, C.RUN_ID, np.repeat(np.array(ids, dtype=object), counts))
    for k in ("step", "tokens", "loss", "lr"):
        curves[k] = pd.to_numeric(curves[k], errors="coerce")
    return curves


def _downstream_table(sources: list[dict], keep: set, problems: list[str]) -> pd.DataFrame:
    """Every downstream.jsonl row (few per run: parsed in Python), tagged with its run."""
    rows = []
    for src in sources:
        if src["downstream"] and (src[C.SWEEP], src[C.RUN_ID]) in keep:
            parsed, bad = runfiles.rows(os.path.join(src["path"], rundir.DOWNSTREAM), src["downstream"],
                                        runfiles.DOWNSTREAM_ROW)
            problems += bad
            rows += [{C.RUN_ID: src[C.RUN_ID], C.SWEEP: src[C.SWEEP], **{k: r.get(k) for k in DOWNSTREAM_FIELDS}}
                     for r in parsed]
    table = pd.DataFrame.from_records(rows, columns=[C.RUN_ID, C.SWEEP, *DOWNSTREAM_FIELDS])
    for k in ("step", "tokens", "value", "stderr"):
        table[k] = pd.to_numeric(table[k], errors="coerce")
    return table


def _column_order(cols, coords: list[str]) -> list[str]:
    head = [C.RUN_ID, C.SWEEP, "experiment", C.STATUS, C.REASON, "step"]
    finals = sorted(c for c in cols if c.startswith(C.FINAL_PREFIX))
    data = sorted(c for c in cols if c.startswith(C.DATA_PREFIX))
    rest = [c for c in cols if c not in head and c not in coords and c not in finals and c not in data]
    return head + coords + finals + rest + data


def save_tables(sweep: Sweep, out_dir) -> list[Path]:
    """Write runs and curves (and downstream, where runs were evaluated) as CSV and parquet; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = [("runs", sweep.runs), ("curves", sweep.curves)] + ([("downstream", sweep.downstream)]
                                                                  if len(sweep.downstream) else [])
    for name, df in tables:
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)
        paths += [out / f"{name}.csv", out / f"{name}.parquet"]
    return paths


def read_tables(out_dir, fmt: str = "parquet") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read back the runs and curves tables written by :func:`save_tables`."""
    out = Path(out_dir)
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    return read(out / f"runs.{fmt}"), read(out / f"curves.{fmt}")
