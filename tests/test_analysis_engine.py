"""The CLI on a sweep made by real tiny runs of the training engine (the results contract end to end)."""
import subprocess
import sys

import numpy as np
import pytest

from midsweep_analysis import columns as C
from midsweep_analysis import heatmaps
from midsweep_analysis.cli import main
from midsweep_analysis.load import load_sweeps
from midsweep import version

TIMES, WEIGHTS = (0.25, 0.75), (0.4,)  # 2 runs + a baseline: about a minute each on 2 busy cores


def train(out_dir, *overrides):
    cmd = [sys.executable, "-m", "midsweep.train", "-m", "experiment=nano_test", f"train.out_dir={out_dir}",
           *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_cli_on_a_real_tiny_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    train(sweep, "mixture.introduce_at=" + ",".join(map(str, TIMES)), "mixture.weight=" + ",".join(map(str, WEIGHTS)))
    train(sweep, "mixture=none")
    runs = load_sweeps([sweep]).runs
    assert (runs[C.STATUS] == C.DONE).all(), runs[[C.RUN_ID, C.STATUS, C.REASON]]
    table = heatmaps.heatmap_table(runs, C.IN_DOMAIN)
    assert len(table) == len(TIMES) * len(WEIGHTS)
    assert (table["n_done"] == 1).all() and np.isfinite(table["mean"]).all()
    assert table["best"].sum() == 1
    assert main([str(sweep), "--bootstrap", "20", "--formats", "png"]) == 0
    out = sweep / "analysis"
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    for name in ("heatmap_in_domain", "heatmap_forgetting", "plasticity_window"):
        assert (out / "figures" / f"{name}.png").exists(), name
    assert (out / "runs.parquet").exists() and (out / "curves.csv").exists()
    # The report's provenance, from what the engine recorded: the code, the command that made the grid, the grid.
    page = (out / "report.html").read_text()
    code = version.code()
    assert code["version"] and f"midsweep {code['version']}; git commit: {code['commit'] or 'not recorded'}" in page
    assert "mixture.introduce_at=0.25,0.75" in page and "mixture=none" in page
    assert "mixture.introduce_at = 0.25, 0.75" in page
    assert "train.publish_steps=" not in page  # the launcher's prefix-sharing override is not the user's command
