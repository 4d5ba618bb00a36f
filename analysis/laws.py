"""The model-reuse law: final in-domain loss after D1 pretraining tokens and D2 continued tokens,

    L(D1, D2) = A * D1^(-alpha1) * D2^(-alpha2 + alpha3 * ln D1) + E,

fitted in log space with a robust loss, with confidence intervals from the curvature of the fit
(Student-t on the residual degrees of freedom). A bootstrap that resamples the 20-40 runs of a sweep
covers the true exponents less often than it says (about 80% for a nominal 90%); the t-intervals were
checked to cover at their nominal level (tests/test_analysis_laws.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares

from . import columns as C
from . import style

PARAMS = ("A", "alpha1", "alpha2", "alpha3", "E")
MIN_POINTS = 8
MIN_DISTINCT = 3  # distinct D1 values and distinct D2 values needed to separate the exponents
# Coarse grid of exponents searched before the fit: A and E are solved exactly for each.
GRID_ALPHA = np.linspace(0.0, 1.2, 13)
GRID_ALPHA3 = np.linspace(-0.03, 0.03, 13)
POLISH = 3  # best grid points refined by the full fit


def reuse_law(d1, d2, A, alpha1, alpha2, alpha3, E):
    """L(D1, D2) for token counts ``d1``, ``d2`` (arrays broadcast)."""
    d1, d2 = np.asarray(d1, float), np.asarray(d2, float)
    return A * d1 ** (-alpha1) * d2 ** (-alpha2 + alpha3 * np.log(d1)) + E


def _power(p, l1, l2):
    return p[0] - p[1] * l1 + (-p[2] + p[3] * l1) * l2


def _log_law(p, l1, l2):
    # p = (ln A, alpha1, alpha2, alpha3, ln E); log(A D1^.. D2^.. + E) computed without overflow.
    return np.logaddexp(_power(p, l1, l2), p[4])


def _log_law_jac(p, l1, l2):
    w = 1 / (1 + np.exp(p[4] - _power(p, l1, l2)))  # share of the power-law term in the loss
    return np.column_stack([w, -w * l1, -w * l2, w * l1 * l2, 1 - w])


def _to_params(p) -> dict[str, float]:
    return dict(zip(PARAMS, (float(np.exp(p[0])), float(p[1]), float(p[2]), float(p[3]), float(np.exp(p[4])))))


@dataclass
class LawFit:
    """A fitted model-reuse law."""

    params: dict[str, float]
    """Best-fit A, alpha1, alpha2, alpha3, E."""
    low: dict[str, float]
    """Lower end of each parameter's interval (NaN where the fit sits on a bound and no interval holds)."""
    high: dict[str, float]
    """Upper end of each parameter's interval."""
    level: float
    """Coverage of the intervals (e.g. 0.9)."""
    rmse_log: float
    """Root-mean-square error of the fit in log loss."""
    data: pd.DataFrame
    """The points fitted: d1, d2, loss, predicted."""
    method: str = "t-interval"
    """How the intervals were made (shown in tables and figures)."""

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"parameter": PARAMS, "value": [self.params[k] for k in PARAMS],
                             "low": [self.low[k] for k in PARAMS], "high": [self.high[k] for k in PARAMS],
                             "interval": f"{self.level:.0%} {self.method}"})

    def interval(self, name: str, fmt: str = ".3g") -> str:
        """``value [low, high]`` of one parameter, in words when there is no interval."""
        v, lo, hi = self.params[name], self.low[name], self.high[name]
        return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if lo == lo else f"{v:{fmt}} (no interval: at a bound)"


def _bounds(y):
    lo = np.array([-np.inf, -1.0, -1.0, -1.0, y.min() + np.log(1e-6)])  # y = ln loss; E in (1e-6 min L, max L)
    hi = np.array([np.inf, 3.0, 3.0, 1.0, y.max()])
    return lo, hi


def _grid_starts(l1, l2, loss, n: int):
    """The ``n`` best exponent triples of the coarse grid, each with A and E solved by weighted least
    squares on relative error (vectorised over the grid), as starting points (ln A, a1, a2, a3, ln E)."""
    a1, a2, a3 = (g.ravel() for g in np.meshgrid(GRID_ALPHA, GRID_ALPHA, GRID_ALPHA3, indexing="ij"))
    x = np.exp(-a1[:, None] * l1 - (a2[:, None] - a3[:, None] * l1) * l2) / loss  # [grid, point]
    u = 1 / loss
    # minimise sum (A x + E u - 1)^2 over A, E: the 2 x 2 normal equations per grid point
    sxx, sxu, suu = (x * x).sum(1), (x * u).sum(1), (u * u).sum()
    sx1, su1 = x.sum(1), u.sum()
    det = sxx * suu - sxu ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        A = (sx1 * suu - sxu * su1) / det
        E = (sxx * su1 - sxu * sx1) / det
        cost = ((A[:, None] * x + E[:, None] * u - 1) ** 2).sum(1)
    ok = (A > 0) & (E > 0) & np.isfinite(cost)
    best = np.flatnonzero(ok)[np.argsort(cost[ok])[:n]]
    return [np.array([np.log(A[i]), a1[i], a2[i], a3[i], np.log(E[i])]) for i in best]


