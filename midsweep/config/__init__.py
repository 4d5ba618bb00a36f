"""Typed configs: one dataclass per Hydra group, registered with Hydra's ConfigStore.

``conf/config.yaml`` starts from the ``midsweep_schema`` node (``RunConfig``), so every YAML value and
command-line override is type-checked by OmegaConf (a domain new to ``data.domains`` when the run config is
built, see ``_hydra_schema``); ``RunConfig.validate()`` then checks the values and lists every problem with its
key and fix.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from midsweep.config.data import DataConfig, SourceConfig
from midsweep.config.errors import ConfigError, Problem
from midsweep.config.eval import EvalConfig
from midsweep.config.logger import LoggerConfig
from midsweep.config.mixture import MixtureConfig, StageConfig
from midsweep.config.model import ModelConfig
from midsweep.config.optim import OptimConfig
from midsweep.config.posttrain import PosttrainConfig
from midsweep.config.run import RunConfig, flatten
from midsweep.config.train import TrainConfig

GROUPS = {"model": ModelConfig, "data": DataConfig, "mixture": MixtureConfig, "optim": OptimConfig,
          "train": TrainConfig, "eval": EvalConfig, "posttrain": PosttrainConfig,
          "logger": LoggerConfig}


def register() -> None:
    """Register the root schema with Hydra. It types every group through RunConfig's fields, so no group holds
    a ``schema`` option of its own (one would show as a choice in ``--help``)."""
    ConfigStore.instance().store(name="midsweep_schema", node=_hydra_schema())


def _hydra_schema() -> type:
    """RunConfig as Hydra composes it, where ``data.domains`` also takes a new domain from the command line
    (``+data.domains.legal={kind: files, data_files: [...]}``). OmegaConf refuses a plain dict as a new entry of
    a dict of dataclasses, so here the entries are declared untyped: the default domains stay typed (their
    defaults are SourceConfigs), and a new one is typed by ``to_run_config``'s merge into RunConfig."""
    domains = next(f for f in dataclasses.fields(DataConfig) if f.name == "domains")
    data = dataclasses.make_dataclass(
        "DataConfig", [("domains", dict[str, Any], dataclasses.field(default_factory=domains.default_factory))],
        bases=(DataConfig,))
    return dataclasses.make_dataclass("RunConfig", [("data", data, dataclasses.field(default_factory=data))],
                                      bases=(RunConfig,))


@functools.cache
def _schema() -> DictConfig:
    """The typed empty RunConfig, built once (50 ms; merge copies it, never changes it)."""
    return OmegaConf.structured(RunConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """A composed Hydra config (``hydra`` node dropped) as a validated RunConfig; raises ConfigError."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        run = OmegaConf.to_object(OmegaConf.merge(_schema(), cfg))
    except OmegaConfBaseException as err:  # a domain added on the command line, typed only here
        problem = Problem(err.full_key or "config", str(err).splitlines()[0].rstrip("."),
                          "check the key and type against midsweep/config/data.py (docs/config.md)")
        raise ConfigError([problem]) from None
    # A key added with `+` that no dataclass declares would otherwise vanish silently (a typo).
    known = set(flatten(dataclasses.asdict(run)))
    unknown = [Problem(k, "unknown key", "check the spelling against the dataclasses in midsweep/config/")
               for k in flatten(OmegaConf.to_container(cfg)) if k not in known]
    problems = unknown + run.problems()  # a typo does not hide the other problems
    if problems:
        raise ConfigError(problems)
    return run


register()

__all__ = ["ConfigError", "DataConfig", "EvalConfig", "LoggerConfig", "MixtureConfig", "ModelConfig", "OptimConfig",
           "PosttrainConfig", "Problem", "RunConfig", "SourceConfig", "StageConfig", "TrainConfig",
           "to_run_config", "GROUPS"]
