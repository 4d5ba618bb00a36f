"""The model-reuse law: final in-domain loss after D1 pretraining tokens and D2 continued tokens,

    L(D1, D2) = A * D1^(-alpha1) * D2^(-alpha2 + alpha3 * ln D1) + E,

fitted in log space with a robust loss, with profile-t intervals (analysis.profile_t). On 4 x 4 grids the
linearised intervals (estimate ± t x standard error) covered E in 50-74% of redraws for a nominal 90%, and
where the fit drove E to 0 they claimed a near-zero width; a bootstrap over the 20-40 runs of a sweep covered
the exponents in about 80%. The profile intervals cover every constant at about the nominal level
(tests/test_analysis_laws.py), and a constant the data do not bound is reported as not identified."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares

from . import columns as C
from . import profile_t, style

PARAMS = ("A", "alpha1", "alpha2", "alpha3", "E")
POSITIVE = ("A", "E")  # fitted through their logarithms: an open lower end is 0
MIN_POINTS = 8
MIN_DISTINCT = 3  # distinct D1 values and distinct D2 values needed to separate the exponents
# Coarse grid of exponents searched before the fit: A and E are solved exactly for each.
GRID_ALPHA = np.linspace(0.0, 1.2, 13)
GRID_ALPHA3 = np.linspace(-0.03, 0.03, 13)
POLISH = 3  # best grid points refined by the full fit
# Smallest first step of a profile, per fitted parameter (ln A, alpha1, alpha2, alpha3, ln E): where the
# linearised standard error vanishes (a direction the data do not pin down) the walk still moves.
STEP_FLOOR = np.array([0.05, 0.005, 0.005, 0.0002, 0.05])


def reuse_law(d1, d2, A, alpha1, alpha2, alpha3, E):
    """L(D1, D2) for token counts ``d1``, ``d2`` (arrays broadcast)."""
    d1, d2 = np.asarray(d1, float), np.asarray(d2, float)
    return A * d1 ** (-alpha1) * d2 ** (-alpha2 + alpha3 * np.log(d1)) + E


def _to_params(p) -> dict[str, float]:
    return dict(zip(PARAMS, (float(np.exp(p[0])), float(p[1]), float(p[2]), float(p[3]), float(np.exp(p[4])))))


@dataclass
class LawFit:
    """A fitted model-reuse law."""

    params: dict[str, float]
    """Best-fit A, alpha1, alpha2, alpha3, E."""
    low: dict[str, float]
    """Lower end of each parameter's interval: 0 (A, E) or -inf (exponents) where the data do not bound it."""
    high: dict[str, float]
    """Upper end of each parameter's interval: inf where the data do not bound it."""
    level: float
    """Coverage of the intervals (e.g. 0.9)."""
    rmse_log: float
    """Root-mean-square error of the fit in log loss."""
    data: pd.DataFrame
    """The points fitted: d1, d2, loss, predicted."""
    method: str = "profile-t interval"
    """How the intervals were made (shown in tables and figures)."""

    def identified(self, name: str) -> bool:
        """Whether the data bound the parameter on both sides (else one end of its interval is open)."""
        lo, hi = self.low[name], self.high[name]
        return bool(np.isfinite(lo) and np.isfinite(hi) and not (name in POSITIVE and lo == 0))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"parameter": PARAMS, "value": [self.params[k] for k in PARAMS],
                             "low": [self.low[k] for k in PARAMS], "high": [self.high[k] for k in PARAMS],
                             "identified": [self.identified(k) for k in PARAMS],
                             "interval": f"{self.level:.0%} {self.method}"})

    def interval(self, name: str, fmt: str = ".3g") -> str:
        """``value [low, high]`` of one parameter, an open end as 0 (A, E) or ±∞ and then "not identified"."""
        end = lambda v: "∞" if v == np.inf else "−∞" if v == -np.inf else f"{v:{fmt}}"  # noqa: E731
        text = f"{self.params[name]:{fmt}} [{end(self.low[name])}, {end(self.high[name])}]"
        return text if self.identified(name) else f"{text} not identified"


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


class _LogFit:
    """The fitted objective: residuals ln(model) - ln(loss) under a soft-L1 loss of scale ``f_scale``,
    written as plain residuals g(r) with sum g^2 = the soft-L1 cost (so that the profile refits, which take
    plain least squares, minimise the same cost as the fit)."""

    def __init__(self, l1, l2, y, f_scale: float):
        self.l1, self.l2, self.y, self.f_scale = l1, l2, y, f_scale
        self.design = np.column_stack([np.ones_like(l1), -l1, -l2, l1 * l2])  # ln(power term) = design @ p[:4]
        self._last = (None, None)

    def _eval(self, p):
        """(residual r, soft-L1 factor sqrt(1 + (r / f_scale)^2), share of the power term in the loss), kept
        for the last ``p``: the optimiser asks for residuals and Jacobian at the same point."""
        if self._last[0] is None or not np.array_equal(self._last[0], p):
            power = self.design @ p[:4]
            log_law = np.logaddexp(power, p[4])
            r = log_law - self.y
            self._last = (np.array(p), (r, np.sqrt(1 + (r / self.f_scale) ** 2), np.exp(power - log_law)))
        return self._last[1]

    def residuals(self, p):
        """ln(model) - ln(loss)."""
        return self._eval(p)[0]

    def soft_residuals(self, p):
        """The soft-L1 residuals g(r) the fit minimises."""
        r, s, _ = self._eval(p)
        return r * np.sqrt(2 / (s + 1))

    def jac(self, p):
        """Jacobian of :meth:`soft_residuals`."""
        _, s, w = self._eval(p)
        return np.column_stack([w[:, None] * self.design, 1 - w]) * (np.sqrt((s + 1) / 2) / s)[:, None]

    def fit(self, p0):
        """Levenberg-Marquardt from ``p0`` (fast), then a bounded polish from there clipped to the bounds."""
        lo, hi = _bounds(self.y)
        free = least_squares(self.soft_residuals, p0, jac=self.jac, method="lm", x_scale="jac")
        return least_squares(self.soft_residuals, np.clip(free.x, lo + 1e-9, hi - 1e-9), jac=self.jac,
                             bounds=(lo, hi), x_scale="jac")

    def restarts(self, p) -> list[np.ndarray]:
        """Where E or the power-law term has vanished (under 2% of every loss), the same point with it
        restored to half the smallest loss: the cost is flat in a vanished term, so a refit would not
        move it back."""
        floor, half = self.y.min() - 4, self.y.min() - np.log(2)
        out = []
        if p[4] < floor:
            out.append(np.r_[p[:4], half])
        power = self.design @ p[:4]
        if power.max() < floor:
            out.append(np.r_[p[0] + half - power.max(), p[1:]])
        return out


