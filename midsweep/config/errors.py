"""Config problems: every check names the key, what is wrong and how to fix it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    key: str
    """Dotted config key, e.g. ``mixture.weight``."""
    message: str
    """What is wrong with the value."""
    fix: str
    """What the user should write instead."""

    def __str__(self) -> str:
        return f"{self.key}: {self.message}. Fix: {self.fix}"


class ConfigError(ValueError):
    """One or more invalid config values; raised before any data is loaded."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config ({len(self.problems)} problem(s)):\n{lines}")


def require(problems: list[Problem], ok: bool, key: str, message: str, fix: str) -> None:
    """Append a Problem to ``problems`` unless ``ok``."""
    if not ok:
        problems.append(Problem(key, message, fix))


def raise_if_any(problems: list[Problem]) -> None:
    if problems:
        raise ConfigError(problems)
