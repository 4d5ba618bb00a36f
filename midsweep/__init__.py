"""midsweep: plasticity-window studies of language-model training."""
from importlib import metadata


def version_line() -> str:
    """What ``--version`` prints for every command: the installed distribution's version (pyproject.toml owns it)."""
    try:
        return f"midsweep {metadata.version('midsweep')}"
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return "midsweep (not installed: pip install -e .)"
