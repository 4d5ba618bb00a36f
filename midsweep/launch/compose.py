"""Compose the task config of every grid point, fast.

Hydra's own way (``config_loader.load_sweep_config``) re-reads and merges every config file for every
point. Most grid axes are plain values (``mixture.weight=0.1,0.2``), so a point is composed once per
distinct set of *structural* overrides (config groups, ``+``/``~``, ``hydra.*`` keys) and its value
overrides are then applied to a copy, the way Hydra applies them.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from midsweep.config.errors import ConfigError, Problem


class OverrideProblems(ConfigError):
    """Overrides of one point that do not compose (an unknown key or option, a wrong type). ``config`` is the
    point composed without them, so that the problems of its other values can be listed too."""

    def __init__(self, problems: list[Problem], config: DictConfig):
        super().__init__(problems)
        self.config = config


class PointComposer:
    def __init__(self, config_loader: Any, master_config: DictConfig):
        self.loader = config_loader
        self.master = master_config
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(OmegaConf.select(master_config, "hydra.runtime.choices", default={}) or {})
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._parsed: dict[str, Override] = {}
        self._alone: dict[str, list[Problem]] = {}

    def _structural(self, o: Override) -> bool:
        key = o.key_or_group
        return (o.package is not None or o.type != OverrideType.CHANGE or key in self.groups or key.startswith("hydra.")
                or key == "hydra" or o.is_sweep_override())

    def _base(self, structural: tuple[str, ...]) -> DictConfig:
        if structural not in self._bases:
            full = self.loader.load_sweep_config(self.master, list(structural))
            with open_dict(full):
                del full["hydra"]
            self._bases[structural] = full
        return self._bases[structural]

    def _parse(self, override: str) -> Override:
        """Hydra's parse of one override; cached, since a grid repeats each value many times (3 ms each)."""
        if override not in self._parsed:
            (self._parsed[override],) = self.parser.parse_overrides([override])
        return self._parsed[override]

    def _problems_alone(self, o: Override) -> list[Problem]:
        """Why a structural override does not compose on its own (cached: a grid repeats it)."""
        if o.input_line not in self._alone:
            try:
                self._base((o.input_line,))
                self._alone[o.input_line] = []
            except (HydraException, OmegaConfBaseException) as e:
                self._alone[o.input_line] = [_problem(o, e)]
        return self._alone[o.input_line]

    def task_config(self, overrides: Sequence[str]) -> DictConfig:
        """The config the task function would receive for these overrides (no ``hydra`` node). Raises
        OverrideProblems naming every override that does not compose, with the config composed without them."""
        parsed = [self._parse(o) for o in overrides]
        structural = [o for o in parsed if self._structural(o)]
        values = [o for o in parsed if not self._structural(o)]
        problems: list[Problem] = []
        try:
            base = self._base(tuple(o.input_line for o in structural))
        except (HydraException, OmegaConfBaseException):
            bad = {o.input_line: self._problems_alone(o) for o in structural}
            if not any(bad.values()):
                raise  # only the combination fails: Hydra's own message
            problems += [p for found in bad.values() for p in found]
            base = self._base(tuple(line for line, found in bad.items() if not found))
        cfg = copy.deepcopy(base)
        for o in values:
            try:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
            except OmegaConfBaseException as e:
                problems.append(_problem(o, e))
        if problems:
            raise OverrideProblems(problems, cfg)
        return cfg


def _problem(o: Override, error: Exception) -> Problem:
    """A Problem for an override that does not compose, at its key."""
    message = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if isinstance(error, (ConfigAttributeError, ConfigKeyError)):
        return Problem(o.key_or_group, "no such key", "check the spelling against the dataclasses in "
                       f"midsweep/config/; a new entry of a dict is added with +{o.input_line}")
    return Problem(o.key_or_group, message.rstrip("."), "check the spelling and type of the override")
