"""A real single-node SLURM (scripts/local_slurm/start.sh, as root) and the real engine on it.

Skipped, with the reason, where it cannot run (not root, no apt, install or start failed). At the end of the
session only the daemons this session's start.sh call started are stopped (none if the cluster was already
up), unless MIDSWEEP_KEEP_SLURM=1. Every job is ``python -m midsweep.train`` launched with
``hydra/launcher=slurm_local``; reference runs of the same configs run locally, once per session.
"""
import os
import re
import shutil
import subprocess

import pytest

from cluster import SCRIPTS, References


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install (apt) and start a local SLURM cluster")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM tests need apt-get to install slurm-wlm (or an installed SLURM)")
    env = {**os.environ, "LOCAL_SLURM_CPUS": os.environ.get("LOCAL_SLURM_CPUS", "8")}
    started = subprocess.run([str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"could not start the local SLURM cluster: {started.stderr.strip()[-800:]}")
    ours = re.findall(r"started (\w+) \(pid", started.stderr)
    yield
    if ours and os.environ.get("MIDSWEEP_KEEP_SLURM") != "1":
        subprocess.run([str(SCRIPTS / "stop.sh"), *ours], capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    refs = References(tmp_path_factory.mktemp("references"))
    yield refs
    refs.stop()
