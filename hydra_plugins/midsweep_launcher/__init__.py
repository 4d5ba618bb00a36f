"""Hydra launchers of midsweep: ``midsweep_local`` and ``midsweep_slurm`` (conf/hydra/launcher/*.yaml)."""
