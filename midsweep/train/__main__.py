"""``python -m midsweep.train`` runs the Hydra app (midsweep/app.py)."""
from midsweep.app import cli

cli()
