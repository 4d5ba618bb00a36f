"""The benchmarks as a user meets them before anything is set up."""
import os
import subprocess
import sys

from runner import REPO


def test_submit_grid_without_a_slurm_controller_says_in_one_line_how_to_start_one():
    # no sbatch/scontrol on PATH, and not root (as most users): it cannot start the cluster itself
    code = ("import os, runpy, sys; os.geteuid = lambda: 1000; sys.argv = ['submit_grid.py']; "
            "runpy.run_path('benchmarks/submit_grid.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": os.path.dirname(sys.executable)})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no SLURM controller answers" in proc.stderr and "scripts/local_slurm/start.sh" in proc.stderr
