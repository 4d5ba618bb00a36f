"""``midsweep-train`` / ``python -m midsweep.train``: the Hydra app that trains one run.

Compose the config (conf/ + command-line overrides), validate every value before anything is loaded,
set up torch.distributed when running as a SLURM task, route SIGUSR2 to a checkpoint-and-requeue, train.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from midsweep.config import ConfigError, to_run_config
from midsweep.launch import distributed, preemption

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict:
    try:
        run = to_run_config(cfg)  # every bad value, before any data or GPU is touched
    except ConfigError as err:
        sys.exit(f"midsweep-train: {err}")
    distributed.setup_environment()
    interrupt = preemption.install()

    from midsweep.train.loop import train  # imports torch and accelerate: after validation

    run.run_dir().mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run.run_dir() / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        return train(run, list(HydraConfig.get().overrides.task), interrupt)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    main()
