"""Hydra reads the user's config directory (``midsweep.user_config``) in every midsweep command: a search-path
plugin, found by Hydra's plugin discovery, that puts it before the shipped configs of midsweep's apps only."""
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

from midsweep.user_config import SHIPPED, user_dir


class MidsweepUserConfig(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        mine = user_dir()
        # another Hydra app's search path (no shipped midsweep configs) is left alone
        if mine is not None and any(e.path == f"pkg://{SHIPPED}" for e in search_path.get_path()):
            search_path.prepend("midsweep-user", f"file://{mine}", anchor=SearchPathQuery(provider="main"))
