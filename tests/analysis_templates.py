"""Engine-written run directories that the analysis tests copy (``analysis.synthetic``): one tiny real run
per mixture kind, with and without post-training, and one with an LR re-warm, made once per test session.
MIDSWEEP_ANALYSIS_TEMPLATES=DIR keeps them in DIR across sessions (runs already there are not retrained).
They are engine processes, yet the tests that copy them stay fast (tests/conftest.py): made once, shared by many."""
import os
from functools import lru_cache
from pathlib import Path

from midsweep_analysis import synthetic
from process_guard import processes_allowed


@lru_cache(maxsize=None)
def engine_templates(session_tmp: Path) -> dict[str, Path]:
    kept = os.environ.get("MIDSWEEP_ANALYSIS_TEMPLATES")
    with processes_allowed():
        return synthetic.engine_templates(Path(kept) if kept else session_tmp / "engine_templates")
