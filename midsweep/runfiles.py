"""Run files read by those who must not stop at one bad run (``midsweep status``, the analysis): a file that is
not a JSON object, or a field whose value is not what the results contract (docs/results.md) says, is named as a
problem (the file's path, what is wrong) and left out; the valid rest is kept. Torch-free.

The files are written by the engine (``midsweep.train.results``, ``midsweep.rundir``); these tables say which
value each field may hold, for the fields their readers use.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from midsweep import rundir

FIX = "Fix: restore the file, or delete the run's directory and launch the sweep again to rerun it"


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str(v) -> bool:
    return isinstance(v, str)


def _object(v) -> bool:
    return isinstance(v, dict)


def _time(v) -> bool:
    try:
        time.strptime(v, "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return False
    return True


def _numbers(v) -> bool:
    return isinstance(v, dict) and all(_number(x) or x is None for x in v.values())


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _prefix(v) -> bool:
    return isinstance(v, dict) and _int(v.get("step")) and (v.get("parent") is None or _str(v.get("parent")))


Check = tuple[Callable[[object], bool], str]
STATUS: dict[str, Check] = {
    "contract": (_int, "an integer"), "status": (lambda v: v in rundir.STATUSES, f"one of {rundir.STATUSES}"),
    "step": (_int, "an integer"), "reason": (_str, "text"), "updated": (_time, "a time like 2026-01-31T12:00:00Z"),
    "host": (_str, "text"), "slurm_job_id": (_str, "text"), "log": (_str, "text"),
    "total_steps": (_int, "an integer"), "tok_per_s": (_number, "a number"), "eta_s": (_number, "a number")}
"""status.json: what each field may hold (null is allowed for every field)."""
SUMMARY: dict[str, Check] = {
    "contract": (_int, "an integer"), "run_id": (lambda v: isinstance(v, str) and bool(rundir.RUN_ID.match(v)),
                                                "a run id (12 hex characters)"),
    "experiment": (_str, "text"), "status": STATUS["status"], "reason": (_str, "text"),
    "coords": (_object, "an object {config key: value}"), "final": (_numbers, "an object {domain: loss}"),
    "phase_end": (_object, "an object"), "data": (_object, "an object {domain: digest}"),
    "prefix": (_prefix, 'an object with an integer "step"'), "steps": (_int, "an integer"),
    "tokens": (_int, "an integer"), "flops": (_number, "a number"), "wall_time_s": (_number, "a number"),
    "params": (_int, "an integer"), "overrides": (_object, "an object {config key: value}"),
    "code": (_object, 'an object {"version": ..., "commit": ...}')}
"""summary.json: what each field may hold (null is allowed for every field)."""
PREFIX: dict[str, Check] = {"step": (_int, "an integer"), "parent": (_str, "a run id")}
"""prefix.json (a fork's record of the prefix it started from)."""
MANIFEST: dict[str, Check] = {"contract": (_int, "an integer"), "runs": (_object, "an object {run id: entry}"),
                              "updated": (_str, "text")}
"""sweep_manifest.json (``midsweep.launch.manifest``)."""
MANIFEST_ENTRY: dict[str, Check] = {
    "overrides": (_strings, "a list of overrides"), "run_dir": (_str, "text"), "action": (_str, "text"),
    "job_id": (_str, "a SLURM job id"), "log": (_str, "text"), "stderr": (_str, "text"),
    "submission_dir": (_str, "text"), "prefix": (_prefix, 'an object with an integer "step"'),
    "launched": (_str, "text")}
"""One run's entry in sweep_manifest.json."""


@dataclass
class Read:
    data: Optional[dict]
    """The file's object, less the fields that hold something else; None when missing or not an object."""
    problems: list[str] = field(default_factory=list)
    """One line per file with something wrong: its path, what is wrong, what was done about it."""


def parse(path: str, raw: bytes, fields: dict[str, Check]) -> Read:
    """The JSON object in ``raw`` (the content of ``path``), checked against ``fields``."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        return Read(None, [f"{path} is not valid JSON ({e}); ignored. {FIX}"])
    if not isinstance(obj, dict):
        return Read(None, [f"{path} holds a JSON {type(obj).__name__}, not an object; ignored. {FIX}"])
    return check(path, obj, fields)


def check(where: str, obj: dict, fields: dict[str, Check]) -> Read:
    """``obj`` less the fields that hold something else than ``fields`` says, named in one problem line."""
    data, wrong = {}, []
    for key, value in obj.items():
        check = fields.get(key)
        if value is None or check is None or check[0](value):
            data[key] = value
        else:
            wrong.append(f"{key!r} is {_show(value)}, not {check[1]}")
    if not wrong:
        return Read(data)
    return Read(data, [f"{where}: {'; '.join(wrong)}; {'that field is' if len(wrong) == 1 else 'those fields are'} "
                       f"ignored. {FIX}"])


def read(path, fields: dict[str, Check]) -> Read:
    """``parse`` of the file at ``path``: Read(None) when it is missing, a problem when it cannot be read."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return Read(None)
    except OSError as e:  # a teammate's private file, a directory in its place, a symlink loop
        return Read(None, [unreadable(path, e)])
    return parse(path, raw, fields)


def unreadable(path: str, error: OSError) -> str:
    """The problem line of a file that is there but cannot be read."""
    return (f"{path}: cannot read {os.path.basename(path)} ({error.strerror or type(error).__name__}); ignored. "
            f"Fix: make it a readable file (e.g. chmod a+r {path}), or remove it")


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Rows:
    """What each row of a jsonl file may hold, and the fields it must have."""

    fields: dict[str, Check]
    required: tuple[str, ...]

    def fits(self, row) -> bool:
        return (isinstance(row, dict) and all(row.get(key) is not None for key in self.required)
                and all(v is None or key not in self.fields or self.fields[key][0](v) for key, v in row.items()))


METRICS_ROW = Rows({"step": (_int, "an integer"), "domain": (_str, "text"), "loss": (_number, "a number"),
                    "tokens": (_int, "an integer"), "lr": (_number, "a number"), "phase": (_str, "text"),
                    "event": (_str, "text")}, ("step", "domain"))
DOWNSTREAM_ROW = Rows({"step": (_int, "an integer"), "tokens": (_int, "an integer"), "task": (_str, "text"),
                       "metric": (_str, "text"), "value": (_number, "a number"), "stderr": (_number, "a number"),
                       "num_fewshot": (_int, "an integer")}, ("step", "task", "metric"))


def rows(path: str, raw: bytes, schema: Rows) -> tuple[list[dict], list[str]]:
    """The rows of a jsonl file. A line that is not a JSON object with the required fields, each field of the right
    type, is left out and counted in one problem line; a torn last line (a kill mid-append) is dropped silently."""
    lines = raw.split(b"\n")
    try:  # one parse per file is several times faster than one per line
        parsed = json.loads(b"[" + b",".join(ln for ln in lines if ln.strip()) + b"]")
    except ValueError:
        parsed = None
    good, bad = [], []
    numbered = ((i, ln) for i, ln in enumerate(lines) if ln.strip())
    for k, (i, line) in enumerate(numbered):
        if parsed is not None:
            row = parsed[k]
        else:
            try:
                row = json.loads(line)
            except ValueError:
                if i < len(lines) - 1:  # the last line without its newline is one a kill cut short
                    bad.append((i, line))
                continue
        if schema.fits(row):
            good.append(row)
        else:
            bad.append((i, line))
    if not bad:
        return good, []
    shown = "; ".join(f"line {i + 1}: {ln[:50].decode('utf-8', 'replace')!r}" for i, ln in bad[:3])
    return good, [f"{path}: {len(bad)} line(s) are not {os.path.basename(path)} rows ({shown}"
                  f"{'; ...' if len(bad) > 3 else ''}); left out, its {len(good)} other row(s) kept. {FIX}"]
