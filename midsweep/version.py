"""Which code a run ran (summary.json ``code``): midsweep's installed version and, when midsweep runs from a git
checkout of its own, the commit, with ``-dirty`` when tracked files differ from it."""
from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def version() -> str | None:
    """The installed distribution's version (pyproject.toml owns it); None in a checkout never installed."""
    try:
        return metadata.version("midsweep")
    except metadata.PackageNotFoundError:
        return None


def version_line() -> str:
    """What ``--version`` prints for every command."""
    v = version()
    return f"midsweep {v}" if v else "midsweep (not installed: pip install -e .)"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def code() -> dict:
    """{"version", "commit"}; commit is None outside a checkout of midsweep (an installed wheel, or a repository
    that merely contains the environment midsweep is installed in)."""
    commit = None
    top = _git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == ROOT and (ROOT / "midsweep").is_dir():
        commit = _git("rev-parse", "HEAD")
        if commit and _git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    return {"version": version(), "commit": commit}
