"""Fails a test that starts a whole process (an engine, a launcher, a build) unless it is marked slow.

tests/conftest.py states the rule and points this guard at the test being set up or run; a fixture made once
per session and shared by many fast tests (the analysis templates) starts its processes under
``processes_allowed``.
"""
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

# Commands that start a whole engine, launcher or build, besides any Python interpreter.
PROCESS_COMMANDS = {"midsweep", "midsweep-train", "midsweep-analyze", "torchrun", "make"}


class ProcessGuard:
    """Knows the test being set up or run, and refuses a process command in one not marked slow or slurm."""

    def __init__(self):
        self.item = None
        self.allowed = 0

    def check(self, args) -> None:
        if self.item is None or self.allowed or not starts_a_process(args):
            return
        if self.item.get_closest_marker("slow") or self.item.get_closest_marker("slurm"):
            return
        command = " ".join(_argv(args)).replace("\n", " ")
        pytest.fail(f"{self.item.nodeid} starts a process ({command[:100]}) but is not marked slow: add "
                    f"@pytest.mark.slow, or test the behaviour in process (see tests/conftest.py)", pytrace=False)


def _argv(args) -> list[str]:
    return shlex.split(os.fsdecode(args)) if isinstance(args, (str, bytes)) else [os.fsdecode(a) for a in args]


def starts_a_process(args) -> bool:
    """Whether ``args`` (as given to subprocess) runs Python or one of PROCESS_COMMANDS."""
    argv = _argv(args)
    if not argv:
        return False
    program = Path(argv[0]).name
    return argv[0] == sys.executable or program.startswith("python") or program in PROCESS_COMMANDS


GUARD = ProcessGuard()
_POPEN_INIT = subprocess.Popen.__init__


def _guarded_popen_init(self, args, *rest, **kwargs):
    GUARD.check(args)
    _POPEN_INIT(self, args, *rest, **kwargs)


def install() -> None:
    """Guard every ``subprocess`` call (run, check_output, Popen) for the whole session: installed once, so a
    test's own monkeypatch of ``Popen.__init__`` nests inside it."""
    subprocess.Popen.__init__ = _guarded_popen_init


@contextmanager
def processes_allowed():
    """Lets a fixture shared by many fast tests, and made once per session, start engine processes."""
    GUARD.allowed += 1
    try:
        yield
    finally:
        GUARD.allowed -= 1
