"""Analysis of midsweep sweeps: run directories (results contract 1, docs/results.md) -> tables, figures,
fitted laws and a report. Depends on files only: no torch, no midsweep import. CLI: ``midsweep-analyze``."""
