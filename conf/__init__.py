"""conf/ is installed as the package ``midsweep_conf`` (see pyproject.toml) so that Hydra finds the
configs through ``pkg://midsweep_conf`` wherever midsweep is installed; Hydra needs this file to accept it."""