def _fit_once(l1, l2, y, p0, f_scale):
    lo, hi = _bounds(y)
    p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
    return least_squares(lambda p: _log_law(p, l1, l2) - y, p0, jac=lambda p: _log_law_jac(p, l1, l2),
                         bounds=(lo, hi), loss="soft_l1", f_scale=f_scale, x_scale="jac")


def fit_reuse_law(d1, d2, loss, level: float = 0.9, f_scale: float = 0.02) -> LawFit:
    """Fit the law to points (d1, d2, loss). Residuals are log(model) - log(loss) under a soft-L1 loss
    (``f_scale`` ~ the relative noise); the best points of a coarse exponent grid are refined and the best
    fit wins. Intervals: estimate ± t(level, n - 5) x standard error from the Jacobian and the residual
    variance (A and E through their logarithms)."""
    d1, d2, loss = (np.asarray(a, float) for a in (d1, d2, loss))
    ok = (d1 > 0) & (d2 > 0) & (loss > 0) & np.isfinite(loss)
    d1, d2, loss = d1[ok], d2[ok], loss[ok]
    if len(loss) < MIN_POINTS or len(np.unique(d1)) < MIN_DISTINCT or len(np.unique(d2)) < MIN_DISTINCT:
        raise ValueError(f"the model-reuse law needs >= {MIN_POINTS} points with >= {MIN_DISTINCT} distinct D1 "
                         f"and D2 values (got {len(loss)} points); sweep more introduce_tokens x train.tokens")
    l1, l2, y = np.log(d1), np.log(d2), np.log(loss)
    starts = _grid_starts(l1, l2, loss, POLISH)
    if not starts:  # no grid point with positive A and E: start from a flat law
        starts = [np.array([np.log(loss.mean() / 2), 0.1, 0.1, 0.0, np.log(loss.min() / 2)])]
    best = min((_fit_once(l1, l2, y, p0, f_scale) for p0 in starts), key=lambda r: r.cost)
    resid = _log_law(best.x, l1, l2) - y
    dof = len(y) - len(PARAMS)
    jac = _log_law_jac(best.x, l1, l2)
    cov = resid @ resid / max(dof, 1) * np.linalg.pinv(jac.T @ jac)
    half = stats.t.ppf(0.5 + level / 2, dof) * np.sqrt(np.clip(np.diag(cov), 0, None))
    lo_b, hi_b = _bounds(y)
    on_bound = (best.x <= lo_b + 1e-6) | (best.x >= hi_b - 1e-6) | (dof < 1)
    low = np.where(on_bound, np.nan, best.x - half)
    high = np.where(on_bound, np.nan, best.x + half)
    to_scale = lambda v: dict(zip(PARAMS, (np.exp(v[0]), v[1], v[2], v[3], np.exp(v[4]))))  # noqa: E731
    return LawFit(params=_to_params(best.x), low={k: float(v) for k, v in to_scale(low).items()},
                  high={k: float(v) for k, v in to_scale(high).items()}, level=level,
                  rmse_log=float(np.sqrt(np.mean(resid ** 2))),
                  data=pd.DataFrame({"d1": d1, "d2": d2, "loss": loss, "predicted": np.exp(y + resid)}))


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
    ax.set_xlabel("D2: continued-pretraining tokens (tokens)")
    ax.set_ylabel("final in-domain loss (nats/token)")
    ax.legend(title="D1: pretraining tokens", fontsize=7)
    ax2.scatter(df["loss"], df["predicted"], s=14, color=style.color(0))
    lims = [df[["loss", "predicted"]].min().min(), df[["loss", "predicted"]].max().max()]
    ax2.plot(lims, lims, color="0.4", lw=1, ls="--")
    ax2.set_xlabel("observed loss (nats/token)")
    ax2.set_ylabel("fitted loss (nats/token)")
    ax2.set_title(f"rmse(log loss) = {fit.rmse_log:.4f}")
    iv = fit.interval
    fig.suptitle(f"model-reuse law {title}; {fit.level:.0%} {fit.method}s\nα1 = {iv('alpha1')}   "
                 f"α2 = {iv('alpha2')}   α3 = {iv('alpha3', '.2g')}\nA = {iv('A')}   E = {iv('E')}", fontsize=8)
    return style.save(fig, out_dir, name, formats)
