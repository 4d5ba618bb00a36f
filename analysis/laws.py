"""The model-reuse law: final in-domain loss after D1 pretraining tokens and D2 continued tokens,

    L(D1, D2) = A * D1^(-alpha1) * D2^(-alpha2 + alpha3 * ln D1) + E,

fitted in log space with a robust loss from several starting points, with bootstrap intervals."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis import columns as C
from analysis import style

PARAMS = ("A", "alpha1", "alpha2", "alpha3", "E")
MIN_POINTS = 8
MIN_DISTINCT = 3  # distinct D1 values and distinct D2 values needed to separate the exponents


def reuse_law(d1, d2, A, alpha1, alpha2, alpha3, E):
    """L(D1, D2) for token counts ``d1``, ``d2`` (arrays broadcast)."""
    d1, d2 = np.asarray(d1, float), np.asarray(d2, float)
    return A * d1 ** (-alpha1) * d2 ** (-alpha2 + alpha3 * np.log(d1)) + E


def _log_law(p, l1, l2):
    # p = (ln A, alpha1, alpha2, alpha3, ln E); log(A D1^.. D2^.. + E) computed without overflow.
    return np.logaddexp(p[0] - p[1] * l1 + (-p[2] + p[3] * l1) * l2, p[4])


def _to_params(p) -> dict[str, float]:
    return dict(zip(PARAMS, (float(np.exp(p[0])), float(p[1]), float(p[2]), float(p[3]), float(np.exp(p[4])))))


@dataclass
class LawFit:
    """A fitted model-reuse law."""

    params: dict[str, float]
    """Best-fit A, alpha1, alpha2, alpha3, E."""
    low: dict[str, float]
    """Lower end of each parameter's bootstrap interval."""
    high: dict[str, float]
    """Upper end of each parameter's bootstrap interval."""
    level: float
    """Coverage of the intervals (e.g. 0.9)."""
    rmse_log: float
    """Root-mean-square error of the fit in log loss."""
    data: pd.DataFrame
    """The points fitted: d1, d2, loss, predicted."""

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"parameter": PARAMS, "value": [self.params[k] for k in PARAMS],
                             "low": [self.low[k] for k in PARAMS], "high": [self.high[k] for k in PARAMS]})


def _fit_once(l1, l2, y, p0, f_scale):
    lo = [-np.inf, -1.0, -1.0, -1.0, y.min() + np.log(1e-6)]  # y = ln loss; E between 1e-6 min L and max L
    hi = [np.inf, 3.0, 3.0, 1.0, y.max()]
    p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    return least_squares(lambda p: _log_law(p, l1, l2) - y, p0, bounds=(lo, hi), loss="soft_l1",
                         f_scale=f_scale, x_scale="jac")


def fit_reuse_law(d1, d2, loss, n_boot: int = 200, level: float = 0.9, seed: int = 0,
                  f_scale: float = 0.02) -> LawFit:
    """Fit the law to points (d1, d2, loss). Residuals are log(model) - log(loss) under a soft-L1 loss
    (``f_scale`` ~ the relative noise); the best of a grid of starting points wins; intervals come from
    refitting ``n_boot`` resamples of the points."""
    d1, d2, loss = (np.asarray(a, float) for a in (d1, d2, loss))
    ok = (d1 > 0) & (d2 > 0) & (loss > 0) & np.isfinite(loss)
    d1, d2, loss = d1[ok], d2[ok], loss[ok]
    if len(loss) < MIN_POINTS or len(np.unique(d1)) < MIN_DISTINCT or len(np.unique(d2)) < MIN_DISTINCT:
        raise ValueError(f"the model-reuse law needs >= {MIN_POINTS} points with >= {MIN_DISTINCT} distinct D1 "
                         f"and D2 values (got {len(loss)} points); sweep more introduce_tokens x train.tokens")
    l1, l2, y = np.log(d1), np.log(d2), np.log(loss)
    best = None
    for a1, a2, a3, e in itertools.product((0.05, 0.3, 0.8), (0.05, 0.3, 0.8), (-0.01, 0.0, 0.01), (0.2, 0.6, 0.95)):
        log_e = np.log(e * loss.min())
        # ln A that makes the start match the data on average, given the other parameters.
        log_a = np.mean(np.log(loss - e * loss.min()) + a1 * l1 - (-a2 + a3 * l1) * l2)
        res = _fit_once(l1, l2, y, np.array([log_a, a1, a2, a3, log_e]), f_scale)
        if best is None or res.cost < best.cost:
            best = res
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(d1[idx])) >= 2 and len(np.unique(d2[idx])) >= 2:
            boots.append(_to_params(_fit_once(l1[idx], l2[idx], y[idx], best.x, f_scale).x))
    q = (1 - level) / 2
    boot = pd.DataFrame(boots, columns=list(PARAMS))
    pred = np.exp(_log_law(best.x, l1, l2))
    return LawFit(params=_to_params(best.x),
                  low=boot.quantile(q).to_dict() if len(boot) else dict.fromkeys(PARAMS, np.nan),
                  high=boot.quantile(1 - q).to_dict() if len(boot) else dict.fromkeys(PARAMS, np.nan),
                  level=level, rmse_log=float(np.sqrt(np.mean((np.log(pred) - y) ** 2))),
                  data=pd.DataFrame({"d1": d1, "d2": d2, "loss": loss, "predicted": pred}))


