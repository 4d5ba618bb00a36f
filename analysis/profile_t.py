"""Profile-t intervals of a least-squares fit (Bates & Watts, Nonlinear Regression Analysis, ch. 6).

A parameter's interval holds the values at which, with the other parameters refitted, the cost rises by no
more than t(level, dof)^2 / 2 times the residual variance. Unlike estimate ± t x standard error, it follows
a curved cost valley, and where the data do not pin a parameter down the cost never rises that far: that
end is open (±inf), where a linearisation reports a near-zero width.

The refits leave the other parameters unbounded (Levenberg-Marquardt, fast on small problems): a cost
they reach outside the fit's bounds only widens the interval."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

MAX_DOUBLINGS = 12
"""Steps outward, each twice the last, before an end not yet reached is called open."""
REFINE = 6
"""Most bracket refinements of an end (regula falsi); the end reported is the bracket's outer side."""
CLOSE = 1.02
"""An end is refined until its t statistic is within this factor of the critical value."""


@dataclass
class Problem:
    """A fitted least-squares problem: residuals and their Jacobian as functions of the parameters, the
    fit's box bounds, the best parameters and their cost (half the sum of squared residuals)."""

    resid: Callable[[np.ndarray], np.ndarray]
    jac: Callable[[np.ndarray], np.ndarray]
    lower: np.ndarray
    upper: np.ndarray
    x: np.ndarray
    cost: float
    restarts: Callable[[np.ndarray], list[np.ndarray]] = lambda p: []
    """Further starting points for a refit near ``p`` (e.g. out of a flat region where the continuation
    start would stay); the refit keeps the lowest cost."""

    @property
    def dof(self) -> int:
        return len(self.resid(self.x)) - len(self.x)


class Profile:
    """The profile of parameter ``k``: the others refitted at each value of it."""

    def __init__(self, problem: Problem, k: int):
        self.p, self.k = problem, k
        self.free = np.arange(len(problem.x)) != k
        self.variance = max(2 * problem.cost / problem.dof, np.finfo(float).tiny)  # an exact fit: no width

    def _full(self, value, free):
        full = np.empty(len(self.free))
        full[self.free], full[self.k] = free, value
        return full

    def predict(self, value: float, start: np.ndarray) -> np.ndarray:
        """A start for the refit at ``value``: ``start`` moved along the profile trace (the direction in
        which the other parameters follow this one, from the Gauss-Newton curvature at ``start``), so
        that a long step lands in the valley it follows rather than in another one."""
        jac = self.p.jac(start)
        h = jac.T @ jac
        slope = -np.linalg.pinv(h[np.ix_(self.free, self.free)]) @ h[self.free, self.k]
        return self._full(value, start[self.free] + slope * (value - start[self.k]))

    def tau(self, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """(the profile t statistic at ``value``: the rise of the cost in units of the residual variance,
        the refitted parameters), refitting from ``start`` moved along the trace (and from any restarts of
        that point)."""
        guess = self.predict(value, start)
        fits = [least_squares(lambda f: self.p.resid(self._full(value, f)), x0[self.free], method="lm",
                              jac=lambda f: self.p.jac(self._full(value, f))[:, self.free], x_scale="jac")
                for x0 in [guess, *self.p.restarts(guess)]]
        r = min(fits, key=lambda f: f.cost)
        return float(np.sqrt(max(0.0, 2 * (r.cost - self.p.cost)) / self.variance)), self._full(value, r.x)

    def end(self, direction: int, step: float, crit: float) -> float:
        """The interval's end on one side (``direction`` ±1), walking out from the best fit in steps that
        double from ``step``; ±inf where the fit's bound or :data:`MAX_DOUBLINGS` steps come first."""
        x0 = self.p.x[self.k]
        bound = self.p.upper[self.k] if direction > 0 else self.p.lower[self.k]
        inner, tau_in, start = x0, 0.0, self.p.x
        for i in range(MAX_DOUBLINGS):
            value = x0 + direction * step * 2 ** i
            if direction * (value - bound) >= 0:
                value = bound
            tau, fitted = self.tau(value, start)
            if tau >= crit:
                return self._refine(inner, tau_in, start, value, tau, crit)
            if value == bound:
                break
            inner, tau_in, start = value, tau, fitted
        return direction * np.inf

    def _refine(self, inner, tau_in, start, outer, tau_out, crit) -> float:
        """Narrow the bracket [inner (tau < crit), outer (tau >= crit)] by regula falsi (Illinois: the end
        kept twice running has its weight halved) until the outer side's tau is within :data:`CLOSE` of
        ``crit``; return the outer side, so that a coarse end errs wide."""
        g_in, g_out, kept = tau_in - crit, tau_out - crit, 0
        for _ in range(REFINE):
            if tau_out <= CLOSE * crit:
                break
            v = inner - g_in / (g_out - g_in) * (outer - inner)
            tau, fitted = self.tau(v, start)
            if tau >= crit:
                outer, tau_out, g_out = v, tau, tau - crit
                g_in, kept = (g_in / 2 if kept == -1 else g_in), -1
            else:
                inner, start, g_in = v, fitted, tau - crit
                g_out, kept = (g_out / 2 if kept == 1 else g_out), 1
        return outer


def intervals(problem: Problem, level: float, steps) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of every parameter at ``level``; ``steps``: a first step outward per parameter (about
    its expected half-width)."""
    crit = stats.t.ppf(0.5 + level / 2, problem.dof)
    n = len(problem.x)
    low, high = np.empty(n), np.empty(n)
    for k in range(n):
        prof = Profile(problem, k)
        low[k], high[k] = prof.end(-1, steps[k], crit), prof.end(+1, steps[k], crit)
    return low, high
