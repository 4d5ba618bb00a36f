"""Per-run metrics derived from final losses: in-domain loss, post-training target loss, forgetting and
gains against the matched no-introduction baseline. Pure functions of the runs table.

A run's baseline is the done ``mixture.kind=none`` runs that agree with it on every coordinate except the
intervention (the mixture axes but the base mix ``mixture.base_weights.*``, and the LR policy at the mixture
boundary, which a run without a boundary cannot have) and the seed: same model, token budget, post-training,
data, LR schedule, starting checkpoint, base mix. Nothing is dropped to find one: where none matches, the
run's forgetting and gains are empty and ``n_baseline`` is 0 ("no matched baseline"). Among the matched
baselines, the one of the run's own seed is used when it exists (same data order), else their mean.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import columns as C

SEED_LIKE = (C.SEED, C.POSTTRAIN_SEED, C.POSTTRAIN_LR)
"""Coordinates a baseline need not share: the seeds (analysis.posttrain folds post-training seeds into
``train.seed``) and the post-training LR (each run, baselines included, keeps its best: analysis.posttrain)."""


def coordinate_columns(runs: pd.DataFrame) -> list[str]:
    """The coordinate columns of a runs table (dotted config keys; final losses and data digests are not)."""
    return [c for c in runs.columns if "." in c and not c.startswith((C.FINAL_PREFIX, C.DATA_PREFIX))]


def baseline_keys(coords) -> list[str]:
    """The coordinates a baseline must share with a run (see the module doc)."""
    return [c for c in coords if c not in SEED_LIKE and c not in C.BOUNDARY_AXES
            and (not c.startswith(C.MIXTURE) or c.startswith(C.BASE_WEIGHTS))]


def match_key(runs: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One integer per run naming its values of ``keys``: equal integers = equal coordinates (1 == 1.0,
    absent == null). Vectorised: a sweep has tens of thousands of runs."""
    codes = np.zeros(len(runs), np.int64)
    for k in keys:
        if k not in runs:
            continue
        col = runs[k]
        values = col.to_numpy(dtype=float, na_value=np.nan) if pd.api.types.is_numeric_dtype(col) \
            and not pd.api.types.is_bool_dtype(col) else col.astype(object).where(col.notna(), None).to_numpy()
        c, uniques = pd.factorize(values, use_na_sentinel=True)  # absent/null -> -1
        codes = pd.factorize(codes * (len(uniques) + 1) + (c + 1))[0]
    return pd.Series(codes, index=runs.index)


def _pick(runs: pd.DataFrame, domains: pd.Series) -> np.ndarray:
    """Per row, the value of column ``final.<domain>`` (NaN where the run has no such loss)."""
    out = np.full(len(runs), np.nan)
    for domain in domains.dropna().unique():
        col = C.final(str(domain))
        if col in runs:
            mask = (domains == domain).to_numpy()
            out[mask] = pd.to_numeric(runs.loc[mask, col], errors="coerce").to_numpy()
    return out


def baseline_values(runs: pd.DataFrame, value_cols: list[str], coords=None) -> pd.DataFrame:
    """For each run, ``value_cols`` of its matched done baseline (its own seed's, else the mean over the
    matched seeds; NaN where none matches) and ``n_baseline``, the number of matched baseline runs."""
    coords = coordinate_columns(runs) if coords is None else [c for c in coords if c in runs]
    out = pd.DataFrame(np.nan, index=runs.index, columns=value_cols)
    out[C.N_BASELINE] = 0
    kind = runs[C.KIND] if C.KIND in runs else pd.Series(None, index=runs.index, dtype=object)
    is_base = (kind == C.KIND_NONE) & (runs[C.STATUS] == C.DONE)
    if not is_base.any():
        return out
    key = match_key(runs, baseline_keys(coords))
    seed = match_key(runs, [C.SEED])
    values = runs.loc[is_base, value_cols].apply(pd.to_numeric, errors="coerce")
    by_key = values.groupby(key[is_base])
    mean, count = by_key.mean(), by_key.size()
    by_seed = values.groupby([key[is_base], seed[is_base]]).mean()
    found = mean.reindex(key.to_numpy())
    if C.SEED in runs:
        own = by_seed.reindex(pd.MultiIndex.from_arrays([key.to_numpy(), seed.to_numpy()]))
        has_own = own.notna().any(axis=1).to_numpy()
        found.iloc[has_own] = own.iloc[has_own].to_numpy()
    out[value_cols] = found.to_numpy()
    out[C.N_BASELINE] = count.reindex(key.to_numpy()).fillna(0).astype(int).to_numpy()
    return out