def law_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Done continued-pretraining runs as (domain, size, d1, d2, loss): D1 = mixture.introduce_tokens,
    D2 = train.tokens (or the tokens the run saw) - D1, loss = final in-domain loss."""
    need = {C.KIND, C.INTRODUCE_TOKENS, C.IN_DOMAIN}
    if not need <= set(runs):
        return pd.DataFrame(columns=[C.DOMAIN, C.SIZE, "d1", "d2", "loss"])
    cont = runs[(runs[C.KIND] == C.KIND_CONTINUED) & runs[C.IN_DOMAIN].notna()]
    total = cont[C.TRAIN_TOKENS] if C.TRAIN_TOKENS in cont else cont["tokens"]
    total = pd.to_numeric(total, errors="coerce").fillna(pd.to_numeric(cont["tokens"], errors="coerce"))
    d1 = pd.to_numeric(cont[C.INTRODUCE_TOKENS], errors="coerce")
    out = pd.DataFrame({C.DOMAIN: cont.get(C.DOMAIN), C.SIZE: cont.get(C.SIZE), "d1": d1, "d2": total - d1,
                        "loss": cont[C.IN_DOMAIN]})
    return out[(out["d1"] > 0) & (out["d2"] > 0)]


def fit_groups(runs: pd.DataFrame, **kw) -> dict[tuple, LawFit]:
    """One fit per (domain, model size) with enough points; groups with too few are left out."""
    pts = law_points(runs)
    fits = {}
    for key, g in pts.groupby([C.DOMAIN, C.SIZE], dropna=False):
        if len(g) >= MIN_POINTS and g["d1"].nunique() >= MIN_DISTINCT and g["d2"].nunique() >= MIN_DISTINCT:
            fits[key] = fit_reuse_law(g["d1"], g["d2"], g["loss"], **kw)
    return fits


def draw_law_fit(fit: LawFit, title: str, out_dir, name: str, formats=style.FORMATS):
    """Loss against D2 for each D1 (points = runs, lines = the fit) and fitted against observed."""
    fig, axes = style.figure(1, 2, panel=(4.2, 3.4))
    ax, ax2 = axes[0]
    df = fit.data
    for i, (d1, g) in enumerate(df.groupby("d1")):
        g = g.sort_values("d2")
        ax.scatter(g["d2"], g["loss"], color=style.color(i), s=16, label=f"D1={d1:.3g}")
        grid = np.geomspace(g["d2"].min(), g["d2"].max(), 50)
        ax.plot(grid, reuse_law(d1, grid, **fit.params), color=style.color(i), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("D2: continued-pretraining tokens")
    ax.set_ylabel("final in-domain loss")
    ax.legend(title="pretraining tokens", fontsize=7)
    ax2.scatter(df["loss"], df["predicted"], s=14, color=style.color(0))
    lims = [df[["loss", "predicted"]].min().min(), df[["loss", "predicted"]].max().max()]
    ax2.plot(lims, lims, color="0.4", lw=1, ls="--")
    ax2.set_xlabel("observed loss")
    ax2.set_ylabel("fitted loss")
    p = fit.params
    ax2.set_title(f"A={p['A']:.3g} α1={p['alpha1']:.3f} α2={p['alpha2']:.3f}\nα3={p['alpha3']:.4f} "
                  f"E={p['E']:.3f}  rmse(log)={fit.rmse_log:.4f}")
    fig.suptitle(f"model-reuse law {title}", fontsize=9)
    return style.save(fig, out_dir, name, formats)
