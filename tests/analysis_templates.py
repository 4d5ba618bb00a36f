"""Engine-written run directories that the analysis tests copy (``analysis.synthetic``): one tiny real run
per mixture kind, with and without post-training, and one with an LR re-warm, made once per test session.
MIDSWEEP_ANALYSIS_TEMPLATES=DIR keeps them in DIR across sessions (runs already there are not retrained)."""
import os
from functools import lru_cache
from pathlib import Path

from midsweep_analysis import synthetic


@lru_cache(maxsize=None)
def engine_templates(session_tmp: Path) -> dict[str, Path]:
    kept = os.environ.get("MIDSWEEP_ANALYSIS_TEMPLATES")
    return synthetic.engine_templates(Path(kept) if kept else session_tmp / "engine_templates")