def add_metrics(runs: pd.DataFrame, coords=None) -> pd.DataFrame:
    """Return ``runs`` with in_domain, general_loss, target_loss, forgetting, in_domain_gain, target_gain
    and n_baseline columns. Only done runs get values; others keep NaN so they can never pass for results.
    General loss is the last evaluation's: after post-training when it ran, as the target loss."""
    runs = runs.copy()
    done = (runs[C.STATUS] == C.DONE).to_numpy()
    domains = runs[C.DOMAIN] if C.DOMAIN in runs else pd.Series(None, index=runs.index, dtype=object)
    finals = [c for c in runs if c.startswith(C.FINAL_PREFIX)]
    runs[C.IN_DOMAIN] = np.where(done, _pick(runs, domains), np.nan)
    nan = pd.Series(np.nan, index=runs.index)
    general = pd.to_numeric(runs.get(C.final(C.GENERAL), nan), errors="coerce")
    # the post-training target is the run's posttrain.domain (a study may post-train each domain on its own)
    targets = runs[C.POSTTRAIN_DOMAIN] if C.POSTTRAIN_DOMAIN in runs else pd.Series(C.TARGET, index=runs.index)
    targets = targets.where(targets.notna(), C.TARGET)
    target = pd.Series(_pick(runs, targets), index=runs.index)
    runs[C.GENERAL_LOSS] = np.where(done, general, np.nan)
    # The engine evaluates the target domain in every run; it is a post-training result only when
    # post-training ran.
    posttrained = runs[C.POSTTRAIN].map(lambda v: bool(v) if not C.is_missing(v) else False) \
        if C.POSTTRAIN in runs else pd.Series(False, index=runs.index)
    runs[C.TARGET_LOSS] = np.where(done, target.where(posttrained), np.nan)
    base = baseline_values(runs, finals, coords)
    runs[C.N_BASELINE] = base[C.N_BASELINE].to_numpy()
    base_general = base[C.final(C.GENERAL)] if C.final(C.GENERAL) in base else nan
    base_target = pd.Series(_pick(base, targets), index=runs.index)
    runs[C.FORGETTING] = runs[C.GENERAL_LOSS] - base_general.to_numpy()
    runs[C.IN_DOMAIN_GAIN] = _pick(base, domains) - runs[C.IN_DOMAIN]
    runs[C.TARGET_GAIN] = base_target.to_numpy() - runs[C.TARGET_LOSS]
    return runs


def add_tradeoff(runs: pd.DataFrame, lam: float) -> pd.DataFrame:
    """``runs`` with the trade-off column: post-training target loss + ``lam`` x forgetting (lower is better:
    the target gained, less the general ability it cost, at ``lam`` nats of target per nat of general loss)."""
    runs = runs.copy()
    runs[C.TRADEOFF] = runs[C.TARGET_LOSS] + lam * runs[C.FORGETTING]
    return runs


def without_baseline(runs: pd.DataFrame) -> pd.DataFrame:
    """Done runs (not baselines) that no baseline matches: their forgetting and gains are left empty."""
    need = (runs[C.STATUS] == C.DONE) & (runs.get(C.KIND) != C.KIND_NONE) & (runs[C.N_BASELINE] == 0)
    cols = [C.RUN_ID, C.KIND, C.DOMAIN, C.SIZE, C.TRAIN_TOKENS, C.POSTTRAIN, C.SEED, "path"]
    return runs.loc[need, [c for c in cols if c in runs]]
