"""Starting forks' SLURM jobs early. A fork's job waits for its publisher's job (``afterok``, so it never starts
if the publisher fails); once the prefix it forks from is published, that dependency is lifted and the fork
starts then, not when the publisher's whole run has ended (docs/sharing.md)."""
from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)


def start(jobs: list[str]) -> list[str]:
    """Lift the dependency of each pending job of ``jobs`` (``scontrol update JobId=J Dependency=``); returns the
    jobs lifted. A job no longer pending (started, ended, cancelled), or no scontrol here, is left as it is."""
    if not jobs or shutil.which("scontrol") is None:
        return []
    lifted = []
    for job in jobs:
        proc = subprocess.run(["scontrol", "update", f"JobId={job}", "Dependency="], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode == 0:
            lifted.append(job)
        else:
            log.info("SLURM job %s keeps its dependency: %s", job, (proc.stderr or proc.stdout).strip()[:200])
    if lifted:
        log.info("SLURM job(s) %s can start: the prefix they fork from is published", ", ".join(lifted))
    return lifted
