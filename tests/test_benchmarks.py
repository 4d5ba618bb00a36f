"""The benchmarks as a user meets them before anything is set up."""
import os
import runpy
import sys

import pytest

from runner import REPO


def test_submit_grid_without_a_slurm_controller_says_in_one_line_how_to_start_one(monkeypatch, capsys):
    # no sbatch/scontrol on PATH, and not root (as most users): it cannot start the cluster itself
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    monkeypatch.setattr(sys, "argv", ["submit_grid.py"])
    with pytest.raises(SystemExit) as end:
        runpy.run_path(str(REPO / "benchmarks" / "submit_grid.py"), run_name="__main__")
    assert end.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "no SLURM controller answers" in err and "scripts/local_slurm/start.sh" in err
