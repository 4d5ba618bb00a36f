"""A user's own config directory, read by every midsweep command without a flag: ``$MIDSWEEP_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/midsweep`` (``~/.config/midsweep``). It is searched before the shipped configs, so
``data/cluster.yaml`` there replaces the shipped ``data=cluster`` and a new file adds an option; nothing inside
site-packages needs editing.

Files that would silently do nothing are named once per process (``check``): one shadowed by a file of the same
group and name earlier in the search path (a ``--config-dir`` or ``hydra.searchpath`` file named like a shipped
option: the shipped one wins there), or one in a folder that is no config group.
"""
from __future__ import annotations

import difflib
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

ENV = "MIDSWEEP_CONFIG_DIR"
SHIPPED = "midsweep_conf"
"""The package the shipped conf/ is installed as (midsweep.app.CONF_PACKAGE reads it from here)."""
_checked: set = set()


def user_dir() -> Optional[Path]:
    """The user's config directory when it exists."""
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(os.environ.get(ENV) or os.path.join(home, "midsweep"))
    return path if path.is_dir() else None


def options(root: Path) -> dict[str, Path]:
    """{"group/name": file} of a config directory (nested groups such as hydra/launcher included)."""
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def problems(sources: list[Path], shipped: Path) -> list[str]:
    """What is wrong with the files of ``sources`` (config directories in search-path order, ``shipped`` among
    them): each line names the file and the fix."""
    found = [(root, options(root)) for root in sources]
    ours = options(shipped)
    groups = {key.rpartition("/")[0] for key in ours}
    out = []
    for root, opts in found:
        if root == shipped:
            continue
        for key, path in opts.items():
            first = next(r for r, o in found if key in o)
            group, _, name = key.rpartition("/")
            if first != root:
                out.append(f"{path} is not used: {first} has an option {key} too and comes first in the config "
                           f"search path. Fix: rename it and select it with {group or 'the'}=<new name>, or move it to "
                           f"the user config directory (${ENV}, else $XDG_CONFIG_HOME/midsweep), searched first")
            elif group and group not in groups:
                close = difflib.get_close_matches(group, sorted(g for g in groups if g), n=1)
                out.append(f"{path} shadows nothing and is never used: {group!r} is no config group"
                           + (f" (did you mean {close[0]!r}?)" if close else "")
                           + ". Fix: move it into a group folder (model/, data/, mixture/, experiment/, ...)")
            elif key not in ours and root == user_dir():
                close = difflib.get_close_matches(name, [k.rpartition("/")[2] for k in ours
                                                         if k.rpartition("/")[0] == group], n=1)
                if close:
                    out.append(f"{path} shadows nothing: it adds an option {group}={name}, used only when "
                               f"selected; to replace the shipped {group}={close[0]}, name it {close[0]}.yaml")
    return out


def check(config_sources: list) -> None:
    """Warn, once per process, about user files that would silently do nothing (``problems``), and say which
    shipped options the user directory replaces. ``config_sources``: Hydra's ``runtime.config_sources``."""
    shipped = Path(str(resources.files(SHIPPED)))
    roots = [shipped if s["path"] == SHIPPED and s["schema"] == "pkg" else Path(s["path"])
             for s in config_sources if s["schema"] == "file" or s["path"] == SHIPPED]
    key = tuple(map(str, roots))
    if key in _checked:
        return
    _checked.add(key)
    for line in problems(roots, shipped):
        log.warning(line)
    mine = user_dir()
    if mine in roots:
        replaced = sorted(set(options(mine)) & set(options(shipped)))
        log.info(f"user config directory {mine}"
                 + (f": replaces the shipped {', '.join(replaced)}" if replaced else ""))
