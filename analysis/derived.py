"""Per-run metrics derived from final losses: in-domain loss, forgetting against the no-introduction
baseline, post-training target loss, in-domain gain. Pure functions of the runs table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import columns as C

# Baselines are matched on these coordinates; when no baseline matches, the last key is dropped
# and the match retried (so a missing baseline seed falls back to the mean over baseline seeds).
BASELINE_KEYS = (C.SIZE, C.TRAIN_TOKENS, C.POSTTRAIN, C.SEED)


def _pick(runs: pd.DataFrame, domains: pd.Series) -> np.ndarray:
    """Per row, the value of column ``final.<domain>`` (NaN where the run has no such loss)."""
    out = np.full(len(runs), np.nan)
    for domain in domains.dropna().unique():
        col = C.final(str(domain))
        if col in runs:
            mask = (domains == domain).to_numpy()
            out[mask] = pd.to_numeric(runs.loc[mask, col], errors="coerce").to_numpy()
    return out


def baseline_values(runs: pd.DataFrame, value_cols: list[str]) -> pd.DataFrame:
    """For each run, the mean of ``value_cols`` over its matching done baseline runs (NaN if none)."""
    base = runs[(runs.get(C.KIND) == C.KIND_NONE) & (runs[C.STATUS] == C.DONE)]
    out = pd.DataFrame(np.nan, index=runs.index, columns=value_cols)
    if base.empty:
        return out
    keys = [k for k in BASELINE_KEYS if k in runs]
    todo = pd.Series(True, index=runs.index)
    for n in range(len(keys), -1, -1):
        level = keys[:n]
        if level:
            means = base.groupby(level, dropna=False)[value_cols].mean()
            found = runs.loc[todo, level].merge(means, left_on=level, right_index=True, how="left")
            found.index = runs.index[todo]
        else:
            found = pd.DataFrame([base[value_cols].mean()] * int(todo.sum()), index=runs.index[todo])
        hit = found[value_cols].notna().any(axis=1)
        out.loc[hit[hit].index, value_cols] = found.loc[hit, value_cols].to_numpy()
        todo.loc[hit[hit].index] = False
        if not todo.any():
            break
    return out


def add_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Return ``runs`` with in_domain, general_loss, target_loss, forgetting and in_domain_gain columns.
    Only done runs get values; others keep NaN so they can never pass for results."""
    runs = runs.copy()
    done = (runs[C.STATUS] == C.DONE).to_numpy()
    domains = runs[C.DOMAIN] if C.DOMAIN in runs else pd.Series(None, index=runs.index, dtype=object)
    finals = [c for c in runs if c.startswith(C.FINAL_PREFIX)]
    runs[C.IN_DOMAIN] = np.where(done, _pick(runs, domains), np.nan)
    nan = pd.Series(np.nan, index=runs.index)
    general = pd.to_numeric(runs.get(C.final(C.GENERAL), nan), errors="coerce")
    target = pd.to_numeric(runs.get(C.final(C.TARGET), nan), errors="coerce")
    runs[C.GENERAL_LOSS] = np.where(done, general, np.nan)
    # The engine evaluates the target domain in every run; it is a post-training result only when
    # post-training ran.
    if C.POSTTRAIN in runs:
        target = target.where(runs[C.POSTTRAIN].fillna(False).astype(bool))
    runs[C.TARGET_LOSS] = np.where(done, target, np.nan)
    base = baseline_values(runs, finals) if finals else pd.DataFrame(index=runs.index)
    if C.final(C.GENERAL) in base:
        runs[C.FORGETTING] = runs[C.GENERAL_LOSS] - base[C.final(C.GENERAL)]
    else:
        runs[C.FORGETTING] = np.nan
    runs[C.IN_DOMAIN_GAIN] = _pick(base, domains) - runs[C.IN_DOMAIN] if finals else np.nan
    return runs
