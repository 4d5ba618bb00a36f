"""``midsweep-train`` / ``python -m midsweep.train``: the Hydra app that trains one run.

Compose the config (conf/ + command-line overrides), validate every value before anything is loaded,
set up torch.distributed when running as a SLURM task, route SIGUSR2 to a checkpoint-and-requeue, train.
"""
from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from midsweep import rundir, user_config
from midsweep.version import version_line
from midsweep import app_help  # noqa: F401  (registers the resolver of the --help text)
from midsweep.config import ConfigError, to_run_config
from midsweep.data.sources import DataSourceError
from midsweep.data.tokenizers import TokenizerError
from midsweep.launch import distributed, preemption
from midsweep.train.agreement import RanksDisagree
from midsweep.train.results import closing_lines

log = logging.getLogger(__name__)

# The top-level conf/ folder, installed as this package (pyproject.toml, setup.py): found from any directory, in a
# wheel or an editable checkout alike. The user's config directory (midsweep/user_config.py) comes before it.
CONF_PACKAGE = user_config.SHIPPED
CONF_DIR = Path(str(resources.files(CONF_PACKAGE)))


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_PACKAGE}", config_name="config")
def main(cfg: DictConfig) -> dict:
    try:
        run = to_run_config(cfg)  # every bad value, before any data or GPU is touched
    except ConfigError as err:
        sys.exit(f"midsweep-train: {err}")
    user_config.check(HydraConfig.get().runtime.config_sources)
    distributed.setup_environment()
    interrupt = preemption.install()
    handler = None
    try:
        from midsweep.train.loop import train  # imports torch and accelerate: after validation

        run.run_dir().mkdir(parents=True, exist_ok=True)
        handler = log_to(run.run_dir() / rundir.TRAIN_LOG, rank=int(os.environ.get("RANK", "0")))
        summary = train(run, list(HydraConfig.get().overrides.task), interrupt)
        if handler is not None:
            for line in closing_lines(summary, run.run_dir()):
                log.info(line)
        return summary
    # the user's to fix (bad value, locked run, missing dataset/tokenizer/shards, full disk): the message, not a
    # traceback. In a local sweep this ends the sweep: its next runs would mostly fail the same way.
    except (rundir.RunLocked, rundir.DiskFull, ConfigError, DataSourceError, TokenizerError, RanksDisagree) as err:
        sys.exit(f"midsweep-train: {err}")
    except KeyboardInterrupt:  # Ctrl-C: the run said where it stopped and how to resume; a sweep stops too
        st = rundir.read_status(run.run_dir()) or {}
        why = st.get("reason") if st.get("status") == "interrupted" else "stopped by Ctrl-C before training started"
        print(f"midsweep-train: run {run.run_id()} {why}", file=sys.stderr)
        sys.exit(preemption.EXIT_CTRL_C)
    finally:
        preemption.uninstall(interrupt)
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def log_to(train_log: Path, rank: int) -> logging.Handler | None:
    """One writer per file: rank 0 appends the run's log to ``train_log`` (the handler returned, for removal);
    every other rank of the job writes to no log file (Hydra's job log included) and sends only its warnings and errors
    to stderr, which SLURM keeps per task."""
    root = logging.getLogger()
    if rank == 0:
        handler = logging.FileHandler(train_log)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        root.addHandler(handler)
        return handler
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.WARNING)
    errors.setFormatter(logging.Formatter(f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] %(message)s"))
    root.addHandler(errors)
    return None


def cli() -> None:
    """The ``midsweep-train`` command: the Hydra app, but ``--version`` is midsweep's (Hydra's prints its own)."""
    if "--version" in sys.argv[1:]:
        print(version_line())
        return
    main()


if __name__ == "__main__":
    cli()
