"""A real single-node SLURM (scripts/local_slurm/start.sh, as root) and the real engine on it; beside it, for the
multi-node tests, a 2-node cluster on this machine (LOCAL_SLURM_NODES=2: nodes n1 and n2, one slurmd each).

Skipped, with the reason, where it cannot run (not root, no apt, install or start failed). At the end of the
session only the daemons this session's start.sh calls started are stopped (none if the clusters were already
up), unless MIDSWEEP_KEEP_SLURM=1. Every job is ``python -m midsweep.train`` launched with
``hydra/launcher=slurm_local``; reference runs of the same configs run locally, once per session.
"""
import os
import re
import shutil
import subprocess

import pytest

from cluster import ENV, SCRIPTS, References


def start_cluster(nodes: int):
    """Start the local cluster of ``nodes`` nodes (or skip, saying why); yield the environment of commands that
    use it (SLURM_CONF: its slurm.conf, as start.sh reports it); then stop the daemons started here."""
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install (apt) and start a local SLURM cluster")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM tests need apt-get to install slurm-wlm (or an installed SLURM)")
    env = {**os.environ, "LOCAL_SLURM_CPUS": os.environ.get("LOCAL_SLURM_CPUS", "8"), "LOCAL_SLURM_NODES": str(nodes)}
    started = subprocess.run([str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"could not start the local {nodes}-node SLURM cluster: {started.stderr.strip()[-800:]}")
    ours = re.findall(r"started ([\w-]+) \(pid", started.stderr)
    conf = re.search(r"cluster \S+ up \((\S+)\)", started.stderr).group(1)
    yield {**ENV, "SLURM_CONF": conf}
    if ours and os.environ.get("MIDSWEEP_KEEP_SLURM") != "1":
        subprocess.run([str(SCRIPTS / "stop.sh"), *ours], capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def slurm_cluster():
    yield from start_cluster(1)


@pytest.fixture(scope="session")
def slurm_nodes(slurm_cluster) -> dict:
    """The 2-node cluster, beside the single-node one (whose munge and slurmdbd it shares: it starts after it and
    stops before it); the environment that points SLURM commands and the launcher at it."""
    yield from start_cluster(2)


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    refs = References(tmp_path_factory.mktemp("references"))
    yield refs
    refs.stop()
