"""The package list, found rather than listed: the code packages, plus conf/ shipped as the package
midsweep_conf (package-dir and package-data in pyproject.toml), which Hydra reads as pkg://midsweep_conf, and
analysis/ shipped as midsweep_analysis."""
from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["midsweep", "midsweep.*", "hydra_plugins", "hydra_plugins.*"],
                                          exclude=["*.__pycache__"]), "midsweep_conf", "midsweep_analysis"])
