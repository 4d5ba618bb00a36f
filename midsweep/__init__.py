"""midsweep: plasticity-window studies of language-model training."""
