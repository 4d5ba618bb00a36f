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
from omegaconf import DictConfig, OmegaConf, open_dict


class PointComposer:
    def __init__(self, config_loader: Any, master_config: DictConfig):
        self.loader = config_loader
        self.master = master_config
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(OmegaConf.select(master_config, "hydra.runtime.choices", default={}) or {})
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._parsed: dict[str, Override] = {}

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

    def task_config(self, overrides: Sequence[str]) -> DictConfig:
        """The config the task function would receive for these overrides (no ``hydra`` node)."""
        parsed = [self._parse(o) for o in overrides]
        structural = [o for o in parsed if self._structural(o)]
        values = [o for o in parsed if not self._structural(o)]
        base = self._base(tuple(o.input_line for o in structural))
        if any(OmegaConf.select(base, o.key_or_group, default=_MISSING) is _MISSING for o in values):
            # unknown key: let Hydra compose it, and raise its own error message
            return self._base(tuple(overrides))
        cfg = copy.deepcopy(base)
        for o in values:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        return cfg


_MISSING = object()
