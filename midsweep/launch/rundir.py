"""Read-only views of a run directory (docs/results.md), without importing torch or the engine."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
STEP_DIR = re.compile(r"^step_(\d+)$")


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, or None when it is missing or unreadable (files are written atomically,
    so unreadable means corrupt, which the caller reports like a missing file)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(run_dir: Path) -> Optional[dict]:
    return read_json(Path(run_dir) / "status.json")


def summary(run_dir: Path) -> Optional[dict]:
    return read_json(Path(run_dir) / "summary.json")


def latest_checkpoint(run_dir: Path) -> Optional[int]:
    """Step of the newest checkpoint that has its COMPLETE marker."""
    root = Path(run_dir) / "checkpoints"
    steps = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else ())
             if (m := STEP_DIR.match(p.name)) and (p / "COMPLETE").exists()]
    return max(steps) if steps else None


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep directory (names are 12 hex chars)."""
    root = Path(sweep_dir)
    return sorted(p for p in root.iterdir() if p.is_dir() and RUN_ID.match(p.name)) if root.is_dir() else []


def final_losses(run_dir: Path) -> dict:
    return (summary(run_dir) or {}).get("final") or {}
