"""The training state besides the model and optimizer: what a resume needs to continue exactly where a run stopped.

Small and plain (ints, floats, dicts and the torch RNG's byte tensor), saved by rank 0 next to the sharded model
and optimizer (midsweep.train.checkpoint) and loadable with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import torch

from midsweep.data.sampler import MixtureSampler


class TrainState:
    """Step, training wall time, the sampler's position, the torch RNG and the data trained on."""

    def __init__(self, sampler: MixtureSampler, content: dict[str, str | None]):
        self.step = 0
        """Optimizer steps taken."""
        self.wall_time_s = 0.0
        """Seconds spent in training steps (evaluations excluded), over every attempt of the run."""
        self.sampler = sampler
        self.content = content
        """Each domain's content digest (``DomainData.content``; None: unknown): the data this run trains on."""

    def state_dict(self) -> dict:
        return {"step": self.step, "wall_time_s": self.wall_time_s, "sampler": self.sampler.state(),
                "torch_rng": torch.get_rng_state(), "data": dict(self.content)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; its data must be this run's (check ``changed_domains`` first)."""
        self.step = int(state["step"])
        self.wall_time_s = float(state["wall_time_s"])
        self.sampler.load_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])

    def changed_domains(self, state: dict) -> list[str]:
        """The domains whose content differs from the one ``state`` was trained on, as ``name (was -> now)``."""
        trained = state.get("data") or {}
        return [f"{d} ({was} -> {self.content[d]})" for d, was in trained.items()
                if was and self.content.get(d) and self.content[d] != was]