def fit_reuse_law(d1, d2, loss, level: float = 0.9, f_scale: float = 0.02) -> LawFit:
    """Fit the law to points (d1, d2, loss). Residuals are log(model) - log(loss) under a soft-L1 loss
    (``f_scale`` ~ the relative noise); the best points of a coarse exponent grid are refined and the best
    fit wins. Intervals: profile-t (:mod:`analysis.profile_t`) on the residual degrees of freedom, A and E
    through their logarithms; an end the data do not reach is open (0 or inf for A and E, ±inf for the
    exponents) and the parameter is reported as not identified."""
    d1, d2, loss = (np.asarray(a, float) for a in (d1, d2, loss))
    ok = (d1 > 0) & (d2 > 0) & (loss > 0) & np.isfinite(loss)
    d1, d2, loss = d1[ok], d2[ok], loss[ok]
    if len(loss) < MIN_POINTS or len(np.unique(d1)) < MIN_DISTINCT or len(np.unique(d2)) < MIN_DISTINCT:
        raise ValueError(f"the model-reuse law needs >= {MIN_POINTS} points with >= {MIN_DISTINCT} distinct D1 "
                         f"and D2 values (got {len(loss)} points); sweep more introduce_tokens x train.tokens")
    l1, l2, y = np.log(d1), np.log(d2), np.log(loss)
    objective = _LogFit(l1, l2, y, f_scale)
    starts = _grid_starts(l1, l2, loss, POLISH)
    if not starts:  # no grid point with positive A and E: start from a flat law
        starts = [np.array([np.log(loss.mean() / 2), 0.1, 0.1, 0.0, np.log(loss.min() / 2)])]
    best = min((objective.fit(p0) for p0 in starts), key=lambda r: r.cost)
    lo_b, hi_b = _bounds(y)
    problem = profile_t.Problem(objective.soft_residuals, objective.jac, lo_b, hi_b, best.x, best.cost,
                              objective.restarts)
    jac = objective.jac(best.x)
    se = np.sqrt(2 * best.cost / problem.dof * np.clip(np.diag(np.linalg.pinv(jac.T @ jac)), 0, None))
    crit = stats.t.ppf(0.5 + level / 2, problem.dof)
    low, high = profile_t.intervals(problem, level, np.maximum(crit * se, STEP_FLOOR))
    resid = objective.residuals(best.x)
    return LawFit(params=_to_params(best.x), low=_to_params(low), high=_to_params(high), level=level,
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
    fig, axes = style.figure(1, 2, panel=(5.0, 3.6))
    ax, ax2 = axes[0]
    df = fit.data
    for i, (d1, g) in enumerate(df.groupby("d1")):
        g = g.sort_values("d2")
        ax.scatter(g["d2"], g["loss"], color=style.color(i), marker=style.marker(i), s=16, label=f"D1={d1:.3g}")
        grid = np.geomspace(g["d2"].min(), g["d2"].max(), 50)
        ax.plot(grid, reuse_law(d1, grid, **fit.params), color=style.color(i), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("D2: continued-pretraining tokens (tokens)")
    ax.set_ylabel(f"final in-domain loss ({C.LOSS_UNIT})")
    style.legend(ax, title="D1: pretraining tokens")
    ax2.scatter(df["loss"], df["predicted"], s=14, color=style.color(0))
    lims = [df[["loss", "predicted"]].min().min(), df[["loss", "predicted"]].max().max()]
    ax2.plot(lims, lims, color="0.4", lw=1, ls="--")
    ax2.set_xlabel(f"observed loss ({C.LOSS_UNIT})")
    ax2.set_ylabel(f"fitted loss ({C.LOSS_UNIT})")
    ax2.set_title(f"rmse(log loss) = {fit.rmse_log:.4f}")
    iv = fit.interval
    fig.suptitle(f"model-reuse law {title}; {fit.level:.0%} {fit.method}s\nα1 = {iv('alpha1')}   "
                 f"α2 = {iv('alpha2')}   α3 = {iv('alpha3', '.2g')}\nA = {iv('A')}   E = {iv('E')}", fontsize=8)
    return style.save(fig, out_dir, name, formats)
